//! Requests that survive real services (issue 16): 429s with `Retry-After` in seconds and
//! as a date, a streak of 429s and 5xx ridden out by backoff, a service down for longer
//! than the retry budget (the run fails, its checkpoint holds, the next run resumes), a
//! hung response ended by the timeout, a connection reset, and a wait longer than
//! `limits.max_wait` stopping the run as a partial success with a not-before time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde_json::json;
use tributary::engine::{FailureKind, RunError};
use tributary::store::RunOutcome;

use crate::common::fake::FakeService;
use crate::common::hostile::{HostileService, Reply};
use crate::common::sync_env::{SyncEnv, emails};

/// Three pages of two people, then an empty page.
const PAGES: usize = 3;

const CONNECTOR: &str = r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
timeouts: {connect: PT2S, request: PT0.5S}
contacts:
  request:
    path: /items
    query: {page: "{{page}}"}
  pagination: {type: page_number, stop: [empty_page]}
  records: $.data[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
"#;

/// The page `page` of the service: two people, none past the last page.
fn page(page: usize) -> serde_json::Value {
    let data: Vec<_> = if (1..=PAGES).contains(&page) {
        (0..2)
            .map(|i| json!({"email": format!("p{page}-{i}@example.com")}))
            .collect()
    } else {
        Vec::new()
    };
    json!({ "data": data })
}

/// Everyone the service holds.
fn everyone() -> Vec<String> {
    let mut all: Vec<String> = (1..=PAGES)
        .flat_map(|p| (0..2).map(move |i| format!("p{p}-{i}@example.com")))
        .collect();
    all.sort();
    all
}

/// A tree whose `tributary.yaml` has `limits` (a flow mapping's inside, may be empty).
fn env_with(base: &str, limits: &str) -> SyncEnv {
    let env = SyncEnv::new();
    std::fs::write(
        &env.config,
        format!("store: \"{}\"\nlimits: {{{limits}}}\n", env.store_url),
    )
    .unwrap();
    env.connector("items", CONNECTOR);
    env.importer(
        "it",
        &format!("connector: items\nsettings:\n  base: \"{base}\"\nlist: People\npage_budget: 0\n"),
    );
    env
}

/// When each request arrived, with its page.
type Arrivals = Arc<Mutex<Vec<(usize, Instant)>>>;

/// A service whose answer to the `n`th request (from 0) for a page is `fault(page, n)`,
/// or the page itself when that is `None`.
async fn faulty(
    fault: impl Fn(usize, usize) -> Option<Response> + Send + Sync + Clone + 'static,
) -> (FakeService, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let seen: Arc<Mutex<HashMap<usize, usize>>> = Arc::default();
    let log = arrivals.clone();
    let router = Router::new().route(
        "/items",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let (fault, log, seen) = (fault.clone(), log.clone(), seen.clone());
            async move {
                let p: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                log.lock().unwrap().push((p, Instant::now()));
                let n = {
                    let mut seen = seen.lock().unwrap();
                    let n = seen.entry(p).or_default();
                    *n += 1;
                    *n - 1
                };
                fault(p, n).unwrap_or_else(|| axum::Json(page(p)).into_response())
            }
        }),
    );
    (FakeService::start(router).await, arrivals)
}

