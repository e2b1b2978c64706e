//! The compiled, runnable form of the configuration: what the engine and the scheduler
//! read. Built from the `*Spec` types by `config::compile` (through
//! `config::load::load_plan`); every template is compiled and every JSONPath parsed
//! there, once, so that a run never meets a syntax error. Never imports `config`: the
//! small enums specs and runs share are declared here.
//!
//! A `Plan` holds credential *references*, never secret values: secrets are resolved per
//! run (`secret::resolve`), so a rotated secret needs no reload and a plan can be logged.
//! Nothing here performs I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::jsonpath::JsonPath;
use crate::model;
pub use crate::model::SubscriptionMeaning;
pub use crate::secret::SecretRef;
use crate::template::{JsonTemplate, Template};
pub use crate::timeformat::TimeFormat;

/// Every connector and importer of one configuration, validated. Replaced whole on reload.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The daemon settings.
    pub daemon: DaemonConfig,
    /// Connectors by id (file stem).
    pub connectors: BTreeMap<String, Arc<Connector>>,
    /// Importers by id (file stem).
    pub importers: BTreeMap<String, Arc<Importer>>,
}

/// `tributary.yaml`, with defaults applied and paths made absolute.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The config file (it may not exist: then every default applies).
    pub file: PathBuf,
    /// Store URL (`sqlite://...` with an absolute path, or `postgres://...`).
    pub store_url: String,
    /// Absolute directory of connector specs.
    pub connectors_dir: PathBuf,
    /// Absolute directory of importer files.
    pub importers_dir: PathBuf,
    /// Importers allowed to run at once.
    pub concurrency: u32,
    /// Status and metrics listen address.
    pub listen: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Reference to the key encrypting tokens in the store; `None`: generated key file
    /// beside the SQLite store.
    pub encryption_key: Option<SecretRef>,
    /// Reference to the bearer token the daemon's `POST` endpoints require.
    pub control_token: Option<SecretRef>,
    /// How long history is kept.
    pub retention: Duration,
    /// Run lease duration.
    pub lease: Duration,
    /// Caps on responses and records.
    pub limits: Limits,
    /// Node id written in `tributary.yaml` (`$TRIBUTARY_NODE` wins; see
    /// [`crate::store::lease::node_id`]).
    pub node: Option<String>,
}

/// Caps on what one response may make a run hold or wait for (`limits` in
/// `tributary.yaml`): the engine reads a body only up to `max_response_bytes`, skips and
/// counts a record with a value over `max_value_bytes`, and fails a page with more than
/// `max_records_per_page` records, instead of using unbounded memory or storing whatever
/// a service sends; a request is retried for at most `retry_budget`, and a service asking
/// for a wait over `max_wait` stops the run at its checkpoint instead of holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest response body read, in bytes.
    pub max_response_bytes: u64,
    /// Largest value of a record stored, in bytes of text.
    pub max_value_bytes: u64,
    /// Most records in one page.
    pub max_records_per_page: u64,
    /// How long one request may keep being retried (attempts and waits together).
    pub retry_budget: Duration,
    /// Longest wait a service may ask for that a run waits out.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_response_bytes: defaults::MAX_RESPONSE_BYTES,
            max_value_bytes: defaults::MAX_VALUE_BYTES,
            max_records_per_page: defaults::MAX_RECORDS_PER_PAGE,
            retry_budget: defaults::RETRY_BUDGET,
            max_wait: defaults::MAX_WAIT,
        }
    }
}

