//! Redirects never carry credentials to another origin (issue 10).
//!
//! Two fakes on different 127.0.0.1 ports: `home` is the connector's service, `elsewhere`
//! is whoever a redirect names. For each redirect status and each place a secret can
//! travel (custom header, query key, bearer, basic, session token, OAuth token request),
//! `home` redirects to `elsewhere`: the run must fail naming the importer and both
//! origins, `elsewhere` must receive nothing (so no secret and no `Referer`), and pages
//! committed before the redirect stay committed. A redirect within `home` is followed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tributary::engine::RunError;
use tributary::store::RunOutcome;

use crate::common::fake::FakeService;
use crate::common::sync_env::{SyncEnv, emails};

const STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// The secret every placement carries, recognizable in any request `elsewhere` sees.
const SECRET: &str = "s3cret-REDIRECT-7731";

/// Where the credentials travel.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Placement {
    Header,
    Query,
    Bearer,
    Basic,
    Session,
    SessionLogin,
    OauthTokenRequest,
}

const PLACEMENTS: [Placement; 7] = [
    Placement::Header,
    Placement::Query,
    Placement::Bearer,
    Placement::Basic,
    Placement::Session,
    Placement::SessionLogin,
    Placement::OauthTokenRequest,
];

impl Placement {
    fn auth(self) -> &'static str {
        match self {
            Placement::Header => {
                r#"{key: {type: api_key, in: header, name: x-api-token, value: "{{credentials.secret}}"}}"#
            }
            Placement::Query => {
                r#"{key: {type: api_key, in: query, name: api_token, value: "{{credentials.secret}}"}}"#
            }
            Placement::Bearer => r#"{key: {type: bearer, token: "{{credentials.secret}}"}}"#,
            Placement::Basic => {
                r#"{key: {type: basic, username: tributary, password: "{{credentials.secret}}"}}"#
            }
            Placement::Session => {
                r#"
  login:
    type: session
    login:
      method: POST
      path: /login
      body:
        form: {password: "{{credentials.secret}}"}
    token: $.session
    headers: {X-Session: "{{token.session}}"}"#
            }
            Placement::SessionLogin => {
                r#"
  login:
    type: session
    login:
      method: POST
      path: /redirecting-login
      body:
        form: {password: "{{credentials.secret}}"}
    token: $.session
    headers: {X-Session: "{{token.session}}"}"#
            }
            Placement::OauthTokenRequest => {
                r#"
  oauth:
    type: oauth2
    token_url: "{{settings.base}}/oauth/token"
    client_id: cid
    client_secret: "{{credentials.secret}}"
    refresh_token: "{{credentials.secret}}""#
            }
        }
    }

    /// The session token and the OAuth access token are secrets too: `home` issues
    /// them, and they must not reach `elsewhere` either.
    fn secrets(self) -> Vec<&'static str> {
        match self {
            Placement::Session => vec![SECRET, "sess-SECRET-55"],
            Placement::OauthTokenRequest => vec![SECRET, "at-SECRET-66"],
            _ => vec![SECRET],
        }
    }
}

fn connector(placement: Placement, path: &str) -> String {
    paged_connector(placement.auth(), path)
}

/// A full-refresh connector paged by page number over `path`, with `auth` (a flow mapping
/// or an indented block) as its auth section: the secrets test reuses it.
pub(crate) fn paged_connector(auth: &str, path: &str) -> String {
    let auth = if auth.starts_with('\n') {
        auth.to_string()
    } else {
        format!(" {auth}")
    };
    format!(
        r#"
spec_version: 1
base_url: "{{{{settings.base}}}}"
settings:
  base: {{}}
auth:{auth}
contacts:
  request:
    path: {path}
    query: {{page: "{{{{page}}}}"}}
  pagination: {{type: page_number, stop: [empty_page]}}
  records: $.data[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
"#
    )
}

/// What `home` does: which status it redirects with, where to, and from which page on.
#[derive(Clone)]
struct Home {
    status: u16,
    /// Base URL the redirect points at (`elsewhere`, or `home` itself).
    target: Arc<Mutex<String>>,
    /// Pages before this one are served normally.
    redirect_from_page: u32,
}

fn redirect(status: u16, location: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("location", location)],
    )
        .into_response()
}

