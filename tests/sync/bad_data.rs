//! Bad data never stops a run; a bad page does, after retries, with an error a person
//! can act on (importer, JSONPath, start of the body, no secret).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Query;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tributary::store::RunOutcome;

use super::fakes::{self, TOKEN};
use crate::common::fake::{FakeService, db, people};
use crate::common::sync_env::{SyncEnv, emails, field};

const ITEMS_CONNECTOR: &str = r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
auth:
  key: {type: api_key, in: query, name: api_token, value: "{{credentials.api_token}}"}
contacts:
  request:
    path: /items
    query: {page: "{{page}}"}
  pagination: {type: page_number, stop: [empty_page]}
  records: $.data[*]
  fields:
    email: $.email
    first_name: $.first
  custom_fields:
    - {label: Score, path: $.score, type: number}
    - {label: Since, path: $.since, type: date}
sync:
  mode: full_refresh
"#;

fn items_importer(env: &SyncEnv, base: &str) -> String {
    format!(
        "connector: items\ncredentials:\n  api_token: {}\nsettings:\n  base: \"{base}\"\nlist: People\n",
        env.secret("items", TOKEN)
    )
}

/// A service answering page 1 with `first` (a body and content type), later pages empty.
fn one_page_service(first: &'static str, content_type: &'static str) -> Router {
    Router::new().route(
        "/items",
        get(move |Query(q): Query<HashMap<String, String>>| async move {
            if q.get("page").map(String::as_str) == Some("1") {
                ([("content-type", content_type)], first).into_response()
            } else {
                axum::Json(json!({"data": []})).into_response()
            }
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_is_not_json_is_retried_then_fails_the_run() {
    let body = "<html><body>Maintenance: back soon</body></html>";
    let fake = FakeService::start(one_page_service(body, "text/html")).await;
    let env = SyncEnv::new();
    env.connector("items", ITEMS_CONNECTOR);
    env.importer("it", &items_importer(&env, &fake.base));
    let error = env.run("it").await.unwrap_err().to_string();
    assert_eq!(fake.count(), 3, "fetched again before failing");
    assert!(error.contains("importer `it`"), "{error}");
    assert!(error.contains("not JSON"), "{error}");
    assert!(error.contains("`$.data[*]`"), "{error}");
    assert!(error.contains("<html><body>Maintenance"), "{error}");
    assert!(!error.contains(TOKEN), "{error}");
    let store = env.store().await;
    let runs = store.runs("it", 5).await.unwrap();
    assert_eq!(runs[0].outcome, Some(RunOutcome::Failed));
    assert!(!runs[0].error.as_deref().unwrap().contains(TOKEN));
    assert!(env.all_contacts().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_path_that_matches_nothing_fails_the_run() {
    let body = r#"{"error": {"code": "INVALID_REQUEST", "message": "unknown field"}}"#;
    let fake = FakeService::start(one_page_service(body, "application/json")).await;
    let env = SyncEnv::new();
    env.connector("items", ITEMS_CONNECTOR);
    env.importer("it", &items_importer(&env, &fake.base));
    let error = env.run("it").await.unwrap_err().to_string();
    assert_eq!(fake.count(), 3);
    assert!(error.contains("importer `it`"), "{error}");
    assert!(error.contains("records path matches nothing"), "{error}");
    assert!(error.contains("`$.data[*]`"), "{error}");
    assert!(error.contains("INVALID_REQUEST"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_page_once_is_fetched_again_and_the_run_goes_on() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/items",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let counter = counter.clone();
            async move {
                if q.get("page").map(String::as_str) != Some("1") {
                    return axum::Json(json!({"data": []})).into_response();
                }
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    return ([("content-type", "text/html")], "<html>busy</html>").into_response();
                }
                axum::Json(json!({"data": [{"email": "a@example.com", "first": "A"}]}))
                    .into_response()
            }
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector("items", ITEMS_CONNECTOR);
    env.importer("it", &items_importer(&env, &fake.base));
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(fake.count(), 3, "page 1 twice, then the empty page 2");
    assert_eq!(emails(&env.contacts("People").await), vec!["a@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_invalid_and_duplicate_emails() {
    let mut people = people(6);
    people[1].email = None;
    people[2].email = Some("not-an-email".into());
    people[3].email = Some("  PERSON1@Example.COM ".into());
    let fake = FakeService::start(fakes::pipedrive(db(people))).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    env.importer(
        "pd",
        &format!(
            "connector: pipedrive\ncredentials:\n  api_token: {}\nsettings:\n  base: \"{}\"\nlist: People\n",
            env.secret("pd", TOKEN),
            fake.base
        ),
    );
    let summary = env.run("pd").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(summary.counts.fetched, 6);
    assert_eq!(summary.counts.skipped, 2, "no email, invalid email");
    let stored = env.contacts("People").await;
    assert_eq!(
        emails(&stored),
        vec![
            "person1@example.com",
            "person5@example.com",
            "person6@example.com"
        ]
    );
    // The same person twice in one page (case and spaces differ): the later record wins.
    assert_eq!(stored[0].first_name.as_deref(), Some("First4"));
    assert_eq!(field(&stored[0], "%PIPEDRIVE_TIER%"), Some("gold"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_value_that_does_not_parse_is_counted_and_the_rest_kept() {
    let router = Router::new().route(
        "/items",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            if q.get("page").map(String::as_str) != Some("1") {
                return axum::Json(json!({"data": []}));
            }
            axum::Json(json!({"data": [
                {"email": "a@example.com", "first": "Ada", "score": "12.5", "since": "2024-01-10T12:00:00Z"},
                {"email": "b@example.com", "first": "Bob", "score": "lots", "since": "yesterday"},
            ]}))
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector("items", ITEMS_CONNECTOR);
    env.importer("it", &items_importer(&env, &fake.base));
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.counts.field_failures, 2);
    assert_eq!(summary.counts.skipped, 0);
    let stored = env.contacts("People").await;
    assert_eq!(emails(&stored), vec!["a@example.com", "b@example.com"]);
    assert_eq!(field(&stored[0], "%ITEMS_SCORE%"), Some("12.5"));
    assert!(
        field(&stored[0], "%ITEMS_SINCE%")
            .unwrap()
            .starts_with("2024-01-10T12:00:00")
    );
    assert_eq!(
        stored[1].first_name.as_deref(),
        Some("Bob"),
        "other fields kept"
    );
    assert_eq!(field(&stored[1], "%ITEMS_SCORE%"), None);
    assert_eq!(field(&stored[1], "%ITEMS_SINCE%"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_429_are_retried_until_the_budget_is_spent() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/items",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                match (q.get("page").map(String::as_str), n) {
                    (Some("1"), 0) => {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy").into_response()
                    }
                    (Some("1"), 1) => (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "0")],
                        "slow down",
                    )
                        .into_response(),
                    (Some("1"), _) => {
                        axum::Json(json!({"data": [{"email": "a@example.com"}]})).into_response()
                    }
                    (Some("2"), _) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!("stack trace mentioning {TOKEN}"),
                    )
                        .into_response(),
                    _ => axum::Json(json!({"data": []})).into_response(),
                }
            }
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    std::fs::write(
        &env.config,
        format!(
            "store: \"{}\"\nlimits: {{retry_budget: PT1S}}\n",
            env.store_url
        ),
    )
    .unwrap();
    env.connector("items", ITEMS_CONNECTOR);
    env.importer("it", &items_importer(&env, &fake.base));
    let started = std::time::Instant::now();
    let error = env.run("it").await.unwrap_err().to_string();
    // Page 1: 503, 429, then data. Page 2: 500s until the second of budget is spent.
    let calls = calls.load(Ordering::SeqCst);
    assert!(calls >= 3 + 3, "{calls} calls");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(error.contains("answered HTTP 500"), "{error}");
    assert!(
        error.contains("limits.retry_budget is 1 s"),
        "names the budget: {error}"
    );
    assert!(!error.contains(TOKEN), "{error}");
    assert!(error.contains("api_token=****"), "{error}");
    assert_eq!(
        emails(&env.contacts("People").await),
        vec!["a@example.com"],
        "page 1 committed"
    );
}
