//! A connector's `error_rules` (issue 16): throttles that are not a 429 (Salesforce's 403
//! `REQUEST_LIMIT_EXCEEDED`, a GraphQL `THROTTLED` error inside a 200) recognised and
//! waited out, and a saved cursor the service no longer accepts recovered by restarting
//! the pass (a full pass from the start, an incremental one from the watermark).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use tributary::engine::{FailureKind, PassKind, RunError};
use tributary::store::RunOutcome;

use crate::common::fake::{Db, FakeService, db, people};
use crate::common::sync_env::{SyncEnv, emails};

fn connector(rules: &str) -> String {
    format!(
        r#"
spec_version: 1
base_url: "{{{{settings.base}}}}"
settings:
  base: {{}}
error_rules: {rules}
contacts:
  request:
    path: /items
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

/// Two pages of two people; the first `faults` answers to `page` are `fault()`.
async fn service(
    page: usize,
    faults: usize,
    fault: fn() -> Response,
) -> (FakeService, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/items",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let counter = counter.clone();
            async move {
                let p: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                if p == page && counter.fetch_add(1, Ordering::SeqCst) < faults {
                    return fault();
                }
                let data: Vec<_> = if p <= 2 {
                    (0..2)
                        .map(|i| json!({"email": format!("p{p}-{i}@example.com")}))
                        .collect()
                } else {
                    Vec::new()
                };
                axum::Json(json!({ "data": data })).into_response()
            }
        }),
    );
    (FakeService::start(router).await, calls)
}

fn items_env(base: &str, connector: &str) -> SyncEnv {
    let env = SyncEnv::new();
    env.connector("items", connector);
    env.importer(
        "it",
        &format!("connector: items\nsettings:\n  base: \"{base}\"\nlist: People\npage_budget: 0\n"),
    );
    env
}

const EVERYONE: [&str; 4] = [
    "p1-0@example.com",
    "p1-1@example.com",
    "p2-0@example.com",
    "p2-1@example.com",
];

fn salesforce_limit() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])),
    )
        .into_response()
}

/// Salesforce answers a spent request limit with a 403: a rule makes it a throttle (waited
/// out, then the run completes); without the rule a 403 fails the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_request_limit_exceeded_is_a_throttle_by_rule() {
    let rule = r#"[{status: 403, path: "$[*].errorCode", equals: REQUEST_LIMIT_EXCEEDED, action: rate_limited, message: "Salesforce API request limit"}, {status: 403, action: fail_config}]"#;
    let (fake, calls) = service(2, 2, salesforce_limit).await;
    let env = items_env(&fake.base, &connector(rule));
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(emails(&env.contacts("People").await), EVERYONE);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "two throttles, then the page"
    );

    // The same service without the rule: a 403 is an answer, not a throttle.
    let (fake, calls) = service(2, 2, salesforce_limit).await;
    let env = items_env(&fake.base, &connector("[]"));
    let error = env.run("it").await.unwrap_err();
    let RunError::Failed { kind, message, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(*kind, FailureKind::Service);
    assert!(message.contains("answered HTTP 403"), "{message}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
}

/// A rule's failure action decides the failure kind, and its message is shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_config_rule_fails_the_run_as_config_with_its_message() {
    let rule = r#"[{status: 403, contains: INSUFFICIENT_ACCESS, action: fail_config, message: "the integration user may not read contacts"}]"#;
    fn refused() -> Response {
        (
            StatusCode::FORBIDDEN,
            axum::Json(json!([{"errorCode": "INSUFFICIENT_ACCESS"}])),
        )
            .into_response()
    }
    let (fake, _) = service(1, 100, refused).await;
    let env = items_env(&fake.base, &connector(rule));
    let error = env.run("it").await.unwrap_err();
    let RunError::Failed { kind, message, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(*kind, FailureKind::Config);
    assert!(
        message.contains("the integration user may not read contacts (error rule `fail_config`)"),
        "{message}"
    );
}

/// GraphQL services (Shopify's Admin API) answer a throttle with a 200 whose body holds
/// the error: a rule naming the 200 recognises it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_with_a_graphql_throttled_error_is_a_throttle_by_rule() {
    fn throttled() -> Response {
        axum::Json(json!({
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {"cost": {"throttleStatus": {"currentlyAvailable": 0}}}
        }))
        .into_response()
    }
    let rule = r#"[{status: 200, path: "$.errors[*].extensions.code", equals: THROTTLED, action: rate_limited}]"#;
    let (fake, calls) = service(1, 3, throttled).await;
    let env = items_env(&fake.base, &connector(rule));
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(emails(&env.contacts("People").await), EVERYONE);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// The cursor service: `limit` people updated after `updated_since`, cursors `g<N>-<offset>`
/// valid only in the generation they were issued in; an older one is refused the way
/// Zoho refuses an expired page token.
#[derive(Clone)]
struct Cursors {
    db: Db,
    generation: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

async fn cursor_service(state: Cursors) -> FakeService {
    let router = Router::new().route(
        "/people",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let state = state.clone();
            async move {
                state.log.lock().unwrap().push(q.clone());
                let generation = state.generation.load(Ordering::SeqCst);
                let start = match q.get("cursor") {
                    None => 0,
                    Some(cursor) => {
                        let (g, offset) = cursor.trim_start_matches('g').split_once('-').unwrap();
                        if g.parse::<usize>().unwrap() != generation {
                            return (
                                StatusCode::BAD_REQUEST,
                                axum::Json(json!({"code": "INVALID_TOKEN", "message": "page token expired"})),
                            )
                                .into_response();
                        }
                        offset.parse().unwrap()
                    }
                };
                let since = q
                    .get("updated_since")
                    .map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
                let matching: Vec<_> = state
                    .db
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|p| since.is_none_or(|s| p.updated > s))
                    .cloned()
                    .collect();
                let data: Vec<_> = matching
                    .iter()
                    .skip(start)
                    .take(2)
                    .map(|p| json!({"email": p.email, "updated": p.updated.to_rfc3339()}))
                    .collect();
                let next = (start + 2 < matching.len()).then(|| format!("g{generation}-{}", start + 2));
                axum::Json(json!({"data": data, "next": next})).into_response()
            }
        }),
    );
    FakeService::start(router).await
}

