//! `tributary fields`: the custom fields of the store, as a person sees and edits them.
//!
//! Never changes the tag of a field an import uses (the store refuses it); labels always
//! remain editable.

use crate::app;
use crate::commands::contacts::{OutputFormat, open_configured_store};
use crate::model::CustomFieldType;
use crate::store::{CustomField, FieldChange};

/// Arguments of `fields`.
#[derive(Debug, clap::Args)]
pub struct FieldsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: FieldsCommand,
}

/// The `fields` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FieldsCommand {
    /// Show every field with tag, label, type, origin and lock.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Make a field as a person would (an import with the same tag then uses it).
    Create {
        /// Label shown to people.
        label: String,
        /// Personalization tag, such as `%BATCHBOOK_COMPANY_HQ%`.
        #[arg(long)]
        tag: String,
        /// Type of its values: text, number, date or list.
        #[arg(long = "type", value_parser = parse_field_type)]
        field_type: CustomFieldType,
    },
    /// Change a field's label; `--tag` changes the tag of a field no import uses.
    Rename {
        /// The field's current tag.
        tag: String,
        /// The new label.
        label: Option<String>,
        /// A new tag (refused once an import uses the field).
        #[arg(long = "tag", value_name = "NEW_TAG")]
        new_tag: Option<String>,
    },
}

fn parse_field_type(text: &str) -> Result<CustomFieldType, String> {
    match text {
        "text" => Ok(CustomFieldType::Text),
        "number" => Ok(CustomFieldType::Number),
        "date" => Ok(CustomFieldType::Date),
        "list" => Ok(CustomFieldType::List),
        other => Err(format!(
            "unknown field type `{other}`: use text, number, date or list"
        )),
    }
}

/// Runs `fields`.
pub fn execute(config: Option<&std::path::Path>, args: &FieldsArgs) -> anyhow::Result<i32> {
    app::small_runtime()?.block_on(async {
        let store = open_configured_store(config).await?;
        match &args.command {
            FieldsCommand::List { format } => {
                let fields = store.fields().await?;
                match format {
                    OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&fields)?),
                    OutputFormat::Table => print!("{}", render_table(&fields)),
                }
            }
            FieldsCommand::Create {
                label,
                tag,
                field_type,
            } => {
                let field = store.create_field(label, tag, *field_type).await?;
                print!("{}", render_table(&[field]));
            }
            FieldsCommand::Rename {
                tag,
                label,
                new_tag,
            } => {
                if label.is_none() && new_tag.is_none() {
                    anyhow::bail!("give a new label, or a new tag with --tag");
                }
                let change = FieldChange {
                    label: label.clone(),
                    tag: new_tag.clone(),
                };
                let field = store.update_field(tag, &change).await?;
                print!("{}", render_table(&[field]));
            }
        }
        Ok(0)
    })
}

/// Aligned columns: tag, label, type, origin, service, lock.
pub fn render_table(fields: &[CustomField]) -> String {
    let mut rows = vec![[
        String::from("TAG"),
        String::from("LABEL"),
        String::from("TYPE"),
        String::from("ORIGIN"),
        String::from("SERVICE"),
        String::from("LOCKED"),
    ]];
    for field in fields {
        rows.push([
            field.tag.clone(),
            field.label.clone(),
            crate::store::field_type_str(field.field_type).to_string(),
            field.origin.as_str().to_string(),
            field.service.clone().unwrap_or_else(|| String::from("-")),
            String::from(if field.locked { "yes" } else { "no" }),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
