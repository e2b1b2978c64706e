//! One configuration problem, said so that a person can act on it: the file (relative to
//! the config root), the line and column, the key path, and what was expected.
//!
//! Used by `tributary validate`, at startup and on reload. A diagnostic never holds a
//! secret value: messages about credentials name the reference.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How bad a diagnostic is: any error refuses the configuration; warnings are printed
/// and the configuration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The configuration is refused.
    Error,
    /// Printed; the configuration runs.
    Warning,
}

/// A problem in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, relative to the directory of the config file when it is below it.
    pub file: PathBuf,
    /// 1-based line and column; `None` rather than a guess.
    pub position: Option<(usize, usize)>,
    /// Key path inside the file (`contacts.pagination.stop`), empty for the whole file.
    pub key: String,
    /// What is wrong and what was expected; lowercase, no trailing period.
    pub message: String,
}

impl Diagnostic {
    /// An error.
    pub fn error(
        file: impl Into<PathBuf>,
        position: Option<(usize, usize)>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: file.into(),
            position,
            key: key.into(),
            message: message.into(),
        }
    }

    /// A warning.
    pub fn warning(
        file: impl Into<PathBuf>,
        position: Option<(usize, usize)>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, position, key, message)
        }
    }

    /// Whether this refuses the configuration.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `importers.d/acme.yaml:7:3: filters.stage: connector 'pipedrive' has no filter 'stage'`;
/// warnings say `warning: ` before the key.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Sorts by file, then line and column (unpositioned first), then key and message, and
/// drops exact duplicates, so output is stable across runs.
pub fn sort(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.position, &a.key, &a.message, a.severity)
            .cmp(&(&b.file, b.position, &b.key, &b.message, b.severity))
    });
    diagnostics.dedup();
}

/// Whether any diagnostic is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_file_position_key_and_message() {
        let d = Diagnostic::error(
            "importers.d/acme.yaml",
            Some((7, 3)),
            "filters.stage",
            "connector 'pipedrive' has no filter 'stage' (known: owner_id, label)",
        );
        assert_eq!(
            d.to_string(),
            "importers.d/acme.yaml:7:3: filters.stage: connector 'pipedrive' has no filter 'stage' (known: owner_id, label)"
        );
        let w = Diagnostic::warning("importers.d/b.yaml", None, "", "two streams");
        assert_eq!(w.to_string(), "importers.d/b.yaml: warning: two streams");
    }
}
