//! JSONPath expressions (RFC 9535), parsed once when the configuration loads and evaluated
//! many times at run time.
//!
//! This module owns the only use of `jsonpath-rust`: its parser signature has changed
//! across releases, so the rest of the crate sees only [`JsonPath`]. It must never parse a
//! path on the hot path: querying by string re-parses on every call and is an order of
//! magnitude slower than evaluating the parsed form.

use std::fmt;
use std::ops::ControlFlow;

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
    /// For paths in the small grammar of [`Step`] (member names, indexes, wildcards and
    /// `[?@.name == literal]` filters): the steps, walked directly on the value.
    /// `jsonpath-rust` spends microseconds per query even on these (it builds a
    /// normalized path string for every node it visits), several times a direct walk, and
    /// they are nearly all of a connector's field and records paths. `None`: the library
    /// evaluates the path.
    steps: Option<Vec<Step>>,
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
        // The library stays the judge of what is a JSONPath: the fast form is only
        // compiled for text it accepted.
        let parsed = parse_json_path(trimmed)
            .map_err(|error| format!("invalid JSONPath `{source}`: {}", describe(&error)))?;
        Ok(JsonPath {
            source: source.to_string(),
            parsed,
            steps: compile(trimmed),
        })
    }

    /// Every node the path selects in `value`, in document order. A path that selects
    /// nothing (or that fails on this value) yields an empty vector: a record missing a
    /// field is normal data, not an error.
    pub fn query<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        let mut found = Vec::new();
        self.for_each(value, |node| found.push(node));
        found
    }

    /// The first selected node, if any. Allocates nothing on the direct walk and stops
    /// at the first match: most fields need one value, not the list.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.find_map(value, Some)
    }

    /// The first `Some` that `f` gives for the selected nodes, in document order; the
    /// nodes after it are not visited (on the direct walk, not even looked up). Lets a
    /// caller skip unusable matches (empty strings, nulls) without collecting them.
    pub fn find_map<'a, R>(
        &self,
        value: &'a Value,
        mut f: impl FnMut(&'a Value) -> Option<R>,
    ) -> Option<R> {
        let visit = |node| match f(node) {
            Some(found) => ControlFlow::Break(found),
            None => ControlFlow::Continue(()),
        };
        match self.try_for_each(value, visit) {
            ControlFlow::Break(found) => Some(found),
            ControlFlow::Continue(()) => None,
        }
    }

    /// Calls `f` on every selected node, in document order, without collecting them.
    pub fn for_each<'a>(&self, value: &'a Value, mut f: impl FnMut(&'a Value)) {
        let _ = self.try_for_each(value, |node| {
            f(node);
            ControlFlow::<()>::Continue(())
        });
    }

    fn try_for_each<'a, B>(
        &self,
        value: &'a Value,
        mut f: impl FnMut(&'a Value) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        match &self.steps {
            Some(steps) => walk(steps, value, &mut f),
            None => match js_path_process(&self.parsed, value) {
                Ok(refs) => refs.into_iter().try_for_each(|r| f(r.val())),
                Err(_) => ControlFlow::Continue(()),
            },
        }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The member names the path starts with and what follows them, for a path in the
    /// direct-walk grammar (`None` for any other path: what it reads is not known). The
    /// page projection uses it to prove which members of a page a path can reach.
    pub(crate) fn leading_members(&self) -> Option<Leading<'_>> {
        let steps = self.steps.as_deref()?;
        let count = steps
            .iter()
            .take_while(|step| matches!(step, Step::Member(_)))
            .count();
        let members = steps[..count]
            .iter()
            .map(|step| match step {
                Step::Member(name) => name.as_str(),
                _ => unreachable!("only member steps were counted"),
            })
            .collect();
        let rest = match &steps[count..] {
            [] => Rest::Nothing,
            [Step::Wildcard] => Rest::Wildcard,
            _ => Rest::More,
        };
        Some(Leading { members, rest })
    }
}

/// How a path of the direct-walk grammar begins (see [`JsonPath::leading_members`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leading<'p> {
    /// The names of the member steps before the first step of another kind.
    pub members: Vec<&'p str>,
    /// What comes after them.
    pub rest: Rest,
}

/// The steps of a path after its leading member steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rest {
    /// None: the path ends with its member steps.
    Nothing,
    /// One wildcard (`[*]`, `.*`), and nothing after it.
    Wildcard,
    /// Anything else: an index, a filter, or a wildcard followed by more steps.
    More,
}

