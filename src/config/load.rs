//! Finding and reading the three file kinds, and turning them into a [`Plan`].
//!
//! Every call to `serde_yaml` (archived, `0.9.34+deprecated`) lives in this file, so that
//! moving to a maintained fork is a one-file change. Each file is deserialized on its own
//! through `serde_path_to_error`, so that each problem knows its file, key and position;
//! all problems of all files are collected before anything is refused. This module reads
//! files only: it never resolves a credential unless asked and never touches the network
//! or the store.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::config::diagnostic::{self, Diagnostic};
use crate::config::locate::Locator;
use crate::config::spec::{ConnectorSpec, DaemonConfigSpec, ImporterSpec};
use crate::config::validate;
use crate::plan::{DaemonConfig, LogFormat, Plan, defaults};

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "TRIBUTARY_CONFIG";
/// The system-wide config file.
pub const SYSTEM_CONFIG: &str = "/etc/tributary/tributary.yaml";
/// The config file in the current directory.
pub const LOCAL_CONFIG: &str = "tributary.yaml";

/// Which config file to use: `--config`, then `$TRIBUTARY_CONFIG`, then
/// `./tributary.yaml`, then `/etc/tributary/tributary.yaml`, so that an admin's CLI and
/// the service open the same store. When none of the last two exists, the answer is
/// `./tributary.yaml`, which then need not exist (all defaults, relative to the current
/// directory).
pub fn locate_config(cli_flag: Option<&Path>) -> PathBuf {
    if let Some(flag) = cli_flag {
        return flag.to_path_buf();
    }
    if let Some(env) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(env);
    }
    let local = PathBuf::from(LOCAL_CONFIG);
    if local.exists() {
        return local;
    }
    let system = PathBuf::from(SYSTEM_CONFIG);
    if system.exists() {
        return system;
    }
    local
}

/// Options of a load.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Resolve every credential reference and report those that do not resolve (a
    /// server-side check; a CI job has no secrets).
    pub resolve_credentials: bool,
}

/// The outcome of reading a configuration: the plan when there is no error, and every
/// diagnostic (errors and warnings), sorted.
#[derive(Debug)]
pub struct LoadReport {
    /// The plan, `None` when any diagnostic is an error.
    pub plan: Option<Plan>,
    /// Every problem found, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads the whole tree and builds the plan, or returns every error (warnings included,
/// for context) when there is any.
///
/// # Errors
/// Every diagnostic, sorted, when at least one is an error.
pub fn load_plan(config_path: &Path) -> Result<Plan, Vec<Diagnostic>> {
    let report = load(config_path, LoadOptions::default());
    match report.plan {
        Some(plan) => Ok(plan),
        None => Err(report.diagnostics),
    }
}

/// One parsed file, handed to validation.
#[derive(Debug)]
pub struct SourceFile<T> {
    /// Id: the file stem.
    pub id: String,
    /// Absolute path.
    pub path: PathBuf,
    /// Path shown in diagnostics (relative to the config root when below it).
    pub shown: PathBuf,
    /// Key path -> position.
    pub locator: Locator,
    /// The parsed spec.
    pub spec: T,
}

/// Reads the whole tree: the daemon config, every connector and every importer.
pub fn load(config_path: &Path, options: LoadOptions) -> LoadReport {
    let mut diagnostics = Vec::new();
    let config_abs = absolute(config_path);
    let root = config_abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let shown_config = shown_path(&root, &config_abs);

    let spec = match std::fs::read_to_string(&config_abs) {
        Ok(text) => {
            if is_blank_yaml(&text) {
                Some(DaemonConfigSpec::default())
            } else {
                match parse_yaml::<DaemonConfigSpec>(&text, &shown_config) {
                    Ok(spec) => Some(spec),
                    Err(mut ds) => {
                        diagnostics.append(&mut ds);
                        None
                    }
                }
            }
        }
        Err(error)
            if error.kind() == std::io::ErrorKind::NotFound && is_default_location(config_path) =>
        {
            Some(DaemonConfigSpec::default())
        }
        Err(error) => {
            diagnostics.push(Diagnostic::error(
                shown_config.clone(),
                None,
                "",
                format!("cannot read config file: {}", io_message(&error)),
            ));
            None
        }
    };
    let Some(spec) = spec else {
        diagnostic::sort(&mut diagnostics);
        return LoadReport {
            plan: None,
            diagnostics,
        };
    };
    let config_locator = std::fs::read_to_string(&config_abs)
        .map(|t| Locator::new(&t))
        .unwrap_or_default();
    let daemon = daemon_config(
        &spec,
        &config_abs,
        &root,
        &shown_config,
        &config_locator,
        &mut diagnostics,
    );
    if options.resolve_credentials
        && let Some(reference) = &daemon.encryption_key
        && let Err(error) = crate::secret::resolve(reference)
    {
        diagnostics.push(Diagnostic::error(
            shown_config.clone(),
            config_locator.find("encryption_key"),
            "encryption_key",
            error.to_string(),
        ));
    }

    let mut broken_connectors = std::collections::BTreeSet::new();
    let connectors = read_dir::<ConnectorSpec>(
        &mut broken_connectors,
        &root,
        &daemon.connectors_dir,
        "connectors_dir",
        &shown_config,
        &config_locator,
        &mut diagnostics,
    );
    let importers = read_dir::<ImporterSpec>(
        &mut std::collections::BTreeSet::new(),
        &root,
        &daemon.importers_dir,
        "importers_dir",
        &shown_config,
        &config_locator,
        &mut diagnostics,
    );

    let plan = validate::build_plan(
        daemon,
        connectors,
        importers,
        &broken_connectors,
        options,
        &mut diagnostics,
    );
    diagnostic::sort(&mut diagnostics);
    let plan = if diagnostic::has_errors(&diagnostics) {
        None
    } else {
        plan
    };
    LoadReport { plan, diagnostics }
}

fn is_default_location(config_path: &Path) -> bool {
    let normalized: PathBuf = config_path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    normalized == Path::new(LOCAL_CONFIG)
}

fn io_message(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => lowercase_first(&error.to_string()),
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An absolute, lexically normalized path (no `.` or `..`), without touching symlinks.
pub fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to `root` when below it, else absolute.
pub fn shown_path(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let t = line.trim();
        t.is_empty() || t.starts_with('#') || t == "---"
    })
}

