//! Hot reload: connector and importer files merged in Git reach the running daemon within
//! seconds, only where something changed, and a broken file never stops the good ones.
//!
//! Triggers: file-system events on both directories (watched as directories, since
//! editors and checkouts replace files by rename; the directories holding any symlink on
//! the way to them are watched too, so git-sync's swap of a symlink renamed over the old
//! one is seen), debounced; SIGHUP; and a periodic rescan as a safety net for file
//! systems without events. Each trigger first hashes the whole tree (names and contents):
//! when nothing changed, nothing is compiled and the generation stays.
//!
//! A reload compiles the tree aside, keeps the last good version of every importer whose
//! file (or whose connector's file) is now broken, and hands the result to the scheduler,
//! which compares each importer's `revision` with the running one: added importers are
//! scheduled, changed ones take effect from their next run, removed ones are dropped
//! (their state stays in the store, so restoring the file resumes them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use notify::RecursiveMode;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::app;
use crate::config::diagnostic::Diagnostic;
use crate::config::load::BrokenFiles;
use crate::daemon::last_good;
use crate::daemon::scheduler::{Handle, ReloadSummary};
use crate::plan::{DaemonConfig, Importer, Plan};
use crate::store::Store;

/// How long file events are gathered before a reload: a checkout writing a hundred files
/// makes one reload, not a hundred.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// The safety net for file systems that send no events (some network mounts).
pub const RESCAN: Duration = Duration::from_secs(60);

/// What `/status` shows of the configuration, so a GitOps pipeline can confirm that a
/// merge was applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigView {
    /// Rises by one with each reload that changed what runs or what is reported.
    pub generation: u64,
    /// When the configuration was last read (start or reload).
    pub loaded_at: DateTime<Utc>,
    /// What started the last reload (`start`, `files`, `SIGHUP`, `rescan`).
    pub trigger: String,
    /// What the last reload did, in words.
    pub result: String,
    /// Set when `tributary.yaml` changed since the start: its settings need a restart.
    pub restart_needed: Option<String>,
    /// Every file that runs, relative to the config file's directory when below it, with
    /// the SHA-256 of the content that runs (the last good one for a broken file).
    pub files: BTreeMap<String, String>,
    /// Problems in the files as they are now (broken files run their last good version).
    pub errors: Vec<String>,
}

/// Shared between the reloader (writer) and the HTTP handlers (readers).
pub type SharedConfig = Arc<RwLock<ConfigState>>;

/// The configuration as the daemon runs it.
#[derive(Debug)]
pub struct ConfigState {
    /// What `/status` shows.
    pub view: ConfigView,
    /// Diagnostics of the last load, for `run` requests naming a broken importer.
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads the tree again when asked and applies the difference.
pub struct Reloader {
    config_path: PathBuf,
    /// `tributary.yaml` as the daemon started with it.
    daemon: DaemonConfig,
    daemon_file_hash: String,
    /// The importers scheduled, in the version that runs.
    running: BTreeMap<String, Arc<Importer>>,
    /// SHA-256 of every file that runs, by absolute path.
    running_files: BTreeMap<PathBuf, String>,
    /// Hash of the whole tree at the last load: unchanged means nothing to do.
    tree_hash: String,
    scheduler: Handle,
    shared: SharedConfig,
    store: Arc<dyn Store>,
    /// The store's copy of the files that run, for a restart with a broken file.
    keeper: Option<last_good::Keeper>,
}

impl Reloader {
    /// The state after the start-up load of `plan` (already scheduled), in which the
    /// importers of `restored` run the last good versions the store kept.
    pub fn new(
        config_path: &Path,
        plan: &Plan,
        diagnostics: Vec<Diagnostic>,
        scheduler: Handle,
        store: Arc<dyn Store>,
        restored: &last_good::Restored,
    ) -> (Reloader, SharedConfig) {
        let daemon = plan.daemon.clone();
        let running: BTreeMap<String, Arc<Importer>> = plan
            .importers
            .iter()
            .map(|(id, i)| (id.clone(), Arc::clone(i)))
            .collect();
        let tree = tree_files(&daemon);
        let mut running_files = file_hashes(running.values(), &tree);
        running_files.extend(restored.hashes.clone());
        let view = ConfigView {
            generation: 1,
            loaded_at: Utc::now(),
            trigger: "start".into(),
            result: format!(
                "{} importers scheduled{}",
                running.len(),
                kept_note(&restored.kept)
            ),
            restart_needed: None,
            files: relative_names(&daemon, &running_files),
            errors: error_lines(&diagnostics),
        };
        crate::metrics::config_loaded(view.generation, broken_file_count(&diagnostics));
        let shared = Arc::new(RwLock::new(ConfigState { view, diagnostics }));
        let reloader = Reloader {
            config_path: config_path.to_path_buf(),
            daemon_file_hash: sha256_file(&daemon.file).unwrap_or_default(),
            tree_hash: tree_hash(config_path, &tree),
            daemon,
            running,
            running_files,
            scheduler,
            shared: Arc::clone(&shared),
            store,
            keeper: None,
        };
        (reloader, shared)
    }

