//! The HTTP side of a run: one reqwest client with the connector's timeouts, the template
//! context, rendering a plan `Request` into a real request, authentication, and a simple
//! bounded retry.
//!
//! Owns every secret value of a run: credentials are resolved here (never stored in the
//! plan), tokens are obtained here, and each is registered in the run's [`SecretSet`] so
//! that nothing leaving the engine carries one. Never knows about pages or records. The
//! only store calls are for OAuth tokens, kept encrypted per account (`Store::save_token`)
//! and renewed under a short lease row, because a rotated refresh token lost is the
//! account's access lost, and importers of one account must share one token.
//!
//! Every request is retried on 429, 5xx, timeouts and connection errors for a time
//! budget, with the backoff [`crate::engine::retry`] decides (full jitter, `Retry-After`
//! as a lower bound, a long wait ending the run as a quota stop).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::engine::ratelimit::AccountLimiter;
use crate::engine::redact::{MASK, SecretSet};
use crate::engine::retry::{Next, Retrier};
use crate::engine::rules;
use crate::plan::{
    ApiKeyLocation, Auth, Body, ClientAuth, ErrorAction, ErrorRule, HttpMethod, Importer, Limits,
    Oauth2Grant, Request,
};
use crate::secret;
use crate::store::{Store, StoreError};
use crate::template::{Escape, Template, context_time};

/// How much of a response body an error quotes.
const BODY_QUOTE: usize = 200;
/// How long a run waits for another run renewing its account's token.
const TOKEN_WAIT: Duration = Duration::from_secs(60);
/// The token lease: longer than one token request with its retries takes in practice,
/// short enough that a process dying mid-refresh holds nobody up for long.
const TOKEN_LEASE: Duration = Duration::from_secs(30);
/// Redirects followed for one request before it fails: enough for a moved endpoint or a
/// trailing-slash hop, few enough that a loop ends at once.
const MAX_REDIRECTS: usize = 5;

/// Errors of the HTTP side. Every text is already free of secrets.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A credential reference did not resolve.
    #[error("credential `{name}`: {message}")]
    Credential {
        /// Credential name.
        name: String,
        /// Why (names the reference, never a value).
        message: String,
    },
    /// A template failed to render.
    #[error("rendering {what}: {message}")]
    Template {
        /// Which template (`request.path`, `base_url`, ...).
        what: String,
        /// Why.
        message: String,
    },
    /// A rendered URL is not a URL.
    #[error("invalid URL `{0}`")]
    Url(String),
    /// A next URL points at another origin than the connector's requests: following it
    /// would hand the importer's credentials to whoever the response names.
    #[error(
        "next URL `{0}` is on another host than the connector's requests; not sending credentials there"
    )]
    ForeignNextUrl(String),
    /// The service redirected a request to another origin than the one the request was
    /// allowed to reach. Following it would hand the importer's credentials (a custom
    /// header, a query key, a session) to whoever the `Location` names, so it is refused.
    #[error(
        "{method} {url} answered HTTP {status} redirecting to another origin ({to}); requests may only go to {from}, so the redirect was not followed and no credentials were sent there"
    )]
    ForeignRedirect {
        /// Method.
        method: String,
        /// The URL that answered with the redirect, secrets masked.
        url: String,
        /// The redirect status.
        status: u16,
        /// The origin the request was allowed to reach.
        from: String,
        /// The origin the redirect named.
        to: String,
    },
    /// The service kept redirecting, or named a `Location` that is not a URL.
    #[error("{method} {url}: {message}")]
    Redirect {
        /// Method.
        method: String,
        /// URL, secrets masked.
        url: String,
        /// Why.
        message: String,
    },
    /// The request never got an answer.
    #[error("{method} {url}: {message}")]
    Transport {
        /// Method.
        method: String,
        /// URL, secrets masked.
        url: String,
        /// Cause.
        message: String,
    },
    /// The service answered with an error status.
    #[error("{method} {url} answered HTTP {status}: {body}")]
    Status {
        /// Method.
        method: String,
        /// URL, secrets masked.
        url: String,
        /// Status code.
        status: u16,
        /// Start of the body, secrets masked.
        body: String,
    },
    /// Authentication failed (token endpoint, login).
    #[error("authentication ({scheme}): {message}")]
    Auth {
        /// Scheme type.
        scheme: &'static str,
        /// Why, secrets masked.
        message: String,
    },
    /// A response body longer than `limits.max_response_bytes`: not read further.
    #[error(
        "{method} {url}: the response body is larger than {limit} bytes (limits.max_response_bytes in tributary.yaml); it was not read further"
    )]
    TooLarge {
        /// Method.
        method: String,
        /// URL, secrets masked.
        url: String,
        /// The cap, in bytes.
        limit: u64,
    },
    /// The service refused the credentials themselves (a login or token request
    /// answered 400, 401 or 403: `invalid_grant`, `invalid_client`, a wrong password).
    /// Retrying cannot help; the daemon pauses the importer until they change.
    #[error("authentication ({scheme}) refused: {message}")]
    CredentialsRefused {
        /// Scheme type.
        scheme: &'static str,
        /// Why, secrets masked.
        message: String,
    },
    /// The service asked to wait longer than a run waits (a daily quota): the run stops
    /// at its checkpoint and the next one may start at `until`.
    #[error("{method} {url}: the service asks to wait until {until} (HTTP {status})")]
    Quota {
        /// Method.
        method: String,
        /// URL, secrets masked.
        url: String,
        /// The status that asked for the wait.
        status: u16,
        /// When the service accepts requests again.
        until: chrono::DateTime<Utc>,
    },
    /// A response one of the connector's `error_rules` recognised, carrying the rule's
    /// action: the run restarts its pass or skips the page for those actions, and fails
    /// with the kind the action names for the others.
    #[error("{method} {url} answered HTTP {status}: {message}")]
    Rule {
        /// The rule's action.
        action: ErrorAction,
        /// Method.
        method: String,
        /// URL, secrets masked.
        url: String,
        /// Status code.
        status: u16,
        /// The rule's message and the start of the body, secrets masked.
        message: String,
    },
    /// The token endpoint refused the grant or the client (`invalid_grant`,
    /// `invalid_client`, `unauthorized_client`): the refresh token was revoked or
    /// expired, or the client's secret changed. A person must consent again or fix the
    /// credentials; the daemon pauses the importer until they change.
    #[error("authentication (oauth2) refused the grant ({code}): {message}")]
    GrantRefused {
        /// The OAuth2 error code.
        code: String,
        /// Why, secrets masked.
        message: String,
    },
    /// A request kept failing (429, 5xx, timeouts, connection errors) until its retry
    /// budget was spent.
    #[error(
        "{last}; gave up after {attempts} attempts in {seconds:.1} s (limits.retry_budget is {budget_seconds} s)"
    )]
    Exhausted {
        /// The last attempt's error.
        last: Box<ClientError>,
        /// Attempts made, the first included.
        attempts: u32,
        /// Time spent.
        seconds: f64,
        /// The budget, in seconds.
        budget_seconds: f64,
    },
    /// Keeping a rotated token failed.
    #[error("keeping a token in the store: {0}")]
    Store(#[from] StoreError),
}

