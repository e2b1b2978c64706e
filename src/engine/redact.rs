//! The secret values of one run (credentials, tokens), known by name, so that any text
//! leaving the engine (an error, a log line, a dry-run request, a saved next URL) can be
//! cleaned of them.
//!
//! Owns only string replacement; never reads secrets itself (the client registers them as
//! it resolves credentials and receives tokens). Values shorter than four characters are
//! not registered: replacing `1` or `on` everywhere would garble text without protecting
//! anything.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// What a secret is replaced with in text meant for people.
pub const MASK: &str = "****";

/// Secret values by name (`credentials.api_key`, `token.access_token`).
#[derive(Default, Clone)]
pub struct SecretSet {
    entries: Vec<(String, String)>,
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("SecretSet").field("names", &names).finish()
    }
}

impl SecretSet {
    /// Registers (or replaces) the value known as `name`.
    pub fn insert(&mut self, name: &str, value: &str) {
        self.entries.retain(|(n, _)| n != name);
        if value.chars().count() >= 4 {
            self.entries.push((name.to_string(), value.to_string()));
            // Longest first, so a secret containing another is replaced whole.
            self.entries
                .sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        }
    }

    /// Whether no secret is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every form a value may take in a URL or body: as is, percent-encoded (query
    /// values), and `+` for spaces (forms).
    fn forms(value: &str) -> Vec<String> {
        let encoded = utf8_percent_encode(value, NON_ALPHANUMERIC).to_string();
        let mut forms = vec![value.to_string()];
        if encoded != value {
            forms.push(encoded.clone());
            let lower = lower_hex(&encoded);
            if lower != encoded {
                forms.push(lower);
            }
        }
        forms
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (_, value) in &self.entries {
            for form in Self::forms(value) {
                if out.contains(&form) {
                    out = out.replace(&form, MASK);
                }
            }
        }
        out
    }

    /// `text` with every secret replaced by a placeholder naming it (`{{secret:NAME}}`),
    /// for saving a next URL in a checkpoint; [`SecretSet::fill`] reverses it on resume
    /// with the values current then (a refreshed access token, a rotated key).
    pub fn to_placeholders(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, value) in &self.entries {
            let raw = value.as_str();
            let encoded = utf8_percent_encode(raw, NON_ALPHANUMERIC).to_string();
            if out.contains(raw) {
                out = out.replace(raw, &format!("{{{{secret:{name}}}}}"));
            }
            if encoded != raw && out.contains(&encoded) {
                out = out.replace(&encoded, &format!("{{{{secret%:{name}}}}}"));
            }
        }
        out
    }

    /// Fills placeholders written by [`SecretSet::to_placeholders`]. `Err` names a
    /// placeholder whose secret is not known in this run (the credential was removed).
    pub fn fill(&self, text: &str) -> Result<String, String> {
        let mut out = text.to_string();
        for (name, value) in &self.entries {
            out = out.replace(&format!("{{{{secret:{name}}}}}"), value);
            out = out.replace(
                &format!("{{{{secret%:{name}}}}}"),
                &utf8_percent_encode(value, NON_ALPHANUMERIC).to_string(),
            );
        }
        if let Some(start) = out.find("{{secret") {
            let rest = &out[start..];
            let end = rest.find("}}").map(|e| e + 2).unwrap_or(rest.len());
            return Err(format!(
                "saved position needs `{}`, unknown in this run",
                &rest[..end]
            ));
        }
        Ok(out)
    }
}

fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut chars = encoded.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for _ in 0..2 {
                if let Some(h) = chars.next() {
                    out.push(h.to_ascii_lowercase());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_raw_and_encoded_forms() {
        let mut set = SecretSet::default();
        set.insert("credentials.api_key", "s3cr/et key");
        set.insert("credentials.short", "ab");
        let text = "https://x.test/p?k=s3cr%2Fet%20key&a=ab body s3cr/et key";
        assert_eq!(set.redact(text), "https://x.test/p?k=****&a=ab body ****");
    }

    #[test]
    fn placeholders_round_trip_with_current_values() {
        let mut set = SecretSet::default();
        set.insert("token.access_token", "tok-old-123");
        let saved = set.to_placeholders("https://x.test/next?access_token=tok-old-123&page=2");
        assert_eq!(
            saved,
            "https://x.test/next?access_token={{secret:token.access_token}}&page=2"
        );
        assert!(!saved.contains("tok-old"));
        set.insert("token.access_token", "tok-new-456");
        assert_eq!(
            set.fill(&saved).unwrap(),
            "https://x.test/next?access_token=tok-new-456&page=2"
        );
        let empty = SecretSet::default();
        assert!(
            empty
                .fill(&saved)
                .unwrap_err()
                .contains("token.access_token")
        );
    }
}
