//! `connectors.d/google-people.yaml` against the Google People fake.

use tributary::engine::RunOptions;
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, refused, shipped};
use crate::common::service::{self, People, realistic};
use crate::common::services::google_people::{self, ACCESS};
use crate::common::sync_env::{SyncEnv, field};

const CLIENT: (&str, &str) = ("1234-abc.apps.googleusercontent.com", "GOCSPX-secret");
const REFRESH: &str = "1//0refresh-token";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: google-people\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\n  refresh_token: {}\nlist: {list}\npage_size: 10\n{extra}",
        CLIENT.0,
        env.secret("secret", CLIENT.1),
        env.secret("refresh", REFRESH),
    )
}

async fn setup(people: &People) -> (crate::common::fake::FakeService, SyncEnv) {
    let fake = service::start(google_people::service(CLIENT, REFRESH), people).await;
    let env = SyncEnv::new();
    env.connector("google-people", &shipped("google-people", &fake.base));
    (fake, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_three_pages_with_groups_and_a_daily_full_pass() {
    let people = People::new(realistic(25));
    let (fake, env) = setup(&people).await;
    env.importer("contacts", &importer(&env, "Google", ""));

    let summary = env.run("contacts").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));

    // One refresh grant at the token endpoint, then three pages with the access token;
    // the page token is the only parameter that changes (the fake refuses a token sent
    // with other parameters than the first call's).
    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("POST", "/token")
    );
    assert!(requests[0].body.contains("grant_type=refresh_token"));
    let pages = &requests[1..];
    assert_eq!(pages[0].q("pageToken"), None);
    assert!(pages[1].q("pageToken").is_some() && pages[2].q("pageToken").is_some());
    for r in pages {
        assert_eq!(r.path, "/v1/people/me/connections");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {ACCESS}").as_str())
        );
        assert_eq!(r.q("pageSize"), Some("10"));
        assert_eq!(r.q("sortOrder"), Some("LAST_MODIFIED_ASCENDING"));
        assert_eq!(r.q("personFields"), pages[0].q("personFields"));
    }

    let all = env.all_contacts().await;
    assert_eq!(all.len(), 25, "the primary email, not a second address");
    let three = contact(&all, "person3@example.com");
    assert_eq!(three.organization.as_deref(), Some("Firma 3"));
    assert_eq!(three.phone.as_deref(), Some("+44 20 7946 0003"));
    assert_eq!(field(three, "%GOOGLE_JOB_TITLE%"), None);
    assert_eq!(field(three, "%GOOGLE_CITY%"), Some("São Paulo"));
    assert_eq!(field(three, "%GOOGLE_COUNTRY%"), Some("BR"));
    assert_eq!(
        field(three, "%GOOGLE_GROUPS%"),
        Some(r#"["contactGroups/myContacts","contactGroups/customer","contactGroups/t0"]"#)
    );
    let two = contact(&all, "person2@example.com");
    assert_eq!(field(two, "%GOOGLE_JOB_TITLE%"), Some("Buyer"));
    // No consent at Google: everyone joins as active.
    assert!(
        consent(&env, "Google")
            .await
            .iter()
            .all(|(_, s, m)| *s == ContactStatus::Normal && *m == Some(MembershipStatus::Active))
    );

    // The next daily pass reads everyone again and writes only the two that changed.
    people.edit(2, |c| c.job_title = Some("Head of buying".into()));
    people.edit(9, |c| c.phone = Some("+44 20 7946 9999".into()));
    fake.clear();
    let summary = env
        .run_with(
            "contacts",
            RunOptions {
                full_refresh: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    let c = &summary.counts;
    assert_eq!((c.fetched, c.updated, c.unchanged), (25, 2, 23));
    let all = env.all_contacts().await;
    assert_eq!(
        field(contact(&all, "person2@example.com"), "%GOOGLE_JOB_TITLE%"),
        Some("Head of buying")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_contacts_completes_with_nothing_to_do() {
    let people = People::new(Vec::new());
    let (fake, env) = setup(&people).await;
    env.importer("contacts", &importer(&env, "Google", ""));
    let summary = env.run("contacts").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (1, 0, 0));
    let page = fake.requests().pop().unwrap();
    assert_eq!(page.path, "/v1/people/me/connections");
    assert!(env.all_contacts().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_filter_and_a_revoked_refresh_token() {
    let people = People::new(realistic(25));
    let (fake, env) = setup(&people).await;
    env.importer(
        "t1",
        &importer(&env, "T1", "filters: {group: contactGroups/t1}\n"),
    );
    let filtered = env.run("t1").await.unwrap();
    // Client side: the service was asked for everyone and sent everyone; the filter
    // decided what landed.
    assert!(filtered.counts.fetched as usize >= people.all().len());
    let emails: Vec<String> = env
        .contacts("T1")
        .await
        .into_iter()
        .map(|c| c.email)
        .collect();
    let mut want: Vec<String> = (1..=25)
        .filter(|i| i % 3 == 1)
        .map(|i| format!("person{i}@example.com"))
        .collect();
    want.sort();
    assert_eq!(emails, want);

    let revoked = SyncEnv::new();
    revoked.connector("google-people", &shipped("google-people", &fake.base));
    revoked.importer(
        "contacts",
        &format!(
            "connector: google-people\ncredentials:\n  client_id: {{literal: x}}\n  client_secret: {}\n  refresh_token: {}\nlist: L\n",
            revoked.secret("s", CLIENT.1),
            revoked.secret("r", "1//0revoked"),
        ),
    );
    refused(
        &revoked,
        "contacts",
        &["invalid_grant"],
        &["1//0revoked", CLIENT.1],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_token_reads_changes_and_deletions_and_an_expired_one_falls_back() {
    use tributary::engine::PassKind;
    let people = People::new(realistic(25));
    let (fake, env) = setup(&people).await;
    env.importer("contacts", &importer(&env, "Google", ""));
    let in_list = |all: &[tributary::store::ContactView], email: &str| {
        contact(all, email)
            .lists
            .iter()
            .find(|m| m.list == "Google")
            .map(|m| m.status)
    };
    let first = env.run("contacts").await.unwrap();
    assert_eq!((first.pass, first.counts.created), (PassKind::First, 25));
    let token = fake
        .requests()
        .last()
        .and_then(|r| r.q("requestSyncToken").map(str::to_string));
    assert_eq!(token.as_deref(), Some("true"));

    // Person 4 is deleted, person 6 changes: the token's listing holds only those two.
    people.edit(4, |c| c.deleted = true);
    people.edit(6, |c| c.job_title = Some("Head of buying".into()));
    fake.clear();
    let second = env.run("contacts").await.unwrap();
    assert_eq!(second.pass, PassKind::Incremental);
    let c = &second.counts;
    assert_eq!((c.pages, c.fetched, c.updated, c.deleted), (1, 2, 1, 1));
    let pages: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/people/me/connections")
        .collect();
    assert!(pages.iter().all(|r| r.q("syncToken").is_some()));
    let all = env.all_contacts().await;
    assert_eq!(all.len(), 25, "a deleted person's contact is kept");
    assert_eq!(
        in_list(&all, "person4@example.com"),
        Some(MembershipStatus::Removed)
    );
    assert_eq!(
        field(contact(&all, "person6@example.com"), "%GOOGLE_JOB_TITLE%"),
        Some("Head of buying")
    );

    // Restored at Google: active again.
    people.edit(4, |c| c.deleted = false);
    let third = env.run("contacts").await.unwrap();
    assert_eq!((third.counts.fetched, third.counts.updated), (1, 1));
    assert_eq!(
        in_list(&env.all_contacts().await, "person4@example.com"),
        Some(MembershipStatus::Active)
    );

    // Eight days on, the chain's full listing is too old: Google answers 410
    // EXPIRED_SYNC_TOKEN and the run reads everything again, saying so.
    let later = people.all().iter().map(|p| p.updated).max().unwrap() + chrono::Duration::days(8);
    people.edit_at(7, later, |c| c.city = Some("Oslo".into()));
    fake.clear();
    let fourth = env.run("contacts").await.unwrap();
    assert_eq!(fourth.outcome, RunOutcome::Completed);
    assert_eq!(fourth.pass, PassKind::FullRefresh);
    assert!(
        fourth
            .pass_restarted
            .as_deref()
            .is_some_and(|r| r.contains("change token")),
        "{:?}",
        fourth.pass_restarted
    );
    assert_eq!((fourth.counts.fetched, fourth.counts.updated), (25, 1));
    let pages: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/people/me/connections")
        .collect();
    assert!(pages[0].q("syncToken").is_some());
    assert!(pages[1..].iter().all(|r| r.q("syncToken").is_none()));
    // The new chain's token works.
    fake.clear();
    let fifth = env.run("contacts").await.unwrap();
    assert_eq!(
        (fifth.pass, fifth.counts.fetched),
        (PassKind::Incremental, 0)
    );
}
