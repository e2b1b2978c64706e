//! OAuth2 tokens per account (issue 16): the client-credentials grant, tokens cached
//! (encrypted) in the store and renewed before they expire, one refresh for two importers
//! of one account, a rotating refresh token shared by them, `invalid_grant` as its own
//! failure, and refresh tokens an older version kept per importer migrated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::json;
use sha2::Digest as _;
use tributary::commands::auth::{Kept, consent};
use tributary::engine::{FailureKind, RunError};
use tributary::store::RunOutcome;

use crate::common::fake::FakeService;
use crate::common::sync_env::SyncEnv;

/// The token endpoint's state.
#[derive(Default)]
struct Tokens {
    /// Lifetime of the access tokens it issues, in seconds.
    expires_in: u64,
    /// The one refresh token it accepts (refresh-token grant).
    refresh: String,
    /// Whether each refresh returns a new refresh token (the old one is then refused).
    rotate: bool,
    /// Refuse every grant (a revoked consent).
    revoked: bool,
    /// Access tokens issued, with when they expire.
    issued: Vec<(String, Instant)>,
    /// Each token request: grant type and refresh token given.
    requests: Vec<(String, String)>,
    /// Answers of `invalid_grant`.
    refused: usize,
    /// Page requests that came with an expired or unknown token.
    unauthorized: usize,
    /// The audience a JWT bearer assertion must name (the token URL).
    audience: String,
    /// The subjects of the assertions verified.
    subjects: Vec<String>,
    /// The PKCE challenge of the last authorization request, and its redirect URI.
    challenge: Option<(String, String)>,
    /// The first access token is refused as expired, with a 403 and a body saying so
    /// (as some services do instead of a 401).
    first_expired_as_403: bool,
}

type Shared = Arc<Mutex<Tokens>>;

async fn token(
    State(tokens): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut t = tokens.lock().unwrap();
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    let given = form.get("refresh_token").cloned().unwrap_or_default();
    t.requests.push((grant.clone(), given.clone()));
    let client_ok = form.get("client_id").map(String::as_str) == Some("app-1")
        && form.get("client_secret").map(String::as_str) == Some("app-secret-1");
    let grant_ok = match grant.as_str() {
        "authorization_code" => {
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()));
            let expected = t.challenge.clone();
            client_ok
                && form.get("code").map(String::as_str) == Some("code-1")
                && expected.is_some_and(|(c, redirect)| {
                    c == challenge && form.get("redirect_uri") == Some(&redirect)
                })
        }
        "client_credentials" => client_ok,
        "refresh_token" => client_ok && given == t.refresh,
        JWT_BEARER => {
            let subject = verify(
                form.get("assertion").map(String::as_str).unwrap_or(""),
                &t.audience,
            );
            let ok = subject.is_some() && !form.contains_key("client_secret");
            t.subjects.extend(subject);
            ok
        }
        _ => false,
    };
    if t.revoked || !grant_ok {
        t.refused += 1;
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})),
        )
            .into_response();
    }
    let n = t.issued.len() + 1;
    let access = format!("at-{n}");
    let expires = Instant::now() + Duration::from_secs(t.expires_in);
    t.issued.push((access.clone(), expires));
    let mut body =
        json!({"access_token": access, "token_type": "Bearer", "expires_in": t.expires_in});
    if grant == "authorization_code" {
        body["refresh_token"] = json!(t.refresh);
    }
    if grant == "refresh_token" && t.rotate {
        t.refresh = format!("rt-{n}");
        body["refresh_token"] = json!(t.refresh);
    }
    axum::Json(body).into_response()
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The consent page: a person who consents is sent back to the redirect URI with a code.
async fn authorize(
    State(tokens): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let ok = q.get("response_type").map(String::as_str) == Some("code")
        && q.get("client_id").map(String::as_str) == Some("app-1")
        && q.get("code_challenge_method").map(String::as_str) == Some("S256");
    let (Some(challenge), Some(redirect), Some(state)) = (
        q.get("code_challenge"),
        q.get("redirect_uri"),
        q.get("state"),
    ) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if !ok {
        return StatusCode::BAD_REQUEST.into_response();
    }
    tokens.lock().unwrap().challenge = Some((challenge.clone(), redirect.clone()));
    (
        StatusCode::FOUND,
        [("location", format!("{redirect}?code=code-1&state={state}"))],
    )
        .into_response()
}

