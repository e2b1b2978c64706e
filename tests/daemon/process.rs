//! `tributary daemon` as systemd runs it: the real binary, its HTTP listener, signals,
//! `run` handed over by the CLI, `status`, and the unit file.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::{Crm, connector, crm, importer};
use crate::common::fake::{db, people};
use crate::common::sync_env::SyncEnv;

/// A free port on 127.0.0.1 (never 9477, the default other tests' CLIs probe).
pub(super) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A config tree whose `tributary.yaml` also names a listener.
pub(super) fn env_with_listener(extra: &str) -> (SyncEnv, String) {
    let env = SyncEnv::new();
    let listen = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &env.config,
        format!("store: \"{}\"\nlisten: {listen}\n{extra}", env.store_url),
    )
    .unwrap();
    (env, listen)
}

pub(super) struct Daemon {
    pub(super) child: tokio::process::Child,
    listen: String,
    log: std::path::PathBuf,
}

impl Daemon {
    pub(super) async fn start(env: &SyncEnv, listen: &str) -> Daemon {
        Daemon::start_with_env(env, listen, &[]).await
    }

    /// Starts the daemon with extra environment variables (a node id, ...).
    pub(super) async fn start_with_env(
        env: &SyncEnv,
        listen: &str,
        vars: &[(&str, &str)],
    ) -> Daemon {
        let log = env
            .dir
            .path()
            .join(format!("daemon-{}.log", rand::random::<u32>()));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .arg("--config")
            .arg(&env.config)
            .arg("daemon")
            .env("RUST_LOG", "info")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child,
            listen: listen.to_string(),
            log,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while daemon.get("/healthz").await.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not start: {}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(super) async fn get(&self, path: &str) -> Option<String> {
        let response = reqwest::get(format!("http://{}{path}", self.listen))
            .await
            .ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    }

    pub(super) async fn status(&self) -> Value {
        serde_json::from_str(&self.get("/status").await.expect("status answers")).unwrap()
    }

    pub(super) fn importer<'a>(status: &'a Value, id: &str) -> &'a Value {
        status["importers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["importer"] == id)
            .unwrap_or_else(|| panic!("{id} in {status}"))
    }

