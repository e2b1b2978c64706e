//! `sync.mode: change_token` (issue 17): the token a complete pass ends with is stored and
//! sent by the next run, which then reads only what changed (deletions included); a token
//! the service refuses as expired is recognised by an error rule and the run falls back
//! to a full pass, saying so. Against a fake of Google People's `connections.list`
//! (services.md §14): `requestSyncToken=true` gets `nextSyncToken` on the last page, a
//! `syncToken` lists the people changed since it (deleted ones as
//! `metadata.deleted: true` without an email), an expired one answers 400
//! `EXPIRED_SYNC_TOKEN`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tributary::config::load::{LoadOptions, load};
use tributary::engine::PassKind;
use tributary::store::RunOutcome;

use crate::common::fake::FakeService;
use crate::common::sync_env::{SyncEnv, emails};

#[derive(Clone)]
struct Person {
    id: u64,
    name: String,
    deleted: bool,
    /// The change that last touched the person.
    version: u64,
}

#[derive(Default)]
struct Book {
    people: Vec<Person>,
    version: u64,
    /// Tokens older than this are expired.
    oldest_valid: u64,
}

impl Book {
    fn change(&mut self, id: u64, change: impl FnOnce(&mut Person)) {
        self.version += 1;
        let version = self.version;
        match self.people.iter_mut().find(|p| p.id == id) {
            Some(p) => {
                change(p);
                p.version = version;
            }
            None => {
                let mut p = Person {
                    id,
                    name: format!("Person {id}"),
                    deleted: false,
                    version,
                };
                change(&mut p);
                self.people.push(p);
            }
        }
    }
}

type Shared = Arc<Mutex<Book>>;

fn book(n: u64) -> Shared {
    let mut book = Book::default();
    for id in 1..=n {
        book.change(id, |_| {});
    }
    Arc::new(Mutex::new(book))
}

async fn connections(
    State(book): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let book = book.lock().unwrap();
    let since = match q.get("syncToken") {
        None => None,
        Some(token) => match token.strip_prefix('v').and_then(|v| v.parse::<u64>().ok()) {
            Some(v) if v >= book.oldest_valid => Some(v),
            _ => {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": {
                        "code": 400,
                        "message": "Sync token is expired. Clear local cache and retry call without the sync token.",
                        "status": "FAILED_PRECONDITION",
                        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "EXPIRED_SYNC_TOKEN"}]
                    }})),
                )
                    .into_response();
            }
        },
    };
    let mut listed: Vec<&Person> = book
        .people
        .iter()
        .filter(|p| match since {
            Some(v) => p.version > v,
            None => !p.deleted,
        })
        .collect();
    listed.sort_by_key(|p| p.id);
    let size: usize = q
        .get("pageSize")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let start: usize = q
        .get("pageToken")
        .and_then(|t| t.strip_prefix('p'))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let page: Vec<serde_json::Value> = listed
        .iter()
        .skip(start)
        .take(size)
        .map(|p| {
            if p.deleted {
                json!({"resourceName": format!("people/c{}", p.id), "metadata": {"deleted": true}})
            } else {
                json!({
                    "resourceName": format!("people/c{}", p.id),
                    "emailAddresses": [{"value": format!("person{}@example.com", p.id)}],
                    "names": [{"givenName": p.name}],
                })
            }
        })
        .collect();
    let mut body = json!({"connections": page, "totalItems": listed.len()});
    if start + size < listed.len() {
        body["nextPageToken"] = json!(format!("p{}", start + size));
    } else if q.get("requestSyncToken").map(String::as_str) == Some("true") {
        body["nextSyncToken"] = json!(format!("v{}", book.version));
    }
    axum::Json(body).into_response()
}

const CONNECTOR: &str = r#"spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
contacts:
  request:
    path: /people/me/connections
    query:
      personFields: names,emailAddresses,metadata
      pageSize: "{{page_size}}"
      pageToken: "{{cursor}}"
      requestSyncToken: "true"
      syncToken: "{{change_token}}"
  pagination:
    type: cursor
    cursor: $.nextPageToken
    stop: [missing_token]
  records: $.connections[*]
  records_absent: empty_page
  page_size: {max: 1000, default: 2}
  deleted: {path: $.metadata.deleted, equals: true}
  fields:
    email: $.emailAddresses[0].value
    first_name: $.names[0].givenName
    external_id: $.resourceName
error_rules:
  - {status: 400, contains: EXPIRED_SYNC_TOKEN, action: restart_pass, message: "the sync token expired"}
sync:
  mode: change_token
  token: $.nextSyncToken
"#;

