//! `tributary status`: one row per importer — connector, list, schedule state, progress
//! of the current pass, watermark, last run and result, next run, last error.
//!
//! Reads the store (and the config for what each importer is), so it works with or
//! without a running daemon, on any node sharing the store; the `NODE` column names the
//! node whose run holds each importer's lease.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::app;
use crate::commands::contacts::OutputFormat;
use crate::store::{ImporterState, RunOutcome, RunRecord};

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

/// One importer, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ImporterRow {
    /// Importer id.
    pub importer: String,
    /// Connector id (`-` when its file is broken).
    pub connector: String,
    /// Target list.
    pub list: String,
    /// `idle`, `due`, `running`, `backing off`, `needs credentials`, `paused`, or
    /// `broken file`.
    pub state: String,
    /// Pages and contacts of the pass in progress (every run since it started).
    pub pass_pages: u64,
    /// Contacts written by the pass in progress.
    pub pass_contacts: u64,
    /// Whether a pass is in progress (a saved position).
    pub pass_in_progress: bool,
    /// Newest update time committed.
    pub watermark: Option<DateTime<Utc>>,
    /// When the last run started.
    pub last_run_at: Option<DateTime<Utc>>,
    /// How it ended (`running` while it goes on).
    pub last_result: Option<String>,
    /// When the next run is due.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Last error (secrets masked).
    pub last_error: Option<String>,
    /// Failed runs in a row.
    pub failures: u32,
    /// The node holding the importer's lease now (running it), when several daemons
    /// share the store; `None` when no run holds it.
    pub node: Option<String>,
}

/// Runs `status`.
pub fn execute(config: Option<&Path>, args: &StatusArgs) -> anyhow::Result<i32> {
    let path = app::config_path(config);
    let loaded = match app::load_tolerant(&path) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            app::print_diagnostics(&diagnostics);
            return Ok(app::exit::CONFIG);
        }
    };
    let rows = app::small_runtime()?.block_on(async {
        let store = app::open_store_without_tokens(&loaded.plan.daemon).await?;
        let states: BTreeMap<String, ImporterState> = store
            .importer_states()
            .await?
            .into_iter()
            .map(|s| (s.importer.clone(), s))
            .collect();
        let holders: BTreeMap<String, String> = store
            .lease_holders()
            .await?
            .into_iter()
            .map(|l| (l.importer, l.node))
            .collect();
        let mut rows = Vec::new();
        for (id, importer) in &loaded.plan.importers {
            let history = store.runs(id, 50).await?;
            let state = states.get(id).cloned().unwrap_or_default();
            rows.push(row(
                id,
                &importer.connector.id,
                &importer.list,
                importer.enabled,
                &state,
                &history,
                Utc::now(),
            ));
        }
        // Importers whose file is broken still have state: show them, flagged.
        for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
            let Some(stem) = d.file.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let in_importers = d
                .file
                .parent()
                .is_some_and(|p| loaded.plan.daemon.importers_dir.ends_with(p));
            if in_importers && !rows.iter().any(|r: &ImporterRow| r.importer == stem) {
                let state = states.get(stem).cloned().unwrap_or_default();
                let history = store.runs(stem, 50).await?;
                let mut broken = row(stem, "-", "-", true, &state, &history, Utc::now());
                broken.state = "broken file".into();
                broken.last_error = Some(d.to_string());
                rows.push(broken);
            }
        }
        for row in &mut rows {
            row.node = holders.get(&row.importer).cloned();
        }
        store.close().await;
        anyhow::Ok(rows)
    })?;
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
        OutputFormat::Table => out.write_all(render_table(&rows).as_bytes())?,
    }
    Ok(app::exit::OK)
}

/// The row of one importer from its saved state and run history (newest first).
pub fn row(
    id: &str,
    connector: &str,
    list: &str,
    enabled: bool,
    state: &ImporterState,
    history: &[RunRecord],
    now: DateTime<Utc>,
) -> ImporterRow {
    let last = history.first();
    let failures = history
        .iter()
        .take_while(|r| r.outcome == Some(RunOutcome::Failed))
        .count() as u32;
    let running = last.is_some_and(|r| r.finished_at.is_none());
    let schedule_state = if running {
        "running"
    } else if !enabled {
        "paused"
    } else if state.needs_new_credentials {
        "needs credentials"
    } else if state.next_run_at.is_none_or(|at| at <= now) {
        "due"
    } else if failures > 0 {
        "backing off"
    } else {
        "idle"
    };
    let pass_started = state.checkpoint.pass_started_at;
    let in_pass = state.checkpoint.position.is_some();
    let (pass_pages, pass_contacts) = if in_pass {
        history
            .iter()
            // Every run that overlapped the pass: the one that started it began before
            // its first page set `pass_started_at`, and the one in flight has no end yet.
            .filter(|r| pass_started.is_none_or(|s| r.finished_at.is_none_or(|f| f >= s)))
            // Pages and written contacts are committed with each page; `fetched` only
            // when a run ends.
            .fold((0, 0), |(p, c), r| {
                let written = r.counts.created + r.counts.updated + r.counts.unchanged;
                (p + r.counts.pages, c + written)
            })
    } else {
        (0, 0)
    };
    ImporterRow {
        importer: id.to_string(),
        connector: connector.to_string(),
        list: list.to_string(),
        state: schedule_state.into(),
        pass_pages,
        pass_contacts,
        pass_in_progress: in_pass,
        watermark: state.checkpoint.watermark,
        last_run_at: last.map(|r| r.started_at),
        last_result: last.map(|r| match r.outcome {
            None => "running".to_string(),
            Some(o) => serde_json::to_value(o)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        }),
        next_run_at: state.next_run_at,
        last_error: if failures > 0 || state.needs_new_credentials {
            state.last_error.clone()
        } else {
            None
        },
        failures,
        node: None,
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The table people read.
pub fn render_table(rows: &[ImporterRow]) -> String {
    let header = [
        "IMPORTER",
        "CONNECTOR",
        "LIST",
        "STATE",
        "NODE",
        "PASS",
        "WATERMARK",
        "LAST RUN",
        "RESULT",
        "NEXT RUN",
        "LAST ERROR",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        table.push(vec![
            r.importer.clone(),
            r.connector.clone(),
            r.list.clone(),
            if r.failures > 0 && r.state == "backing off" {
                format!("backing off ({} failures)", r.failures)
            } else {
                r.state.clone()
            },
            r.node.clone().unwrap_or_else(|| "-".into()),
            if r.pass_in_progress {
                format!("{} pages, {} contacts", r.pass_pages, r.pass_contacts)
            } else {
                "-".into()
            },
            time(r.watermark),
            time(r.last_run_at),
            r.last_result.clone().unwrap_or_else(|| "-".into()),
            time(r.next_run_at),
            r.last_error
                .as_deref()
                .map(|e| e.chars().take(80).collect())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