    /// Waits until `/status` satisfies `check`.
    pub(super) async fn until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.until_within(what, Duration::from_secs(30), check)
            .await
    }

    /// Waits until `/status` satisfies `check`, for at most `within`.
    pub(super) async fn until_within(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let status = self.status().await;
            if check(&status) {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {status:#}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) fn signal(&self, signal: i32) {
        let pid = self.child.id().unwrap() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    pub(super) async fn wait_exit(&mut self, within: Duration) -> i32 {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the daemon did not exit in {within:?}: {}", self.log()))
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

pub(super) async fn cli(env: &SyncEnv, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether `id` is scheduled and has completed a run in this daemon.
pub(super) fn completed_once(status: &Value, id: &str) -> bool {
    let Some(entry) = status["importers"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["importer"] == id))
    else {
        return false;
    };
    entry["runs"].as_u64() >= Some(1) && entry["last_outcome"] == "completed"
}

/// Start with one broken importer file: it is reported (file, line, key) and skipped,
/// every other importer runs; `/status`, `/metrics` and `tributary status` show the runs;
/// SIGTERM stops the daemon with 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_importer_file_is_skipped_and_the_others_run_and_are_observable() {
    let fake = crm(Crm::new(db(people(7)))).await;
    let (env, listen) = env_with_listener("concurrency: 2\n");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "s3cret-KEY-4411");
    env.importer(
        "alpha",
        &importer(&format!("{}/a", fake.base), "Alpha", &key, "page_size: 3\n"),
    );
    env.importer(
        "beta",
        &importer(&format!("{}/b", fake.base), "Beta", &key, ""),
    );
    env.importer("broken", "connector: crm\nlist: [unclosed\n");
    let mut daemon = Daemon::start(&env, &listen).await;
    let status = daemon
        .until("alpha and beta to complete", |s| {
            completed_once(s, "alpha") && completed_once(s, "beta")
        })
        .await;
    let errors = status["daemon"]["config_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{status:#}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .starts_with("importers.d/broken.yaml:3:1: invalid YAML"),
        "{errors:?}"
    );
    assert_eq!(status["daemon"]["importers"], 2);
    let alpha = Daemon::importer(&status, "alpha");
    assert_eq!(alpha["connector"], "crm");
    assert_eq!(alpha["list"], "Alpha");
    assert_eq!(alpha["phase"], "idle");
    assert_eq!(alpha["due_reason"], "interval");
    assert!(alpha["watermark"].is_string(), "{alpha}");
    assert!(daemon.log().contains("importers.d/broken.yaml"));
    assert_eq!(env.contacts("Alpha").await.len(), 7);
    assert_eq!(env.contacts("Beta").await.len(), 7);

    let metrics = daemon.get("/metrics").await.unwrap();
    for line in [
        r#"tributary_runs_total{importer="alpha",connector="crm",outcome="completed"} 1"#,
        r#"tributary_contacts_total{importer="beta",connector="crm",change="unchanged"} 0"#,
        r#"tributary_pages_total{importer="alpha",connector="crm"} 4"#,
        r#"tributary_http_responses_total{connector="crm",class="2xx"} 6"#,
        r#"tributary_importers{phase="idle"} 2"#,
        "tributary_config_file_errors 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    // Both importers read the same seven people into one store: whichever ran first
    // created them, the other added its list (an update).
    let sample = |importer: &str, change: &str| -> u64 {
        let prefix = format!(
            "tributary_contacts_total{{importer=\"{importer}\",connector=\"crm\",change=\"{change}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("missing {prefix} in:\n{metrics}"))
            .parse()
            .unwrap()
    };
    for importer in ["alpha", "beta"] {
        assert_eq!(sample(importer, "created") + sample(importer, "updated"), 7);
    }
    assert_eq!(sample("alpha", "created") + sample("beta", "created"), 7);
    for name in [
        "tributary_run_duration_seconds_bucket{importer=\"alpha\",le=",
        "tributary_last_success_timestamp_seconds{importer=\"beta\"}",
        "tributary_watermark_lag_seconds{importer=\"alpha\"}",
    ] {
        assert!(metrics.contains(name), "missing `{name}` in:\n{metrics}");
    }
    assert!(!metrics.contains("s3cret-KEY-4411") && !metrics.contains(&fake.base));
    let status_text = daemon.get("/status").await.unwrap();
    assert!(!status_text.contains("s3cret-KEY-4411"));

    // `tributary status` reads the store: the same picture, with or without a daemon.
    let (code, table, _) = cli(&env, &["status"]).await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("IMPORTER"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("alpha") && l.contains("Alpha") && l.contains("completed")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("broken") && l.contains("broken file")),
        "{table}"
    );
    let (code, json, _) = cli(&env, &["status", "--format", "json"]).await;
    assert_eq!(code, 0);
    let rows: Value = serde_json::from_str(&json).unwrap();
    let beta = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["importer"] == "beta")
        .unwrap();
    assert_eq!(beta["state"], "idle");
    assert_eq!(beta["last_result"], "completed");
    assert!(beta["next_run_at"].is_string());

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).await, 0);
    assert!(daemon.log().contains("Stopped."), "{}", daemon.log());
}

