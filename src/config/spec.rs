//! The three file kinds as the user writes them: `tributary.yaml`, `connectors.d/*.yaml`
//! and `importers.d/*.yaml`.
//!
//! These `*Spec` types only describe what may be written; they are checked and compiled
//! into runnable types by `crate::plan`. Nothing past `plan` reads a `*Spec`. Every struct
//! denies unknown keys so that a typo in an optional key fails loudly instead of silently
//! doing nothing. The `///` comments are the user reference: they flow into `schemas/`.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::tagged::{single_key_enum, tagged_enum};
use crate::duration::IsoDuration;
pub use crate::model::{CustomFieldType, SubscriptionMeaning};
pub use crate::plan::{
    ApiKeyLocation, ClientAuth, ErrorAction, FilterOp, FilterValueType, HttpMethod, LogFormat,
    Oauth2Grant, PassOrder, RemainingFormat, ResetFormat, StopRule,
};
pub use crate::secret::SecretRef;

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
#[serde(deny_unknown_fields, expecting = "a mapping")]
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
    /// A bearer token the daemon's `POST` endpoints (`/importers/<id>/run`, `.../resume`)
    /// require, by reference. `tributary run` on the same config sends it when it hands a
    /// run to the daemon. Default: none (the listener is loopback by default).
    #[serde(default)]
    pub control_token: Option<SecretRef>,
    /// How long change events and run history are kept. Default: `P90D`.
    #[serde(default)]
    pub retention: Option<IsoDuration>,
    /// How long a run lease lasts before another process may take it over unless renewed.
    /// Default: `PT5M`; at least `PT10S`.
    #[serde(default)]
    pub lease: Option<IsoDuration>,
    /// Caps on what one response may make Tributary hold or wait for, so that a service (or
    /// whoever answers in its name) cannot exhaust memory, fill the store or hold a run.
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
    /// This daemon's node id when several daemons share one PostgreSQL store: 1 to 64
    /// letters, digits, `.`, `_` or `-`, shown in status output as the holder of each
    /// importer it runs. `$TRIBUTARY_NODE` wins over it (nodes usually share one synced
    /// config tree). Default: the host name and a hash of `/etc/machine-id`.
    #[serde(default)]
    pub node: Option<String>,
}

/// Caps on responses and records. Each must be at least 1.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Largest response body read, in bytes; a longer body (declared or streamed) fails
    /// the request without being read further. Default: 33554432 (32 MiB).
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
    /// Largest single value of a record that is stored (a name, a custom value), in bytes
    /// of text; a record with a longer one is skipped and counted. Default: 262144
    /// (256 KiB).
    #[serde(default)]
    pub max_value_bytes: Option<u64>,
    /// Most records one page may hold; a page with more fails the run. Default: 10000.
    #[serde(default)]
    pub max_records_per_page: Option<u64>,
    /// How long one request keeps being retried after 429s, 5xx answers, timeouts and
    /// connection errors (attempts and waits together, with exponential backoff and full
    /// jitter) before it fails the run; the checkpoint holds and the next run resumes
    /// there. Default: `PT2M`.
    #[serde(default)]
    pub retry_budget: Option<IsoDuration>,
    /// Longest wait a service may ask for (`Retry-After`, a rate-limit reset) that a run
    /// sits out. A longer one (a daily quota) stops the run at its checkpoint as a partial
    /// success, and its next run starts only once the wait is over. At most
    /// `retry_budget`. Default: `PT1M`, or `retry_budget` when that is shorter.
    #[serde(default)]
    pub max_wait: Option<IsoDuration>,
}

// `AuthSpec`, `BodySpec`, `PaginationSpec`, `SyncSpec` and `FilterApplySpec` are declared
// through `config::tagged`'s macros, which keep the key paths and line numbers that
// serde's buffered tagged enums lose; `SecretRef` (declared in `secret`) deserializes
// there too.

// ---------------------------------------------------------------------------------------
// Connector spec
// ---------------------------------------------------------------------------------------

