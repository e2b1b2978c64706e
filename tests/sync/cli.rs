//! `tributary run` as a person uses it: the real binary, its output and exit codes, and
//! two runs of one importer at once.

use std::collections::HashMap;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use serde_json::json;

use super::fakes::{self, TOKEN};
use crate::common::fake::{FakeService, db, people};
use crate::common::sync_env::{SyncEnv, emails};

async fn tributary(env: &SyncEnv, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn pipedrive_env(base: &str, extra: &str) -> SyncEnv {
    let env = SyncEnv::new();
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    env.importer(
        "pd",
        &format!(
            "connector: pipedrive\ncredentials:\n  api_token: {}\nsettings:\n  base: \"{base}\"\nlist: People\n{extra}",
            env.secret("pd", TOKEN)
        ),
    );
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_a_summary() {
    let fake = FakeService::start(fakes::pipedrive(db(people(5)))).await;
    let env = pipedrive_env(&fake.base, "page_size: 2\n");
    let out = tributary(&env, &["run", "pd"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("importer pd: pass complete"), "{stdout}");
    assert!(
        stdout
            .contains("pages 3, fetched 5, created 5, updated 0, unchanged 0, skipped 0, duration"),
        "{stdout}"
    );
    assert_eq!(env.contacts("People").await.len(), 5);

    let again = tributary(&env, &["run", "pd"]).await;
    assert!(
        text(&again.stdout).contains("created 0, updated 0, unchanged 1"),
        "{}",
        text(&again.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_request_and_contacts_and_writes_nothing() {
    let fake = FakeService::start(fakes::pipedrive(db(people(5)))).await;
    let env = pipedrive_env(&fake.base, "page_size: 2\n");
    let out = tributary(&env, &["run", "pd", "--dry-run"]).await;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("GET {}/api/v2/persons?limit=2", fake.base)),
        "{stdout}"
    );
    assert!(stdout.contains("x-api-token: ****"), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    assert!(stdout.contains("contacts it would write: 2"), "{stdout}");
    assert!(stdout.contains("person1@example.com"), "{stdout}");
    assert!(stdout.contains("%PIPEDRIVE_TIER%: silver"), "{stdout}");
    assert!(stdout.contains("dry run, nothing written"), "{stdout}");
    assert_eq!(fake.count(), 1);
    let store = env.store().await;
    assert!(env.all_contacts().await.is_empty());
    assert_eq!(
        store.importer_state("pd").await.unwrap().checkpoint,
        Default::default()
    );
    assert!(store.runs("pd", 5).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_importer_and_a_bad_config_are_reported() {
    let env = SyncEnv::new();
    let out = tributary(&env, &["run", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no importer `nope`"),
        "{}",
        text(&out.stderr)
    );
    env.importer("broken", "connector: missing\nlist: X\n");
    let out = tributary(&env, &["run", "broken"]).await;
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("importers.d/broken.yaml"),
        "{}",
        text(&out.stderr)
    );
}

/// Two `tributary run` processes of one importer at once: the second, started while the
/// first is in the middle of its pass, refuses (exit 75) without fetching or writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_never_both_write() {
    let calls = Arc::new(AtomicUsize::new(0));
    let second_done = Arc::new(AtomicBool::new(false));
    let counter = calls.clone();
    let gate = second_done.clone();
    let router = Router::new().route(
        "/items",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let counter = counter.clone();
            let gate = gate.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                // The first run stays in the middle of its pass until the second one has
                // come and gone (at most 30 s).
                for _ in 0..600 {
                    if page < 2 || gate.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                let data: Vec<serde_json::Value> = if page <= 4 {
                    vec![json!({"email": format!("p{page}@example.com")})]
                } else {
                    vec![]
                };
                axum::Json(json!({"data": data}))
            }
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector(
        "slow",
        r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
contacts:
  request:
    path: /items
    query: {page: "{{page}}"}
  pagination: {type: page_number, stop: [empty_page]}
  records: $.data[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
"#,
    );
    env.importer(
        "sl",
        &format!(
            "connector: slow\nsettings:\n  base: \"{}\"\nlist: People\n",
            fake.base
        ),
    );
    // Create the store first so both processes open an existing one.
    drop(env.store().await);
    let first = tokio::spawn({
        let config = env.config.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
                .arg("--config")
                .arg(config)
                .args(["run", "sl"])
                .output()
                .await
                .unwrap()
        }
    });
    // Once the first run fetches, it holds the lease.
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let b = tributary(&env, &["run", "sl"]).await;
    second_done.store(true, Ordering::SeqCst);
    let a = first.await.unwrap();
    assert_eq!(
        a.status.code(),
        Some(0),
        "{} {}",
        text(&a.stdout),
        text(&a.stderr)
    );
    assert_eq!(
        b.status.code(),
        Some(75),
        "{} {}",
        text(&b.stdout),
        text(&b.stderr)
    );
    let refused = &b;
    assert!(
        text(&refused.stderr).contains("being run by another process"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5, "only one run fetched");
    assert_eq!(
        emails(&env.contacts("People").await),
        vec![
            "p1@example.com",
            "p2@example.com",
            "p3@example.com",
            "p4@example.com"
        ]
    );
    let runs = env.store().await.runs("sl", 5).await.unwrap();
    assert_eq!(runs.len(), 1, "the refused run is not in the history");
    assert_eq!(runs[0].counts.created, 4);
}