/// `tributary run` while a daemon serves the store hands the run over and exits with the
/// codes of an in-process run; the same over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_is_handed_to_a_running_daemon_with_the_same_exit_codes() {
    let state = Crm::new(db(people(4)));
    let fake = crm(state.clone()).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer("imp", &importer(&fake.base, "L", &key, "interval: PT6H\n"));
    let mut daemon = Daemon::start(&env, &listen).await;
    daemon
        .until("the first run", |s| completed_once(s, "imp"))
        .await;

    // Two people change at the service; a run asked for by hand picks up exactly them.
    {
        let mut people = state.db.lock().unwrap();
        for p in people.iter_mut().take(2) {
            p.first = format!("{}-changed", p.first);
            p.updated += chrono::Duration::hours(1);
        }
    }
    let (code, stdout, stderr) = cli(&env, &["run", "imp"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("handing the run to the daemon"), "{stderr}");
    assert!(stdout.contains("run by the daemon"), "{stdout}");
    assert!(
        stdout.contains("fetched 2, created 0, updated 2"),
        "{stdout}"
    );
    let status = daemon.status().await;
    assert_eq!(Daemon::importer(&status, "imp")["runs"], 2);

    // Busy: the importer is running in the daemon (a slow service) -> 75; with --wait,
    // it waits for that run and then runs -> 0.
    state.behaviour.lock().unwrap().delay = Duration::from_millis(1500);
    let env_path = env.config.clone();
    let busy_run = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://{}/importers/imp/run", listen_of(&env_path)))
            .json(&serde_json::json!({"full_refresh": true}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    daemon
        .until("the run asked over HTTP to start", |s| {
            Daemon::importer(s, "imp")["phase"] == "running"
        })
        .await;
    let (code, _, stderr) = cli(&env, &["run", "imp"]).await;
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("running in the daemon"), "{stderr}");
    let (code, stdout, stderr) = cli(&env, &["run", "imp", "--wait", "PT60S"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let over_http = busy_run.await.unwrap();
    assert_eq!(over_http["exit_code"], 0, "{over_http}");
    assert_eq!(over_http["outcome"], "completed");
    assert_eq!(over_http["pass"], "full_refresh");
    assert_eq!(over_http["counts"]["fetched"], 4);
    state.behaviour.lock().unwrap().delay = Duration::ZERO;

    // A failing run -> 1, with the engine's message.
    state.behaviour.lock().unwrap().fail_with = 404;
    let (code, _, stderr) = cli(&env, &["run", "imp"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    state.behaviour.lock().unwrap().fail_with = 0;

    // An importer the daemon skipped for a broken file -> 78 over HTTP (the CLI refuses
    // a broken tree itself with 78, as without a daemon).
    env.importer("later", "connector: crm\nlist: [unclosed\n");
    let (code, _, _) = cli(&env, &["run", "imp"]).await;
    assert_eq!(code, 78);
    let unknown: Value = reqwest::Client::new()
        .post(format!("http://{listen}/importers/nope/run"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unknown["exit_code"], 1, "{unknown}");

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).await, 0);
}

fn listen_of(config: &std::path::Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("listen: "))
        .unwrap()
        .trim()
        .to_string()
}

/// SIGTERM during a run: the page being written commits, the run ends cancelled, the
/// daemon exits 0; the next start resumes from the checkpoint and nothing is lost or
/// duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_run_commits_the_page_and_the_next_start_resumes() {
    let state = Crm::new(db(people(60)));
    state.behaviour.lock().unwrap().delay = Duration::from_millis(250);
    let fake = crm(state.clone()).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer(
        "imp",
        &importer(&fake.base, "L", &key, "page_size: 5\npage_budget: 0\n"),
    );
    let mut daemon = Daemon::start(&env, &listen).await;
    daemon
        .until("a few pages", |s| {
            Daemon::importer(s, "imp")["progress"]["pages"].as_u64() >= Some(3)
        })
        .await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).await, 0);
    let store = env.store().await;
    let runs = store.runs("imp", 5).await.unwrap();
    assert_eq!(
        runs[0].outcome,
        Some(tributary::store::RunOutcome::Cancelled),
        "{runs:?}"
    );
    let committed = env.contacts("L").await.len();
    assert!(
        (15..60).contains(&committed),
        "{committed} contacts committed before the stop"
    );
    let checkpoint = store.importer_state("imp").await.unwrap().checkpoint;
    assert!(checkpoint.position.is_some(), "a saved position to resume");
    let lease = store
        .acquire_lease("imp", Duration::from_secs(1))
        .await
        .unwrap()
        .expect("lease released by the stopped daemon");
    // Given back, or the next daemon's run would find it held and wait its busy retry.
    store.release_lease(&lease).await.unwrap();
    drop(store);

    state.behaviour.lock().unwrap().delay = Duration::ZERO;
    let mut daemon = Daemon::start(&env, &listen).await;
    daemon
        .until("the pass to complete", |s| completed_once(s, "imp"))
        .await;
    let contacts = env.contacts("L").await;
    assert_eq!(contacts.len(), 60, "nothing lost");
    let store = env.store().await;
    let runs = store.runs("imp", 5).await.unwrap();
    assert_eq!(
        runs[0].counts.created as usize + committed,
        60,
        "the resumed run created only the rest: {runs:?}"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).await, 0);
}

