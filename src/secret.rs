//! Secret values and the references that name them.
//!
//! A secret is read at run time from where its [`SecretRef`] points (an environment
//! variable, a file, a systemd credential) and lives in a [`Secret`] from then on, whose
//! `Debug` and `Display` print `****`. This module must never log, print or put a secret's
//! value in an error: errors name the reference only.

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;

// Reading one from a file is `config`'s job (its deserializer refuses a bare string with
// a message saying how to write a reference); this module owns what a reference means.
/// Where a secret comes from. Secrets are never written in these files: they are named
/// here and read at run time.
#[derive(Clone, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretRef {
    /// An environment variable of the daemon process.
    Env(String),
    /// A file whose whole content (trailing newline trimmed) is the secret.
    File(String),
    /// A systemd credential passed with `LoadCredential=NAME:...`, read from
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
    /// A value written in clear in this file. Only for non-secret values or local
    /// experiments: importers live in git, so prefer the other forms.
    Literal(String),
}

/// Names the reference; a literal's value is never printed, so that a plan or an importer
/// can be logged with `{:?}`.
impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => f.debug_tuple("Env").field(name).finish(),
            SecretRef::File(path) => f.debug_tuple("File").field(path).finish(),
            SecretRef::Credential(name) => f.debug_tuple("Credential").field(name).finish(),
            SecretRef::Literal(_) => f.write_str("Literal(****)"),
        }
    }
}

/// A secret value. Only [`Secret::expose`] gives the text, so every use is greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from somewhere secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it (a request header, a template
    /// context). Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// A reference that did not resolve. Names the reference, never a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The environment variable is unset or not UTF-8.
    #[error("environment variable `{0}` is not set")]
    EnvMissing(String),
    /// The file could not be read.
    #[error("cannot read secret file `{path}`: {reason}")]
    File {
        /// The file.
        path: String,
        /// The I/O error's text (never the content).
        reason: String,
    },
    /// `$CREDENTIALS_DIRECTORY` is unset: the process was not started by systemd with
    /// `LoadCredential=`.
    #[error(
        "credential `{0}` needs $CREDENTIALS_DIRECTORY (set by systemd's LoadCredential=), which is not set"
    )]
    NoCredentialsDirectory(String),
    /// The credential file could not be read.
    #[error("cannot read credential `{name}`: {reason}")]
    Credential {
        /// The credential name.
        name: String,
        /// The I/O error's text.
        reason: String,
    },
    /// The value is empty.
    #[error("{0} is empty")]
    Empty(String),
}

/// Describes a reference for messages: `env:PIPEDRIVE_TOKEN`, `file:/etc/x`, ...
pub fn describe(reference: &SecretRef) -> String {
    match reference {
        SecretRef::Env(name) => format!("env:{name}"),
        SecretRef::File(path) => format!("file:{path}"),
        SecretRef::Credential(name) => format!("credential:{name}"),
        SecretRef::Literal(_) => "literal value".to_string(),
    }
}

/// Reads the secret a reference names. A file's trailing newline (one `\n` or `\r\n`) is
/// trimmed, since editors and `echo` add one.
///
/// # Errors
/// [`SecretError`] naming the reference when it does not resolve or resolves empty.
pub fn resolve(reference: &SecretRef) -> Result<Secret, SecretError> {
    resolve_with(
        reference,
        std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
    )
}

/// As [`resolve`], with the credentials directory given (tests, and callers that read
/// the environment once).
///
/// # Errors
/// As [`resolve`].
pub fn resolve_with(
    reference: &SecretRef,
    credentials_directory: Option<PathBuf>,
) -> Result<Secret, SecretError> {
    let value = match reference {
        SecretRef::Env(name) => {
            std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?
        }
        SecretRef::File(path) => read_trimmed(Path::new(path)).map_err(|e| SecretError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?,
        SecretRef::Credential(name) => {
            let dir = credentials_directory
                .ok_or_else(|| SecretError::NoCredentialsDirectory(name.clone()))?;
            read_trimmed(&dir.join(name)).map_err(|e| SecretError::Credential {
                name: name.clone(),
                reason: e.to_string(),
            })?
        }
        SecretRef::Literal(value) => value.clone(),
    };
    if value.is_empty() {
        return Err(SecretError::Empty(describe(reference)));
    }
    Ok(Secret(value))
}

fn read_trimmed(path: &Path) -> std::io::Result<String> {
    let mut text = std::fs::read_to_string(path)?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "**** ****");
        assert_eq!(secret.expose(), "hunter2");
        let literal = SecretRef::Literal("hunter2".into());
        assert_eq!(format!("{literal:?}"), "Literal(****)");
        let env = SecretRef::Env("TOKEN".into());
        assert_eq!(format!("{env:?}"), "Env(\"TOKEN\")");
    }

    #[test]
    fn resolves_files_and_credentials_and_names_the_reference_on_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "abc\n").unwrap();
        let file = SecretRef::File(dir.path().join("token").display().to_string());
        assert_eq!(resolve(&file).unwrap().expose(), "abc");
        let credential = SecretRef::Credential("token".into());
        assert_eq!(
            resolve_with(&credential, Some(dir.path().to_path_buf()))
                .unwrap()
                .expose(),
            "abc"
        );
        assert_eq!(
            resolve_with(&credential, None).unwrap_err(),
            SecretError::NoCredentialsDirectory("token".into())
        );
        let missing = SecretRef::Env("TRIBUTARY_TEST_SURELY_UNSET_VARIABLE".into());
        assert_eq!(
            resolve(&missing).unwrap_err().to_string(),
            "environment variable `TRIBUTARY_TEST_SURELY_UNSET_VARIABLE` is not set"
        );
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let empty = SecretRef::File(dir.path().join("empty").display().to_string());
        assert!(matches!(resolve(&empty), Err(SecretError::Empty(_))));
    }
}
