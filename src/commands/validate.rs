//! `tributary validate`.

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {}

/// Runs `validate`.
pub fn execute(_cli: &crate::cli::Cli, _args: &ValidateArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not built yet")
}
