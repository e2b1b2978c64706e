//! Stage 1, read: finding and reading the files of a configuration tree and parsing each
//! into its `*Spec` with positions. The next stages (`check`, `compile`) get parsed specs
//! and never read a file.
//!
//! Every call to `serde_yaml` (archived, `0.9.34+deprecated`) lives in this file, so that
//! moving to a maintained fork is a one-file change. Each file is deserialized on its own
//! through `serde_path_to_error`, so that each problem knows its file, key and position;
//! the file's [`Locator`] (key path to line and column) is built once and travels with the
//! spec, for the diagnostics of later stages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::config::diagnostic::Diagnostic;
use crate::config::locate::{self, Locator, MAX_DEPTH, Scan, ScanError};
use crate::config::spec::{CONNECTOR_SPEC_VERSION, DaemonConfigSpec};

/// One parsed file, handed to the later stages.
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

/// The daemon config file as read: its spec (all defaults when the file is blank or
/// absent at the default location), where it is, and the directory its relative paths
/// start from.
#[derive(Debug)]
pub struct DaemonFile {
    /// The parsed file.
    pub file: SourceFile<DaemonConfigSpec>,
    /// The directory of the config file: relative paths in it start here.
    pub root: PathBuf,
}

/// Reads `tributary.yaml`. A file that does not exist is all defaults when
/// `may_be_missing` (the default location); otherwise it is an error.
pub fn read_daemon_file(
    config_path: &Path,
    may_be_missing: bool,
    out: &mut Vec<Diagnostic>,
) -> Option<DaemonFile> {
    let path = absolute(config_path);
    let root = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let shown = shown_path(&root, &path);
    let (spec, locator) = match read_text(&path, "config file") {
        Ok(text) if is_blank_yaml(&text) => (DaemonConfigSpec::default(), Locator::default()),
        Ok(text) => match parse_file::<DaemonConfigSpec>(&text, &shown) {
            Ok(parsed) => parsed,
            Err(mut diagnostics) => {
                out.append(&mut diagnostics);
                return None;
            }
        },
        Err((_, Some(std::io::ErrorKind::NotFound))) if may_be_missing => {
            (DaemonConfigSpec::default(), Locator::default())
        }
        Err((message, _)) => {
            out.push(Diagnostic::error(shown, None, "", message));
            return None;
        }
    };
    let id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    Some(DaemonFile {
        file: SourceFile {
            id,
            path,
            shown,
            locator,
            spec,
        },
        root,
    })
}

/// The files of one directory that parsed, and the ids of those that did not.
#[derive(Debug)]
pub struct DirFiles<T> {
    /// Parsed files, by path order.
    pub files: Vec<SourceFile<T>>,
    /// Ids of files that exist but do not parse (or are duplicates), so that other files
    /// naming them do not report a missing id too.
    pub broken: BTreeSet<String>,
}

/// File contents that stand in for what is on disk, by the path a directory listing gives.
pub type Overlay = BTreeMap<PathBuf, String>;

/// Reads every `*.yaml`/`*.yml` of `dir`; ids of files that exist but do not parse go
/// to `broken` (so that other files naming them do not report a missing id too).
///
/// A path in `overlay` is read from there instead of the disk: the daemon compiles the last
/// good version it kept of a file that is broken now (see `daemon::last_good`).
pub fn read_dir<T: DeserializeOwned>(
    daemon: &DaemonFile,
    dir: &Path,
    key: &str,
    overlay: &Overlay,
    diagnostics: &mut Vec<Diagnostic>,
) -> DirFiles<T> {
    let root = &daemon.root;
    let shown_config = &daemon.file.shown;
    let config_locator = &daemon.file.locator;
    let mut broken = BTreeSet::new();
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
            return DirFiles {
                files: Vec::new(),
                broken,
            };
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
        })
        .collect();
    paths.sort();
    // A link to nothing is a file someone meant to be read (a renamed target, a volume
    // not mounted): said, not skipped. Directories and other non-files are not config.
    paths.retain(|path| {
        if path.is_file() || overlay.contains_key(path) {
            return true;
        }
        if let Ok(target) = std::fs::read_link(path) {
            diagnostics.push(Diagnostic::error(
                shown_path(root, path),
                None,
                "",
                format!(
                    "a symbolic link to {}, which does not exist",
                    target.display()
                ),
            ));
            broken.insert(
                path.file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("")
                    .to_string(),
            );
        }
        false
    });
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
        let text = match overlay
            .get(&path)
            .map_or_else(|| read_text(&path, "file"), |text| Ok(text.clone()))
        {
            Ok(text) => text,
            Err((message, _)) => {
                diagnostics.push(Diagnostic::error(shown, None, "", message));
                continue;
            }
        };
        if is_blank_yaml(&text) {
            diagnostics.push(Diagnostic::error(shown, None, "", "the file is empty"));
            continue;
        }
        match parse_file::<T>(&text, &shown) {
            Ok((spec, locator)) => files.push({
                broken.remove(&id);
                SourceFile {
                    id,
                    path,
                    shown,
                    locator,
                    spec,
                }
            }),
            Err(mut errors) => diagnostics.append(&mut errors),
        }
    }
    DirFiles { files, broken }
}