/// One segment of a path in the direct-walk grammar. Each behaves exactly as
/// `jsonpath-rust` evaluates the same selector (RFC 9535 semantics), so that the walk
/// and the library select the same nodes in the same order.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `.name`, `['name']`, `["name"]`: the member of an object.
    Member(String),
    /// `[2]`, `[-1]`: an array element, negative from the end.
    Index(i64),
    /// `[*]`, `.*`: every element of an array, or every member value of an object (in
    /// the map's order, as the library iterates it).
    Wildcard,
    /// `[?@.a.b == literal]`, `[?@['a'] != literal]` (either operand order): the
    /// elements of an array, or member values of an object, for which the comparison
    /// holds.
    Filter(Filter),
}

/// A comparison between a relative singular query and a literal.
#[derive(Debug, Clone, PartialEq)]
struct Filter {
    /// The members and indexes after `@` (none: the node itself).
    query: Vec<Singular>,
    /// The literal, as the library turns it into a value.
    literal: Value,
    /// `==` (true) or `!=` (false).
    equal: bool,
}

/// A segment of a singular query: a member name or an index.
#[derive(Debug, Clone, PartialEq)]
enum Singular {
    Member(String),
    Index(i64),
}

/// Visits the nodes that `steps` select from `node`, depth first: the same order as the
/// library's breadth-wise evaluation, since each step keeps the order of its inputs.
fn walk<'a, B>(
    steps: &[Step],
    node: &'a Value,
    f: &mut impl FnMut(&'a Value) -> ControlFlow<B>,
) -> ControlFlow<B> {
    let Some((step, rest)) = steps.split_first() else {
        return f(node);
    };
    match step {
        Step::Member(name) => match member(node, name) {
            Some(child) => walk(rest, child, f),
            None => ControlFlow::Continue(()),
        },
        Step::Index(index) => match element(node, *index) {
            Some(child) => walk(rest, child, f),
            None => ControlFlow::Continue(()),
        },
        Step::Wildcard => match node {
            Value::Array(items) => items.iter().try_for_each(|item| walk(rest, item, f)),
            Value::Object(map) => map.values().try_for_each(|item| walk(rest, item, f)),
            _ => ControlFlow::Continue(()),
        },
        Step::Filter(filter) => match node {
            Value::Array(items) => items
                .iter()
                .filter(|item| filter.holds(item))
                .try_for_each(|item| walk(rest, item, f)),
            Value::Object(map) => map
                .values()
                .filter(|item| filter.holds(item))
                .try_for_each(|item| walk(rest, item, f)),
            _ => ControlFlow::Continue(()),
        },
    }
}

fn member<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    node.as_object()?.get(name)
}

/// `jsonpath-rust`'s index selector: out of range (either way) selects nothing.
fn element(node: &Value, index: i64) -> Option<&Value> {
    let items = node.as_array()?;
    if index >= 0 {
        items.get(usize::try_from(index).ok()?)
    } else {
        let back = usize::try_from(index.unsigned_abs()).ok()?;
        items.len().checked_sub(back).map(|i| &items[i])
    }
}

impl Filter {
    fn holds(&self, item: &Value) -> bool {
        let mut node = item;
        for segment in &self.query {
            let next = match segment {
                Singular::Member(name) => member(node, name),
                Singular::Index(index) => element(node, *index),
            };
            match next {
                Some(child) => node = child,
                // Nothing compares equal to a missing member, so `!=` holds.
                None => return !self.equal,
            }
        }
        eq_json(node, &self.literal) == self.equal
    }
}

/// `jsonpath-rust`'s equality (`query::comparison::eq_json`), copied so that the walk
/// compares as the library does: two numbers are equal when they differ by less than
/// `f64::EPSILON` (so `1 == 1.0`); anything else by JSON equality (so `"1" != 1` and
/// `"true" != true`).
fn eq_json(lhs: &Value, rhs: &Value) -> bool {
    let lhs_f64 = lhs.as_f64().or_else(|| lhs.as_i64().map(|v| v as f64));
    let rhs_f64 = rhs.as_f64().or_else(|| rhs.as_i64().map(|v| v as f64));
    if let (Some(lhs_num), Some(rhs_num)) = (lhs_f64, rhs_f64) {
        (lhs_num - rhs_num).abs() < f64::EPSILON
    } else {
        lhs == rhs
    }
}

