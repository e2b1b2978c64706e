//! Finding 9: at `RUST_LOG=debug` the template library logged a rendered credential
//! (handlebars logs every helper's evaluated parameters at debug level). The subscriber now
//! caps every third-party crate at `info` whatever `RUST_LOG` says.

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use base64::Engine as _;
use serde_json::json;

use crate::common::fake::FakeService;
use crate::common::sync_env::SyncEnv;

/// Recognizable, and found nowhere else.
const CREDENTIAL: &str = "hbs-Cred-7Q4xZr9Lw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logging_never_prints_a_rendered_credential() {
    let expected = format!(
        "Token {}",
        base64::engine::general_purpose::STANDARD.encode(CREDENTIAL)
    );
    let router = Router::new().route(
        "/people",
        get(move |headers: HeaderMap| {
            let expected = expected.clone();
            async move {
                let authorized =
                    headers.get("x-auth").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
                let people = if authorized {
                    json!([{"email": "ada@example.com", "name": "Ada Lovelace"}])
                } else {
                    json!([])
                };
                axum::Json(json!({"people": people}))
            }
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    // A helper call on the credential: handlebars logs helper parameters, with values.
    env.connector(
        "helpers",
        r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
auth:
  token:
    type: header
    headers:
      X-Auth: "Token {{base64 credentials.key}}"
contacts:
  request:
    path: /people
    query: {marker: "{{urlencode credentials.key}}"}
  pagination: {type: none}
  records: $.people[*]
  fields:
    email: $.email
    full_name: $.name
sync: {mode: full_refresh}
"#,
    );
    env.importer(
        "h",
        &format!(
            "connector: helpers\ncredentials:\n  key: {}\nsettings:\n  base: \"{}\"\nlist: People\n",
            env.secret("key", CREDENTIAL),
            fake.base
        ),
    );
    for level in ["debug", "trace"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .arg("--config")
            .arg(&env.config)
            .args(["run", "h"])
            .env("RUST_LOG", level)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        assert!(
            stdout.contains("created 1") || stdout.contains("unchanged 1"),
            "{stdout}"
        );
        // Debug logging is on for Tributary itself: the run's own debug event shows.
        assert!(stderr.contains("Run timing."), "RUST_LOG={level}: {stderr}");
        for form in super::secrets::forms(CREDENTIAL) {
            assert!(
                !stdout.contains(&form) && !stderr.contains(&form),
                "RUST_LOG={level}: `{form}` printed:\n{stderr}"
            );
        }
        assert!(
            !stderr.contains("Rendering helper"),
            "RUST_LOG={level}: handlebars debug output printed"
        );
    }
}
