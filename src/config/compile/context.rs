//! Templates and JSONPaths of one connector, compiled with every variable checked against
//! the documented context (`credentials.*`, `settings.*`, `filters.*`, `token.*`,
//! `keyset.*` and the scalars), and what each template reads recorded for the checks that
//! need it (unused settings and filters, the credentials an importer must supply).
//!
//! Also the small helpers every compile module shares: [`FileCx`] (one file's
//! diagnostics), key joining, lists and suggestions for messages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::config::diagnostic::Diagnostic;
use crate::config::locate::Locator;
use crate::config::spec::{
    BodySpec, ConnectorSpec, FilterApplySpec, PathList, RequestSpec, Templates,
};
use crate::duration::IsoDuration;
use crate::jsonpath::JsonPath;
use crate::plan::{Body, HttpMethod, Request};
use crate::template::{JsonTemplate, Template};

/// The scalar variables of the template context.
pub const CONTEXT_SCALARS: &[&str] = &[
    "since",
    "change_token",
    "page",
    "offset",
    "cursor",
    "page_size",
    "now",
];

/// Checks template variables against the documented context of one connector.
pub struct ContextRules<'a> {
    pub spec: &'a ConnectorSpec,
    /// Why `token.*` cannot be used in the templates being compiled, if it cannot.
    pub token_blocked_by: Option<String>,
}

impl ContextRules<'_> {
    fn check(&self, variable: &str) -> Result<(), String> {
        let parts: Vec<&str> = variable.split('.').collect();
        let known = "the context has credentials.*, settings.*, filters.*, token.*, since, \
                     change_token, page, offset, cursor, page_size, keyset.updated, keyset.id, now";
        match parts[0] {
            "credentials" => {
                if parts.len() < 2 {
                    return Err("use `credentials.NAME`".into());
                }
                Ok(())
            }
            "settings" => {
                let Some(name) = parts.get(1) else {
                    return Err("use `settings.NAME`".into());
                };
                if !self.spec.settings.contains_key(*name) {
                    return Err(format!(
                        "setting '{name}' is not declared under `settings` (declared: {}){}",
                        list(self.spec.settings.keys()),
                        suggest(name, self.spec.settings.keys().map(String::as_str))
                    ));
                }
                Ok(())
            }
            "filters" => {
                let Some(name) = parts.get(1) else {
                    return Err("use `filters.NAME`".into());
                };
                match self.spec.filters.get(*name) {
                    None => Err(format!(
                        "filter '{name}' is not declared under `filters` (declared: {}){}",
                        list(self.server_filters()),
                        suggest(name, self.server_filters().into_iter().map(String::as_str))
                    )),
                    Some(f) if !matches!(f.apply, FilterApplySpec::Server(_)) => Err(format!(
                        "filter '{name}' is applied client-side; templates see only server-side filters"
                    )),
                    Some(_) => Ok(()),
                }
            }
            "token" => {
                if parts.len() < 2 {
                    return Err("use `token.NAME`".into());
                }
                if let Some(kind) = &self.token_blocked_by {
                    return Err(format!(
                        "`token.*` is set only by `oauth2` and `session` auth; {kind}"
                    ));
                }
                Ok(())
            }
            "keyset" => match parts.get(1) {
                Some(&"updated") | Some(&"id") if parts.len() == 2 => Ok(()),
                _ => Err(format!(
                    "unknown variable `{variable}` (keyset has `keyset.updated` and `keyset.id`)"
                )),
            },
            scalar if CONTEXT_SCALARS.contains(&scalar) => {
                if parts.len() > 1 {
                    Err(format!(
                        "`{scalar}` is a single value; `{variable}` does not exist"
                    ))
                } else {
                    Ok(())
                }
            }
            root => {
                let roots = [
                    "credentials",
                    "settings",
                    "filters",
                    "token",
                    "keyset",
                    "since",
                    "change_token",
                    "page",
                    "offset",
                    "cursor",
                    "page_size",
                    "now",
                ];
                let hint = suggest(root, roots);
                Err(format!("unknown variable `{variable}` ({known}){hint}"))
            }
        }
    }

    fn server_filters(&self) -> Vec<&String> {
        self.spec
            .filters
            .iter()
            .filter(|(_, f)| matches!(f.apply, FilterApplySpec::Server(_)))
            .map(|(n, _)| n)
            .collect()
    }
}

/// Compiles templates of one connector, checking each variable and recording uses.
pub struct TemplateCx<'a, 'b> {
    pub file: FileCx<'a>,
    pub rules: ContextRules<'b>,
    pub uses: Uses,
    /// The auth scheme whose templates are being compiled, if any.
    pub scheme: Option<String>,
    /// Templates that did not compile: checks on what templates use are skipped then,
    /// since the variables of a broken template are unknown.
    pub broken_templates: usize,
}

impl TemplateCx<'_, '_> {
    pub fn template(&mut self, key: &str, source: &str) -> Option<Template> {
        match Template::compile(source) {
            Ok(template) => {
                self.check_variables(key, &template);
                Some(template)
            }
            Err(error) => {
                self.file.error(key, error.to_string());
                self.broken_templates += 1;
                None
            }
        }
    }

