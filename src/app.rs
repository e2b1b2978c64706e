//! The application layer every command and the daemon share: finding and loading the
//! configuration, opening the store it names, setting up logging, exit codes.
//!
//! Exists so that the CLI commands and the daemon never become copies of each other: one
//! place turns `tributary.yaml` into a store (URL, encryption key, retention), one place
//! decides what a broken file means, one place sets up `tracing` from `log_format`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::diagnostic::Diagnostic;
use crate::config::load::{self, LoadOptions};
use crate::plan::{DaemonConfig, LogFormat, Plan};
use crate::store::{self, KeySource, Store, StoreOptions};

/// Process exit codes, shared by `run`, the daemon and everything that hands a run over.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The run or command failed.
    pub const FAILURE: i32 = 1;
    /// Another run holds the importer's lease (`EX_TEMPFAIL`).
    pub const BUSY: i32 = 75;
    /// The configuration is invalid (`EX_CONFIG`); systemd must not restart on it.
    pub const CONFIG: i32 = 78;
}

/// The config file this invocation uses (`--config`, `$TRIBUTARY_CONFIG`,
/// `./tributary.yaml`, `/etc/tributary/tributary.yaml`).
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    load::locate_config(flag)
}

/// Loads the whole tree and requires it to be free of errors (what `run` needs: a
/// person running one importer by hand wants to hear about any broken file).
///
/// # Errors
/// Every diagnostic, when any is an error.
pub fn load_strict(path: &Path) -> Result<Plan, Vec<Diagnostic>> {
    load::load_plan(path)
}

/// What a long-running process loads: the importers that are fine, and the diagnostics
/// of those that are not (reported, then skipped).
pub struct Loaded {
    /// Everything that can run. The daemon config is always valid here.
    pub plan: Plan,
    /// Every problem found, errors included (each names its file, line and key).
    pub diagnostics: Vec<Diagnostic>,
}

/// Loads the tree tolerating broken connector and importer files.
///
/// # Errors
/// Only when `tributary.yaml` itself is broken (or unreadable): every diagnostic.
pub fn load_tolerant(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let report = load::load(path, LoadOptions::default());
    match report.usable {
        Some(plan) => Ok(Loaded {
            plan,
            diagnostics: report.diagnostics,
        }),
        None => Err(report.diagnostics),
    }
}

/// How the store is opened by a process that runs imports (keeps tokens).
///
/// # Errors
/// The `encryption_key` reference does not resolve.
pub fn store_options(daemon: &DaemonConfig) -> anyhow::Result<StoreOptions> {
    let encryption_key = match &daemon.encryption_key {
        Some(reference) => Some(KeySource::Bytes(
            crate::secret::resolve(reference)
                .context("reading `encryption_key`")?
                .expose()
                .as_bytes()
                .to_vec(),
        )),
        None => None,
    };
    let node = crate::store::lease::node_id(daemon.node.as_deref()).map_err(|why| {
        anyhow::anyhow!(
            "{why} (from ${} or `node` in tributary.yaml)",
            crate::store::lease::NODE_ENV
        )
    })?;
    Ok(StoreOptions {
        encryption_key,
        retention: daemon.retention,
        lease_holder: crate::store::lease::LeaseHolder::on_node(node),
        ..StoreOptions::default()
    })
}

/// Opens the store the daemon config names, for a process that runs imports.
///
/// # Errors
/// The key does not resolve, or the store cannot be opened (the URL in the message has
/// its password masked).
pub async fn open_store(daemon: &DaemonConfig) -> anyhow::Result<Arc<dyn Store>> {
    open_store_with(daemon, store_options(daemon)?).await
}

/// Opens the store for a command that only reads and records by hand (`contacts`,
/// `fields`, `status`, `state`): no token key is read or generated.
///
/// # Errors
/// The store cannot be opened.
pub async fn open_store_without_tokens(daemon: &DaemonConfig) -> anyhow::Result<Arc<dyn Store>> {
    let options = StoreOptions {
        retention: daemon.retention,
        keep_tokens: false,
        ..StoreOptions::default()
    };
    open_store_with(daemon, options).await
}

async fn open_store_with(
    daemon: &DaemonConfig,
    options: StoreOptions,
) -> anyhow::Result<Arc<dyn Store>> {
    store::open(&daemon.store_url, options)
        .await
        .with_context(|| {
            format!(
                "opening the store `{}`",
                crate::store::masked_url(&daemon.store_url)
            )
        })
}

/// The daemon config of a tree whose connector or importer files may be broken: what
/// the admin commands need to find the store. Prints a warning when other files have
/// errors (they must not keep an admin from looking at contacts).
///
/// # Errors
/// `tributary.yaml` itself is broken.
pub fn daemon_config(flag: Option<&Path>) -> anyhow::Result<DaemonConfig> {
    let path = config_path(flag);
    match load_tolerant(&path) {
        Ok(loaded) => {
            if loaded.diagnostics.iter().any(Diagnostic::is_error) {
                eprintln!(
                    "warning: connector or importer files have errors (see `tributary validate`); reading the store named by {}",
                    path.display()
                );
            }
            Ok(loaded.plan.daemon)
        }
        Err(diagnostics) => {
            let text: Vec<String> = diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(ToString::to_string)
                .collect();
            anyhow::bail!("the daemon config has errors:\n{}", text.join("\n"))
        }
    }
}

/// A runtime for a short command: one thread is enough to talk to the store.
///
/// # Errors
/// The runtime cannot start.
pub fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A runtime for imports: the page writer runs on a blocking thread beside the fetch.
///
/// # Errors
/// The runtime cannot start.
pub fn import_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Sets up `tracing` on stderr: human text (coloured on a terminal, without timestamps
/// under systemd's journal, which adds its own) or one JSON object per line, as
/// `log_format` says. Tributary's own events at `level` unless `RUST_LOG` says
/// otherwise; every other crate's capped by [`crate::logging::allowed`], since their
/// debug output can hold rendered requests. Calling it twice is harmless (the first
/// setup stays).
pub fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,tributary={level}")));
    let registry = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::FilterFn::new(
            crate::logging::allowed,
        ))
        .with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .without_time()
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// Prints diagnostics on stderr, one per line.
pub fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{d}");
    }
}