fn daemon_config(
    spec: &DaemonConfigSpec,
    file: &Path,
    root: &Path,
    shown: &Path,
    locator: &Locator,
    diagnostics: &mut Vec<Diagnostic>,
) -> DaemonConfig {
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
    DaemonConfig {
        file: file.to_path_buf(),
        store_url,
        connectors_dir: dir(&spec.connectors_dir, "connectors.d"),
        importers_dir: dir(&spec.importers_dir, "importers.d"),
        concurrency: concurrency.max(1),
        listen,
        log_format: spec.log_format.unwrap_or(LogFormat::Text),
        encryption_key: spec.encryption_key.clone(),
        retention: spec
            .retention
            .as_ref()
            .map(|d| d.get())
            .unwrap_or(defaults::RETENTION),
        lease: spec
            .lease
            .as_ref()
            .map(|d| d.get())
            .unwrap_or(defaults::LEASE),
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

/// Reads every `*.yaml`/`*.yml` of `dir`; ids of files that exist but do not parse go
/// to `broken` (so that other files naming them do not report a missing id too).
fn read_dir<T: DeserializeOwned>(
    broken: &mut std::collections::BTreeSet<String>,
    root: &Path,
    dir: &Path,
    key: &str,
    shown_config: &Path,
    config_locator: &Locator,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<SourceFile<T>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            let message = format!(
                "cannot read directory {}: {}",
                shown_path(root, dir).display(),
                io_message(&error)
            );
            let position = config_locator.exact(key);
            diagnostics.push(if error.kind() == std::io::ErrorKind::NotFound {
                Diagnostic::warning(shown_config, position, key, message)
            } else {
                Diagnostic::error(shown_config, position, key, message)
            });
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && (name.ends_with(".yaml") || name.ends_with(".yml"))
                && p.is_file()
        })
        .collect();
    paths.sort();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut files = Vec::new();
    for path in paths {
        let shown = shown_path(root, &path);
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        broken.insert(id.clone());
        if let Some(other) = seen.get(&id) {
            diagnostics.push(Diagnostic::error(
                shown,
                None,
                "",
                format!(
                    "id '{id}' is also defined by {}",
                    shown_path(root, other).display()
                ),
            ));
            continue;
        }
        seen.insert(id.clone(), path.clone());
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                diagnostics.push(Diagnostic::error(
                    shown,
                    None,
                    "",
                    format!("cannot read file: {}", io_message(&error)),
                ));
                continue;
            }
        };
        if is_blank_yaml(&text) {
            diagnostics.push(Diagnostic::error(shown, None, "", "the file is empty"));
            continue;
        }
        match parse_yaml::<T>(&text, &shown) {
            Ok(spec) => files.push({
                broken.remove(&id);
                SourceFile {
                    id,
                    path,
                    shown,
                    locator: Locator::new(&text),
                    spec,
                }
            }),
            Err(mut ds) => diagnostics.append(&mut ds),
        }
    }
    files
}