/// One compiled connector spec.
#[derive(Debug, Clone)]
pub struct Connector {
    /// File stem in `connectors.d/`.
    pub id: String,
    /// The spec file, absolute.
    pub file: PathBuf,
    /// Service name (tags and rate-limit key derive from it).
    pub service: String,
    /// Base URL template (rendered with [`crate::template::Escape::None`]).
    pub base_url: Template,
    /// Headers sent with every request.
    pub headers: Vec<(String, Template)>,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Auth schemes by name.
    pub auth: BTreeMap<String, Auth>,
    /// The list request.
    pub request: Request,
    /// Pagination.
    pub pagination: Pagination,
    /// JSONPath to the records array of a response.
    pub records: JsonPath,
    /// A body without the records' container is an empty page, not a failed one.
    pub records_absent_is_empty: bool,
    /// Largest page size the service accepts.
    pub page_size_max: u32,
    /// Page size asked for when the importer says nothing.
    pub page_size_default: u32,
    /// Restart a query by keyset after this many results.
    pub max_results_per_query: Option<u64>,
    /// Standard field mapping.
    pub fields: Fields,
    /// Custom fields.
    pub custom_fields: Vec<CustomField>,
    /// Subscription status mappings, one per field read (none: the service's status is
    /// not read); the strongest meaning found wins.
    pub subscription: Vec<Subscription>,
    /// Deleted-record predicate.
    pub deleted: Option<Predicate>,
    /// The deletions request (`contacts.deletions`), for services whose list omits
    /// deleted records.
    pub deletions: Option<Deletions>,
    /// Sync mode.
    pub sync: Sync,
    /// Filters by name.
    pub filters: BTreeMap<String, Filter>,
    /// Settings the connector declares, with their defaults.
    pub settings: BTreeMap<String, Setting>,
    /// How fast one account of the service may go, if the connector says.
    pub rate_limit: Option<RateLimit>,
    /// How the service's errors are recognised, in order; the first rule matching a
    /// response decides (`engine::rules`), the built-in defaults when none does.
    pub error_rules: Vec<ErrorRule>,
    /// Hash of the spec file's meaning (its parsed content): any change at all.
    pub fingerprint: String,
    /// Hashes of the parts that decide which records a pass returns (connection,
    /// request, pagination, records, sync, filters, each auth scheme), by name: the
    /// importer's pass fingerprint is built from these.
    pub pass_parts: BTreeMap<String, String>,
}

/// `contacts.deletions`: a request whose every record is one deleted at the service.
#[derive(Debug, Clone)]
pub struct Deletions {
    /// The request.
    pub request: Request,
    /// Its pagination.
    pub pagination: Pagination,
    /// JSONPath to the records array of a response.
    pub records: JsonPath,
    /// JSONPath of a deleted record's id at the service.
    pub external_id: JsonPath,
    /// A body without the records' container is an empty page.
    pub records_absent_is_empty: bool,
}

/// A service's documented limits for one account, kept by every importer on that account
/// together (`engine::ratelimit`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Time between two requests (requests spread evenly, never in a burst); `None`: no
    /// pace.
    pub interval: Option<Duration>,
    /// Requests in flight at once; `None`: no cap.
    pub concurrent: Option<u32>,
    /// The response header announcing the quota left, and how it is written.
    pub remaining: Option<(String, RemainingFormat)>,
    /// The response header announcing when the quota is refilled, and how it is written.
    pub reset: Option<(String, ResetFormat)>,
}

/// One rule recognising a service's answer: every condition given must hold.
#[derive(Debug, Clone)]
pub struct ErrorRule {
    /// Status codes it applies to; empty: any status of 400 or more.
    pub status: Vec<u16>,
    /// A JSONPath into the body selecting a value (equal to `equals`, when given).
    pub path: Option<Predicate>,
    /// Text the body contains.
    pub contains: Option<String>,
    /// A response header that must be present (lower case).
    pub header: Option<String>,
    /// What the engine does.
    pub action: ErrorAction,
    /// What the error says, for people (the start of the body follows it).
    pub message: Option<String>,
}

