//! Several daemons on one PostgreSQL store: importers shared out by lease, a paused
//! node's commit refused, a killed node's importers taken over once its leases expire;
//! and SQLite refusing a second daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection as _};

use super::process::{Daemon, cli, free_port};
use super::{Crm, connector, crm, importer};
use crate::common::fake::{FakeService, Person, db, people};
use crate::common::sync_env::SyncEnv;

const IMPORTERS: usize = 20;
const PEOPLE: usize = 100;

/// Importer `k`'s people: emails of its own, so every list's contacts are countable.
fn people_of(k: usize) -> Vec<Person> {
    people(PEOPLE)
        .into_iter()
        .map(|mut p| {
            p.email = Some(format!("imp{k}-person{}@example.com", p.id));
            p
        })
        .collect()
}

/// A node's config tree: the same connector and importers as every node, its own
/// `tributary.yaml` (its listener), one shared PostgreSQL store.
fn node_tree(store_url: &str, fakes: &[FakeService]) -> (SyncEnv, String) {
    let env = SyncEnv::with_store(tempfile::tempdir().unwrap(), store_url.to_string());
    let listen = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &env.config,
        format!("store: \"{store_url}\"\nlisten: {listen}\nconcurrency: 2\nlease: PT10S\n"),
    )
    .unwrap();
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    for (k, fake) in fakes.iter().enumerate() {
        env.importer(
            &format!("imp{k:02}"),
            &importer(
                &fake.base,
                &format!("L{k:02}"),
                &key,
                "page_size: 5\npage_budget: 0\ninterval: PT6H\n",
            ),
        );
    }
    (env, listen)
}

/// Completed importers per node, from the run history the nodes recorded.
async fn completed_by_node(admin: &mut sqlx::PgConnection, schema: &str) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(format!(
        "SELECT node, COUNT(DISTINCT importer) FROM {schema}.runs
         WHERE outcome = 'completed' GROUP BY node"
    )))
    .fetch_all(admin)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// The importers a node holds a live lease of, with the lease's token and expiry.
async fn held_by(
    admin: &mut sqlx::PgConnection,
    schema: &str,
    node: &str,
) -> Vec<(String, i64, DateTime<Utc>)> {
    sqlx::query_as::<_, (String, i64, DateTime<Utc>)>(AssertSqlSafe(format!(
        "SELECT importer, fencing_token, expires_at FROM {schema}.leases
         WHERE owner LIKE '{node}:%' AND expires_at > clock_timestamp()"
    )))
    .fetch_all(admin)
    .await
    .unwrap()
}

