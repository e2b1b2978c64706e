//! `tributary schema`: prints or writes the JSON Schemas of the three file kinds
//! (`schemas/{tributary,connector,importer}.schema.json`).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::schema;

/// Arguments of `schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Write the three files into this directory instead of printing them.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print a Markdown reference of every key instead (the generated part of
    /// docs/configuration.md).
    #[arg(long, conflicts_with = "out")]
    pub markdown: bool,
}

/// Runs `schema`. Printing gives one JSON object keyed by file name.
pub fn execute(args: &SchemaArgs) -> anyhow::Result<i32> {
    if args.markdown {
        print!("{}", schema::reference_markdown());
        return Ok(0);
    }
    let schemas = schema::all();
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, value) in &schemas {
                let path = dir.join(name);
                std::fs::write(&path, schema::render(value))
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            let all: serde_json::Map<String, serde_json::Value> = schemas
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect();
            print!("{}", schema::render(&serde_json::Value::Object(all)));
        }
    }
    Ok(0)
}
