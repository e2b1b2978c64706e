//! The three file kinds as the user writes them: `tributary.yaml`, `connectors.d/*.yaml`
//! and `importers.d/*.yaml`.
//!
//! These `*Spec` types only describe what may be written; they are checked and compiled
//! into runnable types by `crate::plan`. Nothing past `plan` reads a `*Spec`. Every struct
//! denies unknown keys so that a typo in an optional key fails loudly instead of silently
//! doing nothing. The `///` comments are the user reference: they flow into `schemas/`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::IsoDuration;

/// The current version of the connector spec language. A file with another version is
/// refused, so that an old binary never half-understands a newer file.
pub const CONNECTOR_SPEC_VERSION: u32 = 1;

// ---------------------------------------------------------------------------------------
// Daemon config
// ---------------------------------------------------------------------------------------

/// `tributary.yaml`: where the store lives and where the other files are. Found by
/// `--config`, then `$TRIBUTARY_CONFIG`, then `./tributary.yaml`, then
/// `/etc/tributary/tributary.yaml`, so that an admin's CLI and the service open the same
/// store.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfigSpec {
    /// Store URL: `sqlite://PATH` (relative paths are relative to this file) or
    /// `postgres://...`. Default: `sqlite://tributary.db` beside this file.
    #[serde(default)]
    pub store: Option<String>,
    /// Directory of connector specs, relative to this file. Default: `connectors.d`.
    #[serde(default)]
    pub connectors_dir: Option<String>,
    /// Directory of importer files, relative to this file. Default: `importers.d`.
    #[serde(default)]
    pub importers_dir: Option<String>,
    /// How many importers may run at the same time. Default: 4.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Address of the status and metrics listener. Default: `127.0.0.1:9477` (loopback,
    /// because status output names importers and lists).
    #[serde(default)]
    pub listen: Option<String>,
    /// Log format: `text` (default) or `json`.
    #[serde(default)]
    pub log_format: Option<LogFormat>,
    /// The key that encrypts tokens kept in the store (rotated OAuth refresh tokens,
    /// session tokens). When unset, a key file readable only by its owner is generated
    /// beside the SQLite store; several nodes sharing one PostgreSQL store must name the
    /// same key here.
    #[serde(default)]
    pub encryption_key: Option<SecretRef>,
    /// How long change events and run history are kept. Default: `P90D`.
    #[serde(default)]
    pub retention: Option<IsoDuration>,
    /// How long a run lease lasts before another process may take it over unless renewed.
    /// Default: `PT5M`.
    #[serde(default)]
    pub lease: Option<IsoDuration>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines; no timestamps when running under systemd's journal.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

// `SecretRef`, `AuthSpec`, `BodySpec`, `PaginationSpec`, `SyncSpec` and `FilterApply`
// deserialize through `config::tagged`, which keeps key paths and line numbers that
// serde's buffered tagged enums lose; their serde attributes here still drive
// `Serialize` and the JSON Schema.

// ---------------------------------------------------------------------------------------
// Secret references (used by the daemon config and by importers)
// ---------------------------------------------------------------------------------------

/// Where a secret comes from. Secrets are never written in these files: they are named
/// here and read at run time.
#[derive(Clone, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretRef {
    /// An environment variable of the daemon process.
    Env(String),
    /// A file whose whole content (trailing newline trimmed) is the secret.
    File(String),
    /// A systemd credential passed with `LoadCredential=NAME:...`, read from
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
    /// A value written in clear in this file. Only for non-secret values or local
    /// experiments: importers live in git, so prefer the other forms.
    Literal(String),
}

