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

// ---------------------------------------------------------------------------------------
// The secrets test: a daemon importing with recognizable secrets in every place a
// credential travels (query key, bearer, basic, session login and the session token it
// issues, OAuth client secret, refresh token, the access token and the rotated refresh
// token it issues), with a run failing on a service that echoes its credential in the
// error body and a run redirected to another origin, at every log level. Then every
// surface is searched for every secret in every spelling of `forms`: the daemon's stdout
// and stderr, `/status`, `/metrics`, `tributary status` (text and JSON), a dump of every
// table (run history and checkpoints included) and the SQLite file's bytes. Expected: 0
// hits, and 0 requests carrying a secret to another origin.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::common::fake::FakeService;
use crate::common::sync_env::SyncEnv;
use crate::sync::redirects::paged_connector;

const QUERY_KEY: &str = "qK-Secret-4471aa";
const BEARER: &str = "bR-Secret-8812bb";
const BASIC_PASSWORD: &str = "bA-Secret-2290cc";
const SESSION_PASSWORD: &str = "sP-Secret-6613dd";
const SESSION_TOKEN: &str = "sT-Secret-9021ee";
const CLIENT_SECRET: &str = "oC-Secret-3345ff";
const REFRESH_TOKEN: &str = "oR-Secret-5567gg";
const ACCESS_TOKEN: &str = "oA-Secret-7789hh";
const ROTATED_REFRESH: &str = "oN-Secret-1123ii";
const ECHOED_KEY: &str = "fH-Secret-4456jj";
const REDIRECTED_KEY: &str = "rQ-Secret-6678kk";

const ALL_SECRETS: [&str; 11] = [
    QUERY_KEY,
    BEARER,
    BASIC_PASSWORD,
    SESSION_PASSWORD,
    SESSION_TOKEN,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    ACCESS_TOKEN,
    ROTATED_REFRESH,
    ECHOED_KEY,
    REDIRECTED_KEY,
];

/// Importers that must complete (their credential is accepted), and their auth sections.
const WORKING: [(&str, &str); 5] = [
    (
        "query",
        r#"{key: {type: api_key, in: query, name: api_token, value: "{{credentials.secret}}"}}"#,
    ),
    (
        "bearer",
        r#"{key: {type: bearer, token: "{{credentials.secret}}"}}"#,
    ),
    (
        "basic",
        r#"{key: {type: basic, username: tributary, password: "{{credentials.secret}}"}}"#,
    ),
    (
        "session",
        r#"
  login:
    type: session
    login:
      method: POST
      path: /login
      body:
        form: {password: "{{credentials.secret}}"}
    token: $.session
    headers: {X-Session: "{{token.session}}"}"#,
    ),
    (
        "oauth",
        r#"
  oauth:
    type: oauth2
    token_url: "{{settings.base}}/oauth/token"
    client_id: cid
    client_secret: "{{credentials.client_secret}}"
    refresh_token: "{{credentials.secret}}""#,
    ),
];

#[derive(Clone)]
struct Home {
    elsewhere: Arc<Mutex<String>>,
}

fn accepted(headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&STANDARD, format!("tributary:{BASIC_PASSWORD}"))
    );
    query.get("api_token").map(String::as_str) == Some(QUERY_KEY)
        || header("authorization") == Some(&format!("Bearer {BEARER}"))
        || header("authorization") == Some(&format!("Bearer {ACCESS_TOKEN}"))
        || header("authorization") == Some(basic.as_str())
        || header("x-session") == Some(SESSION_TOKEN)
}

async fn home_people(headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Response {
    if !accepted(&headers, &query) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let page: u32 = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let data: Vec<Value> = if page <= 2 {
        (0..2)
            .map(|i| json!({"email": format!("p{page}-{i}@example.com")}))
            .collect()
    } else {
        Vec::new()
    };
    axum::Json(json!({ "data": data })).into_response()
}

/// A careless service: its error body repeats the credential it was sent.
async fn echoing_failure(headers: HeaderMap) -> Response {
    let sent = headers
        .get("x-api-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{{\"error\": \"internal error for token {sent}\"}}"),
    )
        .into_response()
}

