//! Configuration language (issue #2): every fixture tree under `tests/fixtures/valid`
//! loads, every one under `tests/fixtures/invalid` produces exactly the diagnostics in
//! its `expected.txt` (file:line:column: key: message), `tributary validate` reports
//! every broken file of a tree in one run with exit code 78, the repository's own
//! connectors and importers validate, and the committed JSON Schemas are fresh.
//!
//! `SNAPSHOTS=overwrite cargo test --test tests config::` rewrites the expected files;
//! review the diff before committing it.

mod docs_examples;
mod hostile;
mod layers;
mod messages;

use std::path::{Path, PathBuf};
use std::process::Command;

use tributary::config::diagnostic::Diagnostic;
use tributary::config::load::{LoadOptions, load};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = repo().join("tests/fixtures").join(kind);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

/// A temp `tributary.yaml` pointing at `connectors` and `importers` (none: an empty
/// directory), so that trees outside a fixture root can be loaded.
fn tree_config(connectors: &Path, importers: Option<&Path>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tributary.yaml");
    let importers = importers
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.path().join("none"));
    std::fs::write(
        &config,
        format!(
            "connectors_dir: {}\nimporters_dir: {}\n",
            connectors.display(),
            importers.display()
        ),
    )
    .unwrap();
    (dir, config)
}

fn overwrite() -> bool {
    std::env::var("SNAPSHOTS").as_deref() == Ok("overwrite")
}