/// What the engine does with a response an error rule recognised.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorAction {
    /// Try the request again with backoff, within `limits.retry_budget`.
    Retry,
    /// A throttle: the whole account waits (`Retry-After` or the `rate_limit.reset`
    /// header, else backoff), then the request is tried again.
    RateLimited,
    /// Renew the OAuth token or session, then try again (once).
    RefreshAuth,
    /// The saved position is no longer accepted (an expired cursor, page token or query
    /// locator): restart the pass, an incremental pass from the watermark, a full pass
    /// from the beginning (once per run).
    RestartPass,
    /// Skip this page and go on with the next (`page_number` and `offset` pagination).
    SkipPage,
    /// Fail the run as a configuration error: retrying cannot help until the connector
    /// or importer changes.
    FailConfig,
    /// Fail the run as a transient error: the daemon tries again later with backoff.
    FailTransient,
}

/// How a response header writes the quota left.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RemainingFormat {
    /// Requests left: `42`.
    #[default]
    Count,
    /// Requests used and the limit: `32/40` (Shopify's `X-Shopify-Shop-Api-Call-Limit`).
    UsedOfLimit,
}

/// How a response header writes when the quota is refilled.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ResetFormat {
    /// Seconds from now: `2` (fractions allowed).
    #[default]
    Seconds,
    /// Milliseconds from now: `1500` (BigCommerce's `X-Rate-Limit-Time-Reset-Ms`).
    Millis,
    /// A Unix time in seconds: `1714557600`.
    UnixSeconds,
    /// An HTTP date: `Wed, 01 May 2024 10:00:00 GMT`.
    HttpDate,
}

/// A declared setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Whether an importer must give it.
    pub required: bool,
    /// Value used when the importer gives none.
    pub default: Option<Value>,
}

/// An HTTP request, every part a template.
#[derive(Debug, Clone)]
pub struct Request {
    /// GET or POST.
    pub method: HttpMethod,
    /// Path below the base URL, or an absolute URL (render with `Escape::PathSegment`).
    pub path: Template,
    /// Query parameters in written order; omitted when they render empty.
    pub query: Vec<(String, Template)>,
    /// Headers; omitted when they render empty.
    pub headers: Vec<(String, Template)>,
    /// Body.
    pub body: Option<Body>,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// JSON document with template leaves.
    Json(JsonTemplate),
    /// Form fields; omitted when they render empty.
    Form(Vec<(String, Template)>),
    /// One template rendering the whole JSON text (render with `Escape::Json`).
    Template(Template),
}

/// Pagination strategy.
#[derive(Debug, Clone, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Pagination {
    /// One response holds everything.
    None,
    /// `page` counts from `start`.
    PageNumber {
        /// First page.
        start: u64,
        /// Stop rules and guards.
        common: PageCommon,
    },
    /// `offset` advances by records received.
    Offset {
        /// First offset.
        start: u64,
        /// Stop rules and guards.
        common: PageCommon,
    },
    /// Cursor from the body, sent as `cursor`.
    Cursor {
        /// Where the next cursor is.
        cursor: JsonPath,
        /// Stop rules and guards.
        common: PageCommon,
    },
    /// Next URL from the body.
    NextUrl {
        /// Where the next URL is.
        next_url: JsonPath,
        /// Follow it exactly as given.
        verbatim: bool,
        /// Stop rules and guards.
        common: PageCommon,
    },
    /// RFC 5988 `Link: <...>; rel="next"`.
    LinkHeader {
        /// Stop rules and guards.
        common: PageCommon,
    },
    /// Re-query with `keyset.updated`/`keyset.id` of the last record.
    Keyset {
        /// Stop rules and guards.
        common: PageCommon,
    },
}

impl Pagination {
    /// The common part, for every style but `None`.
    pub fn common(&self) -> Option<&PageCommon> {
        match self {
            Pagination::None => None,
            Pagination::PageNumber { common, .. }
            | Pagination::Offset { common, .. }
            | Pagination::Cursor { common, .. }
            | Pagination::NextUrl { common, .. }
            | Pagination::LinkHeader { common }
            | Pagination::Keyset { common } => Some(common),
        }
    }

