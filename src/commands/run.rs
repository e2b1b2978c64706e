//! `tributary run <importer> [--dry-run]`: run one importer now.
//!
//! When a daemon serves the same store (found through `listen`), the run is handed to
//! it: the daemon queues it under its concurrency limit, runs it, and answers with the
//! result, and this command exits with the codes an in-process run has (0, 1, 75, 78).
//! Otherwise, and always for `--dry-run`, the run happens here, under the importer's
//! lease, so it never overlaps a daemon's run of the same importer.
//!
//! Prints a summary on stdout and, on a terminal, live progress on stderr. A dry run
//! prints the request it sent (secrets masked) and the contacts and custom values it
//! would write, and writes nothing.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use crate::app::{self, exit};
use crate::daemon::http::Health;
use crate::daemon::scheduler::{RunReport, RunRequest};
use crate::duration::IsoDuration;
use crate::engine::{DryRun, Progress, ProgressFn, RunError, RunOptions, RunSummary, run_importer};
use crate::model::FieldValue;
use crate::plan::Plan;
use crate::store::{RunCounts, RunOutcome};

/// Exit code when the configuration is invalid (`EX_CONFIG`).
pub const EXIT_CONFIG: i32 = exit::CONFIG;
/// Exit code when another run holds the importer's lease (`EX_TEMPFAIL`).
pub const EXIT_BUSY: i32 = exit::BUSY;

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The importer to run (its file stem in `importers.d/`).
    pub importer: String,
    /// Fetch and map the first page(s) and print what would be written, without writing
    /// any contact or checkpoint.
    #[arg(long)]
    pub dry_run: bool,
    /// Pages a dry run reads.
    #[arg(long, default_value_t = 1)]
    pub pages: u64,
    /// Wait up to this long (ISO 8601, e.g. `PT5M`) for a run of the same importer in
    /// another process to finish, instead of refusing at once.
    #[arg(long, value_parser = IsoDuration::parse)]
    pub wait: Option<IsoDuration>,
    /// Start a new full pass now (everyone, no updated-since), dropping a saved position.
    #[arg(long)]
    pub full_refresh: bool,
    /// Run in this process even when a daemon serves the store.
    #[arg(long)]
    pub here: bool,
}

/// Runs `run`.
pub fn execute(config: Option<&std::path::Path>, args: &RunArgs) -> anyhow::Result<i32> {
    let path = app::config_path(config);
    let plan = match app::load_strict(&path) {
        Ok(plan) => plan,
        Err(diagnostics) => {
            app::print_diagnostics(&diagnostics);
            return Ok(exit::CONFIG);
        }
    };
    // Warnings (skipped records, retries) go to stderr; `RUST_LOG` says more.
    app::init_logging(crate::plan::LogFormat::Text, "warn");
    let Some(importer) = plan.importers.get(&args.importer).cloned() else {
        let known: Vec<&str> = plan.importers.keys().map(String::as_str).collect();
        anyhow::bail!(
            "no importer `{}` in {} (known: {})",
            args.importer,
            plan.daemon.importers_dir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let runtime = app::import_runtime()?;
    if !args.dry_run && !args.here {
        let handed = runtime.block_on(hand_to_daemon(&plan, args))?;
        if let Some(report) = handed {
            return print_report(&report);
        }
    }
    let progress: Option<ProgressFn> = if std::io::stderr().is_terminal() && !args.dry_run {
        Some(Arc::new(|p: &Progress| {
            let rate = p.fetched as f64 / p.elapsed.as_secs_f64().max(0.001);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r{} pages, {} contacts, {:.0} contacts/s   ",
                p.pages, p.fetched, rate
            );
            let _ = err.flush();
        }))
    } else {
        None
    };
    let show_progress = progress.is_some();
    let options = RunOptions {
        dry_run: args.dry_run,
        dry_run_pages: args.pages.max(1),
        lease_ttl: plan.daemon.lease,
        lease_wait: args.wait.as_ref().map(IsoDuration::get).unwrap_or_default(),
        full_refresh: args.full_refresh,
        progress,
        limits: plan.daemon.limits,
        ..RunOptions::default()
    };
    let result = runtime.block_on(async {
        let store = app::open_store(&plan.daemon).await?;
        let result = run_importer(importer, Arc::clone(&store), options).await;
        store.close().await;
        anyhow::Ok(result)
    })?;
    if show_progress {
        eprintln!();
    }
    match result {
        Ok(summary) => {
            let mut out = std::io::stdout().lock();
            if let Some(dry) = &summary.dry_run {
                print_dry_run(&mut out, dry)?;
            }
            print_summary(&mut out, &summary)?;
            Ok(exit::OK)
        }
        Err(RunError::Busy { importer }) => {
            eprintln!(
                "error: importer `{importer}` is being run by another process; nothing was done (use --wait PT5M to wait for it)"
            );
            Ok(exit::BUSY)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(exit::FAILURE)
        }
    }
}

/// Asks a daemon serving the same store to run the importer, if one answers at
/// `listen`; `None` when there is none (then the run happens here).
async fn hand_to_daemon(plan: &Plan, args: &RunArgs) -> anyhow::Result<Option<RunReport>> {
    let base = format!("http://{}", plan.daemon.listen);
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()?;
    let health: Health = match probe.get(format!("{base}/healthz")).send().await {
        Ok(response) if response.status().is_success() => match response.json().await {
            Ok(health) => health,
            Err(_) => return Ok(None),
        },
        _ => return Ok(None),
    };
    // Another daemon on that port (another config, another store) is not ours to ask.
    if health.store != crate::store::masked_url(&plan.daemon.store_url) {
        return Ok(None);
    }
    let request = RunRequest {
        full_refresh: args.full_refresh,
        wait_seconds: args
            .wait
            .as_ref()
            .map(|w| w.get().as_secs_f64())
            .unwrap_or_default(),
    };
    let client = reqwest::Client::new();
    let mut post = client
        .post(format!("{base}/importers/{}/run", args.importer))
        .json(&request);
    if let Some(reference) = &plan.daemon.control_token {
        let token = crate::secret::resolve(reference)
            .map_err(|e| anyhow::anyhow!("`control_token`: {e}"))?;
        post = post.bearer_auth(token.expose());
    }
    eprintln!(
        "handing the run to the daemon at {} (pid {})",
        plan.daemon.listen, health.pid
    );
    let response = post.send().await.map_err(|e| {
        anyhow::anyhow!(
            "the daemon at {} stopped answering: {e}",
            plan.daemon.listen
        )
    })?;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!("the daemon refused the request: `control_token` does not match");
    }
    Ok(Some(response.json().await?))
}

