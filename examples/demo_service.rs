//! A local stand-in for a CRM, used by `scripts/demo` so that a newcomer can watch a real
//! import (real HTTP, the real engine, the real SQLite store) on a machine with no
//! internet access and no account anywhere.
//!
//! It imitates Pipedrive's v2 persons API as documented (cursor in
//! `additional_data.next_cursor`, `x-api-token` header, `updated_since` RFC 3339, records
//! sorted by update time ascending, emails and phones as arrays with a primary flag).
//!
//! Usage: `demo_service [--people N] [--port-file PATH] [--page-delay-ms MS]`; it prints
//! `listening on http://127.0.0.1:PORT` and serves until killed. `--page-delay-ms` makes
//! each page slow, as a real service over the internet is, so that progress can be
//! watched. `POST /demo/touch?count=N` (not part of the imitated API) edits the first N
//! people as a salesperson would: a new segment and an update time of now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

/// The token the demo importer sends (from `$DEMO_API_TOKEN`).
const TOKEN: &str = "demo-token";

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen",
];
const SEGMENTS: &[&str] = &["Gold", "Silver", "Bronze"];
const ORGS: &[&str] = &[
    "Analytical Engines",
    "Compilers Inc",
    "Bletchley",
    "Mathematisch Centrum",
];

struct Person {
    record: Value,
    updated: DateTime<Utc>,
}

fn people(count: usize) -> Vec<Person> {
    let epoch = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    (0..count)
        .map(|i| {
            let first = FIRST[i % FIRST.len()];
            let last = LAST[(i / FIRST.len()) % LAST.len()];
            let updated = epoch + Duration::minutes(i as i64);
            let email = format!("{}.{}{}@example.com", first, last, i).to_lowercase();
            // Every 50th person has no email: the engine must skip and count them.
            let emails = if i % 50 == 49 {
                json!([])
            } else {
                json!([
                    {"label": "home", "value": format!("home{i}@example.net"), "primary": false},
                    {"label": "work", "value": email, "primary": true}
                ])
            };
            let record = json!({
                "id": 1000 + i,
                "name": format!("{first} {last}"),
                "first_name": first,
                "last_name": last,
                "emails": emails,
                "phones": [{"label": "mobile", "value": format!("+44 7700 {:06}", i), "primary": true}],
                "org_name": ORGS[i % ORGS.len()],
                "label_ids": [i % 3, 7],
                "visible_to": 3,
                "is_deleted": false,
                "add_time": "2025-12-01T00:00:00Z",
                "update_time": updated.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "custom_fields": {"segment": SEGMENTS[i % SEGMENTS.len()], "score": i % 100}
            });
            Person { record, updated }
        })
        .collect()
}

struct Demo {
    people: Mutex<Vec<Person>>,
    page_delay: std::time::Duration,
}

async fn persons(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("x-api-token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"success": false, "error": "unauthorized"})),
        )
            .into_response();
    }
    let limit: usize = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .min(500);
    let start: usize = query
        .get("cursor")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let since = query
        .get("updated_since")
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok());
    tokio::time::sleep(demo.page_delay).await;
    let all = demo.people.lock().unwrap();
    // Sorted by update time ascending, as Pipedrive sorts with `updated_since`.
    let mut matching: Vec<&Person> = all
        .iter()
        .filter(|p| since.is_none_or(|s| p.updated >= s))
        .collect();
    matching.sort_by_key(|p| p.updated);
    let page: Vec<&Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|p| &p.record)
        .collect();
    let next = start + page.len();
    let next_cursor = (next < matching.len()).then(|| next.to_string());
    Json(json!({"success": true, "data": page, "additional_data": {"next_cursor": next_cursor}}))
        .into_response()
}

/// Edits the first `count` people who have an email: a new segment, updated now.
async fn touch(
    State(demo): State<Arc<Demo>>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let count: usize = query.get("count").and_then(|v| v.parse().ok()).unwrap_or(3);
    let now = Utc::now();
    let mut all = demo.people.lock().unwrap();
    let mut touched = Vec::new();
    for person in all
        .iter_mut()
        .filter(|p| p.record["emails"].as_array().is_some_and(|e| !e.is_empty()))
        .take(count)
    {
        person.updated = now;
        person.record["update_time"] =
            json!(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        person.record["custom_fields"]["segment"] = json!("Platinum");
        touched.push(person.record["emails"][1]["value"].clone());
    }
    Json(json!({ "touched": touched }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut count = 2_500;
    let mut port_file = None;
    let mut page_delay_ms = 0;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--people" => count = args.next().and_then(|v| v.parse().ok()).unwrap_or(count),
            "--port-file" => port_file = args.next(),
            "--page-delay-ms" => {
                page_delay_ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(0)
            }
            other => eprintln!("demo_service: ignoring unknown argument {other}"),
        }
    }
    let app = Router::new()
        .route("/api/v2/persons", get(persons))
        .route("/demo/touch", post(touch))
        .with_state(Arc::new(Demo {
            people: Mutex::new(people(count)),
            page_delay: std::time::Duration::from_millis(page_delay_ms),
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    if let Some(path) = port_file {
        std::fs::write(path, addr.port().to_string())?;
    }
    println!("listening on http://{addr} with {count} people");
    axum::serve(listener, app).await
}
