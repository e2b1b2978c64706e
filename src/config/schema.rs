//! JSON Schemas of the three file kinds, generated from the `*Spec` types by schemars so
//! that editors (via `# yaml-language-server: $schema=...`) and CI see exactly what the
//! loader accepts. The committed copies in `schemas/` are checked for staleness by a test.
//!
//! Pure: builds JSON values; writing them is the `schema` command's job.

use schemars::generate::SchemaSettings;
use serde_json::Value;

use crate::config::spec::{ConnectorSpec, DaemonConfigSpec, ImporterSpec};

/// The schema files: name in `schemas/` and content.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        (
            "tributary.schema.json",
            generate::<DaemonConfigSpec>("tributary.yaml: the daemon config"),
        ),
        (
            "connector.schema.json",
            generate::<ConnectorSpec>("connectors.d/*.yaml: a connector spec"),
        ),
        (
            "importer.schema.json",
            generate::<ImporterSpec>("importers.d/*.yaml: an importer"),
        ),
    ]
}

fn generate<T: schemars::JsonSchema>(title: &str) -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<T>();
    let mut value = serde_json::to_value(schema).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("title".into(), Value::String(title.to_string()));
    }
    value
}

/// The text written to a schema file: pretty JSON with a trailing newline.
pub fn render(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
