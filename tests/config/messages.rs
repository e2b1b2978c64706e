//! Issue #13: no message a person sees names a Rust type or shows a template slip. Walks
//! every diagnostic the snapshot fixtures produce (invalid trees, and the warnings of
//! valid ones) and fails on text that reads like code: a Rust type or path
//! (`expected struct TimestampSpec`, `u64`, `PathList`, `::`), a doubled quote
//! (`connector 'crm''s maximum`), or a placeholder left unfilled (`{cid}`, `{}`).

use super::{cases, render};
use tributary::config::load::{LoadOptions, load};

/// Words that are Rust, not the language of these files.
const RUST_WORDS: &[&str] = &[
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "isize", "f32", "f64",
    "bool", "String", "Vec", "Option", "BTreeMap", "HashMap", "IndexMap", "Box", "struct", "enum",
    "tuple", "Some", "None", "serde", "Ok", "Err",
];

/// `text` without its quoted parts (`...`, '...', "..."): a user's own values and the
/// keys of the files may be anything.
fn unquoted(text: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '`' || c == '"' => quote = Some(c),
            // An apostrophe opens a quote only at the start of a word (`'crm'`).
            None if c == '\'' && (i == 0 || !chars[i - 1].is_alphanumeric()) => quote = Some(c),
            None => out.push(c),
        }
    }
    out
}

/// Why `message` reads like code, if it does.
fn slips(message: &str) -> Vec<String> {
    let mut found = Vec::new();
    for doubled in ["''", "``", "{}", "  "] {
        if message.contains(doubled) {
            found.push(format!("doubled or empty `{doubled}`"));
        }
    }
    if message.trim() != message || message.is_empty() {
        found.push("leading or trailing space, or empty".into());
    }
    // `{name}` with single braces: a format placeholder that was never filled.
    let chars: Vec<char> = message.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c != '{' || chars.get(i.wrapping_sub(1)) == Some(&'{') || chars.get(i + 1) == Some(&'{')
        {
            continue;
        }
        let inner: String = chars[i + 1..].iter().take_while(|c| **c != '}').collect();
        if !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        {
            found.push(format!("unfilled placeholder `{{{inner}}}`"));
        }
    }
    let plain = unquoted(message);
    if plain.contains("::") {
        found.push("a Rust path (`::`)".into());
    }
    for word in plain.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if RUST_WORDS.contains(&word) {
            found.push(format!("the Rust word `{word}`"));
        }
        // CamelCase with two humps (`PathList`, `TimestampSpec`), not acronyms (`JSONPath`).
        let humps = word
            .char_indices()
            .filter(|(i, c)| {
                c.is_ascii_uppercase()
                    && word[i + 1..]
                        .chars()
                        .next()
                        .is_some_and(|n| n.is_ascii_lowercase())
            })
            .count();
        if humps >= 2 && word.starts_with(|c: char| c.is_ascii_uppercase()) {
            found.push(format!("the type-like name `{word}`"));
        }
    }
    found
}

#[test]
fn no_fixture_diagnostic_names_a_rust_type_or_shows_a_template_slip() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for kind in ["invalid", "valid"] {
        for case in cases(kind) {
            let report = load(&case.join("tributary.yaml"), LoadOptions::default());
            for diagnostic in &report.diagnostics {
                checked += 1;
                let problems = slips(&diagnostic.message);
                if !problems.is_empty() {
                    bad.push(format!(
                        "{}: {}\n  {}",
                        case.display(),
                        render(std::slice::from_ref(diagnostic)).trim_end(),
                        problems.join("; ")
                    ));
                }
            }
        }
    }
    assert!(checked >= 60, "only {checked} diagnostics walked");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The check finds the slips it is for, so the walk above cannot pass vacuously.
#[test]
fn the_message_check_finds_rust_types_and_template_slips() {
    for (message, expected) in [
        (
            "invalid type: string \"$.x\", expected struct TimestampSpec",
            "the Rust word `struct`",
        ),
        (
            "1000 is above connector 'crm''s maximum page size 500",
            "doubled or empty `''`",
        ),
        (
            "invalid value: integer `-1`, expected u64",
            "the Rust word `u64`",
        ),
        (
            "data did not match any variant of untagged enum PathList",
            "the type-like name `PathList`",
        ),
        (
            "connector {cid} has no filter",
            "unfilled placeholder `{cid}`",
        ),
        ("see crate::config::spec", "a Rust path (`::`)"),
    ] {
        let found = slips(message);
        assert!(
            found.iter().any(|f| f == expected),
            "{message:?}: {found:?}"
        );
    }
    for fine in [
        "connector 'FakeCRM' has no filter 'stage' (known: label, owner_id)",
        "pagination `cursor` needs `{{cursor}}` in contacts.request (query, headers or body)",
        "a secret is given by reference ({env: NAME}, {file: PATH} or {credential: NAME})",
        "invalid JSONPath `$.data[*`: syntax error at character 8 (expected string)",
        "unknown variant `body`, expected `header` or `query`",
    ] {
        assert_eq!(slips(fine), Vec::<String>::new(), "{fine:?}");
    }
}
