//! The pipeline from files to a [`Plan`], stage by stage:
//!
//! 1. [`read`](crate::config::read): find and parse `tributary.yaml`, `connectors.d/` and
//!    `importers.d/`, each file into its `*Spec` with positions;
//! 2. [`check`](crate::config::check): rules across files that need no compilation
//!    (service names, custom-field tags of one service, duplicate data streams);
//! 3. [`compile`](crate::config::compile): each spec into its runnable form, one
//!    function per section, checking templates and JSONPaths against the documented
//!    context and importers against their connector;
//! 4. the [`Plan`], when no diagnostic is an error.
//!
//! Every problem of every file is collected before anything is refused. Never resolves a
//! credential unless asked and never touches the network or the store.

use std::path::{Component, Path, PathBuf};

use crate::config::diagnostic::{self, Diagnostic};
use crate::config::read::Overlay;
use crate::config::spec::{ConnectorSpec, ImporterSpec};
use crate::config::{check, compile, read};
use crate::plan::Plan;

/// Kept here for callers that read a single file with the loader's diagnostics.
pub use crate::config::read::parse_yaml;

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "TRIBUTARY_CONFIG";
/// The system-wide config file.
pub const SYSTEM_CONFIG: &str = "/etc/tributary/tributary.yaml";
/// The config file in the current directory.
pub const LOCAL_CONFIG: &str = "tributary.yaml";

/// Which config file to use: `--config`, then `$TRIBUTARY_CONFIG`, then
/// `./tributary.yaml`, then `/etc/tributary/tributary.yaml`, so that an admin's CLI and
/// the service open the same store. When none of the last two exists, the answer is
/// `./tributary.yaml`, which then need not exist (all defaults, relative to the current
/// directory).
pub fn locate_config(cli_flag: Option<&Path>) -> PathBuf {
    if let Some(flag) = cli_flag {
        return flag.to_path_buf();
    }
    if let Some(env) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(env);
    }
    let local = PathBuf::from(LOCAL_CONFIG);
    if local.exists() {
        return local;
    }
    let system = PathBuf::from(SYSTEM_CONFIG);
    if system.exists() {
        return system;
    }
    local
}

/// Options of a load.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Resolve every credential reference and report those that do not resolve (a
    /// server-side check; a CI job has no secrets).
    pub resolve_credentials: bool,
}

/// The outcome of reading a configuration: the plan when there is no error, and every
/// diagnostic (errors and warnings), sorted.
#[derive(Debug)]
pub struct LoadReport {
    /// The plan, `None` when any diagnostic is an error.
    pub plan: Option<Plan>,
    /// What a long-running daemon can run while some files are broken: every importer
    /// whose own file and whose connector's file have no error. `None` only when
    /// `tributary.yaml` itself has an error (then nothing can run). One bad merge must
    /// never keep every other importer of a server down.
    pub usable: Option<Plan>,
    /// Every problem found, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads the whole tree and builds the plan, or returns every error (warnings included,
/// for context) when there is any.
///
/// # Errors
/// Every diagnostic, sorted, when at least one is an error.
pub fn load_plan(config_path: &Path) -> Result<Plan, Vec<Diagnostic>> {
    let report = load(config_path, LoadOptions::default());
    match report.plan {
        Some(plan) => Ok(plan),
        None => Err(report.diagnostics),
    }
}

/// Reads the whole tree: the daemon config, every connector and every importer.
pub fn load(config_path: &Path, options: LoadOptions) -> LoadReport {
    load_overlaid(config_path, options, &Overlay::new())
}

/// [`load`], reading the connector and importer files named in `overlay` from there
/// instead of the disk (the last good versions the daemon kept of broken files).
pub fn load_overlaid(config_path: &Path, options: LoadOptions, overlay: &Overlay) -> LoadReport {
    let mut diagnostics = Vec::new();
    let plan = run_stages(config_path, options, overlay, &mut diagnostics);
    diagnostic::sort(&mut diagnostics);
    let usable = plan.and_then(|plan| usable_part(plan, config_path, &diagnostics));
    let plan = if diagnostic::has_errors(&diagnostics) {
        None
    } else {
        usable.clone()
    };
    LoadReport {
        plan,
        usable,
        diagnostics,
    }
}

/// The files a load found an error in, recognised by the path a directory listing gives
/// them: what runs from a tree with broken files (the usable part of a plan, the last good
/// versions a daemon keeps running or restores) is decided by this one rule.
#[derive(Debug, Clone)]
pub struct BrokenFiles {
    root: PathBuf,
    shown: std::collections::BTreeSet<PathBuf>,
}

impl BrokenFiles {
    /// The files with an error among `diagnostics` of a load of `config_path`.
    pub fn new(config_path: &Path, diagnostics: &[Diagnostic]) -> BrokenFiles {
        let config = read::absolute(config_path);
        let root = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let shown = diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.file.clone())
            .collect();
        BrokenFiles { root, shown }
    }

    /// Whether the file at `path` (as read: absolute or relative to the working
    /// directory's view of the tree) has an error.
    pub fn contains(&self, path: &Path) -> bool {
        self.shown
            .contains(read::shown_path(&self.root, path).as_path())
    }

    /// No file has an error.
    pub fn is_empty(&self) -> bool {
        self.shown.is_empty()
    }
}

/// The part of a plan that no error touches: `None` when the daemon config has one,
/// else every importer whose file and whose connector's file are free of errors.
fn usable_part(mut plan: Plan, config_path: &Path, diagnostics: &[Diagnostic]) -> Option<Plan> {
    let broken = BrokenFiles::new(config_path, diagnostics);
    if broken.contains(&read::absolute(config_path)) {
        return None;
    }
    plan.importers.retain(|_, importer| {
        !broken.contains(&importer.file) && !broken.contains(&importer.connector.file)
    });
    plan.connectors
        .retain(|_, connector| !broken.contains(&connector.file));
    Some(plan)
}

fn run_stages(
    config_path: &Path,
    options: LoadOptions,
    overlay: &Overlay,
    out: &mut Vec<Diagnostic>,
) -> Option<Plan> {
    // Read.
    let daemon_file = read::read_daemon_file(config_path, is_default_location(config_path), out)?;
    let daemon = compile::daemon::compile(&daemon_file, options.resolve_credentials, out);
    let connectors = read::read_dir::<ConnectorSpec>(
        &daemon_file,
        &daemon.connectors_dir,
        "connectors_dir",
        overlay,
        out,
    );
    let importers = read::read_dir::<ImporterSpec>(
        &daemon_file,
        &daemon.importers_dir,
        "importers_dir",
        overlay,
        out,
    );
    // Check.
    check::service_names(&connectors.files, out);
    check::service_tags(&connectors.files, out);
    check::duplicate_streams(&importers.files, out);
    // Compile.
    Some(compile::plan(
        daemon,
        &connectors,
        &importers.files,
        options.resolve_credentials,
        out,
    ))
}

fn is_default_location(config_path: &Path) -> bool {
    let normalized: PathBuf = config_path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    normalized == Path::new(LOCAL_CONFIG)
}