/// The steps of a path in the direct-walk grammar, or `None` for anything else (or
/// anything this small parser is unsure of: escapes, exponents, whitespace between
/// segments), which the library then evaluates. Only called on text the library parsed.
fn compile(path: &str) -> Option<Vec<Step>> {
    let mut text = Cursor {
        rest: path.strip_prefix('$')?,
    };
    let mut steps = Vec::new();
    while !text.rest.is_empty() {
        if text.eat('.') {
            if text.eat('*') {
                steps.push(Step::Wildcard);
            } else {
                steps.push(Step::Member(text.shorthand()?.to_string()));
            }
        } else if text.eat('[') {
            text.blank();
            let step = if text.eat('*') {
                Step::Wildcard
            } else if text.eat('?') {
                text.blank();
                Step::Filter(text.filter()?)
            } else if let Some(name) = text.quoted() {
                Step::Member(name.to_string())
            } else {
                Step::Index(text.index()?)
            };
            text.blank();
            if !text.eat(']') {
                return None;
            }
            steps.push(step);
        } else {
            return None;
        }
    }
    Some(steps)
}

/// The unread rest of a path's text.
struct Cursor<'t> {
    rest: &'t str,
}

impl<'t> Cursor<'t> {
    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// RFC 9535's blank space (`S`), allowed inside brackets and around operators.
    fn blank(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', '\n', '\r']);
    }

