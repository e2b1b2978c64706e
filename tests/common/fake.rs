//! Fake services: axum routers on 127.0.0.1:0 that imitate documented API behaviour
//! (see /work/shared/reference/services.md) and record every request they receive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use chrono::{DateTime, Duration, TimeZone, Utc};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub raw_query: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Headers, names lower-case.
    pub headers: HashMap<String, String>,
    /// Body text.
    pub body: String,
}

impl Recorded {
    /// A query parameter.
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// A running fake service.
pub struct FakeService {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Address.
    pub addr: SocketAddr,
    log: Log,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(log): State<Log>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let query = url::form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    log.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        raw_query,
        query,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

impl FakeService {
    /// Serves `router` on a free loopback port, recording requests.
    pub async fn start(router: Router) -> FakeService {
        let log: Log = Arc::default();
        let app = router.layer(middleware::from_fn_with_state(log.clone(), record));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeService {
            base: format!("http://{addr}"),
            addr,
            log,
            task,
        }
    }

    /// Serves the router `build` makes from the service's own base URL (for fakes that
    /// write absolute links to themselves).
    pub async fn start_with(build: impl FnOnce(String) -> Router) -> FakeService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let log: Log = Arc::default();
        let app = build(base.clone()).layer(middleware::from_fn_with_state(log.clone(), record));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeService {
            base,
            addr,
            log,
            task,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Requests so far.
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

/// A person at a fake service.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    /// Id.
    pub id: u64,
    /// Email as the service has it (may be missing or invalid on purpose).
    pub email: Option<String>,
    /// First name.
    pub first: String,
    /// Last name.
    pub last: String,
    /// Update time.
    pub updated: DateTime<Utc>,
    /// A text custom value.
    pub tier: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Marked deleted at the service.
    pub deleted: bool,
}

/// The fixed time fake data starts at.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()
}

/// `n` people `person{i}@example.com`, ids 1..=n, updated one second apart in id order.
pub fn people(n: usize) -> Vec<Person> {
    (1..=n as u64)
        .map(|i| Person {
            id: i,
            email: Some(format!("person{i}@example.com")),
            first: format!("First{i}"),
            last: format!("Last{i}"),
            updated: epoch() + Duration::seconds(i as i64),
            tier: if i % 2 == 0 { "gold" } else { "silver" }.to_string(),
            tags: vec!["vip".into(), format!("t{}", i % 3)],
            deleted: false,
        })
        .collect()
}

/// The people a service holds, shared with the test so it can change them between runs.
pub type Db = Arc<Mutex<Vec<Person>>>;

/// A shared database of `people`.
pub fn db(people: Vec<Person>) -> Db {
    Arc::new(Mutex::new(people))
}
