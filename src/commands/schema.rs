//! `tributary schema`.

/// Arguments of `schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

/// Runs `schema`.
pub fn execute(_cli: &crate::cli::Cli, _args: &SchemaArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not built yet")
}