/// Names the reference; a literal's value is never printed, so that a plan or an importer
/// can be logged with `{:?}`.
impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => f.debug_tuple("Env").field(name).finish(),
            SecretRef::File(path) => f.debug_tuple("File").field(path).finish(),
            SecretRef::Credential(name) => f.debug_tuple("Credential").field(name).finish(),
            SecretRef::Literal(_) => f.write_str("Literal(****)"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Connector spec
// ---------------------------------------------------------------------------------------

/// One file in `connectors.d/`. Describes a service's API, never an account: accounts and
/// their credentials belong to importers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    /// Version of this language the file is written in. Must be 1.
    pub spec_version: u32,
    /// The external service's name. Default: the file stem. Personalization tags and the
    /// rate-limit key derive from it, so two API versions of one service (say `pipedrive`
    /// v1 and v2) share custom fields and limits.
    #[serde(default)]
    pub service: Option<String>,
    /// What this connector reads, for people browsing `connectors.d/`.
    #[serde(default)]
    pub description: Option<String>,
    /// Base URL, a template: per-account hosts come from `settings.*` or `token.*`
    /// (for example Salesforce's `{{token.instance_url}}`).
    pub base_url: String,
    /// Headers sent with every request (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timeouts for every request.
    #[serde(default)]
    pub timeouts: Option<TimeoutsSpec>,
    /// Non-secret settings an importer may or must give (a shop subdomain, a region).
    #[serde(default)]
    pub settings: BTreeMap<String, SettingSpec>,
    /// Authentication schemes this service offers, by name. An importer picks one by name
    /// when there are several.
    #[serde(default)]
    pub auth: BTreeMap<String, AuthSpec>,
    /// The endpoint that lists contacts and how to read it.
    pub contacts: ContactsSpec,
    /// How changes are found: incremental by an updated-since value, or full re-fetch.
    pub sync: SyncSpec,
    /// Filters an importer may set, by name.
    #[serde(default)]
    pub filters: BTreeMap<String, FilterSpec>,
}

/// Request timeouts.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    /// Time allowed to open a connection. Default: `PT10S`.
    #[serde(default)]
    pub connect: Option<IsoDuration>,
    /// Time allowed for one whole request and response. Default: `PT60S`.
    #[serde(default)]
    pub request: Option<IsoDuration>,
}

/// A non-secret importer setting the connector's templates use as `settings.NAME`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    /// What the setting means, for the person writing an importer.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether an importer must give it. Default: true unless a default is given.
    #[serde(default)]
    pub required: Option<bool>,
    /// The value used when the importer gives none.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

/// One authentication scheme. Every value is a template over `credentials.*` and
/// `settings.*`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSpec {
    /// No authentication.
    None {},
    /// An API key sent in a header or a query parameter.
    ApiKey {
        /// `header` or `query`.
        #[serde(rename = "in")]
        location: ApiKeyLocation,
        /// Header or query parameter name.
        name: String,
        /// The key, usually `{{credentials.api_key}}`.
        value: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token, usually `{{credentials.token}}`.
        token: String,
    },
    /// HTTP basic authentication.
    Basic {
        /// User name template.
        username: String,
        /// Password template (may render empty).
        #[serde(default)]
        password: Option<String>,
    },
    /// OAuth2 with a refresh token: the access token is obtained from `token_url` and
    /// sent as a bearer token. Values of the token response are available as `token.*`.
    Oauth2 {
        /// Token endpoint (template).
        token_url: String,
        /// Client id (template).
        client_id: String,
        /// Client secret (template).
        client_secret: String,
        /// Refresh token (template), usually `{{credentials.refresh_token}}`.
        refresh_token: String,
        /// How the client authenticates at the token endpoint: `body` (default) or
        /// `basic`.
        #[serde(default)]
        client_auth: Option<ClientAuth>,
        /// Scopes to request, if the service wants them on refresh.
        #[serde(default)]
        scopes: Vec<String>,
        /// Whether the service returns a new refresh token on every refresh (then it is
        /// kept, encrypted, in the store). Default: false.
        #[serde(default)]
        rotates_refresh_token: bool,
    },
    /// A login request whose response yields a session token (`token.session`), then sent
    /// on every request as `headers` and `query` say.
    Session {
        /// The login request.
        login: RequestSpec,
        /// JSONPath to the token in the login response.
        token: String,
        /// How long a session lasts before logging in again. Default: `PT1H`.
        #[serde(default)]
        ttl: Option<IsoDuration>,
        /// Headers to send on every request; templates that may use `token.session`.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Query parameters to send on every request; templates that may use
        /// `token.session`.
        #[serde(default)]
        query: BTreeMap<String, String>,
    },
    /// Headers rendered from templates, for schemes nothing above fits
    /// (`Authorization: Zoho-oauthtoken ...`).
    Header {
        /// Header name to template.
        headers: BTreeMap<String, String>,
    },
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyLocation {
    /// A request header.
    Header,
    /// A query parameter.
    Query,
}