impl ClientError {
    /// The error a request ended with, past the retries that led to it.
    pub fn last(&self) -> &ClientError {
        match self {
            ClientError::Exhausted { last, .. } => last.last(),
            other => other,
        }
    }
}

/// A request ready to send: rendered, not yet authenticated.
#[derive(Clone)]
pub struct Prepared {
    /// Method.
    pub method: HttpMethod,
    /// Full URL.
    pub url: url::Url,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<PreparedBody>,
}

/// A rendered body.
#[derive(Debug, Clone, PartialEq)]
pub enum PreparedBody {
    /// JSON.
    Json(Value),
    /// Form fields.
    Form(Vec<(String, String)>),
    /// JSON text from a whole-body template.
    Text(String),
}

/// A response as the engine needs it.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The URL requested (with secrets; use [`SecretSet::redact`] before showing it).
    pub url: String,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body of one page.
    pub body: Vec<u8>,
}

impl Response {
    /// `Link` header values joined, if any.
    pub fn link(&self) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

/// The start of a body for an error message: at most 200 characters, control characters
/// as spaces, secrets masked.
pub fn body_start(body: &[u8], secrets: &SecretSet) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_QUOTE * 4)]);
    let mut quoted: String = text
        .chars()
        .take(BODY_QUOTE)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > BODY_QUOTE {
        quoted.push('…');
    }
    if quoted.trim().is_empty() {
        return "(empty body)".into();
    }
    secrets.redact(&quoted)
}

/// What a successful token or login response was, without its text: such a body holds
/// the new token (a form-encoded `access_token=...`, a bare session id), which no secret
/// set knows yet, so quoting it would leak it into the error and the run history.
fn withheld_body(response: &Response) -> String {
    let content_type = response
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type");
    format!(
        "{} bytes of {content_type} (not shown: it may hold a token)",
        response.body.len()
    )
}

/// The hash naming an OAuth2 account: the service, the token URL, the client id, the
/// grant and what identifies the grant's holder (the configured refresh token, the
/// client secret, or the private key and subject).
fn account_hash(service: &str, url: &str, id: &str, grant: &str, identity: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [service, url, id, grant, identity] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex()[..32].to_string()
}

/// The grant type of RFC 7523's JWT bearer grant.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Life of a JWT bearer assertion, in seconds.
const ASSERTION_LIFETIME_SECONDS: i64 = 180;

/// What a JWT bearer assertion is made of, rendered.
struct JwtClaims {
    /// PEM RSA private key.
    key: String,
    /// Subject, if any.
    subject: Option<String>,
    /// Audience.
    audience: String,
}

/// An account's token as the store keeps it (encrypted): the token response (`token.*`),
/// the refresh token to use next, and when to renew it (Unix milliseconds).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TokenEntry {
    token: Map<String, Value>,
    refresh_token: Option<String>,
    renew_at: Option<i64>,
}

impl TokenEntry {
    fn access_token(&self) -> Option<&str> {
        self.token.get("access_token").and_then(Value::as_str)
    }
}

/// The HTTP client of one run of one importer.
pub struct Client {
    http: reqwest::Client,
    importer: Arc<Importer>,
    store: Arc<dyn Store>,
    secrets: SecretSet,
    base: Map<String, Value>,
    /// When the current access token or session must be renewed; `None`: none yet.
    auth_expires: Option<Instant>,
    auth_ready: bool,
    /// Longest response body read, retry budget, longest wait (`limits`).
    limits: Limits,
    /// The connector's `rate_limit` for this importer's account, shared with every other
    /// importer on it.
    limiter: Option<Arc<AccountLimiter>>,
    /// The access token the service answered 401 to: never taken from the cache again.
    refused_access: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("importer", &self.importer.id)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Resolves the importer's credentials and builds the template context
    /// (`credentials.*`, `settings.*`, `filters.*`, `token.*`, `page_size`, `now`,
    /// `since`: null until [`Client::set`]).
    ///
    /// # Errors
    /// A credential that does not resolve, a client that cannot be built.
    pub fn new(
        importer: Arc<Importer>,
        store: Arc<dyn Store>,
        limits: Limits,
    ) -> Result<Self, ClientError> {
        Self::build(importer, store, limits, None)
    }

    /// A client for `tributary auth`: as [`Client::new`], except that the credential
    /// `absent_ok` (the refresh token being obtained) may not resolve yet.
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn for_consent(
        importer: Arc<Importer>,
        store: Arc<dyn Store>,
        limits: Limits,
        absent_ok: &str,
    ) -> Result<Self, ClientError> {
        Self::build(importer, store, limits, Some(absent_ok))
    }

