//! `tributary daemon`: every importer on its schedule, in one long-running process under
//! systemd, observable over HTTP.
//!
//! Layout: [`clock`] (the scheduler's time, a parameter), [`scheduler`] (when each
//! importer runs), [`http`] (`/healthz`, `/status`, `/metrics`, runs asked for by hand),
//! and this module: the lifecycle. Start: load the tree tolerating broken connector and
//! importer files (reported, skipped: one bad merge must never keep a server down),
//! open the store, listen, tell systemd READY. Stop (SIGTERM, SIGINT): take no new runs,
//! let each run in flight commit the page it is writing, release leases, close the
//! store, exit 0; a second signal exits at once.

pub mod clock;
pub mod http;
pub mod last_good;
pub mod reload;
pub mod scheduler;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::app::{self, exit};
use crate::daemon::clock::SystemClock;
use crate::daemon::scheduler::{EngineExecutor, Handle, Phase, Scheduler, Settings};

/// How long a stop waits for runs in flight to commit their page before exiting anyway
/// (they resume from their last committed checkpoint). Below systemd's default
/// `TimeoutStopSec` of 90 s.
pub const STOP_GRACE: Duration = Duration::from_secs(60);

/// Runs the daemon until a signal stops it; returns the exit code.
///
/// # Errors
/// The runtime cannot start.
pub fn execute(config: &Path) -> anyhow::Result<i32> {
    let loaded = match app::load_tolerant(config) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            app::print_diagnostics(&diagnostics);
            eprintln!(
                "error: {} has errors; the daemon cannot start",
                config.display()
            );
            return Ok(exit::CONFIG);
        }
    };
    app::init_logging(loaded.plan.daemon.log_format, "info");
    let runtime = app::import_runtime()?;
    runtime.block_on(serve(config, loaded))
}

async fn serve(config: &Path, mut loaded: app::Loaded) -> anyhow::Result<i32> {
    for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
        tracing::error!(file = %d.file.display(), line = d.position.map(|p| p.0), key = %d.key, "Skipped a file with an error: {d}");
    }
    for d in loaded.diagnostics.iter().filter(|d| !d.is_error()) {
        tracing::warn!(file = %d.file.display(), "{d}");
    }
    let metrics = match crate::metrics::install() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "Metrics are not recorded.");
            None
        }
    };
    // One daemon per SQLite file: a second one would run every importer twice, one run
    // after the other's (the leases keep them from overlapping, not from repeating).
    let _sqlite_lock = match lock_sqlite_store(&loaded.plan.daemon.store_url) {
        Ok(lock) => lock,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            return Ok(exit::FAILURE);
        }
    };
    let node = match app::store_options(&loaded.plan.daemon) {
        Ok(options) => options.lease_holder.node,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(exit::CONFIG);
        }
    };
    crate::metrics::node(&node);
    let store = match app::open_store(&loaded.plan.daemon).await {
        Ok(store) => store,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            return Ok(exit::FAILURE);
        }
    };
    // A file broken now runs the last good version the store kept of it.
    let restored = last_good::restore(config, &mut loaded, &*store).await;
    let app::Loaded { plan, diagnostics } = loaded;
    let control_token = match &plan.daemon.control_token {
        Some(reference) => match crate::secret::resolve(reference) {
            Ok(value) => Some(Arc::new(value.expose().to_string())),
            Err(e) => {
                eprintln!("error: `control_token`: {e}");
                return Ok(exit::CONFIG);
            }
        },
        None => None,
    };
    let settings = Settings {
        concurrency: plan.daemon.concurrency as usize,
        lease_ttl: plan.daemon.lease,
        limits: plan.daemon.limits,
        ..Settings::default()
    };
    let importers: Vec<_> = plan.importers.values().cloned().collect();
    let executor = Arc::new(EngineExecutor {
        store: Arc::clone(&store),
    });
    let (scheduler, handle) = Scheduler::new(
        importers,
        Arc::clone(&store),
        executor,
        Arc::new(SystemClock),
        settings,
    )
    .await;
    // The reloader hashes every file that runs: before the listener is bound, so that no
    // connection waits behind it.
    let skipped_files = diagnostics.iter().filter(|d| d.is_error()).count();
    let (mut reloader, loaded_config) = reload::Reloader::new(
        config,
        &plan,
        diagnostics,
        handle.clone(),
        Arc::clone(&store),
        &restored,
    );
    // Bound once the schedule is loaded (10,000 importers take a second or two): a
    // connection is either served at once or refused, never left waiting in the backlog.
    let listener = match tokio::net::TcpListener::bind(&plan.daemon.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            let message = format!(
                "cannot listen on `{}` (`listen` in {}): {e}",
                plan.daemon.listen,
                plan.daemon.file.display()
            );
            tracing::error!("{message}");
            eprintln!("error: {message}");
            store.close().await;
            return Ok(exit::FAILURE);
        }
    };
    let state = http::AppState {
        loaded: loaded_config,
        scheduler: handle.clone(),
        store: Arc::clone(&store),
        store_url: crate::store::masked_url(&plan.daemon.store_url),
        config: plan.daemon.file.display().to_string(),
        started_at: Utc::now(),
        metrics,
        control_token,
        node: node.clone(),
    };
    let shutdown = CancellationToken::new();
    let server = {
        let shutdown = shutdown.clone();
        let app = http::router(state.clone());
        tokio::spawn(async move {
            let serving = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await });
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "The HTTP listener failed.");
            }
        })
    };
    let schedule = tokio::spawn(scheduler.run(shutdown.clone()));
    tracing::info!(
        importers = plan.importers.len(),
        skipped_files,
        listen = %plan.daemon.listen,
        store = %state.store_url,
        concurrency = plan.daemon.concurrency,
        node = %node,
        "Daemon started."
    );
    notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = tokio::spawn(watchdog_and_status(handle.clone(), shutdown.clone()));

    // Hot reload: file events, SIGHUP and a periodic rescan all ask the one reloader.
    let (reload_trigger, mut reload_requests) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = match reload::Watcher::start(reloader.watch_set(), reload_trigger.clone()) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot watch the config directories; changes apply at the periodic rescan or on SIGHUP.");
            None
        }
    };
    let reloading = {
        let shutdown = shutdown.clone();
        let retrigger = reload_trigger.clone();
        tokio::spawn(async move {
            reloader.keep_last_good().await;
            let mut rescan = tokio::time::interval(reload::RESCAN);
            rescan.tick().await;
            loop {
                let trigger = tokio::select! {
                    () = shutdown.cancelled() => break,
                    Some(trigger) = reload_requests.recv() => trigger,
                    _ = rescan.tick() => "rescan",
                };
                reloader.reload(trigger).await;
                // A symlink swap makes the same path name another directory: watch that
                // one, and look again for what changed while the watch moved.
                if let Some(watcher) = watcher.as_mut()
                    && watcher.rewatch(reloader.watch_set())
                {
                    let _ = retrigger.send("files");
                }
            }
        })
    };

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration.");
                let _ = reload_trigger.send("SIGHUP");
            }
        }
    }
    tracing::info!("Stopping: no new runs; runs in flight commit their page and stop.");
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: runs in flight commit their page"),
    ]);
    shutdown.cancel();
    let second_signal = async {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    let stopped = tokio::select! {
        result = tokio::time::timeout(STOP_GRACE, schedule) => result.is_ok(),
        () = second_signal => {
            tracing::warn!("Second signal: exiting at once; runs in flight resume from their last committed page.");
            std::process::exit(exit::FAILURE);
        }
    };
    if !stopped {
        tracing::warn!(
            grace_seconds = STOP_GRACE.as_secs(),
            "Runs did not stop within the grace period; exiting. They resume from their last committed page."
        );
    }
    watchdog.abort();
    reloading.abort();
    let _ = server.await;
    store.close().await;
    tracing::info!("Stopped.");
    Ok(if stopped { exit::OK } else { exit::FAILURE })
}