/// How an OAuth2 client proves itself at the token endpoint.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` as form fields.
    Body,
    /// HTTP basic authentication with the client id and secret.
    Basic,
}

/// An HTTP request, every part a Handlebars template. A query parameter, header or body
/// entry that renders empty or null is omitted, and so is a body object or array left
/// empty, so optional filters and first-run requests need no special cases.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// `GET` (default) or `POST`.
    #[serde(default)]
    pub method: Option<HttpMethod>,
    /// Path below `base_url`, or an absolute URL.
    pub path: String,
    /// Query parameters.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    #[serde(default)]
    pub body: Option<BodySpec>,
}

/// HTTP method of a request.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
}

/// A request body.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum BodySpec {
    /// A JSON document whose string leaves are templates. A leaf that is exactly one
    /// `{{expr}}` keeps the JSON type of its value.
    Json(serde_json::Value),
    /// Form fields (`application/x-www-form-urlencoded`), each a template.
    Form(BTreeMap<String, String>),
    /// One template that renders the whole JSON text.
    Template(String),
}

/// The list endpoint and how to read it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactsSpec {
    /// The request that lists contacts.
    pub request: RequestSpec,
    /// How to get the next page.
    pub pagination: PaginationSpec,
    /// JSONPath from the response body to the array of records, e.g. `$.data[*]`.
    pub records: String,
    /// Page sizes the service accepts; templates see the one used as `page_size`.
    #[serde(default)]
    pub page_size: Option<PageSizeSpec>,
    /// Stop a query after this many results and restart it by keyset from the last
    /// committed record (HubSpot search stops at 10,000).
    #[serde(default)]
    pub max_results_per_query: Option<u64>,
    /// Where each contact field comes from.
    pub fields: FieldsSpec,
    /// Custom fields this service brings. Each gets a personalization tag
    /// `%SERVICE_LABEL%`.
    #[serde(default)]
    pub custom_fields: Vec<CustomFieldSpec>,
    /// The record's subscription status at the service, for services that know it.
    #[serde(default)]
    pub subscription: Option<SubscriptionSpec>,
    /// A predicate marking a record as deleted at the service: handled as a removal, not
    /// skipped as a record without email.
    #[serde(default)]
    pub deleted: Option<PredicateSpec>,
}

/// Page sizes.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageSizeSpec {
    /// The largest page the service allows.
    pub max: u32,
    /// The size asked for. Default: `max`.
    #[serde(default)]
    pub default: Option<u32>,
}

/// Pagination style. Every style but `none` must name at least one stop rule; any stop
/// rule wins over a has-more flag. Loop guards (a repeated token or URL, `max_pages`) are
/// always on.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginationSpec {
    /// One response holds everything.
    None {},
    /// `page` counts up from `start`.
    PageNumber {
        /// First page number. Default: 1.
        #[serde(default)]
        start: Option<u64>,
        #[serde(flatten)]
        /// Stop rules and loop guards.
        common: PageCommon,
    },
    /// `offset` advances by the number of records received.
    Offset {
        /// First offset. Default: 0.
        #[serde(default)]
        start: Option<u64>,
        #[serde(flatten)]
        /// Stop rules and loop guards.
        common: PageCommon,
    },
    /// A cursor read from the body and sent back as `cursor`.
    Cursor {
        /// JSONPath to the next cursor in the body.
        cursor: String,
        #[serde(flatten)]
        /// Stop rules and loop guards.
        common: PageCommon,
    },
    /// A next URL read from the body (absolute, or relative to `base_url`).
    NextUrl {
        /// JSONPath to the next URL.
        next_url: String,
        /// Follow the URL exactly as given (default true); when false, the query
        /// parameters of the request are added again.
        #[serde(default)]
        verbatim: Option<bool>,
        #[serde(flatten)]
        /// Stop rules and loop guards.
        common: PageCommon,
    },
    /// RFC 5988 `Link` header with `rel="next"`.
    LinkHeader {
        #[serde(flatten)]
        /// Stop rules and loop guards.
        common: PageCommon,
    },
    /// Re-query with `keyset.updated` and `keyset.id` of the last record.
    Keyset {
        #[serde(flatten)]
        /// Stop rules and loop guards.
        common: PageCommon,
    },
}

