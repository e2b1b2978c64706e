//! `tributary daemon`: run every importer on its schedule until stopped (see
//! [`crate::daemon`]).

use std::path::Path;

/// Arguments of `daemon`.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {}

/// Runs `daemon`.
pub fn execute(config: Option<&Path>, _args: &DaemonArgs) -> anyhow::Result<i32> {
    crate::daemon::execute(&crate::app::config_path(config))
}