    /// The style's name as written in specs.
    pub fn style(&self) -> &'static str {
        self.into()
    }

    /// Whether the style's position is a place in a list that shifts when a record
    /// earlier in the order changes (offset, page number, and the `Link` and next URLs
    /// that carry one): such a pass skips records unless it re-queries by update time.
    pub fn shifts_with_changes(&self) -> bool {
        matches!(
            self,
            Pagination::Offset { .. }
                | Pagination::PageNumber { .. }
                | Pagination::LinkHeader { .. }
                | Pagination::NextUrl { .. }
        )
    }
}

/// Stop rules and loop guards shared by every paginated style.
#[derive(Debug, Clone)]
pub struct PageCommon {
    /// At least one (validation guarantees it).
    pub stop: Vec<StopRule>,
    /// Has-more flag.
    pub has_more: Option<JsonPath>,
    /// Total records.
    pub total: Option<JsonPath>,
    /// Total pages.
    pub total_pages: Option<JsonPath>,
    /// Page cap per pass.
    pub max_pages: u64,
}

/// Standard contact field mapping: each a list of paths, first non-empty match wins.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    /// Email.
    pub email: Vec<JsonPath>,
    /// First name.
    pub first_name: Vec<JsonPath>,
    /// Last name.
    pub last_name: Vec<JsonPath>,
    /// Full name (split when first/last are missing).
    pub full_name: Vec<JsonPath>,
    /// Phone.
    pub phone: Vec<JsonPath>,
    /// Organization.
    pub organization: Vec<JsonPath>,
    /// Id at the service.
    pub external_id: Vec<JsonPath>,
    /// Update time.
    pub updated_at: Option<Timestamp>,
}

/// A timestamp field.
#[derive(Debug, Clone)]
pub struct Timestamp {
    /// Paths, first non-empty wins.
    pub paths: Vec<JsonPath>,
    /// How the value is written.
    pub format: TimeFormat,
    /// Zone assumed when the value has none.
    pub zone: chrono::FixedOffset,
}

/// A custom field.
#[derive(Debug, Clone)]
pub struct CustomField {
    /// Tag, label, type, service.
    pub def: model::CustomFieldDef,
    /// Paths, first non-empty wins.
    pub paths: Vec<JsonPath>,
    /// For lists: split a string on this.
    pub delimiter: Option<String>,
    /// For dates: the format (default RFC 3339).
    pub format: TimeFormat,
}

/// Subscription status mapping.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Where the status is.
    pub path: JsonPath,
    /// Service value -> meaning.
    pub map: BTreeMap<String, SubscriptionMeaning>,
}

/// A predicate on a raw record.
#[derive(Debug, Clone)]
pub struct Predicate {
    /// Path evaluated on the record.
    pub path: JsonPath,
    /// Value making it true; `None`: any match that is not null or false.
    pub equals: Option<Value>,
}

impl Predicate {
    /// Whether `record` satisfies the predicate.
    pub fn matches(&self, record: &Value) -> bool {
        let hit = |v: &Value| match &self.equals {
            Some(expected) => v == expected,
            None => !matches!(v, Value::Null | Value::Bool(false)),
        };
        // Stops at the first match that satisfies it, collecting nothing.
        self.path
            .find_map(record, |v| hit(v).then_some(()))
            .is_some()
    }
}

