//! `connectors.d/heap.yaml` against the Heap CRM webhook fake: the login and search in a
//! POST form, one response with everyone, a weekly full pass. The service is defunct or
//! unverifiable: this proves the connector against the shape services.md assumes, not
//! against Heap.

use tributary::engine::RunOptions;
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact};
use crate::common::service::{self, People, realistic};
use crate::common::services::heap::{self, KEY, LOGIN};
use crate::common::sync_env::{SyncEnv, field};

/// The shipped connector with its https host replaced by the fake's plain http one (the
/// fake has no TLS; the shipped file never sends the password over http).
fn connector(base: &str) -> String {
    let text = super::shipped("heap", base);
    assert!(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/connectors.d/heap.yaml"
        ))
        .unwrap()
        .contains("base_url: https://"),
        "the shipped connector sends the login over https only"
    );
    text
}

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: heap\ncredentials:\n  login_email: {{literal: \"{}\"}}\n  login_password: {}\nsettings: {{subdomain: acme, webhook_key: {KEY}}}\nlist: {list}\n{extra}",
        LOGIN.0,
        env.secret("heap", LOGIN.1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_in_one_response_and_a_weekly_pass_writing_only_changes() {
    let people = People::new(realistic(25));
    let fake = service::start(heap::service(), &people).await;
    let env = SyncEnv::new();
    env.connector("heap", &connector(&fake.base));
    env.importer("crm", &importer(&env, "Heap", ""));

    let summary = env.run("crm").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (1, 25, 25));

    // One POST with the login and the default search phrase as form fields.
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, format!("/json/{KEY}"));
    let form: Vec<(String, String)> = url::form_urlencoded::parse(requests[0].body.as_bytes())
        .into_owned()
        .collect();
    assert!(form.contains(&("login_password".into(), LOGIN.1.into())));
    assert!(form.contains(&("search".into(), "@".into())));
    assert!(form.contains(&("searchpeople".into(), "true".into())));

    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(
        (two.first_name.as_deref(), two.last_name.as_deref()),
        (Some("Łukasz"), Some("Wałęsa")),
        "the full name split"
    );
    assert_eq!(two.phone.as_deref(), Some("+44 20 7946 0002"));
    assert_eq!(
        contact(&all, "person1@example.com").phone.as_deref(),
        Some("+44 20 7946 0001"),
        "the mobile when there is no phone"
    );
    assert_eq!(field(two, "%HEAP_TITLE%"), Some("Buyer"));
    assert_eq!(
        field(two, "%HEAP_CATEGORIES%"),
        Some(r#"["customer","t2"]"#)
    );
    assert_eq!(field(two, "%HEAP_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%HEAP_COUNTRY%"), Some("CH"));
    // Heap keeps no consent: everyone active (documented in the connector).
    assert!(
        consent(&env, "Heap")
            .await
            .iter()
            .all(|(_, s, m)| *s == ContactStatus::Normal && *m == Some(MembershipStatus::Active))
    );

    // The weekly full pass after two people change: everyone fetched, two written.
    people.edit(4, |c| c.job_title = Some("Head of buying".into()));
    people.edit(9, |c| c.tags.push("vip".into()));
    fake.clear();
    let summary = env
        .run_with(
            "crm",
            RunOptions {
                full_refresh: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    let c = &summary.counts;
    assert_eq!((c.fetched, c.updated, c.unchanged), (25, 2, 23));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_filter_goes_to_heap_and_a_wrong_password_fails() {
    let people = People::new(realistic(25));
    let fake = service::start(heap::service(), &people).await;
    let env = SyncEnv::new();
    env.connector("heap", &connector(&fake.base));
    env.importer(
        "ada",
        &importer(&env, "Ada", "filters: {search: person1}\n"),
    );
    env.run("ada").await.unwrap();
    // Heap searched: the form carried the filter's value.
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.body.contains("search=person1"))
    );
    // person1, person10 ... person19
    assert_eq!(env.contacts("Ada").await.len(), 11);

    let bad = SyncEnv::new();
    bad.connector("heap", &connector(&fake.base));
    bad.importer(
        "crm",
        &format!(
            "connector: heap\ncredentials:\n  login_email: {{literal: \"{}\"}}\n  login_password: {}\nsettings: {{subdomain: acme, webhook_key: {KEY}}}\nlist: L\n",
            LOGIN.0,
            bad.secret("p", "wrong password"),
        ),
    );
    let error = bad.run("crm").await.unwrap_err().to_string();
    assert!(!error.contains("wrong password"), "{error}");
}
