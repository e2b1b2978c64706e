//! Several nodes (`cargo bench --bench import -- --nodes`): 2,000 importers against one
//! fake service on one PostgreSQL database, first served by one daemon, then (on a fresh
//! database) by two daemons with distinct node ids. Reported: the time until every
//! importer completed a run and the runs per second, for one node and for two, and how
//! the two nodes shared the runs (from the run history, which names each run's node).
//!
//! On a 2-core machine no speed-up is expected (both daemons, PostgreSQL and the fake
//! share the cores); what is measured is that both nodes take a share of the work.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{AssertSqlSafe, Connection as _};

use crate::checks;

const IMPORTERS: usize = 2_000;
const CONCURRENCY: usize = 4;

/// One configuration's figures.
pub struct Pass {
    pub nodes: usize,
    pub seconds: f64,
    pub runs: i64,
    /// Completed importers per node id.
    pub per_node: Vec<(String, i64)>,
}

/// What the scenario measured.
pub struct Figures {
    pub one: Pass,
    pub two: Pass,
}

struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs both passes against the fake at `base_url`.
pub async fn run(
    tributary: &Path,
    connectors: &Path,
    work: &Path,
    pg: &str,
    base_url: &str,
    token: &str,
) -> anyhow::Result<Figures> {
    let dir = work.join("nodes");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("importers.d"))?;
    crate::daemon::copy_dir(connectors, &dir.join("connectors.d"))?;
    for i in 0..IMPORTERS {
        std::fs::write(
            dir.join("importers.d").join(format!("imp-{i:05}.yaml")),
            format!(
                "connector: pipedrive_v1_bench\ncredentials:\n  api_token: {{env: BENCH_PIPEDRIVE_TOKEN}}\n\
                 settings:\n  base_url: \"{base_url}\"\nlist: Bench {}\ninterval: PT1H\npage_size: 500\n",
                i % 20
            ),
        )?;
    }
    let one = pass(tributary, &dir, pg, token, 1).await?;
    let two = pass(tributary, &dir, pg, token, 2).await?;
    Ok(Figures { one, two })
}

/// One pass on a fresh database with `nodes` daemons.
async fn pass(
    tributary: &Path,
    dir: &Path,
    pg: &str,
    token: &str,
    nodes: usize,
) -> anyhow::Result<Pass> {
    let database = format!("tributary_nodes_{}_{nodes}", std::process::id());
    checks::pg_admin(
        pg,
        &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
    )
    .await?;
    checks::pg_admin(pg, &format!("CREATE DATABASE {database}")).await?;
    let mut url = url::Url::parse(pg)?;
    url.set_path(&format!("/{database}"));
    let store_url = url.to_string();
    let result = async {
        let mut daemons = Vec::new();
        let started = Instant::now();
        for n in 1..=nodes {
            let config = dir.join(format!("node-{n}.yaml"));
            let listen = format!("127.0.0.1:{}", crate::daemon::free_port()?);
            std::fs::write(
                &config,
                format!(
                    "store: \"{store_url}\"\nconnectors_dir: connectors.d\nimporters_dir: importers.d\n\
                     listen: \"{listen}\"\nconcurrency: {CONCURRENCY}\nlog_format: text\n"
                ),
            )?;
            let log = std::fs::File::create(dir.join(format!("node-{n}-of-{nodes}.log")))?;
            let child = Command::new(tributary)
                .args(["--config", &config.to_string_lossy(), "daemon"])
                .env("BENCH_PIPEDRIVE_TOKEN", token)
                .env("TRIBUTARY_NODE", format!("node-{n}"))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting tributary daemon")?;
            daemons.push(Node { child });
        }
        let mut conn = sqlx::PgConnection::connect(&store_url).await?;
        loop {
            let done: Option<(i64,)> = sqlx::query_as(AssertSqlSafe(
                "SELECT COUNT(DISTINCT importer) FROM runs WHERE outcome = 'completed'",
            ))
            .fetch_optional(&mut conn)
            .await
            .ok()
            .flatten();
            if done.is_some_and(|(n,)| n >= IMPORTERS as i64) {
                break;
            }
            if started.elapsed() > Duration::from_secs(900) {
                bail!(
                    "{nodes} node(s): {:?} of {IMPORTERS} completed in 900 s; see {}",
                    done,
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        drop(daemons);
        let (runs,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM runs")
            .fetch_one(&mut conn)
            .await?;
        let per_node: Vec<(String, i64)> = sqlx::query_as(
            "SELECT COALESCE(node, '?'), COUNT(DISTINCT importer) FROM runs
             WHERE outcome = 'completed' GROUP BY node ORDER BY node",
        )
        .fetch_all(&mut conn)
        .await?;
        conn.close().await?;
        anyhow::Ok(Pass {
            nodes,
            seconds,
            runs,
            per_node,
        })
    }
    .await;
    let _ = checks::pg_admin(
        pg,
        &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
    )
    .await;
    result
}

/// Prints one node's figures beside two nodes'.
pub fn print(figures: &Figures) {
    println!();
    println!(
        "nodes: {IMPORTERS} importers (one page of 20 contacts each), concurrency {CONCURRENCY} per node, one PostgreSQL"
    );
    println!();
    println!("| daemons | all completed after | runs | runs/s | completed per node |");
    println!("|---:|---:|---:|---:|---|");
    for pass in [&figures.one, &figures.two] {
        let shares: Vec<String> = pass
            .per_node
            .iter()
            .map(|(node, n)| format!("{node}: {n}"))
            .collect();
        println!(
            "| {} | {:.1} s | {} | {:.1} | {} |",
            pass.nodes,
            pass.seconds,
            pass.runs,
            IMPORTERS as f64 / pass.seconds,
            shares.join(", ")
        );
    }
}
