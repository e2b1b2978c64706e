//! Command-line interface: clap types only, no I/O.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Tributary: keeps a contact database filled from CRMs and shops.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about)]
pub struct Cli {
    /// Daemon config file. Default: `$TRIBUTARY_CONFIG`, then `./tributary.yaml`, then
    /// `/etc/tributary/tributary.yaml`.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every connector and importer file and report every error at once.
    Validate(crate::commands::validate::ValidateArgs),
    /// Print the JSON Schemas of the three file kinds.
    Schema(crate::commands::schema::SchemaArgs),
    /// List, create and rename custom fields.
    Fields(crate::commands::fields::FieldsArgs),
    /// Show imported contacts; record unsubscribes and bounces.
    Contacts(crate::commands::contacts::ContactsArgs),
    /// Run one importer now and print a summary (`--dry-run`: show, write nothing);
    /// handed to a running daemon when one serves the same store.
    Run(crate::commands::run::RunArgs),
    /// Run every importer on its schedule until stopped (the systemd service).
    Daemon(crate::commands::daemon::DaemonArgs),
    /// One row per importer: schedule state, pass progress, watermark, last and next run.
    Status(crate::commands::status::StatusArgs),
    /// Reset an importer's saved state, or resume one paused for its credentials.
    State(crate::commands::state::StateArgs),
    /// Consent for an importer's OAuth2 account (authorization code with PKCE, on a
    /// loopback redirect) and keep the refresh token.
    Auth(crate::commands::auth::AuthArgs),
}