    /// Brings the store's copy of the running files up to date (the first time, it reads
    /// what the store holds). Called after the start and after each reload.
    pub async fn keep_last_good(&mut self) {
        let keeper = match &mut self.keeper {
            Some(keeper) => keeper,
            None => self
                .keeper
                .insert(last_good::Keeper::load(&*self.store).await),
        };
        keeper.persist(&*self.store, &self.running_files).await;
    }

    /// What to watch, and which events matter: entries of both config directories and
    /// every symlink on the way to them (git-sync renames a new one over the old).
    pub fn watch_set(&self) -> WatchSet {
        let mut set = WatchSet::default();
        for dir in [&self.daemon.connectors_dir, &self.daemon.importers_dir] {
            set.directories.insert(dir.clone());
            set.entries_of.insert(dir.clone());
            let mut prefix = PathBuf::new();
            for component in dir.components() {
                let parent = prefix.clone();
                prefix.push(component);
                if prefix.is_symlink() && !parent.as_os_str().is_empty() {
                    set.directories.insert(parent);
                    set.files.insert(prefix.clone());
                }
            }
        }
        // The config file's own directory is not watched: it often holds the SQLite store,
        // whose every write would wake the watcher, and a change of `tributary.yaml` only
        // needs a restart anyway (SIGHUP and the rescan report it).
        set.directories.retain(|p| p.is_dir());
        set
    }