async fn redirecting(
    State(home): State<Home>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let target = home.elsewhere.lock().unwrap().clone();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter())
        .finish();
    (
        StatusCode::FOUND,
        [("location", format!("{target}/people?{query}"))],
    )
        .into_response()
}

async fn login(Form(form): Form<HashMap<String, String>>) -> Response {
    if form.get("password").map(String::as_str) != Some(SESSION_PASSWORD) {
        return StatusCode::FORBIDDEN.into_response();
    }
    axum::Json(json!({ "session": SESSION_TOKEN })).into_response()
}

async fn token(Form(form): Form<HashMap<String, String>>) -> Response {
    let refresh = form.get("refresh_token").map(String::as_str);
    if form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
        || !matches!(refresh, Some(REFRESH_TOKEN | ROTATED_REFRESH))
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    axum::Json(json!({
        "access_token": ACCESS_TOKEN,
        "refresh_token": ROTATED_REFRESH,
        "token_type": "bearer",
        "expires_in": 3600
    }))
    .into_response()
}

/// Every place in `haystack` where a spelling of a secret appears, as `secret (form)`.
fn hits(haystack: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for secret in ALL_SECRETS {
        for form in forms(secret) {
            if haystack
                .windows(form.len())
                .any(|window| window == form.as_bytes())
            {
                found.push(format!("{secret} (as `{form}`)"));
            }
        }
    }
    found
}

