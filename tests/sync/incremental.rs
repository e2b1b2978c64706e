//! Incremental sync that never loses a change (issue 17): safe watermarks (a pass not
//! sorted by update time moves the watermark only at its end and never past its start
//! minus the safety lag; a record stamped in the future never moves it) and safe paging
//! (offset, page-number, `Link` and next-URL passes sorted by update time re-query from
//! the newest committed update time instead of advancing a position that shifts when a
//! record changes mid-pass). Each test runs against the data-driven fake of
//! `tests/common/service.rs`, whose offsets, pages, `Link` headers and query locators
//! shift exactly as a real service's do when a record moves to the end of the order.

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};
use tributary::config::load::{LoadOptions, load};
use tributary::engine::{PassKind, RunOptions};
use tributary::store::RunOutcome;

use crate::common::fake::FakeService;
use crate::common::service::{
    self, Auth, Canned, Contact, PageInfo, Paging, People, Query, Service, Since, by_update,
    parse_rfc3339, realistic,
};
use crate::common::sync_env::{SyncEnv, emails};

/// A record as the fake CRM writes it: update times with milliseconds, `Z`.
fn record(c: &Contact, _query: &Query) -> Value {
    json!({
        "id": c.id,
        "email": c.email(),
        "first": c.first,
        "last": c.last,
        "updated": c.updated.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

fn body(records: Vec<Value>, info: &PageInfo) -> Value {
    json!({"items": records, "next": info.next_url, "has_more": info.has_more, "total": info.total})
}

fn by_id(c: &Contact, _query: &Query) -> (i64, i64) {
    (c.id as i64, 0)
}

/// A CRM paging as `paging` says, sorted by `order`, with an inclusive `since`.
fn crm(paging: Paging, order: fn(&Contact, &Query) -> (i64, i64)) -> Service {
    Service {
        name: "crm",
        path: "/people".into(),
        auth: Auth::None,
        denied: Canned::json(401, json!({"error": "denied"})),
        params: vec![],
        bad_param: |name| Canned::json(400, json!({"error": format!("bad parameter {name}")})),
        paging,
        page_size: (3, 2000),
        since: Some(Since {
            param: "since",
            parse: parse_rfc3339,
            inclusive: true,
        }),
        query_since: None,
        filters: vec![],
        order,
        lists_deleted: false,
        record,
        body,
        fields_param: None,
        required: vec![],
        cursor_binds_params: false,
        token: None,
        protocol: Default::default(),
    }
}

/// The four styles whose position shifts, each with its fake paging and the connector's
/// request and pagination sections.
#[derive(Clone, Copy, Debug)]
enum Style {
    Offset,
    PageNumber,
    Link,
    NextUrl,
}

impl Style {
    fn paging(self) -> Paging {
        match self {
            Style::Offset => Paging::Offset {
                offset: "offset",
                count: "limit",
            },
            Style::PageNumber => Paging::PageNumber {
                page: "page",
                per_page: "limit",
            },
            Style::Link => Paging::LinkHeader {
                limit: "limit",
                page_info: "page_info",
            },
            Style::NextUrl => Paging::QueryLocator {
                size_header: "x-batch",
            },
        }
    }

    /// The connector's `contacts.request` and `contacts.pagination`.
    fn request(self) -> &'static str {
        match self {
            Style::Offset => {
                "  request:\n    path: /people\n    query: {offset: \"{{offset}}\", limit: \"{{page_size}}\", since: \"{{since}}\"}\n  pagination: {type: offset, stop: [empty_page]}\n"
            }
            Style::PageNumber => {
                "  request:\n    path: /people\n    query: {page: \"{{page}}\", limit: \"{{page_size}}\", since: \"{{since}}\"}\n  pagination: {type: page_number, stop: [empty_page]}\n"
            }
            Style::Link => {
                "  request:\n    path: /people\n    query: {limit: \"{{page_size}}\", since: \"{{since}}\"}\n  pagination: {type: link_header, stop: [missing_token]}\n"
            }
            Style::NextUrl => {
                "  request:\n    path: /people\n    query: {since: \"{{since}}\"}\n    headers: {x-batch: \"batchSize={{page_size}}\"}\n  pagination: {type: next_url, next_url: $.next, stop: [missing_token]}\n"
            }
        }
    }

    /// Page size: the query-locator fake serves 200 at least.
    fn page_size(self) -> usize {
        match self {
            Style::NextUrl => 200,
            _ => 3,
        }
    }
}

fn connector(style: Style, sync: &str) -> String {
    format!(
        r#"spec_version: 1
base_url: "{{{{settings.base}}}}"
settings:
  base: {{}}
contacts:
{}  records: $.items[*]
  page_size: {{max: 2000, default: 3}}
  fields:
    email: $.email
    first_name: $.first
    last_name: $.last
    external_id: $.id
    updated_at: {{path: $.updated, format: rfc3339}}
sync:
  mode: incremental
{sync}"#,
        style.request()
    )
}

const SORTED: &str = "  order: updated_asc\n  since_inclusive: true\n";

fn importer(env: &SyncEnv, fake: &FakeService, page_size: usize, budget: u64) {
    env.importer(
        "crm",
        &format!(
            "connector: crm\nsettings:\n  base: \"{}\"\nlist: People\npage_size: {page_size}\npage_budget: {budget}\n",
            fake.base
        ),
    );
}

fn want(people: &People) -> Vec<String> {
    let mut all: Vec<String> = people
        .all()
        .iter()
        .map(|p| p.email().unwrap().to_string())
        .collect();
    all.sort();
    all
}

/// Person `id`'s stored first name.
async fn first_name(env: &SyncEnv, id: u64) -> Option<String> {
    env.contacts("People")
        .await
        .into_iter()
        .find(|c| c.email == format!("person{id}@example.com"))
        .and_then(|c| c.first_name)
}

/// A pass reads one page, then the second person is edited (moving to the end of the
/// order, so that every record behind it shifts back a slot), then the pass goes on:
/// with safe paging nobody is skipped, and the edit is read in the same pass.
async fn edited_mid_pass_skips_nobody(style: Style) {
    let size = style.page_size();
    let people = People::new(realistic(size * 3 + 1));
    let fake = service::start(crm(style.paging(), by_update), &people).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector(style, SORTED));
    importer(&env, &fake, size, 1);
    let first = env.run("crm").await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Partial, "{style:?}");
    assert_eq!(env.contacts("People").await.len(), size, "{style:?}");

    people.edit(2, |p| p.first = Some("Edited".into()));
    importer(&env, &fake, size, 0);
    let rest = env.run("crm").await.unwrap();
    assert_eq!(rest.outcome, RunOutcome::Completed, "{style:?}");
    assert!(rest.resumed, "{style:?}");
    assert_eq!(
        emails(&env.contacts("People").await),
        want(&people),
        "{style:?}"
    );
    assert_eq!(
        first_name(&env, 2).await.as_deref(),
        Some("Edited"),
        "{style:?}"
    );
    // Each query after the first asked from the newest update time committed.
    let requests = fake.requests();
    assert!(
        requests.iter().filter(|r| r.q("since").is_some()).count() >= 2,
        "{style:?}: {:?}",
        requests.iter().map(|r| r.query.clone()).collect::<Vec<_>>()
    );
    assert!(
        requests.len() < 20,
        "{style:?}: {} requests",
        requests.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_pass_skips_nobody_when_records_change_mid_pass() {
    edited_mid_pass_skips_nobody(Style::Offset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_number_pass_skips_nobody_when_records_change_mid_pass() {
    edited_mid_pass_skips_nobody(Style::PageNumber).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_header_pass_skips_nobody_when_records_change_mid_pass() {
    edited_mid_pass_skips_nobody(Style::Link).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_url_pass_skips_nobody_when_records_change_mid_pass() {
    edited_mid_pass_skips_nobody(Style::NextUrl).await;
}

/// The connector that cannot be made safe (no sort by update time): the configuration
/// says so with a warning, the skip happens, and the full refresh recovers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsorted_offset_pass_is_warned_about_and_a_full_refresh_recovers_its_skip() {
    let people = People::new(realistic(10));
    let fake = service::start(crm(Style::Offset.paging(), by_update), &people).await;
    let env = SyncEnv::new();
    env.connector(
        "crm",
        &connector(Style::Offset, "  full_refresh_every: P1D\n"),
    );
    importer(&env, &fake, 3, 1);
    let report = load(&env.config, LoadOptions::default());
    let warnings: Vec<String> = report.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("crm.yaml:")
            && warnings[0].contains("sync.order")
            && warnings[0].contains("can skip records")
            && warnings[0].contains("full_refresh_every recovers them"),
        "{warnings:?}"
    );

    env.run("crm").await.unwrap();
    people.edit(2, |p| p.first = Some("Edited".into()));
    importer(&env, &fake, 3, 0);
    env.run("crm").await.unwrap();
    // Offset 3 now starts at person 5: person 4 shifted back a slot and was skipped.
    let stored = emails(&env.contacts("People").await);
    assert!(
        !stored.contains(&"person4@example.com".to_string()),
        "{stored:?}"
    );
    assert_eq!(stored.len(), 9);
    // The net: a full pass (scheduled by full_refresh_every; forced here) reads it.
    let full = env
        .run_with(
            "crm",
            RunOptions {
                full_refresh: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(full.pass, PassKind::FullRefresh);
    assert_eq!(emails(&env.contacts("People").await), want(&people));
}

/// `ids` share one update time; the others keep theirs.
fn with_ties(n: usize, ids: std::ops::RangeInclusive<u64>) -> Vec<Contact> {
    let mut all = realistic(n);
    let tie = all[*ids.start() as usize - 1].updated;
    for p in &mut all {
        if ids.contains(&p.id) {
            p.updated = tie;
        }
    }
    all
}

async fn ties_are_all_imported(people: Vec<Contact>, style: Style) -> usize {
    let people = People::new(people);
    let fake = service::start(crm(style.paging(), by_update), &people).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector(style, SORTED));
    importer(&env, &fake, 3, 0);
    let run = env.run("crm").await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Completed);
    assert_eq!(emails(&env.contacts("People").await), want(&people));
    fake.requests().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_across_a_page_boundary_are_all_imported() {
    // Page 1 ends inside the tie 3..=5.
    let requests = ties_are_all_imported(with_ties(7, 3..=5), Style::Offset).await;
    assert!(requests <= 8, "{requests} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_ties_than_a_page_are_all_imported_without_a_loop() {
    // Eight people share one time, pages hold three: the pass pages through the tie
    // within one query, then re-queries past it.
    for style in [Style::Offset, Style::PageNumber, Style::Link] {
        let requests = ties_are_all_imported(with_ties(10, 2..=9), style).await;
        assert!(requests <= 10, "{style:?}: {requests} requests");
    }
    // Everyone at one time: one query, paged to its end.
    let requests = ties_are_all_imported(with_ties(10, 1..=10), Style::Offset).await;
    assert!(requests <= 6, "{requests} requests");
}

/// A pass in id order over several runs: a record the pass already read is changed,
/// then one it reads later carries a newer time. The watermark stays at the pass's start
/// (minus the safety lag), so the next pass reads the first change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_behind_a_pass_in_id_order_is_read_by_the_next_pass() {
    let people = People::new(realistic(6));
    let fake = service::start(crm(Style::Offset.paging(), by_id), &people).await;
    let env = SyncEnv::new();
    env.connector(
        "crm",
        &connector(Style::Offset, "  order: id\n  full_refresh_every: P1D\n"),
    );
    importer(&env, &fake, 2, 1);
    assert_eq!(env.run("crm").await.unwrap().outcome, RunOutcome::Partial);
    // Person 1 (read) changes now; person 4 (not read yet) a second later.
    let now = Utc::now();
    people.edit_at(1, now, |p| p.first = Some("Changed".into()));
    people.edit_at(4, now + Duration::seconds(1), |p| {
        p.first = Some("Later".into())
    });
    let mut runs = 1;
    while env.run("crm").await.unwrap().outcome == RunOutcome::Partial {
        runs += 1;
        assert!(runs < 10, "the pass never completed");
    }
    assert_eq!(first_name(&env, 4).await.as_deref(), Some("Later"));
    assert_ne!(first_name(&env, 1).await.as_deref(), Some("Changed"));
    let store = env.store().await;
    let watermark = store
        .importer_state("crm")
        .await
        .unwrap()
        .checkpoint
        .watermark
        .unwrap();
    assert!(watermark < now, "{watermark} is past the pass's start");

    fake.clear();
    let next = env.run("crm").await.unwrap();
    assert_eq!(next.pass, PassKind::Incremental);
    assert!(fake.requests()[0].q("since").is_some());
    assert_eq!(first_name(&env, 1).await.as_deref(), Some("Changed"));
}

/// One record stamped in 2030 is imported, counted, and does not move the watermark: a
/// later change is still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stamped_in_the_future_does_not_hide_later_changes() {
    let people = People::new(realistic(4));
    let future = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    people.edit_at(3, future, |_| {});
    let fake = service::start(crm(Style::Offset.paging(), by_update), &people).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector(Style::Offset, SORTED));
    importer(&env, &fake, 10, 0);
    let first = env.run("crm").await.unwrap();
    // Counted each time it is read: the re-query from person 4's time reads it again.
    assert!(first.future_stamped >= 1);
    assert_eq!(emails(&env.contacts("People").await), want(&people));
    let store = env.store().await;
    let watermark = store
        .importer_state("crm")
        .await
        .unwrap()
        .checkpoint
        .watermark;
    assert_eq!(watermark, Some(people.all()[3].updated), "person 4's time");

    let changed = people.all()[3].updated + Duration::hours(1);
    people.edit_at(1, changed, |p| p.first = Some("Changed".into()));
    let second = env.run("crm").await.unwrap();
    assert_eq!(second.pass, PassKind::Incremental);
    assert_eq!(first_name(&env, 1).await.as_deref(), Some("Changed"));
    let watermark = store
        .importer_state("crm")
        .await
        .unwrap()
        .checkpoint
        .watermark;
    assert_eq!(watermark, Some(changed));
}

/// A record stamped before a run started but visible only after it (replication lag):
/// the watermark stayed the safety lag behind the pass's start, so the next run reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_visible_late_is_read_by_the_next_run() {
    let start = Utc::now();
    let mut all = realistic(3);
    for (i, p) in all.iter_mut().enumerate() {
        p.updated = start - Duration::seconds(50 - 10 * i as i64);
    }
    let late = {
        let mut p = realistic(4).pop().unwrap();
        p.updated = start - Duration::seconds(35);
        p
    };
    let people = People::new(all);
    let fake = service::start(crm(Style::Offset.paging(), by_update), &people).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector(Style::Offset, SORTED));
    importer(&env, &fake, 10, 0);
    env.run("crm").await.unwrap();
    assert_eq!(env.contacts("People").await.len(), 3);
    // It was written at start - 35 s, but the service shows it only now.
    people.add(late);
    let second = env.run("crm").await.unwrap();
    assert_eq!(second.pass, PassKind::Incremental);
    assert_eq!(emails(&env.contacts("People").await), want(&people));
}

/// The new sync keys are validated like the rest of a connector, with file, line and key.
#[test]
fn the_sync_order_keys_are_validated() {
    let env = SyncEnv::new();
    env.connector(
        "crm",
        &connector(Style::Offset, SORTED)
            .replace("    updated_at: {path: $.updated, format: rfc3339}\n", "")
            .replace(
                "  since_inclusive: true\n",
                "  safety_lag: P2D\n  tie_breaker: \"$[\"\n",
            ),
    );
    env.importer(
        "crm",
        "connector: crm\nsettings:\n  base: http://127.0.0.1:9\nlist: People\n",
    );
    let report = load(&env.config, LoadOptions::default());
    let text: Vec<String> = report.diagnostics.iter().map(|d| d.to_string()).collect();
    let text = text.join("\n");
    for expected in [
        "sync.order: `updated_asc` needs contacts.fields.updated_at",
        "sync.order: with `updated_asc`, say whether the service's updated-since filter includes the boundary",
        "sync.safety_lag: must be at most P1D",
        "sync.tie_breaker:",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
    assert!(text.contains("connectors.d/crm.yaml:"), "{text}");
    assert!(report.plan.is_none());
}