/// Compares `actual` with `case/expected.txt`, or rewrites it under `SNAPSHOTS=overwrite`.
fn check_snapshot(case: &Path, actual: &str, mismatches: &mut Vec<String>) {
    let expected_file = case.join("expected.txt");
    if overwrite() {
        std::fs::write(&expected_file, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
    if expected != actual {
        mismatches.push(format!(
            "{}:\n--- expected\n{expected}--- actual\n{actual}",
            case.display()
        ));
    }
}

#[test]
fn valid_fixtures_load_into_a_plan() {
    let cases = cases("valid");
    assert!(cases.len() >= 10, "only {} valid fixtures", cases.len());
    let mut mismatches = Vec::new();
    for case in &cases {
        let report = load(&case.join("tributary.yaml"), LoadOptions::default());
        let plan = report.plan.unwrap_or_else(|| {
            panic!(
                "{} should be valid:\n{}",
                case.display(),
                render(&report.diagnostics)
            )
        });
        assert!(
            !plan.importers.is_empty(),
            "{}: no importer",
            case.display()
        );
        // Warnings (if any) are part of the expected output too.
        let actual = render(&report.diagnostics);
        if !actual.is_empty() || case.join("expected.txt").exists() {
            check_snapshot(case, &actual, &mut mismatches);
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn invalid_fixtures_report_the_exact_diagnostics() {
    let cases = cases("invalid");
    assert!(cases.len() >= 25, "only {} invalid fixtures", cases.len());
    let mut mismatches = Vec::new();
    for case in &cases {
        let report = load(&case.join("tributary.yaml"), LoadOptions::default());
        assert!(
            report.plan.is_none(),
            "{} should be invalid but loaded",
            case.display()
        );
        let actual = render(&report.diagnostics);
        // Only whole-file problems (empty or unreadable file) may lack a position.
        assert!(
            report
                .diagnostics
                .iter()
                .all(|d| d.position.is_some() || d.key.is_empty()),
            "{}: a diagnostic has no position:\n{actual}",
            case.display()
        );
        check_snapshot(case, &actual, &mut mismatches);
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn validate_reports_every_broken_file_in_one_run_and_exits_78() {
    let case = repo().join("tests/fixtures/invalid/several-broken-files");
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("validate")
        .arg("--config")
        .arg(case.join("tributary.yaml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stdout = String::from_utf8(output.stdout).unwrap();
    for file in [
        "connectors.d/crm.yaml:",
        "connectors.d/second.yaml:",
        "importers.d/other.yaml:",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(file)),
            "{file} not reported:\n{stdout}"
        );
    }
    assert!(stdout.ends_with("errors, 0 warnings\n"), "{stdout}");

    let json = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["validate", "--format", "json", "--config"])
        .arg(case.join("tributary.yaml"))
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(78));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    let files: Vec<&str> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["file"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"connectors.d/second.yaml"), "{files:?}");
    assert!(doc["diagnostics"][0]["line"].is_u64());
}

#[test]
fn validate_exits_0_on_a_valid_tree() {
    let case = repo().join("tests/fixtures/valid/minimal");
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["validate", "--config"])
        .arg(case.join("tributary.yaml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "ok: 1 connectors, 1 importers, 0 warnings\n"
    );
}

#[test]
fn every_repository_connector_and_importer_validates() {
    let (_dir, config) = tree_config(
        &repo().join("connectors.d"),
        Some(&repo().join("importers.d")),
    );
    let report = load(&config, LoadOptions::default());
    // The only warnings: connectors whose pass cannot be made safe (issue 17: their
    // services page by position without a sort by update time), each naming its net.
    let unsafe_paging: Vec<(String, String)> = report
        .diagnostics
        .iter()
        .map(|d| {
            let name = d.file.file_name().unwrap_or_default();
            (name.to_string_lossy().into_owned(), d.key.clone())
        })
        .collect();
    assert_eq!(
        unsafe_paging,
        [
            ("batchbook.yaml".to_string(), "sync.order".to_string()),
            ("bigcommerce-v2.yaml".into(), "sync.order".into()),
            ("keap.yaml".into(), "sync.order".into()),
            ("nimble.yaml".into(), "sync.order".into()),
            ("shopify.yaml".into(), "sync.order".into()),
            ("tactile.yaml".into(), "sync.order".into()),
        ],
        "{}",
        render(&report.diagnostics)
    );
    assert!(
        report
            .diagnostics
            .iter()
            .all(|d| !d.is_error() && d.message.contains("full_refresh_every recovers them")),
        "{}",
        render(&report.diagnostics)
    );
    let plan = report.plan.unwrap();
    let files = std::fs::read_dir(repo().join("connectors.d"))
        .unwrap()
        .count();
    assert_eq!(plan.connectors.len(), files);
    assert!(plan.importers.len() >= 3);
}

#[test]
fn resolve_credentials_reports_references_that_do_not_resolve() {
    let case = repo().join("tests/fixtures/valid/session-login");
    let (_dir, config) = tree_config(&case.join("connectors.d"), Some(&case.join("importers.d")));
    assert!(load(&config, LoadOptions::default()).plan.is_some());
    let report = load(
        &config,
        LoadOptions {
            resolve_credentials: true,
        },
    );
    assert!(report.plan.is_none());
    let text = render(&report.diagnostics);
    assert!(
        text.contains(
            "importers.d/sugar.yaml:3:3: credentials.username: environment variable `SUGAR_USER` is not set"
        ),
        "{text}"
    );
}

#[test]
fn committed_schemas_are_fresh() {
    let mut stale = Vec::new();
    for (name, value) in tributary::config::schema::all() {
        let path = repo().join("schemas").join(name);
        let fresh = tributary::config::schema::render(&value);
        if overwrite() {
            std::fs::write(&path, &fresh).unwrap();
            continue;
        }
        if std::fs::read_to_string(&path).ok().as_deref() != Some(fresh.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale schemas {stale:?}: run `tributary schema --out schemas` and commit"
    );
}

#[test]
fn generated_key_reference_in_docs_is_fresh() {
    const BEGIN: &str = "<!-- BEGIN GENERATED REFERENCE -->\n";
    const END: &str = "<!-- END GENERATED REFERENCE -->";
    let path = repo().join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc.find(END).expect("end marker");
    let fresh = format!(
        "{}{}{}",
        &doc[..start],
        tributary::config::schema::reference_markdown(),
        &doc[end..]
    );
    if overwrite() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    assert!(
        doc == fresh,
        "docs/configuration.md key reference is stale: run SNAPSHOTS=overwrite cargo test --test tests config::"
    );
    // Every key of every file is documented.
    for key in [
        "`store`",
        "`encryption_key`",
        "`contacts.pagination.stop`",
        "`auth.NAME.rotates_refresh_token`",
        "`contacts.custom_fields[].delimiter`",
        "`filters.NAME.apply.op`",
        "`page_budget`",
        "`credentials.NAME`",
    ] {
        assert!(doc.contains(key), "{key} missing from the reference");
    }
}

#[test]
fn the_plan_applies_defaults_and_compiles_templates() {
    use std::time::Duration;
    use tributary::plan::{Auth, Pagination, Sync};
    use tributary::template::Escape;

    let case = repo().join("tests/fixtures/valid/cursor-api-key-header");
    let plan = tributary::config::load::load_plan(&case.join("tributary.yaml")).unwrap();
    assert_eq!(
        plan.daemon.store_url,
        format!("sqlite://{}", case.join("tributary.db").display())
    );
    assert_eq!(plan.daemon.connectors_dir, case.join("connectors.d"));
    assert_eq!(plan.daemon.concurrency, 4);
    assert_eq!(plan.daemon.listen, "127.0.0.1:9477");

    let importer = &plan.importers["sales"];
    assert_eq!(importer.auth_scheme, "token");
    assert!(matches!(importer.auth(), Some(Auth::ApiKey { name, .. }) if name == "x-api-token"));
    assert_eq!(importer.interval, Duration::from_secs(60));
    assert_eq!(importer.page_budget, None, "page_budget: 0 means unlimited");
    assert_eq!(importer.page_size, 500);
    assert!(importer.enabled);
    assert_eq!(
        importer.server_filter_context()["owner_id"],
        serde_json::json!(11)
    );
    // Part by part, so that a changed pass can say why.
    let parts: Vec<&str> = importer
        .fingerprint
        .split(';')
        .map(|p| p.split_once('=').unwrap().0)
        .collect();
    assert_eq!(
        parts,
        [
            "auth",
            "connection",
            "credentials",
            "filter_values",
            "filters",
            "page_size",
            "pagination",
            "records",
            "request",
            "settings",
            "sync"
        ]
    );

    let connector = &importer.connector;
    assert_eq!(connector.service, "crm");
    assert_eq!(connector.page_size_max, 500);
    assert_eq!(connector.connect_timeout, Duration::from_secs(5));
    assert!(matches!(
        &connector.pagination,
        Pagination::Cursor { common, .. } if common.max_pages == 1000 && common.stop.len() == 2
    ));
    assert!(matches!(
        connector.sync,
        Sync::Incremental { lookback, .. } if lookback == Duration::from_secs(120)
    ));
    let ctx = serde_json::json!({"settings": {"company": "acme"}});
    assert_eq!(
        connector.base_url.render(&ctx, Escape::None).unwrap(),
        "https://acme.crm.example/api/v2"
    );
    let zone = connector.fields.updated_at.as_ref().unwrap().zone;
    assert_eq!(zone.local_minus_utc(), 7200);

    // Defaults elsewhere: interval PT30M, page budget 50, page size = connector default.
    let case = repo().join("tests/fixtures/valid/minimal");
    let plan = tributary::config::load::load_plan(&case.join("tributary.yaml")).unwrap();
    let importer = &plan.importers["plain"];
    assert_eq!(importer.interval, Duration::from_secs(1800));
    assert_eq!(importer.page_budget, Some(50));
    assert_eq!(importer.auth_scheme, "");
    assert!(matches!(
        importer.connector.sync,
        Sync::FullRefresh { every } if every == Duration::from_secs(7 * 86400)
    ));
}

#[test]
fn a_missing_config_at_the_default_location_means_defaults_in_the_current_dir() {
    let dir = tempfile::tempdir().unwrap();
    let minimal = repo().join("tests/fixtures/valid/minimal");
    for sub in ["connectors.d", "importers.d"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(minimal.join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("validate")
        .current_dir(dir.path())
        .env_remove("TRIBUTARY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ok: 1 connectors, 1 importers, 0 warnings\n"
    );
    assert_eq!(output.status.code(), Some(0));

    // A config named explicitly must exist.
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["validate", "--config", "elsewhere.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "elsewhere.yaml: cannot read config file: no such file\ninvalid: 1 errors, 0 warnings\n"
    );

    // $TRIBUTARY_CONFIG is used when no flag is given.
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("validate")
        .current_dir(dir.path())
        .env("TRIBUTARY_CONFIG", "from-env.yaml")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("from-env.yaml: cannot read"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Renders every template of every repository connector with a full context, first run
/// (`since` null) and later run, as the engine would: strict mode finds any variable the
/// context would lack, and whole-body templates must render JSON.
#[test]
fn repository_connectors_render_their_requests() {
    use serde_json::{Value, json};
    use tributary::plan::{Auth, Body, Request};
    use tributary::template::{Escape, Template};

    let (_dir, config) = tree_config(&repo().join("connectors.d"), None);
    let report = load(&config, LoadOptions::default());
    let plan = report.plan.expect("repository connectors load");

    fn render_all(t: &Template, ctx: &Value, escape: Escape, what: &str) -> String {
        t.render(ctx, escape)
            .unwrap_or_else(|e| panic!("{what}: {e} (template {:?})", t.as_str()))
    }
    fn request(r: &Request, ctx: &Value, what: &str) {
        render_all(&r.path, ctx, Escape::PathSegment, what);
        for (name, t) in r.query.iter().chain(&r.headers) {
            render_all(t, ctx, Escape::Query, &format!("{what} {name}"));
        }
        match &r.body {
            Some(Body::Json(tree)) => {
                tree.render(ctx)
                    .unwrap_or_else(|e| panic!("{what} body: {e}"));
            }
            Some(Body::Form(fields)) => {
                for (name, t) in fields {
                    render_all(t, ctx, Escape::None, &format!("{what} form {name}"));
                }
            }
            Some(Body::Template(t)) => {
                let text = render_all(t, ctx, Escape::Json, &format!("{what} body"));
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {text}"));
            }
            None => {}
        }
    }

    for (id, connector) in &plan.connectors {
        let settings: serde_json::Map<String, Value> = connector
            .settings
            .iter()
            .map(|(name, s)| (name.clone(), s.default.clone().unwrap_or(json!("x"))))
            .collect();
        let filters: serde_json::Map<String, Value> = connector
            .filters
            .keys()
            .map(|name| (name.clone(), Value::Null))
            .collect();
        let credentials = json!({
            "api_token": "t", "access_token": "t", "token": "t", "client_id": "c",
            "client_secret": "s", "refresh_token": "r", "secret_key": "k", "api_key": "k",
            "username": "u", "password": "p", "login_email": "e", "login_password": "p",
            "consumer_key": "ck", "consumer_secret": "cs"
        });
        for (since, change_token) in [
            (Value::Null, Value::Null),
            (json!("2024-05-01T10:00:00Z"), json!("t1")),
        ] {
            let ctx = json!({
                "credentials": credentials,
                "settings": settings,
                "filters": filters,
                "token": {"access_token": "a", "instance_url": "https://x.my.salesforce.com",
                          "api_domain": "https://acme.pipedrive.com", "session": "s"},
                "since": since,
                "change_token": change_token,
                "page": 1, "offset": 0, "cursor": null, "page_size": connector.page_size_default,
                "keyset": {"updated": null, "id": null},
                "now": "2024-05-02T00:00:00Z"
            });
            let base = render_all(&connector.base_url, &ctx, Escape::None, id);
            assert!(base.starts_with("http"), "{id}: base URL {base}");
            for (name, t) in &connector.headers {
                render_all(t, &ctx, Escape::Header, &format!("{id} header {name}"));
            }
            request(&connector.request, &ctx, id);
            for (scheme, auth) in &connector.auth {
                let what = format!("{id} auth {scheme}");
                match auth {
                    Auth::None => {}
                    Auth::ApiKey { value, .. } => {
                        render_all(value, &ctx, Escape::Header, &what);
                    }
                    Auth::Bearer { token } => {
                        render_all(token, &ctx, Escape::Header, &what);
                    }
                    Auth::Basic { username, password } => {
                        render_all(username, &ctx, Escape::None, &what);
                        if let Some(p) = password {
                            render_all(p, &ctx, Escape::None, &what);
                        }
                    }
                    Auth::Oauth2 {
                        token_url,
                        client_id,
                        client_secret,
                        refresh_token,
                        ..
                    } => {
                        let optional = [client_secret, refresh_token];
                        for t in [token_url, client_id]
                            .into_iter()
                            .chain(optional.into_iter().flatten())
                        {
                            render_all(t, &ctx, Escape::None, &what);
                        }
                    }
                    Auth::Session {
                        login,
                        headers,
                        query,
                        ..
                    } => {
                        request(login, &ctx, &what);
                        for (_, t) in headers.iter().chain(query) {
                            render_all(t, &ctx, Escape::Header, &what);
                        }
                    }
                    Auth::Header { headers } => {
                        for (_, t) in headers {
                            render_all(t, &ctx, Escape::Header, &what);
                        }
                    }
                }
            }
        }
    }
}

/// The repository connectors' JSONPaths against response shapes of the real services
/// (`tests/fixtures/responses/<connector>.json`, from shared/reference/services.md): the
/// records path finds the records, the email and update time are found in the first
/// record, every mapped field and custom field of that record finds a value, and the
/// next-page pointer is where the pagination style looks for it.
#[test]
fn repository_connectors_read_real_response_shapes() {
    use serde_json::Value;
    use tributary::jsonpath::JsonPath;
    use tributary::plan::Pagination;

    let (_dir, config) = tree_config(&repo().join("connectors.d"), None);
    let plan = load(&config, LoadOptions::default()).plan.unwrap();
    let first = |paths: &[JsonPath], record: &Value| -> Option<Value> {
        paths.iter().find_map(|p| {
            p.query(record)
                .into_iter()
                .find(|v| !v.is_null() && v.as_str() != Some(""))
                .cloned()
        })
    };
    let responses = repo().join("tests/fixtures/responses");
    let mut checked = 0;
    for entry in std::fs::read_dir(&responses).unwrap() {
        let path = entry.unwrap().path();
        let id = path.file_stem().unwrap().to_str().unwrap().to_string();
        let body: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let connector = plan
            .connectors
            .get(&id)
            .unwrap_or_else(|| panic!("no connector for {}", path.display()));
        let records = connector.records.query(&body);
        assert!(!records.is_empty(), "{id}: records path finds nothing");
        let record = records[0];
        assert_eq!(
            first(&connector.fields.email, record),
            Some(Value::String("ada@example.com".into())),
            "{id}: email"
        );
        let f = &connector.fields;
        for (name, paths) in [
            ("first_name", &f.first_name),
            ("last_name", &f.last_name),
            ("full_name", &f.full_name),
            ("phone", &f.phone),
            ("organization", &f.organization),
            ("external_id", &f.external_id),
        ] {
            if !paths.is_empty() {
                assert!(first(paths, record).is_some(), "{id}: {name} finds nothing");
            }
        }
        if let Some(ts) = &f.updated_at {
            let value = first(&ts.paths, record).unwrap_or_else(|| panic!("{id}: updated_at"));
            assert!(
                ts.format.read(&value, ts.zone).is_some(),
                "{id}: updated_at {value} does not read as {:?}",
                ts.format
            );
        }
        for custom in &connector.custom_fields {
            assert!(
                custom.paths.iter().any(|p| !p.query(record).is_empty()),
                "{id}: custom field {} finds nothing",
                custom.def.label
            );
        }
        let pointer = match &connector.pagination {
            Pagination::Cursor { cursor, .. } => Some(cursor),
            Pagination::NextUrl { next_url, .. } => Some(next_url),
            _ => None,
        };
        if let Some(pointer) = pointer {
            assert!(
                pointer.query(&body).iter().any(|v| v.is_string()),
                "{id}: next-page pointer `{}` finds nothing",
                pointer.as_str()
            );
        }
        if let Some(common) = connector.pagination.common() {
            for path in [&common.has_more, &common.total, &common.total_pages]
                .into_iter()
                .flatten()
            {
                assert!(
                    !path.query(&body).is_empty(),
                    "{id}: `{}` finds nothing",
                    path.as_str()
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} response samples");
}

/// Issue #13: query parameters, headers and form fields go out in the order the spec
/// writes them (not sorted), as the rendered request shows.
#[tokio::test]
async fn the_request_keeps_the_parameter_order_the_spec_writes() {
    use crate::common::sync_env::SyncEnv;
    use tributary::engine::client::{Client, PreparedBody};

    let env = SyncEnv::new();
    env.connector(
        "crm",
        r#"
spec_version: 1
base_url: https://crm.example/api
headers: {X-Zeta: z, X-Alpha: a, X-Mid: m}
auth:
  session:
    type: session
    login:
      method: POST
      path: /login
      body: {form: {username: u, password: p, client: c}}
    token: $.token
    headers: {X-Session: "{{token.session}}"}
contacts:
  request:
    path: /persons
    query: {zeta: "1", limit: "{{page_size}}", alpha: "2", since: "{{since}}", mid: "3"}
    headers: {X-Request-Z: z, X-Request-A: a}
  pagination: {type: none}
  records: $.data[*]
  fields: {email: $.email}
sync: {mode: incremental}
"#,
    )
    .importer("sales", "connector: crm\nlist: Sales\n");
    let plan = env.plan();
    let importer = plan.importers["sales"].clone();
    let connector = importer.connector.clone();
    let mut client = Client::new(importer, env.store().await, plan.daemon.limits).unwrap();
    client.set("since", serde_json::json!("2024-05-01T00:00:00Z"));
    let prepared = client
        .prepare(&connector.request, &serde_json::Map::new())
        .unwrap();
    let names: Vec<String> = prepared
        .url
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect();
    assert_eq!(names, ["zeta", "limit", "alpha", "since", "mid"]);
    let headers: Vec<&str> = prepared
        .headers
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with("X-"))
        .collect();
    assert_eq!(
        headers,
        ["X-Zeta", "X-Alpha", "X-Mid", "X-Request-Z", "X-Request-A"]
    );
    let tributary::plan::Auth::Session { login, .. } = &connector.auth["session"] else {
        panic!("a session scheme");
    };
    let login = client.prepare(login, &serde_json::Map::new()).unwrap();
    let Some(PreparedBody::Form(fields)) = &login.body else {
        panic!("a form body");
    };
    let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["username", "password", "client"]);
}
