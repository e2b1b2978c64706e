//! Client-side rate limits (issue 16): importers on one service account keep the
//! connector's `rate_limit` together (pace and concurrent requests), and the service's
//! quota headers make the whole account wait, or stop a run until a distant reset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Query;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde_json::json;
use tributary::store::RunOutcome;

use crate::common::fake::FakeService;
use crate::common::sync_env::{SyncEnv, emails};

/// Pages of two people per importer.
const PAGES: usize = 6;

/// A connector whose service allows `rate_limit` per account (an API token).
fn connector(rate_limit: &str) -> String {
    format!(
        r#"
spec_version: 1
service: paced
base_url: "{{{{settings.base}}}}"
auth:
  token: {{type: api_key, in: header, name: x-api-token, value: "{{{{credentials.token}}}}"}}
rate_limit: {rate_limit}
contacts:
  request:
    path: "/{{{{settings.tenant}}}}/items"
    query: {{page: "{{{{page}}}}"}}
  pagination: {{type: page_number, stop: [empty_page]}}
  records: $.data[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
settings:
  base: {{}}
  tenant: {{}}
"#
    )
}

/// Arrival times of requests, and how many were in flight at most.
#[derive(Clone, Default)]
struct Seen {
    arrivals: Arc<Mutex<Vec<Instant>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

/// A service of `PAGES` pages per tenant; `extra` adds headers to each page's answer.
async fn service(
    seen: Seen,
    delay: Duration,
    extra: impl Fn(usize) -> Vec<(&'static str, String)> + Send + Sync + Clone + 'static,
) -> FakeService {
    let router = Router::new().route(
        "/{tenant}/items",
        get(
            move |axum::extract::Path(tenant): axum::extract::Path<String>,
                  Query(q): Query<HashMap<String, String>>| {
                let (seen, extra) = (seen.clone(), extra.clone());
                async move {
                    seen.arrivals.lock().unwrap().push(Instant::now());
                    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                    let data: Vec<_> = if page <= PAGES {
                        (0..2)
                            .map(|i| json!({"email": format!("{tenant}-{page}-{i}@example.com")}))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let mut response: Response =
                        axum::Json(json!({ "data": data })).into_response();
                    let headers: &mut HeaderMap = response.headers_mut();
                    for (name, value) in extra(page) {
                        headers.insert(name, value.parse().unwrap());
                    }
                    response
                }
            },
        ),
    );
    FakeService::start(router).await
}

fn importer(env: &SyncEnv, base: &str, tenant: &str, token: &str) -> String {
    format!(
        "connector: paced\ncredentials:\n  token: {}\nsettings:\n  base: \"{base}\"\n  tenant: {tenant}\nlist: {tenant}\npage_budget: 0\n",
        env.secret(&format!("token-{tenant}"), token)
    )
}

/// Two importers on one account run at the same time; the service counts what reaches
/// it: never more than the documented 5 requests in a second, together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_importers_on_one_account_stay_under_its_limit_together() {
    let seen = Seen::default();
    let fake = service(seen.clone(), Duration::ZERO, |_| Vec::new()).await;
    let env = SyncEnv::new();
    env.connector("paced", &connector("{requests_per_second: 5}"));
    env.importer("a", &importer(&env, &fake.base, "a", "one-token"));
    env.importer("b", &importer(&env, &fake.base, "b", "one-token"));
    let started = Instant::now();
    let (a, b) = tokio::join!(env.run("a"), env.run("b"));
    let elapsed = started.elapsed();
    assert_eq!(a.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(b.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(env.contacts("a").await.len(), PAGES * 2);
    assert_eq!(env.contacts("b").await.len(), PAGES * 2);

    let arrivals = seen.arrivals.lock().unwrap().clone();
    let total = arrivals.len();
    assert_eq!(total, 2 * (PAGES + 1));
    // Requests are spread 200 ms apart: any 0.9 s (a second less the loopback's
    // jitter) holds at most 5 of them, the two importers together.
    let busiest = arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|t| **t >= *start && **t < *start + Duration::from_millis(900))
                .count()
        })
        .max()
        .unwrap();
    assert!(busiest <= 5, "{busiest} requests within 0.9 s");
    let floor = Duration::from_millis(200) * (total as u32 - 1);
    assert!(elapsed >= floor * 9 / 10, "{total} requests in {elapsed:?}");
}

/// Importers on different accounts (other tokens) do not slow each other down, and a
/// concurrency cap holds one account to that many requests in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_capped_per_account() {
    let seen = Seen::default();
    let fake = service(seen.clone(), Duration::from_millis(50), |_| Vec::new()).await;
    let env = SyncEnv::new();
    env.connector("paced", &connector("{concurrent: 1}"));
    env.importer("a", &importer(&env, &fake.base, "a", "one-token"));
    env.importer("b", &importer(&env, &fake.base, "b", "one-token"));
    let (a, b) = tokio::join!(env.run("a"), env.run("b"));
    assert_eq!(a.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(b.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 1);

    let seen = Seen::default();
    let fake = service(seen.clone(), Duration::from_millis(200), |_| Vec::new()).await;
    let env = SyncEnv::new();
    env.connector("paced", &connector("{concurrent: 1}"));
    env.importer("a", &importer(&env, &fake.base, "a", "token-a"));
    env.importer("b", &importer(&env, &fake.base, "b", "token-b"));
    let (a, b) = tokio::join!(env.run("a"), env.run("b"));
    assert_eq!(a.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(b.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(
        seen.max_in_flight.load(Ordering::SeqCst),
        2,
        "two accounts, one request each at a time"
    );
}

const QUOTA_HEADERS: &str = "{remaining: {header: X-RateLimit-Remaining}, reset: {header: X-RateLimit-Reset, format: seconds}}";

/// A quota header saying none is left makes the account wait for the announced reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_headers_make_the_account_wait_for_the_reset() {
    let seen = Seen::default();
    let fake = service(seen.clone(), Duration::ZERO, |page| {
        let left = if page == 2 { 0 } else { 10 };
        vec![
            ("x-ratelimit-remaining", left.to_string()),
            ("x-ratelimit-reset", "1".to_string()),
        ]
    })
    .await;
    let env = SyncEnv::new();
    env.connector("paced", &connector(QUOTA_HEADERS));
    env.importer("a", &importer(&env, &fake.base, "a", "one-token"));
    let summary = env.run("a").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let arrivals = seen.arrivals.lock().unwrap().clone();
    let waited = arrivals[2] - arrivals[1];
    assert!(
        waited >= Duration::from_millis(990),
        "waited {waited:?} after page 2"
    );
    assert!(
        arrivals[1] - arrivals[0] < Duration::from_millis(500),
        "no wait after page 1"
    );
}

/// A quota spent until a reset further away than `limits.max_wait` (a daily quota) stops
/// the run after the page that said so, as a partial success with a not-before time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_spent_stops_the_run_until_its_reset() {
    let reset = Utc::now().timestamp() + 3 * 3600;
    let seen = Seen::default();
    let fake = service(seen.clone(), Duration::ZERO, move |_| {
        vec![
            ("x-daily-remaining", "0".to_string()),
            ("x-daily-reset", reset.to_string()),
        ]
    })
    .await;
    let env = SyncEnv::new();
    env.connector(
        "paced",
        &connector("{remaining: {header: X-Daily-Remaining}, reset: {header: X-Daily-Reset, format: unix_seconds}}"),
    );
    env.importer("a", &importer(&env, &fake.base, "a", "one-token"));
    let summary = env.run("a").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Partial);
    let not_before = summary.not_before.expect("a not-before time");
    assert!(
        (not_before.timestamp() - reset).abs() <= 2,
        "next run at the reset: {not_before}"
    );
    assert_eq!(
        seen.arrivals.lock().unwrap().len(),
        1,
        "nothing sent past the quota"
    );
    assert_eq!(
        emails(&env.contacts("a").await),
        vec!["a-1-0@example.com", "a-1-1@example.com"],
        "the page that spent the quota is committed"
    );
}
