//! The fake Pipedrive v1 persons service, run in its own process (`--role fake`).
//!
//! It owns a dataset of pre-serialized records sorted by update time, so answering a page
//! is a binary search and a copy of about 800 kB: the fake must never be what the
//! benchmark measures. It imitates `GET /v1/persons` (offset paging with `start`/`limit`,
//! at most 500 per page, `additional_data.pagination`, `api_token` query parameter) and
//! adds what v1 lacks so incremental runs are real: `updated_since` (RFC 3339, inclusive),
//! with records always sorted by update time ascending. Control endpoints under
//! `/_control/` change contacts and report what was served. It never touches a store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDateTime};

use crate::data;

/// Pipedrive's largest page.
const MAX_LIMIT: usize = 500;
/// Pipedrive's default page.
const DEFAULT_LIMIT: usize = 100;

/// Options of `--role fake`.
pub struct FakeOptions {
    pub n: u64,
    pub port: u16,
    pub token: String,
}

/// One record as served.
#[derive(Clone)]
struct Entry {
    update_time: i64,
    id: u64,
    version: u32,
    json: Bytes,
}

/// Records sorted by (update time, id): the order the fake serves them in.
struct Dataset {
    entries: Vec<Entry>,
}

struct AppState {
    dataset: RwLock<Arc<Dataset>>,
    token: String,
    generation: AtomicU32,
    requests: AtomicU64,
    records_served: AtomicU64,
    bytes_served: AtomicU64,
    unauthorized: AtomicU64,
}

/// Runs the fake until killed. Prints `listening on ADDR` once the dataset is ready.
pub fn run(options: FakeOptions) -> anyhow::Result<()> {
    // One thread: answering is a memcpy; the second core belongs to the importer.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(options))
}

async fn serve(options: FakeOptions) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let entries = (1..=options.n)
        .map(|id| {
            let update_time = data::initial_update_time(id);
            Entry {
                update_time,
                id,
                version: 0,
                json: Bytes::from(data::record_json(id, 0, update_time)),
            }
        })
        .collect::<Vec<_>>();
    let bytes: usize = entries.iter().map(|e| e.json.len()).sum();
    eprintln!(
        "fake: generated {} records, {:.0} bytes each on average, in {:.1} s",
        options.n,
        bytes as f64 / options.n.max(1) as f64,
        started.elapsed().as_secs_f64()
    );
    let state = Arc::new(AppState {
        dataset: RwLock::new(Arc::new(Dataset { entries })),
        token: options.token,
        generation: AtomicU32::new(0),
        requests: AtomicU64::new(0),
        records_served: AtomicU64::new(0),
        bytes_served: AtomicU64::new(0),
        unauthorized: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v1/persons", get(persons))
        .route("/_control/change", post(change))
        .route("/_control/stats", get(stats))
        .route("/_control/reset", post(reset))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
    println!("listening on {}", listener.local_addr()?);
    use std::io::Write;
    std::io::stdout().flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}

fn parse_since(value: &str) -> Option<i64> {
    if value.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.timestamp());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S") {
        return Some(t.and_utc().timestamp());
    }
    value.parse::<i64>().ok()
}

fn error(status: StatusCode, message: &str) -> Response {
    let body =
        serde_json::json!({"success": false, "error": message, "errorCode": status.as_u16()});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn persons(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if query.get("api_token").map(String::as_str) != Some(state.token.as_str()) {
        state.unauthorized.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::UNAUTHORIZED, "unauthorized access");
    }
    let start = match query.get("start").map(|s| s.parse::<usize>()) {
        None => 0,
        Some(Ok(s)) => s,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "start must be an integer"),
    };
    let limit = match query.get("limit").map(|s| s.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(l)) => l.clamp(1, MAX_LIMIT),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "limit must be an integer"),
    };
    let since = match query.get("updated_since") {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => match parse_since(v) {
            Some(t) => Some(t),
            None => return error(StatusCode::BAD_REQUEST, "updated_since must be RFC 3339"),
        },
    };
    let dataset = state.dataset.read().expect("not poisoned").clone();
    let first = since.map_or(0, |t| {
        dataset.entries.partition_point(|e| e.update_time < t)
    });
    let matching = &dataset.entries[first..];
    let begin = start.min(matching.len());
    let end = (start + limit).min(matching.len());
    let page = &matching[begin..end];
    let more = end < matching.len();

    let size: usize = page.iter().map(|e| e.json.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 256);
    body.extend_from_slice(br#"{"success":true,"data":"#);
    if page.is_empty() {
        // Pipedrive v1 answers `"data": null` past the end.
        body.extend_from_slice(b"null");
    } else {
        body.push(b'[');
        for (i, entry) in page.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&entry.json);
        }
        body.push(b']');
    }
    body.extend_from_slice(br#","additional_data":{"pagination":{"#);
    let trailer = if more {
        format!(
            r#""start":{start},"limit":{limit},"more_items_in_collection":true,"next_start":{end}}}}}}}"#
        )
    } else {
        format!(r#""start":{start},"limit":{limit},"more_items_in_collection":false}}}}}}"#)
    };
    body.extend_from_slice(trailer.as_bytes());
    state
        .records_served
        .fetch_add(page.len() as u64, Ordering::Relaxed);
    state
        .bytes_served
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(body),
    )
        .into_response()
}

/// `POST /_control/change?percent=1`: the next generation of changes. Each chosen contact
/// gets a new version (new segment and lifetime value) and the current time as update
/// time, as a real service stamps an edit, so it moves to the end of the order.
async fn change(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let percent = query
        .get("percent")
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(1);
    let generation = state.generation.fetch_add(1, Ordering::SeqCst) + 1;
    let now = chrono::Utc::now().timestamp();
    let mut guard = state.dataset.write().expect("not poisoned");
    let mut entries = guard.entries.clone();
    let mut changed = 0u64;
    for entry in &mut entries {
        if data::changed_in(entry.id, generation, percent) {
            entry.version += 1;
            entry.update_time = now;
            entry.json = Bytes::from(data::record_json(entry.id, entry.version, now));
            changed += 1;
        }
    }
    entries.sort_by_key(|e| (e.update_time, e.id));
    *guard = Arc::new(Dataset { entries });
    let body =
        serde_json::json!({"generation": generation, "changed": changed, "update_time": now});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /_control/stats`: what was served since the last reset.
async fn stats(State(state): State<Arc<AppState>>) -> Response {
    let body = serde_json::json!({
        "requests": state.requests.load(Ordering::Relaxed),
        "records": state.records_served.load(Ordering::Relaxed),
        "bytes": state.bytes_served.load(Ordering::Relaxed),
        "unauthorized": state.unauthorized.load(Ordering::Relaxed),
        "generation": state.generation.load(Ordering::Relaxed),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `POST /_control/reset`: zero the counters.
async fn reset(State(state): State<Arc<AppState>>) -> StatusCode {
    state.requests.store(0, Ordering::Relaxed);
    state.records_served.store(0, Ordering::Relaxed);
    state.bytes_served.store(0, Ordering::Relaxed);
    state.unauthorized.store(0, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}
