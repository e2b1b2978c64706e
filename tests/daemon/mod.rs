//! The daemon: its schedule driven by a manual clock against fake services (in-process),
//! and the real binary as systemd runs it (signals, HTTP, hand-off of `run`).

mod nodes;
mod process;
mod reload;
mod schedule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::common::fake::{Db, FakeService, Person};

/// How the fake CRM behaves right now; tests change it between runs.
#[derive(Default)]
pub struct Behaviour {
    /// Every request answers this status (0: serve normally).
    pub fail_with: u16,
    /// A `Retry-After` to send with `fail_with`.
    pub retry_after: Option<String>,
    /// Fail only from this page on (0: every page).
    pub fail_from_page: usize,
    /// The API key the service accepts (`None`: no check).
    pub key: Option<String>,
    /// Delay before each answer.
    pub delay: Duration,
}

/// The fake's shared state.
#[derive(Clone)]
pub struct Crm {
    pub db: Db,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
}

impl Crm {
    pub fn new(db: Db) -> Crm {
        Crm {
            db,
            behaviour: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
        }
    }
}

struct InFlight(Arc<AtomicUsize>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A CRM shaped like Pipedrive's v1 list: `page`/`per_page`, `since` (exclusive, RFC
/// 3339), records under `data`, an empty page at the end. Paths may be prefixed by the
/// importer (`/<tenant>/people`) so several importers share one fake.
async fn people(
    State(crm): State<Crm>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = crm.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    crm.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(crm.in_flight.clone());
    let (delay, fail, retry_after, fail_from, key) = {
        let b = crm.behaviour.lock().unwrap();
        (
            b.delay,
            b.fail_with,
            b.retry_after.clone(),
            b.fail_from_page,
            b.key.clone(),
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(key) = key
        && headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(key.as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid api key"})),
        )
            .into_response();
    }
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    if fail != 0 && page >= fail_from.max(1) {
        let mut response = (
            StatusCode::from_u16(fail).unwrap(),
            axum::Json(json!({"error": "failing on purpose"})),
        )
            .into_response();
        if let Some(after) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", after.parse().unwrap());
        }
        return response;
    }
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100);
    let since = q
        .get("since")
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let people: Vec<Person> = crm
        .db
        .lock()
        .unwrap()
        .iter()
        .filter(|p| since.is_none_or(|s| p.updated > s))
        .cloned()
        .collect();
    let data: Vec<_> = people
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|p| {
            json!({"id": p.id, "email": p.email, "first": p.first, "last": p.last,
                   "updated": p.updated.to_rfc3339()})
        })
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

/// Starts the fake CRM.
pub async fn crm(crm: Crm) -> FakeService {
    let router = Router::new()
        .route("/people", get(people))
        .route("/{tenant}/people", get(people))
        .with_state(crm);
    FakeService::start(router).await
}

/// The connector for [`crm`]: incremental by default, or full refresh every `every`.
pub fn connector(sync: &str) -> String {
    format!(
        r#"
spec_version: 1
base_url: "{{{{settings.base}}}}"
settings:
  base: {{}}
auth:
  key: {{type: api_key, in: header, name: x-api-key, value: "{{{{credentials.key}}}}"}}
contacts:
  request:
    path: /people
    query: {{page: "{{{{page}}}}", per_page: "{{{{page_size}}}}", since: "{{{{since}}}}"}}
  pagination: {{type: page_number, stop: [empty_page]}}
  records: $.data[*]
  page_size: {{max: 100}}
  fields:
    email: $.email
    first_name: $.first
    last_name: $.last
    external_id: $.id
    updated_at: {{path: $.updated}}
sync: {sync}
"#
    )
}

/// An importer of [`connector`]'s service at `base`.
pub fn importer(base: &str, list: &str, key_ref: &str, extra: &str) -> String {
    format!(
        "connector: crm\nauth: key\ncredentials:\n  key: {key_ref}\nsettings:\n  base: \"{base}\"\nlist: {list}\n{extra}"
    )
}

/// Polls `check` every 20 ms for up to 20 s of real time.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