/// Keys shared by every paginated style.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageCommon {
    /// When to stop; at least one.
    #[serde(default)]
    pub stop: Vec<StopRule>,
    /// JSONPath to a has-more flag (needed by `has_more_false`).
    #[serde(default)]
    pub has_more: Option<String>,
    /// JSONPath to the total number of records (for `total_reached`).
    #[serde(default)]
    pub total: Option<String>,
    /// JSONPath to the total number of pages (for `total_reached`).
    #[serde(default)]
    pub total_pages: Option<String>,
    /// Loop guard: the most pages one pass may read. Default: 100000.
    #[serde(default)]
    pub max_pages: Option<u64>,
}

/// A rule that ends a pass.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// The next cursor or URL is missing, null or empty.
    MissingToken,
    /// A page holds no records.
    EmptyPage,
    /// A page holds fewer records than asked for.
    ShortPage,
    /// The has-more flag is false.
    HasMoreFalse,
    /// The records (or pages) read reach the announced total.
    TotalReached,
}

/// One or several JSONPaths: the first that yields a non-empty value wins.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum PathList {
    /// One JSONPath.
    One(String),
    /// JSONPaths tried in order.
    Many(Vec<String>),
}

/// Where a standard contact field comes from.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldsSpec {
    /// Email address; records without a valid one are skipped and counted.
    pub email: PathList,
    /// First name.
    #[serde(default)]
    pub first_name: Option<PathList>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<PathList>,
    /// A full name, split into first and last when those are not given.
    #[serde(default)]
    pub full_name: Option<PathList>,
    /// Phone number.
    #[serde(default)]
    pub phone: Option<PathList>,
    /// Organization or company name.
    #[serde(default)]
    pub organization: Option<PathList>,
    /// The record's id at the service.
    #[serde(default)]
    pub external_id: Option<PathList>,
    /// The record's last update time at the service.
    #[serde(default)]
    pub updated_at: Option<TimestampSpec>,
}

/// A timestamp field and how to read it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimestampSpec {
    /// JSONPath(s) to the value.
    pub path: PathList,
    /// `rfc3339` (default), `rfc2822`, `http_date`, `unix_seconds`, `unix_millis`, `date`,
    /// or a chrono `strftime` format such as `%Y-%m-%d %H:%M:%S`.
    #[serde(default)]
    pub format: Option<String>,
    /// Zone assumed when the value has none: `UTC` (default) or an offset like `+02:00`.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A custom field brought by the connector.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomFieldSpec {
    /// Label shown to people; the tag `%SERVICE_LABEL%` derives from it.
    pub label: String,
    /// JSONPath(s) to the value.
    pub path: PathList,
    /// Value type. Default: `text`.
    #[serde(default, rename = "type")]
    pub field_type: Option<CustomFieldType>,
    /// For `list`: split a string value on this delimiter (Shopify's comma-separated
    /// tags). Without it, a list is read from a JSON array.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// For `date`: the format, as for timestamps.
    #[serde(default)]
    pub format: Option<String>,
}

/// Type of a custom field.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CustomFieldType {
    /// Free text.
    Text,
    /// A number.
    Number,
    /// A date or date-time.
    Date,
    /// A list of text values.
    List,
}

/// The subscription status a service reports for a record.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// JSONPath to the status value.
    pub path: String,
    /// Service value to our meaning, e.g. `{unsubscribed: unsubscribed, cleaned: bounced}`.
    /// Values not listed leave the contact as it is.
    pub map: BTreeMap<String, SubscriptionMeaning>,
}

/// What a service's subscription status means here.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionMeaning {
    /// Unsubscribe the contact from this importer's list.
    Unsubscribed,
    /// Mark the contact bounced everywhere.
    Bounced,
}

