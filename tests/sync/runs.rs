//! Runs over time: first run then an incremental one, an empty account, a single page,
//! page budgets that stop and resume, dry runs, and a run on PostgreSQL.

use chrono::Duration;
use tributary::engine::{PassKind, RunOptions};
use tributary::store::RunOutcome;

use super::assert_people;
use super::fakes::{self, TOKEN};
use crate::common::fake::{FakeService, Person, db, epoch, people};
use crate::common::sync_env::{SyncEnv, emails, field};

fn pipedrive_importer(env: &SyncEnv, base: &str, extra: &str) -> String {
    format!(
        "connector: pipedrive\ncredentials:\n  api_token: {}\nsettings:\n  base: \"{base}\"\nlist: People\n{extra}",
        env.secret("pd", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_then_an_incremental_run() {
    let shared = db(people(5));
    let fake = FakeService::start(fakes::pipedrive(shared.clone())).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    env.importer(
        "pd",
        &pipedrive_importer(&env, &fake.base, "page_size: 2\npage_budget: 0\n"),
    );

    let first = env.run("pd").await.unwrap();
    assert_eq!(first.pass, PassKind::First);
    // On a first run `since` and `cursor` render empty: the parameters are left out, not
    // sent empty; later pages carry the cursor. Parameters go in the order written.
    let keys = |r: &crate::common::fake::Recorded| -> Vec<String> {
        r.query.iter().map(|(k, _)| k.clone()).collect()
    };
    let first_requests = fake.requests();
    assert_eq!(first_requests.len(), 3);
    assert_eq!(
        keys(&first_requests[0]),
        vec!["limit", "sort_by", "sort_direction"]
    );
    assert_eq!(
        keys(&first_requests[1]),
        vec!["limit", "cursor", "sort_by", "sort_direction"]
    );
    assert_eq!(first_requests[1].q("cursor"), Some("cur-2"));
    assert_eq!(first.outcome, RunOutcome::Completed);
    assert_eq!(first.counts.created, 5);
    let now_at_service = shared.lock().unwrap().clone();
    assert_people(&env, "People", &now_at_service).await;
    let state = env.store().await.importer_state("pd").await.unwrap();
    assert_eq!(
        state.checkpoint.watermark,
        Some(epoch() + Duration::seconds(5))
    );

    // At the service: person 2 renamed, person 6 added, both updated later.
    {
        let mut people = shared.lock().unwrap();
        people[1].first = "Renamed".into();
        people[1].updated = epoch() + Duration::seconds(100);
        people.push(Person {
            id: 6,
            email: Some("person6@example.com".into()),
            first: "First6".into(),
            last: "Last6".into(),
            updated: epoch() + Duration::seconds(101),
            tier: "gold".into(),
            tags: vec![],
            deleted: false,
        });
    }
    fake.clear();
    let second = env.run("pd").await.unwrap();
    assert_eq!(second.pass, PassKind::Incremental);
    let requests = fake.requests();
    assert_eq!(requests[0].q("updated_since"), Some("2024-05-01T10:00:05Z"));
    // The service returns person 5 (at the watermark, inclusive), 2 and 6.
    assert_eq!(second.counts.fetched, 3);
    assert_eq!(
        (
            second.counts.created,
            second.counts.updated,
            second.counts.unchanged
        ),
        (1, 1, 1)
    );
    let now_at_service = shared.lock().unwrap().clone();
    assert_people(&env, "People", &now_at_service).await;
    let state = env.store().await.importer_state("pd").await.unwrap();
    assert_eq!(
        state.checkpoint.watermark,
        Some(epoch() + Duration::seconds(101))
    );
    assert_eq!(state.checkpoint.position, None);
    let runs = env.store().await.runs("pd", 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].counts.created, 1);
    assert_eq!(runs[1].counts.created, 5);
    assert!(
        runs.iter()
            .all(|r| r.outcome == Some(RunOutcome::Completed))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_account_completes_with_nothing() {
    let fake = FakeService::start(fakes::pipedrive(db(Vec::new()))).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    env.importer("pd", &pipedrive_importer(&env, &fake.base, ""));
    let summary = env.run("pd").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!((summary.counts.pages, summary.counts.fetched), (1, 0));
    assert_eq!(fake.count(), 1);
    assert!(env.all_contacts().await.is_empty());
    let state = env.store().await.importer_state("pd").await.unwrap();
    assert_eq!(state.checkpoint.position, None);
    assert_eq!(state.checkpoint.watermark, None);
    assert!(state.checkpoint.last_full_refresh.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_page() {
    let people = people(3);
    let fake = FakeService::start(fakes::pipedrive(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    env.importer("pd", &pipedrive_importer(&env, &fake.base, ""));
    let summary = env.run("pd").await.unwrap();
    assert_eq!((summary.counts.pages, summary.counts.created), (1, 3));
    assert_eq!(fake.count(), 1);
    assert_eq!(
        fake.requests()[0].q("limit"),
        Some("100"),
        "the connector's default"
    );
    assert_people(&env, "People", &people).await;
}

/// The example the issue names: 3,500 contacts, 1,000 per page, a budget of one page per
/// run: four runs import everyone, each continuing where the last stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_of_one_page_imports_3500_in_four_runs() {
    let people = people(3500);
    let fake = FakeService::start(fakes::mailchimp(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector("mailchimp", fakes::MAILCHIMP_CONNECTOR);
    env.importer(
        "mc",
        &format!(
            "connector: mailchimp\ncredentials:\n  api_token: {}\nsettings:\n  base: \"{}\"\nlist: People\npage_size: 1000\npage_budget: 1\n",
            env.secret("mc", TOKEN),
            fake.base
        ),
    );
    let mut stored_after = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let summary = env.run("mc").await.unwrap();
        outcomes.push(summary.outcome);
        stored_after.push(env.contacts("People").await.len());
    }
    assert_eq!(
        outcomes,
        vec![
            RunOutcome::Partial,
            RunOutcome::Partial,
            RunOutcome::Partial,
            RunOutcome::Completed
        ]
    );
    assert_eq!(stored_after, vec![1000, 2000, 3000, 3500]);
    let offsets: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.q("offset").unwrap_or("").to_string())
        .collect();
    assert_eq!(
        offsets,
        vec!["0", "1000", "2000", "3000"],
        "no page read twice"
    );
    let stored = env.contacts("People").await;
    let mut want: Vec<String> = people.iter().map(|p| p.email.clone().unwrap()).collect();
    want.sort();
    assert_eq!(emails(&stored), want);
    let p1234 = stored
        .iter()
        .find(|c| c.email == "person1234@example.com")
        .unwrap();
    assert_eq!(p1234.last_name.as_deref(), Some("Last1234"));
    assert_eq!(field(p1234, "%MAILCHIMP_TIER%"), Some("gold"));
    let state = env.store().await.importer_state("mc").await.unwrap();
    assert_eq!(state.checkpoint.position, None);
    assert_eq!(state.checkpoint.watermark, Some(people[3499].updated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_nothing() {
    let people = people(5);
    let fake = FakeService::start(fakes::pipedrive(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    env.importer(
        "pd",
        &pipedrive_importer(&env, &fake.base, "page_size: 2\n"),
    );
    let summary = env
        .run_with(
            "pd",
            RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(fake.count(), 1, "a dry run reads the first page");
    let dry = summary.dry_run.expect("dry-run report");
    let mapped: Vec<&str> = dry.contacts.iter().map(|c| c.email.as_str()).collect();
    assert_eq!(mapped, vec!["person1@example.com", "person2@example.com"]);
    assert_eq!(dry.contacts[0].first_name.as_deref(), Some("First1"));
    assert_eq!(
        dry.fields[dry.contacts[0].custom_values[0].field].tag,
        "%PIPEDRIVE_TIER%"
    );
    assert_eq!(dry.requests.len(), 1);
    assert!(
        dry.requests[0].contains("x-api-token: ****"),
        "{}",
        dry.requests[0]
    );
    assert!(!dry.requests[0].contains(TOKEN));
    assert_eq!(summary.run_id, None);

    let store = env.store().await;
    assert!(env.all_contacts().await.is_empty());
    let state = store.importer_state("pd").await.unwrap();
    assert_eq!(state.checkpoint, Default::default(), "no checkpoint");
    assert!(
        store.runs("pd", 5).await.unwrap().is_empty(),
        "no run history"
    );
    assert!(
        store.fields().await.unwrap().is_empty(),
        "no custom field created"
    );
}

/// A fresh PostgreSQL database on the shared test server. Fails (never skips) when the
/// server cannot be reached.
async fn fresh_pg_database() -> String {
    use sqlx::Connection as _;
    let base = std::env::var("TRIBUTARY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is needed: {e}"));
    let name = format!("engine_{}_{}", std::process::id(), rand::random::<u32>());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_and_incremental_runs_on_postgresql() {
    let shared = db(people(5));
    // A duplicate email inside one page: PostgreSQL's upsert must not see it twice.
    shared.lock().unwrap()[1].email = Some("PERSON1@example.com".into());
    let fake = FakeService::start(fakes::pipedrive(shared.clone())).await;
    let env = SyncEnv::with_store(tempfile::tempdir().unwrap(), fresh_pg_database().await);
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    env.importer(
        "pd",
        &pipedrive_importer(&env, &fake.base, "page_size: 2\npage_budget: 0\n"),
    );
    let first = env.run("pd").await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Completed);
    let stored = env.contacts("People").await;
    assert_eq!(
        emails(&stored),
        vec![
            "person1@example.com",
            "person3@example.com",
            "person4@example.com",
            "person5@example.com"
        ]
    );
    assert_eq!(
        stored[0].first_name.as_deref(),
        Some("First2"),
        "last record wins"
    );
    shared.lock().unwrap()[4].last = "Changed".into();
    shared.lock().unwrap()[4].updated = epoch() + Duration::seconds(50);
    let second = env.run("pd").await.unwrap();
    assert_eq!(second.pass, PassKind::Incremental);
    let stored = env.contacts("People").await;
    let five = stored
        .iter()
        .find(|c| c.email == "person5@example.com")
        .unwrap();
    assert_eq!(five.last_name.as_deref(), Some("Changed"));
    assert_eq!(field(five, "%PIPEDRIVE_TIER%"), Some("silver"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_and_client_side_filters_apply() {
    let people = people(6);
    let fake = FakeService::start(fakes::pipedrive(db(people.clone()))).await;
    let env = SyncEnv::new();
    let connector = fakes::PIPEDRIVE_CONNECTOR.replace(
        "      sort_by: update_time\n",
        "      sort_by: update_time\n      owner_id: \"{{filters.owner}}\"\n      org_id: \"{{filters.org}}\"\n",
    ) + r#"
filters:
  owner: {type: integer, apply: {at: server}}
  org: {type: integer, apply: {at: server}}
  tier: {type: string, apply: {at: client, field: Tier, op: equals}}
  label: {type: string, apply: {at: client, field: Labels, op: contains}}
"#;
    env.connector("pipedrive", &connector);
    env.importer(
        "pd",
        &pipedrive_importer(
            &env,
            &fake.base,
            "filters:\n  owner: 11\n  tier: GOLD\n  label: t0\n",
        ),
    );
    let summary = env.run("pd").await.unwrap();
    let request = &fake.requests()[0];
    assert_eq!(
        request.q("owner_id"),
        Some("11"),
        "server-side filter in the request"
    );
    assert_eq!(
        request.q("org_id"),
        None,
        "a filter the importer does not set is omitted"
    );
    // Gold are the even ids; label t0 is ids divisible by 3: only person 6 passes both.
    assert_eq!(
        emails(&env.contacts("People").await),
        vec!["person6@example.com"]
    );
    assert_eq!(summary.counts.skipped, 5);
    assert_eq!(summary.counts.fetched, 6);
}

/// A credential reference that does not resolve is that importer's run error (recorded in
/// the history, naming the reference), not a configuration error: the tree still loads
/// and the other importers still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_that_does_not_resolve_fails_only_that_run() {
    let fake = FakeService::start(fakes::pipedrive(db(people(2)))).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    let missing = env.dir.path().join("gone.secret");
    env.importer(
        "broken",
        &format!(
            "connector: pipedrive\ncredentials:\n  api_token: {{file: \"{}\"}}\nsettings:\n  base: \"{}\"\nlist: People\n",
            missing.display(),
            fake.base
        ),
    );
    env.importer("pd", &pipedrive_importer(&env, &fake.base, ""));
    let error = env.run("broken").await.unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, tributary::engine::RunError::Failed { .. }),
        "{error:?}"
    );
    assert!(text.contains("importer `broken`"), "{text}");
    assert!(text.contains("api_token"), "{text}");
    assert!(text.contains("gone.secret"), "{text}");
    assert_eq!(
        fake.count(),
        0,
        "nothing is requested without the credential"
    );
    let runs = env.store().await.runs("broken", 5).await.unwrap();
    assert_eq!(runs[0].outcome, Some(RunOutcome::Failed));

    let other = env.run("pd").await.unwrap();
    assert_eq!(other.outcome, RunOutcome::Completed);
    assert_eq!(
        emails(&env.contacts("People").await),
        vec!["person1@example.com", "person2@example.com"]
    );
}

/// A dry run's request dump masks a key sent in the query string (raw or
/// percent-encoded) and in a JSON body, and any authorization header whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_request_dump_masks_keys_in_query_body_and_headers() {
    use axum::routing::post;
    let key = "k3y/with+special=chars";
    let router = axum::Router::new().route(
        "/search",
        post(|| async { axum::Json(serde_json::json!({"results": [{"email": "a@example.com"}]})) }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector(
        "keyed",
        r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
auth:
  key:
    type: api_key
    in: query
    name: api_key
    value: "{{credentials.key}}"
contacts:
  request:
    method: POST
    path: /search
    headers: {X-Echo: "{{credentials.key}}", Authorization: "Bearer {{credentials.key}}"}
    body:
      json: {auth: {key: "{{credentials.key}}"}, limit: "{{page_size}}"}
  pagination: {type: none}
  records: $.results[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
"#,
    );
    env.importer(
        "ky",
        &format!(
            "connector: keyed\ncredentials:\n  key: {}\nsettings:\n  base: \"{}\"\nlist: People\n",
            env.secret("key", key),
            fake.base
        ),
    );
    let summary = env
        .run_with(
            "ky",
            RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    // The service did get the key (the dump is only what a person sees).
    let sent = &fake.requests()[0];
    assert_eq!(sent.q("api_key"), Some(key));
    assert!(sent.body.contains(key), "{}", sent.body);
    let dry = summary.dry_run.unwrap();
    let dump = &dry.requests[0];
    let encoded: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>();
    assert!(!dump.contains(key), "{dump}");
    assert!(!dump.contains(&encoded), "{dump}");
    assert!(!dump.contains("k3y"), "{dump}");
    assert!(dump.contains("api_key=****"), "{dump}");
    assert!(
        dump.contains("x-echo: ****") || dump.contains("X-Echo: ****"),
        "{dump}"
    );
    assert!(dump.contains("\"key\":\"****\""), "{dump}");
    assert_eq!(dry.contacts.len(), 1);
    assert!(env.all_contacts().await.is_empty());
}

/// The client-side operators not covered above, on standard fields too: `one_of` on the
/// full name (which the connector maps as one field, split before storing), `after` and
/// `before` on the update time, `exists` on a custom value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_filters_one_of_before_after_exists_and_full_name() {
    let mut people = people(7);
    people[4].tier = String::new();
    let fake = FakeService::start(fakes::pipedrive(db(people))).await;
    let env = SyncEnv::new();
    let connector = fakes::PIPEDRIVE_CONNECTOR.to_string()
        + r#"
filters:
  who: {type: string_list, apply: {at: client, field: full_name, op: one_of}}
  changed_after: {type: datetime, apply: {at: client, field: updated_at, op: after}}
  changed_before: {type: datetime, apply: {at: client, field: updated_at, op: before}}
  has_tier: {type: boolean, apply: {at: client, field: Tier, op: exists}}
"#;
    env.connector("pipedrive", &connector);
    env.importer(
        "pd",
        &pipedrive_importer(
            &env,
            &fake.base,
            "filters:\n  who: [\"First2 Last2\", \"first3 last3\", \"First5 Last5\", \"First6 Last6\", \"First7 Last7\"]\n  changed_after: \"2024-05-01T10:00:02Z\"\n  changed_before: \"2024-05-01T10:00:07Z\"\n  has_tier: true\n",
        ),
    );
    let summary = env.run("pd").await.unwrap();
    // one_of: 2, 3, 5, 6, 7; after 10:00:02: 3..7; before 10:00:07: 1..6; tier: not 5.
    assert_eq!(
        emails(&env.contacts("People").await),
        vec!["person3@example.com", "person6@example.com"]
    );
    assert_eq!((summary.counts.fetched, summary.counts.skipped), (7, 5));
}

/// A request body given as one template that renders the whole JSON text (a query
/// language, Zoho COQL here): sent as JSON, `since` appears inside the query string on
/// the run after the first, and offsets page through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_body_template_carries_since_inside_a_query_language() {
    use axum::routing::post;
    let router = axum::Router::new().route(
        "/coql",
        post(
            |axum::Json(body): axum::Json<serde_json::Value>| async move {
                let query = body["select_query"].as_str().unwrap_or("").to_string();
                let data = if query.ends_with("limit 0, 2") {
                    serde_json::json!([
                        {"Email": "a@example.com", "Modified_Time": "2024-05-01T10:00:00+02:00"},
                        {"Email": "b@example.com", "Modified_Time": "2024-05-01T11:00:00+02:00"}
                    ])
                } else {
                    serde_json::json!([
                        {"Email": "c@example.com", "Modified_Time": "2024-05-01T12:00:00+02:00"}
                    ])
                };
                axum::Json(serde_json::json!({"data": data}))
            },
        ),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector(
        "coql",
        r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
contacts:
  request:
    method: POST
    path: /coql
    body:
      template: '{"select_query": "select Email from Contacts where Modified_Time >= ''{{default since "2000-01-01T00:00:00+00:00"}}'' limit {{offset}}, {{page_size}}"}'
  pagination:
    type: offset
    stop: [short_page]
  records: $.data[*]
  fields:
    email: $.Email
    updated_at: {path: $.Modified_Time}
sync:
  mode: incremental
  since_format: "%Y-%m-%dT%H:%M:%S+00:00"
  lookback: PT0S
"#,
    );
    env.importer(
        "zc",
        &format!(
            "connector: coql\nsettings:\n  base: \"{}\"\nlist: People\npage_size: 2\n",
            fake.base
        ),
    );
    env.run("zc").await.unwrap();
    let requests = fake.requests();
    let queries: Vec<String> = requests
        .iter()
        .map(|r| {
            assert_eq!(r.header("content-type"), Some("application/json"));
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            body["select_query"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        queries,
        vec![
            "select Email from Contacts where Modified_Time >= '2000-01-01T00:00:00+00:00' limit 0, 2",
            "select Email from Contacts where Modified_Time >= '2000-01-01T00:00:00+00:00' limit 2, 2",
        ]
    );
    assert_eq!(
        emails(&env.contacts("People").await),
        vec!["a@example.com", "b@example.com", "c@example.com"]
    );

    fake.clear();
    env.run("zc").await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&fake.requests()[0].body).unwrap();
    assert_eq!(
        body["select_query"],
        "select Email from Contacts where Modified_Time >= '2024-05-01T10:00:00+00:00' limit 0, 2",
        "the watermark (12:00 at +02:00) in the service's format"
    );
}

/// A connector offering two schemes (a bearer token or a plain header template): each
/// importer's chosen scheme is the one sent, and a dry run masks the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_importer_picks_one_of_several_auth_schemes() {
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    let router = axum::Router::new().route(
        "/people",
        axum::routing::get(|headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let email = match auth {
                "Bearer priv-token-1" => "bearer@example.com",
                "Zoho-oauthtoken legacy-token-2" => "header@example.com",
                _ => return axum::http::StatusCode::UNAUTHORIZED.into_response(),
            };
            axum::Json(serde_json::json!([{"email": email}])).into_response()
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector(
        "multi",
        r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
auth:
  private_app: {type: bearer, token: "{{credentials.token}}"}
  legacy:
    type: header
    headers: {Authorization: "Zoho-oauthtoken {{credentials.token}}"}
contacts:
  request: {path: /people}
  pagination: {type: none}
  records: $[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
"#,
    );
    for (id, scheme, token) in [
        ("b", "private_app", "priv-token-1"),
        ("h", "legacy", "legacy-token-2"),
    ] {
        env.importer(
            id,
            &format!(
                "connector: multi\nauth: {scheme}\ncredentials:\n  token: {}\nsettings:\n  base: \"{}\"\nlist: {id}\n",
                env.secret(id, token),
                fake.base
            ),
        );
    }
    env.run("b").await.unwrap();
    env.run("h").await.unwrap();
    assert_eq!(emails(&env.contacts("b").await), vec!["bearer@example.com"]);
    assert_eq!(emails(&env.contacts("h").await), vec!["header@example.com"]);
    let dry = env
        .run_with(
            "h",
            RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap()
        .dry_run
        .unwrap();
    assert!(
        !dry.requests[0].contains("legacy-token-2"),
        "{}",
        dry.requests[0]
    );
    assert!(dry.requests[0].contains("****"), "{}", dry.requests[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_full_refresh_rereads_everyone_from_the_first_page() {
    let shared = db(people(5));
    let fake = FakeService::start(fakes::pipedrive(shared.clone())).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    env.importer(
        "pd",
        &pipedrive_importer(&env, &fake.base, "page_size: 2\npage_budget: 1\n"),
    );

    // A first pass stopped by its budget after one page leaves a saved position.
    let first = env.run("pd").await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Partial);
    let saved = env.store().await.importer_state("pd").await.unwrap();
    assert!(saved.checkpoint.position.is_some());

    // Forced: the saved position is dropped and the pass starts again at the first page,
    // with no updated-since parameter.
    fake.clear();
    let options = RunOptions {
        full_refresh: true,
        ..RunOptions::default()
    };
    let forced = env.run_with("pd", options).await.unwrap();
    assert_eq!(forced.outcome, RunOutcome::Partial);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].q("cursor"), None);
    assert_eq!(requests[0].q("updated_since"), None);
    assert_eq!(forced.counts.fetched, 2);
    assert_eq!(forced.counts.unchanged, 2);

    // Finishing that pass records it as a full refresh and sets the watermark.
    for _ in 0..3 {
        env.run("pd").await.unwrap();
    }
    let state = env.store().await.importer_state("pd").await.unwrap();
    assert!(state.checkpoint.last_full_refresh.is_some());
    assert_eq!(state.checkpoint.position, None);
    assert_eq!(
        state.checkpoint.watermark,
        Some(epoch() + Duration::seconds(5))
    );
    let now_at_service = shared.lock().unwrap().clone();
    assert_people(&env, "People", &now_at_service).await;
}