const CURSOR_CONNECTOR: &str = r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
error_rules:
  - {status: 400, path: $.code, equals: INVALID_TOKEN, action: restart_pass, message: "the page token expired"}
contacts:
  request:
    path: /people
    query: {cursor: "{{cursor}}", updated_since: "{{since}}"}
  pagination: {type: cursor, cursor: $.next, stop: [missing_token]}
  records: $.data[*]
  fields:
    email: $.email
    updated_at: {path: $.updated, format: rfc3339}
sync:
  mode: incremental
"#;

/// A run resuming a saved cursor the service no longer accepts restarts its pass: the
/// first (full) pass from the beginning, an incremental pass from the watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cursor_on_resume_restarts_the_pass() {
    let state = Cursors {
        db: db(people(6)),
        generation: Arc::default(),
        log: Arc::default(),
    };
    let fake = cursor_service(state.clone()).await;
    let env = SyncEnv::new();
    env.connector("crm", CURSOR_CONNECTOR);
    env.importer(
        "crm",
        &format!(
            "connector: crm\nsettings:\n  base: \"{}\"\nlist: People\npage_budget: 2\n",
            fake.base
        ),
    );
    let queries = |state: &Cursors| std::mem::take(&mut *state.log.lock().unwrap());

    // The first pass stops after its budget of two pages, its cursor saved.
    let first = env.run("crm").await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Partial);
    queries(&state);
    // The service forgets its cursors; the next run resumes from the saved one, is
    // refused, and reads the pass again from its first page.
    state.generation.fetch_add(1, Ordering::SeqCst);
    let second = env.run("crm").await.unwrap();
    assert!(second.resumed);
    assert_eq!(second.pass, PassKind::First);
    let sent = queries(&state);
    assert_eq!(sent[0].get("cursor").map(String::as_str), Some("g0-4"));
    assert_eq!(sent[1].get("cursor"), None, "restarted from the first page");
    assert_eq!(
        sent[1].get("updated_since"),
        None,
        "a first pass reads everyone"
    );
    let third = env.run("crm").await.unwrap();
    assert_eq!(third.outcome, RunOutcome::Completed);
    assert_eq!(env.contacts("People").await.len(), 6);

    // Everyone changes; an incremental pass reads two pages, then its cursor expires.
    let watermark = {
        let mut db = state.db.lock().unwrap();
        let watermark = db.iter().map(|p| p.updated).max().unwrap();
        for (i, person) in db.iter_mut().enumerate() {
            person.updated = watermark + Duration::seconds(10 + i as i64);
            person.first = format!("Changed{i}");
        }
        watermark
    };
    queries(&state);
    let partial = env.run("crm").await.unwrap();
    assert_eq!(partial.pass, PassKind::Incremental);
    assert_eq!(partial.outcome, RunOutcome::Partial);
    state.generation.fetch_add(1, Ordering::SeqCst);
    queries(&state);
    let resumed = env.run("crm").await.unwrap();
    assert!(resumed.resumed);
    assert_eq!(resumed.pass, PassKind::Incremental);
    let sent = queries(&state);
    assert_eq!(sent[0].get("cursor").map(String::as_str), Some("g1-4"));
    assert_eq!(sent[1].get("cursor"), None, "the query starts again");
    let since = DateTime::parse_from_rfc3339(sent[1].get("updated_since").expect("since"))
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(
        since, watermark,
        "an incremental pass re-queries from the watermark"
    );
    let last = env.run("crm").await.unwrap();
    assert_eq!(last.outcome, RunOutcome::Completed);
    assert_eq!(env.contacts("People").await.len(), 6);
}

/// A service that refuses the position again after the restart fails the run instead
/// of restarting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_restarts_once_per_run() {
    fn expired() -> Response {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": "INVALID_TOKEN"})),
        )
            .into_response()
    }
    let rule = "[{status: 400, path: $.code, equals: INVALID_TOKEN, action: restart_pass}]";
    let (fake, calls) = service(1, 100, expired).await;
    let env = items_env(&fake.base, &connector(rule));
    let error = env.run("it").await.unwrap_err().to_string();
    assert!(error.contains("restart_pass"), "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A page the service cannot serve (a record it fails to render) is skipped by a
/// `skip_page` rule: the pass goes on with the next page and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_page_rule_goes_on_with_the_next_page() {
    fn broken() -> Response {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": "record 7 cannot be rendered"})),
        )
            .into_response()
    }
    let rule = r#"[{status: 422, contains: "cannot be rendered", action: skip_page, message: "a page the service cannot render"}]"#;
    let (fake, calls) = service(2, 100, broken).await;
    let env = items_env(&fake.base, &connector(rule));
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(
        emails(&env.contacts("People").await),
        ["p1-0@example.com", "p1-1@example.com"],
        "page 2 skipped, the rest read"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the page is skipped, not retried"
    );
    let pages: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.q("page").unwrap_or("").to_string())
        .collect();
    assert_eq!(pages, ["1", "2", "3"]);
}
