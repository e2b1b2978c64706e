//! Checks that go beyond one file's syntax, and the compilation of specs into the
//! [`Plan`]: templates compiled and checked against the documented context, JSONPaths
//! parsed, pagination styles complete, importers matched against their connector.
//!
//! Every problem becomes a [`Diagnostic`] with the file, the key path and (through the
//! file's [`Locator`]) the line and column where the key was written. All problems of all
//! files are collected; nothing stops at the first one. This module never reads files
//! (the loader hands it parsed specs) and resolves credentials only when asked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::diagnostic::Diagnostic;
use crate::config::load::{LoadOptions, SourceFile};
use crate::config::locate::Locator;
use crate::config::spec::{
    AuthSpec, BodySpec, ConnectorSpec, CustomFieldType, FilterApply, FilterOp, FilterValueType,
    HttpMethod, ImporterSpec, PageCommon as PageCommonSpec, PaginationSpec, PathList, RequestSpec,
    StopRule, SyncSpec, TimestampSpec,
};
use crate::jsonpath::JsonPath;
use crate::model::{self, personalization_tag};
use crate::plan::{
    Auth, Body, ClientFilter, Connector, CustomField, DaemonConfig, Fields, Filter, Importer,
    PageCommon, Pagination, Plan, Predicate, Request, Setting, Subscription, Sync, Timestamp,
    defaults,
};
use crate::template::{JsonTemplate, Template};
use crate::timeformat::{TimeFormat, parse_zone};

/// The scalar variables of the template context.
pub const CONTEXT_SCALARS: &[&str] = &["since", "page", "offset", "cursor", "page_size", "now"];

/// Standard contact fields a client-side filter may read.
pub const STANDARD_FIELDS: &[&str] = &[
    "email",
    "first_name",
    "last_name",
    "full_name",
    "phone",
    "organization",
    "external_id",
    "updated_at",
];

/// Collects diagnostics for one file.
struct FileCx<'a> {
    shown: &'a Path,
    locator: &'a Locator,
    out: &'a mut Vec<Diagnostic>,
    errors: usize,
}

impl FileCx<'_> {
    fn error(&mut self, key: &str, message: impl Into<String>) {
        self.errors += 1;
        self.out.push(Diagnostic::error(
            self.shown,
            self.locator.find(key),
            key,
            message,
        ));
    }

    fn warning(&mut self, key: &str, message: impl Into<String>) {
        self.out.push(Diagnostic::warning(
            self.shown,
            self.locator.find(key),
            key,
            message,
        ));
    }
}

fn join(key: &str, child: &str) -> String {
    if key.is_empty() {
        child.to_string()
    } else {
        format!("{key}.{child}")
    }
}

fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// `; did you mean 'x'?` when one candidate is a small typo away from `name`, else empty.
fn suggest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    let limit = (name.chars().count() / 4).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| format!("; did you mean '{c}'?"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(current)
            };
            previous = current;
        }
    }
    row[b.len()]
}

/// What a connector's templates read, for the checks that need an importer.
#[derive(Debug, Default, Clone)]
struct Uses {
    /// Variables read by templates outside auth schemes.
    common: BTreeSet<String>,
    /// Variables read per auth scheme.
    per_scheme: BTreeMap<String, BTreeSet<String>>,
}

impl Uses {
    fn credentials_for(&self, scheme: Option<&str>) -> BTreeSet<String> {
        let scheme_vars = scheme.and_then(|s| self.per_scheme.get(s));
        self.common
            .iter()
            .chain(scheme_vars.into_iter().flatten())
            .filter_map(|v| v.strip_prefix("credentials."))
            .map(|v| v.split('.').next().unwrap_or(v).to_string())
            .collect()
    }
}

/// Checks template variables against the documented context of one connector.
struct ContextRules<'a> {
    spec: &'a ConnectorSpec,
    /// Why `token.*` cannot be used in the templates being compiled, if it cannot.
    token_blocked_by: Option<String>,
}

