//! Where a secret could leak, and in which spellings it is searched for.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Every spelling under which `secret` is searched for: as is, percent-encoded (form and
/// path styles), JSON-escaped, and base64 (standard and URL-safe alphabets) at each of the
/// three alignments it can have inside a longer encoded text (`user:secret` in a Basic
/// header): the characters that depend only on the secret's bytes.
pub fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![
        secret.to_string(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    ];
    let json = serde_json::to_string(secret).unwrap();
    forms.push(json[1..json.len() - 1].to_string());
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = engine.encode(&bytes);
            // Characters before `skip` mix in the prefix; after `keep`, the unknown suffix.
            let skip = (offset * 8).div_ceil(6);
            let keep = (bytes.len() * 8) / 6;
            if keep > skip + 8 {
                forms.push(encoded[skip..keep].to_string());
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

#[test]
fn forms_find_a_secret_inside_a_basic_header() {
    let secret = "p@ss word/Zx9";
    for user in ["", "a", "ab", "abc"] {
        let header = STANDARD_NO_PAD.encode(format!("{user}:{secret}"));
        assert!(
            forms(secret)
                .iter()
                .any(|f| f.len() > 8 && header.contains(f.as_str())),
            "{user}: {header}"
        );
    }
    assert!(forms(secret).contains(&"p%40ss+word%2FZx9".to_string()));
    assert!(forms("a\"b\\c").contains(&"a\\\"b\\\\c".to_string()));
}