/// Verifies an assertion as Google's token endpoint does: signed RS256 by the service
/// account's key, issued by it, for this token URL, with the scope asked for, living at
/// most an hour. Returns its subject.
fn verify(assertion: &str, audience: &str) -> Option<String> {
    let public = std::fs::read(fixture("test-only-public.pem")).unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["reader@project.iam.example"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation)
        .ok()?
        .claims;
    let life = claims["exp"].as_i64()? - claims["iat"].as_i64()?;
    (claims["scope"] == "https://www.googleapis.com/auth/contacts.readonly" && life <= 3600)
        .then(|| claims["sub"].as_str().unwrap_or_default().to_string())
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

async fn items(
    State(tokens): State<Shared>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    {
        let mut t = tokens.lock().unwrap();
        let valid = t
            .issued
            .iter()
            .any(|(access, expires)| *access == bearer && Instant::now() < *expires);
        if t.first_expired_as_403 && bearer == "at-1" {
            t.unauthorized += 1;
            return (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"code": "TOKEN_EXPIRED"})),
            )
                .into_response();
        }
        if !valid {
            t.unauthorized += 1;
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let delay: u64 = q.get("delay").and_then(|d| d.parse().ok()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let data: Vec<_> = if page <= 4 {
        vec![json!({"email": format!("{tenant}-{page}@example.com")})]
    } else {
        Vec::new()
    };
    axum::Json(json!({ "data": data })).into_response()
}

async fn service(tokens: Tokens) -> (FakeService, Shared) {
    let shared: Shared = Arc::new(Mutex::new(tokens));
    let state = shared.clone();
    let fake = FakeService::start_with(move |base| {
        state.lock().unwrap().audience = format!("{base}/token");
        Router::new()
            .route("/token", post(token))
            .route("/authorize", get(authorize))
            .route("/{tenant}/items", get(items))
            .with_state(state)
    })
    .await;
    (fake, shared)
}

fn connector(grant: &str) -> String {
    let extra = if grant == "refresh_token" {
        "\n    refresh_token: \"{{credentials.refresh_token}}\"\n    rotates_refresh_token: true"
    } else {
        ""
    };
    format!(
        r#"
spec_version: 1
base_url: "{{{{settings.base}}}}"
settings:
  base: {{}}
  tenant: {{}}
  delay: {{required: false, default: "0"}}
auth:
  oauth:
    type: oauth2
    grant: {grant}
    token_url: "{{{{settings.base}}}}/token"
    client_id: "{{{{credentials.client_id}}}}"
    client_secret: "{{{{credentials.client_secret}}}}"{extra}
contacts:
  request:
    path: "/{{{{settings.tenant}}}}/items"
    query: {{page: "{{{{page}}}}", delay: "{{{{settings.delay}}}}"}}
  pagination: {{type: page_number, stop: [empty_page]}}
  records: $.data[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
"#
    )
}

/// An importer of `tenant`; `settings` adds lines under `settings:`.
fn importer(env: &SyncEnv, base: &str, tenant: &str, settings: &str, refresh: bool) -> String {
    let refresh = if refresh {
        format!("  refresh_token: {}\n", env.secret("refresh", "rt-0"))
    } else {
        String::new()
    };
    format!(
        "connector: crm\ncredentials:\n  client_id: {{literal: app-1}}\n  client_secret: {}\n{refresh}settings:\n  base: \"{base}\"\n  tenant: {tenant}\n{settings}list: {tenant}\npage_budget: 0\n",
        env.secret("client-secret", "app-secret-1"),
    )
}

fn grant_env(fake: &FakeService, grant: &str) -> SyncEnv {
    let env = SyncEnv::new();
    env.connector("crm", &connector(grant));
    let refresh = grant == "refresh_token";
    env.importer("a", &importer(&env, &fake.base, "a", "", refresh));
    env.importer("b", &importer(&env, &fake.base, "b", "", refresh));
    env
}

/// Client credentials: two importers of one account started together ask for one token;
/// a later run uses it from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_one_token_for_two_importers_and_cached() {
    let (fake, tokens) = service(Tokens {
        expires_in: 3600,
        ..Tokens::default()
    })
    .await;
    let env = grant_env(&fake, "client_credentials");
    let (a, b) = tokio::join!(env.run("a"), env.run("b"));
    assert_eq!(a.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(b.unwrap().outcome, RunOutcome::Completed);
    let again = env.run("a").await.unwrap();
    assert_eq!(again.outcome, RunOutcome::Completed);
    {
        let t = tokens.lock().unwrap();
        assert_eq!(
            t.requests,
            vec![("client_credentials".to_string(), String::new())],
            "one token request for the account"
        );
        assert_eq!(t.unauthorized, 0);
    }
    assert_eq!(env.contacts("a").await.len(), 4);
    assert_eq!(env.contacts("b").await.len(), 4);
}

/// A token is renewed before it expires: a run longer than a token's life never meets a
/// 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_renewed_before_it_expires() {
    let (fake, tokens) = service(Tokens {
        expires_in: 2,
        ..Tokens::default()
    })
    .await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("client_credentials"));
    // Four pages and an empty one, 450 ms each: 2.25 s, longer than the 2 s token.
    env.importer(
        "slow",
        &importer(&env, &fake.base, "slow", "  delay: \"450\"\n", false),
    );
    let summary = env.run("slow").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let t = tokens.lock().unwrap();
    assert_eq!(t.unauthorized, 0, "never sent an expired token");
    assert!(
        t.requests.len() >= 2,
        "renewed during the run: {:?}",
        t.requests
    );
}

