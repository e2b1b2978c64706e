//! Opening a store that cannot be reached fails within seconds, with the real cause and
//! the URL with its password masked (issue 12): the store's error carries the cause and
//! the masked URL, and the CLI prints both, each once.

use std::time::{Duration, Instant};

use tributary::store::{self, KeySource, StoreError, StoreOptions};

use super::harness::{TEST_KEY, pg_base_url};

const PASSWORD: &str = "s3cret-Pa55word";

fn options() -> StoreOptions {
    StoreOptions {
        encryption_key: Some(KeySource::Bytes(TEST_KEY.to_vec())),
        ..StoreOptions::default()
    }
}

/// Opens `url`, expecting `Unreachable` within 10 s; returns the message, the masked URL
/// it carries checked.
async fn refused_quickly(url: &str) -> String {
    let started = Instant::now();
    let error = store::open(url, options()).await.err().expect("refused");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}: {error}");
    let StoreError::Unreachable { url: shown, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(!shown.contains(PASSWORD), "password shown: {shown}");
    assert!(shown.contains(":****@"), "{shown}");
    let message = error.to_string();
    assert!(!message.contains(PASSWORD), "password shown: {message}");
    message
}

/// What `tributary contacts` prints for a store `url`, within 10 s.
fn cli_refusal(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tributary.yaml");
    std::fs::write(&config, format!("store: \"{url}\"\n")).unwrap();
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("--config")
        .arg(&config)
        .arg("contacts")
        .env_remove("TRIBUTARY_CONFIG")
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains(PASSWORD), "password shown: {stderr}");
    assert_eq!(
        stderr.matches(":****@").count(),
        1,
        "the url once: {stderr}"
    );
    stderr
}

#[tokio::test]
async fn an_unreachable_postgres_is_reported_with_its_cause_in_seconds() {
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let message = refused_quickly(&format!("postgres://crm:{PASSWORD}@127.0.0.1:{port}/crm")).await;
    assert!(
        message.to_lowercase().contains("connection refused"),
        "{message}"
    );
    let stderr = cli_refusal(&format!("postgres://crm:{PASSWORD}@127.0.0.1:{port}/crm"));
    assert!(
        stderr.contains(&format!("postgres://crm:****@127.0.0.1:{port}/crm")),
        "{stderr}"
    );
    assert_eq!(
        stderr.to_lowercase().matches("connection refused").count(),
        1,
        "the cause once: {stderr}"
    );

    // A server that accepts and never answers: the wait is bounded.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            kept.push(socket);
        }
    });
    let message = refused_quickly(&format!("postgres://crm:{PASSWORD}@127.0.0.1:{port}/crm")).await;
    assert!(message.contains("no answer within"), "{message}");
    held.abort();
}

#[tokio::test]
async fn a_missing_postgres_database_is_named_in_the_error() {
    let mut url = url::Url::parse(&pg_base_url()).unwrap();
    url.set_path("/tributary_no_such_database");
    url.set_password(Some(PASSWORD)).unwrap();
    let message = refused_quickly(url.as_str()).await;
    assert!(
        message.contains("database \"tributary_no_such_database\" does not exist"),
        "{message}"
    );
}
