//! The last good version of every connector and importer file, kept in the store.
//!
//! A merge that breaks a file must not stop what that file ran, and a restart (a deploy,
//! a crash, a reboot) must not change that: the daemon keeps the content of every file it
//! runs in the store, and at start compiles a file that is broken now from the version the
//! store kept. In-process reloads keep the compiled last good version in memory
//! ([`super::reload`]); this module is what survives the process.
//!
//! Only content whose hash is the one that runs is kept (a file read again for saving must
//! still hash to what was compiled), and a file that no longer exists is forgotten, so a
//! file removed and restored broken later does not bring back an old version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::app;
use crate::config::load::{self, BrokenFiles, LoadOptions};
use crate::config::read::Overlay;
use crate::daemon::reload::sha256_hex;
use crate::store::{ConfigFileText, Store};

/// How many files one transaction keeps: bounds memory and transaction size at the first
/// start of a large deployment.
const SAVE_BATCH: usize = 500;

/// What the start-up restore added to the plan.
#[derive(Debug, Default)]
pub struct Restored {
    /// Importers that run the last good version the store kept, by id.
    pub kept: Vec<String>,
    /// The SHA-256 of each kept version that stands in for a broken file, by path.
    pub hashes: BTreeMap<PathBuf, String>,
}

/// At start: every importer that cannot run from the files as they are now (its file or
/// its connector's file is broken) but can from the versions the store kept is compiled
/// from those and added to `loaded.plan`. The diagnostics stay those of the files on disk.
pub async fn restore(config: &Path, loaded: &mut app::Loaded, store: &dyn Store) -> Restored {
    let broken = broken_paths(config, loaded);
    if broken.is_empty() {
        return Restored::default();
    }
    let keys: Vec<String> = broken.iter().map(|p| key(p)).collect();
    let kept = match store.config_file_texts(&keys).await {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read the last good versions of the broken files; they do not run until fixed.");
            return Restored::default();
        }
    };
    if kept.is_empty() {
        return Restored::default();
    }
    let hashes: BTreeMap<PathBuf, String> = kept
        .iter()
        .map(|f| (PathBuf::from(&f.path), f.sha256.clone()))
        .collect();
    let overlay: Overlay = kept
        .into_iter()
        .map(|f| (PathBuf::from(f.path), f.text))
        .collect();
    let report = load::load_overlaid(config, LoadOptions::default(), &overlay);
    let Some(restored) = report.usable else {
        return Restored::default();
    };
    let mut result = Restored::default();
    for (id, importer) in restored.importers {
        if loaded.plan.importers.contains_key(&id)
            || !(overlay.contains_key(&importer.file)
                || overlay.contains_key(&importer.connector.file))
        {
            continue;
        }
        for path in [&importer.file, &importer.connector.file] {
            if let Some(hash) = hashes.get(path) {
                result.hashes.insert(path.clone(), hash.clone());
            }
        }
        loaded
            .plan
            .connectors
            .entry(importer.connector.id.clone())
            .or_insert_with(|| importer.connector.clone());
        tracing::warn!(importer = %id, "Its file (or its connector's) is broken; the last good version kept in the store runs until it is fixed.");
        result.kept.push(id.clone());
        loaded.plan.importers.insert(id, importer);
    }
    result
}

/// Connector and importer files (dangling links included) that have an error now.
fn broken_paths(config: &Path, loaded: &app::Loaded) -> Vec<PathBuf> {
    let broken = BrokenFiles::new(config, &loaded.diagnostics);
    if broken.is_empty() {
        return Vec::new();
    }
    let daemon = &loaded.plan.daemon;
    let mut paths = Vec::new();
    for dir in [&daemon.connectors_dir, &daemon.importers_dir] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        paths.extend(
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|path| broken.contains(path)),
        );
    }
    paths
}

/// The store's key for a file: its path as the daemon reads it.
fn key(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Keeps the store's copy of the files that run current.
#[derive(Debug, Default)]
pub struct Keeper {
    /// What the store holds: SHA-256 by key.
    saved: BTreeMap<String, String>,
}

impl Keeper {
    /// Reads what the store holds.
    pub async fn load(store: &dyn Store) -> Keeper {
        match store.config_file_hashes().await {
            Ok(saved) => Keeper { saved },
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the last good config versions kept in the store.");
                Keeper::default()
            }
        }
    }

    /// Saves every running file whose kept version differs (`running`: SHA-256 of what
    /// runs, by path) and forgets the files that no longer exist. A failure is logged:
    /// what runs now is not affected, only what a restart could fall back to.
    pub async fn persist(&mut self, store: &dyn Store, running: &BTreeMap<PathBuf, String>) {
        let stale: Vec<(PathBuf, String)> = running
            .iter()
            .filter(|(path, hash)| self.saved.get(&key(path)) != Some(*hash))
            .map(|(path, hash)| (path.clone(), hash.clone()))
            .collect();
        for chunk in stale.chunks(SAVE_BATCH) {
            // Files are read on a blocking thread: at the first start of a large
            // deployment they are thousands, and the runtime's two workers serve `/healthz`.
            let chunk = chunk.to_vec();
            let batch = tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .filter_map(|(path, hash)| {
                        // Kept only if it is still the content that was compiled.
                        let text = std::fs::read_to_string(&path).ok()?;
                        (sha256_hex(text.as_bytes()) == hash).then(|| ConfigFileText {
                            path: key(&path),
                            sha256: hash,
                            text,
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            self.save(store, batch, Vec::new()).await;
        }
        let forget: Vec<String> = self
            .saved
            .keys()
            .filter(|k| !running.contains_key(Path::new(k)) && !Path::new(k).exists())
            .cloned()
            .collect();
        self.save(store, Vec::new(), forget).await;
    }

    async fn save(&mut self, store: &dyn Store, save: Vec<ConfigFileText>, forget: Vec<String>) {
        if save.is_empty() && forget.is_empty() {
            return;
        }
        match store.save_config_files(&save, &forget).await {
            Ok(()) => {
                for file in save {
                    self.saved.insert(file.path, file.sha256);
                }
                for key in forget {
                    self.saved.remove(&key);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, files = save.len(), "Cannot keep the last good config versions in the store; a restart with a broken file would not run its last good version.");
            }
        }
    }
}