/// A stop that cannot finish (a page write blocked by another process holding the
/// SQLite database) ends at once on a second signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let state = Crm::new(db(people(40)));
    state.behaviour.lock().unwrap().delay = Duration::from_millis(200);
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer(
        "imp",
        &importer(&fake.base, "L", &key, "page_size: 5\npage_budget: 0\n"),
    );
    let mut daemon = Daemon::start(&env, &listen).await;
    daemon
        .until("a page", |s| {
            Daemon::importer(s, "imp")["progress"]["pages"].as_u64() >= Some(1)
        })
        .await;
    // Another process takes SQLite's write lock and keeps it: the next page write waits.
    let db_path = env.store_url.trim_start_matches("sqlite://").to_string();
    let mut locker = tokio::process::Command::new("sqlite3")
        .arg(&db_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sqlite3 is installed (scripts/test installs it)");
    {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let stdin = locker.stdin.as_mut().unwrap();
        stdin
            .write_all(b".timeout 20000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
            .await
            .unwrap();
        stdin.flush().await.unwrap();
        // The lock is held once sqlite3 answers the query after BEGIN.
        let mut answer = String::new();
        tokio::io::BufReader::new(locker.stdout.as_mut().unwrap())
            .read_line(&mut answer)
            .await
            .unwrap();
        assert_eq!(answer.trim(), "locked");
    }
    // The page in flight now waits for the lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "still stopping (its page write waits for the lock): {}",
        daemon.log()
    );
    let asked = std::time::Instant::now();
    daemon.signal(libc::SIGTERM);
    let code = daemon.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(code, 1);
    assert!(asked.elapsed() < Duration::from_secs(3));
    assert!(daemon.log().contains("Second signal"), "{}", daemon.log());
    let _ = locker.kill().await;
}

/// The shipped unit passes `systemd-analyze verify` (with ExecStart naming the built
/// binary) and has the keys a long-running, supervised, hardened service needs.
#[test]
fn the_systemd_unit_verifies_and_has_the_keys_it_needs() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/tributary.service"),
    )
    .unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "RestartPreventExitStatus=78",
        "Restart=on-failure",
        "ExecStart=/usr/bin/tributary daemon",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=tributary",
        "StateDirectory=tributary",
        "ConfigurationDirectory=tributary",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "UMask=0077",
        "LoadCredential=",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.contains(key), "the unit lacks `{key}`");
    }
    assert!(
        !unit.contains("ExecStartPre=/usr/bin/tributary validate"),
        "a broken importer file must not keep the daemon from starting"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tributary.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/bin/tributary daemon",
            &format!("ExecStart={} daemon", env!("CARGO_BIN_EXE_tributary")),
        )
        .replace("User=tributary", "User=root")
        .replace("Group=tributary", "Group=root"),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze is installed (scripts/test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tributary.service"))
        .collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    // The sysusers file creates the user the unit runs as.
    let sysusers = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/tributary.sysusers"),
    )
    .unwrap();
    assert!(sysusers.contains("tributary"));
}
