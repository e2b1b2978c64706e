//! `tributary contacts`: what landed in the store (by list, by email, with custom fields
//! and the source of each value), and the two things a person or the mail system records
//! by hand: unsubscribes and bounces.
//!
//! Opens the store the daemon config names, so an admin's CLI and the service see the
//! same data. Never keeps or reads tokens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::cli::Cli;
use crate::config::load;
use crate::config::spec::DaemonConfigSpec;
use crate::store::{
    self, ContactFilter, ContactView, DEFAULT_RETENTION, Store, StoreOptions, UnsubscribeScope,
};

/// Output formats of the store commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}

/// Arguments of `contacts`.
#[derive(Debug, clap::Args)]
pub struct ContactsArgs {
    /// Record an unsubscribe or a bounce instead of listing.
    #[command(subcommand)]
    pub command: Option<ContactsCommand>,
    /// Only members of this list.
    #[arg(long)]
    pub list: Option<String>,
    /// Only this contact.
    #[arg(long)]
    pub email: Option<String>,
    /// At most this many contacts.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

/// What `contacts` can record.
#[derive(Debug, clap::Subcommand)]
pub enum ContactsCommand {
    /// Unsubscribe a contact from one list or from everything, as a person would. No
    /// import makes it active there again.
    Unsubscribe {
        /// The contact's email.
        email: String,
        /// The list to leave.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        list: Option<String>,
        /// Unsubscribe from everything.
        #[arg(long)]
        all: bool,
    },
    /// Mark a contact bounced everywhere, as the mail system would.
    Bounce {
        /// The contact's email.
        email: String,
    },
}

/// Runs `contacts`.
pub fn execute(cli: &Cli, args: &ContactsArgs) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let store = open_configured_store(cli).await?;
        let views = match &args.command {
            None => {
                let filter = ContactFilter {
                    list: args.list.clone(),
                    email: args.email.clone(),
                    limit: args.limit,
                };
                store.contacts(&filter).await?
            }
            Some(ContactsCommand::Unsubscribe { email, list, all }) => {
                let scope = match (list, all) {
                    (Some(list), false) => UnsubscribeScope::List(list.clone()),
                    _ => UnsubscribeScope::All,
                };
                vec![store.unsubscribe(email, scope).await?]
            }
            Some(ContactsCommand::Bounce { email }) => vec![store.bounce(email).await?],
        };
        match args.format {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&views)?),
            OutputFormat::Table => print!("{}", render_table(&views)),
        }
        Ok(0)
    })
}

/// One block per contact: identity line, then lists, fields (with the importer and run
/// that wrote each) and sources.
pub fn render_table(views: &[ContactView]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if views.is_empty() {
        out.push_str("no contacts\n");
        return out;
    }
    for view in views {
        let name = [view.first_name.as_deref(), view.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "{}  {}  [{}]",
            view.email,
            if name.is_empty() { "-" } else { &name },
            view.status.as_str()
        );
        for (label, value) in [("phone", &view.phone), ("organization", &view.organization)] {
            if let Some(value) = value {
                let _ = writeln!(out, "  {label}: {value}");
            }
        }
        if !view.lists.is_empty() {
            let lists: Vec<String> = view
                .lists
                .iter()
                .map(|m| format!("{} ({})", m.list, m.status.as_str()))
                .collect();
            let _ = writeln!(out, "  lists: {}", lists.join(", "));
        }
        for field in &view.fields {
            let source = match (&field.importer, field.run_id) {
                (Some(importer), Some(run)) => format!("{importer}, run {run}"),
                (Some(importer), None) => importer.clone(),
                _ => String::from("person"),
            };
            let _ = writeln!(
                out,
                "  {} {} = {}  ({source})",
                field.tag, field.label, field.value
            );
        }
        for source in &view.sources {
            let _ = writeln!(
                out,
                "  source: {} id {}{}",
                source.importer,
                source.external_id.as_deref().unwrap_or("-"),
                if source.deleted_at.is_some() {
                    "  (deleted at the service)"
                } else {
                    ""
                }
            );
        }
    }
    out
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Opens the store the daemon config names, without token keys.
pub(crate) async fn open_configured_store(cli: &Cli) -> anyhow::Result<Arc<dyn Store>> {
    let (url, retention) = store_settings(cli.config.as_deref())?;
    let options = StoreOptions {
        retention,
        keep_tokens: false,
        ..StoreOptions::default()
    };
    store::open(&url, options)
        .await
        .with_context(|| format!("opening the store {}", shown_url(&url)))
}

/// The store URL without a password, for messages.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// The store URL and retention the daemon would use: taken from the loaded plan, so the
/// CLI and the service resolve `store:` the same way. When connector or importer files
/// have errors (which must not keep an admin from looking at contacts), the daemon config
/// alone is read, with a warning.
fn store_settings(flag: Option<&Path>) -> anyhow::Result<(String, std::time::Duration)> {
    let path = load::locate_config(flag);
    let diagnostics = match load::load_plan(&path) {
        Ok(plan) => return Ok((plan.daemon.store_url, plan.daemon.retention)),
        Err(diagnostics) => diagnostics,
    };
    let own = |d: &crate::config::diagnostic::Diagnostic| {
        d.is_error() && path.file_name().is_some_and(|name| d.file.ends_with(name))
    };
    if diagnostics.iter().any(own) {
        let text: Vec<String> = diagnostics
            .iter()
            .filter(|d| own(d))
            .map(ToString::to_string)
            .collect();
        anyhow::bail!("the daemon config has errors:\n{}", text.join("\n"));
    }
    eprintln!(
        "warning: connector or importer files have errors (see `tributary validate`); reading the store named by {}",
        path.display()
    );
    daemon_only_settings(&path, flag.is_none())
}

fn daemon_only_settings(
    path: &Path,
    may_be_missing: bool,
) -> anyhow::Result<(String, std::time::Duration)> {
    let spec: DaemonConfigSpec = match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => DaemonConfigSpec::default(),
        Ok(text) => load::parse_yaml(&text, path).map_err(|diagnostics| {
            let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            anyhow::anyhow!(text.join("\n"))
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && may_be_missing => {
            DaemonConfigSpec::default()
        }
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", path.display()));
        }
    };
    let root = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let url = match spec.store.as_deref() {
        None => format!("sqlite://{}", root.join("tributary.db").display()),
        Some(url) if url.starts_with("sqlite:") => {
            let file = store::sqlite::path_of_url(url)?;
            format!("sqlite://{}", root.join(file).display())
        }
        Some(url) => url.to_string(),
    };
    let retention = spec
        .retention
        .as_ref()
        .map_or(DEFAULT_RETENTION, |d| d.get());
    Ok((url, retention))
}