/// One file in `connectors.d/`. Describes a service's API, never an account: accounts and
/// their credentials belong to importers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
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
    pub headers: Templates,
    /// Timeouts for every request.
    #[serde(default)]
    pub timeouts: Option<TimeoutsSpec>,
    /// The service's documented limits for one account. Every importer on the same
    /// service and account (the same resolved credentials) keeps them together, so
    /// importers never fight each other for one account's quota.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// How this service's errors are recognised, in order: the first rule whose
    /// conditions all hold decides what happens to a response. A rule without `status`
    /// applies to statuses of 400 or more only; a success (2xx) is checked only by rules
    /// naming its status (a GraphQL error inside a 200). When no rule matches: 429 waits
    /// and retries, 5xx, timeouts and connection errors retry, 401 renews an OAuth token
    /// or session once, and any other status of 400 or more fails the run.
    #[serde(default)]
    pub error_rules: Vec<ErrorRuleSpec>,
    /// Non-secret settings an importer may or must give (a shop subdomain, a region).
    #[serde(default)]
    pub settings: BTreeMap<String, SettingSpec>,
    /// Authentication schemes this service offers, by name. An importer picks one by name
    /// when there are several.
    #[serde(default)]
    pub auth: BTreeMap<String, AuthSpec>,
    /// The scheme an importer gets when it names none, where there are several: lets a
    /// connector that had one scheme add another (Shopify's client credentials beside its
    /// static tokens) without breaking the importers written for the first.
    #[serde(default)]
    pub default_auth: Option<String>,
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
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {connect: PT10S, request: PT60S}"
)]
pub struct TimeoutsSpec {
    /// Time allowed to open a connection. Default: `PT10S`.
    #[serde(default)]
    pub connect: Option<IsoDuration>,
    /// Time allowed for one whole request and response. Default: `PT60S`.
    #[serde(default)]
    pub request: Option<IsoDuration>,
}

/// A service's limits for one account. Requests are spread evenly (one every second /
/// `requests_per_second`), never sent in a burst.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {requests_per_second: 10, concurrent: 4}"
)]
pub struct RateLimitSpec {
    /// Requests per second for one account. Not with `requests_per_minute`.
    #[serde(default)]
    pub requests_per_second: Option<u32>,
    /// Requests per minute for one account. Not with `requests_per_second`.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at once for one account.
    #[serde(default)]
    pub concurrent: Option<u32>,
    /// The response header announcing how many requests are left. When it reaches zero,
    /// every importer on the account waits for the `reset` header's time (one second
    /// when there is none), or stops its run at its checkpoint when that is longer than
    /// `limits.max_wait`.
    #[serde(default)]
    pub remaining: Option<RemainingHeaderSpec>,
    /// The response header announcing when the quota is refilled; also read as the wait
    /// of a 429 without `Retry-After`.
    #[serde(default)]
    pub reset: Option<ResetHeaderSpec>,
}

/// One error rule: conditions (at least one; all must hold) and an action.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {status: 403, contains: REQUEST_LIMIT_EXCEEDED, action: rate_limited}"
)]
pub struct ErrorRuleSpec {
    /// A status code or a list of them.
    #[serde(default)]
    pub status: Option<StatusCodes>,
    /// A JSONPath into the body: the rule holds when it selects a value that is not null
    /// or false, or, with `equals`, a value equal to it.
    #[serde(default)]
    pub path: Option<String>,
    /// The value `path` must select.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// Text the body contains.
    #[serde(default)]
    pub contains: Option<String>,
    /// A response header that must be present (any case).
    #[serde(default)]
    pub header: Option<String>,
    /// `retry`, `rate_limited`, `refresh_auth`, `restart_pass`, `skip_page`,
    /// `fail_config` or `fail_transient`.
    pub action: ErrorAction,
    /// What the error says, for people; the start of the body follows it.
    #[serde(default)]
    pub message: Option<String>,
}

/// One status code or several.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a status code such as 403, or a list of them"
)]
pub enum StatusCodes {
    /// One code.
    One(u16),
    /// Several codes.
    Many(Vec<u16>),
}

/// A response header with the quota left.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {header: x-ratelimit-remaining, format: count}"
)]
pub struct RemainingHeaderSpec {
    /// Header name (any case).
    pub header: String,
    /// `count` (default: requests left, `42`) or `used_of_limit` (`32/40`).
    #[serde(default)]
    pub format: Option<RemainingFormat>,
}

/// A response header with the time the quota is refilled.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {header: x-ratelimit-reset, format: seconds}"
)]
pub struct ResetHeaderSpec {
    /// Header name (any case).
    pub header: String,
    /// `seconds` (default: from now), `millis` (from now), `unix_seconds` or `http_date`.
    #[serde(default)]
    pub format: Option<ResetFormat>,
}

