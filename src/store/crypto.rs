//! Encryption of the tokens the store keeps (OAuth access and rotated refresh tokens,
//! session tokens): ChaCha20-Poly1305 with a random nonce per value, the token's name as
//! associated data (a ciphertext copied under another name does not decrypt).
//!
//! Owns key derivation and key files. Must never log, format or return a key or a
//! plaintext token in an error.

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

use super::{KeySource, StoreError, StoreResult};

/// Domain separation for the key derivation: key material from the config is never used
/// as the cipher key directly, so a passphrase of any length works.
const KEY_CONTEXT: &str = "tributary 2026-11 store token encryption v1";

/// Length of the nonce stored in front of each ciphertext.
const NONCE_LEN: usize = 12;

/// Shortest key material accepted, so a typo'd short secret does not silently protect
/// tokens with a guessable key.
const MIN_KEY_BYTES: usize = 16;

/// A derived cipher key. `Debug` never shows it.
#[derive(Clone)]
pub struct TokenCipher {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCipher(****)")
    }
}

impl TokenCipher {
    /// Derives the cipher from key material.
    ///
    /// # Errors
    /// `Other` when the material is shorter than 16 bytes.
    pub fn from_material(material: &[u8]) -> StoreResult<Self> {
        if material.len() < MIN_KEY_BYTES {
            return Err(StoreError::Key(format!(
                "encryption key is too short: at least {MIN_KEY_BYTES} bytes are needed"
            )));
        }
        let key = blake3::derive_key(KEY_CONTEXT, material);
        Ok(TokenCipher {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// Loads the cipher a key source names, creating the key file if it is missing.
    pub fn load(source: &KeySource) -> StoreResult<Self> {
        match source {
            KeySource::Bytes(bytes) => Self::from_material(bytes),
            KeySource::File(path) => Self::from_material(&read_or_create_key_file(path)?),
        }
    }

    /// Encrypts `plaintext` for the token named `name`: nonce followed by ciphertext.
    pub fn seal(&self, name: &str, plaintext: &str) -> StoreResult<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Token(format!("token `{name}` could not be encrypted")))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts what `seal` produced for the same name.
    ///
    /// # Errors
    /// `Other` when the key differs from the one the token was saved with, or the value
    /// was tampered with; the message says which token, never its content.
    pub fn open(&self, name: &str, sealed: &[u8]) -> StoreResult<String> {
        let refused = || {
            StoreError::Token(format!(
                "token `{name}` could not be decrypted: the encryption key differs from the one it was saved with, or the value is damaged"
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| refused())?;
        String::from_utf8(plain).map_err(|_| refused())
    }
}

/// The key file generated beside an SQLite store when no key is configured.
pub fn default_key_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// Reads a key file, or creates it with 32 random bytes (hex, owner-only) when missing.
/// Key files hold hex text so that an admin can copy one into a secret manager.
///
/// The file is created atomically: the key is written and synced to a temporary file
/// beside it, which is then hard-linked into place (a link, unlike a rename, fails when
/// the name exists). Two first runs racing therefore both end up with the one complete key
/// that won, and a crash leaves no empty or half-written key file behind.
///
/// # Errors
/// `Key` when the file exists but is shorter than a key (it says what to do), `File` when
/// it cannot be read or created.
pub fn read_or_create_key_file(path: &Path) -> StoreResult<Vec<u8>> {
    match read_key_file(path) {
        Err(StoreError::File { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
            create_key_file(path)
        }
        read => read,
    }
}

/// Reads an existing key file, refusing one too short to be a key.
fn read_key_file(path: &Path) -> StoreResult<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|cause| StoreError::File {
        action: "reading key file",
        path: path.to_path_buf(),
        cause,
    })?;
    let key = trim_newline(bytes);
    if key.len() < MIN_KEY_BYTES {
        let what = if key.is_empty() {
            String::from("is empty")
        } else {
            format!("holds only {} bytes", key.len())
        };
        return Err(StoreError::Key(format!(
            "key file {} {what}; a key needs at least {MIN_KEY_BYTES}. If no token was ever saved with it (a first run that was interrupted), delete the file and a new key is generated; otherwise restore it from the store's backup",
            path.display()
        )));
    }
    Ok(key)
}

/// Creates the key file atomically (see [`read_or_create_key_file`]); when another
/// process linked its key first, reads that one.
fn create_key_file(path: &Path) -> StoreResult<Vec<u8>> {
    let file_error = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |cause| StoreError::File {
            action,
            path,
            cause,
        }
    };
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".{suffix}.tmp"));
    let aside = PathBuf::from(aside);
    create_owner_only(&aside)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .map_err(file_error("creating key file", &aside))?;
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(text.into_bytes()),
        // Another process linked its key first: use theirs, complete by construction.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(cause) => Err(file_error("creating key file", path)(cause)),
    }
}

/// Creates a new file readable and writable by its owner only (mode 0600), failing if it
/// exists.
pub(crate) fn create_owner_only(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_tokens_open_only_with_the_same_key_and_name() {
        let cipher = TokenCipher::from_material(b"0123456789abcdef0123").unwrap();
        let sealed = cipher.seal("oauth:crm", "refresh-secret-value").unwrap();
        assert!(
            !sealed
                .windows(b"refresh-secret-value".len())
                .any(|w| w == b"refresh-secret-value")
        );
        assert_eq!(
            cipher.open("oauth:crm", &sealed).unwrap(),
            "refresh-secret-value"
        );
        assert!(cipher.open("oauth:other", &sealed).is_err());
        let other = TokenCipher::from_material(b"another key of enough bytes").unwrap();
        let error = other.open("oauth:crm", &sealed).unwrap_err().to_string();
        assert!(error.contains("encryption key differs"), "{error}");
        assert!(!error.contains("refresh-secret-value"));
        assert!(TokenCipher::from_material(b"short").is_err());
        assert_eq!(format!("{cipher:?}"), "TokenCipher(****)");
    }
}