fn page(n: u32) -> Response {
    if n > 2 {
        return axum::Json(json!({"data": []})).into_response();
    }
    axum::Json(json!({"data": [
        {"email": format!("p{n}a@example.com")},
        {"email": format!("p{n}b@example.com")},
    ]}))
    .into_response()
}

async fn people(State(home): State<Home>, uri: Uri) -> Response {
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let n: u32 = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    if n < home.redirect_from_page {
        return page(n);
    }
    let target = home.target.lock().unwrap().clone();
    // The whole request goes along, query included: a key in the query would travel.
    let location = format!("{target}/moved{}?{}", uri.path(), uri.query().unwrap_or(""));
    redirect(home.status, location)
}

async fn moved(Query(q): Query<HashMap<String, String>>) -> Response {
    page(q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1))
}

async fn login(Form(form): Form<HashMap<String, String>>) -> Response {
    if form.get("password").map(String::as_str) != Some(SECRET) {
        return StatusCode::FORBIDDEN.into_response();
    }
    axum::Json(json!({"session": "sess-SECRET-55"})).into_response()
}

/// The login request itself redirects (a 307 or 308 would resend the password).
async fn redirecting_login(State(home): State<Home>) -> Response {
    let target = home.target.lock().unwrap().clone();
    redirect(home.status, format!("{target}/login"))
}

/// The token endpoint itself redirects (a 307 or 308 would resend the form with the
/// client secret and the refresh token).
async fn token(State(home): State<Home>) -> Response {
    let target = home.target.lock().unwrap().clone();
    redirect(home.status, format!("{target}/oauth/token"))
}

async fn home_fake(home: Home) -> FakeService {
    let router = Router::new()
        .route("/people", get(people))
        .route("/moved/people", get(moved))
        .route("/login", post(login))
        .route("/oauth/token", post(token))
        .route("/redirecting-login", post(redirecting_login))
        .with_state(home);
    FakeService::start(router).await
}

/// Whoever a redirect names: answers anything with a page of someone else's contacts.
async fn elsewhere_fake() -> FakeService {
    let router = Router::new().fallback(|| async {
        axum::Json(json!({"access_token": "at-ELSEWHERE", "session": "s",
                          "data": [{"email": "intruder@example.com"}]}))
    });
    FakeService::start(router).await
}

fn importer(env: &SyncEnv, base: &str) -> String {
    format!(
        "connector: crm\ncredentials:\n  secret: {}\nsettings:\n  base: \"{base}\"\nlist: People\n",
        env.secret("secret", SECRET)
    )
}