    /// `member-name-shorthand`: a letter, `_` or non-ASCII character, then those or
    /// digits.
    fn shorthand(&mut self) -> Option<&'t str> {
        let first = self.rest.chars().next()?;
        if !(first.is_ascii_alphabetic() || first == '_' || !first.is_ascii()) {
            return None;
        }
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()))
            .unwrap_or(self.rest.len());
        let (name, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(name)
    }

    /// A string in single or double quotes with no escape and no control character
    /// inside (where unescaping could differ, the library evaluates the path).
    fn quoted(&mut self) -> Option<&'t str> {
        let quote = self
            .rest
            .chars()
            .next()
            .filter(|c| matches!(c, '\'' | '"'))?;
        let body = &self.rest[1..];
        let end = body.find(quote)?;
        let text = &body[..end];
        if text.chars().any(|c| c == '\\' || c.is_control()) {
            return None;
        }
        self.rest = &body[end + 1..];
        Some(text)
    }

    /// An index: `0` or an optional `-` and up to 15 digits not starting with `0` (well
    /// inside the library's safe-integer range).
    fn index(&mut self) -> Option<i64> {
        let digits_at = usize::from(self.rest.starts_with('-'));
        let len = self.rest[digits_at..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest.len() - digits_at);
        let digits = &self.rest[digits_at..digits_at + len];
        let plain = digits == "0" && digits_at == 0
            || (1..=15).contains(&digits.len()) && !digits.starts_with('0');
        if !plain {
            return None;
        }
        let (text, rest) = self.rest.split_at(digits_at + len);
        self.rest = rest;
        text.parse().ok()
    }

    /// After `?`: `@<singular query> op literal` or `literal op @<singular query>`, with
    /// `op` one of `==`, `!=`.
    fn filter(&mut self) -> Option<Filter> {
        if self.rest.starts_with('@') {
            let query = self.singular()?;
            let equal = self.operator()?;
            let literal = self.literal()?;
            Some(Filter {
                query,
                literal,
                equal,
            })
        } else {
            let literal = self.literal()?;
            let equal = self.operator()?;
            let query = self.singular()?;
            Some(Filter {
                query,
                literal,
                equal,
            })
        }
    }

    /// `@` followed by member names and indexes, with no blank in between.
    fn singular(&mut self) -> Option<Vec<Singular>> {
        if !self.eat('@') {
            return None;
        }
        let mut segments = Vec::new();
        loop {
            if self.eat('.') {
                segments.push(Singular::Member(self.shorthand()?.to_string()));
            } else if self.eat('[') {
                let segment = match self.quoted() {
                    Some(name) => Singular::Member(name.to_string()),
                    None => Singular::Index(self.index()?),
                };
                if !self.eat(']') {
                    return None;
                }
                segments.push(segment);
            } else {
                return Some(segments);
            }
        }
    }

    /// `==` (true) or `!=` (false), with blanks around.
    fn operator(&mut self) -> Option<bool> {
        self.blank();
        let equal = if self.rest.starts_with("==") {
            true
        } else if self.rest.starts_with("!=") {
            false
        } else {
            return None;
        };
        self.rest = &self.rest[2..];
        self.blank();
        Some(equal)
    }

    /// A literal as the library turns it into a value: a quoted string, `true`,
    /// `false`, `null`, or a number without exponent (an integer of at most 15 digits is
    /// an `i64`, one with a fraction an `f64`).
    fn literal(&mut self) -> Option<Value> {
        if let Some(text) = self.quoted() {
            return Some(Value::String(text.to_string()));
        }
        for (word, value) in [
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("null", Value::Null),
        ] {
            if let Some(rest) = self.rest.strip_prefix(word)
                && !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_')
            {
                self.rest = rest;
                return Some(value);
            }
        }
        let sign = usize::from(self.rest.starts_with('-'));
        let int_len = self.rest[sign..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest.len() - sign);
        let int = &self.rest[sign..sign + int_len];
        if !(int == "0" || (1..=15).contains(&int.len()) && !int.starts_with('0')) {
            return None;
        }
        let mut end = sign + int_len;
        let after = &self.rest[end..];
        let fraction = after.starts_with('.');
        if fraction {
            let frac_len = after[1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len() - 1);
            if frac_len == 0 {
                return None;
            }
            end += 1 + frac_len;
        }
        if self.rest[end..].starts_with(|c: char| c.is_alphanumeric() || c == '.') {
            // An exponent, or something this parser does not know.
            return None;
        }
        let (text, rest) = self.rest.split_at(end);
        let value = if fraction {
            Value::from(text.parse::<f64>().ok().filter(|f| f.is_finite())?)
        } else {
            Value::from(text.parse::<i64>().ok()?)
        };
        self.rest = rest;
        Some(value)
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

    /// What the library selects: the reference the direct walk must match.
    fn library<'a>(path: &JsonPath, value: &'a Value) -> Vec<&'a Value> {
        js_path_process(&path.parsed, value)
            .map(|refs| refs.into_iter().map(|r| r.val()).collect())
            .unwrap_or_default()
    }

    /// The same nodes (not merely equal values) in the same order, and `first`,
    /// `find_map` and `for_each` consistent with them.
    fn assert_agrees(path: &JsonPath, value: &Value) {
        let expected = library(path, value);
        let got = path.query(value);
        let same = expected.len() == got.len()
            && expected.iter().zip(&got).all(|(a, b)| std::ptr::eq(*a, *b));
        assert!(
            same,
            "{path}: on {value}\n library: {expected:?}\n    walk: {got:?}"
        );
        assert!(
            match (path.first(value), expected.first()) {
                (Some(a), Some(b)) => std::ptr::eq(a, *b),
                (None, None) => true,
                _ => false,
            },
            "first of {path} on {value}"
        );
        let second = path.find_map(value, {
            let mut seen = 0;
            move |node| {
                seen += 1;
                (seen == 2).then_some(node)
            }
        });
        assert!(
            match (second, expected.get(1)) {
                (Some(a), Some(b)) => std::ptr::eq(a, *b),
                (None, None) => true,
                _ => false,
            },
            "second of {path} on {value}"
        );
    }

    /// Every string starting with `$` in the YAML files under `dir` that parses as a
    /// JSONPath: fields, custom fields, records, pagination and predicate paths.
    fn yaml_paths(dir: &std::path::Path, out: &mut Vec<String>) {
        fn strings(value: &serde_yaml::Value, out: &mut Vec<String>) {
            match value {
                serde_yaml::Value::String(s)
                    if s.trim_start().starts_with('$') && JsonPath::parse(s).is_ok() =>
                {
                    out.push(s.clone());
                }
                serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| strings(v, out)),
                serde_yaml::Value::Mapping(map) => map.values().for_each(|v| strings(v, out)),
                serde_yaml::Value::Tagged(tagged) => strings(&tagged.value, out),
                _ => {}
            }
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir() {
                yaml_paths(&entry, out);
            } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&entry).unwrap();
                if let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(&text) {
                    strings(&value, out);
                }
            }
        }
    }

    fn connector_paths() -> Vec<String> {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut paths = Vec::new();
        for dir in [
            "connectors.d",
            "benches/fixtures/pipedrive/connectors.d",
            "tests/fixtures/valid",
        ] {
            yaml_paths(&repo.join(dir), &mut paths);
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// Paths on the edges of the direct-walk grammar, and some just outside it.
    const TRICKY: &[&str] = &[
        "$",
        "$.emails",
        "$['emails']",
        "$[\"emails\"]",
        "$['a b']",
        "$[\"it's\"]",
        "$['x\\'y']",
        "$['@odata.nextLink']",
        "$.名前",
        "$._x1",
        "$.true",
        "$.*",
        "$[*]",
        "$.*.*",
        "$[*][*]",
        "$[*].value",
        "$.*[0]",
        "$[ * ]",
        "$[ 'emails' ][ 0 ]",
        "$.emails[0]",
        "$.emails[1].value",
        "$.emails[-1]",
        "$.emails[-2].value",
        "$.emails[-3]",
        "$.emails[7]",
        "$.emails[0][0]",
        "$.emails[*][*]",
        "$.emails[*].value",
        "$.emails.value",
        "$.emails[?@.primary == true].value",
        "$.emails[?@.primary==true].value",
        "$.emails[ ?@.primary == true ].value",
        "$.emails[?@.primary\t==\ntrue].value",
        "$.emails[?@.primary != true].value",
        "$.emails[?@.primary == false].value",
        "$.emails[?@.primary != false]",
        "$.emails[?@.primary == 1].value",
        "$.emails[?@.primary == 1.0].value",
        "$.emails[?@.primary == -1]",
        "$.emails[?@.primary == -0]",
        "$.emails[?@.primary == 0]",
        "$.emails[?@.primary == 0.5]",
        "$.emails[?@.primary == 2.50]",
        "$.emails[?@.primary == 'true'].value",
        "$.emails[?@.primary == \"true\"].value",
        "$.emails[?@.primary == '']",
        "$.emails[?@.primary == null].value",
        "$.emails[?@.primary != null].value",
        "$.emails[?true == @.primary].value",
        "$.emails[?1 != @.primary].value",
        "$.emails[?@['primary'] == true].value",
        "$.emails[?@[\"primary\"] == true]",
        "$.emails[?@.meta.primary == true].value",
        "$.emails[?@.tags[0] == 'a']",
        "$.emails[?@.tags[-1] == 'b']",
        "$.emails[?@ == 'x']",
        "$.emails[?@ != 'x']",
        "$.emails[?@.value == 'a@example.com'].primary",
        "$[?@.primary == true]",
        "$.data[*]",
        "$.data[*].emails[?@.primary == true].value",
        "$.data[?@.n == 1].id",
        "$.data[?@.n == 1e0]",
        "$.data[?@.n == 1E-300]",
        "$.data[?@.n > 1]",
        "$..value",
        "$..emails[?@.primary == true].value",
        "$.emails[0:1]",
        "$.emails[-1:]",
        "$.emails[0,1]",
        "$['emails','data']",
        "$.emails[?@.primary]",
        "$.emails[?!@.primary]",
        "$.emails[?(@.primary == true)]",
        "$.emails[?@.primary == true && @.value]",
        "$.emails[?@.primary == true || @.primary == 'true']",
        "$.emails[?@.primary == $.flag]",
        "$.emails[?@.primary == @.value]",
        "$.emails[?length(@.value) == 13]",
        "$.emails[?@ .primary == true]",
        "$.emails[?@.primary == '\\u0074rue']",
        "$.emails[?'true' == @.primary]",
        "$ .emails",
    ];

    fn documents() -> Vec<Value> {
        let flags = [
            json!(true),
            json!(false),
            json!("true"),
            json!(1),
            json!(1.0),
            json!(0),
            json!(-0.0),
            json!(0.5),
            json!(2.5),
            json!(-1),
            json!(null),
            json!(""),
            json!([]),
            json!({}),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e-20),
        ];
        let mut docs = vec![
            json!({}),
            json!([]),
            json!(null),
            json!("text"),
            json!(1),
            json!([1, [2, 3], {"a": 4}]),
            json!({"emails": []}),
            json!({"emails": {}}),
            json!({"emails": null}),
            json!({"emails": "ada@example.com"}),
            json!({"emails": ["a@example.com", "x", "b@example.com"]}),
            json!({"emails": [[1, 2], [3], [], {"primary": true}]}),
            json!({"emails": {
                "work": {"value": "w@example.com", "primary": true},
                "home": {"value": "h@example.com", "primary": false},
                "x": "x"
            }}),
            json!({"emails": [
                {"value": "a@example.com", "primary": true, "tags": ["a", "b"],
                 "meta": {"primary": true}},
                {"value": "b@example.com", "primary": true, "tags": []},
                {"value": "c@example.com"},
                {"value": null, "primary": true, "meta": "x"}
            ]}),
            json!({
                "data": [
                    {"id": 1, "n": 1, "emails": [{"value": "x", "primary": true}]},
                    {"id": 2, "n": 1.0, "emails": []},
                    {"id": 3, "n": "1", "emails": {"a": {"value": "y", "primary": true}}},
                    {"id": 4},
                    "scalar",
                    [1]
                ],
                "flag": true,
                "a b": 1, "it's": 2, "x'y": 3, "@odata.nextLink": "n", "名前": "名",
                "_x1": [], "true": false
            }),
        ];
        for flag in &flags {
            docs.push(json!({"emails": [
                {"value": "old@example.com", "primary": false},
                {"value": "new@example.com", "primary": flag},
                {"value": "last@example.com"}
            ]}));
            docs.push(json!({"emails": [flag, {"primary": flag, "value": flag}]}));
            docs.push(json!({"data": [{"n": flag, "id": flag}]}));
        }
        docs
    }

    #[test]
    fn the_direct_walk_agrees_with_the_library_on_every_connector_path() {
        let paths = connector_paths();
        assert!(paths.len() > 50, "found only {paths:?}");
        for expected in [
            "$.emails[?@.primary == true].value",
            "$.data[*]",
            "$['5a1c3f0e9b8d7c6a5f4e3d2c1b0a998877665544']",
        ] {
            assert!(paths.iter().any(|p| p == expected), "{expected} not found");
        }
        let docs = documents();
        let mut walked = 0;
        for source in &paths {
            let path = JsonPath::parse(source).unwrap();
            walked += usize::from(path.steps.is_some());
            for doc in &docs {
                assert_agrees(&path, doc);
            }
        }
        // Only slices and the like are left to the library.
        assert!(walked + 3 >= paths.len(), "{walked} of {}", paths.len());
    }

    #[test]
    fn the_direct_walk_agrees_with_the_library_on_tricky_paths() {
        let docs = documents();
        for source in TRICKY {
            let path = JsonPath::parse(source).unwrap_or_else(|e| panic!("{e}"));
            for doc in &docs {
                assert_agrees(&path, doc);
            }
        }
    }

    #[test]
    fn the_direct_walk_covers_the_small_grammar_only() {
        let walked = |source: &str| JsonPath::parse(source).unwrap().steps.is_some();
        for source in [
            "$",
            "$.a.b",
            "$['@odata.nextLink']",
            "$.data[*]",
            "$.results.*",
            "$.emails[0].value",
            "$.emails[-1]",
            "$[ 'a' ]",
            "$.emails[?@.primary == true].value",
            "$.emails[?@.metadata.primary==true].value",
            "$.emails[?@['primary'] != 'x']",
            "$.emails[?null == @]",
            "$.emails[?@.n == -2.5]",
        ] {
            assert!(walked(source), "{source} should take the direct walk");
        }
        for source in [
            "$..b",
            "$.a[0:1]",
            "$['a','b']",
            "$['x\\'y']",
            "$.a[?@.n == 1e3]",
            "$.a[?@.n > 1]",
            "$.a[?@.n]",
            "$.a[?(@.n == 1)]",
            "$.a[?@.n == 1 && @.m == 2]",
            "$.a[?@.n == $.m]",
            "$.a[?@.n == '\\u0041']",
            "$ .a",
        ] {
            assert!(!walked(source), "{source} should be left to the library");
        }
        for source in ["$.1a", "$.a[01]", "$.a[-0]", "$.a[?@.n === 1]", "$.a.'b'"] {
            assert!(
                JsonPath::parse(source).is_err(),
                "{source} should not parse"
            );
        }
    }

    #[test]
    fn leading_members_are_given_for_the_small_grammar_only() {
        let leading = |source: &str| {
            JsonPath::parse(source)
                .unwrap()
                .leading_members()
                .map(|l| (l.members.join("/"), l.rest))
        };
        let some = |members: &str, rest| Some((members.to_string(), rest));
        assert_eq!(leading("$"), some("", Rest::Nothing));
        assert_eq!(leading("$.data"), some("data", Rest::Nothing));
        assert_eq!(leading("$.a['b c'].d"), some("a/b c/d", Rest::Nothing));
        assert_eq!(leading("$.data[*]"), some("data", Rest::Wildcard));
        assert_eq!(leading("$.data.*"), some("data", Rest::Wildcard));
        assert_eq!(leading("$[*]"), some("", Rest::Wildcard));
        assert_eq!(leading("$.data[*].id"), some("data", Rest::More));
        assert_eq!(leading("$.data[*][*]"), some("data", Rest::More));
        assert_eq!(leading("$.data[-1].id"), some("data", Rest::More));
        assert_eq!(
            leading("$.emails[?@.primary == true]"),
            some("emails", Rest::More)
        );
        assert_eq!(leading("$[?@.a == 1].b"), some("", Rest::More));
        for source in ["$..a", "$.a[0:1]", "$['a','b']", "$.data[-1:].id"] {
            assert_eq!(leading(source), None, "{source}");
        }
    }

    #[test]
    fn comparisons_follow_the_library() {
        let doc = json!({"items": [
            {"n": 1}, {"n": 1.0}, {"n": "1"}, {"n": true}, {"n": 1.0000000000000002},
            {"n": 1e-20}, {"n": 0}, {"m": 1}
        ]});
        let ids = |source: &str| -> Vec<usize> {
            let path = JsonPath::parse(source).unwrap();
            assert!(path.steps.is_some());
            assert_agrees(&path, &doc);
            let items = doc["items"].as_array().unwrap();
            path.query(&doc)
                .into_iter()
                .map(|v| items.iter().position(|i| std::ptr::eq(i, v)).unwrap())
                .collect()
        };
        assert_eq!(ids("$.items[?@.n == 1]"), [0, 1]);
        assert_eq!(ids("$.items[?@.n == 1.0]"), [0, 1]);
        assert_eq!(ids("$.items[?@.n == '1']"), [2]);
        assert_eq!(ids("$.items[?@.n == true]"), [3]);
        assert_eq!(ids("$.items[?@.n == 0]"), [5, 6]);
        assert_eq!(ids("$.items[?@.n != 1]"), [2, 3, 4, 5, 6, 7]);
    }

    /// A small random JSON value over the names and values the paths above use.
    fn random_value(rng: &mut rand::rngs::StdRng, depth: u32) -> Value {
        use rand::Rng;
        const NAMES: [&str; 8] = ["a", "b", "primary", "value", "emails", "data", "n", "tags"];
        let scalars = [
            json!(true),
            json!(false),
            json!("true"),
            json!(1),
            json!(1.0),
            json!(0),
            json!(-1),
            json!(null),
            json!("a"),
            json!(""),
            json!(0.5),
        ];
        match if depth == 0 {
            0
        } else {
            rng.random_range(0..4)
        } {
            0 | 1 => scalars[rng.random_range(0..scalars.len())].clone(),
            2 => Value::Array(
                (0..rng.random_range(0..4))
                    .map(|_| random_value(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.random_range(0..5))
                    .map(|_| {
                        let name = NAMES[rng.random_range(0..NAMES.len())];
                        (name.to_string(), random_value(rng, depth - 1))
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn random_paths_of_the_small_grammar_agree_with_the_library_on_random_values() {
        use rand::{Rng, SeedableRng};
        const PIECES: &[&str] = &[
            ".a",
            "['b']",
            ".emails",
            ".data",
            "[*]",
            ".*",
            "[0]",
            "[1]",
            "[-1]",
            "[-2]",
            "[?@.primary == true]",
            "[?@.primary != true]",
            "[?@.n == 1]",
            "[?@.n != 0.5]",
            "[?@ == 'a']",
            "[?'true' == @.primary]",
            "[?@.a.b == null]",
            "[?@.tags[0] == false]",
            "[?@['value'] != '']",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(9535);
        let values: Vec<Value> = (0..200).map(|_| random_value(&mut rng, 4)).collect();
        for _ in 0..300 {
            let mut source = String::from("$");
            for _ in 0..rng.random_range(1..5) {
                source.push_str(PIECES[rng.random_range(0..PIECES.len())]);
            }
            let path = JsonPath::parse(&source).unwrap();
            assert!(path.steps.is_some(), "{source}");
            for value in &values {
                assert_agrees(&path, value);
            }
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
