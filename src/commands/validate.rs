//! `tributary validate`: checks the whole configuration tree and prints every problem at
//! once. Exit 78 (`EX_CONFIG`) on any error, 0 otherwise (warnings included).
//!
//! Never resolves credential references unless `--resolve-credentials` is given (a CI job
//! has no secrets), and never opens the store or the network.

use std::io::Write;

use crate::config::diagnostic::{Diagnostic, has_errors};
use crate::config::load::{LoadOptions, load, locate_config};

/// `EX_CONFIG` from sysexits.h: the configuration is invalid. systemd's
/// `RestartPreventExitStatus=78` stops restart loops on a bad file.
pub const EXIT_CONFIG: i32 = 78;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// `file:line:column: key: message`, one per line.
    #[default]
    Text,
    /// One JSON document: `{"valid": bool, "diagnostics": [...]}`.
    Json,
}

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also check that every credential reference resolves (on a server, not in CI).
    #[arg(long)]
    pub resolve_credentials: bool,
}

/// Runs `validate`.
pub fn execute(config: Option<&std::path::Path>, args: &ValidateArgs) -> anyhow::Result<i32> {
    let config = locate_config(config);
    let report = load(
        &config,
        LoadOptions {
            resolve_credentials: args.resolve_credentials,
        },
    );
    let mut stdout = std::io::stdout().lock();
    write_report(
        &mut stdout,
        &report.diagnostics,
        args.format,
        report.plan.as_ref(),
    )?;
    Ok(if has_errors(&report.diagnostics) {
        EXIT_CONFIG
    } else {
        0
    })
}

/// Writes the diagnostics in `format`; in text, a summary line goes last.
pub fn write_report(
    out: &mut dyn Write,
    diagnostics: &[Diagnostic],
    format: Format,
    plan: Option<&crate::plan::Plan>,
) -> std::io::Result<()> {
    match format {
        Format::Text => {
            for diagnostic in diagnostics {
                writeln!(out, "{diagnostic}")?;
            }
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            let warnings = diagnostics.len() - errors;
            match plan {
                Some(plan) if errors == 0 => writeln!(
                    out,
                    "ok: {} connectors, {} importers, {} warnings",
                    plan.connectors.len(),
                    plan.importers.len(),
                    warnings
                ),
                _ => writeln!(out, "invalid: {errors} errors, {warnings} warnings"),
            }
        }
        Format::Json => {
            let items: Vec<serde_json::Value> = diagnostics
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "severity": d.severity,
                        "file": d.file.display().to_string(),
                        "line": d.position.map(|p| p.0),
                        "column": d.position.map(|p| p.1),
                        "key": d.key,
                        "message": d.message,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "valid": !has_errors(diagnostics),
                "diagnostics": items,
            });
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            )
        }
    }
}