/// Takes the lock that lets one daemon serve an SQLite store: an exclusive lock on
/// `<store>.daemon.lock`, held until the process ends (the kernel drops it with a killed
/// process, so a crash never leaves it behind). `None` for PostgreSQL, which several
/// daemons may share.
///
/// # Errors
/// Another daemon holds it (the message names its pid and says what to do), or the lock
/// file cannot be opened.
pub fn lock_sqlite_store(store_url: &str) -> Result<Option<std::fs::File>, String> {
    use std::io::{Read as _, Seek as _, Write as _};
    if !store_url.starts_with("sqlite:") {
        return Ok(None);
    }
    let Ok(path) = crate::store::sqlite::path_of_url(store_url) else {
        // The store's own open reports a bad URL.
        return Ok(None);
    };
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".daemon.lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| format!("cannot open the daemon lock `{}`: {e}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = writeln!(file, "{}", std::process::id());
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() {
                String::from("another tributary daemon")
            } else {
                format!("another tributary daemon (pid {pid})")
            };
            Err(format!(
                "{who} already serves the SQLite store `{}`; one SQLite store takes one daemon. Stop the other one, or run several nodes on a shared PostgreSQL store (README: Running several nodes).",
                path.display()
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(format!(
            "cannot lock the daemon lock `{}`: {e}",
            lock_path.display()
        )),
    }
}

/// Tells systemd (when it supervises us) what we are doing, never failing the daemon.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(states);
}

/// Pings systemd's watchdog (when `WatchdogSec=` is set) and keeps `STATUS=` current:
/// "12 importers, 2 running, 1 needs credentials, last error: ...".
async fn watchdog_and_status(handle: Handle, shutdown: CancellationToken) {
    let watchdog = sd_notify::watchdog_enabled();
    let period = match watchdog {
        Some(timeout) => (timeout / 2).max(Duration::from_millis(500)),
        None => Duration::from_secs(10),
    };
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let entries = handle.entries();
        let running = entries.iter().filter(|e| e.phase == Phase::Running).count();
        let paused = entries
            .iter()
            .filter(|e| e.phase == Phase::NeedsCredentials)
            .count();
        let last_error = entries
            .iter()
            .filter(|e| e.failures > 0)
            .max_by_key(|e| e.last_run_at)
            .and_then(|e| {
                e.last_error
                    .as_ref()
                    .map(|m| m.chars().take(120).collect::<String>())
            });
        let mut status = format!("{} importers, {running} running", entries.len());
        if paused > 0 {
            status.push_str(&format!(", {paused} need credentials"));
        }
        if let Some(error) = last_error {
            status.push_str(&format!(", last error: {error}"));
        }
        let mut states = vec![sd_notify::NotifyState::Status(&status)];
        if watchdog.is_some() {
            states.push(sd_notify::NotifyState::Watchdog);
        }
        notify(&states);
    }
}
