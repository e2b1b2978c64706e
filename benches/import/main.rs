//! `cargo bench --bench import`: Tributary's import speed against the physical limit
//! (issue #5).
//!
//! One binary, three roles, each in its own process: the harness (default), the fake
//! Pipedrive service (`--role fake`) and the hand-written reference pipeline (`--role
//! reference`). The harness re-executes itself for the other two roles, so the fake and
//! the reference are built with the crate's dependencies by `cargo bench` alone and never
//! become part of the product binary or a separate target to maintain. Tributary itself
//! runs as its real release binary (`CARGO_BIN_EXE_tributary`, built by `cargo bench`
//! with the bench profile) through a real connector spec in `benches/fixtures/pipedrive`.
//!
//! `cargo test --all-targets` builds this bench in test mode and runs it without
//! `--bench`: it then exits at once, so the suite never pays for a benchmark.
//!
//! Options (after `--`): `--n 10000,100000` contact counts, `--large` adds 1,000,000,
//! `--stores sqlite,postgres`, `--pg URL` (default `$TRIBUTARY_TEST_PG`), `--tributary
//! PATH` (another binary), `--full-refresh-flag FLAG`, `--reference-only`, `--keep`
//! (keep the work directory), `--repeat K` (run every series K times; the table shows each
//! scenario's median run), `--daemon` (only the daemon at scale: 10,000 importers, idle
//! cost, 1,000 due at once; see `daemon.rs`), `--nodes` (2,000 importers on one daemon,
//! then on two sharing one PostgreSQL database; see `nodes.rs`).

#![recursion_limit = "256"]

mod checks;
mod daemon;
mod data;
mod fake;
mod measure;
mod nodes;
mod reference;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::checks::{CheckDb, Scenario};
use crate::measure::Usage;

/// The issue's figures, printed beside ours so a slow machine or reference is visible.
const ISSUE_REFERENCE_RATE: f64 = 72_800.0;
const FASTEST_PEER_RATE: f64 = 5_073.0;
const TOKEN: &str = "bench-token-5b2f";
const PERCENT_CHANGED: u32 = 1;

