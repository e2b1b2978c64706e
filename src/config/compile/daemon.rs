//! Compiles `tributary.yaml`: the store URL (a SQLite path made relative to the file),
//! the directories of the other files, and the daemon's settings with defaults applied.

use std::path::{Path, PathBuf};

use crate::config::diagnostic::Diagnostic;
use crate::config::read::{DaemonFile, absolute};
use crate::plan::{DaemonConfig, Limits, LogFormat, defaults};

/// `tributary.yaml` with defaults applied and paths made absolute. Its own errors are
/// reported; the result is always usable enough to read the other directories.
pub fn compile(
    daemon: &DaemonFile,
    resolve_credentials: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> DaemonConfig {
    let DaemonFile { file, root } = daemon;
    let (spec, shown, locator) = (&file.spec, &file.shown, &file.locator);
    if resolve_credentials
        && let Some(reference) = &spec.encryption_key
        && let Err(error) = crate::secret::resolve(reference)
    {
        diagnostics.push(Diagnostic::error(
            shown,
            locator.find("encryption_key"),
            "encryption_key",
            error.to_string(),
        ));
    }
    let dir = |value: &Option<String>, default: &str| {
        let raw = value.as_deref().unwrap_or(default);
        absolute(&root.join(raw))
    };
    let store_url = match spec.store.as_deref() {
        None => format!("sqlite://{}", root.join("tributary.db").display()),
        Some(url) => match store_url(url, root) {
            Ok(url) => url,
            Err(message) => {
                diagnostics.push(Diagnostic::error(
                    shown,
                    locator.find("store"),
                    "store",
                    message,
                ));
                String::new()
            }
        },
    };
    let concurrency = spec.concurrency.unwrap_or(defaults::CONCURRENCY);
    if concurrency == 0 {
        diagnostics.push(Diagnostic::error(
            shown,
            locator.find("concurrency"),
            "concurrency",
            "must be at least 1",
        ));
    }
    let listen = spec
        .listen
        .clone()
        .unwrap_or_else(|| defaults::LISTEN.to_string());
    let port_ok = listen
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        diagnostics.push(Diagnostic::error(
            shown,
            locator.find("listen"),
            "listen",
            format!("`{listen}` is not host:port such as 127.0.0.1:9477"),
        ));
    }
    let defaults = Limits::default();
    let written = spec.limits.clone().unwrap_or_default();
    let mut duration =
        |key: &str, value: Option<&crate::duration::IsoDuration>, default| match value
            .map(|d| d.get())
        {
            Some(value) if value.is_zero() => {
                diagnostics.push(Diagnostic::error(
                    shown,
                    locator.find(&format!("limits.{key}")),
                    format!("limits.{key}"),
                    "must be longer than zero",
                ));
                default
            }
            Some(value) => value,
            None => default,
        };
    let retry_budget = duration(
        "retry_budget",
        written.retry_budget.as_ref(),
        defaults.retry_budget,
    );
    // Unwritten, the longest wait sat out is the default or the whole budget if shorter.
    let max_wait = duration(
        "max_wait",
        written.max_wait.as_ref(),
        defaults.max_wait.min(retry_budget),
    );
    if max_wait > retry_budget {
        diagnostics.push(Diagnostic::error(
            shown,
            locator.find("limits.max_wait"),
            "limits.max_wait",
            format!(
                "{}s is longer than limits.retry_budget ({}s): a wait between the two would fail the request instead of stopping the run until the service is ready",
                max_wait.as_secs_f64(),
                retry_budget.as_secs_f64()
            ),
        ));
    }
    let mut limit = |key: &str, value: Option<u64>, default: u64| match value {
        Some(0) => {
            diagnostics.push(Diagnostic::error(
                shown,
                locator.find(&format!("limits.{key}")),
                format!("limits.{key}"),
                "must be at least 1",
            ));
            default
        }
        Some(value) => value,
        None => default,
    };
    let limits = Limits {
        retry_budget,
        max_wait,
        max_response_bytes: limit(
            "max_response_bytes",
            written.max_response_bytes,
            defaults.max_response_bytes,
        ),
        max_value_bytes: limit(
            "max_value_bytes",
            written.max_value_bytes,
            defaults.max_value_bytes,
        ),
        max_records_per_page: limit(
            "max_records_per_page",
            written.max_records_per_page,
            defaults.max_records_per_page,
        ),
    };
    let lease = spec
        .lease
        .as_ref()
        .map(|d| d.get())
        .unwrap_or(defaults::LEASE);
    if lease < defaults::MIN_LEASE {
        diagnostics.push(Diagnostic::error(
            shown,
            locator.find("lease"),
            "lease",
            "must be at least PT10S: a run renews its lease every third of it, and a \
             shorter lease would read as held by another run",
        ));
    }
    if let Some(node) = &spec.node
        && let Err(why) = crate::store::lease::check_node_id(node)
    {
        diagnostics.push(Diagnostic::error(shown, locator.find("node"), "node", why));
    }
    DaemonConfig {
        node: spec.node.clone(),
        limits,
        file: file.path.clone(),
        store_url,
        connectors_dir: dir(&spec.connectors_dir, "connectors.d"),
        importers_dir: dir(&spec.importers_dir, "importers.d"),
        concurrency: concurrency.max(1),
        listen,
        log_format: spec.log_format.unwrap_or(LogFormat::Text),
        encryption_key: spec.encryption_key.clone(),
        control_token: spec.control_token.clone(),
        retention: spec
            .retention
            .as_ref()
            .map(|d| d.get())
            .unwrap_or(defaults::RETENTION),
        lease,
    }
}

/// Makes a SQLite URL's relative path relative to the config root.
fn store_url(url: &str, root: &Path) -> Result<String, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.to_string());
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            format!("`{url}` is not a store URL (expected sqlite://PATH or postgres://...)")
        })?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err("the sqlite URL names no file".to_string());
    }
    let path = if path == ":memory:" {
        PathBuf::from(path)
    } else {
        absolute(&root.join(path))
    };
    Ok(match query {
        Some(q) => format!("sqlite://{}?{q}", path.display()),
        None => format!("sqlite://{}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_relative_to_the_config() {
        assert_eq!(
            store_url("sqlite://data/t.db?mode=ro", Path::new("/etc/tributary")).unwrap(),
            "sqlite:///etc/tributary/data/t.db?mode=ro"
        );
        assert_eq!(
            store_url("sqlite:///var/lib/tributary/t.db", Path::new("/etc")).unwrap(),
            "sqlite:///var/lib/tributary/t.db"
        );
        assert!(store_url("mysql://x", Path::new("/")).is_err());
    }
}
