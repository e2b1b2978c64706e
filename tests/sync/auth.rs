//! Authentication that needs state: OAuth2 with a refresh token the service rotates (kept
//! in the store, even by a dry run), and a session from a login request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::DateTime;
use serde_json::json;
use tributary::engine::RunOptions;
use tributary::store::RunOutcome;

use crate::common::fake::{Db, FakeService, db, people};
use crate::common::sync_env::{SyncEnv, emails};

/// Zoho-like state: the one valid refresh token, the access token issued with it, and
/// the refresh tokens the token endpoint received.
#[derive(Default)]
struct Oauth {
    refresh: String,
    access: String,
    api_domain: String,
    issued: u32,
    received: Vec<String>,
}

type Shared = (Db, Arc<Mutex<Oauth>>);

async fn token(
    State((_, oauth)): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut o = oauth.lock().unwrap();
    let given = form.get("refresh_token").cloned().unwrap_or_default();
    o.received.push(given.clone());
    let client_ok = form.get("client_id").map(String::as_str) == Some("cid")
        && form.get("client_secret").map(String::as_str) == Some("csecret-123");
    if form.get("grant_type").map(String::as_str) != Some("refresh_token")
        || !client_ok
        || given != o.refresh
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    o.issued += 1;
    o.access = format!("at-{}", o.issued);
    o.refresh = format!("rt-{}", o.issued);
    axum::Json(json!({"access_token": o.access, "refresh_token": o.refresh,
                      "api_domain": o.api_domain, "token_type": "Bearer", "expires_in": 3600}))
    .into_response()
}

async fn contacts(
    State((db, oauth)): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let expected = format!("Bearer {}", oauth.lock().unwrap().access);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let since = headers
        .get("if-modified-since")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok());
    let people = db.lock().unwrap().clone();
    let changed: Vec<_> = people
        .iter()
        .filter(|p| since.is_none_or(|s| p.updated > s))
        .collect();
    if changed.is_empty() {
        // Zoho: nothing modified since the header's time.
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(200);
    let data: Vec<_> = changed
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|p| json!({"id": p.id.to_string(), "Email": p.email, "First_Name": p.first, "Last_Name": p.last,
                        "Modified_Time": p.updated.to_rfc3339()}))
        .collect();
    let more = page * per_page < changed.len();
    axum::Json(
        json!({"data": data, "info": {"page": page, "per_page": per_page, "more_records": more}}),
    )
    .into_response()
}

const ZOHO: &str = r#"
spec_version: 1
base_url: "{{token.api_domain}}/crm/v7"
settings:
  base: {}
auth:
  oauth:
    type: oauth2
    token_url: "{{settings.base}}/oauth/v2/token"
    client_id: "{{credentials.client_id}}"
    client_secret: "{{credentials.client_secret}}"
    refresh_token: "{{credentials.refresh_token}}"
    rotates_refresh_token: true
contacts:
  request:
    path: /Contacts
    query: {page: "{{page}}", per_page: "{{page_size}}", sort_by: Modified_Time, sort_order: asc}
    headers: {If-Modified-Since: "{{since}}"}
  pagination:
    type: page_number
    has_more: $.info.more_records
    stop: [has_more_false]
  records: $.data[*]
  page_size: {max: 200}
  fields:
    email: $.Email
    first_name: $.First_Name
    last_name: $.Last_Name
    external_id: $.id
    updated_at: {path: $.Modified_Time}