/// A non-secret importer setting the connector's templates use as `settings.NAME`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {description: \"...\", required: true}"
)]
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

tagged_enum! {
    /// One authentication scheme. Every value is a template over `credentials.*` and
    /// `settings.*`.
    pub enum AuthSpec (tag = "type") {
        /// No authentication.
        "none" => None(NoAuthSpec),
        /// An API key sent in a header or a query parameter.
        "api_key" => ApiKey(ApiKeySpec),
        /// `Authorization: Bearer <token>`.
        "bearer" => Bearer(BearerSpec),
        /// HTTP basic authentication.
        "basic" => Basic(BasicSpec),
        /// OAuth2: the access token is obtained from `token_url` (with a refresh token, or
        /// the client's own credentials) and sent as a bearer token. Values of the token
        /// response are available as `token.*`. Tokens are kept, encrypted, per account.
        "oauth2" => Oauth2(Oauth2Spec),
        /// A login request whose response yields a session token (`token.session`), then sent
        /// on every request as `headers` and `query` say.
        "session" => Session(SessionSpec),
        /// Headers rendered from templates, for schemes nothing above fits
        /// (`Authorization: Zoho-oauthtoken ...`).
        "header" => Header(HeaderAuthSpec),
    }
}

/// `type: none`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct NoAuthSpec {}

/// `type: api_key`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct ApiKeySpec {
    /// `header` or `query`.
    #[serde(rename = "in")]
    pub location: ApiKeyLocation,
    /// Header or query parameter name.
    pub name: String,
    /// The key, usually `{{credentials.api_key}}`.
    pub value: String,
}

/// `type: bearer`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct BearerSpec {
    /// The token, usually `{{credentials.token}}`.
    pub token: String,
}

/// `type: basic`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct BasicSpec {
    /// User name template.
    pub username: String,
    /// Password template (may render empty).
    #[serde(default)]
    pub password: Option<String>,
}

/// `type: oauth2`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct Oauth2Spec {
    /// How the access token is obtained: `refresh_token` (default; a person consented
    /// once), `client_credentials` (the client's own id and secret, app-only access) or
    /// `jwt_bearer` (an assertion signed with `private_key`: Google service accounts,
    /// Salesforce's JWT flow).
    #[serde(default)]
    pub grant: Option<Oauth2Grant>,
    /// Token endpoint (template).
    pub token_url: String,
    /// Client id (template).
    pub client_id: String,
    /// Client secret (template).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Refresh token (template), usually `{{credentials.refresh_token}}`; for the
    /// `refresh_token` grant only.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// For `refresh_token`: the authorization endpoint where a person consents
    /// (template), used by `tributary auth <importer>` to obtain the first refresh token
    /// (authorization code with PKCE). Parameters the service needs to issue a refresh
    /// token may be written in it (Google: `?access_type=offline&prompt=consent`).
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// For `jwt_bearer`: the RSA private key in PEM (template), usually
    /// `{{credentials.private_key}}`. The assertion is signed RS256, with `client_id` as
    /// its issuer, lives three minutes, and carries `scopes` as its `scope` claim.
    #[serde(default)]
    pub private_key: Option<String>,
    /// For `jwt_bearer`: the assertion's subject (template), the user the client acts
    /// for (Salesforce's username, a Google Workspace user). Default: none.
    #[serde(default)]
    pub subject: Option<String>,
    /// For `jwt_bearer`: the assertion's audience (template). Default: the token URL
    /// (Google); Salesforce wants `https://login.salesforce.com`.
    #[serde(default)]
    pub audience: Option<String>,
    /// How the client authenticates at the token endpoint: `body` (default) or
    /// `basic`.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Scopes to request, if the service wants them (templates: a resource's scope may
    /// name the account's host, `https://{{settings.host}}/.default`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Whether the service returns a new refresh token on every refresh (then it is
    /// kept, encrypted, in the store). Default: false.
    #[serde(default)]
    pub rotates_refresh_token: bool,
}

