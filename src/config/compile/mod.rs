//! Stage 3, compile: each spec into its runnable form (ripgrep's `LowArgs` -> `HiArgs`
//! shape: `*Spec` is what was written, `plan::*` is what runs). Templates are compiled
//! and their variables checked against the documented context, JSONPaths parsed,
//! defaults applied, importers matched against their connector.
//!
//! One module per file kind, one function per section of a file:
//! - [`daemon`]: the daemon config, `tributary.yaml`;
//! - [`connector`]: a connector, section by section, through
//!   [`context`] (templates and JSONPaths with their variables checked), [`auth`],
//!   [`pagination`], [`fields`] and [`error_rules`];
//! - [`importer`]: an importer against its compiled connector.
//!
//! Every problem becomes a [`Diagnostic`] with the file, the key path and (through the
//! file's [`Locator`]) the line and column where the key was written. Never reads a
//! file and resolves credentials only when asked.

pub mod auth;
pub mod connector;
pub mod context;
pub mod daemon;
pub mod error_rules;
pub mod fields;
pub mod importer;
pub mod pagination;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::compile::context::Uses;
use crate::config::compile::importer::CompiledSet;
use crate::config::diagnostic::Diagnostic;
use crate::config::read::{DirFiles, SourceFile};
use crate::config::spec::{ConnectorSpec, ImporterSpec};
use crate::plan::{DaemonConfig, Plan};

/// Compiles every connector, then every importer against its compiled connector. The
/// plan is only meaningful when no diagnostic is an error; the caller decides.
pub fn plan(
    daemon: DaemonConfig,
    connector_files: &DirFiles<ConnectorSpec>,
    importer_files: &[SourceFile<ImporterSpec>],
    resolve_credentials: bool,
    out: &mut Vec<Diagnostic>,
) -> Plan {
    let mut compiled: CompiledSet = BTreeMap::new();
    for file in &connector_files.files {
        match connector::compile(file, out) {
            Some(c) => {
                compiled.insert(file.id.clone(), (Some(Arc::new(c.connector)), c.uses, file));
            }
            None => {
                compiled.insert(file.id.clone(), (None, Uses::default(), file));
            }
        }
    }

    let mut importers = BTreeMap::new();
    for file in importer_files {
        // A connector file that did not parse has its own diagnostics already.
        if connector_files.broken.contains(&file.spec.connector) {
            continue;
        }
        if let Some(importer) = importer::compile(file, &compiled, resolve_credentials, out) {
            importers.insert(importer.id.clone(), Arc::new(importer));
        }
    }

    let connectors = compiled
        .into_iter()
        .filter_map(|(id, (c, _, _))| c.map(|c| (id, c)))
        .collect();
    Plan {
        daemon,
        connectors,
        importers,
    }
}
