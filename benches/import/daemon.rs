//! The daemon at scale (`cargo bench --bench import -- --daemon`): 10,000 enabled
//! importers against one fake service.
//!
//! 1. **Idle**: every importer's next run is saved an hour ahead; the daemon starts and we
//!    measure how long until all 10,000 are scheduled and `/healthz` answers, then its
//!    CPU over 30 s of nothing due (utime + stime from `/proc`), its RSS, and `/healthz`
//!    latency while idle.
//! 2. **Burst**: the daemon is stopped (SIGTERM, timed), 1,000 importers are made due at
//!    once (their due times spread over the past ten minutes, so their order is known),
//!    and the daemon restarted. We sample `/healthz` every 50 ms while the burst drains,
//!    read the most runs ever in flight from `/status` (must not exceed `concurrency`),
//!    and check fairness: the scheduler starts them in due order (from `/status`, when
//!    each was dispatched: no importer due later is dispatched earlier), and the run
//!    history shows how far the runs' own start times drift from that order (each run
//!    takes its lease and opens its run row concurrently, so a few may swap places).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;

const IMPORTERS: usize = 10_000;
const DUE_AT_ONCE: usize = 1_000;
const CONCURRENCY: usize = 4;
const IDLE_SECONDS: u64 = 30;

/// What the scenario measured.
pub struct Figures {
    pub importers: usize,
    pub scheduled_after: f64,
    pub idle_cpu_percent: f64,
    pub idle_rss_mib: f64,
    pub idle_healthz_ms: Latency,
    pub reload_seconds: f64,
    pub reload_result: String,
    pub stop_seconds: f64,
    pub burst_drain_seconds: f64,
    pub burst_max_running: usize,
    pub burst_healthz_ms: Latency,
    pub burst_peak_rss_mib: f64,
    pub burst_dispatch_overtaken: usize,
    pub burst_max_overtaken: usize,
    pub burst_runs: usize,
}

/// Latency percentiles in milliseconds.
#[derive(Default)]
pub struct Latency {
    pub samples: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Latency {
            samples: ms.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: *ms.last().unwrap(),
        }
    }
}

struct Daemon {
    child: Child,
    listen: String,
}

impl Daemon {
    fn start(tributary: &Path, dir: &Path, listen: &str, token: &str) -> anyhow::Result<Daemon> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))?;
        let child = Command::new(tributary)
            .args([
                "--config",
                &dir.join("tributary.yaml").to_string_lossy(),
                "daemon",
            ])
            .env("BENCH_PIPEDRIVE_TOKEN", token)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting tributary daemon")?;
        Ok(Daemon {
            child,
            listen: listen.to_string(),
        })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stops it with SIGTERM and waits; returns how long the stop took.
    fn stop(mut self) -> anyhow::Result<f64> {
        let asked = Instant::now();
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the daemon exited with {status} after SIGTERM");
        }
        Ok(asked.elapsed().as_secs_f64())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the scenario against the fake at `base_url`.