fn print_report(report: &RunReport) -> anyhow::Result<i32> {
    if let Some(error) = &report.error {
        eprintln!("error: {error}");
    }
    if let Some(outcome) = report.outcome
        && outcome != RunOutcome::Failed
    {
        let mut out = std::io::stdout().lock();
        let pass = report.pass.as_deref().unwrap_or("?").replace('_', " ");
        writeln!(
            out,
            "importer {}: {} ({pass} pass{}, run by the daemon)",
            report.importer,
            outcome_text(false, outcome),
            if report.resumed { ", resumed" } else { "" }
        )?;
        print_counts(&mut out, &report.counts, report.duration_seconds)?;
    }
    Ok(report.exit_code)
}

fn outcome_text(dry_run: bool, outcome: RunOutcome) -> &'static str {
    match (dry_run, outcome) {
        (true, _) => "dry run, nothing written",
        (false, RunOutcome::Completed) => "pass complete",
        (false, RunOutcome::Partial) => "page budget spent, the next run continues",
        (false, RunOutcome::Failed) => "failed",
        (false, RunOutcome::Cancelled) => "cancelled",
    }
}

fn print_counts(out: &mut impl Write, c: &RunCounts, seconds: f64) -> std::io::Result<()> {
    writeln!(
        out,
        "pages {}, fetched {}, created {}, updated {}, unchanged {}, skipped {}, duration {:.2}s",
        c.pages, c.fetched, c.created, c.updated, c.unchanged, c.skipped, seconds
    )?;
    if c.field_failures > 0 || c.deleted > 0 {
        writeln!(
            out,
            "custom values that failed to parse {}, deleted at the service {}",
            c.field_failures, c.deleted
        )?;
    }
    Ok(())
}

fn print_summary(out: &mut impl Write, s: &RunSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "importer {}: {} ({} pass{})",
        s.importer,
        outcome_text(s.dry_run.is_some(), s.outcome),
        s.pass.as_str().replace('_', " "),
        if s.resumed { ", resumed" } else { "" }
    )?;
    print_counts(out, &s.counts, s.duration.as_secs_f64())
}

fn print_dry_run(out: &mut impl Write, dry: &DryRun) -> std::io::Result<()> {
    for (i, request) in dry.requests.iter().enumerate() {
        writeln!(out, "request {}:", i + 1)?;
        for line in request.lines() {
            writeln!(out, "  {line}")?;
        }
    }
    writeln!(out, "contacts it would write: {}", dry.contacts.len())?;
    for contact in &dry.contacts {
        writeln!(out, "  {}", contact.email)?;
        let standard = [
            ("first_name", contact.first_name.as_deref()),
            ("last_name", contact.last_name.as_deref()),
            ("phone", contact.phone.as_deref()),
            ("organization", contact.organization.as_deref()),
            ("external_id", contact.external_id.as_deref()),
        ];
        for (name, value) in standard {
            if let Some(value) = value {
                writeln!(out, "    {name}: {value}")?;
            }
        }
        if let Some(t) = contact.updated_at {
            writeln!(out, "    updated_at: {}", t.to_rfc3339())?;
        }
        if let Some(status) = contact.service_status {
            writeln!(out, "    subscription: {}", status.as_str())?;
        }
        for value in &contact.custom_values {
            let tag = dry
                .fields
                .get(value.field)
                .map(|f| f.tag.as_str())
                .unwrap_or("?");
            let shown = match &value.value {
                FieldValue::Text(t) => t.clone(),
                FieldValue::Number(n) => n.to_string(),
                FieldValue::Date(d) => d.to_rfc3339(),
                FieldValue::List(items) => format!("[{}]", items.join(", ")),
            };
            writeln!(out, "    {tag}: {shown}")?;
        }
    }
    if !dry.deleted.is_empty() {
        writeln!(out, "deleted at the service: {}", dry.deleted.join(", "))?;
    }
    Ok(())
}
