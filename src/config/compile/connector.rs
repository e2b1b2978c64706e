//! Compiles one connector, one function per section of its file: service and base URL,
//! timeouts, settings, auth schemes, the list request, pagination, fields, sync mode,
//! filters; then what was declared but never read. [`compile`] only calls them in the
//! order the sections depend on each other (pagination and sync need to know what the
//! request's templates use).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::config::compile::context::{
    ContextRules, FileCx, TemplateCx, Uses, duration_or, fingerprint, join, list,
};
use crate::config::compile::{auth, error_rules, fields, pagination};
use crate::config::diagnostic::Diagnostic;
use crate::config::read::SourceFile;
use crate::config::spec::{
    ChangeTokenSpec, ConnectorSpec, ContactsSpec, FilterApplySpec, FilterSpec, FullRefreshSpec,
    IncrementalSpec, RateLimitSpec, RecordsAbsent, SettingSpec, SyncSpec, TimeoutsSpec,
};
use crate::plan::{
    Connector, Deletions, Filter, FilterApply, FilterOp, FilterValueType, Pagination, PassOrder,
    RateLimit, Setting, Sync, defaults,
};
use crate::timeformat::TimeFormat;

/// Hashes of the parts of a connector that decide which records a pass returns, by part
/// name. Everything else (description, timeouts, rate limits, error rules, the fields
/// read from a record, custom fields, consent, deletions) can change without restarting a
/// pass: the saved position still points at the same records.
fn pass_parts(spec: &ConnectorSpec) -> BTreeMap<String, String> {
    let hash = |value: Value| fingerprint(&value)[..16].to_string();
    let contacts = &spec.contacts;
    let mut parts = BTreeMap::new();
    parts.insert(
        "connection".to_string(),
        hash(serde_json::json!({
            "base_url": spec.base_url,
            "headers": json(&spec.headers),
            "settings": json(&spec.settings),
        })),
    );
    parts.insert("request".into(), hash(json(&contacts.request)));
    parts.insert("pagination".into(), hash(json(&contacts.pagination)));
    parts.insert(
        "records".into(),
        hash(serde_json::json!({
            "records": contacts.records,
            "absent": json(&contacts.records_absent),
            "max_results_per_query": contacts.max_results_per_query,
        })),
    );
    parts.insert("sync".into(), hash(json(&spec.sync)));
    parts.insert("filters".into(), hash(json(&spec.filters)));
    for (name, scheme) in &spec.auth {
        parts.insert(format!("auth.{name}"), hash(json(scheme)));
    }
    parts
}