/// `type: session`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct SessionSpec {
    /// The login request.
    pub login: RequestSpec,
    /// JSONPath to the token in the login response.
    pub token: String,
    /// How long a session lasts before logging in again. Default: `PT1H`.
    #[serde(default)]
    pub ttl: Option<IsoDuration>,
    /// Headers to send on every request; templates that may use `token.session`.
    #[serde(default)]
    pub headers: Templates,
    /// Query parameters to send on every request; templates that may use
    /// `token.session`.
    #[serde(default)]
    pub query: Templates,
}

/// `type: header`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct HeaderAuthSpec {
    /// Header name to template.
    pub headers: Templates,
}

/// Named templates (query parameters, headers, form fields), kept in the order written:
/// that is the order they are sent in.
pub type Templates = IndexMap<String, String>;

/// An HTTP request, every part a Handlebars template. A query parameter, header or body
/// entry that renders empty or null is omitted, and so is a body object or array left
/// empty, so optional filters and first-run requests need no special cases.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {path: /contacts, query: {limit: \"{{page_size}}\"}}"
)]
pub struct RequestSpec {
    /// `GET` (default) or `POST`.
    #[serde(default)]
    pub method: Option<HttpMethod>,
    /// Path below `base_url`, or an absolute URL.
    pub path: String,
    /// Query parameters, sent in the order written.
    #[serde(default)]
    pub query: Templates,
    /// Headers, sent in the order written.
    #[serde(default)]
    pub headers: Templates,
    /// Request body.
    #[serde(default)]
    pub body: Option<BodySpec>,
}

single_key_enum! {
    /// A request body.
    pub enum BodySpec (
        what = "request body",
        expecting = "a body: {json: ...}, {form: {...}} or {template: \"...\"}"
    ) {
        /// A JSON document whose string leaves are templates. A leaf that is exactly one
        /// `{{expr}}` keeps the JSON type of its value.
        "json" => Json(serde_json::Value),
        /// Form fields (`application/x-www-form-urlencoded`), each a template.
        "form" => Form(Templates),
        /// One template that renders the whole JSON text.
        "template" => Template(String),
    }
}

/// The list endpoint and how to read it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct ContactsSpec {
    /// The request that lists contacts.
    pub request: RequestSpec,
    /// How to get the next page.
    pub pagination: PaginationSpec,
    /// JSONPath from the response body to the array of records, e.g. `$.data[*]`.
    pub records: String,
    /// What a body without the records' container means: `error` (default: an error
    /// document or a changed API fails the run) or `empty_page` (the service leaves the
    /// key out when there is nothing, as Google People does for an account without
    /// contacts).
    #[serde(default)]
    pub records_absent: Option<RecordsAbsent>,
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
    /// The record's subscription status at the service, for services that know it: one
    /// field, or a list of fields when the service keeps opt-out and bounce apart (the
    /// strongest meaning found wins: bounced, then unsubscribed, pending, subscribed).
    #[serde(default)]
    pub subscription: Option<SubscriptionSpecs>,
    /// A predicate marking a record as deleted at the service: handled as a removal, not
    /// skipped as a record without email.
    #[serde(default)]
    pub deleted: Option<PredicateSpec>,
    /// A request listing the records deleted at the service (Zoho `/Contacts/deleted`,
    /// Salesforce `queryAll` with `IsDeleted = true`, HubSpot `archived=true`), for
    /// services whose list omits deleted records. Read at the start of every pass but an
    /// importer's first, asking from the same `{{since}}` as the pass; every record it
    /// returns is a deletion. Its pages are counted in the run, not in `page_budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletions: Option<DeletionsSpec>,
}

/// `contacts.deletions`: the deletions request and how to read it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct DeletionsSpec {
    /// The request that lists deleted records; its templates see what `contacts.request`
    /// sees (`since`, `page_size`, the pagination's variables).
    pub request: RequestSpec,
    /// How to get its next page.
    pub pagination: PaginationSpec,
    /// JSONPath from its response body to the array of deleted records.
    pub records: String,
    /// JSONPath of a deleted record's id at the service: the same id as
    /// `contacts.fields.external_id` reads from a live record.
    pub external_id: String,
    /// What a body without the records' container means (as `contacts.records_absent`).
    /// Default: `error`.
    #[serde(default)]
    pub records_absent: Option<RecordsAbsent>,
}