/// Sync mode.
#[derive(Debug, Clone)]
pub enum Sync {
    /// Updated-since.
    Incremental {
        /// Outgoing format of `since`.
        since_format: TimeFormat,
        /// Re-read this much before the watermark.
        lookback: Duration,
        /// Periodic full pass, if any.
        full_refresh_every: Option<Duration>,
        /// The order the service returns a pass in.
        order: PassOrder,
        /// Whether `since` includes records updated exactly at it.
        since_inclusive: bool,
        /// The record's tie-breaker (`keyset.id`); `None`: the external id.
        tie_breaker: Option<JsonPath>,
        /// The watermark never passes the pass's start minus this.
        safety_lag: Duration,
        /// A record stamped past now plus this never moves the watermark.
        future_tolerance: Duration,
    },
    /// Full pass every `every`.
    FullRefresh {
        /// Interval between full passes.
        every: Duration,
    },
    /// A change token from the end of each complete pass, sent on the next run.
    ChangeToken {
        /// Where a page carries the next token.
        token: JsonPath,
        /// Periodic full pass, if any.
        full_refresh_every: Option<Duration>,
    },
}

impl Sync {
    /// Whether the service returns a pass sorted by update time, oldest first.
    pub fn sorted_by_update(&self) -> bool {
        matches!(
            self,
            Sync::Incremental {
                order: PassOrder::UpdatedAsc,
                ..
            }
        )
    }

    /// How far behind a pass's start the watermark stays at most.
    pub fn safety_lag(&self) -> Duration {
        match self {
            Sync::Incremental { safety_lag, .. } => *safety_lag,
            Sync::FullRefresh { .. } | Sync::ChangeToken { .. } => defaults::SAFETY_LAG,
        }
    }

    /// How far past now a record's update time may be and still move the watermark.
    pub fn future_tolerance(&self) -> Duration {
        match self {
            Sync::Incremental {
                future_tolerance, ..
            } => *future_tolerance,
            Sync::FullRefresh { .. } | Sync::ChangeToken { .. } => defaults::FUTURE_TOLERANCE,
        }
    }
}

/// The order a service returns a pass in (`sync.order`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PassOrder {
    /// By update time, oldest first (ties in any order).
    UpdatedAsc,
    /// By id, or another key that does not change when a record does.
    Id,
    /// Unknown or none.
    #[default]
    None,
}

/// A declared filter.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Value type.
    pub value_type: FilterValueType,
    /// Where it applies.
    pub apply: FilterApply,
}

/// Where a filter is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterApply {
    /// The service filters: the value is a template variable `filters.NAME`.
    Server,
    /// Tributary filters mapped records.
    Client {
        /// A standard field name or a custom field label.
        field: String,
        /// The comparison.
        op: FilterOp,
    },
}

/// An auth scheme.
// One per scheme of a loaded connector, never in a hot path or a large collection: the
// size of the OAuth2 variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Auth {
    /// Nothing.
    None,
    /// API key in a header or query parameter.
    ApiKey {
        /// Header or query.
        location: ApiKeyLocation,
        /// Header or parameter name.
        name: String,
        /// The key.
        value: Template,
    },
    /// Bearer token.
    Bearer {
        /// The token.
        token: Template,
    },
    /// HTTP basic.
    Basic {
        /// User name.
        username: Template,
        /// Password.
        password: Option<Template>,
    },
    /// OAuth2: an access token from `token_url` by the `grant`, sent as a bearer token.
    Oauth2 {
        /// How the access token is obtained.
        grant: Oauth2Grant,
        /// Token endpoint.
        token_url: Template,
        /// Client id.
        client_id: Template,
        /// Client secret (refresh-token and client-credentials grants).
        client_secret: Option<Template>,
        /// Refresh token (refresh-token grant).
        refresh_token: Option<Template>,
        /// Where a person consents (`tributary auth`; refresh-token grant).
        authorize_url: Option<Template>,
        /// PEM RSA private key signing the assertion (JWT bearer grant).
        private_key: Option<Template>,
        /// The assertion's subject, the user acted for (JWT bearer grant).
        subject: Option<Template>,
        /// The assertion's audience (JWT bearer grant); `None`: the token URL.
        audience: Option<Template>,
        /// Client authentication at the token endpoint.
        client_auth: ClientAuth,
        /// Scopes, templates over credentials and settings (a resource's scope names
        /// the account's host: Dynamics 365's `https://<org>.crm.dynamics.com/.default`).
        scopes: Vec<Template>,
        /// Whether each refresh returns a new refresh token.
        rotates_refresh_token: bool,
    },
    /// Login request yielding a session token (`token.session` in templates).
    Session {
        /// The login request.
        login: Request,
        /// Where the token is in the login response.
        token: JsonPath,
        /// Session lifetime.
        ttl: Duration,
        /// Headers sent on every request.
        headers: Vec<(String, Template)>,
        /// Query parameters sent on every request.
        query: Vec<(String, Template)>,
    },
    /// Header templates.
    Header {
        /// Headers.
        headers: Vec<(String, Template)>,
    },
}