fn status(code: u16, headers: &[(&'static str, String)]) -> Response {
    let mut response = (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({"error": "not now"})),
    )
        .into_response();
    for (name, value) in headers {
        response.headers_mut().insert(*name, value.parse().unwrap());
    }
    response
}

/// The time between the first and the second request for `page`.
fn gap(arrivals: &Arrivals, page: usize) -> Duration {
    let times: Vec<Instant> = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p == page)
        .map(|(_, t)| *t)
        .collect();
    times[1] - times[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_in_seconds_is_waited_out() {
    let (fake, arrivals) =
        faulty(|p, n| (p == 2 && n == 0).then(|| status(429, &[("retry-after", "1".into())])))
            .await;
    let env = env_with(&fake.base, "");
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(emails(&env.contacts("People").await), everyone());
    let waited = gap(&arrivals, 2);
    assert!(waited >= Duration::from_secs(1), "waited {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_as_a_date_is_waited_out() {
    let (fake, arrivals) = faulty(|p, n| {
        (p == 1 && n == 0).then(|| {
            // An HTTP date two seconds on; whole seconds, so the wait is over one.
            let at = Utc::now() + chrono::Duration::seconds(2);
            let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            status(429, &[("retry-after", date)])
        })
    })
    .await;
    let env = env_with(&fake.base, "");
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(emails(&env.contacts("People").await), everyone());
    let waited = gap(&arrivals, 1);
    assert!(waited >= Duration::from_millis(990), "waited {waited:?}");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
}

/// Six failures in a row, none saying how long to wait, are an ordinary bad minute:
/// backoff rides them out and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streak_of_six_429s_and_5xx_then_success_completes_the_run() {
    const STREAK: [u16; 6] = [429, 500, 503, 429, 502, 504];
    let (fake, arrivals) =
        faulty(|p, n| (p == 2 && n < STREAK.len()).then(|| status(STREAK[n], &[]))).await;
    let env = env_with(&fake.base, "");
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(emails(&env.contacts("People").await), everyone());
    let page2 = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p == 2)
        .count();
    assert_eq!(page2, STREAK.len() + 1);
}

/// A service down for longer than the budget fails the run (transient, so the daemon
/// backs off), keeps what was committed, and the next run resumes at the failed page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_beyond_the_budget_fails_the_run_and_the_next_run_resumes() {
    let down = Arc::new(AtomicBool::new(true));
    let is_down = down.clone();
    let (fake, arrivals) =
        faulty(move |p, _| (p == 2 && is_down.load(Ordering::SeqCst)).then(|| status(503, &[])))
            .await;
    let env = env_with(&fake.base, "retry_budget: PT1S");
    let started = Instant::now();
    let error = env.run("it").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let RunError::Failed { kind, message, .. } = &error else {
        panic!("not a failed run: {error}");
    };
    assert_eq!(*kind, FailureKind::Transient);
    assert!(message.contains("answered HTTP 503"), "{message}");
    assert!(message.contains("gave up after"), "{message}");
    assert!(message.contains("limits.retry_budget"), "{message}");
    let attempts = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p == 2)
        .count();
    assert!(attempts >= 4, "{attempts} attempts in the budget");
    assert_eq!(
        emails(&env.contacts("People").await),
        vec!["p1-0@example.com", "p1-1@example.com"],
        "page 1 stays committed"
    );

    down.store(false, Ordering::SeqCst);
    arrivals.lock().unwrap().clear();
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert!(summary.resumed, "the next run continues the pass");
    let pages: Vec<usize> = arrivals.lock().unwrap().iter().map(|(p, _)| *p).collect();
    assert_eq!(pages, vec![2, 3, 4], "page 1 is not read again");
    assert_eq!(emails(&env.contacts("People").await), everyone());
}

/// A wait longer than `limits.max_wait` (a daily quota) stops the run at its checkpoint
/// as a partial success that says when the next run may start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_beyond_max_wait_stops_the_run_until_the_reset() {
    let (fake, _) =
        faulty(|p, _| (p == 2).then(|| status(429, &[("retry-after", "30".into())]))).await;
    let env = env_with(&fake.base, "max_wait: PT10S");
    let before = Utc::now();
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Partial);
    let not_before = summary.not_before.expect("a not-before time");
    let wait = (not_before - before).num_seconds();
    assert!((29..=32).contains(&wait), "next run in {wait} s");
    assert_eq!(
        emails(&env.contacts("People").await),
        vec!["p1-0@example.com", "p1-1@example.com"],
        "page 1 stays committed"
    );
}

/// A response that never comes is ended by the request timeout and tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_response_hits_the_timeout_and_is_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let fake = HostileService::start(move |request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let p: usize = request.q("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        if n == 1 {
            Reply::Hang(Duration::from_secs(5))
        } else {
            Reply::json(200, &page(p))
        }
    })
    .await;
    let env = env_with(&fake.base, "");
    let started = Instant::now();
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout (PT0.5S) ended the hang: {:?}",
        started.elapsed()
    );
    let pages: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.q("page").unwrap_or("").to_string())
        .collect();
    assert_eq!(pages, vec!["1", "2", "2", "3", "4"]);
    assert_eq!(emails(&env.contacts("People").await), everyone());
}

/// A connection reset in the middle of a body is retried like any transport error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_is_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let fake = HostileService::start(move |request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let p: usize = request.q("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        if n == 0 || n == 2 {
            Reply::Reset {
                body: b"{\"data\": [{\"email\": ".to_vec(),
            }
        } else {
            Reply::json(200, &page(p))
        }
    })
    .await;
    let env = env_with(&fake.base, "");
    let summary = env.run("it").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let pages: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.q("page").unwrap_or("").to_string())
        .collect();
    assert_eq!(pages, vec!["1", "1", "2", "2", "3", "4"]);
    assert_eq!(emails(&env.contacts("People").await), everyone());
}
