//! `tributary contacts`: what landed in the store (by list, by email, with custom fields
//! and the source of each value), and the two things a person or the mail system records
//! by hand: unsubscribes and bounces.
//!
//! Opens the store the daemon config names, so an admin's CLI and the service see the
//! same data. Never keeps or reads tokens.

use std::path::Path;
use std::sync::Arc;

use crate::app;
use crate::store::{ContactFilter, ContactView, Store, UnsubscribeScope};

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
pub fn execute(config: Option<&Path>, args: &ContactsArgs) -> anyhow::Result<i32> {
    app::small_runtime()?.block_on(async {
        let store = open_configured_store(config).await?;
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

/// Opens the store the daemon config names, without token keys.
pub(crate) async fn open_configured_store(config: Option<&Path>) -> anyhow::Result<Arc<dyn Store>> {
    let daemon = app::daemon_config(config)?;
    app::open_store_without_tokens(&daemon).await
}