/// The largest file read. Configuration files are a few kilobytes; a bound keeps a
/// stray or hostile file from costing memory and time.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Deserializes one YAML document into `T`, turning the failure into diagnostics with the
/// key path and position. serde stops at the first error of a file; other files are still
/// read, so a run reports one problem per broken file at least.
///
/// # Errors
/// The diagnostics of the file (one for a deserialization error, one per key given
/// twice).
pub fn parse_yaml<T: DeserializeOwned>(text: &str, shown: &Path) -> Result<T, Vec<Diagnostic>> {
    parse_file(text, shown).map(|(spec, _)| spec)
}

/// Reads one file's text in two passes that each see it once: a walk of its YAML events
/// (size and depth bounded, keys given twice, `spec_version`, the positions later stages
/// use), then serde. The walk comes first so that no recursive parser sees what it
/// refuses.
fn parse_file<T: DeserializeOwned>(
    text: &str,
    shown: &Path,
) -> Result<(T, Locator), Vec<Diagnostic>> {
    let whole_file = |message: String| vec![Diagnostic::error(shown, None, "", message)];
    if text.len() > MAX_FILE_BYTES {
        return Err(whole_file(format!(
            "the file has {} bytes; a configuration file may have at most {MAX_FILE_BYTES}",
            text.len()
        )));
    }
    let scan = match locate::scan(text) {
        Ok(scan) => scan,
        Err(ScanError::TooDeep(position)) => {
            return Err(vec![Diagnostic::error(
                shown,
                Some(position),
                "",
                format!(
                    "mappings and lists nest deeper than {MAX_DEPTH} levels here; no \
                     configuration needs that many"
                ),
            )]);
        }
        Err(ScanError::Syntax { message, position }) => {
            return Err(vec![Diagnostic::error(
                shown,
                Some(position),
                "",
                format!("invalid YAML: {message}"),
            )]);
        }
    };
    if !scan.duplicates.is_empty() {
        return Err(scan
            .duplicates
            .iter()
            .map(|duplicate| {
                Diagnostic::error(
                    shown,
                    Some(duplicate.again),
                    duplicate.path.clone(),
                    format!(
                        "this key is given twice in one mapping (first at line {}); only one \
                         may be written",
                        duplicate.first.0
                    ),
                )
            })
            .collect());
    }
    // A `spec_version` other than the supported one is reported alone: the rest of the
    // file is in a language this binary does not know.
    if let Some(version_error) = check_spec_version(scan.spec_version.as_deref(), shown, &scan) {
        return Err(vec![version_error]);
    }
    let locator = scan.locator;
    let deserializer = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, T>(deserializer) {
        Ok(spec) => Ok((spec, locator)),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            Err(vec![yaml_diagnostic(shown, &locator, &path, &inner)])
        }
    }
}

fn check_spec_version(written: Option<&str>, shown: &Path, scan: &Scan) -> Option<Diagnostic> {
    let written = written?.trim();
    // Not a number: serde's own message ("invalid type") says it better.
    if written.parse::<f64>().is_err() || written.parse::<u32>() == Ok(CONNECTOR_SPEC_VERSION) {
        return None;
    }
    Some(Diagnostic::error(
        shown,
        scan.locator.exact("spec_version"),
        "spec_version",
        format!(
            "unsupported spec_version {written}: this tributary reads version {}",
            CONNECTOR_SPEC_VERSION
        ),
    ))
}