/// A refresh token the service rotates is the account's: whichever importer refreshes
/// next uses the one the last refresh returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_importers_share_a_rotating_refresh_token() {
    let (fake, tokens) = service(Tokens {
        expires_in: 1,
        refresh: "rt-0".into(),
        rotate: true,
        ..Tokens::default()
    })
    .await;
    let env = grant_env(&fake, "refresh_token");
    for importer in ["a", "b", "a", "b"] {
        let summary = env.run(importer).await.unwrap();
        assert_eq!(summary.outcome, RunOutcome::Completed);
        // Past the half-life of the one-second token: the next run refreshes.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let t = tokens.lock().unwrap();
    assert_eq!(
        t.refused, 0,
        "never a refresh token the service had replaced"
    );
    let given: Vec<&str> = t.requests.iter().map(|(_, r)| r.as_str()).collect();
    assert!(given.len() >= 4, "{given:?}");
    assert_eq!(&given[..4], ["rt-0", "rt-1", "rt-2", "rt-3"]);
}

/// A refused grant fails the run as a credentials failure naming the OAuth error, and
/// never shows a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_is_its_own_failure() {
    let (fake, _) = service(Tokens {
        expires_in: 3600,
        refresh: "rt-0".into(),
        revoked: true,
        ..Tokens::default()
    })
    .await;
    let env = grant_env(&fake, "refresh_token");
    let error = env.run("a").await.unwrap_err();
    let RunError::Failed { kind, message, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(*kind, FailureKind::Credentials);
    assert!(
        message.contains("refused the grant (invalid_grant)"),
        "{message}"
    );
    assert!(
        !message.contains("app-secret-1") && !message.contains("rt-0"),
        "{message}"
    );
}