impl Auth {
    /// The scheme's type name as written in specs.
    pub fn kind(&self) -> &'static str {
        self.into()
    }
}

/// A client-side filter with the importer's value.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFilter {
    /// Filter name.
    pub name: String,
    /// Mapped field: a standard field name or a custom field label.
    pub field: String,
    /// Comparison.
    pub op: FilterOp,
    /// The importer's value.
    pub value: Value,
}

/// One compiled importer.
#[derive(Debug, Clone)]
pub struct Importer {
    /// File stem in `importers.d/`.
    pub id: String,
    /// The importer file, absolute.
    pub file: PathBuf,
    /// Its connector.
    pub connector: Arc<Connector>,
    /// Name of the chosen auth scheme in `connector.auth` (empty when the connector has
    /// none: then no auth is applied).
    pub auth_scheme: String,
    /// Credential references by name (`credentials.NAME` in templates).
    pub credentials: BTreeMap<String, SecretRef>,
    /// Settings with connector defaults applied (`settings.*`).
    pub settings: Map<String, Value>,
    /// Every filter value the importer gives; server-side ones are the `filters.*`
    /// context (declared server filters it does not give are null there).
    pub filters: Map<String, Value>,
    /// Client-side filters with their values.
    pub client_filters: Vec<ClientFilter>,
    /// Target list name.
    pub list: String,
    /// Time between runs.
    pub interval: Duration,
    /// Pages per run; `None` = unlimited.
    pub page_budget: Option<u64>,
    /// Page size asked for.
    pub page_size: u32,
    /// Whether the daemon runs it.
    pub enabled: bool,
    /// Records a complete full pass no longer returns are gone (`gone_after_full_pass`):
    /// the write that completes the pass marks their sources deleted and their
    /// memberships `removed`.
    pub gone_after_full_pass: bool,
    /// What decides which records a pass returns, part by part
    /// (`part=hash;part=hash;...`: the connector's connection, request, pagination,
    /// records, sync, filters and chosen auth scheme; the importer's credential
    /// references, settings, filter values and page size). A saved position with another
    /// fingerprint is not resumed, and the parts that differ say why. The list, interval,
    /// page budget, fields, custom fields, rate limits and error rules are not in it:
    /// changing them keeps the saved position.
    pub fingerprint: String,
    /// Hash of the whole compiled importer with its connector: a hot reload compares it
    /// with the running version to find the importers that changed at all.
    pub revision: String,
}

impl Importer {
    /// The chosen auth scheme, if the connector has any.
    pub fn auth(&self) -> Option<&Auth> {
        self.connector.auth.get(&self.auth_scheme)
    }

