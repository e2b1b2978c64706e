//! Bad luck on Tributary's own side, during one import: the process SIGKILLed at random
//! moments and restarted each time; PostgreSQL's connections cut by a TCP proxy mid-run
//! (the shared server itself is never restarted); a full disk (`RLIMIT_FSIZE`) and a
//! read-only store for SQLite. Each ends with the store exact against the service (the
//! checks of `hostile.rs`): lost = 0, duplicated = 0, differing = 0.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, TcpStream};

use tributary::engine::{RunError, RunOptions};
use tributary::store::RunOutcome;

use super::hostile::{CONNECTOR, MAX_VALUE, Person, assert_exact, page_body, people};
use crate::common::hostile::{HostileService, Reply};
use crate::common::sync_env::SyncEnv;

/// A well-behaved service of `people`, `delay` per page.
async fn service(people: Arc<Vec<Person>>, delay: Duration) -> HostileService {
    HostileService::start(move |request| {
        let limit: usize = request
            .q("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100);
        let start: usize = request
            .q("cursor")
            .and_then(|c| c.strip_prefix('c'))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let next = (start + limit < people.len()).then_some(start + limit);
        Reply::Delayed(
            delay,
            Box::new(Reply::json(200, &page_body(&people, start, limit, next))),
        )
    })
    .await
}

/// A config tree importing from `base` into `store_url`, 250 people a page.
fn env_for(dir: tempfile::TempDir, store_url: &str, base: &str, budget: u32) -> SyncEnv {
    let env = SyncEnv::with_store(dir, store_url.to_string());
    let token = env.secret("token", "crash-Bearer-7u");
    env_with_token(env, store_url, base, budget, &token)
}

/// [`env_for`] with the token reference given: two trees that name one credential file
/// have one importer fingerprint.
fn env_with_token(env: SyncEnv, store_url: &str, base: &str, budget: u32, token: &str) -> SyncEnv {
    std::fs::write(
        &env.config,
        format!("store: \"{store_url}\"\nlimits: {{max_value_bytes: {MAX_VALUE}}}\n"),
    )
    .unwrap();
    env.connector("hostile", CONNECTOR);
    env.importer(
        "h",
        &format!(
            "connector: hostile\ncredentials:\n  token: {token}\nsettings:\n  base: \"{base}\"\nlist: People\npage_size: 250\npage_budget: {budget}\n"
        ),
    );
    env
}

fn tributary(env: &SyncEnv) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"));
    command
        .arg("--config")
        .arg(&env.config)
        .args(["run", "h"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Runs `tributary run h` to the end of the pass (a page budget may take several runs).
async fn finish(env: &SyncEnv) {
    for _ in 0..20 {
        let out = tributary(env).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if stdout.contains("pass complete") {
            return;
        }
    }
    panic!("the pass did not complete in 20 runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_sigkills_at_random_moments_of_one_import_lose_nothing() {
    const KILLS: usize = 30;
    let served = Arc::new(people(71, 20_000));
    let fake = service(served.clone(), Duration::from_millis(150)).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tributary.db").display());
    let env = env_for(dir, &url, &fake.base, 0);
    // The same import never killed, beside it: the killed one must end equal to it.
    let reference = {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tributary.db").display());
        // The killed tree's credential file (written again, same content).
        let token = env.secret("token", "crash-Bearer-7u");
        env_with_token(
            SyncEnv::with_store(dir, url.clone()),
            &url,
            &fake.base,
            0,
            &token,
        )
    };
    let unkilled = {
        let mut command = tributary(&reference);
        tokio::spawn(async move { command.output().await.unwrap() })
    };
    let mut rng = StdRng::seed_from_u64(11);
    let mut kills = 0;
    let mut starts = 0;
    while kills < KILLS {
        starts += 1;
        assert!(
            starts < 3 * KILLS,
            "runs keep ending before they can be killed"
        );
        let mut child = tributary(&env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Anywhere: opening or migrating the store, taking the lease, fetching, writing,
        // committing a page and its checkpoint.
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..400))).await;
        match child.try_wait().unwrap() {
            None => {
                child.start_kill().unwrap();
                child.wait().await.unwrap();
                kills += 1;
            }
            Some(status) => assert!(
                !status.success(),
                "the import finished after only {kills} kills; the test needs {KILLS}"
            ),
        }
    }
    finish(&env).await;
    assert_exact(71, &env, &served).await;
    let unkilled = unkilled.await.unwrap();
    assert_eq!(
        unkilled.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&unkilled.stderr)
    );
    // Every table, row by row (run ids, timestamps and the run history apart).
    let (want, got) = (
        crate::sync::crash::dump(&reference).await,
        crate::sync::crash::dump(&env).await,
    );
    assert!(want.iter().filter(|r| r.starts_with("contacts: ")).count() > 19_000);
    let (want_rows, got_rows): (BTreeSet<&String>, BTreeSet<&String>) =
        (want.iter().collect(), got.iter().collect());
    let missing: Vec<_> = want_rows.difference(&got_rows).take(5).collect();
    let extra: Vec<_> = got_rows.difference(&want_rows).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && got.len() == want.len(),
        "the store differs from the import never killed: {} rows against {}; missing {missing:?}; extra {extra:?}",
        got.len(),
        want.len()
    );
    let store = env.store().await;
    let runs = store.runs("h", 100).await.unwrap();
    assert!(
        runs.iter().all(|r| r.finished_at.is_some()),
        "every killed run was closed in the history"
    );
    println!(
        "sigkill: {kills} SIGKILLs during one import of {} people, restarted each time: lost = 0, duplicated = 0, differing = 0; every table equal to an import never killed",
        served.len()
    );
}

