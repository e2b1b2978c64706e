//! `tributary run <importer> [--dry-run]`: run one importer now, in this process.
//!
//! Prints a summary on stdout and, on a terminal, live progress on stderr. A dry run
//! prints the request it sent (secrets masked) and the contacts and custom values it
//! would write, and writes nothing. There is no daemon to hand the run to yet: the run
//! always happens here, under the importer's lease, so it never overlaps a daemon's run.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::load::{load_plan, locate_config};
use crate::duration::IsoDuration;
use crate::engine::{DryRun, Progress, ProgressFn, RunError, RunOptions, RunSummary, run_importer};
use crate::model::{FieldValue, SubscriptionMeaning};
use crate::store::{KeySource, RunOutcome, StoreOptions};

/// Exit code when the configuration is invalid (`EX_CONFIG`).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code when another run holds the importer's lease (`EX_TEMPFAIL`).
pub const EXIT_BUSY: i32 = 75;

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
}

/// Runs `run`.
pub fn execute(cli: &crate::cli::Cli, args: &RunArgs) -> anyhow::Result<i32> {
    // Warnings (skipped records, retries) go to stderr; `RUST_LOG` says more.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tributary=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let config = locate_config(cli.config.as_deref());
    let plan = match load_plan(&config) {
        Ok(plan) => plan,
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            return Ok(EXIT_CONFIG);
        }
    };
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
    let encryption_key = match &plan.daemon.encryption_key {
        Some(reference) => Some(KeySource::Bytes(
            crate::secret::resolve(reference)
                .context("reading `encryption_key`")?
                .expose()
                .as_bytes()
                .to_vec(),
        )),
        None => None,
    };
    let store_options = StoreOptions {
        encryption_key,
        retention: plan.daemon.retention,
        ..StoreOptions::default()
    };
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
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let store = crate::store::open(&plan.daemon.store_url, store_options)
            .await
            .with_context(|| {
                format!("opening the store `{}`", redact_url(&plan.daemon.store_url))
            })?;
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
            Ok(0)
        }
        Err(RunError::Busy { importer }) => {
            eprintln!(
                "error: importer `{importer}` is being run by another process; nothing was done (use --wait PT5M to wait for it)"
            );
            Ok(EXIT_BUSY)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(1)
        }
    }
}

/// A store URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn print_summary(out: &mut impl Write, s: &RunSummary) -> std::io::Result<()> {
    let outcome = match (s.dry_run.is_some(), s.outcome) {
        (true, _) => "dry run, nothing written",
        (false, RunOutcome::Completed) => "pass complete",
        (false, RunOutcome::Partial) => "page budget spent, the next run continues",
        (false, RunOutcome::Failed) => "failed",
        (false, RunOutcome::Cancelled) => "cancelled",
    };
    let c = &s.counts;
    writeln!(
        out,
        "importer {}: {outcome} ({:?} pass{})",
        s.importer,
        s.pass,
        if s.resumed { ", resumed" } else { "" }
    )?;
    writeln!(
        out,
        "pages {}, fetched {}, created {}, updated {}, unchanged {}, skipped {}, duration {:.2}s",
        c.pages,
        c.fetched,
        c.created,
        c.updated,
        c.unchanged,
        c.skipped,
        s.duration.as_secs_f64()
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
            let status = match status {
                SubscriptionMeaning::Unsubscribed => "unsubscribed",
                SubscriptionMeaning::Bounced => "bounced",
            };
            writeln!(out, "    subscription: {status}")?;
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