async fn get_text(listen: &str, path: &str) -> Option<String> {
    reqwest::get(format!("http://{listen}{path}"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_status_metric_table_or_another_origin() {
    let elsewhere =
        FakeService::start(Router::new().fallback(|| async {
            axum::Json(json!({"data": [{"email": "intruder@example.com"}]}))
        }))
        .await;
    let home = FakeService::start(
        Router::new()
            .route("/people", get(home_people))
            .route("/failing/people", get(echoing_failure))
            .route("/redirect/people", get(redirecting))
            .route("/login", post(login))
            .route("/oauth/token", post(token))
            .with_state(Home {
                elsewhere: Arc::new(Mutex::new(elsewhere.base.clone())),
            }),
    )
    .await;

    let env = SyncEnv::new();
    let importer = |id: &str, extra: &str| {
        format!(
            "connector: {id}\ncredentials:\n  secret: {}\n{extra}settings:\n  base: \"{}\"\nlist: L-{id}\n",
            env.secret(id, secret_of(id)),
            home.base
        )
    };
    for (id, auth) in WORKING {
        env.connector(id, &paged_connector(auth, "/people"));
        let extra = if id == "oauth" {
            format!("  client_secret: {}\n", env.secret("client", CLIENT_SECRET))
        } else {
            String::new()
        };
        env.importer(id, &importer(id, &extra));
    }
    env.connector(
        "failing",
        &paged_connector(
            r#"{key: {type: api_key, in: header, name: x-api-token, value: "{{credentials.secret}}"}}"#,
            "/failing/people",
        ),
    );
    env.importer("failing", &importer("failing", ""));
    env.connector(
        "redirected",
        &paged_connector(
            r#"{key: {type: api_key, in: query, name: api_token, value: "{{credentials.secret}}"}}"#,
            "/redirect/people",
        ),
    );
    env.importer("redirected", &importer("redirected", ""));

    // The search finds what it looks for.
    assert!(!hits(format!("body: {{\"token\": \"{ECHOED_KEY}\"}}").as_bytes()).is_empty());
    let mut searched = 0usize;
    for level in ["error", "warn", "info", "debug", "trace"] {
        // One store and one listener per level, the same connectors and importers.
        let db = env.dir.path().join(format!("store-{level}.db"));
        let listen = format!("127.0.0.1:{}", free_port());
        let config = env.dir.path().join(format!("tributary-{level}.yaml"));
        std::fs::write(
            &config,
            format!(
                "store: \"sqlite://{}\"\nlisten: {listen}\nlimits: {{retry_budget: PT2S}}\n",
                db.display()
            ),
        )
        .unwrap();
        let stdout_path = env.dir.path().join(format!("daemon-{level}.out"));
        let stderr_path = env.dir.path().join(format!("daemon-{level}.err"));
        let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .arg("--config")
            .arg(&config)
            .arg("daemon")
            .env("RUST_LOG", level)
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Every importer has run once: five completed, two failed.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(text) = get_text(&listen, "/status").await
                && let Ok(status) = serde_json::from_str::<Value>(&text)
                && status["importers"].as_array().is_some_and(|all| {
                    all.len() == 7 && all.iter().all(|i| i["last_outcome"].is_string())
                })
            {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "RUST_LOG={level}: not every importer ran: {}",
                std::fs::read_to_string(&stderr_path).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for (id, _) in WORKING {
            let entry = status["importers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["importer"] == id)
                .unwrap();
            assert_eq!(entry["last_outcome"], "completed", "{level}: {entry}");
        }
        let mut surfaces: Vec<(String, Vec<u8>)> = Vec::new();
        surfaces.push(("/status".into(), status.to_string().into_bytes()));
        let metrics = get_text(&listen, "/metrics").await.unwrap();
        assert!(metrics.contains("tributary_"), "{metrics}");
        surfaces.push(("/metrics".into(), metrics.into_bytes()));
        for args in [&["status"][..], &["status", "--format", "json"]] {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
                .arg("--config")
                .arg(&config)
                .args(args)
                .env("RUST_LOG", level)
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let mut both = out.stdout;
            both.extend(out.stderr);
            surfaces.push((format!("tributary {}", args.join(" ")), both));
        }
        let pid = daemon.id().unwrap() as i32;
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let exit = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit.code(), Some(0), "RUST_LOG={level}: {exit:?}");
        surfaces.push(("stdout".into(), std::fs::read(&stdout_path).unwrap()));
        let stderr = std::fs::read(&stderr_path).unwrap();
        assert!(!stderr.is_empty() || level == "error" || level == "warn");
        surfaces.push(("stderr".into(), stderr));
        // Every table, run history and checkpoints included, and the file's own bytes.
        let dump = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(".dump")
            .stderr(Stdio::inherit())
            .output()
            .expect("sqlite3 (scripts/test installs it)");
        assert!(dump.status.success());
        let dump_text = String::from_utf8_lossy(&dump.stdout).to_string();
        assert!(dump_text.contains("INSERT INTO runs"), "the dump has rows");
        assert!(dump_text.contains("INSERT INTO importer_state"));
        surfaces.push(("every table".into(), dump.stdout));
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let path = format!("{}{suffix}", db.display());
            if let Ok(bytes) = std::fs::read(&path) {
                surfaces.push((format!("file {path}"), bytes));
            }
        }
        for (surface, bytes) in &surfaces {
            searched += bytes.len();
            let found = hits(bytes);
            assert!(
                found.is_empty(),
                "RUST_LOG={level}: {surface} holds {found:?}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    // The secrets were sent where they belong (so the search had something to miss)...
    let home_requests = format!("{:?}", home.requests());
    for secret in [QUERY_KEY, SESSION_PASSWORD, REFRESH_TOKEN, ECHOED_KEY] {
        assert!(home_requests.contains(secret), "{secret} never sent home");
    }
    // ...and nowhere else: the other origin got no request with a secret (none at all).
    for request in elsewhere.requests() {
        let found = hits(format!("{request:?}").as_bytes());
        assert!(found.is_empty(), "{request:?} carried {found:?}");
    }
    assert_eq!(elsewhere.count(), 0, "{:?}", elsewhere.requests());
    println!(
        "secrets: {} secrets x {} spellings searched in {} KiB of output, status, metrics, \
         tables and files at 5 log levels: 0 hits; requests to another origin: 0",
        ALL_SECRETS.len(),
        forms(QUERY_KEY).len(),
        searched / 1024
    );
}

fn secret_of(id: &str) -> &'static str {
    match id {
        "query" => QUERY_KEY,
        "bearer" => BEARER,
        "basic" => BASIC_PASSWORD,
        "session" => SESSION_PASSWORD,
        "oauth" => REFRESH_TOKEN,
        "failing" => ECHOED_KEY,
        "redirected" => REDIRECTED_KEY,
        other => panic!("no secret for {other}"),
    }
}
