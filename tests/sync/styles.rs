//! Every pagination style against a fake of a service that uses it, every stop rule and
//! the loop guards.

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use serde_json::json;
use std::collections::HashMap;
use tributary::store::{MembershipStatus, RunOutcome};

use super::assert_people;
use super::fakes::{self, TOKEN};
use crate::common::fake::{FakeService, db, people};
use crate::common::sync_env::{SyncEnv, field};

fn importer(connector: &str, credential: &str, base: &str, extra: &str) -> String {
    format!(
        "connector: {connector}\ncredentials:\n  api_token: {credential}\nsettings:\n  base: \"{base}\"\nlist: People\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_in_body_pipedrive() {
    let people = people(5);
    let fake = FakeService::start(fakes::pipedrive(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    env.importer(
        "pd",
        &importer(
            "pipedrive",
            &env.secret("pd", TOKEN),
            &fake.base,
            "page_size: 2\n",
        ),
    );
    let summary = env.run("pd").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(
        (
            summary.counts.pages,
            summary.counts.fetched,
            summary.counts.created
        ),
        (3, 5, 5)
    );

    let requests = fake.requests();
    let cursors: Vec<Option<&str>> = requests.iter().map(|r| r.q("cursor")).collect();
    assert_eq!(cursors, vec![None, Some("cur-2"), Some("cur-4")]);
    for r in &requests {
        assert_eq!(r.q("limit"), Some("2"));
        assert_eq!(r.q("updated_since"), None, "first run asks for everyone");
        assert_eq!(r.header("x-api-token"), Some(TOKEN));
    }
    // Full name split, primary email chosen over the first one, custom values typed.
    assert_people(&env, "People", &people).await;
    let stored = env.contacts("People").await;
    let ada = &stored[0];
    assert_eq!(ada.email, "person1@example.com");
    assert_eq!(field(ada, "%PIPEDRIVE_TIER%"), Some("silver"));
    assert_eq!(field(ada, "%PIPEDRIVE_LABELS%"), Some(r#"["vip","t1"]"#));
    assert_eq!(field(&stored[1], "%PIPEDRIVE_TIER%"), Some("gold"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_with_total_and_basic_auth_mailchimp() {
    let people = people(5);
    let fake = FakeService::start(fakes::mailchimp(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector("mailchimp", fakes::MAILCHIMP_CONNECTOR);
    env.importer(
        "mc",
        &importer(
            "mailchimp",
            &env.secret("mc", TOKEN),
            &fake.base,
            "page_size: 2\n",
        ),
    );
    let summary = env.run("mc").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let offsets: Vec<Option<String>> = fake
        .requests()
        .iter()
        .map(|r| r.q("offset").map(str::to_string))
        .collect();
    assert_eq!(
        offsets,
        vec![Some("0".into()), Some("2".into()), Some("4".into())]
    );

    let stored = env.contacts("People").await;
    assert_eq!(stored.len(), 5);
    for c in &stored {
        let membership = c.lists.iter().find(|m| m.list == "People").unwrap();
        let expected = if c.email == "person3@example.com" {
            MembershipStatus::Unsubscribed
        } else {
            MembershipStatus::Active
        };
        assert_eq!(membership.status, expected, "{}", c.email);
    }
    let two = stored
        .iter()
        .find(|c| c.email == "person2@example.com")
        .unwrap();
    assert_eq!(two.first_name.as_deref(), Some("First2"));
    assert_eq!(field(two, "%MAILCHIMP_TIER%"), Some("gold"));
    assert_eq!(field(two, "%MAILCHIMP_TAGS%"), Some(r#"["vip","t2"]"#));
}

const BIGCOMMERCE_V3: &str = r#"
spec_version: 1
base_url: "{{settings.base}}/stores/abc/v3"
settings:
  base: {}
auth:
  token: {type: api_key, in: header, name: X-Auth-Token, value: "{{credentials.api_token}}"}
contacts:
  request:
    path: /customers
    query:
      page: "{{page}}"
      limit: "{{page_size}}"
      "date_modified:min": "{{since}}"
      sort: "date_modified:asc"
  pagination:
    type: page_number
    total_pages: $.meta.pagination.total_pages
    stop: [total_reached]
  records: $.data[*]
  page_size: {max: 250, default: 50}
  fields:
    email: $.email
    first_name: $.first_name
    last_name: $.last_name
    organization: $.company
    external_id: $.id
    updated_at: {path: $.date_modified}
sync:
  mode: incremental
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_with_total_pages_bigcommerce_v3() {
    let people = people(5);
    let fake = FakeService::start(fakes::bigcommerce(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector("bigcommerce", BIGCOMMERCE_V3);
    env.importer(
        "bc",
        &importer(
            "bigcommerce",
            &env.secret("bc", TOKEN),
            &fake.base,
            "page_size: 2\n",
        ),
    );
    env.run("bc").await.unwrap();
    let pages: Vec<Option<String>> = fake
        .requests()
        .iter()
        .map(|r| r.q("page").map(str::to_string))
        .collect();
    assert_eq!(
        pages,
        vec![Some("1".into()), Some("2".into()), Some("3".into())]
    );
    assert_people(&env, "People", &people).await;
    let stored = env.contacts("People").await;
    assert!(
        stored
            .iter()
            .all(|c| c.organization.as_deref() == Some("Analytical Engines Ltd"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_ending_on_204_bigcommerce_v2() {
    let people = people(4);
    let fake = FakeService::start(fakes::bigcommerce(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector(
        "bigcommerce2",
        r#"
spec_version: 1
base_url: "{{settings.base}}/stores/abc/v2"
settings:
  base: {}
contacts:
  request:
    path: /customers
    query: {page: "{{page}}", limit: "{{page_size}}"}
  pagination: {type: page_number, stop: [short_page]}
  records: $[*]
  page_size: {max: 250, default: 50}
  fields:
    email: $.email
    first_name: $.first_name
    last_name: $.last_name
    updated_at: {path: $.date_modified, format: rfc2822}
sync:
  mode: full_refresh
"#,
    );
    env.importer(
        "bc2",
        &format!(
            "connector: bigcommerce2\nsettings:\n  base: \"{}\"\nlist: People\npage_size: 2\n",
            fake.base
        ),
    );
    let summary = env.run("bc2").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    // Two full pages, then the empty 204 ends the pass.
    assert_eq!(fake.count(), 3);
    assert_eq!((summary.counts.pages, summary.counts.fetched), (3, 4));
    assert_people(&env, "People", &people).await;
    let state = env.store().await.importer_state("bc2").await.unwrap();
    assert_eq!(
        state.checkpoint.watermark,
        Some(people[3].updated),
        "RFC 2822 times read"
    );
    assert_eq!(state.checkpoint.position, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_next_url_followed_verbatim_salesforce() {
    let people = people(5);
    let fake = FakeService::start(fakes::salesforce(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector(
        "salesforce",
        r#"
spec_version: 1
base_url: "{{settings.base}}/services/data/v62.0"
settings:
  base: {}
auth:
  token: {type: bearer, token: "{{credentials.api_token}}"}
contacts:
  request:
    path: /query
    query:
      q: "SELECT Id, FirstName, LastName, Email, SystemModstamp FROM Contact{{#if since}} WHERE SystemModstamp > {{since}}{{/if}} ORDER BY SystemModstamp ASC"
  pagination:
    type: next_url
    next_url: $.nextRecordsUrl
    stop: [missing_token]
  records: $.records[*]
  fields:
    email: $.Email
    first_name: $.FirstName
    last_name: $.LastName
    organization: $.Account.Name
    external_id: $.Id
    updated_at: {path: $.SystemModstamp}
sync:
  mode: incremental
"#,
    );
    env.importer(
        "sf",
        &importer("salesforce", &env.secret("sf", TOKEN), &fake.base, ""),
    );
    env.run("sf").await.unwrap();
    let requests = fake.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "/services/data/v62.0/query",
            "/services/data/v62.0/query/01gXX-2",
            "/services/data/v62.0/query/01gXX-4"
        ]
    );
    assert!(requests[1..].iter().all(|r| r.raw_query.is_empty()));
    assert_people(&env, "People", &people).await;
    let state = env.store().await.importer_state("sf").await.unwrap();
    assert_eq!(
        state.checkpoint.watermark,
        Some(people[4].updated),
        "+0000 offsets read"
    );
}

/// A Microsoft Graph-like connector: next URL in `@odata.nextLink`, token in the query.
const GRAPHISH_CONNECTOR: &str = r#"
spec_version: 1
base_url: "{{settings.base}}/v1.0"
settings:
  base: {}
auth:
  token: {type: api_key, in: query, name: access_token, value: "{{credentials.api_token}}"}
contacts:
  request:
    path: /me/contacts
    query: {"$top": "{{page_size}}"}
  pagination:
    type: next_url
    next_url: "$['@odata.nextLink']"
    stop: [missing_token]
  records: $.value[*]
  page_size: {max: 100, default: 10}
  fields:
    email: "$.emailAddresses[*].address"
    first_name: $.givenName
    last_name: $.surname
    external_id: $.id
    updated_at: {path: $.lastModifiedDateTime}
sync:
  mode: full_refresh
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_next_url_carrying_the_token_resumes_without_storing_it() {
    let people = people(5);
    let shared = db(people.clone());
    let fake = FakeService::start_with(|base| fakes::tokenlink_service(shared.clone(), base)).await;
    let env = SyncEnv::new();
    env.connector("graphish", GRAPHISH_CONNECTOR);
    env.importer(
        "gr",
        &importer(
            "graphish",
            &env.secret("gr", TOKEN),
            &fake.base,
            "page_size: 2\npage_budget: 1\n",
        ),
    );
    for run in 1..=2 {
        let summary = env.run("gr").await.unwrap();
        assert_eq!(summary.outcome, RunOutcome::Partial, "run {run}");
        let state = env.store().await.importer_state("gr").await.unwrap();
        let position = state
            .checkpoint
            .position
            .expect("a pass in progress")
            .to_string();
        assert!(
            !position.contains(TOKEN),
            "saved position holds the token: {position}"
        );
        assert!(position.contains("{{secret:"), "{position}");
    }
    let summary = env.run("gr").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let requests = fake.requests();
    let skips: Vec<Option<&str>> = requests.iter().map(|r| r.q("$skip")).collect();
    assert_eq!(
        skips,
        vec![None, Some("2"), Some("4")],
        "each run continued, none restarted"
    );
    for r in &requests {
        let tokens: Vec<&(String, String)> = r
            .query
            .iter()
            .filter(|(k, _)| k == "access_token")
            .collect();
        assert_eq!(tokens.len(), 1, "one access_token in {}", r.raw_query);
        assert_eq!(tokens[0].1, TOKEN);
    }
    assert_people(&env, "People", &people).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_header_followed_verbatim_shopify() {
    let people = people(5);
    let shared = db(people.clone());
    let fake = FakeService::start_with(|base| fakes::shopify(shared.clone(), base)).await;
    let env = SyncEnv::new();
    env.connector(
        "shopify",
        r#"
spec_version: 1
base_url: "{{settings.base}}/admin/api/2024-10"
settings:
  base: {}
auth:
  token: {type: api_key, in: header, name: X-Shopify-Access-Token, value: "{{credentials.api_token}}"}
contacts:
  request:
    path: /customers.json
    query:
      limit: "{{page_size}}"
      updated_at_min: "{{since}}"
      order: "updated_at asc"
  pagination: {type: link_header, stop: [missing_token]}
  records: $.customers[*]
  page_size: {max: 250, default: 50}
  fields:
    email: $.email
    first_name: $.first_name
    last_name: $.last_name
    external_id: $.id
    updated_at: {path: $.updated_at}
  custom_fields:
    - {label: Tags, path: $.tags, type: list, delimiter: ","}
sync:
  mode: incremental
"#,
    );
    env.importer(
        "sh",
        &importer(
            "shopify",
            &env.secret("sh", TOKEN),
            &fake.base,
            "page_size: 2\n",
        ),
    );
    env.run("sh").await.unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].q("order"), Some("updated_at asc"));
    for r in &requests[1..] {
        let keys: Vec<&str> = r.query.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["limit", "page_info"], "followed verbatim");
    }
    assert_people(&env, "People", &people).await;
    let stored = env.contacts("People").await;
    assert_eq!(field(&stored[0], "%SHOPIFY_TAGS%"), Some(r#"["vip","t1"]"#));
    let state = env.store().await.importer_state("sh").await.unwrap();
    assert_eq!(
        state.checkpoint.watermark,
        Some(people[4].updated),
        "shop offsets read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_by_last_id_with_has_more_stripe() {
    let people = people(5);
    let fake = FakeService::start(fakes::stripe(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector(
        "stripe",
        r#"
spec_version: 1
base_url: "{{settings.base}}/v1"
settings:
  base: {}
auth:
  key: {type: bearer, token: "{{credentials.api_token}}"}
contacts:
  request:
    path: /customers
    query: {limit: "{{page_size}}", starting_after: "{{keyset.id}}"}
  pagination:
    type: keyset
    has_more: $.has_more
    stop: [has_more_false]
  records: $.data[*]
  page_size: {max: 100, default: 10}
  fields:
    email: $.email
    full_name: $.name
    external_id: $.id
    updated_at: {path: $.created, format: unix_seconds}
  custom_fields:
    - {label: Segment, path: $.metadata.segment}
sync:
  mode: full_refresh
"#,
    );
    env.importer(
        "st",
        &importer(
            "stripe",
            &env.secret("st", TOKEN),
            &fake.base,
            "page_size: 2\n",
        ),
    );
    env.run("st").await.unwrap();
    let after: Vec<Option<String>> = fake
        .requests()
        .iter()
        .map(|r| r.q("starting_after").map(str::to_string))
        .collect();
    assert_eq!(
        after,
        vec![None, Some("cus_2".into()), Some("cus_4".into())]
    );
    assert_people(&env, "People", &people).await;
    let stored = env.contacts("People").await;
    assert_eq!(field(&stored[1], "%STRIPE_SEGMENT%"), Some("gold"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_until_an_empty_page_batchbook() {
    let people = people(31);
    let fake = FakeService::start(fakes::batchbook(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector(
        "batchbook",
        r#"
spec_version: 1
base_url: "{{settings.base}}/api/v1"
settings:
  base: {}
auth:
  token: {type: api_key, in: query, name: auth_token, value: "{{credentials.api_token}}"}
contacts:
  request:
    path: /people.json
    query: {page: "{{page}}", updated_since: "{{since}}"}
  pagination: {type: page_number, stop: [empty_page]}
  records: $.people[*]
  page_size: {max: 30}
  fields:
    email: "$.emails[?@.primary==true].address"
    first_name: $.first_name
    last_name: $.last_name
    external_id: $.id
    updated_at: {path: $.updated_at}
sync:
  mode: incremental
"#,
    );
    env.importer(
        "bb",
        &importer("batchbook", &env.secret("bb", TOKEN), &fake.base, ""),
    );
    let summary = env.run("bb").await.unwrap();
    // 30, then 1 (not empty: go on), then an empty page ends the pass.
    assert_eq!(fake.count(), 3);
    assert_eq!(summary.counts.fetched, 31);
    assert_people(&env, "People", &people).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pagination_one_response_heap() {
    let people = people(3);
    let fake = FakeService::start(fakes::heap(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector(
        "heap",
        r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
contacts:
  request: {path: /people}
  pagination: {type: none}
  records: $[*]
  fields:
    email: $.email
    full_name: $.name
  custom_fields:
    - {label: Categories, path: $.categories, type: list}
sync:
  mode: full_refresh
"#,
    );
    env.importer(
        "hp",
        &format!(
            "connector: heap\nsettings:\n  base: \"{}\"\nlist: People\n",
            fake.base
        ),
    );
    let summary = env.run("hp").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(fake.count(), 1);
    assert_people(&env, "People", &people).await;
    let stored = env.contacts("People").await;
    assert_eq!(
        field(&stored[2], "%HEAP_CATEGORIES%"),
        Some(r#"["vip","t0"]"#)
    );
}

/// A service whose has-more flag always says true: a page that is short still ends the
/// pass, because any stop rule wins over has-more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_rule_wins_over_has_more() {
    let router = Router::new().route(
        "/items",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let items: Vec<serde_json::Value> = match page {
                1 => vec![
                    json!({"email": "a@example.com"}),
                    json!({"email": "b@example.com"}),
                ],
                2 => vec![json!({"email": "c@example.com"})],
                _ => vec![json!({"email": "never@example.com"})],
            };
            axum::Json(json!({"items": items, "has_more": true}))
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector(
        "liar",
        &paged_connector(
            "/items",
            "[short_page, has_more_false]",
            "has_more: $.has_more\n    ",
        ),
    );
    env.importer(
        "li",
        &format!(
            "connector: liar\nsettings:\n  base: \"{}\"\nlist: People\npage_size: 2\n",
            fake.base
        ),
    );
    let summary = env.run("li").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(fake.count(), 2);
    let stored = env.contacts("People").await;
    assert_eq!(
        crate::common::sync_env::emails(&stored),
        vec!["a@example.com", "b@example.com", "c@example.com"]
    );
}

fn paged_connector(path: &str, stop: &str, extra: &str) -> String {
    format!(
        r#"
spec_version: 1
base_url: "{{{{settings.base}}}}"
settings:
  base: {{}}
contacts:
  request:
    path: {path}
    query: {{page: "{{{{page}}}}", cursor: "{{{{cursor}}}}", size: "{{{{page_size}}}}"}}
  pagination:
    type: page_number
    {extra}stop: {stop}
  records: $.items[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pages_stops_an_endless_service() {
    let router = Router::new().route(
        "/items",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            let page = q.get("page").cloned().unwrap_or_default();
            axum::Json(json!({"items": [{"email": format!("p{page}@example.com")}]}))
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector(
        "endless",
        &paged_connector("/items", "[empty_page]", "max_pages: 3\n    "),
    );
    env.importer(
        "en",
        &format!(
            "connector: endless\nsettings:\n  base: \"{}\"\nlist: People\n",
            fake.base
        ),
    );
    let summary = env.run("en").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(fake.count(), 3);
    let stored = env.contacts("People").await;
    assert_eq!(
        crate::common::sync_env::emails(&stored),
        vec!["p1@example.com", "p2@example.com", "p3@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_cursor_fails_the_run_after_committing_what_was_read() {
    let router = Router::new().route(
        "/items",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            let email = match q.get("cursor") {
                None => "first@example.com",
                Some(_) => "again@example.com",
            };
            axum::Json(json!({"items": [{"email": email}], "next": "same"}))
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector(
        "looping",
        &paged_connector("/items", "[missing_token]", "")
            .replace("type: page_number", "type: cursor\n    cursor: $.next"),
    );
    env.importer(
        "lo",
        &format!(
            "connector: looping\nsettings:\n  base: \"{}\"\nlist: People\n",
            fake.base
        ),
    );
    let error = env.run("lo").await.unwrap_err().to_string();
    assert!(error.contains("importer `lo`"), "{error}");
    assert!(error.contains("pagination loop"), "{error}");
    assert_eq!(fake.count(), 2);
    let stored = env.contacts("People").await;
    assert_eq!(
        crate::common::sync_env::emails(&stored),
        vec!["first@example.com"],
        "the page read before the loop stays committed"
    );
    let runs = env.store().await.runs("lo", 5).await.unwrap();
    assert_eq!(runs[0].outcome, Some(RunOutcome::Failed));
    assert!(
        runs[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("pagination loop")
    );
}

/// The loop guard on URLs: a `Link` header that points to a page already read fails the
/// run; the pages read before stay committed, and the history records the failure with
/// its counts and timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_next_url_fails_the_run_and_is_recorded() {
    let fake = FakeService::start_with(|base| {
        Router::new().route(
            "/items",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let base = base.clone();
                async move {
                    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                    // Page 3 links back to page 2.
                    let next = if page < 3 { page + 1 } else { 2 };
                    (
                        [("link", format!("<{base}/items?page={next}>; rel=\"next\""))],
                        axum::Json(json!({"items": [{"email": format!("p{page}@example.com")}]})),
                    )
                }
            }),
        )
    })
    .await;
    let env = SyncEnv::new();
    env.connector(
        "linky",
        &paged_connector("/items", "[missing_token]", "")
            .replace("type: page_number", "type: link_header"),
    );
    env.importer(
        "lk",
        &format!(
            "connector: linky\nsettings:\n  base: \"{}\"\nlist: People\n",
            fake.base
        ),
    );
    let before = chrono::Utc::now();
    let error = env.run("lk").await.unwrap_err().to_string();
    assert!(error.contains("importer `lk`"), "{error}");
    assert!(error.contains("pagination loop"), "{error}");
    let pages: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.q("page").unwrap_or("1").to_string())
        .collect();
    assert_eq!(
        pages,
        vec!["1", "2", "3"],
        "page 2 is never asked for again"
    );
    assert_eq!(
        crate::common::sync_env::emails(&env.contacts("People").await),
        vec!["p1@example.com", "p2@example.com"]
    );
    let runs = env.store().await.runs("lk", 5).await.unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.outcome, Some(RunOutcome::Failed));
    assert!(run.error.as_deref().unwrap().contains("pagination loop"));
    assert_eq!(run.counts.created, 2);
    assert!(run.started_at >= before - chrono::Duration::seconds(1));
    assert!(run.finished_at.unwrap() >= run.started_at);
}

/// A search that caps every query at a number of results (HubSpot: 10,000; here 5) and
/// answers 400 past it: with `max_results_per_query` the engine restarts the query by
/// keyset from the last record read, and every record is imported once.
async fn capped_query(offset_style: bool) {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::post;
    const CAP: usize = 5;
    let router = Router::new().route(
        "/search",
        post(
            |axum::Json(body): axum::Json<serde_json::Value>| async move {
                // A cursor comes as a string, an offset as a number.
                let after: usize = match &body["after"] {
                    serde_json::Value::String(a) => a.parse().unwrap_or(0),
                    other => other.as_u64().unwrap_or(0) as usize,
                };
                let min_id = body["min_id"].as_u64().unwrap_or(0) as usize;
                let limit = body["limit"].as_u64().unwrap_or(2) as usize;
                if after >= CAP {
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::Json(json!({"message": "cannot page past 5 results"})),
                    )
                        .into_response();
                }
                let matching: Vec<usize> = (1..=12).filter(|id| *id > min_id).collect();
                let page: Vec<serde_json::Value> = matching
                .iter()
                .skip(after)
                .take(limit)
                .map(|id| json!({"id": id, "properties": {"email": format!("c{id}@example.com")}}))
                .collect();
                let next = (after + limit < matching.len())
                    .then(|| json!({"next": {"after": (after + limit).to_string()}}));
                axum::Json(json!({"results": page, "paging": next})).into_response()
            },
        ),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    let connector = r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
contacts:
  request:
    method: POST
    path: /search
    body:
      json: {after: "{{cursor}}", min_id: "{{keyset.id}}", limit: "{{page_size}}"}
  pagination:
    type: cursor
    cursor: $.paging.next.after
    stop: [missing_token]
  records: $.results[*]
  max_results_per_query: 5
  fields:
    email: $.properties.email
    external_id: $.id
sync:
  mode: full_refresh
"#;
    let connector = if offset_style {
        connector.replace("{{cursor}}", "{{offset}}").replace(
            "type: cursor\n    cursor: $.paging.next.after\n    stop: [missing_token]",
            "type: offset\n    stop: [empty_page]",
        )
    } else {
        connector.to_string()
    };
    env.connector("capped", &connector);
    env.importer(
        "cq",
        &format!(
            "connector: capped\nsettings:\n  base: \"{}\"\nlist: People\npage_size: 2\n",
            fake.base
        ),
    );
    let summary = env.run("cq").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let bodies: Vec<serde_json::Value> = fake
        .requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let asked: Vec<(Option<&str>, Option<u64>)> = bodies
        .iter()
        .map(|b| {
            let after = match &b["after"] {
                serde_json::Value::Null => None,
                serde_json::Value::Number(n) => Some(match n.as_u64() {
                    Some(0) => "0",
                    Some(2) => "2",
                    Some(4) => "4",
                    _ => "other",
                }),
                other => other.as_str(),
            };
            (after, b["min_id"].as_u64())
        })
        .collect();
    let expected = if offset_style {
        vec![
            (Some("0"), None),
            (Some("2"), None),
            (Some("4"), None),
            (Some("0"), Some(6)),
            (Some("2"), Some(6)),
            (Some("4"), Some(6)),
            (Some("0"), Some(12)),
        ]
    } else {
        vec![
            (None, None),
            (Some("2"), None),
            (Some("4"), None),
            (None, Some(6)),
            (Some("2"), Some(6)),
            (Some("4"), Some(6)),
        ]
    };
    assert_eq!(asked, expected);
    let want: Vec<String> = {
        let mut w: Vec<String> = (1..=12).map(|i| format!("c{i}@example.com")).collect();
        w.sort();
        w
    };
    assert_eq!(
        crate::common::sync_env::emails(&env.contacts("People").await),
        want
    );
    assert_eq!(summary.counts.created, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_cursor_query_restarts_by_keyset() {
    capped_query(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_offset_query_restarts_by_keyset_from_offset_zero() {
    capped_query(true).await;
}

/// A next URL with `verbatim: false`: the request's query parameters the URL lacks are
/// added again (a service whose next link forgets the page size), the ones it carries are
/// left as the service wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_url_not_followed_verbatim_gets_missing_parameters_again() {
    let router = Router::new().route(
        "/items",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let next = (page < 3).then(|| format!("/items?page={}", page + 1));
            axum::Json(json!({"items": [{"email": format!("p{page}@example.com")}], "next": next}))
        }),
    );
    let fake = FakeService::start(router).await;
    let env = SyncEnv::new();
    env.connector(
        "forgetful",
        r#"
spec_version: 1
base_url: "{{settings.base}}"
settings:
  base: {}
contacts:
  request:
    path: /items
    query: {limit: "{{page_size}}", page: "{{page}}"}
  pagination:
    type: next_url
    next_url: $.next
    verbatim: false
    stop: [missing_token]
  records: $.items[*]
  fields:
    email: $.email
sync:
  mode: full_refresh
"#,
    );
    env.importer(
        "fg",
        &format!(
            "connector: forgetful\nsettings:\n  base: \"{}\"\nlist: People\npage_size: 7\n",
            fake.base
        ),
    );
    let summary = env.run("fg").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let queries: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.raw_query.clone())
        .collect();
    assert_eq!(queries, vec!["limit=7", "page=2&limit=7", "page=3&limit=7"]);
    assert_eq!(
        crate::common::sync_env::emails(&env.contacts("People").await),
        vec!["p1@example.com", "p2@example.com", "p3@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_url_on_another_host_is_not_followed_with_credentials() {
    // The service's next link names another server: the run must fail rather than send
    // the importer's token there.
    let elsewhere = FakeService::start(axum::Router::new()).await;
    let shared = db(people(5));
    let foreign = elsewhere.base.clone();
    let fake = FakeService::start_with(|_| fakes::tokenlink_service(shared.clone(), foreign)).await;
    let env = SyncEnv::new();
    env.connector("graphish", GRAPHISH_CONNECTOR);
    env.importer(
        "gr",
        &importer(
            "graphish",
            &env.secret("gr", TOKEN),
            &fake.base,
            "page_size: 2\npage_budget: 0\n",
        ),
    );
    let error = env.run("gr").await.expect_err("the run fails");
    let text = error.to_string();
    assert!(text.contains("another host"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    assert_eq!(fake.requests().len(), 1);
    assert!(elsewhere.requests().is_empty());
    // The first page was committed before the run stopped.
    assert_eq!(env.contacts("People").await.len(), 2);
}