/// Page sizes.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {max: 500} or {max: 500, default: 100}"
)]
pub struct PageSizeSpec {
    /// The largest page the service allows.
    pub max: u32,
    /// The size asked for. Default: `max`.
    #[serde(default)]
    pub default: Option<u32>,
}

tagged_enum! {
    /// Pagination style. Every style but `none` must name at least one stop rule; any stop
    /// rule wins over a has-more flag. Loop guards (a repeated token or URL, `max_pages`) are
    /// always on.
    pub enum PaginationSpec (tag = "type") {
        /// One response holds everything.
        "none" => None(NoPaginationSpec),
        /// `page` counts up from `start`.
        "page_number" => PageNumber(PageNumberSpec),
        /// `offset` advances by the number of records received.
        "offset" => Offset(OffsetSpec),
        /// A cursor read from the body and sent back as `cursor`.
        "cursor" => Cursor(CursorSpec),
        /// A next URL read from the body (absolute, or relative to `base_url`).
        "next_url" => NextUrl(NextUrlSpec),
        /// RFC 5988 `Link` header with `rel="next"`.
        "link_header" => LinkHeader(LinkHeaderSpec),
        /// Re-query with `keyset.updated` and `keyset.id` of the last record.
        "keyset" => Keyset(KeysetSpec),
    }
}

impl PaginationSpec {
    /// The stop rules and loop guards, for every style but `none`.
    pub fn common(&self) -> Option<PageCommon<'_>> {
        match self {
            PaginationSpec::None(_) => None,
            PaginationSpec::PageNumber(s) => Some(s.common()),
            PaginationSpec::Offset(s) => Some(s.common()),
            PaginationSpec::Cursor(s) => Some(s.common()),
            PaginationSpec::NextUrl(s) => Some(s.common()),
            PaginationSpec::LinkHeader(s) => Some(s.common()),
            PaginationSpec::Keyset(s) => Some(s.common()),
        }
    }
}

/// `type: none`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct NoPaginationSpec {}

/// The keys every paginated style shares, as one style's struct holds them.
#[derive(Debug, Clone, Copy)]
pub struct PageCommon<'a> {
    /// When to stop.
    pub stop: &'a [StopRule],
    /// JSONPath to a has-more flag.
    pub has_more: Option<&'a str>,
    /// JSONPath to the total number of records.
    pub total: Option<&'a str>,
    /// JSONPath to the total number of pages.
    pub total_pages: Option<&'a str>,
    /// Loop guard.
    pub max_pages: Option<u64>,
}

/// Declares a paginated style's struct: its own keys, then the keys every paginated style
/// shares, written here once. (Not `#[serde(flatten)]` of a shared struct: flatten
/// buffers the map, loses positions and cannot deny unknown keys.)
macro_rules! paginated_style {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
        #[serde(deny_unknown_fields, expecting = "a mapping")]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
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

        impl $name {
            /// The keys every paginated style shares.
            pub fn common(&self) -> PageCommon<'_> {
                PageCommon {
                    stop: &self.stop,
                    has_more: self.has_more.as_deref(),
                    total: self.total.as_deref(),
                    total_pages: self.total_pages.as_deref(),
                    max_pages: self.max_pages,
                }
            }
        }
    };
}

paginated_style!(
    /// `type: page_number`.
    PageNumberSpec {
        /// First page number. Default: 1.
        #[serde(default)]
        start: Option<u64>,
    }
);
paginated_style!(
    /// `type: offset`.
    OffsetSpec {
        /// First offset. Default: 0.
        #[serde(default)]
        start: Option<u64>,
    }
);
paginated_style!(
    /// `type: cursor`.
    CursorSpec {
        /// JSONPath to the next cursor in the body.
        cursor: String,
    }
);
paginated_style!(
    /// `type: next_url`.
    NextUrlSpec {
        /// JSONPath to the next URL.
        next_url: String,
        /// Follow the URL exactly as given (default true); when false, the query
        /// parameters of the request are added again.
        #[serde(default)]
        verbatim: Option<bool>,
    }
);
paginated_style!(
    /// `type: link_header`.
    LinkHeaderSpec {}
);
paginated_style!(
    /// `type: keyset`.
    KeysetSpec {}
);

/// One or several JSONPaths: the first that yields a non-empty value wins.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a JSONPath such as $.email, or a list of JSONPaths"
)]
pub enum PathList {
    /// One JSONPath.
    One(String),
    /// JSONPaths tried in order.
    Many(Vec<String>),
}

