//! A `tributary run` process killed mid-pass (SIGKILL, no chance to clean up) and run
//! again: the rerun continues from the last committed checkpoint, and every contact is
//! stored exactly once, none lost and none written twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use serde_json::json;

use crate::common::fake::FakeService;
use tributary::store::RunOutcome;

use crate::common::sync_env::{SyncEnv, emails};

const PER_PAGE: usize = 3;
const PAGES: usize = 10;
/// The first page the service holds back until the test lets it go.
const STALL_FROM: usize = 6;

fn email(n: usize) -> String {
    format!("p{n:02}@example.com")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_between_pages_resumes_from_its_checkpoint() {
    let stall = Arc::new(AtomicBool::new(true));
    let gate = stall.clone();
    let router = Router::new().route(
        "/items",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let gate = gate.clone();
            async move {
                let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                // Hold back later pages (at most 60 s) while the test kills the run.
                for _ in 0..1200 {
                    if page < STALL_FROM || !gate.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let items: Vec<serde_json::Value> = if page <= PAGES {
                    (1..=PER_PAGE)
                        .map(|i| {
                            let n = (page - 1) * PER_PAGE + i;
                            json!({"id": n, "email": email(n), "name": format!("Person {n}")})
                        })
                        .collect()
                } else {
                    vec![]
                };
                axum::Json(json!({"items": items}))
            }
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector(
        "paged",
        r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
contacts:
  request:
    path: /items
    query: {page: "{{page}}", size: "{{page_size}}"}
  pagination: {type: page_number, stop: [empty_page]}
  records: $.items[*]
  fields:
    email: $.email
    full_name: $.name
    external_id: $.id
sync:
  mode: full_refresh
"#,
    );
    env.importer(
        "pg",
        &format!(
            "connector: paged\nsettings:\n  base: \"{}\"\nlist: People\npage_size: {PER_PAGE}\npage_budget: 0\n",
            fake.base
        ),
    );
    drop(env.store().await);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("--config")
        .arg(&env.config)
        .args(["run", "pg"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run asks for the stalled page: the pages before it are fetched and
    // being (or already) committed.
    let asked_for_stalled = || {
        fake.requests()
            .iter()
            .any(|r| r.q("page") == Some(&STALL_FROM.to_string()))
    };
    for _ in 0..600 {
        if asked_for_stalled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        asked_for_stalled(),
        "the run never reached the stalled page"
    );
    // The pages before the stalled one are committed by the page writer at its own pace
    // (on a loaded machine, after the fetcher already asked for the stalled page): kill
    // once at least one is in, so that the kill falls between committed pages.
    for _ in 0..600 {
        if env.contacts("People").await.len() >= PER_PAGE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "the run was killed, not finished");

    // What the dead run committed: whole pages, in order, from the first.
    let after_kill = emails(&env.contacts("People").await);
    assert_eq!(
        after_kill.len() % PER_PAGE,
        0,
        "whole pages only: {after_kill:?}"
    );
    let committed_pages = after_kill.len() / PER_PAGE;
    assert!(
        (1..STALL_FROM).contains(&committed_pages),
        "{committed_pages} pages committed"
    );
    let first_pages: Vec<String> = (1..=after_kill.len()).map(email).collect();
    assert_eq!(after_kill, first_pages);

    // Run again at once (the store sees the lease's holder is gone); the service no longer
    // stalls.
    stall.store(false, Ordering::SeqCst);
    fake.clear();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("--config")
        .arg(&env.config)
        .args(["run", "pg"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("resumed"), "{stdout}");
    let remaining = PAGES * PER_PAGE - after_kill.len();
    assert!(
        stdout.contains(&format!(
            "created {remaining}, updated 0, unchanged 0, skipped 0"
        )),
        "every remaining contact created once, none written again: {stdout}"
    );
    // The rerun starts at the first page not committed, and asks for each page once.
    let asked: Vec<usize> = fake
        .requests()
        .iter()
        .map(|r| r.q("page").unwrap().parse().unwrap())
        .collect();
    let expected: Vec<usize> = (committed_pages + 1..=PAGES + 1).collect();
    assert_eq!(asked, expected);

    let all = env.contacts("People").await;
    let want: Vec<String> = (1..=PAGES * PER_PAGE).map(email).collect();
    assert_eq!(emails(&all), want);
    let p7 = all.iter().find(|c| c.email == email(7)).unwrap();
    assert_eq!(p7.first_name.as_deref(), Some("Person"));
    assert_eq!(p7.last_name.as_deref(), Some("7"));
    assert!(p7.lists.iter().any(|m| m.list == "People"));
    let store = env.store().await;
    let state = store.importer_state("pg").await.unwrap();
    assert_eq!(state.checkpoint.position, None, "the pass is complete");

    // The dead run does not stay "running" in the history: the next run closed it.
    let runs = store.runs("pg", 5).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].outcome, Some(RunOutcome::Completed));
    assert_eq!(runs[0].counts.created as usize, remaining);
    let dead = &runs[1];
    assert_eq!(dead.outcome, Some(RunOutcome::Failed));
    assert!(dead.finished_at.is_some());
    assert_eq!(
        dead.counts.created as usize,
        after_kill.len(),
        "the counts it had committed"
    );
    assert!(
        dead.error
            .as_deref()
            .unwrap_or("")
            .contains("stopped before the run finished"),
        "{dead:?}"
    );
}

/// Pages of the killed import.
const KILL_PAGES: usize = 30;
/// Records per page of it.
const KILL_PER_PAGE: usize = 4;

/// A page-numbered service of `KILL_PAGES` pages, 80 ms a page: every seventh record
/// has no valid email (skipped), every eleventh is marked deleted, every fifth has a
/// score that is not a number (a field failure).
fn slow_pages() -> Router {
    Router::new().route(
        "/items",
        get(move |Query(q): Query<HashMap<String, String>>| async move {
            let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            tokio::time::sleep(Duration::from_millis(80)).await;
            let items: Vec<serde_json::Value> = if page <= KILL_PAGES {
                (1..=KILL_PER_PAGE)
                    .map(|i| {
                        let n = (page - 1) * KILL_PER_PAGE + i;
                        let email = if n.is_multiple_of(7) {
                            "not an email".to_string()
                        } else {
                            email(n)
                        };
                        let score = if n.is_multiple_of(5) {
                            json!("n/a")
                        } else {
                            json!(n * 3)
                        };
                        json!({"id": n, "email": email, "name": format!("Person {n}"),
                               "score": score, "gone": n.is_multiple_of(11)})
                    })
                    .collect()
            } else {
                vec![]
            };
            axum::Json(json!({"items": items}))
        }),
    )
}

fn slow_env(base: &str) -> SyncEnv {
    slow_env_on(base, SyncEnv::new())
}

fn slow_env_on(base: &str, env: SyncEnv) -> SyncEnv {
    env.connector(
        "paged",
        r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
contacts:
  request:
    path: /items
    query: {page: "{{page}}", size: "{{page_size}}"}
  pagination: {type: page_number, stop: [empty_page]}
  records: $.items[*]
  deleted: {path: $.gone, equals: true}
  fields:
    email: $.email
    full_name: $.name
    external_id: $.id
  custom_fields:
    - {label: Score, path: $.score, type: number}
sync:
  mode: full_refresh
"#,
    );
    env.importer(
        "pg",
        &format!(
            "connector: paged\nsettings:\n  base: \"{base}\"\nlist: People\npage_size: {KILL_PER_PAGE}\npage_budget: 0\n"
        ),
    );
    env
}

fn run_command(env: &SyncEnv) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"));
    command
        .arg("--config")
        .arg(&env.config)
        .args(["run", "pg"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Whether a dump holds `table`: not the run history, the lease, the log of page commits
/// (one row per write: a killed run's writes group pages differently) or the migration
/// log.
fn dumped_table(table: &str) -> bool {
    !matches!(
        table,
        "runs" | "leases" | "page_commits" | "tributary_schema" | "_sqlx_migrations"
    )
}

/// Whether a dump holds `column` of `table`: not times or run ids, which differ between
/// two imports of the same data by nature.
fn dumped_column(table: &str, column: &str) -> bool {
    !(column.ends_with("_at")
        || column == "at"
        || column == "run_id"
        || column == "last_full_refresh"
        || (table == "email_normalization" && column != "version"))
}

/// Every table of a SQLite store as sorted text rows, without what differs between two
/// imports of the same data by nature: run ids, timestamps, the run history, the lease
/// and the log of page commits (one row per write: a killed run's writes group pages
/// differently), the migration log.
pub(crate) async fn dump(env: &SyncEnv) -> Vec<String> {
    use sqlx::{Connection as _, Row as _};
    let mut conn = sqlx::SqliteConnection::connect(&env.store_url)
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .filter(|t| dumped_table(t))
    .collect();
    assert!(tables.len() >= 10, "{tables:?}");
    let mut out = Vec::new();
    for table in tables {
        let columns: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM pragma_table_info('{table}')"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .filter(|c| dumped_column(&table, c))
        .collect();
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("COALESCE(CAST({c} AS TEXT), 'NULL')"))
            .collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM {table}",
            select.join(" || '|' || ")
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut rows: Vec<String> = rows
            .iter()
            .map(|r| format!("{table}: {}", r.get::<String, _>(0)))
            .collect();
        rows.sort();
        out.push(format!("{table} ({})", columns.join(", ")));
        out.extend(rows);
    }
    out
}

/// Issue 17: `tributary run` SIGKILLed at 12 points of one multi-page import and
/// restarted each time ends with a store equal, table by table, to an import never
/// killed (run ids and timestamps apart), and the run history's counts (the killed runs'
/// committed counts plus the last run's) add up to the unkilled run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_twelve_points_ends_equal_to_one_never_killed() {
    let fake = FakeService::start(slow_pages()).await;
    let reference = slow_env(&fake.base);
    let killed = slow_env(&fake.base);
    killed_at_twelve_points(&fake, &reference, &killed).await;
    let want = dump(&reference).await;
    assert!(want.iter().filter(|r| r.starts_with("contacts: ")).count() > 90);
    assert_eq!(dump(&killed).await, want);
}

/// The same on PostgreSQL (skipped when `TRIBUTARY_TEST_PG` is not set): each import in
/// a database of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_twelve_points_ends_equal_to_one_never_killed_on_postgresql() {
    let Ok(base) = std::env::var("TRIBUTARY_TEST_PG") else {
        eprintln!("skipped: TRIBUTARY_TEST_PG is not set");
        return;
    };
    let fake = FakeService::start(slow_pages()).await;
    let reference = slow_env_on(
        &fake.base,
        SyncEnv::with_store(tempfile::tempdir().unwrap(), fresh_database(&base).await),
    );
    let killed = slow_env_on(
        &fake.base,
        SyncEnv::with_store(tempfile::tempdir().unwrap(), fresh_database(&base).await),
    );
    killed_at_twelve_points(&fake, &reference, &killed).await;
    let want = dump_pg(&reference).await;
    let got = dump_pg(&killed).await;
    for env in [&reference, &killed] {
        drop_database(&base, &env.store_url).await;
    }
    assert!(want.iter().filter(|r| r.starts_with("contacts: ")).count() > 90);
    assert_eq!(got, want);
}

/// Drops a database [`fresh_database`] made (best effort: the server keeps it otherwise).
async fn drop_database(base: &str, url: &str) {
    use sqlx::Connection as _;
    let name = url::Url::parse(url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    if let Ok(mut conn) = sqlx::PgConnection::connect(base).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// A database of its own on the test server.
async fn fresh_database(base: &str) -> String {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base}: {e}"));
    let name = format!("crash_{}_{}", std::process::id(), rand::random::<u32>());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(base).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Every table of a PostgreSQL store as sorted text rows, like [`dump`]. Ids drawn
/// from a sequence are left out and references to them written as what they name
/// (a contact's email, a list's name, a field's tag): PostgreSQL never hands out a
/// sequence value twice, so a write a kill rolled back leaves a gap the import never
/// killed does not have.
async fn dump_pg(env: &SyncEnv) -> Vec<String> {
    use sqlx::{Connection as _, Row as _};
    let mut conn = sqlx::PgConnection::connect(&env.store_url).await.unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .filter(|t| dumped_table(t))
    .collect();
    assert!(tables.len() >= 10, "{tables:?}");
    let mut out = Vec::new();
    for table in tables {
        let columns: Vec<String> = sqlx::query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(&table)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .filter(|c| c != "id" && dumped_column(&table, c))
        .collect();
        if columns.is_empty() {
            continue;
        }
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                let value = match c.as_str() {
                    "contact_id" => {
                        "(SELECT x.email FROM contacts x WHERE x.id = t.contact_id)".to_string()
                    }
                    "list_id" => "(SELECT x.name FROM lists x WHERE x.id = t.list_id)".to_string(),
                    "field_id" => {
                        "(SELECT x.tag FROM custom_fields x WHERE x.id = t.field_id)".to_string()
                    }
                    other => format!("t.{other}"),
                };
                format!("COALESCE(CAST({value} AS TEXT), 'NULL')")
            })
            .collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM {table} t",
            select.join(" || '|' || ")
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut rows: Vec<String> = rows
            .iter()
            .map(|r| format!("{table}: {}", r.get::<String, _>(0)))
            .collect();
        rows.sort();
        out.push(format!("{table} ({})", columns.join(", ")));
        out.extend(rows);
    }
    out
}

/// Kills `tributary run` of `killed` at twelve points of its import, restarting it each
/// time until it completes, after `reference` imported the same without a kill; checks
/// the run histories. The caller compares the stores.
async fn killed_at_twelve_points(fake: &FakeService, reference: &SyncEnv, killed: &SyncEnv) {
    use rand::{Rng, SeedableRng};
    const KILLS: usize = 12;
    let out = run_command(reference).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    drop(killed.store().await);
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut kills = 0;
    let mut finished = false;
    for _ in 0..3 * KILLS {
        let asked = fake.requests().len();
        let mut child = run_command(killed)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if kills < KILLS {
            // Once this run has asked for a page, at a moment anywhere in the next
            // ~2 pages: fetching, mapping, writing, committing.
            for _ in 0..400 {
                if fake.requests().len() > asked || child.try_wait().unwrap().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..160))).await;
            if child.try_wait().unwrap().is_none() {
                child.start_kill().unwrap();
                child.wait().await.unwrap();
                kills += 1;
                continue;
            }
        }
        let status = child.wait().await.unwrap();
        assert!(status.success());
        finished = true;
        break;
    }
    assert!(finished, "the import never finished");
    assert!(kills >= 10, "only {kills} kills");

    // The history: every killed run closed with what it committed; together with the
    // last run, exactly the counts of the run never killed.
    let reference_runs = reference.store().await.runs("pg", 5).await.unwrap();
    assert_eq!(reference_runs.len(), 1);
    let one = &reference_runs[0].counts;
    assert_eq!(
        (one.pages, one.fetched, one.skipped, one.deleted),
        (
            KILL_PAGES as u64 + 1,
            (KILL_PAGES * KILL_PER_PAGE) as u64,
            // A deleted marker wins over a bad email (77).
            (1..=KILL_PAGES * KILL_PER_PAGE)
                .filter(|n| n % 7 == 0 && n % 11 != 0)
                .count() as u64,
            (KILL_PAGES * KILL_PER_PAGE / 11) as u64
        )
    );
    let runs = killed.store().await.runs("pg", 100).await.unwrap();
    assert_eq!(runs.len(), kills + 1);
    assert!(runs.iter().all(|r| r.finished_at.is_some()));
    assert_eq!(runs[0].outcome, Some(RunOutcome::Completed));
    let mut sum = tributary::store::RunCounts::default();
    for run in &runs {
        let c = &run.counts;
        sum.pages += c.pages;
        sum.fetched += c.fetched;
        sum.created += c.created;
        sum.updated += c.updated;
        sum.unchanged += c.unchanged;
        sum.skipped += c.skipped;
        sum.field_failures += c.field_failures;
        sum.deleted += c.deleted;
    }
    assert_eq!(&sum, one, "{runs:#?}");
    println!(
        "kill -9: {kills} kills of one import of {KILL_PAGES} pages, restarted each time: store equal to an import never killed, history counts add up"
    );
}
