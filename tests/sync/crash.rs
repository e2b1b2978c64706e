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