pub async fn run(
    tributary: &Path,
    connectors: &Path,
    work: &Path,
    base_url: &str,
    token: &str,
) -> anyhow::Result<Figures> {
    let dir = work.join("daemon");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("importers.d"))?;
    copy_dir(connectors, &dir.join("connectors.d"))?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let store_url = format!("sqlite://{}", dir.join("tributary.db").display());
    std::fs::write(
        dir.join("tributary.yaml"),
        format!(
            "store: \"{store_url}\"\nconnectors_dir: connectors.d\nimporters_dir: importers.d\n\
             listen: \"{listen}\"\nconcurrency: {CONCURRENCY}\nlog_format: text\n"
        ),
    )?;
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

    // Nothing due for an hour.
    let store = tributary::store::open(&store_url, Default::default()).await?;
    let later = Utc::now() + chrono::Duration::hours(1);
    for i in 0..IMPORTERS {
        store
            .set_next_run(&format!("imp-{i:05}"), Some(later))
            .await?;
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let started = Instant::now();
    let daemon = Daemon::start(tributary, &dir, &listen, token)?;
    loop {
        if let Ok(status) = get_json(&client, &listen, "/status").await
            && status["daemon"]["importers"].as_u64() == Some(IMPORTERS as u64)
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "not scheduled after 120 s; see {}",
                dir.join("daemon.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let scheduled_after = started.elapsed().as_secs_f64();

    // Idle: let start-up settle, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_before = cpu_seconds(daemon.pid())?;
    let idle_started = Instant::now();
    let mut idle_latency = Vec::new();
    while idle_started.elapsed() < Duration::from_secs(IDLE_SECONDS) {
        idle_latency.push(healthz_ms(&client, &daemon.listen).await?);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let idle_cpu = cpu_seconds(daemon.pid())? - cpu_before;
    let idle_cpu_percent = 100.0 * idle_cpu / idle_started.elapsed().as_secs_f64();
    let idle_rss_mib = rss_kib(daemon.pid(), "VmRSS")? as f64 / 1024.0;

    // Hot reload: one importer file of 10,000 changes; time until the schedule has it.
    let changed = dir.join("importers.d/imp-05000.yaml");
    let text = std::fs::read_to_string(&changed)?;
    let generation_before =
        get_json(&client, &listen, "/status").await?["configuration"]["generation"]
            .as_u64()
            .unwrap_or(0);
    let written = Instant::now();
    std::fs::write(
        &changed,
        text.replace("list: Bench 0", "list: Bench reloaded"),
    )?;
    let reload_result = loop {
        let status = get_json(&client, &listen, "/status").await?;
        let applied = status["importers"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["importer"] == "imp-05000"))
            .is_some_and(|i| i["list"] == "Bench reloaded");
        if applied {
            break status["configuration"]["result"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        if written.elapsed() > Duration::from_secs(60) {
            bail!("the changed file was not applied within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reload_seconds = written.elapsed().as_secs_f64();
    let generation_after =
        get_json(&client, &listen, "/status").await?["configuration"]["generation"]
            .as_u64()
            .unwrap_or(0);
    let reload_result =
        format!("{reload_result} (generation {generation_before} -> {generation_after})");
    let stop_seconds = daemon.stop()?;

    // Burst: DUE_AT_ONCE importers due, oldest first in a known order.
    let now = Utc::now();
    let mut due = Vec::new();
    for k in 0..DUE_AT_ONCE {
        let id = format!("imp-{:05}", k * (IMPORTERS / DUE_AT_ONCE));
        let at = now - chrono::Duration::milliseconds(600_000 - (k as i64) * 600);
        store.set_next_run(&id, Some(at)).await?;
        due.push(id);
    }
    store.close().await;
    drop(store);

    let burst_started = Instant::now();
    let daemon = Daemon::start(tributary, &dir, &listen, token)?;
    let mut burst_latency = Vec::new();
    let mut max_running = 0;
    let mut peak_rss = 0;
    loop {
        match healthz_ms(&client, &daemon.listen).await {
            Ok(ms) => burst_latency.push(ms),
            Err(_) if burst_started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => return Err(e),
        }
        peak_rss = peak_rss.max(rss_kib(daemon.pid(), "VmHWM")?);
        let status = get_json(&client, &listen, "/status").await?;
        max_running =
            max_running.max(status["daemon"]["max_running"].as_u64().unwrap_or(0) as usize);
        let ran = status["importers"]
            .as_array()
            .map(|all| all.iter().filter(|i| i["runs"].as_u64() >= Some(1)).count())
            .unwrap_or(0);
        if ran >= DUE_AT_ONCE && status["daemon"]["running"].as_u64() == Some(0) {
            break;
        }
        if burst_started.elapsed() > Duration::from_secs(600) {
            bail!("{ran} of {DUE_AT_ONCE} ran in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let burst_drain_seconds = burst_started.elapsed().as_secs_f64();
    let final_status = get_json(&client, &listen, "/status").await?;
    max_running =
        max_running.max(final_status["daemon"]["max_running"].as_u64().unwrap_or(0) as usize);
    daemon.stop()?;
    let dispatched: Vec<chrono::DateTime<Utc>> = due
        .iter()
        .map(|id| {
            final_status["importers"]
                .as_array()
                .and_then(|all| all.iter().find(|i| i["importer"] == id.as_str()))
                .and_then(|i| i["last_run_at"].as_str())
                .and_then(|t| t.parse().ok())
                .with_context(|| format!("{id}: no dispatch time in /status"))
        })
        .collect::<anyhow::Result<_>>()?;

    // Fairness from the run history: start order against due order.
    let store = tributary::store::open(&store_url, Default::default()).await?;
    let mut started_at = Vec::new();
    let mut burst_runs = 0;
    for id in &due {
        let runs = store.runs(id, 4).await?;
        burst_runs += runs.len();
        let first = runs
            .iter()
            .map(|r| r.started_at)
            .min()
            .with_context(|| format!("{id} never ran"))?;
        started_at.push(first);
    }
    store.close().await;
    let max_overtaken = most_overtaken(&started_at);
    let dispatch_overtaken = most_overtaken(&dispatched);

    Ok(Figures {
        importers: IMPORTERS,
        scheduled_after,
        idle_cpu_percent,
        idle_rss_mib,
        idle_healthz_ms: Latency::of(idle_latency),
        reload_seconds,
        reload_result,
        stop_seconds,
        burst_drain_seconds,
        burst_max_running: max_running,
        burst_healthz_ms: Latency::of(burst_latency),
        burst_peak_rss_mib: peak_rss as f64 / 1024.0,
        burst_dispatch_overtaken: dispatch_overtaken,
        burst_max_overtaken: max_overtaken,
        burst_runs,
    })
}

/// Prints the figures against the targets.
pub fn print(figures: &Figures) {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    println!(
        "daemon: {} importers, concurrency {CONCURRENCY}",
        figures.importers
    );
    println!();
    println!("| figure | value | target | verdict |");
    println!("|---|---:|---|---|");
    println!(
        "| all scheduled, /healthz answering, after start | {:.2} s | within seconds | {} |",
        figures.scheduled_after,
        verdict(figures.scheduled_after < 10.0)
    );
    println!(
        "| idle CPU ({IDLE_SECONDS} s, nothing due) | {:.2} % of one core | < 2 % | {} |",
        figures.idle_cpu_percent,
        verdict(figures.idle_cpu_percent < 2.0)
    );
    println!(
        "| idle RSS | {:.1} MiB | < 200 MiB | {} |",
        figures.idle_rss_mib,
        verdict(figures.idle_rss_mib < 200.0)
    );
    println!(
        "| /healthz idle p50 / p99 / max ({} samples) | {:.1} / {:.1} / {:.1} ms | < 100 ms | {} |",
        figures.idle_healthz_ms.samples,
        figures.idle_healthz_ms.p50,
        figures.idle_healthz_ms.p99,
        figures.idle_healthz_ms.max,
        verdict(figures.idle_healthz_ms.max < 100.0)
    );
    println!(
        "| one importer file of {} changed: until scheduled | {:.2} s | < 2 s | {} |",
        figures.importers,
        figures.reload_seconds,
        verdict(figures.reload_seconds < 2.0)
    );
    println!(
        "| (what the reload reported) | {} | - | - |",
        figures.reload_result
    );
    println!(
        "| SIGTERM to exit, idle | {:.2} s | - | - |",
        figures.stop_seconds
    );
    println!(
        "| {DUE_AT_ONCE} due at once: start to all run | {:.1} s ({} runs) | - | - |",
        figures.burst_drain_seconds, figures.burst_runs
    );
    println!(
        "| most runs in flight | {} | <= {CONCURRENCY} | {} |",
        figures.burst_max_running,
        verdict(figures.burst_max_running <= CONCURRENCY)
    );
    println!(
        "| most importers due later but dispatched earlier | {} | 0 (due order) | {} |",
        figures.burst_dispatch_overtaken,
        verdict(figures.burst_dispatch_overtaken == 0)
    );
    println!(
        "| most importers due later whose run row started earlier | {} | - | - |",
        figures.burst_max_overtaken
    );
    println!(
        "| /healthz during the burst p50 / p99 / max ({} samples) | {:.1} / {:.1} / {:.1} ms | < 100 ms | {} |",
        figures.burst_healthz_ms.samples,
        figures.burst_healthz_ms.p50,
        figures.burst_healthz_ms.p99,
        figures.burst_healthz_ms.max,
        verdict(figures.burst_healthz_ms.max < 100.0)
    );
    println!(
        "| peak RSS (through the burst) | {:.1} MiB | < 200 MiB | {} |",
        figures.burst_peak_rss_mib,
        verdict(figures.burst_peak_rss_mib < 200.0)
    );
}

/// For times listed in due order: the most entries listed after one that are strictly
/// earlier than it.
fn most_overtaken(times: &[chrono::DateTime<Utc>]) -> usize {
    times
        .iter()
        .enumerate()
        .map(|(k, at)| times[k + 1..].iter().filter(|later| *later < at).count())
        .max()
        .unwrap_or(0)
}

async fn get_json(
    client: &reqwest::Client,
    listen: &str,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    Ok(client
        .get(format!("http://{listen}{path}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn healthz_ms(client: &reqwest::Client, listen: &str) -> anyhow::Result<f64> {
    let asked = Instant::now();
    get_json(client, listen, "/healthz").await?;
    Ok(asked.elapsed().as_secs_f64() * 1000.0)
}

/// utime + stime of a running process, in seconds.
fn cpu_seconds(pid: i32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').context("/proc stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// A `/proc/<pid>/status` memory line (`VmRSS`, `VmHWM`), in KiB.
fn rss_kib(pid: i32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{key} in /proc/{pid}/status"))
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target: PathBuf = to.join(entry.file_name());
        std::fs::copy(entry.path(), target)?;
    }
    Ok(())
}