    fn build(
        importer: Arc<Importer>,
        store: Arc<dyn Store>,
        limits: Limits,
        absent_ok: Option<&str>,
    ) -> Result<Self, ClientError> {
        let connector = &importer.connector;
        let http = reqwest::Client::builder()
            .connect_timeout(connector.connect_timeout)
            .timeout(connector.request_timeout)
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by `execute`, only within the request's origin: the
            // default policy would carry custom auth headers and query keys anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .build()
            .map_err(|e| ClientError::Transport {
                method: "-".into(),
                url: "-".into(),
                message: e.to_string(),
            })?;
        let mut secrets = SecretSet::default();
        let mut credentials = Map::new();
        for (name, reference) in &importer.credentials {
            let value = match secret::resolve(reference) {
                Ok(value) => value.expose().to_string(),
                Err(_) if absent_ok == Some(name.as_str()) => String::new(),
                Err(e) => {
                    return Err(ClientError::Credential {
                        name: name.clone(),
                        message: e.to_string(),
                    });
                }
            };
            // Literal values too: "not secret" is the writer's claim, masking costs nothing.
            secrets.insert(&format!("credentials.{name}"), &value);
            credentials.insert(name.clone(), Value::String(value));
        }
        let limiter = connector.rate_limit.as_ref().map(|spec| {
            let pairs: Vec<(&str, &str)> = credentials
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str().unwrap_or_default()))
                .collect();
            AccountLimiter::for_account(&connector.service, spec, &pairs)
        });
        let mut base = Map::new();
        base.insert("credentials".into(), Value::Object(credentials));
        base.insert("settings".into(), Value::Object(importer.settings.clone()));
        base.insert(
            "filters".into(),
            Value::Object(importer.server_filter_context()),
        );
        base.insert("token".into(), json!({}));
        base.insert("page_size".into(), json!(importer.page_size));
        base.insert("now".into(), context_time(Utc::now()));
        base.insert("since".into(), Value::Null);
        Ok(Self {
            http,
            importer,
            store,
            secrets,
            base,
            auth_expires: None,
            auth_ready: false,
            limits,
            limiter,
            refused_access: None,
        })
    }

    /// The run's secrets, for redacting and for next-URL placeholders.
    pub fn secrets(&self) -> &SecretSet {
        &self.secrets
    }

    /// Sets a context entry for every following request (`since`).
    pub fn set(&mut self, key: &str, value: Value) {
        self.base.insert(key.to_string(), value);
    }

    fn context(&self, vars: &Map<String, Value>) -> Value {
        let mut ctx = self.base.clone();
        for (k, v) in vars {
            ctx.insert(k.clone(), v.clone());
        }
        Value::Object(ctx)
    }

    /// The OAuth2 scopes, each rendered (a resource's scope may name the account's
    /// host); one that renders empty is left out.
    fn render_scopes(&self, scopes: &[Template], ctx: &Value) -> Result<Vec<String>, ClientError> {
        let mut out = Vec::with_capacity(scopes.len());
        for scope in scopes {
            let text = self.render(scope, ctx, Escape::None, "oauth2.scopes")?;
            if !text.is_empty() {
                out.push(text);
            }
        }
        Ok(out)
    }

    fn render(
        &self,
        t: &Template,
        ctx: &Value,
        escape: Escape,
        what: &str,
    ) -> Result<String, ClientError> {
        t.render(ctx, escape).map_err(|e| ClientError::Template {
            what: what.to_string(),
            message: self.secrets.redact(&e.message),
        })
    }

    /// Renders a plan request: base URL and path, query entries, the connector's and the
    /// request's headers, the body. Entries that render empty are omitted.
    pub fn prepare(
        &self,
        request: &Request,
        vars: &Map<String, Value>,
    ) -> Result<Prepared, ClientError> {
        let ctx = self.context(vars);
        let path = self.render(&request.path, &ctx, Escape::PathSegment, "request.path")?;
        let mut url = if path.starts_with("http://") || path.starts_with("https://") {
            self.parse_url(&path)?
        } else {
            let base = self.render(
                &self.importer.connector.base_url,
                &ctx,
                Escape::None,
                "base_url",
            )?;
            let joined = match (base.ends_with('/'), path.starts_with('/')) {
                _ if path.is_empty() => base,
                (true, true) => format!("{base}{}", &path[1..]),
                (false, false) => format!("{base}/{path}"),
                _ => format!("{base}{path}"),
            };
            self.parse_url(&joined)?
        };
        for (name, template) in &request.query {
            let value = self.render(template, &ctx, Escape::Query, &format!("query `{name}`"))?;
            if !value.is_empty() {
                url.query_pairs_mut().append_pair(name, &value);
            }
        }
        let headers = self.headers(request, &ctx)?;
        let body = match &request.body {
            None => None,
            Some(Body::Json(template)) => {
                Some(PreparedBody::Json(template.render(&ctx).map_err(|e| {
                    ClientError::Template {
                        what: "request.body".into(),
                        message: self.secrets.redact(&e.message),
                    }
                })?))
            }
            Some(Body::Form(entries)) => {
                let mut fields = Vec::new();
                for (name, template) in entries {
                    let value = self.render(
                        template,
                        &ctx,
                        Escape::None,
                        &format!("form field `{name}`"),
                    )?;
                    if !value.is_empty() {
                        fields.push((name.clone(), value));
                    }
                }
                Some(PreparedBody::Form(fields))
            }
            Some(Body::Template(template)) => Some(PreparedBody::Text(self.render(
                template,
                &ctx,
                Escape::Json,
                "request.body",
            )?)),
        };
        Ok(Prepared {
            method: request.method,
            url,
            headers,
            body,
        })
    }

    /// A GET of a next URL the service gave. With `readd`, the request's query entries
    /// missing from the URL are added again (`verbatim: false`).
    pub fn prepare_follow(
        &self,
        next: &str,
        request: &Request,
        readd: bool,
        vars: &Map<String, Value>,
    ) -> Result<Prepared, ClientError> {
        let ctx = self.context(vars);
        let mut url = self.parse_url(next)?;
        if !self.same_origin_as_requests(&url, request, &ctx)? {
            return Err(ClientError::ForeignNextUrl(
                self.secrets.redact(url.as_str()),
            ));
        }
        if readd {
            let present: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
            for (name, template) in &request.query {
                if present.iter().any(|p| p == name) {
                    continue;
                }
                let value =
                    self.render(template, &ctx, Escape::Query, &format!("query `{name}`"))?;
                if !value.is_empty() {
                    url.query_pairs_mut().append_pair(name, &value);
                }
            }
        }
        Ok(Prepared {
            method: HttpMethod::Get,
            url,
            headers: self.headers(request, &ctx)?,
            body: None,
        })
    }

    /// Whether `url` has the origin of the connector's `base_url` (or of the request path,
    /// when that is an absolute URL). Next URLs come from response bodies and headers, so
    /// they are checked before credentials go with them.
    fn same_origin_as_requests(
        &self,
        url: &url::Url,
        request: &Request,
        ctx: &Value,
    ) -> Result<bool, ClientError> {
        let base = self.render(
            &self.importer.connector.base_url,
            ctx,
            Escape::None,
            "base_url",
        )?;
        if self.parse_url(&base)?.origin() == url.origin() {
            return Ok(true);
        }
        let path = self.render(&request.path, ctx, Escape::PathSegment, "request.path")?;
        Ok(
            (path.starts_with("http://") || path.starts_with("https://"))
                && self.parse_url(&path)?.origin() == url.origin(),
        )
    }

    fn parse_url(&self, text: &str) -> Result<url::Url, ClientError> {
        url::Url::parse(text).map_err(|_| ClientError::Url(self.secrets.redact(text)))
    }

    fn headers(
        &self,
        request: &Request,
        ctx: &Value,
    ) -> Result<Vec<(String, String)>, ClientError> {
        let mut headers: Vec<(String, String)> = Vec::new();
        let all = self
            .importer
            .connector
            .headers
            .iter()
            .chain(request.headers.iter());
        for (name, template) in all {
            let value = self.render(template, ctx, Escape::Header, &format!("header `{name}`"))?;
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if !value.is_empty() {
                headers.push((name.clone(), value));
            }
        }
        Ok(headers)
    }

    /// A request as a person may see it: method, URL, headers and body, secrets masked
    /// (and any authorization-like header masked whole).
    pub fn describe(&self, prepared: &Prepared) -> String {
        let mut out = format!(
            "{} {}",
            method_name(prepared.method),
            self.secrets.redact(prepared.url.as_str())
        );
        for (name, value) in &prepared.headers {
            let lower = name.to_ascii_lowercase();
            let sensitive = [
                "authorization",
                "cookie",
                "token",
                "key",
                "secret",
                "password",
            ]
            .iter()
            .any(|w| lower.contains(w));
            let shown = if sensitive {
                MASK.to_string()
            } else {
                self.secrets.redact(value)
            };
            out.push_str(&format!("\n{name}: {shown}"));
        }
        match &prepared.body {
            None => {}
            Some(PreparedBody::Json(v)) => {
                out.push_str(&format!("\n\n{}", self.secrets.redact(&v.to_string())))
            }
            Some(PreparedBody::Text(t)) => out.push_str(&format!("\n\n{}", self.secrets.redact(t))),
            Some(PreparedBody::Form(fields)) => {
                let text: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("\n\n{}", self.secrets.redact(&text.join("&"))));
            }
        }
        out
    }

    /// Sends a page request (authenticated, retried). Builds the request again per attempt
    /// so a refreshed token is used.
    ///
    /// # Errors
    /// Transport errors and error statuses that remain after the retries, auth failures.
    pub async fn send(
        &mut self,
        build: &(dyn Fn(&Client) -> Result<Prepared, ClientError> + Sync),
    ) -> Result<(Prepared, Response), ClientError> {
        let mut reauthenticated = false;
        let mut retrier = Retrier::new(&self.limits);
        loop {
            self.ensure_auth().await?;
            let mut prepared = build(self)?;
            self.apply_auth(&mut prepared)?;
            let method = || method_name(prepared.method).to_string();
            let url = || self.secrets.redact(prepared.url.as_str());
            let turn = match &self.limiter {
                Some(limiter) => match limiter.turn(self.limits.max_wait).await {
                    Ok(turn) => Some(turn),
                    Err(paused) => {
                        return Err(ClientError::Quota {
                            method: method(),
                            url: url(),
                            status: paused.status,
                            until: paused.until,
                        });
                    }
                },
                None => None,
            };
            let result = self.execute(&prepared).await;
            drop(turn);
            if let (Some(limiter), Ok(response)) = (&self.limiter, &result)
                && let Some(wait) = limiter.observe(response.status, &response.headers)
            {
                tracing::debug!(account = %limiter.account, wait_seconds = wait.as_secs_f64(), "The service's quota headers say none is left; the account waits.");
            }
            if let Ok(response) = &result
                && let Some(rule) = rules::matching(
                    &self.importer.connector.error_rules,
                    response.status,
                    &response.headers,
                    &response.body,
                )
            {
                let error = ClientError::Rule {
                    action: rule.action,
                    method: method(),
                    url: url(),
                    status: response.status,
                    message: self.rule_message(rule, response),
                };
                match rule.action {
                    ErrorAction::Retry => {
                        let hint = retry_after(&response.headers);
                        self.wait_before_retry(&mut retrier, error, hint).await?;
                    }
                    ErrorAction::RateLimited => {
                        let hint = self.throttled(response);
                        self.wait_before_retry(&mut retrier, error, hint).await?;
                    }
                    ErrorAction::RefreshAuth if !reauthenticated => {
                        reauthenticated = true;
                        self.auth_ready = false;
                        self.refused_access = self.base["token"]["access_token"]
                            .as_str()
                            .map(str::to_string);
                    }
                    _ => return Err(error),
                }
                continue;
            }
            let (error, hint) = match result {
                Ok(response) if (200..300).contains(&response.status) || response.status == 304 => {
                    return Ok((prepared, response));
                }
                Ok(response)
                    if response.status == 401
                        && !reauthenticated
                        && matches!(
                            self.importer.auth(),
                            Some(Auth::Oauth2 { .. } | Auth::Session { .. })
                        ) =>
                {
                    // An access token or session can expire early: renew once.
                    reauthenticated = true;
                    self.auth_ready = false;
                    self.refused_access = self.base["token"]["access_token"]
                        .as_str()
                        .map(str::to_string);
                    continue;
                }
                Ok(response) if retryable(response.status) => {
                    let hint = if response.status == 429 {
                        self.throttled(&response)
                    } else {
                        retry_after(&response.headers)
                    };
                    (
                        ClientError::Status {
                            method: method(),
                            url: url(),
                            status: response.status,
                            body: body_start(&response.body, &self.secrets),
                        },
                        hint,
                    )
                }
                Ok(response) => {
                    return Err(ClientError::Status {
                        method: method(),
                        url: url(),
                        status: response.status,
                        body: body_start(&response.body, &self.secrets),
                    });
                }
                Err(SendError::Refused(error)) => return Err(error),
                Err(SendError::Transport(message)) => (
                    ClientError::Transport {
                        method: method(),
                        url: url(),
                        message,
                    },
                    None,
                ),
            };
            self.wait_before_retry(&mut retrier, error, hint).await?;
        }
    }

    /// The wait a throttled response asks for (its `Retry-After`, or else the connector's
    /// `rate_limit.reset` header). A throttle applies to the account, not this importer:
    /// the account's other importers are paused too instead of meeting the same answer.
    fn throttled(&self, response: &Response) -> Option<Duration> {
        let hint = retry_after(&response.headers).or_else(|| {
            self.limiter
                .as_ref()
                .and_then(|l| l.reset_wait(&response.headers))
        });
        if let (Some(limiter), Some(wait)) = (&self.limiter, hint) {
            limiter.pause(wait, response.status);
        }
        hint
    }

    /// What an error rule's error says: its message, then the start of the body.
    fn rule_message(&self, rule: &ErrorRule, response: &Response) -> String {
        let body = body_start(&response.body, &self.secrets);
        let action: &str = rule.action.into();
        match &rule.message {
            Some(message) => format!(
                "{} (error rule `{action}`): {body}",
                self.secrets.redact(message)
            ),
            None => format!("recognised by an error rule (`{action}`): {body}"),
        }
    }

    /// After a failed attempt that may be retried: sleeps as the retrier decides, or
    /// ends the request, as a quota stop (the service asks for a wait longer than
    /// `limits.max_wait`: holding the run and its concurrency slot for it helps nobody)
    /// or with `error` once the budget is spent.
    async fn wait_before_retry(
        &self,
        retrier: &mut Retrier,
        error: ClientError,
        hint: Option<Duration>,
    ) -> Result<(), ClientError> {
        match retrier.next(hint) {
            Next::Wait(wait) => {
                crate::metrics::retry(&self.importer.connector.id);
                tracing::debug!(
                    attempt = retrier.attempts(),
                    wait_seconds = wait.as_secs_f64(),
                    error = %error,
                    "Request failed; retrying."
                );
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Next::Quota(wait) => {
                let until = Utc::now()
                    + chrono::Duration::from_std(wait)
                        .unwrap_or_else(|_| chrono::Duration::days(1))
                        .min(chrono::Duration::days(7));
                Err(match error {
                    ClientError::Status {
                        method,
                        url,
                        status,
                        ..
                    }
                    | ClientError::Rule {
                        method,
                        url,
                        status,
                        ..
                    } => ClientError::Quota {
                        method,
                        url,
                        status,
                        until,
                    },
                    other => other,
                })
            }
            Next::GiveUp => Err(ClientError::Exhausted {
                last: Box::new(error),
                attempts: retrier.attempts(),
                seconds: retrier.elapsed().as_secs_f64(),
                budget_seconds: retrier.budget().as_secs_f64(),
            }),
        }
    }

    /// Sends one request, following redirects only within its own origin (every request
    /// Tributary sends: pages, token requests, logins).
    ///
    /// The prepared URL's origin is the one this request was allowed to reach: a page
    /// request's is the connector's `base_url` origin or its absolute path's, and a next
    /// URL was checked against those before it got here. A `Location` on another origin
    /// (another scheme, host or port) fails the request instead of carrying credentials
    /// there; no `Referer` is ever sent.
    async fn execute(&self, prepared: &Prepared) -> Result<Response, SendError> {
        let allowed = prepared.url.origin();
        let mut url = prepared.url.clone();
        let mut method = prepared.method;
        let mut body = prepared.body.as_ref();
        let mut hops = 0;
        loop {
            let response = self.execute_once(prepared, &url, method, body).await?;
            let Some(location) = redirect_location(&response) else {
                return Ok(response);
            };
            let masked_url = || self.secrets.redact(url.as_str());
            let target = url.join(&location).map_err(|_| {
                SendError::Refused(ClientError::Redirect {
                    method: method_name(method).into(),
                    url: masked_url(),
                    message: format!(
                        "answered HTTP {} with a `Location` that is not a URL: `{}`",
                        response.status,
                        self.secrets.redact(&location)
                    ),
                })
            })?;
            if target.origin() != allowed {
                return Err(SendError::Refused(ClientError::ForeignRedirect {
                    method: method_name(method).into(),
                    url: masked_url(),
                    status: response.status,
                    from: self.secrets.redact(&allowed.ascii_serialization()),
                    to: self.secrets.redact(&target.origin().ascii_serialization()),
                }));
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(SendError::Refused(ClientError::Redirect {
                    method: method_name(prepared.method).into(),
                    url: self.secrets.redact(prepared.url.as_str()),
                    message: format!("more than {MAX_REDIRECTS} redirects"),
                }));
            }
            // As browsers and reqwest do: 303 always, and 301/302 after a POST, become a
            // GET without a body; 307 and 308 repeat the request as it was.
            if response.status == 303 || (method == HttpMethod::Post && response.status <= 302) {
                method = HttpMethod::Get;
                body = None;
            }
            tracing::debug!(
                status = response.status,
                to = %self.secrets.redact(target.as_str()),
                "Following a redirect within the request's origin."
            );
            url = target;
        }
    }

    /// One HTTP exchange, no redirect followed.
    async fn execute_once(
        &self,
        prepared: &Prepared,
        url: &url::Url,
        method: HttpMethod,
        body: Option<&PreparedBody>,
    ) -> Result<Response, SendError> {
        let transport = |e: String| SendError::Transport(e);
        let http_method = match method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
        };
        let mut builder = self.http.request(http_method, url.clone());
        let mut headers = HeaderMap::new();
        for (name, value) in &prepared.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| transport(e.to_string()))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| transport(format!("header `{name}` has an invalid value")))?;
            headers.append(name, value);
        }
        if !headers.contains_key(reqwest::header::ACCEPT) {
            headers.insert(
                reqwest::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            );
        }
        builder = builder.headers(headers);
        builder = match body {
            None => builder,
            Some(PreparedBody::Json(v)) => builder.json(v),
            Some(PreparedBody::Form(fields)) => builder.form(fields),
            Some(PreparedBody::Text(t)) => builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(t.clone()),
        };
        let connector = &self.importer.connector.id;
        let response = builder.send().await.map_err(|e| {
            crate::metrics::http_response(connector, None);
            transport(self.secrets.redact(&error_chain(&e)))
        })?;
        let status = response.status().as_u16();
        crate::metrics::http_response(connector, Some(status));
        let headers = response.headers().clone();
        let body = self.read_body(response, method, url).await?;
        Ok(Response {
            status,
            url: url.to_string(),
            headers,
            body,
        })
    }

    /// Reads a body chunk by chunk, up to `max_response_bytes`: a declared or streamed
    /// length past it fails the request at once (never retried: the same page would be
    /// as long again), so an endless or huge body costs at most the cap in memory.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        method: HttpMethod,
        url: &url::Url,
    ) -> Result<Vec<u8>, SendError> {
        let limit = self.limits.max_response_bytes;
        let too_large = || {
            SendError::Refused(ClientError::TooLarge {
                method: method_name(method).into(),
                url: self.secrets.redact(url.as_str()),
                limit,
            })
        };
        if response
            .content_length()
            .is_some_and(|length| length > limit)
        {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(
            response
                .content_length()
                .unwrap_or(0)
                .min(limit)
                .min(1 << 20) as usize,
        );
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| SendError::Transport(self.secrets.redact(&error_chain(&e))))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn auth_ctx(&self) -> Value {
        self.context(&Map::new())
    }

    /// Obtains or renews the token or session the scheme needs.
    async fn ensure_auth(&mut self) -> Result<(), ClientError> {
        let expired = self.auth_expires.is_some_and(|at| Instant::now() >= at);
        if self.auth_ready && !expired {
            return Ok(());
        }
        let importer = Arc::clone(&self.importer);
        match importer.auth() {
            Some(Auth::Oauth2 { .. }) => self.oauth_token().await?,
            Some(Auth::Session {
                login, token, ttl, ..
            }) => {
                let (prepared, response) = {
                    let login = login.clone();
                    let prepared = self.prepare(&login, &Map::new())?;
                    let response = self.execute(&prepared).await.map_err(|e| match e {
                        SendError::Refused(error) => error,
                        SendError::Transport(message) => ClientError::Auth {
                            scheme: "session",
                            message,
                        },
                    })?;
                    (prepared, response)
                };
                if !(200..300).contains(&response.status) {
                    let message = format!(
                        "login at {} answered HTTP {}: {}",
                        self.secrets.redact(prepared.url.as_str()),
                        response.status,
                        body_start(&response.body, &self.secrets)
                    );
                    return Err(if matches!(response.status, 400 | 401 | 403) {
                        ClientError::CredentialsRefused {
                            scheme: "session",
                            message,
                        }
                    } else {
                        ClientError::Auth {
                            scheme: "session",
                            message,
                        }
                    });
                }
                let body: Value =
                    serde_json::from_slice(&response.body).map_err(|_| ClientError::Auth {
                        scheme: "session",
                        message: format!(
                            "login response is not JSON: {}",
                            withheld_body(&response)
                        ),
                    })?;
                let session = token
                    .query(&body)
                    .into_iter()
                    .find_map(|v| match v {
                        Value::String(s) if !s.is_empty() => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .ok_or_else(|| ClientError::Auth {
                        scheme: "session",
                        message: format!("login response has no token at `{}`", token.as_str()),
                    })?;
                self.secrets.insert("token.session", &session);
                self.token_mut()
                    .insert("session".into(), Value::String(session));
                self.auth_expires = Some(Instant::now() + *ttl);
            }
            _ => {}
        }
        self.auth_ready = true;
        Ok(())
    }

    fn token_mut(&mut self) -> &mut Map<String, Value> {
        let slot = self.base.entry("token").or_insert_with(|| json!({}));
        if !slot.is_object() {
            *slot = json!({});
        }
        slot.as_object_mut().expect("token is an object")
    }

    /// The authorization URL a person opens to consent (`tributary auth`): the scheme's
    /// `authorize_url` with the authorization-code request of RFC 6749 4.1 and the PKCE
    /// challenge of RFC 7636 (S256).
    ///
    /// # Errors
    /// A scheme without `authorize_url`, a template that does not render.
    pub fn consent_url(
        &self,
        redirect_uri: &str,
        challenge: &str,
        state: &str,
    ) -> Result<String, ClientError> {
        let Some(Auth::Oauth2 {
            authorize_url: Some(authorize_url),
            client_id,
            scopes,
            ..
        }) = self.importer.auth()
        else {
            return Err(ClientError::Auth {
                scheme: "oauth2",
                message: "the importer's auth scheme has no `authorize_url` to consent at".into(),
            });
        };
        let ctx = self.auth_ctx();
        let base = self.render(authorize_url, &ctx, Escape::None, "oauth2.authorize_url")?;
        let id = self.render(client_id, &ctx, Escape::None, "oauth2.client_id")?;
        let scopes = self.render_scopes(scopes, &ctx)?;
        let mut url = self.parse_url(&base)?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("state", state);
            if !scopes.is_empty() {
                query.append_pair("scope", &scopes.join(" "));
            }
        }
        Ok(url.to_string())
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens, and returns
    /// the refresh token. With `keep`, the tokens are also kept in the store as the
    /// account's, for an importer whose refresh-token reference cannot be written.
    ///
    /// # Errors
    /// The token endpoint refusing, or answering without a refresh token.
    pub async fn exchange_code(
        &mut self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        keep: bool,
    ) -> Result<String, ClientError> {
        let importer = Arc::clone(&self.importer);
        let Some(Auth::Oauth2 {
            token_url,
            client_id,
            client_secret,
            refresh_token,
            client_auth,
            ..
        }) = importer.auth()
        else {
            return Err(ClientError::Auth {
                scheme: "oauth2",
                message: "the importer's auth scheme is not oauth2".into(),
            });
        };
        let ctx = self.auth_ctx();
        let url = self.render(token_url, &ctx, Escape::None, "oauth2.token_url")?;
        let id = self.render(client_id, &ctx, Escape::None, "oauth2.client_id")?;
        let secret = match client_secret {
            Some(t) => self.render(t, &ctx, Escape::None, "oauth2.client_secret")?,
            None => String::new(),
        };
        self.secrets.insert("oauth2.client_secret", &secret);
        self.secrets.insert("oauth2.code", code);
        self.secrets.insert("oauth2.code_verifier", verifier);
        let mut form = vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.to_string()),
            ("redirect_uri".to_string(), redirect_uri.to_string()),
            ("code_verifier".to_string(), verifier.to_string()),
        ];
        let mut headers = Vec::new();
        match client_auth {
            ClientAuth::Body => {
                form.push(("client_id".into(), id.clone()));
                form.push(("client_secret".into(), secret.clone()));
            }
            ClientAuth::Basic => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
                self.secrets.insert("oauth2.basic", &encoded);
                headers.push(("Authorization".to_string(), format!("Basic {encoded}")));
            }
        }
        let prepared = Prepared {
            method: HttpMethod::Post,
            url: self.parse_url(&url)?,
            headers,
            body: Some(PreparedBody::Form(form)),
        };
        let response = self.execute(&prepared).await.map_err(|e| match e {
            SendError::Refused(error) => error,
            SendError::Transport(message) => ClientError::Auth {
                scheme: "oauth2",
                message,
            },
        })?;
        let token = serde_json::from_slice::<Map<String, Value>>(&response.body)
            .ok()
            .filter(|_| (200..300).contains(&response.status));
        let refresh = token
            .as_ref()
            .and_then(|t| t.get("refresh_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let (Some(_), Some(refresh)) = (token, refresh) else {
            let shown = if (200..300).contains(&response.status) {
                format!(
                    "no refresh token in the answer ({}); the service may need offline access asked for in authorize_url",
                    withheld_body(&response)
                )
            } else {
                body_start(&response.body, &self.secrets)
            };
            return Err(ClientError::CredentialsRefused {
                scheme: "oauth2",
                message: format!(
                    "token endpoint {} answered HTTP {}: {shown}",
                    self.secrets.redact(&url),
                    response.status
                ),
            });
        };
        self.secrets.insert("token.refresh_token", &refresh);
        if keep {
            let configured = match refresh_token {
                Some(t) => self.render(t, &ctx, Escape::None, "oauth2.refresh_token")?,
                None => String::new(),
            };
            let account = account_hash(
                &importer.connector.service,
                &url,
                &id,
                Oauth2Grant::RefreshToken.into(),
                &configured,
            );
            let entry = TokenEntry {
                token: Map::new(),
                refresh_token: Some(refresh.clone()),
                // Renewed at the next run, with the new refresh token.
                renew_at: Some(0),
            };
            self.store
                .save_token(
                    &format!("oauth2:account:{account}"),
                    &serde_json::to_string(&entry).unwrap_or_default(),
                )
                .await?;
        }
        Ok(refresh)
    }

    /// Obtains the account's access token: the one cached in the store while it is
    /// good, else a new one from the token endpoint, asked for by one process at a time.
    ///
    /// Tokens belong to the **account** (the service, the token URL, the client id, the
    /// grant and the configured secret or refresh token, hashed), not to the importer:
    /// two importers on one account share one access token, and a refresh token the
    /// service rotates is the one both use next. The refresh itself holds a short lease
    /// row (`oauth2-refresh:<account>`), never a transaction, so that importers of one
    /// account in any process refresh once and the others read the result.
    async fn oauth_token(&mut self) -> Result<(), ClientError> {
        let importer = Arc::clone(&self.importer);
        let Some(Auth::Oauth2 {
            grant,
            token_url,
            client_id,
            client_secret,
            refresh_token,
            private_key,
            subject,
            audience,
            scopes,
            ..
        }) = importer.auth()
        else {
            return Ok(());
        };
        let ctx = self.auth_ctx();
        let url = self.render(token_url, &ctx, Escape::None, "oauth2.token_url")?;
        // A scope that names the account's resource (Dynamics 365's org host) makes tokens
        // of one client for two resources two accounts; literal scopes (every connector
        // before templated scopes) leave the key as it was.
        let resource = if scopes.iter().any(|s| !s.variables().is_empty()) {
            self.render_scopes(scopes, &ctx)?.join(" ")
        } else {
            String::new()
        };
        let id = self.render(client_id, &ctx, Escape::None, "oauth2.client_id")?;
        let secret = match client_secret {
            Some(t) => Some(self.render(t, &ctx, Escape::None, "oauth2.client_secret")?),
            None => None,
        };
        let configured = match refresh_token {
            Some(t) => Some(self.render(t, &ctx, Escape::None, "oauth2.refresh_token")?),
            None => None,
        };
        if let Some(secret) = &secret {
            self.secrets.insert("oauth2.client_secret", secret);
        }
        let jwt = match private_key {
            Some(t) => {
                let key = self.render(t, &ctx, Escape::None, "oauth2.private_key")?;
                self.secrets.insert("oauth2.private_key", &key);
                let subject = match subject {
                    Some(t) => Some(self.render(t, &ctx, Escape::None, "oauth2.subject")?),
                    None => None,
                };
                let audience = match audience {
                    Some(t) => self.render(t, &ctx, Escape::None, "oauth2.audience")?,
                    None => url.clone(),
                };
                Some(JwtClaims {
                    key,
                    subject,
                    audience,
                })
            }
            None => None,
        };
        if let Some(configured) = &configured {
            self.secrets
                .insert("oauth2.configured_refresh_token", configured);
        }
        let grant_name: &'static str = (*grant).into();
        // A person who pastes a new refresh token after re-consenting names a new account
        // entry, so it wins over whatever the store kept for the old one.
        let jwt_identity = jwt
            .as_ref()
            .map(|j| format!("{}\0{}", j.key, j.subject.as_deref().unwrap_or("")));
        let identity = configured
            .as_deref()
            .or(secret.as_deref())
            .or(jwt_identity.as_deref())
            .unwrap_or("");
        let identity = if resource.is_empty() {
            identity.to_string()
        } else {
            format!("{identity}\0{resource}")
        };
        let account = account_hash(
            &importer.connector.service,
            &url,
            &id,
            grant_name,
            &identity,
        );
        let key = format!("oauth2:account:{account}");
        let deadline = Instant::now() + TOKEN_WAIT;
        loop {
            if let Some(entry) = self.cached_token(&key).await? {
                return self.use_token(entry);
            }
            let lease_name = format!("oauth2-refresh:{account}");
            let Some(lease) = self.store.acquire_lease(&lease_name, TOKEN_LEASE).await? else {
                if Instant::now() >= deadline {
                    return Err(ClientError::Auth {
                        scheme: "oauth2",
                        message: format!(
                            "another run has been renewing this account's token for {} s; giving up",
                            TOKEN_WAIT.as_secs()
                        ),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // Under the lease: another run may have renewed the token meanwhile.
            let result = match self.cached_token(&key).await {
                Ok(Some(entry)) => self.use_token(entry),
                Ok(None) => {
                    self.oauth_request(
                        &key,
                        &url,
                        &id,
                        secret.as_deref(),
                        configured.as_deref(),
                        jwt.as_ref(),
                    )
                    .await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = self.store.release_lease(&lease).await {
                tracing::warn!(error = %error, "Could not release the token lease; it expires on its own.");
            }
            return result;
        }
    }

    /// The signed assertion of the JWT bearer grant (RFC 7523 2.1): RS256, the client id
    /// as issuer, the subject if any, the audience, three minutes of life (Salesforce
    /// accepts no more), the scopes as a `scope` claim (Google reads them there).
    fn assertion(
        &mut self,
        jwt: &JwtClaims,
        id: &str,
        scopes: &[String],
    ) -> Result<String, ClientError> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(jwt.key.as_bytes()).map_err(|e| {
            ClientError::Credential {
                name: "oauth2.private_key".into(),
                message: format!("not an RSA private key in PEM ({e})"),
            }
        })?;
        let now = Utc::now().timestamp();
        let mut claims = json!({
            "iss": id,
            "aud": jwt.audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
        });
        if let Some(subject) = &jwt.subject {
            claims["sub"] = json!(subject);
        }
        if !scopes.is_empty() {
            claims["scope"] = json!(scopes.join(" "));
        }
        let assertion = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .map_err(|e| ClientError::Credential {
            name: "oauth2.private_key".into(),
            message: format!("signing the assertion failed ({e})"),
        })?;
        self.secrets.insert("oauth2.assertion", &assertion);
        Ok(assertion)
    }

    /// The account's cached token, if it is still good: not past its renewal time, and
    /// not the access token the service just refused (a 401).
    async fn cached_token(&self, key: &str) -> Result<Option<TokenEntry>, ClientError> {
        let Some(text) = self.store.load_token(key).await? else {
            return Ok(None);
        };
        let Ok(entry) = serde_json::from_str::<TokenEntry>(&text) else {
            return Ok(None);
        };
        let fresh = entry
            .renew_at
            .is_none_or(|at| Utc::now().timestamp_millis() < at);
        let refused = self.refused_access.as_deref() == entry.access_token();
        Ok((fresh && !refused).then_some(entry))
    }

    /// Makes `entry` the run's token: the `token.*` context, the secrets to mask, when to
    /// renew it.
    fn use_token(&mut self, entry: TokenEntry) -> Result<(), ClientError> {
        let access = entry.access_token().unwrap_or_default().to_string();
        self.secrets.insert("token.access_token", &access);
        if let Some(refresh) = &entry.refresh_token {
            self.secrets.insert("token.refresh_token", refresh);
        }
        for (name, value) in &entry.token {
            if let Value::String(s) = value
                && (name.contains("token") || name.contains("secret"))
            {
                self.secrets.insert(&format!("token.{name}"), s);
            }
        }
        self.auth_expires = entry.renew_at.map(|at| {
            let left = at - Utc::now().timestamp_millis();
            Instant::now() + Duration::from_millis(u64::try_from(left).unwrap_or(0))
        });
        self.base.insert("token".into(), Value::Object(entry.token));
        Ok(())
    }

    /// Asks the token endpoint for a new access token (the caller holds the account's
    /// lease) and keeps it, encrypted, for the account.
    async fn oauth_request(
        &mut self,
        key: &str,
        url: &str,
        id: &str,
        secret: Option<&str>,
        configured: Option<&str>,
        jwt: Option<&JwtClaims>,
    ) -> Result<(), ClientError> {
        let importer = Arc::clone(&self.importer);
        let Some(Auth::Oauth2 {
            grant,
            client_auth,
            scopes,
            ..
        }) = importer.auth()
        else {
            return Ok(());
        };
        let scopes = self.render_scopes(scopes, &self.auth_ctx())?;
        // The refresh token to use: the one the account last received (the service may
        // have rotated it), else one kept per importer by an older version (migrated
        // here), else the configured one.
        let kept = self
            .store
            .load_token(key)
            .await?
            .and_then(|text| serde_json::from_str::<TokenEntry>(&text).ok())
            .and_then(|entry| entry.refresh_token);
        let legacy_key = format!("oauth2:{}:refresh_token", importer.id);
        let mut migrated = false;
        let current = match (grant, configured, kept) {
            (Oauth2Grant::RefreshToken, _, Some(kept)) => Some(kept),
            (Oauth2Grant::RefreshToken, Some(configured), None) => {
                let origin = blake3::hash(configured.as_bytes()).to_hex().to_string();
                match self.store.load_token(&legacy_key).await? {
                    Some(saved)
                        if let Ok(saved) = serde_json::from_str::<Value>(&saved)
                            && saved["from"].as_str() == Some(origin.as_str())
                            && let Some(rotated) = saved["refresh_token"].as_str() =>
                    {
                        migrated = true;
                        Some(rotated.to_string())
                    }
                    _ => Some(configured.to_string()),
                }
            }
            _ => None,
        };
        let mut form = match (grant, &current) {
            (Oauth2Grant::RefreshToken, Some(current)) => {
                self.secrets.insert("token.refresh_token", current);
                vec![
                    ("grant_type".to_string(), "refresh_token".to_string()),
                    ("refresh_token".to_string(), current.clone()),
                ]
            }
            _ => match jwt {
                Some(jwt) => {
                    let assertion = self.assertion(jwt, id, &scopes)?;
                    vec![
                        ("grant_type".to_string(), JWT_BEARER.to_string()),
                        ("assertion".to_string(), assertion),
                    ]
                }
                None => vec![("grant_type".to_string(), "client_credentials".to_string())],
            },
        };
        // A JWT carries its scopes as a claim; the other grants ask in the form.
        if !scopes.is_empty() && jwt.is_none() {
            form.push(("scope".into(), scopes.join(" ")));
        }
        let secret = secret.unwrap_or_default();
        let mut headers = Vec::new();
        match client_auth {
            // The assertion is the client's proof: no id or secret beside it.
            _ if jwt.is_some() => {}
            ClientAuth::Body => {
                form.push(("client_id".into(), id.to_string()));
                form.push(("client_secret".into(), secret.to_string()));
            }
            ClientAuth::Basic => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
                self.secrets.insert("oauth2.basic", &encoded);
                headers.push(("Authorization".to_string(), format!("Basic {encoded}")));
            }
        }
        let prepared = Prepared {
            method: HttpMethod::Post,
            url: self.parse_url(url)?,
            headers,
            body: Some(PreparedBody::Form(form)),
        };
        let mut retrier = Retrier::new(&self.limits);
        let response = loop {
            let (error, hint) = match self.execute(&prepared).await {
                Ok(r) if retryable(r.status) => {
                    let hint = retry_after(&r.headers);
                    let error = ClientError::Auth {
                        scheme: "oauth2",
                        message: format!(
                            "token endpoint {} answered HTTP {}: {}",
                            self.secrets.redact(url),
                            r.status,
                            body_start(&r.body, &self.secrets)
                        ),
                    };
                    (error, hint)
                }
                Ok(r) => break r,
                Err(SendError::Refused(error)) => return Err(error),
                Err(SendError::Transport(message)) => (
                    ClientError::Auth {
                        scheme: "oauth2",
                        message,
                    },
                    None,
                ),
            };
            self.wait_before_retry(&mut retrier, error, hint).await?;
        };
        if !(200..300).contains(&response.status) {
            let message = format!(
                "token endpoint {} answered HTTP {}: {}",
                self.secrets.redact(url),
                response.status,
                body_start(&response.body, &self.secrets)
            );
            // RFC 6749 5.2: a refused grant or client is a 400 (`invalid_grant`,
            // `invalid_client`, ...) or a 401; retrying cannot help, a person must act.
            let code = serde_json::from_slice::<Value>(&response.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string));
            return Err(match code.as_deref() {
                Some(code @ ("invalid_grant" | "invalid_client" | "unauthorized_client")) => {
                    ClientError::GrantRefused {
                        code: code.to_string(),
                        message,
                    }
                }
                _ if matches!(response.status, 400 | 401 | 403) => {
                    ClientError::CredentialsRefused {
                        scheme: "oauth2",
                        message,
                    }
                }
                _ => ClientError::Auth {
                    scheme: "oauth2",
                    message,
                },
            });
        }
        let token: Map<String, Value> =
            serde_json::from_slice(&response.body).map_err(|_| ClientError::Auth {
                scheme: "oauth2",
                message: format!(
                    "token response is not a JSON object: {}",
                    withheld_body(&response)
                ),
            })?;
        token
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ClientError::Auth {
                scheme: "oauth2",
                message: "token response has no `access_token`".into(),
            })?;
        let rotated = token
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if rotated.is_some() && rotated != current {
            tracing::info!(importer = %importer.id, "Kept the refresh token the service rotated.");
        }
        // Renewed a minute before it expires, or halfway through a shorter life.
        let lifetime_ms = token
            .get("expires_in")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .map(|s| s.saturating_mul(1000));
        let renew_at = lifetime_ms.map(|ms| {
            let early = ms.saturating_sub(60_000).max(ms / 2);
            Utc::now().timestamp_millis() + i64::try_from(early).unwrap_or(i64::MAX / 2)
        });
        let entry = TokenEntry {
            token,
            refresh_token: rotated.or(current),
            renew_at,
        };
        self.store
            .save_token(key, &serde_json::to_string(&entry).unwrap_or_default())
            .await?;
        if migrated {
            self.store.delete_token(&legacy_key).await?;
        }
        self.refused_access = None;
        self.use_token(entry)
    }

    /// Adds the scheme's credentials to a prepared request.
    fn apply_auth(&mut self, prepared: &mut Prepared) -> Result<(), ClientError> {
        let importer = Arc::clone(&self.importer);
        let ctx = self.auth_ctx();
        let has_authorization = prepared
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
        match importer.auth() {
            None | Some(Auth::None) => {}
            Some(Auth::ApiKey {
                location,
                name,
                value,
            }) => {
                let key = self.render(value, &ctx, Escape::None, "auth.value")?;
                self.secrets.insert("auth.api_key", &key);
                match location {
                    ApiKeyLocation::Header => prepared.headers.push((name.clone(), key)),
                    ApiKeyLocation::Query => set_query(&mut prepared.url, name, &key),
                }
            }
            Some(Auth::Bearer { token }) => {
                let token = self.render(token, &ctx, Escape::Header, "auth.token")?;
                self.secrets.insert("auth.bearer", &token);
                prepared
                    .headers
                    .push(("Authorization".into(), format!("Bearer {token}")));
            }
            Some(Auth::Basic { username, password }) => {
                let user = self.render(username, &ctx, Escape::None, "auth.username")?;
                let pass = match password {
                    Some(p) => self.render(p, &ctx, Escape::None, "auth.password")?,
                    None => String::new(),
                };
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                self.secrets.insert("auth.password", &pass);
                self.secrets.insert("auth.basic", &encoded);
                prepared
                    .headers
                    .push(("Authorization".into(), format!("Basic {encoded}")));
            }
            Some(Auth::Header { headers }) => {
                for (name, template) in headers {
                    let value = self.render(
                        template,
                        &ctx,
                        Escape::Header,
                        &format!("auth header `{name}`"),
                    )?;
                    if !value.is_empty() {
                        self.secrets.insert(&format!("auth.header.{name}"), &value);
                        prepared.headers.push((name.clone(), value));
                    }
                }
            }
            Some(Auth::Oauth2 { .. }) => {
                if !has_authorization {
                    let access = self.base["token"]["access_token"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    prepared
                        .headers
                        .push(("Authorization".into(), format!("Bearer {access}")));
                }
            }
            Some(Auth::Session { headers, query, .. }) => {
                for (name, template) in headers {
                    let value = self.render(
                        template,
                        &ctx,
                        Escape::Header,
                        &format!("session header `{name}`"),
                    )?;
                    if !value.is_empty() {
                        prepared.headers.push((name.clone(), value));
                    }
                }
                for (name, template) in query {
                    let value = self.render(
                        template,
                        &ctx,
                        Escape::Query,
                        &format!("session query `{name}`"),
                    )?;
                    if !value.is_empty() {
                        set_query(&mut prepared.url, name, &value);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Sets a query parameter: appended, or replacing the value a next URL already carries
/// (a service that writes the token into its next links), so it is sent once and current.
fn set_query(url: &mut url::Url, name: &str, value: &str) {
    if url.query_pairs().any(|(k, _)| k == name) {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != name)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut pairs = url.query_pairs_mut();
        pairs.clear();
        for (k, v) in &kept {
            pairs.append_pair(k, v);
        }
        pairs.append_pair(name, value);
    } else {
        url.query_pairs_mut().append_pair(name, value);
    }
}

/// Why one exchange did not produce a response.
enum SendError {
    /// The transport failed (connect, reset, timeout): worth another attempt. The text is
    /// already free of secrets.
    Transport(String),
    /// Refused for good (a redirect to another origin): never retried.
    Refused(ClientError),
}

/// The `Location` of a redirect response that is to be followed: 301, 302, 303, 307 and
/// 308 with a `Location` header. A 3xx without one is an answer like any other.
fn redirect_location(response: &Response) -> Option<String> {
    if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    response
        .headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn method_name(method: HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
    }
}

fn retryable(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// `Retry-After` of a response, if it has a readable one.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(
        headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?,
        Utc::now(),
    )
}

/// A `Retry-After` value: seconds (fractional allowed, as Shopify sends) or an HTTP date,
/// read against `now`. `None` for anything else, including a number too large for a
/// `Duration` (`1e300`) and a date in the past: the caller's own backoff applies then.
pub fn parse_retry_after(text: &str, now: chrono::DateTime<Utc>) -> Option<Duration> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).ok())
            .flatten();
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    (at.with_timezone(&Utc) - now).to_std().ok()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