fn assert_nothing_reached(elsewhere: &FakeService, secrets: &[&str], case: &str) {
    let requests = elsewhere.requests();
    for request in &requests {
        let text = format!("{request:?}");
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{case}: a secret reached elsewhere: {text}"
            );
        }
        assert!(
            request.header("referer").is_none(),
            "{case}: Referer sent: {text}"
        );
    }
    assert!(
        requests.is_empty(),
        "{case}: the other origin received {} request(s): {requests:?}",
        requests.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_never_carries_credentials() {
    let elsewhere = elsewhere_fake().await;
    for status in STATUSES {
        for placement in PLACEMENTS {
            let case = format!("{status} with {placement:?}");
            let home = Home {
                status,
                target: Arc::new(Mutex::new(elsewhere.base.clone())),
                // The first page is served, the second redirects: what was committed
                // before the redirect stays committed.
                redirect_from_page: 2,
            };
            let fake = home_fake(home).await;
            let env = SyncEnv::new();
            env.connector("crm", &connector(placement, "/people"));
            env.importer("crm-people", &importer(&env, &fake.base));

            let error = env.run("crm-people").await.unwrap_err();
            let RunError::Failed { message, .. } = &error else {
                panic!("{case}: not a failed run: {error}");
            };
            let text = error.to_string();
            assert!(text.contains("importer `crm-people`"), "{case}: {text}");
            assert!(
                text.contains(&fake.base),
                "{case}: names the allowed origin: {text}"
            );
            assert!(
                text.contains(&elsewhere.base),
                "{case}: names the other origin: {text}"
            );
            assert!(
                message.contains(&format!("HTTP {status}")),
                "{case}: {text}"
            );
            for secret in placement.secrets() {
                assert!(
                    !text.contains(secret),
                    "{case}: secret in the error: {text}"
                );
            }
            assert_nothing_reached(&elsewhere, &placement.secrets(), &case);

            let stored = emails(&env.all_contacts().await);
            if matches!(
                placement,
                Placement::OauthTokenRequest | Placement::SessionLogin
            ) {
                // No token, no page: nothing was imported, nothing from elsewhere.
                assert!(stored.is_empty(), "{case}: {stored:?}");
            } else {
                assert_eq!(
                    stored,
                    vec!["p1a@example.com", "p1b@example.com"],
                    "{case}: the page before the redirect stays committed"
                );
            }
            let runs = env.store().await.runs("crm-people", 1).await.unwrap();
            assert_eq!(runs[0].outcome, Some(RunOutcome::Failed), "{case}");
            let recorded = runs[0].error.clone().unwrap_or_default();
            assert!(recorded.contains(&elsewhere.base), "{case}: {recorded}");
            for secret in placement.secrets() {
                assert!(!recorded.contains(secret), "{case}: {recorded}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_within_the_origin_is_followed_with_credentials() {
    for status in STATUSES {
        for placement in [Placement::Header, Placement::Query, Placement::Session] {
            let case = format!("{status} with {placement:?}");
            let target = Arc::new(Mutex::new(String::new()));
            let home = Home {
                status,
                target: target.clone(),
                redirect_from_page: 1,
            };
            // `/moved/people` checks nothing itself; the credentials it got are read from
            // the recorded requests below.
            let fake = home_fake(home).await;
            *target.lock().unwrap() = fake.base.clone();
            let env = SyncEnv::new();
            env.connector("crm", &connector(placement, "/people"));
            env.importer("crm-people", &importer(&env, &fake.base));

            let summary = env.run("crm-people").await.unwrap();
            assert_eq!(summary.outcome, RunOutcome::Completed, "{case}");
            assert_eq!(
                emails(&env.all_contacts().await),
                vec![
                    "p1a@example.com",
                    "p1b@example.com",
                    "p2a@example.com",
                    "p2b@example.com"
                ],
                "{case}"
            );
            let followed: Vec<_> = fake
                .requests()
                .into_iter()
                .filter(|r| r.path == "/moved/people")
                .collect();
            assert_eq!(
                followed.len(),
                3,
                "{case}: every page followed its redirect"
            );
            for request in &followed {
                assert_eq!(request.method, "GET", "{case}");
                assert!(request.header("referer").is_none(), "{case}");
                let carried = match placement {
                    Placement::Header => request.header("x-api-token") == Some(SECRET),
                    Placement::Query => request.q("api_token") == Some(SECRET),
                    _ => request.header("x-session") == Some("sess-SECRET-55"),
                };
                assert!(
                    carried,
                    "{case}: credentials kept within the origin: {request:?}"
                );
            }
        }
    }
}

/// A service that redirects forever within its origin ends the run after a few hops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_fails_after_a_few_hops() {
    let router = Router::new().route("/people", get(|| async { redirect(302, "/people".into()) }));
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector(Placement::Header, "/people"));
    env.importer("crm-people", &importer(&env, &fake.base));
    let error = env.run("crm-people").await.unwrap_err().to_string();
    assert!(error.contains("more than 5 redirects"), "{error}");
    assert_eq!(
        fake.count(),
        6,
        "the first request and five redirects, never retried"
    );
}
