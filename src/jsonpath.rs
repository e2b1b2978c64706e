//! JSONPath expressions (RFC 9535), parsed once when the configuration loads and evaluated
//! many times at run time.
//!
//! This module owns the only use of `jsonpath-rust`: its parser signature has changed
//! across releases, so the rest of the crate sees only [`JsonPath`]. It must never parse a
//! path on the hot path: querying by string re-parses on every call and is an order of
//! magnitude slower than evaluating the parsed form.

use std::fmt;

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

/// A parsed JSONPath together with the text it was written as (for messages and
/// fingerprints).
#[derive(Clone)]
pub struct JsonPath {
    source: String,
    parsed: JpQuery,
}

impl JsonPath {
    /// Parses `source`.
    ///
    /// # Errors
    /// A message (lowercase, no trailing period) saying why the text is not a JSONPath.
    pub fn parse(source: &str) -> Result<JsonPath, String> {
        let trimmed = source.trim();
        if !trimmed.starts_with('$') {
            return Err(format!(
                "invalid JSONPath `{source}`: a JSONPath starts with `$`"
            ));
        }
        let parsed = parse_json_path(trimmed)
            .map_err(|error| format!("invalid JSONPath `{source}`: {}", describe(&error)))?;
        Ok(JsonPath {
            source: source.to_string(),
            parsed,
        })
    }

    /// Every node the path selects in `value`, in document order. A path that selects
    /// nothing (or that fails on this value) yields an empty vector: a record missing a
    /// field is normal data, not an error.
    pub fn query<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match js_path_process(&self.parsed, value) {
            Ok(refs) => refs.into_iter().map(|r| r.val()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The first selected node, if any.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.query(value).into_iter().next()
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// A one-line reason. Parser errors are multi-line pest reports (`--> 1:8` plus a
/// drawing); keep the character position only.
fn describe(error: &jsonpath_rust::parser::errors::JsonPathError) -> String {
    use jsonpath_rust::parser::errors::JsonPathError;
    match error {
        JsonPathError::PestError(_) => {
            let text = error.to_string();
            let column = text
                .find("--> ")
                .map(|at| &text[at + 4..])
                .and_then(|at| at.lines().next())
                .and_then(|at| at.trim().split(':').nth(1))
                .map(str::to_string);
            let expected = text
                .lines()
                .find_map(|line| line.trim().strip_prefix("= "))
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            match column {
                Some(column) => format!("syntax error at character {column}{expected}"),
                None => format!("syntax error{expected}"),
            }
        }
        other => {
            let text = other.to_string();
            let mut chars = text.trim().trim_end_matches('.').chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => "syntax error".to_string(),
            }
        }
    }
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({})", self.source)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for JsonPath {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_the_primary_entry_of_an_array() {
        let record = json!({"emails": [
            {"value": "old@example.com", "primary": false},
            {"value": "ada@example.com", "primary": true}
        ]});
        let path = JsonPath::parse("$.emails[?@.primary==true].value").unwrap();
        assert_eq!(path.query(&record), vec![&json!("ada@example.com")]);
    }

    #[test]
    fn missing_field_selects_nothing() {
        let path = JsonPath::parse("$.data[*].email").unwrap();
        assert!(path.query(&json!({"other": 1})).is_empty());
        assert_eq!(
            path.query(&json!({"data": [{"email": "a"}, {"email": "b"}]})),
            vec![&json!("a"), &json!("b")]
        );
    }

    #[test]
    fn bad_paths_are_refused_with_the_text() {
        let error = JsonPath::parse("$.data[").unwrap_err();
        assert!(
            error.starts_with("invalid JSONPath `$.data[`: syntax error at character 8"),
            "{error}"
        );
        assert!(JsonPath::parse("data.email").is_err());
    }
}