/// Deserializes one YAML document into `T`, turning the failure into a diagnostic with
/// the key path and position. serde stops at the first error of a file; other files are
/// still read, so a run reports one problem per broken file at least.
///
/// # Errors
/// The diagnostics of the file (one for a deserialization error).
pub fn parse_yaml<T: DeserializeOwned>(text: &str, shown: &Path) -> Result<T, Vec<Diagnostic>> {
    // A `spec_version` other than the supported one is reported alone: the rest of the
    // file is in a language this binary does not know.
    if let Some(version_error) = check_spec_version(text, shown) {
        return Err(vec![version_error]);
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, T>(deserializer) {
        Ok(value) => Ok(value),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            Err(vec![yaml_diagnostic(text, shown, &path, &inner)])
        }
    }
}

fn check_spec_version(text: &str, shown: &Path) -> Option<Diagnostic> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    let version = value.as_mapping()?.get("spec_version")?;
    // Not a number: serde's own message ("invalid type") says it better.
    if !version.is_number()
        || version.as_u64() == Some(u64::from(crate::config::spec::CONNECTOR_SPEC_VERSION))
    {
        return None;
    }
    let written = serde_yaml::to_string(version)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Some(Diagnostic::error(
        shown,
        Locator::new(text).exact("spec_version"),
        "spec_version",
        format!(
            "unsupported spec_version {written}: this tributary reads version {}",
            crate::config::spec::CONNECTOR_SPEC_VERSION
        ),
    ))
}

fn yaml_diagnostic(text: &str, shown: &Path, path: &str, error: &serde_yaml::Error) -> Diagnostic {
    let mut message = error.to_string();
    // serde_yaml's text embeds the path and the position; both are said elsewhere.
    if let Some(index) = message.find(" at line ") {
        message.truncate(index);
    }
    // `?` marks a place serde could not name (a YAML syntax error): keep the named part.
    let syntax = path == "?";
    let path = match path.find('?') {
        Some(at) => path[..at].trim_end_matches('.'),
        None if path == "." => "",
        None => path,
    };
    // serde_yaml's own path may be shorter than serde_path_to_error's (it stops at the
    // block a streaming deserializer took over): strip the longest matching prefix.
    let mut ancestor = path;
    while !ancestor.is_empty() {
        if let Some(rest) = message.strip_prefix(&format!("{ancestor}: ")) {
            message = rest.to_string();
            break;
        }
        ancestor = crate::config::locate::parent(ancestor);
    }
    let mut key = path.to_string();
    let mut position = error.location().map(|l| (l.line(), l.column()));
    // Errors raised by a type's own `Deserialize` (a duration, a reference) come back
    // from serde_yaml at 1:1 or at the enclosing block; the key itself is better.
    if let Some(at_key) = Locator::new(text).exact(&key)
        && position.is_none_or(|p| p < at_key)
    {
        position = Some(at_key);
    }
    // Unknown and missing fields belong to the field, not to the block around it.
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(end) = rest.find('`')
        {
            let field = &rest[..end];
            let already = key == field || key.ends_with(&format!(".{field}"));
            key = if already {
                key
            } else if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
            if prefix.starts_with("unknown")
                && let Some(found) = Locator::new(text).exact(&key)
            {
                position = Some(found);
            }
        }
    }
    if position.is_none() {
        position = Locator::new(text).find(&key);
    }
    if syntax {
        message = format!("invalid YAML: {message}");
    }
    Diagnostic::error(shown, position, key, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_key_and_its_position() {
        let text = "connector: a\nlist: x\nlsit: y\n";
        let error = parse_yaml::<ImporterSpec>(text, Path::new("importers.d/a.yaml")).unwrap_err();
        assert_eq!(
            error[0].to_string(),
            "importers.d/a.yaml:3:1: lsit: unknown field `lsit`, expected one of `connector`, `auth`, `credentials`, `settings`, `filters`, `list`, `interval`, `page_budget`, `page_size`, `enabled`"
        );
    }

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
