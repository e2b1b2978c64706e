//! `connectors.d/freshsales.yaml` against the Freshsales fake: `Token token=` auth, one
//! saved view named by the importer, page numbers until `meta.total_pages`, the
//! subscription status, a daily pass writing only what changed, the tag filter.

use tributary::engine::RunOptions;
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, membership, refused, shipped};
use crate::common::service::{self, Consent, People, realistic};
use crate::common::services::freshsales::{self, VIEW};
use crate::common::sync_env::{SyncEnv, field};

const KEY: &str = "sfg999666t673t7t82";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: freshsales\ncredentials:\n  api_key: {}\nsettings: {{domain: acme.myfreshworks.com, view_id: \"{VIEW}\"}}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("freshsales", KEY)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_view_by_page_token_auth_subscription_status_and_a_daily_pass() {
    let people = People::new(realistic(25));
    let fake = service::start(freshsales::service(KEY), &people).await;
    let env = SyncEnv::new();
    env.connector("freshsales", &shipped("freshsales", &fake.base));
    env.importer("fs", &importer(&env, "Freshsales", ""));

    let summary = env.run("fs").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25), "{c:?}");
    let requests = fake.requests();
    let pages: Vec<_> = requests.iter().map(|r| r.q("page").unwrap()).collect();
    assert_eq!(pages, ["1", "2", "3"], "meta.total_pages ends the pass");
    for r in &requests {
        assert_eq!(r.path, format!("/crm/sales/api/contacts/view/{VIEW}"));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Token token={KEY}").as_str())
        );
        assert_eq!(r.q("per_page"), Some("10"));
        assert_eq!(r.q("sort"), Some("updated_at"));
        assert_eq!(r.q("sort_type"), Some("asc"));
    }

    let all = env.all_contacts().await;
    let three = contact(&all, "person3@example.com");
    assert_eq!(
        (three.first_name.as_deref(), three.last_name.as_deref()),
        (Some("Søren"), Some("Kierkegaard"))
    );
    assert_eq!(three.phone.as_deref(), Some("+44 20 7946 0003"));
    let two = contact(&all, "person2@example.com");
    assert_eq!(field(two, "%FRESHSALES_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%FRESHSALES_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%FRESHSALES_COUNTRY%"), Some("CH"));
    assert_eq!(
        field(two, "%FRESHSALES_TAGS%"),
        Some(r#"["customer","t2"]"#)
    );
    assert_eq!(field(two, "%FRESHSALES_OWNER_ID%"), Some("16000000110"));
    assert_eq!(
        field(two, "%FRESHSALES_LIFECYCLE_STAGE_ID%"),
        Some("16000030001")
    );
    // Unsubscribed, "not sure" (pending) and subscribed; Freshsales exposes no bounce.
    for (email, status, member) in consent(&env, "Freshsales").await {
        let id: u64 = email[6..email.find('@').unwrap()].parse().unwrap();
        let want = match id {
            3 => Some(MembershipStatus::Unsubscribed),
            7 | 11 | 13 => Some(MembershipStatus::Pending),
            _ => Some(MembershipStatus::Active),
        };
        assert_eq!((status, member), (ContactStatus::Normal, want), "{email}");
    }

    // The next daily pass after two contacts change: everyone fetched, two written; the
    // "not sure" contact who subscribes becomes active.
    people.edit(7, |c| c.consent = Consent::Subscribed);
    people.edit(9, |c| c.city = Some("Genève".into()));
    fake.clear();
    let summary = env
        .run_with(
            "fs",
            RunOptions {
                full_refresh: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    let c = &summary.counts;
    assert_eq!((c.fetched, c.updated, c.unchanged), (25, 2, 23), "{c:?}");
    let all = env.all_contacts().await;
    assert_eq!(
        field(contact(&all, "person9@example.com"), "%FRESHSALES_CITY%"),
        Some("Genève")
    );
    assert_eq!(
        membership(contact(&all, "person7@example.com"), "Freshsales"),
        Some(MembershipStatus::Active)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tag_filter_and_a_wrong_key() {
    let people = People::new(realistic(25));
    let fake = service::start(freshsales::service(KEY), &people).await;
    let env = SyncEnv::new();
    env.connector("freshsales", &shipped("freshsales", &fake.base));
    env.importer("t2", &importer(&env, "T2", "filters: {tag: t2}\n"));
    env.run("t2").await.unwrap();
    // Applied here: the view was read whole.
    assert_eq!(fake.requests().len(), 3);
    let emails: Vec<String> = env
        .contacts("T2")
        .await
        .into_iter()
        .map(|c| c.email)
        .collect();
    assert_eq!(emails.len(), 8, "ids 2, 5, ..., 23: {emails:?}");

    let bad = SyncEnv::new();
    bad.connector("freshsales", &shipped("freshsales", &fake.base));
    bad.importer(
        "fs",
        &format!(
            "connector: freshsales\ncredentials:\n  api_key: {}\nsettings: {{domain: acme.myfreshworks.com, view_id: \"{VIEW}\"}}\nlist: L\n",
            bad.secret("k", "wrong-key")
        ),
    );
    refused(&bad, "fs", &["401"], &["wrong-key"]).await;
}
