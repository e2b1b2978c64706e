//! Finding 5: a 200 MB value took the process to 1.4 GB and was stored whole. Now a body
//! is read only up to `limits.max_response_bytes` (declared or streamed), a record with a
//! value over `limits.max_value_bytes` is skipped and counted, and a page with more than
//! `limits.max_records_per_page` records fails the run, each with an error naming the key.

use serde_json::json;
use tributary::engine::{RunError, RunOptions};

use crate::common::hostile::{HostileService, Reply};
use crate::common::sync_env::{SyncEnv, emails};

const CONNECTOR: &str = r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
timeouts: {request: PT20S}
contacts:
  request:
    path: /people
  pagination: {type: none}
  records: $.people[*]
  fields:
    email: $.email
    first_name: $.first
    external_id: $.id
  custom_fields:
    - {label: Notes, path: $.notes, type: text}
sync: {mode: full_refresh}
"#;

const LIMITS: &str =
    "limits: {max_response_bytes: 100000, max_value_bytes: 1000, max_records_per_page: 10}\n";

fn env_for(base: &str) -> SyncEnv {
    let env = SyncEnv::new();
    std::fs::write(
        &env.config,
        format!("store: \"{}\"\n{LIMITS}", env.store_url),
    )
    .unwrap();
    env.connector("capped", CONNECTOR);
    env.importer(
        "c",
        &format!("connector: capped\nsettings:\n  base: \"{base}\"\nlist: People\n"),
    );
    env
}

async fn run(env: &SyncEnv) -> Result<tributary::engine::RunSummary, RunError> {
    let limits = env.plan().daemon.limits;
    env.run_with(
        "c",
        RunOptions {
            limits,
            ..RunOptions::default()
        },
    )
    .await
}

fn failure(result: Result<tributary::engine::RunSummary, RunError>) -> String {
    match result {
        Err(RunError::Failed { message, .. }) => message,
        other => panic!("expected a failed run, got {other:?}"),
    }
}

fn person(i: usize, notes: &str) -> serde_json::Value {
    json!({"id": i, "email": format!("p{i}@example.com"), "first": format!("P{i}"), "notes": notes})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_value_is_skipped_and_counted_never_stored() {
    let huge = "x".repeat(5_000);
    let page = json!({"people": [person(1, "short"), person(2, &huge), person(3, "")]});
    let fake = HostileService::start(move |_| Reply::json(200, &page)).await;
    let env = env_for(&fake.base);
    let summary = run(&env).await.unwrap();
    assert_eq!(summary.counts.created, 2, "{summary:?}");
    assert_eq!(summary.counts.skipped, 1, "{summary:?}");
    assert_eq!(
        emails(&env.contacts("People").await),
        ["p1@example.com", "p3@example.com"]
    );
    let store = env.store().await;
    let events = store.change_events(0, 1000).await.unwrap();
    assert!(
        events
            .iter()
            .all(|e| !format!("{e:?}").contains(&huge[..2000])),
        "no change event carries the value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_fails_the_request_unread() {
    // Declared too long.
    let padded = format!(
        "{{\"people\": [{}], \"pad\": \"{}\"}}",
        person(1, "a"),
        " ".repeat(200_000)
    );
    let fake = HostileService::start(move |_| Reply::status(200, &[], &padded)).await;
    let env = env_for(&fake.base);
    let message = failure(run(&env).await);
    assert!(
        message.contains("larger than 100000 bytes (limits.max_response_bytes"),
        "{message}"
    );
    assert!(env.all_contacts().await.is_empty());
    assert_eq!(
        fake.requests().len(),
        1,
        "a too-large body is not fetched again"
    );

    // Endless, without a length: reading stops at the cap.
    let endless = HostileService::start(|_| Reply::Endless {
        prefix: b"{\"people\": [".to_vec(),
        chunk: vec![b' '; 16 * 1024],
        pause: None,
    })
    .await;
    let env = env_for(&endless.base);
    let message = failure(run(&env).await);
    assert!(message.contains("limits.max_response_bytes"), "{message}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = endless.endless_bytes();
    assert!(
        sent < 100_000 + 8 * 1024 * 1024,
        "the client stopped reading near the cap; the service wrote {sent} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_with_too_many_records_fails_the_run() {
    let page = json!({"people": (1..=11).map(|i| person(i, "")).collect::<Vec<_>>()});
    let fake = HostileService::start(move |_| Reply::json(200, &page)).await;
    let env = env_for(&fake.base);
    let message = failure(run(&env).await);
    assert!(
        message.contains("a page of 11 records")
            && message.contains("limits.max_records_per_page (10)"),
        "{message}"
    );
    assert!(env.all_contacts().await.is_empty());
}

#[test]
fn a_zero_limit_is_a_config_error_naming_the_key() {
    let env = SyncEnv::new();
    std::fs::write(&env.config, "limits:\n  max_value_bytes: 0\n").unwrap();
    let diagnostics = tributary::config::load::load_plan(&env.config).unwrap_err();
    let text: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("tributary.yaml:2:") && t.contains("limits.max_value_bytes")),
        "{text:?}"
    );
}

#[test]
fn retry_limits_are_checked_with_their_line() {
    let env = SyncEnv::new();
    std::fs::write(
        &env.config,
        "limits:\n  retry_budget: PT0S\n  max_value_bytes: 10\n",
    )
    .unwrap();
    let diagnostics = tributary::config::load::load_plan(&env.config).unwrap_err();
    let text: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|t| t.contains("tributary.yaml:2:")
            && t.contains("limits.retry_budget")
            && t.contains("longer than zero")),
        "{text:?}"
    );

    std::fs::write(
        &env.config,
        "limits:\n  retry_budget: PT30S\n  max_wait: PT5M\n",
    )
    .unwrap();
    let diagnostics = tributary::config::load::load_plan(&env.config).unwrap_err();
    let text: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|t| t.contains("tributary.yaml:3:")
            && t.contains("limits.max_wait")
            && t.contains("longer than limits.retry_budget (30s)")),
        "{text:?}"
    );

    // Unwritten, max_wait follows a short budget instead of contradicting it.
    std::fs::write(&env.config, "limits:\n  retry_budget: PT5S\n").unwrap();
    let limits = env.plan().daemon.limits;
    assert_eq!(limits.retry_budget, std::time::Duration::from_secs(5));
    assert_eq!(limits.max_wait, std::time::Duration::from_secs(5));
}
