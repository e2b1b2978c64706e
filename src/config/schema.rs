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

/// A Markdown reference of every key of the three files, generated from the schemas so
/// that it cannot miss one: each key with its type, whether it is required, and its
/// documentation (the `///` comments of `spec.rs`).
pub fn reference_markdown() -> String {
    let mut out = String::new();
    for (name, schema) in all() {
        let heading = match name {
            "tributary.schema.json" => "`tributary.yaml`",
            "connector.schema.json" => "`connectors.d/<connector>.yaml`",
            _ => "`importers.d/<importer>.yaml`",
        };
        out.push_str(&format!("### {heading}\n\n"));
        if let Some(description) = schema.get("description").and_then(Value::as_str) {
            out.push_str(&one_paragraph(description));
            out.push_str("\n\n");
        }
        let mut walk = Walker {
            root: &schema,
            out: &mut out,
        };
        walk.object(&schema, "", 0, false);
        out.push('\n');
    }
    out
}

fn one_paragraph(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

struct Walker<'a, 'o> {
    root: &'a Value,
    out: &'o mut String,
}

impl<'a> Walker<'a, '_> {
    /// Follows `$ref` and the `anyOf [x, null]` of optional values.
    fn resolve(&self, schema: &'a Value) -> &'a Value {
        let mut current = schema;
        for _ in 0..8 {
            if let Some(reference) = current.get("$ref").and_then(Value::as_str) {
                let name = reference.rsplit('/').next().unwrap_or("");
                match self.root.get("definitions").and_then(|d| d.get(name)) {
                    Some(found) => {
                        current = found;
                        continue;
                    }
                    None => break,
                }
            }
            if let Some([only]) = current
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                current = only;
                continue;
            }
            if let Some(options) = current.get("anyOf").and_then(Value::as_array) {
                let non_null: Vec<&Value> = options
                    .iter()
                    .filter(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                    .collect();
                if non_null.len() == 1 && non_null.len() < options.len() {
                    current = non_null[0];
                    continue;
                }
            }
            break;
        }
        current
    }

    fn type_name(&self, schema: &'a Value) -> String {
        let s = self.resolve(schema);
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            let names: Vec<String> = values.iter().map(|v| format!("`{}`", text(v))).collect();
            return format!("one of {}", names.join(", "));
        }
        if let Some(options) = s.get("oneOf").and_then(Value::as_array) {
            let consts: Vec<String> = options
                .iter()
                .filter_map(|o| {
                    o.get("const")
                        .or_else(|| o.get("enum").and_then(|e| e.get(0)))
                })
                .map(|v| format!("`{}`", text(v)))
                .collect();
            if consts.len() == options.len() {
                return format!("one of {}", consts.join(", "));
            }
            return "one of the forms below".to_string();
        }
        if let Some(options) = s.get("anyOf").and_then(Value::as_array) {
            let names: Vec<String> = options.iter().map(|o| self.type_name(o)).collect();
            return names.join(" or ");
        }
        if s.get("pattern").is_some() && s.get("description").is_some() {
            // IsoDuration and friends: the description says it all.
            return "ISO 8601 duration".to_string();
        }
        match s.get("type") {
            Some(Value::String(t)) => match t.as_str() {
                "array" => match s.get("items") {
                    Some(items) => format!("list of {}", self.type_name(items)),
                    None => "list".to_string(),
                },
                "object" if s.get("properties").is_none() => "mapping".to_string(),
                other => other.to_string(),
            },
            Some(Value::Array(types)) => types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect::<Vec<_>>()
                .join(" or "),
            _ => "any".to_string(),
        }
    }

    fn line(&mut self, depth: usize, text: &str) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
        self.out.push_str("- ");
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn object(&mut self, schema: &'a Value, prefix: &str, depth: usize, skip_tags: bool) {
        let schema = self.resolve(schema);
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (key, property) in properties {
            if skip_tags && property.get("const").is_some() {
                continue;
            }
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            self.property(&path, property, required.contains(&key.as_str()), depth);
        }
    }

    fn property(&mut self, path: &str, property: &'a Value, required: bool, depth: usize) {
        let resolved = self.resolve(property);
        let description = property
            .get("description")
            .or_else(|| resolved.get("description"))
            .and_then(Value::as_str)
            .map(one_paragraph)
            .unwrap_or_default();
        let requirement = if required { ", required" } else { "" };
        let kind = self.type_name(property);
        self.line(
            depth,
            format!("`{path}` ({kind}{requirement}): {description}").trim_end_matches(": "),
        );
        // Maps of named entries (`auth.NAME`, `filters.NAME`, ...).
        if let Some(values) = resolved.get("additionalProperties")
            && values.is_object()
        {
            let entry = format!("{path}.NAME");
            let inner = self.resolve(values);
            if inner.get("properties").is_some() || inner.get("oneOf").is_some() {
                self.property(&entry, values, false, depth + 1);
            }
            return;
        }
        // One mapping or a list of them (`contacts.subscription`): the mapping's keys,
        // which each entry of the list has too.
        if let Some(options) = resolved.get("anyOf").and_then(Value::as_array)
            && let Some(object) = options
                .iter()
                .map(|o| self.resolve(o))
                .find(|o| o.get("properties").is_some())
        {
            self.object(object, path, depth + 1, false);
            return;
        }
        if let Some(items) = resolved.get("items") {
            let inner = self.resolve(items);
            if inner.get("properties").is_some() {
                self.object(items, &format!("{path}[]"), depth + 1, false);
            }
            return;
        }
        if let Some(options) = resolved.get("oneOf").and_then(Value::as_array) {
            for option in options {
                let option = self.resolve(option);
                let Some(properties) = option.get("properties").and_then(Value::as_object) else {
                    continue;
                };
                let tag = properties
                    .iter()
                    .find_map(|(k, v)| v.get("const").map(|c| format!("`{k}: {}`", text(c))));
                let description = option
                    .get("description")
                    .and_then(Value::as_str)
                    .map(one_paragraph)
                    .unwrap_or_default();
                match tag {
                    Some(tag) => {
                        self.line(depth + 1, &format!("with {tag}: {description}"));
                        self.object(option, path, depth + 2, true);
                    }
                    None => {
                        // A single-key form such as `{env: NAME}` or `{json: ...}`.
                        for (key, value) in properties {
                            let kind = self.type_name(value);
                            self.line(
                                depth + 1,
                                &format!("`{{{key}: ...}}` ({kind}): {description}"),
                            );
                        }
                    }
                }
            }
            return;
        }
        if resolved.get("properties").is_some() {
            self.object(resolved, path, depth + 1, false);
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