fn yaml_diagnostic(
    shown: &Path,
    locator: &Locator,
    path: &str,
    error: &serde_yaml::Error,
) -> Diagnostic {
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
        ancestor = locate::parent(ancestor);
    }
    let mut key = path.to_string();
    let mut position = error.location().map(|l| (l.line(), l.column()));
    // Errors raised by a type's own `Deserialize` (a duration, a reference) come back
    // from serde_yaml at 1:1 or at the enclosing block; the key itself is better.
    if let Some(at_key) = locator.exact(&key)
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
                && let Some(found) = locator.exact(&key)
            {
                position = Some(found);
            }
        }
    }
    if position.is_none() {
        position = locator.find(&key);
    }
    if syntax {
        message = format!("invalid YAML: {message}");
    }
    Diagnostic::error(shown, position, key, in_plain_words(&message))
}

/// serde's words for what it expected, in the words of these files: `u64` is "a whole
/// number", a "map" is a mapping, a "sequence" a list; a Rust type name never shows.
/// (Struct and enum types say what they expect through `#[serde(expecting = ...)]`.)
fn in_plain_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("u8", "a whole number (0 or more)"),
        ("u16", "a whole number (0 or more)"),
        ("u32", "a whole number (0 or more)"),
        ("u64", "a whole number (0 or more)"),
        ("usize", "a whole number (0 or more)"),
        ("i8", "a whole number"),
        ("i16", "a whole number"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
        ("a sequence", "a list"),
        ("a map", "a mapping"),
        ("a borrowed string", "a string"),
    ];
    let mut out = message.to_string();
    for (serde_word, plain) in WORDS {
        for lead in ["expected ", "expected one of "] {
            let from = format!("{lead}{serde_word}");
            if let Some(at) = out.find(&from) {
                let end = at + from.len();
                let next = out[end..].chars().next();
                if next.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
                    out.replace_range(at..end, &format!("{lead}{plain}"));
                }
            }
        }
    }
    for (serde_word, plain) in [("sequence", "list"), ("map", "mapping")] {
        out = out.replace(
            &format!("invalid type: {serde_word},"),
            &format!("invalid type: {plain},"),
        );
    }
    out
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

/// A file's text: at most [`MAX_FILE_BYTES`] (checked before reading), UTF-8.
///
/// # Errors
/// What is wrong, for a diagnostic on the file, and the I/O error's kind when reading
/// failed.
fn read_text(path: &Path, what: &str) -> Result<String, (String, Option<std::io::ErrorKind>)> {
    let cannot_read = |error: std::io::Error| {
        (
            format!("cannot read {what}: {}", io_message(&error)),
            Some(error.kind()),
        )
    };
    let size = std::fs::metadata(path).map_err(cannot_read)?.len();
    if size > MAX_FILE_BYTES as u64 {
        return Err((
            format!(
                "the file has {size} bytes; a configuration file may have at most \
                 {MAX_FILE_BYTES}"
            ),
            None,
        ));
    }
    let bytes = std::fs::read(path).map_err(cannot_read)?;
    String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let column = valid.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        (
            format!(
                "the file is not UTF-8 text (a byte that is not UTF-8 at line {line}, \
                 column {column}); save it as UTF-8"
            ),
            None,
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::ImporterSpec;

    #[test]
    fn serde_words_for_types_become_the_words_of_these_files() {
        assert_eq!(
            in_plain_words("invalid type: string \"two\", expected u64"),
            "invalid type: string \"two\", expected a whole number (0 or more)"
        );
        assert_eq!(
            in_plain_words("invalid type: sequence, expected a map"),
            "invalid type: list, expected a mapping"
        );
        assert_eq!(
            in_plain_words("invalid type: map, expected a mapping such as x"),
            "invalid type: mapping, expected a mapping such as x"
        );
        let text = "connector: x\nlist: l\npage_size: -3\n";
        let error = parse_yaml::<ImporterSpec>(text, Path::new("i.yaml")).unwrap_err();
        assert_eq!(
            error[0].to_string(),
            "i.yaml:3:12: page_size: invalid type: integer `-3`, expected a whole number (0 or more)"
        );
    }

    #[test]
    fn unknown_keys_name_the_key_and_its_position() {
        let text = "connector: a\nlist: x\nlsit: y\n";
        let error = parse_yaml::<ImporterSpec>(text, Path::new("importers.d/a.yaml")).unwrap_err();
        assert_eq!(
            error[0].to_string(),
            "importers.d/a.yaml:3:1: lsit: unknown field `lsit`, expected one of `connector`, `auth`, `credentials`, `settings`, `filters`, `list`, `interval`, `page_budget`, `page_size`, `enabled`, `gone_after_full_pass`"
        );
    }
}