async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    logs: &[&Daemon],
    mut check: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            logs.iter()
                .map(|d| d.log())
                .collect::<Vec<_>>()
                .join("\n-----\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two daemons with distinct node ids share 20 importers on one PostgreSQL store. Once
/// each has completed five, one is paused (SIGSTOP) past its lease while fetching: the
/// other takes its work over, and when the paused one continues its commit is refused
/// and logged. Then it is killed (SIGKILL) mid-run: the survivor takes its importers over
/// only once their leases expire (the nodes share a host, but the dead-process shortcut
/// is for a node's own processes). Every importer completes; the commits the store
/// recorded never interleave two leases of one importer; nothing is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_importers_and_take_over_a_dead_or_paused_nodes_work() {
    let base = std::env::var("TRIBUTARY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is needed: {e}"));
    let schema = format!("nodes_{}_{}", std::process::id(), rand::random::<u32>());
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let store_url = format!("{base}{separator}options[search_path]={schema}");

    let mut services = Vec::new();
    let mut fakes = Vec::new();
    for k in 0..IMPORTERS {
        let state = Crm::new(db(people_of(k)));
        state.behaviour.lock().unwrap().delay = Duration::from_millis(200);
        fakes.push(crm(state.clone()).await);
        services.push(state);
    }
    let (env_a, listen_a) = node_tree(&store_url, &fakes);
    let (env_b, listen_b) = node_tree(&store_url, &fakes);
    let mut a = Daemon::start_with_env(&env_a, &listen_a, &[("TRIBUTARY_NODE", "node-a")]).await;
    let b = Daemon::start_with_env(&env_b, &listen_b, &[("TRIBUTARY_NODE", "node-b")]).await;

    // Both work, and say who runs what.
    let status = a.status().await;
    assert_eq!(status["daemon"]["node"], "node-a", "{status:#}");
    b.until("node-b to run an importer it names as its own", |s| {
        s["importers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["phase"] == "running" && i["node"] == "node-b")
    })
    .await;
    let metrics = b.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"tributary_node_info{node="node-b"} 1"#),
        "{metrics}"
    );
    let (code, table, _) = cli(&env_b, &["status"]).await;
    assert_eq!(code, 0);
    assert!(table.lines().next().unwrap().contains("NODE"), "{table}");
    assert!(
        table.lines().any(|l| l.contains("node-a")) && table.lines().any(|l| l.contains("node-b")),
        "both nodes hold importers:\n{table}"
    );

    // Each node completes five before anything happens to either.
    until(
        "each node to complete five importers",
        Duration::from_secs(90),
        &[&a, &b],
        || {
            let schema = schema.clone();
            let base = base.clone();
            async move {
                let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
                let done = completed_by_node(&mut conn, &schema).await;
                done.get("node-a").copied().unwrap_or(0) >= 5
                    && done.get("node-b").copied().unwrap_or(0) >= 5
            }
        },
    )
    .await;

    // Node A is paused while one of its requests is in flight, for longer than its lease.
    let status = a.status().await;
    let paused_importer = loop {
        let running: Vec<String> = a.status().await["importers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["phase"] == "running")
            .map(|i| i["importer"].as_str().unwrap().to_string())
            .collect();
        let fetching = running.iter().find(|id| {
            let k: usize = id.trim_start_matches("imp").parse().unwrap();
            services[k].in_flight.load(Ordering::SeqCst) > 0
        });
        if let Some(id) = fetching {
            a.signal(libc::SIGSTOP);
            break id.clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let paused_at = Utc::now();
    let paused_leases = held_by(&mut admin, &schema, "node-a").await;
    assert!(
        paused_leases.iter().any(|(id, ..)| *id == paused_importer),
        "{paused_leases:?}"
    );
    drop(status);
    // Services slow down meanwhile, so that work is left for node A when it continues.
    for service in &services {
        service.behaviour.lock().unwrap().delay = Duration::from_millis(800);
    }
    tokio::time::sleep(Duration::from_secs(13)).await;
    a.signal(libc::SIGCONT);
    until(
        "the paused node to say its commit was refused",
        Duration::from_secs(30),
        &[&a, &b],
        || {
            let log = a.log();
            async move { log.contains("Commit refused") }
        },
    )
    .await;
    // The refusal names one of the importers it was running.
    let log = a.log();
    let refused = log.lines().find(|l| l.contains("Commit refused")).unwrap();
    assert!(
        paused_leases
            .iter()
            .any(|(id, ..)| refused.contains(&format!("importer={id}"))),
        "{refused}"
    );
    let store = env_b.store().await;
    for (importer, token, _) in &paused_leases {
        let late: Vec<_> = store
            .commits(importer)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.fencing_token == *token && c.committed_at >= paused_at)
            .collect();
        assert!(
            late.is_empty(),
            "a commit under the paused node's lease after the pause: {late:?}"
        );
    }

    for service in &services {
        service.behaviour.lock().unwrap().delay = Duration::from_millis(200);
    }

    // Node A runs again; it is killed in the middle of a run.
    // (a run of the paused one may still be ending: only a run holding a live lease counts)
    let status_a: Value = loop {
        let held: Vec<String> = held_by(&mut admin, &schema, "node-a")
            .await
            .into_iter()
            .map(|(id, ..)| id)
            .collect();
        let status = a.status().await;
        let running = status["importers"].as_array().unwrap().iter().any(|i| {
            i["phase"] == "running"
                && i["progress"]["pages"].as_u64() >= Some(2)
                && held.iter().any(|id| i["importer"] == id.as_str())
        });
        if running {
            break status;
        }
        assert!(
            Utc::now() - paused_at < chrono::Duration::seconds(90),
            "node A did not run again: {status:#}\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    a.child.start_kill().unwrap();
    let killed_at = Utc::now();
    a.wait_exit(Duration::from_secs(10)).await;
    let orphaned = held_by(&mut admin, &schema, "node-a").await;
    assert!(
        !orphaned.is_empty(),
        "node A held leases when it was killed: {status_a:#}"
    );

    // The survivor completes everything.
    until(
        "every importer to complete",
        Duration::from_secs(120),
        &[&a, &b],
        || {
            let schema = schema.clone();
            let base = base.clone();
            async move {
                let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
                let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT COUNT(DISTINCT importer) FROM {schema}.runs
                     WHERE outcome = 'completed'"
                )))
                .fetch_one(&mut conn)
                .await
                .unwrap();
                n == IMPORTERS as i64
            }
        },
    )
    .await;

    // Taken over by expiry: the survivor's first commit of each orphaned importer comes
    // after the dead node's lease ran out, never at once.
    for (importer, token, expires_at) in &orphaned {
        let commits = store.commits(importer).await.unwrap();
        let first_after = commits
            .iter()
            .find(|c| c.fencing_token > *token)
            .unwrap_or_else(|| panic!("{importer} was taken over: {commits:?}"));
        assert_eq!(first_after.node, "node-b");
        assert!(
            first_after.committed_at >= *expires_at,
            "{importer} taken over at {} before its lease expired at {expires_at} (killed at {killed_at})",
            first_after.committed_at
        );
    }

    // No two leases ever interleaved: per importer, commits in commit order carry
    // non-decreasing fencing tokens, and each token belongs to one node.
    for k in 0..IMPORTERS {
        let id = format!("imp{k:02}");
        let commits = store.commits(&id).await.unwrap();
        assert!(!commits.is_empty(), "{id} has commits");
        let mut owners: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        for pair in commits.windows(2) {
            assert!(
                pair[0].fencing_token <= pair[1].fencing_token,
                "{id}: commit under token {} after token {}: {commits:?}",
                pair[1].fencing_token,
                pair[0].fencing_token
            );
        }
        for c in &commits {
            owners
                .entry(c.fencing_token)
                .or_default()
                .insert(c.node.clone());
        }
        assert!(
            owners.values().all(|nodes| nodes.len() == 1),
            "{id}: one token, two nodes: {owners:?}"
        );
    }

    // Nothing lost or duplicated; both nodes did their share.
    for k in 0..IMPORTERS {
        let contacts = env_b.contacts(&format!("L{k:02}")).await;
        let emails: BTreeSet<String> = contacts.iter().map(|c| c.email.clone()).collect();
        let expected: BTreeSet<String> =
            people_of(k).into_iter().map(|p| p.email.unwrap()).collect();
        assert_eq!(emails, expected, "list L{k:02}");
        assert_eq!(contacts.len(), PEOPLE);
    }
    assert_eq!(env_b.all_contacts().await.len(), IMPORTERS * PEOPLE);
    let done = completed_by_node(&mut admin, &schema).await;
    assert!(
        done.get("node-a").copied().unwrap_or(0) >= 5
            && done.get("node-b").copied().unwrap_or(0) >= 5,
        "{done:?}"
    );

    drop(b);
    drop(store);
    let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await;
}

/// A second daemon on the same SQLite file is refused with a message saying why and
/// what to do; the first goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_one_sqlite_file_is_refused() {
    let fake = crm(Crm::new(db(people(3)))).await;
    let (env, listen) = super::process::env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer("imp", &importer(&fake.base, "L", &key, ""));
    let mut first = Daemon::start(&env, &listen).await;

    let second = SyncEnv::with_store(tempfile::tempdir().unwrap(), env.store_url.clone());
    std::fs::write(
        &second.config,
        format!(
            "store: \"{}\"\nlisten: 127.0.0.1:{}\n",
            env.store_url,
            free_port()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("--config")
        .arg(&second.config)
        .arg("daemon")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let pid = first.child.id().unwrap();
    assert!(
        stderr.contains(&format!(
            "another tributary daemon (pid {pid}) already serves the SQLite store"
        )) && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    assert!(first.get("/healthz").await.is_some());
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(20)).await, 0);
    // Once it stopped, a daemon starts on the file again.
    let mut again = Daemon::start(&env, &listen).await;
    again.signal(libc::SIGTERM);
    assert_eq!(again.wait_exit(Duration::from_secs(20)).await, 0);
}
