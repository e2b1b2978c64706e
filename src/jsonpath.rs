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
    /// For a plain chain of member names (`$.a.b`, `$['@odata.nextLink']`): the names,
    /// walked directly. `jsonpath-rust` spends a few microseconds per query even on these,
    /// about ten times a direct walk, and they are most of a connector's field paths.
    members: Option<Vec<String>>,
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
            members: member_chain(trimmed),
        })
    }

    /// Every node the path selects in `value`, in document order. A path that selects
    /// nothing (or that fails on this value) yields an empty vector: a record missing a
    /// field is normal data, not an error.
    pub fn query<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        if let Some(members) = &self.members {
            let mut node = value;
            for member in members {
                match node.get(member.as_str()) {
                    Some(child) => node = child,
                    None => return Vec::new(),
                }
            }
            return vec![node];
        }
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

/// The member names of a path made only of `.name` (ASCII identifier) and `['name']`
/// (no quote or backslash inside) segments; `None` for anything else, which
/// `jsonpath-rust` evaluates.
fn member_chain(path: &str) -> Option<Vec<String>> {
    let mut rest = path.strip_prefix('$')?;
    let mut members = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..end];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            members.push(name.to_string());
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("['") {
            let end = after.find('\'')?;
            let name = &after[..end];
            if name.contains('\\') {
                return None;
            }
            members.push(name.to_string());
            rest = after[end + 1..].strip_prefix(']')?;
        } else {
            return None;
        }
    }
    Some(members)
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
    fn member_chains_take_the_direct_walk_and_agree_with_the_library() {
        let doc = json!({
            "a": {"b": {"c": 1}, "n": null, "list": [1, 2]},
            "@odata.nextLink": "https://x.test/next",
            "x_1": "y",
            "arr": [{"b": 2}]
        });
        let simple = [
            "$",
            "$.a",
            "$.a.b.c",
            "$.a.n",
            "$.a.missing",
            "$.a.list",
            "$['@odata.nextLink']",
            "$.x_1",
            "$.arr.b",
            "$.a.b.c.d",
            "$['a']['b']",
        ];
        for source in simple {
            let path = JsonPath::parse(source).unwrap();
            assert!(path.members.is_some(), "{source} should be a member chain");
            let library = js_path_process(&path.parsed, &doc)
                .map(|refs| refs.into_iter().map(|r| r.val()).collect::<Vec<_>>())
                .unwrap_or_default();
            assert_eq!(path.query(&doc), library, "{source}");
        }
        for source in [
            "$.a[*]",
            "$..b",
            "$.arr[0].b",
            "$.a.*",
            "$['a','b']",
            "$.1a",
        ] {
            let parsed = JsonPath::parse(source);
            assert!(
                parsed.is_err() || parsed.unwrap().members.is_none(),
                "{source}"
            );
        }
    }

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
