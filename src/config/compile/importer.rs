//! Compiles one importer against its connector: the auth scheme it picks, the
//! credentials that scheme and the connector's templates read, settings and filters the
//! connector declares (values of the declared type), the list, interval and page size.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::compile::context::{FileCx, Uses, duration_or, fingerprint, list, suggest};
use crate::config::diagnostic::Diagnostic;
use crate::config::read::SourceFile;
use crate::config::spec::{ConnectorSpec, FilterApplySpec, ImporterSpec};
use crate::plan::{ClientFilter, Connector, FilterValueType, Importer, defaults};

/// Every connector by id: the compiled form (`None` when it has errors), what its
/// templates use, and its file.
pub(super) type CompiledSet<'a> =
    BTreeMap<String, (Option<Arc<Connector>>, Uses, &'a SourceFile<ConnectorSpec>)>;

/// Compiles `file` against its compiled connector; `None` when anything is an error
/// (the connector's own errors included: an importer cannot run without it).
pub(super) fn compile(
    file: &SourceFile<ImporterSpec>,
    connectors: &CompiledSet,
    resolve_credentials: bool,
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
        (None, _) if cspec.default_auth.is_some() => cspec.default_auth.clone(),
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
        if resolve_credentials && let Err(error) = crate::secret::resolve(reference) {
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
        if let FilterApplySpec::Client(client) = &filter.apply {
            client_filters.push(ClientFilter {
                name: name.clone(),
                field: client.field.clone(),
                op: client.op,
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
            format!(
                "{page_size} is above the maximum page size {page_size_max} of connector '{cid}'"
            ),
        );
    }
    let page_budget = match spec.page_budget {
        None => Some(defaults::PAGE_BUDGET),
        Some(0) => None,
        Some(n) => Some(n),
    };

    if spec.gone_after_full_pass == Some(true)
        && let Some(c) = connector
        && c.pagination.shifts_with_changes()
        && !c.sync.sorted_by_update()
    {
        cx.warning(
            "gone_after_full_pass",
            format!(
                "connector '{cid}' pages a pass by position without sorting it by update time: a record shifted past the pass by an edit elsewhere counts as gone (its membership becomes `removed`) until a later full pass reads it again"
            ),
        );
    }

    if cx.errors > 0 {
        return None;
    }
    // A connector with errors has its own diagnostics; the importer cannot run without it.
    let connector = connector.clone()?;
    let revision = fingerprint(&serde_json::json!({
        "connector": connector.fingerprint,
        "importer": serde_json::to_value(spec).unwrap_or(Value::Null),
    }));
    let gone_after_full_pass = spec.gone_after_full_pass.unwrap_or(false);
    let mut own = serde_json::json!({
        "credentials": serde_json::to_value(&spec.credentials).unwrap_or(Value::Null),
        "settings": settings,
        "filter_values": filters,
        "page_size": page_size,
    });
    // A pass knows which records are gone only if every page of it stamped the records
    // it read: switching this on (or off) starts a new pass. Only when on, so that the
    // fingerprints of every other importer stay what they were.
    if gone_after_full_pass {
        own["gone_after_full_pass"] = Value::Bool(true);
    }
    let fingerprint = pass_fingerprint(&connector, auth_scheme.as_deref(), &own);

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
        gone_after_full_pass,
        fingerprint,
        revision,
    })
}

/// The importer's pass fingerprint: the connector's pass-defining parts, its chosen auth
/// scheme, and the importer's own (credential references, settings, filters, page size),
/// each hashed apart so that a mismatch can name what changed.
fn pass_fingerprint(
    connector: &crate::plan::Connector,
    auth_scheme: Option<&str>,
    own: &Value,
) -> String {
    let mut parts: Vec<String> = connector
        .pass_parts
        .iter()
        .filter(|(name, _)| match name.strip_prefix("auth.") {
            Some(scheme) => Some(scheme) == auth_scheme,
            None => true,
        })
        .map(|(name, hash)| {
            let name = if name.starts_with("auth.") {
                "auth"
            } else {
                name
            };
            format!("{name}={hash}")
        })
        .collect();
    if let Value::Object(own) = own {
        for (name, value) in own {
            parts.push(format!("{name}={}", &fingerprint(value)[..16]));
        }
    }
    parts.sort();
    parts.join(";")
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
