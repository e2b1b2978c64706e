//! Issue #11, configuration findings: each test reproduces one thing bad input or bad luck
//! broke, and checks that it now ends in a clear diagnostic naming the file (and, where
//! there is one, the line and key) instead of a panic, an abort, a hang or silence.

use std::path::Path;
use std::process::Command;

use super::render;
use tributary::config::load::{LoadOptions, load};

/// An incremental connector `crm` whose `sync` block is `sync`, and one importer of it.
const CONNECTOR: &str = "\
spec_version: 1
base_url: https://crm.example
contacts:
  request:
    path: /contacts
    query: {updated_since: \"{{since}}\"}
  pagination: {type: none}
  records: $.contacts[*]
  fields: {email: $.email}
";

/// A tree in a temp dir: `tributary.yaml` (`daemon`), connectors and importers by file
/// name. Returns every diagnostic, rendered.
fn validate(daemon: &str, connectors: &[(&str, &[u8])], importers: &[(&str, &[u8])]) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), daemon, connectors, importers);
    let report = load(&dir.path().join("tributary.yaml"), LoadOptions::default());
    render(&report.diagnostics)
}

fn write_tree(
    root: &Path,
    daemon: &str,
    connectors: &[(&str, &[u8])],
    importers: &[(&str, &[u8])],
) {
    std::fs::write(root.join("tributary.yaml"), daemon).unwrap();
    for (dir, files) in [("connectors.d", connectors), ("importers.d", importers)] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        for (name, text) in files {
            std::fs::write(root.join(dir).join(name), text).unwrap();
        }
    }
}

fn connector_with_sync(sync: &str) -> String {
    format!("{CONNECTOR}sync: {sync}\n")
}

const IMPORTER: &[u8] = b"connector: crm\nlist: Sales\n";

/// Finding 1: `sync.lookback: P100000000D` passed validate and every run then panicked
/// (`DateTime - TimeDelta overflowed`). Durations are bounded when read.
#[test]
fn issue_11_a_lookback_of_a_hundred_million_days_is_refused_by_validate() {
    let connector = connector_with_sync("{mode: incremental, lookback: P100000000D}");
    let out = validate(
        "",
        &[("crm.yaml", connector.as_bytes())],
        &[("a.yaml", IMPORTER)],
    );
    assert_eq!(
        out,
        "connectors.d/crm.yaml:10:27: sync.lookback: `P100000000D` is longer than P36500D (100 years), the longest duration a file may give\n"
    );
    let connector = connector_with_sync("{mode: incremental, lookback: P36500D}");
    let out = validate(
        "",
        &[("crm.yaml", connector.as_bytes())],
        &[("a.yaml", IMPORTER)],
    );
    assert_eq!(out, "", "a century is still accepted");
}

/// Finding 2: a template of 5,000 nested subexpressions (80 KB) overflowed the stack and
/// aborted validate (exit 134). Now an error naming the file, line and key.
#[test]
fn issue_11_a_template_of_5000_nested_subexpressions_is_an_error_not_an_abort() {
    let template = format!(
        "\"{{{{json {}since{}}}}}\"",
        "(json ".repeat(5_000),
        ")".repeat(5_000)
    );
    let connector = connector_with_sync("{mode: incremental}").replace(
        "query: {updated_since: \"{{since}}\"}",
        &format!("query: {{updated_since: {template}}}"),
    );
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        "",
        &[("crm.yaml", connector.as_bytes())],
        &[("a.yaml", IMPORTER)],
    );
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["validate", "--config"])
        .arg(dir.path().join("tributary.yaml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with(
            "connectors.d/crm.yaml:6:13: contacts.request.query.updated_since: blocks or subexpressions nest deeper than 32 levels"
        ),
        "{stdout}"
    );
}