/// A predicate on a record's raw JSON.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PredicateSpec {
    /// JSONPath evaluated on the record.
    pub path: String,
    /// The value that makes the predicate true. Without it, any match that is not
    /// `null` or `false` does.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
}

/// How changes are found.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum SyncSpec {
    /// Ask for records updated since the saved watermark. Where the value goes (a query
    /// parameter, a header such as `If-Modified-Since`, the JSON body, or inside a query
    /// language string) is wherever the request templates use `{{since}}`; it renders
    /// empty on a first run, which omits the parameter.
    Incremental {
        /// Outgoing format of `since`: `rfc3339` (default), `rfc2822`, `http_date`,
        /// `unix_seconds`, `unix_millis`, `date`, or a chrono `strftime` format.
        #[serde(default)]
        since_format: Option<String>,
        /// Re-read this much before the watermark, to catch late writes. Default: `PT0S`.
        #[serde(default)]
        lookback: Option<IsoDuration>,
        /// Full re-fetch interval even for an incremental service. Default: never.
        #[serde(default)]
        full_refresh_every: Option<IsoDuration>,
    },
    /// The service cannot filter by update time: fetch everything every `every`.
    FullRefresh {
        /// Interval between full passes. Default: `P7D`.
        #[serde(default)]
        every: Option<IsoDuration>,
    },
}

/// A filter an importer may set.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// What the filter does, for people writing importers.
    #[serde(default)]
    pub description: Option<String>,
    /// The type of the value an importer gives.
    #[serde(rename = "type")]
    pub value_type: FilterValueType,
    /// Where the filter applies.
    pub apply: FilterApply,
}

/// Type of a filter value.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FilterValueType {
    /// A string.
    String,
    /// An integer.
    Integer,
    /// A number.
    Number,
    /// true or false.
    Boolean,
    /// An RFC 3339 date-time.
    Datetime,
    /// A list of strings.
    StringList,
}

/// Where a filter is applied.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "at", rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterApply {
    /// The service filters: the value is available to templates as `filters.NAME`.
    Server {},
    /// Tributary filters mapped records: `field` is a standard field name or a custom
    /// field label.
    Client {
        /// The mapped field the predicate reads.
        field: String,
        /// The comparison.
        op: FilterOp,
    },
}

/// Client-side comparison.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    /// The field equals the value.
    Equals,
    /// The field equals one of the values (a list).
    OneOf,
    /// The field (text or list) contains the value.
    Contains,
    /// The field is present and non-empty when the value is true; absent when false.
    Exists,
    /// The field (a date) is before the value.
    Before,
    /// The field (a date) is after the value.
    After,
}

// ---------------------------------------------------------------------------------------
// Importer
// ---------------------------------------------------------------------------------------

/// One file in `importers.d/`; its id is the file stem. Says which connector, which
/// account's credentials (by reference only), which filters, into which list, how often.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImporterSpec {
    /// The connector id (a file stem in `connectors.d/`).
    pub connector: String,
    /// The auth scheme to use, by name, where the connector offers several.
    #[serde(default)]
    pub auth: Option<String>,
    /// Credentials by reference: `{env: NAME}`, `{file: PATH}`, `{credential: NAME}`;
    /// `{literal: VALUE}` only where a value is not secret.
    #[serde(default)]
    pub credentials: BTreeMap<String, SecretRef>,
    /// Non-secret settings the connector declares.
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Filter values, by filter name.
    #[serde(default)]
    pub filters: BTreeMap<String, serde_json::Value>,
    /// Name of the contact list imported contacts join (created if missing).
    pub list: String,
    /// Time between incremental runs. Default: `PT30M`; never under `PT1M`.
    #[serde(default)]
    pub interval: Option<IsoDuration>,
    /// The most pages one run reads before it stops at a page boundary; the next run
    /// continues from the saved position. Default: 50. `0` means no limit.
    #[serde(default)]
    pub page_budget: Option<u64>,
    /// Page size to ask for, at most the connector's maximum. Default: the connector's.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Whether the daemon runs this importer. Default: true.
    #[serde(default)]
    pub enabled: Option<bool>,
}