    /// Reads the tree again and applies what changed; `None` when nothing changed (or
    /// `tributary.yaml` is broken and nothing was applied).
    pub async fn reload(&mut self, trigger: &str) -> Option<ReloadSummary> {
        // Reading, hashing and compiling thousands of files is blocking work: done on a
        // blocking thread, so the runtime's workers keep serving `/healthz` and the runs.
        let (daemon, config_path) = (self.daemon.clone(), self.config_path.clone());
        let (tree, hash) = off_the_runtime("reading the config tree", move || {
            let tree = tree_files(&daemon);
            let hash = tree_hash(&config_path, &tree);
            (tree, hash)
        })
        .await?;
        if hash == self.tree_hash {
            tracing::debug!(trigger, "Configuration unchanged.");
            return None;
        }
        self.tree_hash = hash;
        let restart_needed = (sha256_file(&self.daemon.file).unwrap_or_default()
            != self.daemon_file_hash)
            .then(|| {
                format!(
                    "{} changed since the start; its settings (store, listen, concurrency, ...) apply at the next restart",
                    self.daemon.file.display()
                )
            });
        if let Some(message) = &restart_needed {
            tracing::warn!("{message}");
        }
        let config_path = self.config_path.clone();
        let loaded = off_the_runtime("compiling the configuration", move || {
            app::load_tolerant(&config_path)
        })
        .await?;
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(diagnostics) => {
                // `tributary.yaml` itself is broken: nothing is applied.
                for d in diagnostics.iter().filter(|d| d.is_error()) {
                    tracing::error!("Reload refused: {d}");
                }
                let mut state = self.shared.write().expect("config lock");
                state.view.generation += 1;
                state.view.loaded_at = Utc::now();
                state.view.trigger = trigger.into();
                state.view.result = format!(
                    "refused: {} is broken; everything runs as before",
                    self.daemon.file.display()
                );
                state.view.restart_needed = restart_needed;
                state.view.errors = error_lines(&diagnostics);
                crate::metrics::config_loaded(
                    state.view.generation,
                    broken_file_count(&diagnostics),
                );
                crate::metrics::reload("refused");
                state.diagnostics = diagnostics;
                return None;
            }
        };
        let broken = BrokenFiles::new(&self.config_path, &loaded.diagnostics);
        let mut next: BTreeMap<String, Arc<Importer>> = loaded
            .plan
            .importers
            .iter()
            .map(|(id, i)| (id.clone(), Arc::clone(i)))
            .collect();
        // The last good version of an importer whose file, or whose connector's file, is
        // broken keeps running until the file is fixed.
        let mut kept = Vec::new();
        for (id, old) in &self.running {
            if next.contains_key(id) || !old.file.exists() {
                continue;
            }
            if broken.contains(&old.file) || broken.contains(&old.connector.file) {
                next.insert(id.clone(), Arc::clone(old));
                kept.push(id.clone());
            }
        }
        for id in &kept {
            tracing::warn!(importer = %id, "Its file (or its connector's) is broken; the last good version keeps running.");
        }
        // Unchanged importers keep the compiled form that runs: one copy in memory, not two.
        for (id, importer) in next.iter_mut() {
            if let Some(old) = self.running.get(id)
                && old.revision == importer.revision
            {
                *importer = Arc::clone(old);
            }
        }
        let summary = self
            .scheduler
            .reload(next.values().cloned().collect())
            .await
            .unwrap_or_default();
        // Hashes of what runs: the new content for what was (re)loaded, the old for what
        // was kept.
        let mut files = file_hashes(
            next.iter()
                .filter(|(id, _)| !kept.contains(id))
                .map(|(_, i)| i),
            &tree,
        );
        for id in &kept {
            let old = &self.running[id];
            for path in [&old.file, &old.connector.file] {
                if let Some(hash) = self.running_files.get(path) {
                    files.insert(path.clone(), hash.clone());
                }
            }
        }
        self.running = next;
        self.running_files = files;
        let result = format!(
            "{} added, {} changed, {} removed, {} unchanged; {} broken file(s){}",
            summary.added.len(),
            summary.changed.len(),
            summary.removed.len(),
            summary.unchanged,
            error_lines(&loaded.diagnostics).len(),
            kept_note(&kept)
        );
        tracing::info!(trigger, "Configuration reloaded: {result}");
        for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
            tracing::error!(file = %d.file.display(), "{d}");
        }
        {
            let mut state = self.shared.write().expect("config lock");
            state.view.generation += 1;
            state.view.loaded_at = Utc::now();
            state.view.trigger = trigger.into();
            state.view.result = result;
            state.view.restart_needed = restart_needed;
            state.view.files = relative_names(&self.daemon, &self.running_files);
            state.view.errors = error_lines(&loaded.diagnostics);
            crate::metrics::config_loaded(
                state.view.generation,
                broken_file_count(&loaded.diagnostics),
            );
            crate::metrics::reload(if state.view.errors.is_empty() {
                "applied"
            } else {
                "applied_with_errors"
            });
            state.diagnostics = loaded.diagnostics;
        }
        // After `/status` shows the reload: saving what runs does not change it.
        self.keep_last_good().await;
        Some(summary)
    }
}

/// Directories to watch and the events among theirs that matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSet {
    /// Watched, not recursively.
    pub directories: BTreeSet<PathBuf>,
    /// Directories any of whose entries matter.
    pub entries_of: BTreeSet<PathBuf>,
    /// Single paths that matter (the config file, symlinks on the way).
    pub files: BTreeSet<PathBuf>,
}

impl WatchSet {
    fn matters(&self, path: &Path) -> bool {
        self.files.contains(path)
            || path
                .parent()
                .is_some_and(|parent| self.entries_of.contains(parent))
    }
}

/// Watches the config directories and sends `"files"` on a trigger channel for each
/// debounced batch of events. Dropping it stops the watch; `rewatch` follows a symlink
/// swap.
pub struct Watcher {
    debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    /// Each watched path with the directory it named when the watch was set.
    watched: BTreeMap<PathBuf, Option<PathBuf>>,
    /// Which events matter, shared with the event handler.
    relevant: Arc<RwLock<WatchSet>>,
}