/// A TCP proxy to PostgreSQL that can cut every connection it carries.
struct Proxy {
    port: u16,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    refusing: Arc<AtomicBool>,
    cuts: AtomicUsize,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let (held, refuse) = (connections.clone(), refusing.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                held.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            port,
            connections,
            refusing,
            cuts: AtomicUsize::new(0),
        }
    }

    /// Cuts every connection, and refuses new ones for `outage`.
    async fn cut(&self, outage: Duration) {
        self.refusing.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
        self.cuts.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(outage).await;
        self.refusing.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_connections_cut_mid_run_lose_nothing() {
    use sqlx::Connection as _;
    let base = std::env::var("TRIBUTARY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let parsed = url::Url::parse(&base).unwrap();
    let upstream = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432)
    );
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is needed: {e}"));
    let schema = format!("cut_{}_{}", std::process::id(), rand::random::<u32>());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let proxy = Proxy::start(upstream).await;
    let mut through = parsed.clone();
    through.set_port(Some(proxy.port)).unwrap();
    let separator = if through.query().is_some() { '&' } else { '?' };
    let store_url = format!("{through}{separator}options[search_path]={schema}");

    let served = Arc::new(people(72, 5_000));
    let fake = service(served.clone(), Duration::from_millis(60)).await;
    let env = env_for(tempfile::tempdir().unwrap(), &store_url, &fake.base, 0);
    let limits = env.plan().daemon.limits;
    let mut rng = StdRng::seed_from_u64(12);
    let (mut runs, mut failed) = (0, 0);
    loop {
        runs += 1;
        assert!(runs <= 40, "no complete pass in 40 runs");
        let done = AtomicBool::new(false);
        let run = async {
            let result = env
                .run_with(
                    "h",
                    RunOptions {
                        limits,
                        // A run cut while releasing its lease leaves it held: the next
                        // run waits for it to expire, as the daemon would.
                        lease_ttl: Duration::from_secs(2),
                        lease_wait: Duration::from_secs(10),
                        ..RunOptions::default()
                    },
                )
                .await;
            done.store(true, Ordering::SeqCst);
            result
        };
        // Cut every connection at random moments, eight times in all.
        let cutter = async {
            while proxy.cuts.load(Ordering::SeqCst) < 8 {
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..700))).await;
                if done.load(Ordering::SeqCst) {
                    break;
                }
                proxy.cut(Duration::from_millis(200)).await;
            }
        };
        let (result, ()) = tokio::join!(run, cutter);
        match result {
            Ok(summary) if summary.outcome == RunOutcome::Completed => break,
            Ok(summary) => panic!("unexpected outcome {summary:?}"),
            Err(RunError::Failed { .. } | RunError::Store { .. }) => failed += 1,
            Err(other) => panic!("{other}"),
        }
    }
    // Read back directly, not through the proxy.
    let direct = format!(
        "{base}{}options[search_path]={schema}",
        if base.contains('?') { '&' } else { '?' }
    );
    let check = SyncEnv::with_store(tempfile::tempdir().unwrap(), direct);
    assert_exact(72, &check, &served).await;
    let cuts = proxy.cuts.load(Ordering::SeqCst);
    assert!(cuts >= 5, "only {cuts} cuts happened mid-run");
    println!(
        "postgresql cut: {cuts} cuts of every connection mid-run, {failed} of {runs} runs failed and were run again: lost = 0, duplicated = 0, differing = 0"
    );
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_run_clearly_and_loses_nothing() {
    let served = Arc::new(people(73, 5_000));
    let fake = service(served.clone(), Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tributary.db").display());
    let env = env_for(dir, &url, &fake.base, 0);
    let mut failures = Vec::new();
    // The disk fills at 1, 2, 3 and 4 MiB: the store, its WAL or a checkpoint cannot
    // grow past the limit (RLIMIT_FSIZE; SIGXFSZ ignored, so writes fail with EFBIG
    // as they would on a full disk).
    for mib in 1..=4u64 {
        let mut command = tributary(&env);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let limit = libc::rlimit {
                    rlim_cur: mib * 1024 * 1024,
                    rlim_max: mib * 1024 * 1024,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = command.output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            break;
        }
        assert_eq!(out.status.code(), Some(1), "a clean failure: {stderr}");
        // SQLite reports a write refused with EFBIG as `disk I/O error` (code 778), a
        // device out of space as `database or disk is full`.
        let error = stderr
            .lines()
            .rfind(|l| l.starts_with("error:"))
            .unwrap_or_default()
            .to_string();
        assert!(
            error.contains("disk I/O error") || error.contains("full"),
            "the error names the disk: {stderr}"
        );
        failures.push(error);
    }
    assert!(!failures.is_empty(), "the disk never filled");
    finish(&env).await;
    assert_exact(73, &env, &served).await;
    println!(
        "full disk: {} runs failed on a full disk (first: {}), then the import completed: lost = 0, duplicated = 0, differing = 0",
        failures.len(),
        failures[0].trim()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_fails_the_run_clearly_and_changes_nothing() {
    let served = Arc::new(people(74, 3_000));
    let fake = service(served.clone(), Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tributary.db");
    let url = format!("sqlite://{}", path.display());
    let env = env_for(dir, &url, &fake.base, 2);
    let first = tributary(&env).output().await.unwrap();
    assert!(first.status.success(), "{first:?}");
    let before = env.all_contacts().await.len();
    let fitting = served[..500]
        .iter()
        .filter(|p| p.notes.len() <= MAX_VALUE)
        .count();
    assert_eq!(before, fitting, "two pages of the budget");

    // The store's files made read-only: immutable as root (root ignores permission
    // bits), mode 0444 otherwise. The guard undoes it however the test ends.
    let guard = ReadOnly::set(&path);
    let out = tributary(&env).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    drop(guard);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error = stderr
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("readonly") || error.contains("read-only") || error.contains("ermission"),
        "the error says why: {stderr}"
    );
    assert_eq!(env.all_contacts().await.len(), before, "nothing changed");
    finish(&env).await;
    assert_exact(74, &env, &served).await;
    println!(
        "read-only store: the run failed with `{error}`; the store was unchanged and the next runs completed: lost = 0, duplicated = 0, differing = 0"
    );
}

/// A file made read-only for the lifetime of the value.
struct ReadOnly {
    path: std::path::PathBuf,
    immutable: bool,
}

/// `FS_IMMUTABLE_FL` of `linux/fs.h`.
const FS_IMMUTABLE_FL: libc::c_long = 0x10;

impl ReadOnly {
    fn set(path: &std::path::Path) -> ReadOnly {
        // SAFETY: geteuid has no preconditions.
        let immutable = unsafe { libc::geteuid() } == 0;
        if immutable {
            set_flag(path, true).unwrap();
        } else {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        ReadOnly {
            path: path.to_path_buf(),
            immutable,
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.immutable {
            let _ = set_flag(&self.path, false);
        } else {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600));
        }
    }
}

fn set_flag(path: &std::path::Path, on: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(path)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: the ioctls read and write one c_long through valid pointers on an open fd.
    unsafe {
        if libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        flags = if on {
            flags | FS_IMMUTABLE_FL
        } else {
            flags & !FS_IMMUTABLE_FL
        };
        if libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