fn main() {
    let args = std::env::args().skip(1).collect::<Vec<_>>();
    let result = match args.first().map(String::as_str) {
        Some("--role") => role(&args[1..]),
        _ if args.iter().any(|a| a == "--bench") => harness(&args),
        _ => {
            println!("import bench: built; run it with `cargo bench --bench import`");
            Ok(())
        }
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn flag_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn role(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("fake") => fake::run(fake::FakeOptions {
            n: flag_value(args, "--n")
                .unwrap_or_else(|| "10000".into())
                .parse()?,
            port: flag_value(args, "--port")
                .unwrap_or_else(|| "0".into())
                .parse()?,
            token: flag_value(args, "--token").unwrap_or_else(|| TOKEN.into()),
        }),
        Some("reference") => reference::run(reference::ReferenceOptions {
            base_url: flag_value(args, "--base-url").context("--base-url")?,
            token: flag_value(args, "--token").unwrap_or_else(|| TOKEN.into()),
            store: flag_value(args, "--store").context("--store")?,
        }),
        other => bail!("unknown role {other:?}"),
    }
}

struct Options {
    ns: Vec<u64>,
    stores: Vec<String>,
    pg: String,
    tributary: Option<PathBuf>,
    /// How `run` is told to make a full pass; `None`: ask `run --help`, else use a
    /// connector whose sync mode is `full_refresh`.
    full_refresh_flag: Option<String>,
    keep: bool,
    work: PathBuf,
    /// Runs of every series; the table shows each scenario's median run.
    repeat: usize,
}

fn options(args: &[String]) -> anyhow::Result<Options> {
    let mut ns = flag_value(args, "--n")
        .unwrap_or_else(|| "10000,100000".into())
        .split(',')
        .map(|s| s.trim().replace('_', "").parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .context("--n takes comma-separated counts")?;
    if args.iter().any(|a| a == "--large") && !ns.contains(&1_000_000) {
        ns.push(1_000_000);
    }
    let stores = flag_value(args, "--stores")
        .unwrap_or_else(|| "sqlite,postgres".into())
        .split(',')
        .map(str::to_string)
        .collect::<Vec<_>>();
    for store in &stores {
        if store != "sqlite" && store != "postgres" {
            bail!("unknown store {store}: sqlite or postgres");
        }
    }
    let pg = flag_value(args, "--pg")
        .or_else(|| std::env::var("TRIBUTARY_TEST_PG").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let tributary = if args.iter().any(|a| a == "--reference-only") {
        None
    } else {
        Some(
            flag_value(args, "--tributary")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tributary"))),
        )
    };
    let work = std::env::temp_dir().join(format!("tributary-bench-{}", std::process::id()));
    Ok(Options {
        ns,
        stores,
        pg,
        tributary,
        full_refresh_flag: flag_value(args, "--full-refresh-flag"),
        keep: args.iter().any(|a| a == "--keep"),
        work,
        repeat: flag_value(args, "--repeat")
            .map(|r| r.parse::<usize>())
            .transpose()
            .context("--repeat takes a count")?
            .unwrap_or(1)
            .max(1),
    })
}

/// One line of the table.
#[derive(Clone)]
struct Row {
    scenario: Scenario,
    store: String,
    n: u64,
    /// Records the fake served during the run.
    records: u64,
    usage: Usage,
    fake_cpu: f64,
    /// Contacts per second: records served / wall seconds.
    rate: f64,
    /// `rate` over the reference's rate on the same store and N (first import only).
    ratio: Option<f64>,
    check: Result<String, String>,
}

/// The fake service, killed when dropped.
struct FakeService {
    child: Child,
    base_url: String,
}

impl FakeService {
    fn start(n: u64, log: &Path) -> anyhow::Result<FakeService> {
        let err = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--role", "fake", "--n", &n.to_string(), "--token", TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .context("starting the fake service")?;
        let stdout = child.stdout.take().context("fake stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow!("fake service did not start: {}", measure::tail(log, 5)))?;
        Ok(FakeService {
            base_url: format!("http://{addr}"),
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let response = reqwest::Client::new()
            .request(method, format!("{}/_control/{path}", self.base_url))
            .send()
            .await?
            .error_for_status()?;
        let text = response.text().await?;
        Ok(if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }
}

impl Drop for FakeService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn harness(args: &[String]) -> anyhow::Result<()> {
    let options = options(args)?;
    std::fs::create_dir_all(&options.work)?;
    let work = &options.work;
    if args.iter().any(|a| a == "--daemon") {
        // 10,000 importers.
        return daemon_harness(
            &options,
            "--daemon",
            async |tributary, connectors, base| {
                daemon::run(tributary, connectors, work, base, TOKEN).await
            },
            daemon::print,
        );
    }
    if args.iter().any(|a| a == "--nodes") {
        // 2,000 importers, one daemon then two on PostgreSQL (`--pg`).
        let pg = &options.pg;
        return daemon_harness(
            &options,
            "--nodes",
            async |tributary, connectors, base| {
                nodes::run(tributary, connectors, work, pg, base, TOKEN).await
            },
            nodes::print,
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(run_all(&options))?;
    print_report(&options, &rows);
    if !options.keep {
        let _ = std::fs::remove_dir_all(&options.work);
    } else {
        println!("work directory kept: {}", options.work.display());
    }
    if rows.iter().any(|r| r.check.is_err()) {
        bail!("some scenarios failed their store checks (see the table)");
    }
    Ok(())
}

/// A scenario that runs `tributary daemon` (`flag`: `--daemon`, `--nodes`): one fake of 20
/// contacts (one page a run) and the Pipedrive fixture's connector; `scenario` gets the
/// binary, the connectors directory and the fake's URL, `print` shows its figures.
fn daemon_harness<T>(
    options: &Options,
    flag: &str,
    scenario: impl AsyncFnOnce(&Path, &Path, &str) -> anyhow::Result<T>,
    print: impl FnOnce(&T),
) -> anyhow::Result<()> {
    let tributary = options
        .tributary
        .clone()
        .with_context(|| format!("{flag} needs the tributary binary"))?;
    let fake = FakeService::start(20, &options.work.join("fake.log"))?;
    let connectors =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/pipedrive/connectors.d");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let figures = runtime.block_on(scenario(&tributary, &connectors, &fake.base_url));
    drop(fake);
    let figures = figures?;
    println!();
    println!("machine: {}", machine());
    print(&figures);
    if !options.keep {
        let _ = std::fs::remove_dir_all(&options.work);
    } else {
        println!("work directory kept: {}", options.work.display());
    }
    Ok(())
}

async fn run_all(options: &Options) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &n in &options.ns {
        for store in &options.stores {
            let mut runs = Vec::new();
            for run in 0..options.repeat {
                eprintln!("== N = {n}, store = {store}, run {}", run + 1);
                let mut series_rows = Vec::new();
                run_one_series(options, n, store, run, &mut series_rows).await;
                runs.push(series_rows);
            }
            rows.extend(median_rows(runs));
        }
    }
    Ok(rows)
}

/// One row per scenario from several runs of a series: the run with the median wall
/// time, its first-import ratio replaced by the median of the runs' ratios (each taken
/// within its own run, as the issue asks). A run that failed a check is kept as well, so
/// a failure is never hidden by the median.
fn median_rows(runs: Vec<Vec<Row>>) -> Vec<Row> {
    if runs.len() == 1 {
        return runs.into_iter().next().unwrap_or_default();
    }
    let mut out: Vec<Row> = Vec::new();
    let all: Vec<Row> = runs.into_iter().flatten().collect();
    let mut scenarios: Vec<Scenario> = Vec::new();
    for row in &all {
        if !scenarios.contains(&row.scenario) {
            scenarios.push(row.scenario);
        }
    }
    for scenario in scenarios {
        let mut passed: Vec<&Row> = all
            .iter()
            .filter(|r| r.scenario == scenario && r.check.is_ok())
            .collect();
        passed.sort_by(|a, b| a.usage.wall.total_cmp(&b.usage.wall));
        if let Some(median) = passed.get(passed.len() / 2) {
            let mut row = (*median).clone();
            let mut ratios: Vec<f64> = passed.iter().filter_map(|r| r.ratio).collect();
            ratios.sort_by(f64::total_cmp);
            row.ratio = ratios.get(ratios.len() / 2).copied().or(row.ratio);
            if let Ok(check) = &mut row.check {
                check.push_str(&format!("; median of {} runs", passed.len()));
            }
            out.push(row);
        }
        out.extend(
            all.iter()
                .filter(|r| r.scenario == scenario && r.check.is_err())
                .cloned(),
        );
    }
    out
}

/// One run of one series; a series that fails is recorded as a failed row.
async fn run_one_series(options: &Options, n: u64, store: &str, run: usize, rows: &mut Vec<Row>) {
    if let Err(error) = run_series(options, n, store, run, rows).await {
        eprintln!("series N = {n}, {store} failed: {error:#}");
        rows.push(Row {
            scenario: Scenario::First,
            store: store.to_string(),
            n,
            records: 0,
            usage: Usage::default(),
            fake_cpu: 0.0,
            rate: 0.0,
            ratio: None,
            check: Err(format!("{error:#}")),
        });
    }
}

/// A store for one series: a SQLite file in the series directory, or a fresh PostgreSQL
/// database dropped afterwards.
struct StoreTarget {
    url: String,
    pg_admin: Option<(String, String)>,
}

impl StoreTarget {
    async fn create(options: &Options, kind: &str, dir: &Path, name: &str) -> anyhow::Result<Self> {
        if kind == "sqlite" {
            let path = dir.join(format!("{name}.db"));
            return Ok(StoreTarget {
                url: format!("sqlite://{}", path.display()),
                pg_admin: None,
            });
        }
        let database = format!("tributary_bench_{}_{name}", std::process::id());
        checks::pg_admin(&options.pg, &format!("DROP DATABASE IF EXISTS {database}")).await?;
        checks::pg_admin(&options.pg, &format!("CREATE DATABASE {database}")).await?;
        let mut url = url::Url::parse(&options.pg)?;
        url.set_path(&format!("/{database}"));
        Ok(StoreTarget {
            url: url.to_string(),
            pg_admin: Some((options.pg.clone(), database)),
        })
    }

    async fn drop_database(&self) {
        if let Some((admin, database)) = &self.pg_admin {
            let sql = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
            if let Err(error) = checks::pg_admin(admin, &sql).await {
                eprintln!("could not drop {database}: {error:#}");
            }
        }
    }
}

async fn run_series(
    options: &Options,
    n: u64,
    store: &str,
    run: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let dir = if run == 0 {
        options.work.join(format!("{store}-{n}"))
    } else {
        options.work.join(format!("{store}-{n}-run{}", run + 1))
    };
    std::fs::create_dir_all(&dir)?;
    let fake = FakeService::start(n, &dir.join("fake.log"))?;

    // The reference, on its own fresh store.
    let reference_store = StoreTarget::create(options, store, &dir, "reference").await?;
    let mut command = Command::new(std::env::current_exe()?);
    command.args([
        "--role",
        "reference",
        "--base-url",
        &fake.base_url,
        "--store",
    ]);
    command.arg(&reference_store.url);
    let (usage, fake_cpu, records) =
        measured(&fake, command, &dir.join("reference.log"), n).await?;
    reference_store.drop_database().await;
    let log = std::fs::read_to_string(dir.join("reference.log")).unwrap_or_default();
    let reference_rows = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rows="))
        .and_then(|r| r.parse::<u64>().ok());
    let reference_rate = records as f64 / usage.wall;
    rows.push(Row {
        scenario: Scenario::Reference,
        store: store.to_string(),
        n,
        records,
        usage,
        fake_cpu,
        rate: reference_rate,
        ratio: Some(1.0),
        check: match reference_rows {
            Some(r) if r == n => Ok(format!("{r} rows")),
            other => Err(format!("reference stored {other:?} rows, expected {n}")),
        },
    });

    let Some(tributary) = &options.tributary else {
        return Ok(());
    };
    let target = StoreTarget::create(options, store, &dir, "tributary").await?;
    let config = write_config(&dir, "config", &target.url, &fake.base_url, false)?;
    // A full refresh: by flag if `run` has one, else by a connector variant whose sync
    // mode is `full_refresh` (same importer id, same store).
    let refresh_flag = match &options.full_refresh_flag {
        Some(flag) => Some(flag.clone()),
        None => {
            let help = Command::new(tributary).args(["run", "--help"]).output()?;
            String::from_utf8_lossy(&help.stdout)
                .contains("--full-refresh")
                .then(|| "--full-refresh".to_string())
        }
    };
    let refresh_config = match &refresh_flag {
        Some(_) => config.clone(),
        None => write_config(&dir, "config-refresh", &target.url, &fake.base_url, true)?,
    };
    let validate = Command::new(tributary)
        .arg("--config")
        .arg(&config)
        .arg("validate")
        .output()
        .context("running tributary validate")?;
    if !validate.status.success() {
        target.drop_database().await;
        bail!(
            "tributary validate refused the benchmark's files:\n{}{}",
            String::from_utf8_lossy(&validate.stdout),
            String::from_utf8_lossy(&validate.stderr)
        );
    }
    let db = CheckDb::open(&target.url).await;
    let mut generation = 0;
    let mut changed_at = None;
    for scenario in [
        Scenario::First,
        Scenario::Incremental,
        Scenario::FullRefresh,
    ] {
        if scenario == Scenario::Incremental {
            let changed = fake
                .control(
                    reqwest::Method::POST,
                    &format!("change?percent={PERCENT_CHANGED}"),
                )
                .await?;
            generation = changed["generation"].as_u64().unwrap_or(0) as u32;
            changed_at = changed["update_time"].as_i64();
        }
        let mut command = Command::new(tributary);
        if scenario == Scenario::FullRefresh {
            command
                .arg("--config")
                .arg(&refresh_config)
                .args(["run", "bench"]);
            if let Some(flag) = &refresh_flag {
                command.arg(flag);
            }
        } else {
            command.arg("--config").arg(&config).args(["run", "bench"]);
        }
        command.env("BENCH_PIPEDRIVE_TOKEN", TOKEN);
        let log = dir.join(format!("tributary-{}.log", scenario.slug()));
        let (usage, fake_cpu, records, check) = match measured(&fake, command, &log, n).await {
            Ok((usage, fake_cpu, records)) => {
                let check = match &db {
                    Ok(db) => {
                        let expectation = checks::Expectation {
                            scenario,
                            n,
                            generation,
                            percent: PERCENT_CHANGED,
                            records_served: records,
                            changed_at,
                        };
                        checks::check(db, &expectation).await
                    }
                    Err(error) => Err(format!("cannot open the store to check it: {error:#}")),
                };
                (usage, fake_cpu, records, check)
            }
            Err(error) => (
                Usage::default(),
                0.0,
                0,
                Err(format!("{error:#}\n{}", measure::tail(&log, 8))),
            ),
        };
        let rate = if usage.wall > 0.0 {
            records as f64 / usage.wall
        } else {
            0.0
        };
        rows.push(Row {
            scenario,
            store: store.to_string(),
            n,
            records,
            usage,
            fake_cpu,
            rate,
            ratio: (reference_rate > 0.0).then(|| rate / reference_rate),
            check,
        });
    }
    if let Ok(db) = db {
        db.close().await;
    }
    target.drop_database().await;
    drop(fake);
    Ok(())
}

/// Runs `command` measured, with the fake's counters reset before and read after.
/// Returns the child's usage, the fake's CPU seconds meanwhile and the records served.
async fn measured(
    fake: &FakeService,
    command: Command,
    log: &Path,
    n: u64,
) -> anyhow::Result<(Usage, f64, u64)> {
    fake.control(reqwest::Method::POST, "reset").await?;
    let fake_cpu_before = measure::process_cpu(fake.pid());
    // Generous: a run 100 times slower than the reference's published rate is a failure.
    let timeout = Duration::from_secs(60 + n / 700);
    let usage = measure::run_measured(command, log, timeout)?;
    let fake_cpu = measure::process_cpu(fake.pid()) - fake_cpu_before;
    let stats = fake.control(reqwest::Method::GET, "stats").await?;
    if stats["unauthorized"].as_u64().unwrap_or(0) > 0 {
        bail!(
            "the fake refused {} requests for a wrong token",
            stats["unauthorized"]
        );
    }
    Ok((usage, fake_cpu, stats["records"].as_u64().unwrap_or(0)))
}

/// Writes `tributary.yaml`, `connectors.d/` and `importers.d/` for one series from
/// `benches/fixtures/pipedrive`, filling the store URL and the fake's address.
///
/// With `full_refresh`, the connector's sync mode becomes `full_refresh` (every pass reads
/// everything): how the full-refresh scenario forces one while `tributary run` has no
/// flag for it and `full_refresh_every` cannot be under `PT1M`.
fn write_config(
    dir: &Path,
    name: &str,
    store: &str,
    base_url: &str,
    full_refresh: bool,
) -> anyhow::Result<PathBuf> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/pipedrive");
    let config_dir = dir.join(name);
    for sub in ["connectors.d", "importers.d"] {
        std::fs::create_dir_all(config_dir.join(sub))?;
        for entry in std::fs::read_dir(fixtures.join(sub))? {
            let entry = entry?;
            let mut text = std::fs::read_to_string(entry.path())?;
            if full_refresh && sub == "connectors.d" {
                let sync = "sync:\n  mode: incremental\n  since_format: rfc3339\n";
                if !text.contains(sync) {
                    bail!("{} has no incremental `sync` block", entry.path().display());
                }
                text = text
                    .replace(sync, "sync:\n  mode: full_refresh\n")
                    .replace("      updated_since: \"{{since}}\"\n", "");
            }
            std::fs::write(
                config_dir.join(sub).join(entry.file_name()),
                text.replace("@BASE_URL@", base_url),
            )?;
        }
    }
    let daemon = std::fs::read_to_string(fixtures.join("tributary.yaml"))?;
    let config = config_dir.join("tributary.yaml");
    std::fs::write(&config, daemon.replace("@STORE@", store))?;
    Ok(config)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with("MemTotal")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown memory".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    // Other work on a shared machine shows here: ratios stay meaningful, absolute rates
    // do not.
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("{cores} cores, {cpu}, {mem}; load average at the end {load}")
}

fn print_report(options: &Options, rows: &[Row]) {
    println!();
    println!("machine: {}", machine());
    println!(
        "issue figures: reference 72,800/s at N = 100,000; fastest peer (Airbyte, read only) {FASTEST_PEER_RATE:.0}/s"
    );
    println!();
    println!(
        "| scenario | store | N | records | wall s | CPU s | contacts/s | peak RSS MiB | ratio | fake CPU s | check |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let ratio = match (row.scenario, row.ratio) {
            (Scenario::Reference, _) => format!("{:.2} of issue", row.rate / ISSUE_REFERENCE_RATE),
            (Scenario::First, Some(r)) => format!("{r:.2}"),
            _ => "-".into(),
        };
        let check = match &row.check {
            Ok(s) => format!("ok: {s}"),
            Err(e) => format!("FAIL: {}", e.lines().next().unwrap_or_default()),
        };
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.1} | {} | {:.2} | {} |",
            row.scenario.label(),
            row.store,
            row.n,
            row.records,
            row.usage.wall,
            row.usage.cpu,
            row.rate,
            row.usage.max_rss_kib as f64 / 1024.0,
            ratio,
            row.fake_cpu,
            check
        );
    }
    for row in rows {
        if let Err(e) = &row.check {
            println!(
                "\n{} / {} / N = {}: {e}",
                row.scenario.label(),
                row.store,
                row.n
            );
        }
    }
    println!();
    println!("targets:");
    for line in targets(options, rows) {
        println!("  {line}");
    }
}

fn find<'a>(rows: &'a [Row], scenario: Scenario, store: &str, n: u64) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.store == store && r.n == n && r.check.is_ok())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

fn targets(options: &Options, rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for store in &options.stores {
        for &n in &options.ns {
            if let Some(first) = find(rows, Scenario::First, store, n) {
                let ratio = first.ratio.unwrap_or(0.0);
                out.push(format!(
                    "{}: first import into {store}, N = {n}: {ratio:.2} x reference (>= 0.5)",
                    verdict(ratio >= 0.5)
                ));
                if let Some(incremental) = find(rows, Scenario::Incremental, store, n) {
                    let share = incremental.usage.wall / first.usage.wall;
                    out.push(format!(
                        "{}: incremental after 1 % changed, {store}, N = {n}: {:.1} % of the first import's time (< 5 %)",
                        verdict(share < 0.05),
                        share * 100.0
                    ));
                }
                if let Some(full) = find(rows, Scenario::FullRefresh, store, n) {
                    let speedup = full.rate / first.rate;
                    out.push(format!(
                        "{}: unchanged full refresh, {store}, N = {n}: {speedup:.2} x the first import's rate (>= 1.5)",
                        verdict(speedup >= 1.5)
                    ));
                }
            }
        }
    }
    if let Some(first) = find(rows, Scenario::First, "sqlite", 100_000) {
        out.push(format!(
            "{}: N = 100,000 into SQLite: {:.0}/s = {:.1} x the fastest peer's {FASTEST_PEER_RATE:.0}/s (>= 10)",
            verdict(first.rate >= 10.0 * FASTEST_PEER_RATE),
            first.rate,
            first.rate / FASTEST_PEER_RATE
        ));
    }
    for store in &options.stores {
        let pair = |s| {
            (
                find(rows, s, store, 100_000),
                find(rows, s, store, 1_000_000),
            )
        };
        if let ((Some(r1), Some(r2)), (Some(t1), Some(t2))) =
            (pair(Scenario::Reference), pair(Scenario::First))
        {
            let reference_slope = r2.rate / r1.rate;
            let slope = t2.rate / t1.rate;
            out.push(format!(
                "{}: slope 100,000 -> 1,000,000 into {store}: rate kept {:.0} % (reference keeps {:.0} %)",
                verdict(slope >= reference_slope * 0.95),
                slope * 100.0,
                reference_slope * 100.0
            ));
        }
        let smallest = options.ns.iter().min().copied().unwrap_or(0);
        let largest = options.ns.iter().max().copied().unwrap_or(0);
        if smallest == largest {
            continue;
        }
        if let (Some(small), Some(large)) = (
            find(rows, Scenario::First, store, smallest),
            find(rows, Scenario::First, store, largest),
        ) {
            let peak = rows
                .iter()
                .filter(|r| {
                    r.store == *store && r.n == largest && r.scenario != Scenario::Reference
                })
                .map(|r| r.usage.max_rss_kib)
                .max()
                .unwrap_or(large.usage.max_rss_kib);
            let growth = peak as f64 / small.usage.max_rss_kib.max(1) as f64;
            let mib = peak as f64 / 1024.0;
            out.push(format!(
                "{}: peak RSS into {store}: {mib:.1} MiB at N = {largest} = {growth:.2} x that at N = {smallest} (<= 1.2 x, < 100 MiB{})",
                verdict(growth <= 1.2 && mib < 100.0),
                if largest < 1_000_000 { "; 1,000,000 needs --large" } else { "" }
            ));
        }
    }
    if out.is_empty() {
        out.push("no Tributary scenario passed its checks: no target can be judged".into());
    }
    out
}