async fn setup(book: &Shared) -> (FakeService, SyncEnv) {
    let fake = FakeService::start(
        Router::new()
            .route("/people/me/connections", get(connections))
            .with_state(book.clone()),
    )
    .await;
    let env = SyncEnv::new();
    env.connector("people", CONNECTOR);
    env.importer(
        "gp",
        &format!(
            "connector: people\nsettings:\n  base: \"{}\"\nlist: People\npage_budget: 0\n",
            fake.base
        ),
    );
    (fake, env)
}

async fn token(env: &SyncEnv) -> Option<String> {
    env.store()
        .await
        .importer_state("gp")
        .await
        .unwrap()
        .checkpoint
        .change_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_token_round_trip_reads_only_changes_and_applies_deletions() {
    let book = book(5);
    let (fake, env) = setup(&book).await;
    let first = env.run("gp").await.unwrap();
    assert_eq!(first.pass, PassKind::First);
    assert_eq!((first.counts.pages, first.counts.created), (3, 5));
    assert!(fake.requests().iter().all(|r| r.q("syncToken").is_none()));
    assert_eq!(token(&env).await.as_deref(), Some("v5"));

    {
        let mut book = book.lock().unwrap();
        book.change(2, |p| p.name = "Renamed".into());
        book.change(4, |p| p.deleted = true);
        book.change(6, |_| {});
    }
    fake.clear();
    let second = env.run("gp").await.unwrap();
    assert_eq!(second.outcome, RunOutcome::Completed);
    assert_eq!(second.pass, PassKind::Incremental);
    let c = &second.counts;
    assert_eq!(
        (c.pages, c.fetched, c.created, c.updated, c.deleted),
        (2, 3, 1, 1, 1)
    );
    let requests = fake.requests();
    assert!(requests.iter().all(|r| r.q("syncToken") == Some("v5")));
    assert_eq!(token(&env).await.as_deref(), Some("v8"));

    let stored = env.contacts("People").await;
    assert_eq!(
        emails(&stored).len(),
        6,
        "a deleted person's contact is kept"
    );
    let two = stored
        .iter()
        .find(|c| c.email == "person2@example.com")
        .unwrap();
    assert_eq!(two.first_name.as_deref(), Some("Renamed"));
    let four = stored
        .iter()
        .find(|c| c.email == "person4@example.com")
        .unwrap();
    assert!(four.sources.iter().any(|s| s.deleted_at.is_some()));

    // Nothing changed: one request, nothing read, the token kept moving.
    fake.clear();
    let third = env.run("gp").await.unwrap();
    assert_eq!((third.counts.pages, third.counts.fetched), (1, 0));
    assert_eq!(token(&env).await.as_deref(), Some("v8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_change_token_falls_back_to_a_full_pass_and_says_so() {
    let book = book(5);
    let (fake, env) = setup(&book).await;
    env.run("gp").await.unwrap();
    {
        let mut book = book.lock().unwrap();
        book.change(1, |p| p.name = "Changed".into());
        book.oldest_valid = 100;
    }
    fake.clear();
    let run = env.run("gp").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Completed);
    assert_eq!(run.pass, PassKind::FullRefresh);
    assert!(
        run.pass_restarted
            .as_deref()
            .is_some_and(|r| r.contains("change token")),
        "{:?}",
        run.pass_restarted
    );
    let requests = fake.requests();
    assert_eq!(requests[0].q("syncToken"), Some("v5"));
    assert!(requests[1..].iter().all(|r| r.q("syncToken").is_none()));
    assert_eq!((run.counts.fetched, run.counts.updated), (5, 1));
    assert_eq!(token(&env).await.as_deref(), Some("v6"));
    let store = env.store().await;
    assert!(
        store
            .importer_state("gp")
            .await
            .unwrap()
            .checkpoint
            .last_full_refresh
            .is_some()
    );
    // The new token works.
    book.lock().unwrap().oldest_valid = 0;
    fake.clear();
    let next = env.run("gp").await.unwrap();
    assert_eq!(next.pass, PassKind::Incremental);
    assert_eq!(fake.requests()[0].q("syncToken"), Some("v6"));
}

#[test]
fn a_change_token_connector_must_send_its_token() {
    let env = SyncEnv::new();
    env.connector(
        "people",
        &CONNECTOR.replace("      syncToken: \"{{change_token}}\"\n", ""),
    );
    let report = load(&env.config, LoadOptions::default());
    let text: Vec<String> = report.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|t| t.contains("connectors.d/people.yaml:")
            && t.contains("sync: a change-token connector must send `{{change_token}}`")),
        "{text:?}"
    );
}