/// Where a standard contact field comes from.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
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
    #[serde(default, deserialize_with = "timestamp_mapping")]
    pub updated_at: Option<TimestampSpec>,
}

/// Reads `updated_at`. A bare JSONPath, which every other field takes, is refused with the
/// mapping to write instead: a timestamp needs its format as well as its path.
fn timestamp_mapping<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<TimestampSpec>, D::Error> {
    const FORMATS: &str = "formats: rfc3339, rfc2822, http_date, unix_seconds, unix_millis, \
                           date, or a strftime pattern such as %Y-%m-%d %H:%M:%S";
    struct TimestampVisitor;
    impl<'de> Visitor<'de> for TimestampVisitor {
        type Value = Option<TimestampSpec>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "a mapping such as {{path: $.updated_at, format: rfc3339}} ({FORMATS})"
            )
        }

        fn visit_str<E: de::Error>(self, path: &str) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "a timestamp needs its format as well as its JSONPath: write \
                 `{{path: {path}, format: rfc3339}}` ({FORMATS})"
            )))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(format!(
                "a timestamp needs its format as well as its JSONPaths: write \
                 `{{path: [$.a, $.b], format: rfc3339}}` ({FORMATS})"
            )))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            TimestampSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_any(TimestampVisitor)
}

/// A timestamp field and how to read it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with its JSONPath and format, such as {path: $.updated_at, format: rfc3339} (format: rfc3339, rfc2822, http_date, unix_seconds, unix_millis, date or a strftime pattern)"
)]
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
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {label: Tags, path: $.tags, type: list}"
)]
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

/// The subscription status a service reports for a record.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {path: $.status, map: {unsubscribed: unsubscribed}}"
)]
pub struct SubscriptionSpec {
    /// JSONPath to the status value.
    pub path: String,
    /// Service value to our meaning, e.g. `{unsubscribed: unsubscribed, cleaned: bounced}`.
    /// Values not listed leave the contact as it is.
    pub map: BTreeMap<String, SubscriptionMeaning>,
}

/// One subscription field, or several read together. Read by hand rather than as an
/// untagged enum, so that a mistake inside one field keeps its own message and position.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum SubscriptionSpecs {
    /// One field.
    One(SubscriptionSpec),
    /// Several fields (say an opt-out flag and a hard-bounce flag); the strongest meaning
    /// found wins.
    Many(Vec<SubscriptionSpec>),
}

impl<'de> Deserialize<'de> for SubscriptionSpecs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SubscriptionSpecs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a mapping such as {path: $.status, map: {unsubscribed: unsubscribed}}, or a list of them",
                )
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                SubscriptionSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(SubscriptionSpecs::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(SubscriptionSpecs::Many)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl SubscriptionSpecs {
    /// The fields, in the order written.
    pub fn as_slice(&self) -> &[SubscriptionSpec] {
        match self {
            SubscriptionSpecs::One(one) => std::slice::from_ref(one),
            SubscriptionSpecs::Many(many) => many,
        }
    }
}

/// What a response without the records' container means.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordsAbsent {
    /// A failed page (an error document, a changed API).
    Error,
    /// An empty page: the service omits the key when there is nothing.
    EmptyPage,
}

/// A predicate on a record's raw JSON.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {path: $.is_deleted, equals: true}"
)]
pub struct PredicateSpec {
    /// JSONPath evaluated on the record.
    pub path: String,
    /// The value that makes the predicate true. Without it, any match that is not
    /// `null` or `false` does.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
}

tagged_enum! {
    /// How changes are found.
    pub enum SyncSpec (tag = "mode") {
        /// Ask for records updated since the saved watermark. Where the value goes (a query
        /// parameter, a header such as `If-Modified-Since`, the JSON body, or inside a query
        /// language string) is wherever the request templates use `{{since}}`; it renders
        /// empty on a first run, which omits the parameter.
        "incremental" => Incremental(IncrementalSpec),
        /// The service cannot filter by update time: fetch everything every `every`.
        "full_refresh" => FullRefresh(FullRefreshSpec),
        /// The service hands out a change token at the end of a complete listing (Google
        /// People `nextSyncToken`, Microsoft Graph `@odata.deltaLink`): it is stored, and
        /// the next run sends it as `{{change_token}}` to receive only what changed since,
        /// deletions included. A token the service no longer accepts (an `error_rules`
        /// entry with `action: restart_pass`) is dropped and a full pass reads everything.
        "change_token" => ChangeToken(ChangeTokenSpec),
    }
}

