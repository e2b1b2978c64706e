//! Issue #13: every YAML example in README.md and docs/ is checked, so the docs cannot
//! drift from what the loader accepts.
//!
//! A ```` ```yaml ```` block is one of:
//! - a whole file, named by its info string (```` ```yaml connector ````, `importer`,
//!   `daemon-config`) or by its `# yaml-language-server: $schema=...` line: it must load
//!   with no diagnostic at all (an importer against the repository's `connectors.d/`);
//! - ```` ```yaml fragment ````: a piece of a file, or a file that is not Tributary's (a
//!   CI workflow): it must be well-formed YAML (keys may repeat: a fragment may show
//!   alternatives).
//!
//! A block marked neither way fails, so a new example gets a decision.

use std::path::{Path, PathBuf};

use super::{render, repo};
use tributary::config::load::{LoadOptions, load};

/// One ```` ```yaml ```` block: where it is, its info string's words after `yaml`, and
/// its text.
struct Example {
    at: String,
    marks: Vec<String>,
    text: String,
}

fn examples(file: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(file).unwrap();
    let shown = file
        .strip_prefix(repo())
        .unwrap_or(file)
        .display()
        .to_string();
    let mut out = Vec::new();
    let mut current: Option<Example> = None;
    for (index, line) in text.lines().enumerate() {
        match &mut current {
            None => {
                if let Some(info) = line.strip_prefix("```yaml") {
                    current = Some(Example {
                        at: format!("{shown}:{}", index + 1),
                        marks: info.split_whitespace().map(str::to_string).collect(),
                        text: String::new(),
                    });
                }
            }
            Some(example) => {
                if line.starts_with("```") {
                    out.extend(current.take());
                } else {
                    example.text.push_str(line);
                    example.text.push('\n');
                }
            }
        }
    }
    assert!(
        current.is_none(),
        "{shown}: a ```yaml block is never closed"
    );
    out
}

fn documents() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// What kind of file an example is, from its marks or its schema line.
fn kind(example: &Example) -> Option<&'static str> {
    for (mark, kind) in [
        ("connector", "connector"),
        ("importer", "importer"),
        ("daemon-config", "daemon-config"),
        ("fragment", "fragment"),
    ] {
        if example.marks.iter().any(|m| m == mark) {
            return Some(kind);
        }
    }
    let schema = example
        .text
        .lines()
        .find_map(|l| l.strip_prefix("# yaml-language-server: $schema="))?;
    if schema.ends_with("connector.schema.json") {
        Some("connector")
    } else if schema.ends_with("importer.schema.json") {
        Some("importer")
    } else if schema.ends_with("tributary.schema.json") {
        Some("daemon-config")
    } else {
        None
    }
}

/// Loads `example` as a file of its kind in a fresh tree; every diagnostic is returned.
fn check_file(kind: &str, example: &Example) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("connectors.d")).unwrap();
    std::fs::create_dir_all(root.join("importers.d")).unwrap();
    let config = root.join("tributary.yaml");
    match kind {
        "connector" => {
            std::fs::write(root.join("connectors.d/example.yaml"), &example.text).unwrap();
            std::fs::write(&config, "").unwrap();
        }
        "importer" => {
            std::fs::write(root.join("importers.d/example.yaml"), &example.text).unwrap();
            std::fs::write(
                &config,
                format!(
                    "connectors_dir: {}\n",
                    repo().join("connectors.d").display()
                ),
            )
            .unwrap();
        }
        _ => std::fs::write(&config, &example.text).unwrap(),
    }
    let report = load(&config, LoadOptions::default());
    // The example's own diagnostics, and errors anywhere: the shipped connectors an
    // importer example loads with may carry warnings of their own (issue 17's unsafe
    // paging warning), which say nothing about the example.
    let own: Vec<_> = report
        .diagnostics
        .into_iter()
        .filter(|d| {
            d.is_error() || d.file.ends_with("example.yaml") || d.file.ends_with("tributary.yaml")
        })
        .collect();
    render(&own)
}

#[test]
fn every_yaml_example_in_the_docs_validates_or_is_marked_a_fragment() {
    let mut problems = Vec::new();
    let mut whole_files = 0;
    for file in documents() {
        for example in examples(&file) {
            match kind(&example) {
                None => problems.push(format!(
                    "{}: mark the block (```yaml connector|importer|daemon-config|fragment) \
                     or give it a yaml-language-server schema line",
                    example.at
                )),
                Some("fragment") => {
                    // A fragment may list alternatives (`store:` twice), so only its
                    // syntax is checked.
                    if let Err(error) = tributary::config::locate::scan(&example.text) {
                        problems.push(format!("{}: not well-formed YAML: {error:?}", example.at));
                    }
                }
                Some(kind) => {
                    whole_files += 1;
                    let diagnostics = check_file(kind, &example);
                    if !diagnostics.is_empty() {
                        problems.push(format!(
                            "{}: this {kind} example does not validate:\n{diagnostics}",
                            example.at
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(whole_files >= 3, "only {whole_files} whole-file examples");
}

/// The check sees a broken example, an unmarked one, and a marked fragment.
#[test]
fn the_docs_example_check_tells_files_from_fragments() {
    let connector = Example {
        at: "x".into(),
        marks: vec![],
        text: "# yaml-language-server: $schema=../schemas/connector.schema.json\nspec_version: 1\nbase_url: https://x\n".into(),
    };
    assert_eq!(kind(&connector), Some("connector"));
    let diagnostics = check_file("connector", &connector);
    assert!(
        diagnostics.contains("missing field `contacts`"),
        "{diagnostics}"
    );
    let unmarked = Example {
        at: "x".into(),
        marks: vec![],
        text: "store: x\n".into(),
    };
    assert_eq!(kind(&unmarked), None);
    let fragment = Example {
        at: "x".into(),
        marks: vec!["fragment".into()],
        text: "store: x\n".into(),
    };
    assert_eq!(kind(&fragment), Some("fragment"));
}