/// Finding 6: deeply nested YAML was quadratic in the parser (a 200 KB file took a
/// minute) and parsed twice. Nesting is bounded by a flat walk before any recursive
/// parser, and a file's size before it is read.
#[test]
fn issue_11_deeply_nested_and_oversized_files_are_refused_with_their_position() {
    let flow = format!(
        "spec_version: 1\nbase_url: {}1{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let block: String = (0..20_000).map(|_| "- ").collect::<String>() + "x\n";
    let out = validate(
        "",
        &[
            ("flow.yaml", flow.as_bytes()),
            ("block.yaml", block.as_bytes()),
        ],
        &[],
    );
    assert_eq!(
        out,
        "connectors.d/block.yaml:1:129: mappings and lists nest deeper than 64 levels here; no configuration needs that many\n\
         connectors.d/flow.yaml:2:266: mappings and lists nest deeper than 64 levels here; no configuration needs that many\n"
    );
    let big = format!("connector: crm\nlist: Sales\n# {}\n", "x".repeat(2 << 20));
    let out = validate("", &[], &[("big.yaml", big.as_bytes())]);
    assert_eq!(
        out,
        format!(
            "importers.d/big.yaml: the file has {} bytes; a configuration file may have at most 1048576\n",
            big.len()
        )
    );
}

/// Finding 8: duplicate keys inside `query`, `settings` and `credentials` were accepted
/// (the last one won). A key given twice in any mapping is an error at its line.
#[test]
fn issue_11_keys_given_twice_anywhere_are_errors_with_line_and_column() {
    let connector = connector_with_sync("{mode: incremental}").replace(
        "query: {updated_since: \"{{since}}\"}",
        "query: {updated_since: \"{{since}}\", limit: \"10\", limit: \"500\"}",
    );
    let importer = b"connector: crm\nlist: Sales\ncredentials:\n  token: {env: A}\n  token: {env: B}\nsettings: {region: eu, region: us}\n";
    let out = validate(
        "lease: PT5M\nlease: PT1M\n",
        &[("crm.yaml", connector.as_bytes())],
        &[("a.yaml", importer)],
    );
    assert_eq!(
        out,
        "tributary.yaml:2:1: lease: this key is given twice in one mapping (first at line 1); only one may be written\n"
    );
    let out = validate(
        "",
        &[("crm.yaml", connector.as_bytes())],
        &[("a.yaml", importer)],
    );
    assert_eq!(
        out,
        "connectors.d/crm.yaml:6:54: contacts.request.query.limit: this key is given twice in one mapping (first at line 6); only one may be written\n\
         importers.d/a.yaml:5:3: credentials.token: this key is given twice in one mapping (first at line 4); only one may be written\n\
         importers.d/a.yaml:6:24: settings.region: this key is given twice in one mapping (first at line 6); only one may be written\n"
    );
}

/// Finding 10: `lease: PT0S` passed validate and then read as "held by another run".
#[test]
fn issue_11_a_zero_lease_is_refused() {
    let connector = connector_with_sync("{mode: incremental}");
    let out = validate(
        "lease: PT0S\n",
        &[("crm.yaml", connector.as_bytes())],
        &[("a.yaml", IMPORTER)],
    );
    assert_eq!(
        out,
        "tributary.yaml:1:1: lease: must be at least PT10S: a run renews its lease every third of it, and a shorter lease would read as held by another run\n"
    );
}

/// Finding 10: a dangling importer symlink was silently dropped.
#[test]
fn issue_11_a_dangling_importer_symlink_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let connector = connector_with_sync("{mode: incremental}");
    write_tree(
        dir.path(),
        "",
        &[("crm.yaml", connector.as_bytes())],
        &[("a.yaml", IMPORTER)],
    );
    std::os::unix::fs::symlink(
        "/nonexistent/sales.yaml",
        dir.path().join("importers.d/sales.yaml"),
    )
    .unwrap();
    let report = load(&dir.path().join("tributary.yaml"), LoadOptions::default());
    assert!(report.plan.is_none());
    assert_eq!(
        render(&report.diagnostics),
        "importers.d/sales.yaml: a symbolic link to /nonexistent/sales.yaml, which does not exist\n"
    );
}

/// Finding 10: services `fakecrm` and `FakeCRM` shared tags (and so custom fields)
/// without a word.
#[test]
fn issue_11_service_names_differing_only_in_case_are_an_error() {
    let lower = format!(
        "service: fakecrm\n{}",
        connector_with_sync("{mode: incremental}")
    );
    let upper = format!(
        "service: FakeCRM\n{}",
        connector_with_sync("{mode: incremental}")
    );
    let out = validate(
        "",
        &[("a.yaml", lower.as_bytes()), ("b.yaml", upper.as_bytes())],
        &[],
    );
    assert_eq!(
        out,
        "connectors.d/b.yaml:1:1: service: service 'FakeCRM' and service 'fakecrm' of connectors.d/a.yaml give the same tags (%FAKECRM_...%) and would share custom fields; write the service name the same way in both\n"
    );
}

/// Finding 10: an empty or non-UTF-8 file got exit 78 without naming what is wrong.
#[test]
fn issue_11_empty_and_non_utf8_files_say_what_is_wrong() {
    let connector = connector_with_sync("{mode: incremental}");
    let out = validate(
        "",
        &[("crm.yaml", connector.as_bytes())],
        &[
            ("empty.yaml", b"# nothing yet\n"),
            ("latin1.yaml", b"connector: crm\nlist: Caf\xe9\n"),
        ],
    );
    assert_eq!(
        out,
        "importers.d/empty.yaml: the file is empty\n\
         importers.d/latin1.yaml: the file is not UTF-8 text (a byte that is not UTF-8 at line 2, column 10); save it as UTF-8\n"
    );
    let out = validate("# caf\u{e9}\n", &[], &[]);
    assert_eq!(out, "", "UTF-8 is fine");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tributary.yaml"), b"store: caf\xe9\n").unwrap();
    let report = load(&dir.path().join("tributary.yaml"), LoadOptions::default());
    assert_eq!(
        render(&report.diagnostics),
        "tributary.yaml: the file is not UTF-8 text (a byte that is not UTF-8 at line 1, column 11); save it as UTF-8\n"
    );
}