    /// The `filters.*` template context: every declared server-side filter, null when
    /// the importer gives no value (so `{{filters.x}}` renders empty and is omitted).
    pub fn server_filter_context(&self) -> Map<String, Value> {
        self.connector
            .filters
            .iter()
            .filter(|(_, f)| f.apply == FilterApply::Server)
            .map(|(name, _)| {
                (
                    name.clone(),
                    self.filters.get(name).cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Small enums written in specs and read at run time. They live here, below `config`, so
// that the engine and the store never depend on the config module; `config::spec` uses
// them as they are. Their `///` comments are user documentation (they flow into
// `schemas/`), and their snake_case names are the ones written in files.
// ---------------------------------------------------------------------------------------

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines; no timestamps when running under systemd's journal.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
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

/// How an OAuth2 access token is obtained.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    Deserialize,
    Serialize,
    JsonSchema,
    PartialEq,
    Eq,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Oauth2Grant {
    /// A refresh token a person obtained by consenting (RFC 6749 6).
    #[default]
    RefreshToken,
    /// The client's own id and secret, no person involved (RFC 6749 4.4): Shopify's
    /// new apps, Microsoft Graph and Dynamics app-only access.
    ClientCredentials,
    /// An assertion signed with the client's private key (RFC 7523): Google service
    /// accounts, Salesforce's JWT flow.
    JwtBearer,
}

/// How an OAuth2 client proves itself at the token endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` as form fields.
    #[default]
    Body,
    /// HTTP basic authentication with the client id and secret.
    Basic,
}

/// HTTP method of a request.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    #[default]
    Get,
    /// POST.
    Post,
}

/// A rule that ends a pass.
#[derive(
    Debug,
    Clone,
    Copy,
    Deserialize,
    Serialize,
    JsonSchema,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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

/// Client-side comparison.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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

/// Default values, shared by the loader and the documentation.
pub mod defaults {
    use std::time::Duration;

    /// Importer interval.
    pub const INTERVAL: Duration = Duration::from_secs(30 * 60);
    /// Smallest importer interval.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
    /// Pages per run.
    pub const PAGE_BUDGET: u64 = 50;
    /// Page cap per pass.
    pub const MAX_PAGES: u64 = 100_000;
    /// First page number of `page_number` pagination.
    pub const FIRST_PAGE: u64 = 1;
    /// First offset of `offset` pagination.
    pub const FIRST_OFFSET: u64 = 0;
    /// Re-read before the watermark.
    pub const LOOKBACK: Duration = Duration::ZERO;
    /// How far behind a pass's start the watermark stays at most.
    pub const SAFETY_LAG: Duration = Duration::from_secs(60);
    /// How far past now an update time may be and still move the watermark.
    pub const FUTURE_TOLERANCE: Duration = Duration::from_secs(15 * 60);
    /// Whether a `next_url` is followed exactly as given.
    pub const NEXT_URL_VERBATIM: bool = true;
    /// Full-refresh interval.
    pub const FULL_REFRESH_EVERY: Duration = Duration::from_secs(7 * 86_400);
    /// Connect timeout.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Request timeout.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    /// Session lifetime.
    pub const SESSION_TTL: Duration = Duration::from_secs(3600);
    /// Page size when the connector states none.
    pub const PAGE_SIZE: u32 = 100;
    /// Concurrency.
    pub const CONCURRENCY: u32 = 4;
    /// Listen address.
    pub const LISTEN: &str = "127.0.0.1:9477";
    /// History retention.
    pub const RETENTION: Duration = Duration::from_secs(90 * 86_400);
    /// Run lease.
    pub const LEASE: Duration = Duration::from_secs(5 * 60);
    /// Largest response body read: pages of real services are a few MiB at most.
    pub const MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;
    /// Largest value stored: far above any name or note a CRM holds.
    pub const MAX_VALUE_BYTES: u64 = 256 * 1024;
    /// Most records in one page: the largest documented page size is 2,000.
    pub const MAX_RECORDS_PER_PAGE: u64 = 10_000;
    /// Shortest run lease.
    pub const MIN_LEASE: Duration = Duration::from_secs(10);
    /// Time one request may spend being retried: rides out a minute-long overload, still
    /// gives up on a service that is down.
    pub const RETRY_BUDGET: Duration = Duration::from_secs(120);
    /// Longest wait a service may ask for that a run sits out; longer is a quota.
    pub const MAX_WAIT: Duration = Duration::from_secs(60);
}
