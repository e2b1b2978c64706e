//! Deletions at the source (issue 17), end to end against a fake CRM whose list omits
//! deleted records (as Zoho's, Salesforce's `/query` and HubSpot's do) and which offers a
//! deletions endpoint beside it (Zoho `/Contacts/deleted`): a deletion moves the
//! importer's membership to `removed` (the contact and its history stay), a record that
//! comes back is active again; an importer with `gone_after_full_pass` removes what a
//! complete full pass no longer returned (purged, or no longer matching its server-side
//! filter), never after a partial or failed pass; an email changed at the source moves
//! the source to the new address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde_json::json;
use tributary::engine::{PassKind, RunOptions};
use tributary::store::{ChangeKind, ContactView, MembershipStatus, RunOutcome};

use crate::common::fake::FakeService;
use crate::common::sync_env::SyncEnv;

#[derive(Clone)]
struct Record {
    id: u64,
    email: String,
    tag: String,
    modified: DateTime<Utc>,
    /// In the recycle bin since (listed by `/contacts/deleted`).
    deleted: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Crm {
    records: Vec<Record>,
    /// Answer 400 to list pages after the first (a failing pass).
    fail_after_first_page: bool,
}

impl Crm {
    fn with(n: u64) -> Shared {
        let crm = Crm {
            records: (1..=n)
                .map(|id| Record {
                    id,
                    email: format!("p{id}@example.com"),
                    tag: "vip".into(),
                    modified: Utc::now(),
                    deleted: None,
                })
                .collect(),
            fail_after_first_page: false,
        };
        Arc::new(Mutex::new(crm))
    }

    fn change(&mut self, id: u64, change: impl FnOnce(&mut Record)) {
        let record = self.records.iter_mut().find(|r| r.id == id).unwrap();
        change(record);
        record.modified = Utc::now();
    }
}

type Shared = Arc<Mutex<Crm>>;

fn since(q: &HashMap<String, String>, key: &str) -> Option<DateTime<Utc>> {
    q.get(key)
        .filter(|s| !s.is_empty())
        .map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
}

fn page_of<T: Clone>(items: &[T], q: &HashMap<String, String>) -> (Vec<T>, bool) {
    let per_page: usize = q.get("per_page").and_then(|s| s.parse().ok()).unwrap_or(2);
    let page: usize = q.get("page").and_then(|s| s.parse().ok()).unwrap_or(1);
    let start = (page - 1) * per_page;
    let slice: Vec<T> = items.iter().skip(start).take(per_page).cloned().collect();
    (slice, start + per_page < items.len())
}

/// `GET /contacts`: live records by id, `modified_since` inclusive, `tag` filtering on
/// the server, page numbers with `info.more_records`.
async fn contacts(
    State(crm): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let crm = crm.lock().unwrap();
    if crm.fail_after_first_page && q.get("page").is_some_and(|p| p != "1") {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": "INVALID_REQUEST", "message": "try later"})),
        )
            .into_response();
    }
    let from = since(&q, "modified_since");
    let mut live: Vec<&Record> = crm
        .records
        .iter()
        .filter(|r| r.deleted.is_none())
        .filter(|r| from.is_none_or(|f| r.modified >= f))
        .filter(|r| q.get("tag").is_none_or(|t| *t == r.tag))
        .collect();
    live.sort_by_key(|r| r.id);
    let (page, more) = page_of(&live, &q);
    let data: Vec<_> = page
        .iter()
        .map(|r| {
            json!({"id": r.id.to_string(), "email": r.email, "first_name": format!("P{}", r.id),
                   "tag": r.tag, "modified": r.modified.to_rfc3339()})
        })
        .collect();
    axum::Json(json!({"data": data, "info": {"more_records": more}})).into_response()
}

/// `GET /contacts/deleted`: records in the recycle bin deleted since `since`.
async fn deleted(
    State(crm): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let crm = crm.lock().unwrap();
    let from = since(&q, "since");
    let gone: Vec<(u64, DateTime<Utc>)> = crm
        .records
        .iter()
        .filter_map(|r| r.deleted.map(|at| (r.id, at)))
        .filter(|(_, at)| from.is_none_or(|f| *at >= f))
        .collect();
    let (page, more) = page_of(&gone, &q);
    let data: Vec<_> = page
        .iter()
        .map(|(id, at)| json!({"id": id.to_string(), "deleted_time": at.to_rfc3339()}))
        .collect();
    axum::Json(json!({"data": data, "info": {"more_records": more}})).into_response()
}

