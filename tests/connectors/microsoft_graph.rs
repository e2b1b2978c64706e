//! `connectors.d/microsoft-graph.yaml` against the Graph fake: app-only client
//! credentials, a folder's contacts delta by `@odata.nextLink`, the last page's
//! `@odata.deltaLink` stored as the change token, a round of changes with an `@removed`
//! entry, a 410 on a token Graph no longer holds falling back to a full pass.

use tributary::engine::PassKind;
use tributary::store::{MembershipStatus, RunOutcome};

use super::{contact, membership, refused, shipped};
use crate::common::service::{self, People, Tokens, realistic};
use crate::common::services::microsoft_graph::{self, FOLDER, MAILBOX, TENANT};
use crate::common::sync_env::{SyncEnv, field};

const CLIENT: (&str, &str) = (
    "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
    "Gr~fake.secret-abcdefghij0123456789",
);

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: microsoft-graph\nauth: app\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\nsettings: {{tenant: {TENANT}, mailbox: {MAILBOX}, folder: {FOLDER}}}\nlist: {list}\npage_size: 10\n{extra}",
        CLIENT.0,
        env.secret("secret", CLIENT.1),
    )
}

fn delta_path() -> String {
    format!("/v1.0/users/{MAILBOX}/contactFolders/{FOLDER}/contacts/delta")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_round_its_delta_link_removals_and_an_expired_token() {
    let people = People::new(realistic(25));
    let tokens = Tokens::new("eyJ0eXAiOiJKV1Qi.graph.");
    let fake = service::start(microsoft_graph::service(CLIENT, &tokens), &people).await;
    let env = SyncEnv::new();
    env.connector("microsoft-graph", &shipped("microsoft-graph", &fake.base));
    env.importer("o365", &importer(&env, "Outlook", ""));

    let first = env.run("o365").await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Completed);
    assert_eq!((first.counts.pages, first.counts.created), (3, 25));
    let requests = fake.requests();
    assert_eq!(requests[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
    let grant: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(requests[0].body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        grant.get("grant_type").map(String::as_str),
        Some("client_credentials")
    );
    assert_eq!(
        grant.get("scope").cloned(),
        Some(format!("{}/.default", fake.base)),
        "graph's .default scope (rehosted to the fake)"
    );
    let list = &requests[1..];
    assert_eq!(list.len(), 3);
    for r in list {
        assert_eq!(r.path, delta_path());
        assert_eq!(
            r.header("authorization"),
            Some("Bearer eyJ0eXAiOiJKV1Qi.graph.1")
        );
        assert_eq!(r.header("prefer"), Some("odata.maxpagesize=10"));
        assert!(r.q("$select").unwrap().contains("emailAddresses"));
        assert_eq!(r.q("$deltatoken"), None, "first round: everyone");
    }
    let skips: Vec<_> = list.iter().map(|r| r.q("$skiptoken")).collect();
    assert_eq!(
        skips,
        [None, Some("c10"), Some("c20")],
        "next links followed"
    );

    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(
        (two.first_name.as_deref(), two.last_name.as_deref()),
        (Some("Łukasz"), Some("Wałęsa"))
    );
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(two.phone.as_deref(), Some("+44 20 7946 0002"));
    assert_eq!(field(two, "%MICROSOFT_GRAPH_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%MICROSOFT_GRAPH_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%MICROSOFT_GRAPH_COUNTRY%"), Some("CH"));
    assert_eq!(
        field(two, "%MICROSOFT_GRAPH_CATEGORIES%"),
        Some(r#"["customer","t2"]"#)
    );
    // Outlook contacts carry no consent: everyone mailable.
    assert!(
        all.iter()
            .all(|c| membership(c, "Outlook") == Some(MembershipStatus::Active))
    );

    // Person 9 is deleted, persons 4 and 6 change: the next run starts from the stored
    // delta link, as given, and its round holds only those three.
    people.edit(9, |c| c.deleted = true);
    people.edit(4, |c| c.company = Some("Neue Firma".into()));
    people.edit(6, |c| c.job_title = Some("Head of buying".into()));
    fake.clear();
    let second = env.run("o365").await.unwrap();
    assert_eq!(second.pass, PassKind::Incremental);
    let c = &second.counts;
    assert_eq!(
        (c.fetched, c.updated, c.deleted, c.created),
        (3, 2, 1, 0),
        "{c:?}"
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, delta_path());
    assert!(requests[0].q("$deltatoken").is_some(), "the delta link");
    assert!(
        requests[0].q("$select").is_some(),
        "the link's own parameters, sent once, not twice"
    );
    let all = env.all_contacts().await;
    assert_eq!(all.len(), 25, "a deleted contact is kept");
    assert_eq!(
        membership(contact(&all, "person9@example.com"), "Outlook"),
        Some(MembershipStatus::Removed)
    );
    assert_eq!(
        contact(&all, "person4@example.com").organization.as_deref(),
        Some("Neue Firma")
    );

    // Forty days on, Graph no longer holds the token: 410, and the run reads everything
    // again from the folder's delta function, saying so.
    let later = people.all().iter().map(|p| p.updated).max().unwrap() + chrono::Duration::days(40);
    people.edit_at(7, later, |c| c.city = Some("Oslo".into()));
    fake.clear();
    let third = env.run("o365").await.unwrap();
    assert_eq!(third.outcome, RunOutcome::Completed);
    assert_eq!(third.pass, PassKind::FullRefresh);
    assert!(
        third
            .pass_restarted
            .as_deref()
            .is_some_and(|r| r.contains("change token")),
        "{:?}",
        third.pass_restarted
    );
    assert_eq!((third.counts.fetched, third.counts.updated), (24, 1));
    let requests = fake.requests();
    assert!(requests[0].q("$deltatoken").is_some());
    assert!(requests[1..].iter().all(|r| r.q("$deltatoken").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_category_filter_and_a_wrong_secret() {
    let people = People::new(realistic(25));
    let tokens = Tokens::new("eyJ0eXAiOiJKV1Qi.graph.");
    let fake = service::start(microsoft_graph::service(CLIENT, &tokens), &people).await;
    let env = SyncEnv::new();
    env.connector("microsoft-graph", &shipped("microsoft-graph", &fake.base));
    env.importer("t1", &importer(&env, "T1", "filters: {category: t1}\n"));
    let run = env.run("t1").await.unwrap();
    // Applied here: Graph was asked for the whole folder.
    assert_eq!(run.counts.fetched, 25);
    assert!(fake.requests().iter().all(|r| !r.raw_query.contains("t1")));
    assert_eq!(env.contacts("T1").await.len(), 9, "ids 1, 4, ..., 25");

    let bad = SyncEnv::new();
    bad.connector("microsoft-graph", &shipped("microsoft-graph", &fake.base));
    bad.importer(
        "o365",
        &format!(
            "connector: microsoft-graph\nauth: app\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\nsettings: {{tenant: {TENANT}, mailbox: {MAILBOX}, folder: {FOLDER}}}\nlist: L\n",
            CLIENT.0,
            bad.secret("s", "wrong-secret")
        ),
    );
    refused(&bad, "o365", &["invalid_client", "401"], &["wrong-secret"]).await;
}

/// Delegated: a person's consent as a refresh token that Entra ID replaces on every use;
/// an expired access token is renewed with the replacement, and the scopes ask for
/// offline access and Contacts.Read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_refresh_tokens_replace_themselves() {
    let people = People::new(realistic(5));
    let refresh = Tokens::new("0.AXkA-refresh.");
    let tokens = Tokens::new("eyJ0eXAiOiJKV1Qi.graph.");
    let fake = service::start(
        microsoft_graph::delegated_service(CLIENT, &refresh, &tokens),
        &people,
    )
    .await;
    let env = SyncEnv::new();
    env.connector("microsoft-graph", &shipped("microsoft-graph", &fake.base));
    env.importer(
        "mine",
        &format!(
            "connector: microsoft-graph\nauth: delegated\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\n  refresh_token: {}\nsettings: {{tenant: {TENANT}, mailbox: {MAILBOX}, folder: {FOLDER}}}\nlist: Mine\n",
            CLIENT.0,
            env.secret("secret", CLIENT.1),
            env.secret("refresh", "0.AXkA-refresh.1"),
        ),
    );
    assert_eq!(env.run("mine").await.unwrap().counts.created, 5);
    let grant: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(fake.requests()[0].body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        grant.get("refresh_token").map(String::as_str),
        Some("0.AXkA-refresh.1")
    );
    assert_eq!(
        grant.get("scope").cloned(),
        Some(format!("offline_access {}/Contacts.Read", fake.base))
    );
    assert_eq!(refresh.current(), "0.AXkA-refresh.2", "replaced on use");

    tokens.expire();
    people.edit(2, |c| c.job_title = Some("Head of buying".into()));
    fake.clear();
    let second = env.run("mine").await.unwrap();
    assert_eq!(second.counts.updated, 1);
    let requests = fake.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths[1],
        format!("/{TENANT}/oauth2/v2.0/token"),
        "{paths:?}"
    );
    assert!(
        requests[1].body.contains("refresh_token=0.AXkA-refresh.2"),
        "the replacement, not the original"
    );
}