/// `mode: change_token`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct ChangeTokenSpec {
    /// JSONPath of the next change token in a page (the last page of a pass carries it).
    pub token: String,
    /// A full pass at this interval even while tokens work. Default: never.
    #[serde(default)]
    pub full_refresh_every: Option<IsoDuration>,
}

/// `mode: incremental`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct IncrementalSpec {
    /// Outgoing format of `since`: `rfc3339` (default), `rfc2822`, `http_date`,
    /// `unix_seconds`, `unix_millis`, `date`, or a chrono `strftime` format.
    #[serde(default)]
    pub since_format: Option<String>,
    /// Re-read this much before the watermark, to catch late writes. Default: `PT0S`.
    #[serde(default)]
    pub lookback: Option<IsoDuration>,
    /// Full re-fetch interval even for an incremental service. Default: never.
    #[serde(default)]
    pub full_refresh_every: Option<IsoDuration>,
    /// The order the service returns a pass in: `updated_asc` (by update time, oldest
    /// first: the watermark advances with each page, and offset, page-number, `Link` and
    /// next-URL passes re-query from the newest committed update time instead of
    /// advancing, so a record edited mid-pass never makes another one skipped), `id`, or
    /// `none` (default): the watermark then moves only when a pass completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<PassOrder>,
    /// Whether the service's updated-since filter includes records updated exactly at
    /// `since` (`>=`, true) or not (`>`, false: the engine asks from a second earlier, so
    /// records sharing the boundary's time are not lost). Required with
    /// `order: updated_asc`; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_inclusive: Option<bool>,
    /// JSONPath of the record's tie-breaker, sent with the update time in a keyset
    /// (`keyset.id`): a value unique per record. Default: the `external_id` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_breaker: Option<String>,
    /// How far behind the start of a pass the watermark stays at most: records the
    /// service stamped shortly before the pass started but made visible only after it
    /// (replication, indexing) are read by the next pass. Default: `PT1M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_lag: Option<IsoDuration>,
    /// A record stamped later than now plus this (a wrong clock, a date typed by hand) is
    /// imported but never moves the watermark; it is logged and counted. Default: `PT15M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future_tolerance: Option<IsoDuration>,
}

/// `mode: full_refresh`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct FullRefreshSpec {
    /// Interval between full passes. Default: `P7D`.
    #[serde(default)]
    pub every: Option<IsoDuration>,
}

/// A filter an importer may set.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as {type: string, apply: {at: server}}"
)]
pub struct FilterSpec {
    /// What the filter does, for people writing importers.
    #[serde(default)]
    pub description: Option<String>,
    /// The type of the value an importer gives.
    #[serde(rename = "type")]
    pub value_type: FilterValueType,
    /// Where the filter applies.
    pub apply: FilterApplySpec,
}

tagged_enum! {
    /// Where a filter is applied.
    pub enum FilterApplySpec (tag = "at") {
        /// The service filters: the value is available to templates as `filters.NAME`.
        "server" => Server(ServerFilterSpec),
        /// Tributary filters mapped records: `field` is a standard field name or a custom
        /// field label.
        "client" => Client(ClientFilterSpec),
    }
}

/// `at: server`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct ServerFilterSpec {}

/// `at: client`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct ClientFilterSpec {
    /// The mapped field the predicate reads.
    pub field: String,
    /// The comparison.
    pub op: FilterOp,
}

// ---------------------------------------------------------------------------------------
// Importer
// ---------------------------------------------------------------------------------------

/// One file in `importers.d/`; its id is the file stem. Says which connector, which
/// account's credentials (by reference only), which filters, into which list, how often.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
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
    /// Whether a record that a complete full pass no longer returns is gone: deleted at
    /// the service without the connector being able to say so, or no longer matching this
    /// importer's server-side filters. Its membership in `list` then becomes `removed`
    /// (not an unsubscribe; active again if the record comes back). Never after a partial
    /// or failed pass. Changing it starts a new pass. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_after_full_pass: Option<bool>,
}