const CONNECTOR: &str = r#"spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
contacts:
  request:
    path: /contacts
    query:
      modified_since: "{{since}}"
      page: "{{page}}"
      per_page: "{{page_size}}"
      tag: "{{filters.tag}}"
  pagination:
    type: page_number
    has_more: $.info.more_records
    stop: [has_more_false]
  records: $.data[*]
  page_size: {max: 200, default: 2}
  fields:
    email: $.email
    first_name: $.first_name
    external_id: $.id
    updated_at:
      path: $.modified
  deletions:
    request:
      path: /contacts/deleted
      query:
        since: "{{since}}"
        page: "{{page}}"
        per_page: "{{page_size}}"
    pagination:
      type: page_number
      has_more: $.info.more_records
      stop: [has_more_false]
    records: $.data[*]
    external_id: $.id
sync:
  mode: incremental
  since_format: rfc3339
filters:
  tag:
    type: string
    apply:
      at: server
"#;

async fn setup(crm: &Shared, importers: &[(&str, &str)]) -> (FakeService, SyncEnv) {
    setup_on(crm, importers, SyncEnv::new()).await
}

async fn setup_on(
    crm: &Shared,
    importers: &[(&str, &str)],
    env: SyncEnv,
) -> (FakeService, SyncEnv) {
    let fake = FakeService::start(
        Router::new()
            .route("/contacts", get(contacts))
            .route("/contacts/deleted", get(deleted))
            .with_state(crm.clone()),
    )
    .await;
    env.connector("crm", CONNECTOR);
    for (id, extra) in importers {
        env.importer(
            id,
            &format!(
                "connector: crm\nsettings:\n  base: \"{}\"\n{extra}",
                fake.base
            ),
        );
    }
    (fake, env)
}

fn status(contacts: &[ContactView], email: &str, list: &str) -> Option<MembershipStatus> {
    contacts
        .iter()
        .find(|c| c.email == email)
        .and_then(|c| c.lists.iter().find(|m| m.list == list))
        .map(|m| m.status)
}

