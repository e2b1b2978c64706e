//! The HTTP side of a run: one reqwest client with the connector's timeouts, the template
//! context, rendering a plan `Request` into a real request, authentication, and a simple
//! bounded retry.
//!
//! Owns every secret value of a run: credentials are resolved here (never stored in the
//! plan), tokens are obtained here, and each is registered in the run's [`SecretSet`] so
//! that nothing leaving the engine carries one. Never knows about pages or records. The
//! only store call is for tokens the service rotates (`Store::save_token`, encrypted by
//! the store), because losing a rotated OAuth refresh token loses the importer's access.
//!
//! Retry here is deliberately simple (a few attempts on transport errors, 429 and 5xx,
//! honouring a short `Retry-After`); engine part 2 owns rate limits and backoff policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::engine::redact::{MASK, SecretSet};
use crate::plan::{ApiKeyLocation, Auth, Body, ClientAuth, HttpMethod, Importer, Request};
use crate::secret;
use crate::store::{Store, StoreError};
use crate::template::{Escape, Template, context_time};

/// Attempts per request (the first included) before an error is final.
const ATTEMPTS: u32 = 3;
/// Longest `Retry-After` honoured here; longer waits are part 2's business.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How much of a response body an error quotes.
const BODY_QUOTE: usize = 200;

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
    /// Keeping a rotated token failed.
    #[error("keeping a token in the store: {0}")]
    Store(#[from] StoreError),
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
    pub fn new(importer: Arc<Importer>, store: Arc<dyn Store>) -> Result<Self, ClientError> {
        let connector = &importer.connector;
        let http = reqwest::Client::builder()
            .connect_timeout(connector.connect_timeout)
            .timeout(connector.request_timeout)
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport {
                method: "-".into(),
                url: "-".into(),
                message: e.to_string(),
            })?;
        let mut secrets = SecretSet::default();
        let mut credentials = Map::new();
        for (name, reference) in &importer.credentials {
            let value = secret::resolve(reference).map_err(|e| ClientError::Credential {
                name: name.clone(),
                message: e.to_string(),
            })?;
            // Literal values too: "not secret" is the writer's claim, masking costs nothing.
            secrets.insert(&format!("credentials.{name}"), value.expose());
            credentials.insert(name.clone(), Value::String(value.expose().to_string()));
        }
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
        build: &dyn Fn(&Client) -> Result<Prepared, ClientError>,
    ) -> Result<(Prepared, Response), ClientError> {
        let mut reauthenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.ensure_auth().await?;
            let mut prepared = build(self)?;
            self.apply_auth(&mut prepared)?;
            let result = self.execute(&prepared).await;
            let retry_after = match result {
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
                    attempt -= 1;
                    Some(Duration::ZERO)
                }
                Ok(response) if retryable(response.status) && attempt < ATTEMPTS => {
                    Some(retry_after(&response.headers).unwrap_or_else(|| backoff(attempt)))
                }
                Ok(response) => {
                    return Err(ClientError::Status {
                        method: method_name(prepared.method).into(),
                        url: self.secrets.redact(prepared.url.as_str()),
                        status: response.status,
                        body: body_start(&response.body, &self.secrets),
                    });
                }
                Err(message) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, error = %message, "Request failed; retrying.");
                    Some(backoff(attempt))
                }
                Err(message) => {
                    return Err(ClientError::Transport {
                        method: method_name(prepared.method).into(),
                        url: self.secrets.redact(prepared.url.as_str()),
                        message,
                    });
                }
            };
            if let Some(wait) = retry_after {
                tokio::time::sleep(wait.min(MAX_RETRY_AFTER)).await;
            }
        }
    }

    async fn execute(&self, prepared: &Prepared) -> Result<Response, String> {
        let method = match prepared.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
        };
        let mut builder = self.http.request(method, prepared.url.clone());
        let mut headers = HeaderMap::new();
        for (name, value) in &prepared.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("header `{name}` has an invalid value"))?;
            headers.append(name, value);
        }
        if !headers.contains_key(reqwest::header::ACCEPT) {
            headers.insert(
                reqwest::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            );
        }
        builder = builder.headers(headers);
        builder = match &prepared.body {
            None => builder,
            Some(PreparedBody::Json(v)) => builder.json(v),
            Some(PreparedBody::Form(fields)) => builder.form(fields),
            Some(PreparedBody::Text(t)) => builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(t.clone()),
        };
        let response = builder
            .send()
            .await
            .map_err(|e| self.secrets.redact(&error_chain(&e)))?;
        let status = response.status().as_u16();
        let url = prepared.url.to_string();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.secrets.redact(&error_chain(&e)))?;
        Ok(Response {
            status,
            url,
            headers,
            body: Vec::from(body),
        })
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
            Some(Auth::Oauth2 {
                token_url,
                client_id,
                client_secret,
                refresh_token,
                client_auth,
                scopes,
                ..
            }) => {
                self.oauth_refresh(
                    token_url,
                    client_id,
                    client_secret,
                    refresh_token,
                    *client_auth,
                    scopes,
                )
                .await?;
            }
            Some(Auth::Session {
                login, token, ttl, ..
            }) => {
                let (prepared, response) = {
                    let login = login.clone();
                    let prepared = self.prepare(&login, &Map::new())?;
                    let response =
                        self.execute(&prepared)
                            .await
                            .map_err(|m| ClientError::Auth {
                                scheme: "session",
                                message: m,
                            })?;
                    (prepared, response)
                };
                if !(200..300).contains(&response.status) {
                    return Err(ClientError::Auth {
                        scheme: "session",
                        message: format!(
                            "login at {} answered HTTP {}: {}",
                            self.secrets.redact(prepared.url.as_str()),
                            response.status,
                            body_start(&response.body, &self.secrets)
                        ),
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

    fn oauth_store_key(&self) -> String {
        format!("oauth2:{}:refresh_token", self.importer.id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn oauth_refresh(
        &mut self,
        token_url: &Template,
        client_id: &Template,
        client_secret: &Template,
        refresh_token: &Template,
        client_auth: ClientAuth,
        scopes: &[String],
    ) -> Result<(), ClientError> {
        let ctx = self.auth_ctx();
        let url = self.render(token_url, &ctx, Escape::None, "oauth2.token_url")?;
        let id = self.render(client_id, &ctx, Escape::None, "oauth2.client_id")?;
        let secret_value =
            self.render(client_secret, &ctx, Escape::None, "oauth2.client_secret")?;
        let configured = self.render(refresh_token, &ctx, Escape::None, "oauth2.refresh_token")?;
        self.secrets.insert("oauth2.client_secret", &secret_value);
        self.secrets
            .insert("oauth2.configured_refresh_token", &configured);
        // A rotated refresh token is used only while the configured one is unchanged: a
        // person who pastes a new credential after re-consenting must win over the store.
        let origin = blake3::hash(configured.as_bytes()).to_hex().to_string();
        let key = self.oauth_store_key();
        let mut current = configured.clone();
        if let Some(saved) = self.store.load_token(&key).await?
            && let Ok(saved) = serde_json::from_str::<Value>(&saved)
            && saved["from"].as_str() == Some(origin.as_str())
            && let Some(rotated) = saved["refresh_token"].as_str()
        {
            current = rotated.to_string();
        }
        self.secrets.insert("token.refresh_token", &current);

        let mut form = vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("refresh_token".to_string(), current.clone()),
        ];
        if !scopes.is_empty() {
            form.push(("scope".into(), scopes.join(" ")));
        }
        let mut headers = Vec::new();
        match client_auth {
            ClientAuth::Body => {
                form.push(("client_id".into(), id.clone()));
                form.push(("client_secret".into(), secret_value.clone()));
            }
            ClientAuth::Basic => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{id}:{secret_value}"));
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
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            match self.execute(&prepared).await {
                Ok(r) if retryable(r.status) && attempt < ATTEMPTS => {
                    tokio::time::sleep(
                        retry_after(&r.headers)
                            .unwrap_or_else(|| backoff(attempt))
                            .min(MAX_RETRY_AFTER),
                    )
                    .await;
                }
                Ok(r) => break r,
                Err(_) if attempt < ATTEMPTS => tokio::time::sleep(backoff(attempt)).await,
                Err(message) => {
                    return Err(ClientError::Auth {
                        scheme: "oauth2",
                        message,
                    });
                }
            }
        };
        if !(200..300).contains(&response.status) {
            return Err(ClientError::Auth {
                scheme: "oauth2",
                message: format!(
                    "token endpoint {} answered HTTP {}: {}",
                    self.secrets.redact(&url),
                    response.status,
                    body_start(&response.body, &self.secrets)
                ),
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
        let access = token
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ClientError::Auth {
                scheme: "oauth2",
                message: "token response has no `access_token`".into(),
            })?
            .to_string();
        self.secrets.insert("token.access_token", &access);
        for (name, value) in &token {
            if let Value::String(s) = value
                && (name.contains("token") || name.contains("secret"))
            {
                self.secrets.insert(&format!("token.{name}"), s);
            }
        }
        if let Some(rotated) = token.get("refresh_token").and_then(Value::as_str)
            && !rotated.is_empty()
            && rotated != current
        {
            let saved = json!({"from": origin, "refresh_token": rotated}).to_string();
            self.store.save_token(&key, &saved).await?;
            tracing::info!(importer = %self.importer.id, "Kept the refresh token the service rotated.");
        }
        let lifetime = token
            .get("expires_in")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .map(|s| Duration::from_secs(s.saturating_sub(30).max(1)));
        self.auth_expires = lifetime.map(|l| Instant::now() + l);
        self.base.insert("token".into(), Value::Object(token));
        Ok(())
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

fn method_name(method: HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
    }
}

fn retryable(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * 2u64.pow(attempt.saturating_sub(1).min(6)))
}

/// `Retry-After` in seconds (fractional allowed, as Shopify sends) or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
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