/// A spec part as JSON, for hashing (spec types all derive `Serialize`).
fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A compiled connector and what its templates read (for its importers' checks).
pub(super) struct CompiledConnector {
    pub connector: Connector,
    pub uses: Uses,
}

/// Compiles `file`, reporting every problem; `None` when any is an error.
pub(super) fn compile(
    file: &SourceFile<ConnectorSpec>,
    out: &mut Vec<Diagnostic>,
) -> Option<CompiledConnector> {
    let spec = &file.spec;
    let mut cx = TemplateCx {
        file: FileCx {
            shown: &file.shown,
            locator: &file.locator,
            out,
            errors: 0,
        },
        rules: ContextRules {
            spec,
            token_blocked_by: auth::token_blocked_outside_auth(spec),
        },
        uses: Uses::default(),
        scheme: None,
        broken_templates: 0,
    };

    let service = service(&mut cx, spec, &file.id);
    let base_url = cx.template("base_url", &spec.base_url);
    let headers = cx.map("headers", &spec.headers);
    let (connect_timeout, request_timeout) = timeouts(&mut cx, spec.timeouts.as_ref());
    let rate_limit = rate_limit(&mut cx, spec.rate_limit.as_ref());
    let settings = settings(&mut cx, &spec.settings);
    let auth = auth::schemes(&mut cx, spec);
    if let Some(name) = &spec.default_auth
        && !spec.auth.contains_key(name)
    {
        let known: Vec<&str> = spec.auth.keys().map(String::as_str).collect();
        cx.file.error(
            "default_auth",
            format!("no auth scheme '{name}' (known: {})", known.join(", ")),
        );
    }
    let contacts = &spec.contacts;
    let request = cx.request("contacts.request", &contacts.request);
    let records = cx.path("contacts.records", &contacts.records);
    let (page_size_max, page_size_default) = page_sizes(&mut cx, contacts);
    let pagination = pagination::compile(&mut cx, &contacts.pagination);
    max_results_per_query(&mut cx, contacts);
    let fields = fields::standard(&mut cx, &contacts.fields);
    let custom_fields = fields::custom(&mut cx, &service, &contacts.custom_fields);
    let subscription = fields::subscription(&mut cx, contacts.subscription.as_ref());
    let deleted = fields::deleted(&mut cx, contacts.deleted.as_ref());
    let sync = sync(&mut cx, spec, pagination.as_ref());
    // After `sync`: the deletions request's templates are not the list request's.
    let deletions = deletions(&mut cx, contacts);
    let error_rules = error_rules::compile(&mut cx, spec);
    let filters = filters(&mut cx, spec);
    unused_declarations(&mut cx, spec);

    if cx.file.errors > 0 {
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
        rate_limit,
        error_rules,
        auth,
        request: request?,
        pagination: pagination?,
        records: records?,
        records_absent_is_empty: contacts.records_absent == Some(RecordsAbsent::EmptyPage),
        page_size_max,
        page_size_default,
        max_results_per_query: contacts.max_results_per_query,
        fields,
        custom_fields,
        subscription,
        deleted,
        deletions,
        sync,
        filters,
        settings,
        fingerprint: fingerprint(&serde_json::to_value(spec).unwrap_or(Value::Null)),
        pass_parts: pass_parts(spec),
    };
    Some(CompiledConnector {
        connector,
        uses: cx.uses,
    })
}

/// `contacts.deletions`: its request, pagination (checked against the variables of its
/// own request) and JSONPaths.
fn deletions(cx: &mut TemplateCx, contacts: &ContactsSpec) -> Option<Deletions> {
    let spec = contacts.deletions.as_ref()?;
    let key = "contacts.deletions";
    // The variables of this request alone, then added to what the connector uses (its
    // credentials are needed too).
    let outer = std::mem::take(&mut cx.uses.common);
    let request = cx.request(&join(key, "request"), &spec.request);
    let vars = std::mem::replace(&mut cx.uses.common, outer);
    cx.uses.common.extend(vars.iter().cloned());
    let pagination = pagination::compile_at(
        cx,
        &join(key, "pagination"),
        &join(key, "request"),
        &vars,
        &spec.pagination,
    );
    let records = cx.path(&join(key, "records"), &spec.records);
    let external_id = cx.path(&join(key, "external_id"), &spec.external_id);
    if contacts.fields.external_id.is_none() {
        cx.file.error(
            &join(key, "external_id"),
            "a deletions request needs `contacts.fields.external_id`: deletions are matched to imported records by their id at the service",
        );
    }
    Some(Deletions {
        request: request?,
        pagination: pagination?,
        records: records?,
        external_id: external_id?,
        records_absent_is_empty: spec.records_absent == Some(RecordsAbsent::EmptyPage),
    })
}

/// `service`, defaulting to the file stem.
fn service(cx: &mut TemplateCx, spec: &ConnectorSpec, id: &str) -> String {
    let service = spec.service.clone().unwrap_or_else(|| id.to_string());
    if service.trim().is_empty() {
        cx.file.error("service", "must not be empty");
    }
    service
}

/// `timeouts`: connect and whole-request, neither zero.
fn timeouts(cx: &mut TemplateCx, spec: Option<&TimeoutsSpec>) -> (Duration, Duration) {
    let connect = duration_or(
        spec.and_then(|t| t.connect.as_ref()),
        defaults::CONNECT_TIMEOUT,
    );
    let request = duration_or(
        spec.and_then(|t| t.request.as_ref()),
        defaults::REQUEST_TIMEOUT,
    );
    for (key, value) in [("timeouts.connect", connect), ("timeouts.request", request)] {
        if value.is_zero() {
            cx.file.error(key, "must be longer than zero");
        }
    }
    (connect, request)
}

/// `rate_limit`: one pace (per second or per minute), no zero, real header names.
fn rate_limit(cx: &mut TemplateCx, spec: Option<&RateLimitSpec>) -> Option<RateLimit> {
    let spec = spec?;
    let mut interval = None;
    for (key, value, period) in [
        (
            "rate_limit.requests_per_second",
            spec.requests_per_second,
            1,
        ),
        (
            "rate_limit.requests_per_minute",
            spec.requests_per_minute,
            60,
        ),
    ] {
        match value {
            None => {}
            Some(0) => cx.file.error(key, "must be at least 1"),
            Some(_) if interval.is_some() => cx.file.error(
                key,
                "give requests_per_second or requests_per_minute, not both",
            ),
            Some(n) => interval = Some(Duration::from_secs(period) / n),
        }
    }
    if spec.concurrent == Some(0) {
        cx.file.error("rate_limit.concurrent", "must be at least 1");
    }
    let mut header = |key: &str, name: &str| {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            cx.file
                .error(key, format!("`{name}` is not an HTTP header name"));
        }
        name.to_ascii_lowercase()
    };
    let remaining = spec.remaining.as_ref().map(|r| {
        (
            header("rate_limit.remaining.header", &r.header),
            r.format.unwrap_or_default(),
        )
    });
    let reset = spec.reset.as_ref().map(|r| {
        (
            header("rate_limit.reset.header", &r.header),
            r.format.unwrap_or_default(),
        )
    });
    Some(RateLimit {
        interval,
        concurrent: spec.concurrent.filter(|c| *c > 0),
        remaining,
        reset,
    })
}