async fn statuses(env: &SyncEnv, list: &str, n: u64) -> Vec<Option<MembershipStatus>> {
    let all = env.all_contacts().await;
    (1..=n)
        .map(|i| status(&all, &format!("p{i}@example.com"), list))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletions_request_removes_memberships_and_a_returning_record_is_active_again() {
    use MembershipStatus::{Active as A, Removed as R};
    let crm = Crm::with(5);
    let (fake, env) = setup(&crm, &[("crm", "list: Customers\npage_budget: 0\n")]).await;
    let first = env.run("crm").await.unwrap();
    assert_eq!((first.pass, first.counts.created), (PassKind::First, 5));
    assert!(
        fake.requests().iter().all(|r| r.path == "/contacts"),
        "a first pass has nothing to remove"
    );

    crm.lock()
        .unwrap()
        .change(2, |r| r.deleted = Some(Utc::now()));
    crm.lock()
        .unwrap()
        .change(4, |r| r.deleted = Some(Utc::now()));
    fake.clear();
    let second = env.run("crm").await.unwrap();
    assert_eq!(second.pass, PassKind::Incremental);
    assert_eq!(second.counts.deleted, 2);
    let requests = fake.requests();
    assert_eq!(
        requests[0].path, "/contacts/deleted",
        "read before the pass"
    );
    let asked = requests[0].q("since").expect("asks from the pass's since");
    assert_eq!(Some(asked), requests[1].q("modified_since"));
    assert_eq!(
        statuses(&env, "Customers", 5).await,
        [Some(A), Some(R), Some(A), Some(R), Some(A)]
    );
    let all = env.all_contacts().await;
    assert_eq!(all.len(), 5, "deleted people's contacts are kept");
    let events = env.store().await.change_events(0, 1000).await.unwrap();
    let removal = events
        .iter()
        .find(|e| {
            e.email == "p2@example.com"
                && e.kind == ChangeKind::MembershipChanged
                && e.changes["status"]["new"] == "removed"
        })
        .expect("the removal is an event");
    assert!(!removal.notify);

    // Reading the deletions again changes nothing; a restored record is active again,
    // unless the person bounced meanwhile.
    env.store().await.bounce("p4@example.com").await.unwrap();
    crm.lock().unwrap().change(2, |r| r.deleted = None);
    crm.lock().unwrap().change(4, |r| r.deleted = None);
    let third = env.run("crm").await.unwrap();
    assert_eq!(third.outcome, RunOutcome::Completed);
    assert_eq!(
        statuses(&env, "Customers", 5).await,
        [Some(A), Some(A), Some(A), Some(R), Some(A)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_after_full_pass_removes_only_after_a_complete_full_pass() {
    gone_after_full_pass(SyncEnv::new()).await;
}

/// The same on PostgreSQL (skipped without `TRIBUTARY_TEST_PG`): the stamp of a pass
/// resumed by a later run is read back from the store and must still match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_after_full_pass_on_postgresql() {
    use sqlx::Connection as _;
    let Ok(base) = std::env::var("TRIBUTARY_TEST_PG") else {
        eprintln!("skipped: TRIBUTARY_TEST_PG is not set");
        return;
    };
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    let name = format!("deletions_{}_{}", std::process::id(), rand::random::<u32>());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&format!("/{name}"));
    let result = tokio::spawn(gone_after_full_pass(SyncEnv::with_store(
        tempfile::tempdir().unwrap(),
        url.to_string(),
    )))
    .await;
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
}

async fn gone_after_full_pass(env: SyncEnv) {
    use MembershipStatus::{Active as A, Removed as R};
    let crm = Crm::with(6);
    let (fake, env) = setup_on(
        &crm,
        &[
            (
                "vip",
                "list: VIP\npage_budget: 1\ngone_after_full_pass: true\nfilters:\n  tag: vip\n",
            ),
            (
                "plain",
                "list: Plain\npage_budget: 0\nfilters:\n  tag: vip\n",
            ),
        ],
        env,
    )
    .await;
    // The first pass: three pages, one per run.
    for _ in 0..3 {
        env.run("vip").await.unwrap();
    }
    env.run("plain").await.unwrap();
    assert_eq!(statuses(&env, "VIP", 6).await, vec![Some(A); 6]);

    // Person 1 stops matching the filter; person 6 is purged without a trace (no
    // deletions endpoint lists it).
    crm.lock().unwrap().change(1, |r| r.tag = "former".into());
    crm.lock().unwrap().records.retain(|r| r.id != 6);

    // A full pass: its first run reads one page of three.
    let partial = env
        .run_with(
            "vip",
            RunOptions {
                full_refresh: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(partial.outcome, RunOutcome::Partial);
    assert_eq!(
        statuses(&env, "VIP", 6).await,
        vec![Some(A); 6],
        "a partial pass deletes nothing"
    );

    // The next page fails: a failed pass deletes nothing either.
    crm.lock().unwrap().fail_after_first_page = true;
    assert!(env.run("vip").await.is_err());
    assert_eq!(
        statuses(&env, "VIP", 6).await,
        vec![Some(A); 6],
        "a failed pass deletes nothing"
    );
    crm.lock().unwrap().fail_after_first_page = false;

    // The pass goes on where it stopped and completes: what it did not return is gone.
    let mut last = env.run("vip").await.unwrap();
    while last.outcome == RunOutcome::Partial {
        last = env.run("vip").await.unwrap();
    }
    assert_eq!(last.outcome, RunOutcome::Completed);
    assert_eq!(
        last.counts.deleted, 2,
        "counted in the run that completed the pass"
    );
    assert_eq!(
        statuses(&env, "VIP", 6).await,
        [Some(R), Some(A), Some(A), Some(A), Some(A), Some(R)]
    );
    let events = env.store().await.change_events(0, 1000).await.unwrap();
    assert!(events.iter().any(|e| e.email == "p1@example.com"
        && e.changes["reason"]["new"] == "not returned by a complete full pass"
        && !e.notify));

    // An importer that did not opt in keeps them after its own complete full pass.
    let plain = env
        .run_with(
            "plain",
            RunOptions {
                full_refresh: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(plain.outcome, RunOutcome::Completed);
    assert_eq!(statuses(&env, "Plain", 6).await, vec![Some(A); 6]);

    // Back in the filter: active again with the next pass that reads the record.
    crm.lock().unwrap().change(1, |r| r.tag = "vip".into());
    let mut run = env.run("vip").await.unwrap();
    while run.outcome == RunOutcome::Partial {
        run = env.run("vip").await.unwrap();
    }
    assert_eq!(statuses(&env, "VIP", 6).await[0], Some(A));

    // A complete full pass that returns nobody at all removes nothing: an empty answer
    // is more often the service's fault than an emptied account.
    for id in 1..=5 {
        crm.lock().unwrap().change(id, |r| r.tag = "former".into());
    }
    let before = statuses(&env, "VIP", 6).await;
    let mut run = env
        .run_with(
            "vip",
            RunOptions {
                full_refresh: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    while run.outcome == RunOutcome::Partial {
        run = env.run("vip").await.unwrap();
    }
    assert_eq!(
        (run.outcome, run.counts.fetched),
        (RunOutcome::Completed, 0)
    );
    assert_eq!(statuses(&env, "VIP", 6).await, before);
    drop(fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_changed_at_the_source_moves_its_membership() {
    use MembershipStatus::{Active as A, Removed as R};
    let crm = Crm::with(3);
    let (_fake, env) = setup(&crm, &[("crm", "list: Customers\npage_budget: 0\n")]).await;
    env.run("crm").await.unwrap();
    crm.lock()
        .unwrap()
        .change(3, |r| r.email = "p3@new.example".into());
    let run = env.run("crm").await.unwrap();
    assert_eq!(run.counts.created, 1);
    let all = env.all_contacts().await;
    assert_eq!(status(&all, "p3@example.com", "Customers"), Some(R));
    assert_eq!(status(&all, "p3@new.example", "Customers"), Some(A));
    let new = all.iter().find(|c| c.email == "p3@new.example").unwrap();
    assert_eq!(new.sources[0].external_id.as_deref(), Some("3"));
    let events = env.store().await.change_events(0, 1000).await.unwrap();
    let moved = events
        .iter()
        .find(|e| e.kind == ChangeKind::SourceMoved)
        .expect("the move is recorded");
    assert_eq!(moved.email, "p3@example.com");
    assert_eq!(moved.changes["email"]["new"], "p3@new.example");
}

#[test]
fn a_deletions_request_is_validated_with_file_line_and_key() {
    use tributary::config::load::{LoadOptions, load};
    let env = SyncEnv::new();
    let broken = CONNECTOR
        .replace(
            "    records: $.data[*]\n    external_id: $.id\n",
            "    records: $.data[\n    external_id: $.id\n",
        )
        .replace(
            "        page: \"{{page}}\"\n        per_page",
            "        per_page",
        );
    env.connector("crm", &broken);
    env.importer(
        "crm",
        "connector: crm\nsettings:\n  base: http://127.0.0.1:1\nlist: L\ngone_after_full_pass: true\n",
    );
    let report = load(&env.config, LoadOptions::default());
    let text: Vec<String> = report.diagnostics.iter().map(|d| d.to_string()).collect();
    let has = |key: &str, words: &str| {
        text.iter()
            .any(|t| t.contains("connectors.d/crm.yaml:") && t.contains(key) && t.contains(words))
    };
    assert!(has("contacts.deletions.records", ""), "{text:?}");
    assert!(
        has(
            "contacts.deletions.pagination",
            "needs `{{page}}` in contacts.deletions.request"
        ),
        "{text:?}"
    );

    // Without an external id on live records, deletions cannot be matched to anything.
    let env = SyncEnv::new();
    env.connector(
        "crm",
        &CONNECTOR.replace("    external_id: $.id\n    updated_at", "    updated_at"),
    );
    let report = load(&env.config, LoadOptions::default());
    let text: Vec<String> = report.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|t| t.contains("connectors.d/crm.yaml:")
            && t.contains("contacts.deletions.external_id")
            && t.contains("needs `contacts.fields.external_id`")),
        "{text:?}"
    );

    // An importer that opts into `gone_after_full_pass` on a connector whose pages shift
    // is warned, naming its file and the key.
    let env = SyncEnv::new();
    env.connector("crm", CONNECTOR);
    env.importer(
        "crm",
        "connector: crm\nsettings:\n  base: http://127.0.0.1:1\nlist: L\ngone_after_full_pass: true\n",
    );
    let report = load(&env.config, LoadOptions::default());
    let text: Vec<String> = report.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|t| t.contains("importers.d/crm.yaml:")
            && t.contains("gone_after_full_pass")
            && t.contains("counts as gone")),
        "{text:?}"
    );
}
