//! `tributary state reset|resume <importer>`, `state move <old> <new>`: what an operator
//! does to one importer's saved state, with or without a running daemon.
//!
//! Both write the store (so they work when no daemon runs, and on any node), then tell a
//! daemon serving the same store, if one answers, so it acts at once instead of at its
//! next check.

use std::path::Path;
use std::time::Duration;

use crate::app::{self, exit};
use crate::daemon::http::Health;
use crate::model::Checkpoint;
use crate::plan::DaemonConfig;

/// Arguments of `state`.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StateCommand,
}

/// What `state` can do.
#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Forget the importer's watermark and position: its next run starts a first pass
    /// (everyone, no updated-since). Refused while it runs.
    Reset {
        /// The importer.
        importer: String,
    },
    /// Resume an importer paused as "needs new credentials" (and clear its back-off).
    Resume {
        /// The importer.
        importer: String,
    },
    /// Carry an importer's state, history and provenance over to a new id, after its file
    /// was renamed (an importer's id is its file name: without this, the new name starts
    /// with a first pass). Refused while either runs or when the new id has state.
    Move {
        /// The old id.
        from: String,
        /// The new id.
        to: String,
    },
}

/// Runs `state`.
pub fn execute(config: Option<&Path>, args: &StateArgs) -> anyhow::Result<i32> {
    let daemon = app::daemon_config(config)?;
    app::small_runtime()?.block_on(async {
        let store = app::open_store_without_tokens(&daemon).await?;
        let code = match &args.command {
            StateCommand::Reset { importer } => {
                let Some(lease) = store.acquire_lease(importer, daemon.lease).await? else {
                    eprintln!(
                        "error: importer `{importer}` is running; nothing was done (try again when its run ends)"
                    );
                    store.close().await;
                    return Ok(exit::BUSY);
                };
                let saved = store
                    .save_checkpoint(importer, lease.fencing_token, &Checkpoint::default())
                    .await;
                let cleared = store.set_next_run(importer, None).await;
                store.release_lease(&lease).await?;
                saved?;
                cleared?;
                println!("importer {importer}: state reset; its next run starts a first pass");
                tell_daemon(&daemon, importer).await;
                exit::OK
            }
            StateCommand::Move { from, to } => {
                let Some(from_lease) = store.acquire_lease(from, daemon.lease).await? else {
                    eprintln!("error: importer `{from}` is running; nothing was moved (try again when its run ends)");
                    store.close().await;
                    return Ok(exit::BUSY);
                };
                let Some(to_lease) = store.acquire_lease(to, daemon.lease).await? else {
                    store.release_lease(&from_lease).await?;
                    eprintln!("error: importer `{to}` is running; nothing was moved");
                    store.close().await;
                    return Ok(exit::BUSY);
                };
                let moved = store.move_importer(from, to).await;
                store.release_lease(&to_lease).await?;
                store.release_lease(&from_lease).await?;
                match moved {
                    Ok(()) => {
                        println!("importer {from}: state, history and provenance moved to {to}");
                        tell_daemon(&daemon, to).await;
                        exit::OK
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        exit::FAILURE
                    }
                }
            }
            StateCommand::Resume { importer } => {
                store.set_needs_new_credentials(importer, false).await?;
                println!("importer {importer}: resumed");
                tell_daemon(&daemon, importer).await;
                exit::OK
            }
        };
        store.close().await;
        Ok(code)
    })
}

/// Asks a daemon serving the same store to reschedule the importer now; silent when
/// none answers (it reads the store at its next check).
async fn tell_daemon(daemon: &DaemonConfig, importer: &str) {
    let base = format!("http://{}", daemon.listen);
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return;
    };
    let health: Option<Health> = match client.get(format!("{base}/healthz")).send().await {
        Ok(r) if r.status().is_success() => r.json().await.ok(),
        _ => None,
    };
    let Some(health) = health else { return };
    if health.store != crate::store::masked_url(&daemon.store_url) {
        return;
    }
    let mut post = client.post(format!("{base}/importers/{importer}/resume"));
    if let Some(reference) = &daemon.control_token
        && let Ok(token) = crate::secret::resolve(reference)
    {
        post = post.bearer_auth(token.expose());
    }
    if let Ok(response) = post.send().await
        && response.status().is_success()
    {
        println!("the daemon (pid {}) reschedules it now", health.pid);
    }
}
