//! A local stand-in for a CRM, used by `scripts/demo` so that a newcomer can watch a real
//! import (real HTTP, the real engine, the real SQLite store) on a machine with no
//! internet access and no account anywhere.
//!
//! It imitates Pipedrive's v2 persons API as documented (cursor in
//! `additional_data.next_cursor`, `x-api-token` header, `updated_since` RFC 3339, records
//! sorted by update time ascending, emails and phones as arrays with a primary flag).
//!
//! Usage: `demo_service [--people N] [--port-file PATH]`; it prints
//! `listening on http://127.0.0.1:PORT` and serves until killed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
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

async fn persons(
    State(all): State<Arc<Vec<Person>>>,
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
    let matching: Vec<&Person> = all
        .iter()
        .filter(|p| since.is_none_or(|s| p.updated >= s))
        .collect();
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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut count = 2_500;
    let mut port_file = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--people" => count = args.next().and_then(|v| v.parse().ok()).unwrap_or(count),
            "--port-file" => port_file = args.next(),
            other => eprintln!("demo_service: ignoring unknown argument {other}"),
        }
    }
    let app = Router::new()
        .route("/api/v2/persons", get(persons))
        .with_state(Arc::new(people(count)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    if let Some(path) = port_file {
        std::fs::write(path, addr.port().to_string())?;
    }
    println!("listening on http://{addr} with {count} people");
    axum::serve(listener, app).await
}