sync:
  mode: incremental
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_rotated_refresh_tokens_are_kept_and_304_ends_a_pass() {
    let oauth = Arc::new(Mutex::new(Oauth {
        refresh: "rt-0-configured".into(),
        ..Oauth::default()
    }));
    let shared: Shared = (db(people(3)), oauth.clone());
    // The API host comes from the token response (`token.api_domain`), as Zoho's does.
    let fake = FakeService::start_with(|base| {
        oauth.lock().unwrap().api_domain = base;
        Router::new()
            .route("/oauth/v2/token", post(token))
            .route("/crm/v7/Contacts", get(contacts))
            .with_state(shared)
    })
    .await;
    let env = SyncEnv::new();
    env.connector("zoho", ZOHO);
    env.importer(
        "zo",
        &format!(
            "connector: zoho\ncredentials:\n  client_id: {{literal: cid}}\n  client_secret: {}\n  refresh_token: {}\nsettings:\n  base: \"{}\"\nlist: People\npage_size: 2\n",
            env.secret("cs", "csecret-123"),
            env.secret("rt", "rt-0-configured"),
            fake.base
        ),
    );

    // A dry run writes nothing, but keeps the refresh token the service rotated: the
    // configured one is no longer valid.
    let dry = env
        .run_with(
            "zo",
            RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(dry.dry_run.unwrap().contacts.len(), 2);
    assert!(env.all_contacts().await.is_empty());
    assert_eq!(oauth.lock().unwrap().received, vec!["rt-0-configured"]);

    let first = env.run("zo").await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Completed);
    assert_eq!(
        emails(&env.contacts("People").await),
        vec![
            "person1@example.com",
            "person2@example.com",
            "person3@example.com"
        ]
    );

    // Nothing changed: the service answers 304 with no body, which ends the pass.
    let second = env.run("zo").await.unwrap();
    assert_eq!(second.outcome, RunOutcome::Completed);
    assert_eq!((second.counts.pages, second.counts.fetched), (1, 0));
    let requests = fake.requests();
    let last = requests.last().unwrap();
    assert_eq!(
        last.header("if-modified-since"),
        Some("2024-05-01T10:00:03Z")
    );
    assert_eq!(
        oauth.lock().unwrap().received,
        vec!["rt-0-configured"],
        "the access token (an hour long) is kept for the account and used by every run"
    );
    // No secret in the run history or the saved state.
    let store = env.store().await;
    let state = store.importer_state("zo").await.unwrap();
    let text = format!("{:?}", state.checkpoint);
    assert!(!text.contains("at-") && !text.contains("rt-"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_a_login_request() {
    let logins = Arc::new(Mutex::new(0u32));
    let counter = logins.clone();
    let router = Router::new()
        .route(
            "/login",
            post(move |Form(form): Form<HashMap<String, String>>| {
                let counter = counter.clone();
                async move {
                    if form.get("login_email").map(String::as_str) != Some("ada@example.com")
                        || form.get("login_password").map(String::as_str) != Some("pw-secret-9")
                    {
                        return StatusCode::FORBIDDEN.into_response();
                    }
                    *counter.lock().unwrap() += 1;
                    axum::Json(json!({"session": {"id": "sess-42"}})).into_response()
                }
            }),
        )
        .route(
            "/people",
            get(|headers: HeaderMap| async move {
                if headers.get("x-session").and_then(|v| v.to_str().ok()) != Some("sess-42") {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                axum::Json(json!([{"email": "a@example.com"}, {"email": "b@example.com"}]))
                    .into_response()
            }),
        );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector(
        "heapcrm",
        r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
auth:
  login:
    type: session
    login:
      method: POST
      path: /login
      body:
        form: {login_email: "{{credentials.email}}", login_password: "{{credentials.password}}"}
    token: $.session.id
    headers: {X-Session: "{{token.session}}"}
contacts:
  request: {path: /people}
  pagination: {type: none}
  records: $[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
"#,
    );
    env.importer(
        "hc",
        &format!(
            "connector: heapcrm\ncredentials:\n  email: {{literal: ada@example.com}}\n  password: {}\nsettings:\n  base: \"{}\"\nlist: People\n",
            env.secret("pw", "pw-secret-9"),
            fake.base
        ),
    );
    let summary = env.run("hc").await.unwrap();
    assert_eq!(summary.counts.created, 2);
    assert_eq!(*logins.lock().unwrap(), 1);
    assert_eq!(
        emails(&env.contacts("People").await),
        vec!["a@example.com", "b@example.com"]
    );
}

/// A token endpoint that answers 200 with a body that is not JSON (a form-encoded token,
/// as some providers send): the run fails naming what came back, but never quotes the
/// body, which holds a token no secret set knows yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_response_that_is_not_json_is_not_quoted() {
    let router = Router::new()
        .route(
            "/oauth/v2/token",
            post(|| async {
                (
                    [("content-type", "application/x-www-form-urlencoded")],
                    "access_token=at-LEAKED-777&refresh_token=rt-LEAKED-888&token_type=bearer",
                )
            }),
        )
        .route(
            "/crm/v7/Contacts",
            get(|| async { StatusCode::UNAUTHORIZED }),
        );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector("zoho", ZOHO);
    env.importer(
        "zo",
        &format!(
            "connector: zoho\ncredentials:\n  client_id: {{literal: cid}}\n  client_secret: {}\n  refresh_token: {}\nsettings:\n  base: \"{}\"\nlist: People\n",
            env.secret("cs", "csecret-123"),
            env.secret("rt", "rt-0-configured"),
            fake.base
        ),
    );
    let error = env.run("zo").await.unwrap_err().to_string();
    assert!(error.contains("importer `zo`"), "{error}");
    assert!(error.contains("not a JSON object"), "{error}");
    assert!(
        error.contains("application/x-www-form-urlencoded"),
        "{error}"
    );
    assert!(!error.contains("LEAKED"), "{error}");
    let runs = env.store().await.runs("zo", 5).await.unwrap();
    assert_eq!(runs[0].outcome, Some(RunOutcome::Failed));
    assert!(!runs[0].error.as_deref().unwrap().contains("LEAKED"));
}
