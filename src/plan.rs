//! The compiled, runnable form of the configuration: what the engine and the scheduler
//! read. Built from the `*Spec` types by `config::validate` (through
//! `config::load::load_plan`); every template is compiled and every JSONPath parsed here,
//! once, so that a run never meets a syntax error.
//!
//! A `Plan` holds credential *references*, never secret values: secrets are resolved per
//! run (`secret::resolve`), so a rotated secret needs no reload and a plan can be logged.
//! Nothing here performs I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use crate::config::spec::{
    ApiKeyLocation, ClientAuth, FilterApply, FilterOp, FilterValueType, HttpMethod, LogFormat,
    StopRule, SubscriptionMeaning,
};
use crate::jsonpath::JsonPath;
use crate::model;
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
    /// How long history is kept.
    pub retention: Duration,
    /// Run lease duration.
    pub lease: Duration,
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
    /// Subscription status mapping.
    pub subscription: Option<Subscription>,
    /// Deleted-record predicate.
    pub deleted: Option<Predicate>,
    /// Sync mode.
    pub sync: Sync,
    /// Filters by name.
    pub filters: BTreeMap<String, Filter>,
    /// Settings the connector declares, with their defaults.
    pub settings: BTreeMap<String, Setting>,
    /// Hash of the spec file's meaning (its parsed content), for importer fingerprints.
    pub fingerprint: String,
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
#[derive(Debug, Clone)]
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
        match self {
            Pagination::None => "none",
            Pagination::PageNumber { .. } => "page_number",
            Pagination::Offset { .. } => "offset",
            Pagination::Cursor { .. } => "cursor",
            Pagination::NextUrl { .. } => "next_url",
            Pagination::LinkHeader { .. } => "link_header",
            Pagination::Keyset { .. } => "keyset",
        }
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
    },
    /// Full pass every `every`.
    FullRefresh {
        /// Interval between full passes.
        every: Duration,
    },
}

/// A declared filter.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Value type.
    pub value_type: FilterValueType,
    /// Where it applies.
    pub apply: FilterApply,
}

/// An auth scheme.
#[derive(Debug, Clone)]
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
    /// OAuth2 refresh-token grant.
    Oauth2 {
        /// Token endpoint.
        token_url: Template,
        /// Client id.
        client_id: Template,
        /// Client secret.
        client_secret: Template,
        /// Refresh token.
        refresh_token: Template,
        /// Client authentication at the token endpoint.
        client_auth: ClientAuth,
        /// Scopes.
        scopes: Vec<String>,
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
        match self {
            Auth::None => "none",
            Auth::ApiKey { .. } => "api_key",
            Auth::Bearer { .. } => "bearer",
            Auth::Basic { .. } => "basic",
            Auth::Oauth2 { .. } => "oauth2",
            Auth::Session { .. } => "session",
            Auth::Header { .. } => "header",
        }
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
    /// Hash of everything a pass depends on (connector spec, auth choice, credential
    /// references, settings, filters, list, page size): a saved position with another
    /// fingerprint is not resumed.
    pub fingerprint: String,
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
            .filter(|(_, f)| matches!(f.apply, FilterApply::Server {}))
            .map(|(name, _)| {
                (
                    name.clone(),
                    self.filters.get(name).cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    }
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
}