/// `settings`: required unless a default is given, and never both.
fn settings(
    cx: &mut TemplateCx,
    spec: &BTreeMap<String, SettingSpec>,
) -> BTreeMap<String, Setting> {
    let mut settings = BTreeMap::new();
    for (name, setting) in spec {
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
    settings
}

/// `contacts.page_size`: the largest and the default page size.
fn page_sizes(cx: &mut TemplateCx, contacts: &ContactsSpec) -> (u32, u32) {
    let Some(ps) = &contacts.page_size else {
        return (defaults::PAGE_SIZE, defaults::PAGE_SIZE);
    };
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

/// `contacts.max_results_per_query`: restarting a query needs the keyset in the request.
fn max_results_per_query(cx: &mut TemplateCx, contacts: &ContactsSpec) {
    if contacts.max_results_per_query == Some(0) {
        cx.file
            .error("contacts.max_results_per_query", "must be at least 1");
    }
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
}

/// `sync`: incremental connectors send `{{since}}`, full-refresh ones never do.
fn sync(cx: &mut TemplateCx, spec: &ConnectorSpec, pagination: Option<&Pagination>) -> Sync {
    let request_vars = cx.uses.common.clone();
    match &spec.sync {
        SyncSpec::Incremental(IncrementalSpec {
            since_format,
            lookback,
            full_refresh_every,
            order,
            since_inclusive,
            tie_breaker,
            safety_lag,
            future_tolerance,
        }) => {
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
            let order = order.unwrap_or_default();
            if order == PassOrder::UpdatedAsc {
                if spec.contacts.fields.updated_at.is_none() {
                    cx.file.error(
                        "sync.order",
                        "`updated_asc` needs contacts.fields.updated_at: the engine re-queries \
                         and moves the watermark by the update time of the records it read",
                    );
                }
                if since_inclusive.is_none() {
                    cx.file.error(
                        "sync.order",
                        "with `updated_asc`, say whether the service's updated-since filter \
                         includes the boundary: `since_inclusive: true` (>=) or `false` (>)",
                    );
                }
            }
            let tie_breaker = tie_breaker
                .as_deref()
                .and_then(|path| cx.path("sync.tie_breaker", path));
            let safety_lag = duration_or(safety_lag.as_ref(), defaults::SAFETY_LAG);
            if safety_lag > MAX_SAFETY_LAG {
                cx.file.error(
                    "sync.safety_lag",
                    "must be at most P1D (a longer lag re-reads that much at every run)",
                );
            }
            let future_tolerance =
                duration_or(future_tolerance.as_ref(), defaults::FUTURE_TOLERANCE);
            if future_tolerance < defaults::MIN_INTERVAL {
                cx.file.error(
                    "sync.future_tolerance",
                    "must be at least PT1M: clocks of services and hosts differ by that much",
                );
            }
            if let Some(style) = pagination
                && style.shifts_with_changes()
                && order != PassOrder::UpdatedAsc
            {
                let net = match full_refresh_every {
                    Some(_) => "sync.full_refresh_every recovers them",
                    None => "only a full refresh recovers them: set sync.full_refresh_every",
                };
                cx.file.warning(
                    "sync.order",
                    format!(
                        "`{}` pagination over a pass not sorted by update time can skip records \
                         when others change while the pass pages; {net}. If the service sorts by \
                         update time, oldest first, declare `order: updated_asc`",
                        style.style()
                    ),
                );
            }
            Sync::Incremental {
                since_format,
                lookback: duration_or(lookback.as_ref(), defaults::LOOKBACK),
                full_refresh_every,
                order,
                since_inclusive: since_inclusive.unwrap_or(true),
                tie_breaker,
                safety_lag,
                future_tolerance,
            }
        }
        SyncSpec::FullRefresh(FullRefreshSpec { every }) => {
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
        SyncSpec::ChangeToken(ChangeTokenSpec {
            token,
            full_refresh_every,
        }) => {
            if request_vars.contains("since") {
                cx.file.error(
                    "sync",
                    "`{{since}}` is never set in `mode: change_token`; send `{{change_token}}`",
                );
            }
            if !request_vars.contains("change_token") && cx.broken_templates == 0 {
                cx.file.error(
                    "sync",
                    "a change-token connector must send `{{change_token}}` somewhere in \
                     contacts.request (it renders empty on a full pass)",
                );
            }
            let token = cx.path("sync.token", token);
            let full_refresh_every = full_refresh_every.as_ref().map(|d| d.get());
            if full_refresh_every.is_some_and(|d| d < defaults::MIN_INTERVAL) {
                cx.file
                    .error("sync.full_refresh_every", "must be at least PT1M");
            }
            match token {
                Some(token) => Sync::ChangeToken {
                    token,
                    full_refresh_every,
                },
                None => Sync::FullRefresh {
                    every: defaults::FULL_REFRESH_EVERY,
                },
            }
        }
    }
}

/// The longest `sync.safety_lag`.
const MAX_SAFETY_LAG: Duration = Duration::from_secs(86_400);

/// `filters`: a client-side filter reads a mapped field, with a type its comparison takes.
fn filters(cx: &mut TemplateCx, spec: &ConnectorSpec) -> BTreeMap<String, Filter> {
    let labels: BTreeSet<&str> = spec
        .contacts
        .custom_fields
        .iter()
        .map(|c| c.label.as_str())
        .collect();
    let mut filters = BTreeMap::new();
    for (name, filter) in &spec.filters {
        let key = format!("filters.{name}");
        if let FilterApplySpec::Client(client) = &filter.apply {
            client_filter(cx, &key, filter, &client.field, client.op, &labels);
        }
        filters.insert(
            name.clone(),
            Filter {
                value_type: filter.value_type,
                apply: match &filter.apply {
                    FilterApplySpec::Server(_) => FilterApply::Server,
                    FilterApplySpec::Client(client) => FilterApply::Client {
                        field: client.field.clone(),
                        op: client.op,
                    },
                },
            },
        );
    }
    filters
}

fn client_filter(
    cx: &mut TemplateCx,
    key: &str,
    filter: &FilterSpec,
    field: &str,
    op: FilterOp,
    labels: &BTreeSet<&str>,
) {
    if !fields::STANDARD_FIELDS.contains(&field) && !labels.contains(field) {
        cx.file.error(
            &join(key, "apply.field"),
            format!(
                "'{field}' is neither a standard field ({}) nor a custom field label (declared: {})",
                list(fields::STANDARD_FIELDS),
                list(labels)
            ),
        );
    }
    let needs_date = matches!(op, FilterOp::Before | FilterOp::After);
    if needs_date && filter.value_type != FilterValueType::Datetime {
        cx.file.error(
            &join(key, "type"),
            format!(
                "`{}` compares dates: the type must be `datetime`",
                <&str>::from(op)
            ),
        );
    }
    if op == FilterOp::OneOf && filter.value_type != FilterValueType::StringList {
        cx.file.error(
            &join(key, "type"),
            "`one_of` takes a list: the type must be `string_list`",
        );
    }
    if op == FilterOp::Exists && filter.value_type != FilterValueType::Boolean {
        cx.file.error(
            &join(key, "type"),
            "`exists` takes true or false: the type must be `boolean`",
        );
    }
}

/// Declared but never read: a server-side filter would silently filter nothing, a
/// setting would be asked of importers for no effect. Unknowable when a template broke.
fn unused_declarations(cx: &mut TemplateCx, spec: &ConnectorSpec) {
    if cx.broken_templates > 0 {
        return;
    }
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
    let mut unused_filters = Vec::new();
    for (name, filter) in &spec.filters {
        if matches!(filter.apply, FilterApplySpec::Server(_)) && !reads("filters", name) {
            unused_filters.push(name);
        }
    }
    let unused_settings: Vec<&String> = spec
        .settings
        .keys()
        .filter(|name| !reads("settings", name))
        .collect();
    for name in unused_filters {
        cx.file.error(
            &format!("filters.{name}"),
            format!(
                "server-side filter '{name}' is used by no template, so it would filter nothing; send `{{{{filters.{name}}}}}` in contacts.request"
            ),
        );
    }
    for name in unused_settings {
        cx.file.warning(
            &format!("settings.{name}"),
            format!("setting '{name}' is used by no template"),
        );
    }
}