/// A refresh token an older version kept per importer (`oauth2:<importer>:refresh_token`)
/// is used, then kept for the account and the old entry removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_kept_per_importer_is_migrated() {
    let (fake, tokens) = service(Tokens {
        expires_in: 3600,
        refresh: "rt-kept".into(),
        rotate: true,
        ..Tokens::default()
    })
    .await;
    let env = grant_env(&fake, "refresh_token");
    let store = env.store().await;
    let from = blake3::hash(b"rt-0").to_hex().to_string();
    store
        .save_token(
            "oauth2:a:refresh_token",
            &json!({"from": from, "refresh_token": "rt-kept"}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(env.run("a").await.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(
        tokens.lock().unwrap().requests,
        vec![("refresh_token".to_string(), "rt-kept".to_string())]
    );
    assert_eq!(
        store.load_token("oauth2:a:refresh_token").await.unwrap(),
        None
    );
    // The account's other importer uses the same token, without a refresh.
    assert_eq!(env.run("b").await.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(tokens.lock().unwrap().requests.len(), 1);
}

const JWT_CONNECTOR: &str = r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
  tenant: {}
  user: {}
auth:
  service_account:
    type: oauth2
    grant: jwt_bearer
    token_url: "{{settings.base}}/token"
    client_id: "{{credentials.client_email}}"
    private_key: "{{credentials.private_key}}"
    subject: "{{settings.user}}"
    scopes: [https://www.googleapis.com/auth/contacts.readonly]
contacts:
  request:
    path: "/{{settings.tenant}}/items"
    query: {page: "{{page}}"}
  pagination: {type: page_number, stop: [empty_page]}
  records: $.data[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
"#;

/// The JWT bearer grant (a Google service account acting for a Workspace user): the
/// assertion is signed with the account's key and verified by the fake; two importers
/// acting for one user share one token, another user is another account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_assertions_are_signed_and_tokens_shared_per_subject() {
    let (fake, tokens) = service(Tokens {
        expires_in: 3600,
        ..Tokens::default()
    })
    .await;
    let env = SyncEnv::new();
    env.connector("crm", JWT_CONNECTOR);
    for (id, user) in [
        ("a", "ada@example.com"),
        ("b", "ada@example.com"),
        ("c", "bob@example.com"),
    ] {
        env.importer(
            id,
            &format!(
                "connector: crm\ncredentials:\n  client_email: {{literal: reader@project.iam.example}}\n  private_key: {{file: \"{}\"}}\nsettings:\n  base: \"{}\"\n  tenant: {id}\n  user: {user}\nlist: {id}\npage_budget: 0\n",
                fixture("test-only-private.pem").display(),
                fake.base
            ),
        );
    }
    let (a, b) = tokio::join!(env.run("a"), env.run("b"));
    assert_eq!(a.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(b.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(env.run("c").await.unwrap().outcome, RunOutcome::Completed);
    let t = tokens.lock().unwrap();
    assert_eq!(t.refused, 0, "every assertion verified");
    assert_eq!(t.subjects, vec!["ada@example.com", "bob@example.com"]);
    assert_eq!(t.unauthorized, 0);
}

/// `tributary auth`: the consent URL carries a PKCE challenge; the browser, sent back to
/// the loopback listener, hands over the code; the code and its verifier buy the refresh
/// token, written to the file the importer's reference names; the next run uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_consents_with_pkce_on_a_loopback_redirect() {
    let (fake, tokens) = service(Tokens {
        expires_in: 3600,
        refresh: "rt-consented".into(),
        ..Tokens::default()
    })
    .await;
    let env = SyncEnv::new();
    env.connector(
        "crm",
        &connector("refresh_token").replace(
            "    rotates_refresh_token: true",
            "    authorize_url: \"{{settings.base}}/authorize\"",
        ),
    );
    let file = env.dir.path().join("consented.secret");
    env.importer(
        "a",
        &format!(
            "connector: crm\ncredentials:\n  client_id: {{literal: app-1}}\n  client_secret: {}\n  refresh_token: {{file: \"{}\"}}\nsettings:\n  base: \"{}\"\n  tenant: a\nlist: a\npage_budget: 0\n",
            env.secret("client-secret", "app-secret-1"),
            file.display(),
            fake.base
        ),
    );
    let plan = env.plan();
    let importer = plan.importers["a"].clone();
    let (urls, mut opened) = tokio::sync::mpsc::unbounded_channel::<String>();
    let show = move |url: &str| {
        urls.send(url.to_string()).unwrap();
    };
    let browser = async {
        let url = opened.recv().await.unwrap();
        assert!(url.contains("code_challenge_method=S256"), "{url}");
        assert!(
            url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
            "{url}"
        );
        reqwest::get(&url).await.unwrap().text().await.unwrap()
    };
    let (kept, page) = tokio::join!(
        consent(
            importer,
            env.store().await,
            plan.daemon.limits,
            "127.0.0.1:0",
            None,
            &show
        ),
        browser
    );
    assert_eq!(kept.unwrap(), Kept::File(file.display().to_string()));
    assert!(page.contains("Tributary has the authorization"), "{page}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "rt-consented");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    assert_eq!(env.run("a").await.unwrap().outcome, RunOutcome::Completed);
    let t = tokens.lock().unwrap();
    let grants: Vec<(&str, &str)> = t
        .requests
        .iter()
        .map(|(g, r)| (g.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        grants,
        vec![
            ("authorization_code", ""),
            ("refresh_token", "rt-consented")
        ]
    );
    assert_eq!(t.refused, 0);
}

/// A service saying "token expired" with a 403 and a body: a `refresh_auth` error rule
/// renews the account's token (not taking the refused one from the store again) and the
/// request goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_auth_rule_renews_the_token() {
    let (fake, tokens) = service(Tokens {
        expires_in: 3600,
        first_expired_as_403: true,
        ..Tokens::default()
    })
    .await;
    let env = SyncEnv::new();
    env.connector(
        "crm",
        &connector("client_credentials").replace(
            "contacts:",
            "error_rules:\n  - {status: 403, path: $.code, equals: TOKEN_EXPIRED, action: refresh_auth}\ncontacts:",
        ),
    );
    env.importer("a", &importer(&env, &fake.base, "a", "", false));
    let summary = env.run("a").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(env.contacts("a").await.len(), 4);
    let t = tokens.lock().unwrap();
    assert_eq!(t.requests.len(), 2, "one renewal after the refusal");
    assert_eq!(t.unauthorized, 1);
}