impl ContextRules<'_> {
    fn check(&self, variable: &str) -> Result<(), String> {
        let parts: Vec<&str> = variable.split('.').collect();
        let known = "the context has credentials.*, settings.*, filters.*, token.*, since, page, \
                     offset, cursor, page_size, keyset.updated, keyset.id, now";
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
                    Some(f) if !matches!(f.apply, FilterApply::Server {}) => Err(format!(
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
            .filter(|(_, f)| matches!(f.apply, FilterApply::Server {}))
            .map(|(n, _)| n)
            .collect()
    }
}

/// Compiles templates of one connector, checking each variable and recording uses.
struct TemplateCx<'a, 'b> {
    file: FileCx<'a>,
    rules: ContextRules<'b>,
    uses: Uses,
    /// The auth scheme whose templates are being compiled, if any.
    scheme: Option<String>,
    /// Templates that did not compile: checks on what templates use are skipped then,
    /// since the variables of a broken template are unknown.
    broken_templates: usize,
}

impl TemplateCx<'_, '_> {
    fn template(&mut self, key: &str, source: &str) -> Option<Template> {
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

    fn check_variables(&mut self, key: &str, template: &Template) {
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

    fn map(&mut self, key: &str, entries: &BTreeMap<String, String>) -> Vec<(String, Template)> {
        entries
            .iter()
            .filter_map(|(name, source)| {
                self.template(&join(key, name), source)
                    .map(|t| (name.clone(), t))
            })
            .collect()
    }

    fn path(&mut self, key: &str, source: &str) -> Option<JsonPath> {
        match JsonPath::parse(source) {
            Ok(path) => Some(path),
            Err(message) => {
                self.file.error(key, message);
                None
            }
        }
    }

    fn paths(&mut self, key: &str, list: &PathList) -> Vec<JsonPath> {
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

    fn request(&mut self, key: &str, spec: &RequestSpec) -> Option<Request> {
        let path = self.template(&join(key, "path"), &spec.path);
        let query = self.map(&join(key, "query"), &spec.query);
        let headers = self.map(&join(key, "headers"), &spec.headers);
        let method = spec.method.unwrap_or(HttpMethod::Get);
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

    fn body(&mut self, key: &str, spec: &BodySpec) -> Option<Body> {
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

fn duration_or(value: Option<&crate::duration::IsoDuration>, default: Duration) -> Duration {
    value.map(|d| d.get()).unwrap_or(default)
}

/// Every connector by id: the compiled form (`None` when it has errors), what its
/// templates use, and its file.
type CompiledSet<'a> =
    BTreeMap<String, (Option<Arc<Connector>>, Uses, &'a SourceFile<ConnectorSpec>)>;

/// The result of compiling one connector.
struct CompiledConnector {
    connector: Connector,
    uses: Uses,
}

fn compile_connector(
    file: &SourceFile<ConnectorSpec>,
    out: &mut Vec<Diagnostic>,
) -> Option<CompiledConnector> {
    let spec = &file.spec;
    let has_token_scheme = spec
        .auth
        .values()
        .any(|a| matches!(a, AuthSpec::Oauth2 { .. } | AuthSpec::Session { .. }));
    let mut cx = TemplateCx {
        file: FileCx {
            shown: &file.shown,
            locator: &file.locator,
            out,
            errors: 0,
        },
        rules: ContextRules {
            spec,
            token_blocked_by: (!has_token_scheme).then(|| "this connector has neither".to_string()),
        },
        uses: Uses::default(),
        scheme: None,
        broken_templates: 0,
    };

    let service = spec.service.clone().unwrap_or_else(|| file.id.clone());
    if service.trim().is_empty() {
        cx.file.error("service", "must not be empty");
    }
    let base_url = cx.template("base_url", &spec.base_url);
    let headers = cx.map("headers", &spec.headers);
    let timeouts = spec.timeouts.as_ref();
    let connect_timeout = duration_or(
        timeouts.and_then(|t| t.connect.as_ref()),
        defaults::CONNECT_TIMEOUT,
    );
    let request_timeout = duration_or(
        timeouts.and_then(|t| t.request.as_ref()),
        defaults::REQUEST_TIMEOUT,
    );
    for (key, value) in [
        ("timeouts.connect", connect_timeout),
        ("timeouts.request", request_timeout),
    ] {
        if value.is_zero() {
            cx.file.error(key, "must be longer than zero");
        }
    }

    let mut settings = BTreeMap::new();
    for (name, setting) in &spec.settings {
        let required = setting.required.unwrap_or(setting.default.is_none());
        if required && setting.default.is_some() {
            cx.file.error(
                &format!("settings.{name}.default"),
                "a required setting has no use for a default",
            );
        }
        settings.insert(
            name.clone(),
            Setting {
                required,
                default: setting.default.clone(),
            },
        );
    }

    // Auth schemes.
    let mut auth = BTreeMap::new();
    for (name, scheme) in &spec.auth {
        let key = format!("auth.{name}");
        cx.scheme = Some(name.clone());
        cx.rules.token_blocked_by = match scheme {
            AuthSpec::Oauth2 { .. } | AuthSpec::Session { .. } => None,
            other => Some(format!("this scheme is `{}`", auth_kind(other))),
        };
        if let Some(compiled) = compile_auth(&mut cx, &key, scheme) {
            auth.insert(name.clone(), compiled);
        }
    }
    cx.scheme = None;
    cx.rules.token_blocked_by =
        (!has_token_scheme).then(|| "this connector has neither".to_string());

    // The list request.
    let contacts = &spec.contacts;
    let request = cx.request("contacts.request", &contacts.request);
    let records = cx.path("contacts.records", &contacts.records);
    let (page_size_max, page_size_default) = match &contacts.page_size {
        Some(ps) => {
            if ps.max == 0 {
                cx.file
                    .error("contacts.page_size.max", "must be at least 1");
            }
            let default = ps.default.unwrap_or(ps.max);
            if default > ps.max {
                cx.file.error(
                    "contacts.page_size.default",
                    format!("{default} is above the maximum page size {}", ps.max),
                );
            }
            if default == 0 {
                cx.file
                    .error("contacts.page_size.default", "must be at least 1");
            }
            (ps.max, default)
        }
        None => (defaults::PAGE_SIZE, defaults::PAGE_SIZE),
    };
    if contacts.max_results_per_query == Some(0) {
        cx.file
            .error("contacts.max_results_per_query", "must be at least 1");
    }
    let pagination = compile_pagination(&mut cx, &contacts.pagination);
    if contacts.max_results_per_query.is_some()
        && !cx.uses.common.contains("keyset.updated")
        && !cx.uses.common.contains("keyset.id")
        && cx.broken_templates == 0
    {
        cx.file.error(
            "contacts.max_results_per_query",
            "restarting a query needs `{{keyset.updated}}` or `{{keyset.id}}` in contacts.request",
        );
    }

    // Fields.
    let f = &contacts.fields;
    let mut fields = Fields {
        email: cx.paths("contacts.fields.email", &f.email),
        ..Fields::default()
    };
    let optional = |cx: &mut TemplateCx, key: &str, list: &Option<PathList>| {
        list.as_ref().map(|l| cx.paths(key, l)).unwrap_or_default()
    };
    fields.first_name = optional(&mut cx, "contacts.fields.first_name", &f.first_name);
    fields.last_name = optional(&mut cx, "contacts.fields.last_name", &f.last_name);
    fields.full_name = optional(&mut cx, "contacts.fields.full_name", &f.full_name);
    fields.phone = optional(&mut cx, "contacts.fields.phone", &f.phone);
    fields.organization = optional(&mut cx, "contacts.fields.organization", &f.organization);
    fields.external_id = optional(&mut cx, "contacts.fields.external_id", &f.external_id);
    fields.updated_at = f
        .updated_at
        .as_ref()
        .and_then(|ts| compile_timestamp(&mut cx, "contacts.fields.updated_at", ts));

    // Custom fields.
    let mut custom_fields = Vec::new();
    let mut tags: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (index, cf) in contacts.custom_fields.iter().enumerate() {
        let key = format!("contacts.custom_fields[{index}]");
        let field_type = cf.field_type.unwrap_or(CustomFieldType::Text);
        if cf.label.trim().is_empty() {
            cx.file.error(&join(&key, "label"), "must not be empty");
        }
        let tag = personalization_tag(&service, &cf.label);
        if let Some((other, other_label)) = tags.get(&tag) {
            cx.file.error(
                &join(&key, "label"),
                format!(
                    "label '{}' gives the tag {tag}, as custom_fields[{other}] ('{other_label}') does",
                    cf.label
                ),
            );
        } else {
            tags.insert(tag.clone(), (index, cf.label.clone()));
        }
        if cf.delimiter.is_some() && field_type != CustomFieldType::List {
            cx.file.error(
                &join(&key, "delimiter"),
                "only a `list` field is split on a delimiter",
            );
        }
        if cf.delimiter.as_deref() == Some("") {
            cx.file.error(&join(&key, "delimiter"), "must not be empty");
        }
        if cf.format.is_some() && field_type != CustomFieldType::Date {
            cx.file
                .error(&join(&key, "format"), "only a `date` field has a format");
        }
        let format = match cf.format.as_deref().map(TimeFormat::parse) {
            None => TimeFormat::Rfc3339,
            Some(Ok(f)) => f,
            Some(Err(message)) => {
                cx.file.error(&join(&key, "format"), message);
                TimeFormat::Rfc3339
            }
        };
        let paths = cx.paths(&join(&key, "path"), &cf.path);
        custom_fields.push(CustomField {
            def: model::CustomFieldDef {
                tag,
                label: cf.label.clone(),
                field_type,
                service: service.clone(),
            },
            paths,
            delimiter: cf.delimiter.clone(),
            format,
        });
    }

    let subscription = contacts.subscription.as_ref().and_then(|s| {
        if s.map.is_empty() {
            cx.file.error(
                "contacts.subscription.map",
                "map at least one service value (e.g. `unsubscribed: unsubscribed`)",
            );
        }
        cx.path("contacts.subscription.path", &s.path)
            .map(|path| Subscription {
                path,
                map: s.map.clone(),
            })
    });
    let deleted = contacts.deleted.as_ref().and_then(|d| {
        cx.path("contacts.deleted.path", &d.path)
            .map(|path| Predicate {
                path,
                equals: d.equals.clone(),
            })
    });

    // Sync.
    let request_vars = cx.uses.common.clone();
    let sync = match &spec.sync {
        SyncSpec::Incremental {
            since_format,
            lookback,
            full_refresh_every,
        } => {
            let since_format = match since_format.as_deref().map(TimeFormat::parse) {
                None => TimeFormat::Rfc3339,
                Some(Ok(f)) => f,
                Some(Err(message)) => {
                    cx.file.error("sync.since_format", message);
                    TimeFormat::Rfc3339
                }
            };
            if !request_vars.contains("since") && cx.broken_templates == 0 {
                cx.file.error(
                    "sync",
                    "an incremental connector must send `{{since}}` somewhere in contacts.request \
                     (query, headers, body) or base_url; otherwise use `mode: full_refresh`",
                );
            }
            let full_refresh_every = full_refresh_every.as_ref().map(|d| d.get());
            if full_refresh_every.is_some_and(|d| d < defaults::MIN_INTERVAL) {
                cx.file
                    .error("sync.full_refresh_every", "must be at least PT1M");
            }
            Sync::Incremental {
                since_format,
                lookback: duration_or(lookback.as_ref(), Duration::ZERO),
                full_refresh_every,
            }
        }
        SyncSpec::FullRefresh { every } => {
            if request_vars.contains("since") {
                cx.file.error(
                    "sync",
                    "`{{since}}` is never set in `mode: full_refresh`; use `mode: incremental`",
                );
            }
            let every = duration_or(every.as_ref(), defaults::FULL_REFRESH_EVERY);
            if every < defaults::MIN_INTERVAL {
                cx.file.error("sync.every", "must be at least PT1M");
            }
            Sync::FullRefresh { every }
        }
    };

    // Filters.
    let mut filters = BTreeMap::new();
    let labels: BTreeSet<&str> = contacts
        .custom_fields
        .iter()
        .map(|c| c.label.as_str())
        .collect();
    for (name, filter) in &spec.filters {
        let key = format!("filters.{name}");
        if let FilterApply::Client { field, op } = &filter.apply {
            if !STANDARD_FIELDS.contains(&field.as_str()) && !labels.contains(field.as_str()) {
                cx.file.error(
                    &join(&key, "apply.field"),
                    format!(
                        "'{field}' is neither a standard field ({}) nor a custom field label (declared: {})",
                        list(STANDARD_FIELDS),
                        list(&labels)
                    ),
                );
            }
            let needs_date = matches!(op, FilterOp::Before | FilterOp::After);
            if needs_date && filter.value_type != FilterValueType::Datetime {
                cx.file.error(
                    &join(&key, "type"),
                    format!(
                        "`{}` compares dates: the type must be `datetime`",
                        op_name(*op)
                    ),
                );
            }
            if *op == FilterOp::OneOf && filter.value_type != FilterValueType::StringList {
                cx.file.error(
                    &join(&key, "type"),
                    "`one_of` takes a list: the type must be `string_list`",
                );
            }
            if *op == FilterOp::Exists && filter.value_type != FilterValueType::Boolean {
                cx.file.error(
                    &join(&key, "type"),
                    "`exists` takes true or false: the type must be `boolean`",
                );
            }
        }
        filters.insert(
            name.clone(),
            Filter {
                value_type: filter.value_type,
                apply: filter.apply.clone(),
            },
        );
    }

    // Declared but never read: a server-side filter would silently filter nothing, a
    // setting would be asked of importers for no effect.
    if cx.broken_templates == 0 {
        let used: BTreeSet<&String> = cx
            .uses
            .common
            .iter()
            .chain(cx.uses.per_scheme.values().flatten())
            .collect();
        let reads = |root: &str, name: &str| {
            let exact = format!("{root}.{name}");
            let nested = format!("{exact}.");
            used.iter().any(|v| **v == exact || v.starts_with(&nested))
        };
        for (name, filter) in &spec.filters {
            if matches!(filter.apply, FilterApply::Server {}) && !reads("filters", name) {
                cx.file.error(
                    &format!("filters.{name}"),
                    format!(
                        "server-side filter '{name}' is used by no template, so it would filter nothing; send `{{{{filters.{name}}}}}` in contacts.request"
                    ),
                );
            }
        }
        for name in spec.settings.keys() {
            if !reads("settings", name) {
                cx.file.warning(
                    &format!("settings.{name}"),
                    format!("setting '{name}' is used by no template"),
                );
            }
        }
    }
    let errors = cx.file.errors;
    let uses = cx.uses;
    if errors > 0 {
        return None;
    }
    let connector = Connector {
        id: file.id.clone(),
        file: file.path.clone(),
        service,
        base_url: base_url?,
        headers,
        connect_timeout,
        request_timeout,
        auth,
        request: request?,
        pagination: pagination?,
        records: records?,
        page_size_max,
        page_size_default,
        max_results_per_query: contacts.max_results_per_query,
        fields,
        custom_fields,
        subscription,
        deleted,
        sync,
        filters,
        settings,
        fingerprint: fingerprint(&serde_json::to_value(spec).unwrap_or(Value::Null)),
    };
    Some(CompiledConnector { connector, uses })
}

fn auth_kind(spec: &AuthSpec) -> &'static str {
    match spec {
        AuthSpec::None {} => "none",
        AuthSpec::ApiKey { .. } => "api_key",
        AuthSpec::Bearer { .. } => "bearer",
        AuthSpec::Basic { .. } => "basic",
        AuthSpec::Oauth2 { .. } => "oauth2",
        AuthSpec::Session { .. } => "session",
        AuthSpec::Header { .. } => "header",
    }
}

fn op_name(op: FilterOp) -> &'static str {
    match op {
        FilterOp::Equals => "equals",
        FilterOp::OneOf => "one_of",
        FilterOp::Contains => "contains",
        FilterOp::Exists => "exists",
        FilterOp::Before => "before",
        FilterOp::After => "after",
    }
}

fn compile_timestamp(cx: &mut TemplateCx, key: &str, spec: &TimestampSpec) -> Option<Timestamp> {
    let paths = cx.paths(&join(key, "path"), &spec.path);
    let format = match spec.format.as_deref().map(TimeFormat::parse) {
        None => TimeFormat::Rfc3339,
        Some(Ok(f)) => f,
        Some(Err(message)) => {
            cx.file.error(&join(key, "format"), message);
            return None;
        }
    };
    let zone = match spec.timezone.as_deref().map(parse_zone) {
        None => chrono::FixedOffset::east_opt(0).expect("zero offset is valid"),
        Some(Ok(z)) => z,
        Some(Err(message)) => {
            cx.file.error(&join(key, "timezone"), message);
            return None;
        }
    };
    Some(Timestamp {
        paths,
        format,
        zone,
    })
}

fn compile_auth(cx: &mut TemplateCx, key: &str, spec: &AuthSpec) -> Option<Auth> {
    let k = |child: &str| join(key, child);
    Some(match spec {
        AuthSpec::None {} => Auth::None,
        AuthSpec::ApiKey {
            location,
            name,
            value,
        } => {
            if name.trim().is_empty() {
                cx.file.error(&k("name"), "must not be empty");
            }
            Auth::ApiKey {
                location: *location,
                name: name.clone(),
                value: cx.template(&k("value"), value)?,
            }
        }
        AuthSpec::Bearer { token } => Auth::Bearer {
            token: cx.template(&k("token"), token)?,
        },
        AuthSpec::Basic { username, password } => {
            let username = cx.template(&k("username"), username);
            let password = match password {
                Some(p) => Some(cx.template(&k("password"), p)?),
                None => None,
            };
            Auth::Basic {
                username: username?,
                password,
            }
        }
        AuthSpec::Oauth2 {
            token_url,
            client_id,
            client_secret,
            refresh_token,
            client_auth,
            scopes,
            rotates_refresh_token,
        } => {
            let token_url = cx.template(&k("token_url"), token_url);
            let client_id = cx.template(&k("client_id"), client_id);
            let client_secret = cx.template(&k("client_secret"), client_secret);
            let refresh_token = cx.template(&k("refresh_token"), refresh_token);
            for (field, template) in [
                ("token_url", &token_url),
                ("client_id", &client_id),
                ("client_secret", &client_secret),
                ("refresh_token", &refresh_token),
            ] {
                if let Some(t) = template
                    && t.variables().iter().any(|v| v.starts_with("token."))
                {
                    cx.file.error(
                        &k(field),
                        "`token.*` comes from the token response and cannot be used to get it",
                    );
                }
            }
            Auth::Oauth2 {
                token_url: token_url?,
                client_id: client_id?,
                client_secret: client_secret?,
                refresh_token: refresh_token?,
                client_auth: client_auth.unwrap_or(crate::plan::ClientAuth::Body),
                scopes: scopes.clone(),
                rotates_refresh_token: *rotates_refresh_token,
            }
        }
        AuthSpec::Session {
            login,
            token,
            ttl,
            headers,
            query,
        } => {
            let saved = cx
                .rules
                .token_blocked_by
                .replace("the login request runs before there is a session".to_string());
            let login = cx.request(&k("login"), login);
            cx.rules.token_blocked_by = saved;
            let token = cx.path(&k("token"), token);
            let headers = cx.map(&k("headers"), headers);
            let query = cx.map(&k("query"), query);
            if headers.is_empty() && query.is_empty() {
                cx.file.error(
                    key,
                    "a session must be sent somewhere: give `headers` or `query` using `{{token.session}}`",
                );
            }
            let ttl = duration_or(ttl.as_ref(), defaults::SESSION_TTL);
            if ttl.is_zero() {
                cx.file.error(&k("ttl"), "must be longer than zero");
            }
            Auth::Session {
                login: login?,
                token: token?,
                ttl,
                headers,
                query,
            }
        }
        AuthSpec::Header { headers } => {
            if headers.is_empty() {
                cx.file.error(&k("headers"), "give at least one header");
            }
            Auth::Header {
                headers: cx.map(&k("headers"), headers),
            }
        }
    })
}

fn compile_pagination(cx: &mut TemplateCx, spec: &PaginationSpec) -> Option<Pagination> {
    let key = "contacts.pagination";
    let vars = cx.uses.common.clone();
    let uses = |name: &str| vars.contains(name);
    let needs_var = |cx: &mut TemplateCx, style: &str, var: &str| {
        if !uses(var) && cx.broken_templates == 0 {
            cx.file.error(
                key,
                format!("pagination `{style}` needs `{{{{{var}}}}}` in contacts.request (query, headers or body)"),
            );
        }
    };
    Some(match spec {
        PaginationSpec::None {} => Pagination::None,
        PaginationSpec::PageNumber { start, common } => {
            needs_var(cx, "page_number", "page");
            Pagination::PageNumber {
                start: start.unwrap_or(1),
                common: compile_common(cx, key, "page_number", common, false)?,
            }
        }
        PaginationSpec::Offset { start, common } => {
            needs_var(cx, "offset", "offset");
            Pagination::Offset {
                start: start.unwrap_or(0),
                common: compile_common(cx, key, "offset", common, false)?,
            }
        }
        PaginationSpec::Cursor { cursor, common } => {
            needs_var(cx, "cursor", "cursor");
            let cursor = cx.path(&join(key, "cursor"), cursor);
            Pagination::Cursor {
                common: compile_common(cx, key, "cursor", common, true)?,
                cursor: cursor?,
            }
        }
        PaginationSpec::NextUrl {
            next_url,
            verbatim,
            common,
        } => {
            let next_url = cx.path(&join(key, "next_url"), next_url);
            Pagination::NextUrl {
                common: compile_common(cx, key, "next_url", common, true)?,
                next_url: next_url?,
                verbatim: verbatim.unwrap_or(true),
            }
        }
        PaginationSpec::LinkHeader { common } => Pagination::LinkHeader {
            common: compile_common(cx, key, "link_header", common, true)?,
        },
        PaginationSpec::Keyset { common } => {
            if !uses("keyset.updated") && !uses("keyset.id") && cx.broken_templates == 0 {
                cx.file.error(
                    key,
                    "pagination `keyset` needs `{{keyset.updated}}` or `{{keyset.id}}` in contacts.request",
                );
            }
            Pagination::Keyset {
                common: compile_common(cx, key, "keyset", common, false)?,
            }
        }
    })
}

fn compile_common(
    cx: &mut TemplateCx,
    key: &str,
    style: &str,
    spec: &PageCommonSpec,
    has_token: bool,
) -> Option<PageCommon> {
    if spec.stop.is_empty() {
        cx.file.error(
            &join(key, "stop"),
            format!(
                "pagination `{style}` needs at least one stop rule (missing_token, empty_page, \
                 short_page, has_more_false, total_reached)"
            ),
        );
    }
    for (index, rule) in spec.stop.iter().enumerate() {
        let at = format!("{key}.stop[{index}]");
        match rule {
            StopRule::HasMoreFalse if spec.has_more.is_none() => cx.file.error(
                &at,
                "`has_more_false` needs `has_more` (a JSONPath to the flag)",
            ),
            StopRule::TotalReached if spec.total.is_none() && spec.total_pages.is_none() => cx
                .file
                .error(
                    &at,
                    "`total_reached` needs `total` or `total_pages` (a JSONPath)",
                ),
            StopRule::MissingToken if !has_token => cx.file.error(
                &at,
                format!("`missing_token`: pagination `{style}` has no token; use empty_page, short_page, has_more_false or total_reached"),
            ),
            _ => {}
        }
        if spec.stop[..index].contains(rule) {
            cx.file.error(&at, "this stop rule is listed twice");
        }
    }
    let has_more = spec
        .has_more
        .as_ref()
        .and_then(|p| cx.path(&join(key, "has_more"), p));
    let total = spec
        .total
        .as_ref()
        .and_then(|p| cx.path(&join(key, "total"), p));
    let total_pages = spec
        .total_pages
        .as_ref()
        .and_then(|p| cx.path(&join(key, "total_pages"), p));
    let max_pages = spec.max_pages.unwrap_or(defaults::MAX_PAGES);
    if max_pages == 0 {
        cx.file.error(&join(key, "max_pages"), "must be at least 1");
    }
    Some(PageCommon {
        stop: spec.stop.clone(),
        has_more,
        total,
        total_pages,
        max_pages,
    })
}

fn fingerprint(value: &Value) -> String {
    blake3::hash(value.to_string().as_bytes())
        .to_hex()
        .to_string()
}

fn type_matches(value_type: FilterValueType, value: &Value) -> bool {
    match value_type {
        FilterValueType::String => value.is_string(),
        FilterValueType::Integer => value.is_i64() || value.is_u64(),
        FilterValueType::Number => value.is_number(),
        FilterValueType::Boolean => value.is_boolean(),
        FilterValueType::Datetime => value
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        FilterValueType::StringList => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
    }
}

fn type_name(value_type: FilterValueType) -> &'static str {
    match value_type {
        FilterValueType::String => "a string",
        FilterValueType::Integer => "an integer",
        FilterValueType::Number => "a number",
        FilterValueType::Boolean => "true or false",
        FilterValueType::Datetime => "an RFC 3339 date-time such as 2024-05-01T00:00:00Z",
        FilterValueType::StringList => "a list of strings",
    }
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => format!("the number {value}"),
        Value::String(s) => format!("the string \"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn compile_importer(
    file: &SourceFile<ImporterSpec>,
    connectors: &CompiledSet,
    options: LoadOptions,
    out: &mut Vec<Diagnostic>,
) -> Option<Importer> {
    let spec = &file.spec;
    let mut cx = FileCx {
        shown: &file.shown,
        locator: &file.locator,
        out,
        errors: 0,
    };
    let Some((connector, uses, connector_file)) = connectors.get(&spec.connector) else {
        cx.error(
            "connector",
            format!(
                "no connector '{}' in the connectors directory (known: {}){}",
                spec.connector,
                list(connectors.keys()),
                suggest(&spec.connector, connectors.keys().map(String::as_str))
            ),
        );
        return None;
    };
    let cspec = &connector_file.spec;
    let cid = &spec.connector;

    // Auth scheme.
    let schemes: Vec<&String> = cspec.auth.keys().collect();
    let auth_scheme = match (&spec.auth, schemes.len()) {
        (Some(name), _) if cspec.auth.contains_key(name) => Some(name.clone()),
        (Some(name), 0) => {
            cx.error(
                "auth",
                format!("connector '{cid}' has no auth schemes, so '{name}' cannot be chosen"),
            );
            None
        }
        (Some(name), _) => {
            cx.error(
                "auth",
                format!(
                    "connector '{cid}' has no auth scheme '{name}' (known: {}){}",
                    list(&schemes),
                    suggest(name, schemes.iter().map(|s| s.as_str()))
                ),
            );
            None
        }
        (None, 0) => None,
        (None, 1) => Some(schemes[0].clone()),
        (None, _) => {
            cx.error(
                "auth",
                format!(
                    "connector '{cid}' offers several auth schemes; choose one with `auth:` (known: {})",
                    list(&schemes)
                ),
            );
            None
        }
    };

    // Credentials.
    let auth_ok = cx.errors == 0;
    let needed = uses.credentials_for(auth_scheme.as_deref());
    for name in &needed {
        if !spec.credentials.contains_key(name) {
            let via = auth_scheme
                .as_deref()
                .map(|s| format!(" (auth '{s}')"))
                .unwrap_or_default();
            cx.error(
                "credentials",
                format!(
                    "connector '{cid}'{via} uses credentials.{name}, which this importer does not supply"
                ),
            );
        }
    }
    for (name, reference) in &spec.credentials {
        let key = format!("credentials.{name}");
        // A connector with errors has no record of what it uses: say nothing then.
        if connector.is_some() && auth_ok && !needed.contains(name) {
            cx.warning(
                &key,
                format!(
                    "connector '{cid}' does not use credentials.{name} (it uses: {})",
                    list(&needed)
                ),
            );
        }
        if options.resolve_credentials
            && let Err(error) = crate::secret::resolve(reference)
        {
            cx.error(&key, error.to_string());
        }
    }

    // Settings.
    let mut settings = Map::new();
    for (name, value) in &spec.settings {
        if !cspec.settings.contains_key(name) {
            cx.error(
                &format!("settings.{name}"),
                format!(
                    "connector '{cid}' has no setting '{name}' (known: {}){}",
                    list(cspec.settings.keys()),
                    suggest(name, cspec.settings.keys().map(String::as_str))
                ),
            );
        } else if value.is_null() {
            cx.error(&format!("settings.{name}"), "must not be null");
        } else {
            settings.insert(name.clone(), value.clone());
        }
    }
    for (name, setting) in &cspec.settings {
        if spec.settings.contains_key(name) {
            continue;
        }
        match &setting.default {
            Some(default) => {
                settings.insert(name.clone(), default.clone());
            }
            None if setting.required.unwrap_or(true) => cx.error(
                "settings",
                format!("connector '{cid}' requires the setting '{name}'"),
            ),
            None => {
                settings.insert(name.clone(), Value::Null);
            }
        }
    }

    // Filters.
    let mut filters = Map::new();
    let mut client_filters = Vec::new();
    for (name, value) in &spec.filters {
        let key = format!("filters.{name}");
        let Some(filter) = cspec.filters.get(name) else {
            cx.error(
                &key,
                format!(
                    "connector '{cid}' has no filter '{name}' (known: {}){}",
                    list(cspec.filters.keys()),
                    suggest(name, cspec.filters.keys().map(String::as_str))
                ),
            );
            continue;
        };
        if !type_matches(filter.value_type, value) {
            cx.error(
                &key,
                format!(
                    "filter '{name}' takes {}, not {}",
                    type_name(filter.value_type),
                    describe_value(value)
                ),
            );
            continue;
        }
        filters.insert(name.clone(), value.clone());
        if let FilterApply::Client { field, op } = &filter.apply {
            client_filters.push(ClientFilter {
                name: name.clone(),
                field: field.clone(),
                op: *op,
                value: value.clone(),
            });
        }
    }

    if spec.list.trim().is_empty() {
        cx.error("list", "must name a contact list");
    }
    let interval = duration_or(spec.interval.as_ref(), defaults::INTERVAL);
    if interval < defaults::MIN_INTERVAL {
        cx.error(
            "interval",
            format!(
                "{} is under the minimum interval PT1M",
                spec.interval.as_ref().map(|d| d.as_str()).unwrap_or("")
            ),
        );
    }
    let (page_size_max, page_size_default) = match connector {
        Some(c) => (c.page_size_max, c.page_size_default),
        None => (
            cspec
                .contacts
                .page_size
                .as_ref()
                .map(|p| p.max)
                .unwrap_or(defaults::PAGE_SIZE),
            defaults::PAGE_SIZE,
        ),
    };
    let page_size = spec.page_size.unwrap_or(page_size_default);
    if page_size == 0 {
        cx.error("page_size", "must be at least 1");
    } else if page_size > page_size_max {
        cx.error(
            "page_size",
            format!("{page_size} is above connector '{cid}''s maximum page size {page_size_max}"),
        );
    }
    let page_budget = match spec.page_budget {
        None => Some(defaults::PAGE_BUDGET),
        Some(0) => None,
        Some(n) => Some(n),
    };

    if cx.errors > 0 {
        return None;
    }
    // A connector with errors has its own diagnostics; the importer cannot run without it.
    let connector = connector.clone()?;
    let fingerprint = fingerprint(&serde_json::json!({
        "connector": connector.fingerprint,
        "auth": auth_scheme,
        "credentials": serde_json::to_value(&spec.credentials).unwrap_or(Value::Null),
        "settings": settings,
        "filters": filters,
        "list": spec.list,
        "page_size": page_size,
    }));
    Some(Importer {
        id: file.id.clone(),
        file: file.path.clone(),
        connector,
        auth_scheme: auth_scheme.unwrap_or_default(),
        credentials: spec.credentials.clone(),
        settings,
        filters,
        client_filters,
        list: spec.list.clone(),
        interval,
        page_budget,
        page_size,
        enabled: spec.enabled.unwrap_or(true),
        fingerprint,
    })
}

/// Compiles every connector and importer, cross-checks them, and returns the plan (when
/// nothing is an error; the caller decides from the diagnostics).
pub fn build_plan(
    daemon: DaemonConfig,
    connector_files: Vec<SourceFile<ConnectorSpec>>,
    importer_files: Vec<SourceFile<ImporterSpec>>,
    broken_connectors: &BTreeSet<String>,
    options: LoadOptions,
    out: &mut Vec<Diagnostic>,
) -> Option<Plan> {
    let mut compiled: CompiledSet = BTreeMap::new();
    for file in &connector_files {
        match compile_connector(file, out) {
            Some(c) => {
                compiled.insert(file.id.clone(), (Some(Arc::new(c.connector)), c.uses, file));
            }
            None => {
                compiled.insert(file.id.clone(), (None, Uses::default(), file));
            }
        }
    }
    check_service_tags(&connector_files, out);

    let mut importers = BTreeMap::new();
    for file in &importer_files {
        // A connector file that did not parse has its own diagnostics already.
        if broken_connectors.contains(&file.spec.connector) {
            continue;
        }
        if let Some(importer) = compile_importer(file, &compiled, options, out) {
            importers.insert(importer.id.clone(), Arc::new(importer));
        }
    }
    check_duplicate_streams(&importer_files, out);

    let connectors = compiled
        .into_iter()
        .filter_map(|(id, (c, _, _))| c.map(|c| (id, c)))
        .collect();
    Some(Plan {
        daemon,
        connectors,
        importers,
    })
}

/// Two connectors of one service share custom fields by tag: a tag that two different
/// labels give is an error (the same label in both is sharing, and fine).
fn check_service_tags(files: &[SourceFile<ConnectorSpec>], out: &mut Vec<Diagnostic>) {
    type Seen<'f> = BTreeMap<(String, String), (String, &'f Path, CustomFieldType)>;
    let mut seen: Seen = BTreeMap::new();
    for file in files {
        let service = file.spec.service.clone().unwrap_or_else(|| file.id.clone());
        for (index, cf) in file.spec.contacts.custom_fields.iter().enumerate() {
            let tag = personalization_tag(&service, &cf.label);
            let field_type = cf.field_type.unwrap_or(CustomFieldType::Text);
            match seen.get(&(service.clone(), tag.clone())) {
                Some((label, other, other_type))
                    if *label == cf.label
                        && *other_type != field_type
                        && *other != file.shown.as_path() =>
                {
                    // One field in the store: the first connector to run would fix its
                    // type and the other's values would be converted or fail.
                    let key = format!("contacts.custom_fields[{index}].type");
                    out.push(Diagnostic::warning(
                        &file.shown,
                        file.locator.find(&key),
                        key,
                        format!(
                            "custom field '{label}' is `{}` here but `{}` in {} (same service '{service}', one field {tag})",
                            type_label(field_type),
                            type_label(*other_type),
                            other.display()
                        ),
                    ));
                }
                Some((label, other, _)) if *label != cf.label && *other != file.shown.as_path() => {
                    let key = format!("contacts.custom_fields[{index}].label");
                    out.push(Diagnostic::error(
                        &file.shown,
                        file.locator.find(&key),
                        key,
                        format!(
                            "label '{}' gives the tag {tag}, as label '{label}' in {} does (same service '{service}')",
                            cf.label,
                            other.display()
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    seen.insert(
                        (service.clone(), tag),
                        (cf.label.clone(), file.shown.as_path(), field_type),
                    );
                }
            }
        }
    }
}

fn type_label(field_type: CustomFieldType) -> &'static str {
    match field_type {
        CustomFieldType::Text => "text",
        CustomFieldType::Number => "number",
        CustomFieldType::Date => "date",
        CustomFieldType::List => "list",
    }
}

/// Two enabled importers with the same connector, account (credentials and settings),
/// filters and list make two data streams into one list: a warning on the later file.
fn check_duplicate_streams(files: &[SourceFile<ImporterSpec>], out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<String, &SourceFile<ImporterSpec>> = BTreeMap::new();
    for file in files {
        let s = &file.spec;
        // A disabled copy is a deliberate spare, not a second stream.
        if s.enabled == Some(false) {
            continue;
        }
        let key = serde_json::json!({
            "connector": s.connector,
            "auth": s.auth,
            "credentials": serde_json::to_value(&s.credentials).unwrap_or(Value::Null),
            "settings": s.settings,
            "filters": s.filters,
            "list": s.list,
        })
        .to_string();
        if let Some(first) = seen.get(&key) {
            out.push(Diagnostic::warning(
                &file.shown,
                file.locator.find("connector"),
                "",
                format!(
                    "importer '{}' ({}) already imports the same connector, account, filters and list: two data streams into one list",
                    first.id,
                    first.shown.display()
                ),
            ));
        } else {
            seen.insert(key, file);
        }
    }
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
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