impl Watcher {
    /// Starts watching `paths`; each batch of events sends on `trigger`.
    ///
    /// # Errors
    /// The platform's watcher cannot start (then the periodic rescan still works).
    pub fn start(
        set: WatchSet,
        trigger: tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> notify::Result<Watcher> {
        let relevant = Arc::new(RwLock::new(WatchSet::default()));
        let filter = Arc::clone(&relevant);
        let debouncer = notify_debouncer_full::new_debouncer(
            DEBOUNCE,
            None,
            move |result: notify_debouncer_full::DebounceEventResult| match result {
                Ok(events) => {
                    let set = filter.read().expect("watch set lock");
                    if events.iter().any(|e| {
                        e.event.need_rescan()
                            || (changes_content(&e.event.kind)
                                && e.paths.iter().any(|p| set.matters(p)))
                    }) {
                        let _ = trigger.send("files");
                    }
                }
                Err(errors) => {
                    for error in errors {
                        tracing::warn!(error = %error, "File watch error; the periodic rescan still applies changes.");
                    }
                    let _ = trigger.send("files");
                }
            },
        )
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
        let mut watcher = Watcher {
            debouncer,
            watched: BTreeMap::new(),
            relevant,
        };
        watcher.rewatch(set);
        Ok(watcher)
    }

    /// Watches exactly `paths` again when they differ from the watched ones or name
    /// other directories than when they were watched (a symlink swap: a watch on the old
    /// directory would never see another event). Returns whether it re-watched.
    pub fn rewatch(&mut self, set: WatchSet) -> bool {
        let current: BTreeMap<PathBuf, Option<PathBuf>> = set
            .directories
            .iter()
            .cloned()
            .map(|p| {
                let target = p.canonicalize().ok();
                (p, target)
            })
            .collect();
        *self.relevant.write().expect("watch set lock") = set;
        if current == self.watched {
            return false;
        }
        for old in std::mem::take(&mut self.watched).into_keys() {
            let _ = self.debouncer.unwatch(&old);
        }
        for (path, target) in current {
            match self.debouncer.watch(&path, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(path, target);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "Cannot watch; changes there are seen by the periodic rescan.");
                }
            }
        }
        true
    }
}

/// Runs blocking work on tokio's blocking pool. `None` (logged) if it panicked: the
/// reload is dropped and everything runs as before; the next trigger tries again.
async fn off_the_runtime<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::error!(error = %e, "Reload failed while {what}; everything runs as before.");
            None
        }
    }
}

/// Whether an event can change what a file holds. Reads are not: notify reports every
/// open and close of a watched file (`Access`), and a reload reads every file of the tree,
/// so a reload woken by reads would wake the next one, for ever.
fn changes_content(kind: &notify::EventKind) -> bool {
    !matches!(kind, notify::EventKind::Access(_))
}

/// ", last good version kept for a, b", or nothing.
fn kept_note(kept: &[String]) -> String {
    if kept.is_empty() {
        String::new()
    } else {
        format!(", last good version kept for {}", kept.join(", "))
    }
}

fn broken_file_count(diagnostics: &[Diagnostic]) -> usize {
    diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| &d.file)
        .collect::<BTreeSet<_>>()
        .len()
}

fn error_lines(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect()
}

/// SHA-256 of each running importer's file and its connector's file, from the tree's
/// hashes (read once per trigger); a file outside the tree is read on its own.
fn file_hashes<'a>(
    importers: impl Iterator<Item = &'a Arc<Importer>>,
    tree: &BTreeMap<PathBuf, String>,
) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    for importer in importers {
        for path in [&importer.file, &importer.connector.file] {
            if files.contains_key(path) {
                continue;
            }
            if let Some(hash) = tree.get(path).cloned().or_else(|| sha256_file(path)) {
                files.insert(path.clone(), hash);
            }
        }
    }
    files
}

fn relative_names(
    daemon: &DaemonConfig,
    files: &BTreeMap<PathBuf, String>,
) -> BTreeMap<String, String> {
    let base = daemon.file.parent().unwrap_or(Path::new("/"));
    files
        .iter()
        .map(|(path, hash)| {
            let name = path.strip_prefix(base).unwrap_or(path);
            (name.display().to_string(), hash.clone())
        })
        .collect()
}

/// The SHA-256 of a file's content in hex, as `sha256sum` prints it.
pub fn sha256_file(path: &Path) -> Option<String> {
    Some(sha256_hex(&std::fs::read(path).ok()?))
}

/// The SHA-256 of `bytes` in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of every file in both directories (following symlinks), read once per
/// trigger: compared whole it says whether anything changed, entry by entry it gives the
/// hashes `/status` shows without reading the files again.
fn tree_files(daemon: &DaemonConfig) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    for dir in [&daemon.connectors_dir, &daemon.importers_dir] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.is_file()
                && let Some(hash) = sha256_file(&path)
            {
                files.insert(path, hash);
            }
        }
    }
    files
}

/// One hash of the config file and the tree's file hashes: equal means nothing to reload.
fn tree_hash(config_path: &Path, files: &BTreeMap<PathBuf, String>) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&std::fs::read(config_path).unwrap_or_default());
    for (path, hash) in files {
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update(&[0]);
        hasher.update(hash.as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}