    pub fn check_variables(&mut self, key: &str, template: &Template) {
        for variable in template.variables() {
            if let Err(message) = self.rules.check(&variable) {
                self.file.error(key, message);
            }
            match &self.scheme {
                Some(scheme) => {
                    self.uses
                        .per_scheme
                        .entry(scheme.clone())
                        .or_default()
                        .insert(variable);
                }
                None => {
                    self.uses.common.insert(variable);
                }
            }
        }
    }

    pub fn map(&mut self, key: &str, entries: &Templates) -> Vec<(String, Template)> {
        entries
            .iter()
            .filter_map(|(name, source)| {
                self.template(&join(key, name), source)
                    .map(|t| (name.clone(), t))
            })
            .collect()
    }

    pub fn path(&mut self, key: &str, source: &str) -> Option<JsonPath> {
        match JsonPath::parse(source) {
            Ok(path) => Some(path),
            Err(message) => {
                self.file.error(key, message);
                None
            }
        }
    }

    pub fn paths(&mut self, key: &str, list: &PathList) -> Vec<JsonPath> {
        match list {
            PathList::One(source) => self.path(key, source).into_iter().collect(),
            PathList::Many(sources) => {
                if sources.is_empty() {
                    self.file.error(key, "give at least one JSONPath");
                }
                sources
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| self.path(&format!("{key}[{i}]"), s))
                    .collect()
            }
        }
    }

    pub fn request(&mut self, key: &str, spec: &RequestSpec) -> Option<Request> {
        let path = self.template(&join(key, "path"), &spec.path);
        let query = self.map(&join(key, "query"), &spec.query);
        let headers = self.map(&join(key, "headers"), &spec.headers);
        let method = spec.method.unwrap_or_default();
        let body = match &spec.body {
            None => None,
            Some(body) => {
                if method == HttpMethod::Get {
                    self.file.error(
                        &join(key, "body"),
                        "a GET request has no body; use `method: POST`",
                    );
                }
                self.body(&join(key, "body"), body)
            }
        };
        Some(Request {
            method,
            path: path?,
            query,
            headers,
            body,
        })
    }

    pub fn body(&mut self, key: &str, spec: &BodySpec) -> Option<Body> {
        match spec {
            BodySpec::Json(value) => {
                let key = join(key, "json");
                match JsonTemplate::compile(value) {
                    Ok(tree) => {
                        for (at, template) in tree.templates() {
                            self.check_variables(&join(&key, &at), template);
                        }
                        Some(Body::Json(tree))
                    }
                    Err((at, error)) => {
                        self.file.error(&join(&key, &at), error.to_string());
                        None
                    }
                }
            }
            BodySpec::Form(fields) => Some(Body::Form(self.map(&join(key, "form"), fields))),
            BodySpec::Template(source) => self
                .template(&join(key, "template"), source)
                .map(Body::Template),
        }
    }
}

/// Collects diagnostics for one file.
pub struct FileCx<'a> {
    pub shown: &'a Path,
    pub locator: &'a Locator,
    pub out: &'a mut Vec<Diagnostic>,
    /// Errors reported so far: a section with errors compiles to nothing.
    pub errors: usize,
}

impl FileCx<'_> {
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        self.errors += 1;
        self.out.push(Diagnostic::error(
            self.shown,
            self.locator.find(key),
            key,
            message,
        ));
    }

    pub fn warning(&mut self, key: &str, message: impl Into<String>) {
        self.out.push(Diagnostic::warning(
            self.shown,
            self.locator.find(key),
            key,
            message,
        ));
    }
}

pub fn join(key: &str, child: &str) -> String {
    if key.is_empty() {
        child.to_string()
    } else {
        format!("{key}.{child}")
    }
}

pub fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// `; did you mean 'x'?` when one candidate is a small typo away from `name`, else empty.
/// Levenshtein distance over characters (`strsim`), at most a quarter of the name.
pub fn suggest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    let limit = (name.chars().count() / 4).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| format!("; did you mean '{c}'?"))
        .unwrap_or_default()
}

/// What a connector's templates read, for the checks that need an importer.
#[derive(Debug, Default, Clone)]
pub struct Uses {
    /// Variables read by templates outside auth schemes.
    pub common: BTreeSet<String>,
    /// Variables read per auth scheme.
    pub per_scheme: BTreeMap<String, BTreeSet<String>>,
}

impl Uses {
    pub fn credentials_for(&self, scheme: Option<&str>) -> BTreeSet<String> {
        let scheme_vars = scheme.and_then(|s| self.per_scheme.get(s));
        self.common
            .iter()
            .chain(scheme_vars.into_iter().flatten())
            .filter_map(|v| v.strip_prefix("credentials."))
            .map(|v| v.split('.').next().unwrap_or(v).to_string())
            .collect()
    }
}

pub fn duration_or(value: Option<&IsoDuration>, default: Duration) -> Duration {
    value.map(|d| d.get()).unwrap_or(default)
}

pub fn fingerprint(value: &Value) -> String {
    blake3::hash(value.to_string().as_bytes())
        .to_hex()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_only_for_small_typos() {
        assert_eq!(
            suggest("stag", ["stage", "owner_id"]),
            "; did you mean 'stage'?"
        );
        assert_eq!(
            suggest("credential", ["credentials", "settings"]),
            "; did you mean 'credentials'?"
        );
        assert_eq!(suggest("region", ["company"]), "");
    }
}
