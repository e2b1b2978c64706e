//! `connectors.d/batchbook.yaml` against a fake of Batchbook's last published API.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, shipped};
use crate::common::service::{self, People, realistic};
use crate::common::services::batchbook;
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "bb-0123456789abcdef";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: batchbook\ncredentials:\n  api_token: {}\nsettings: {{account: acme}}\nlist: {list}\n{extra}",
        env.secret("bb", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_in_fixed_pages_until_an_empty_one_and_an_incremental_run() {
    let people = People::new(realistic(70));
    let fake = service::start(batchbook::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("batchbook", &shipped("batchbook", &fake.base));
    env.importer("people", &importer(&env, "People", ""));

    let summary = env.run("people").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.fetched, c.created), (70, 70));
    let pages: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| r.q("page").unwrap().to_string())
        .collect();
    assert_eq!(
        pages,
        ["1", "2", "3", "4"],
        "30, 30, 10, then the empty page"
    );
    for r in fake.requests() {
        assert_eq!(r.q("auth_token"), Some(TOKEN));
        assert_eq!(
            (r.q("updated_since"), r.q("champion"), r.q("tags")),
            (None, None, None)
        );
    }
    let all = env.all_contacts().await;
    let six = contact(&all, "person6@example.com");
    assert_eq!(six.phone.as_deref(), Some("+44 20 7946 0006"));
    assert_eq!(
        field(six, "%BATCHBOOK_COMPANY_AFFILIATIONS%"),
        Some(r#"["Buyer"]"#)
    );
    assert_eq!(field(six, "%BATCHBOOK_TAGS%"), Some(r#"["customer","t0"]"#));
    assert_eq!(field(six, "%BATCHBOOK_CITY%"), Some("Zürich"));
    assert_eq!(field(six, "%BATCHBOOK_CHAMPION%"), Some("false"));
    assert!(
        consent(&env, "People")
            .await
            .iter()
            .all(|(_, s, m)| *s == ContactStatus::Normal && *m == Some(MembershipStatus::Active))
    );

    people.edit(12, |c| c.job_title = Some("Owner".into()));
    people.edit(40, |c| c.city = Some("Gdańsk".into()));
    fake.clear();
    let summary = env.run("people").await.unwrap();
    let c = &summary.counts;
    // `updated_since` taken as inclusive: person 70, the watermark, comes back unchanged.
    assert_eq!((c.fetched, c.updated, c.unchanged, c.created), (3, 2, 1, 0));
    assert!(fake.requests()[0].q("updated_since").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_champion_filter_is_batchbooks_own() {
    let people = People::new(realistic(40));
    let fake = service::start(batchbook::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("batchbook", &shipped("batchbook", &fake.base));
    env.importer(
        "champions",
        &importer(&env, "Champions", "filters: {champion: true}\n"),
    );
    env.importer(
        "others",
        &importer(&env, "Others", "filters: {champion: false}\n"),
    );
    env.run("champions").await.unwrap();
    env.run("others").await.unwrap();
    assert!(fake.requests().iter().all(|r| r.q("champion").is_some()));
    assert_eq!(
        env.contacts("Champions").await.len(),
        8,
        "ids divisible by 5"
    );
    assert_eq!(
        env.contacts("Others").await.len(),
        32,
        "false is not `exists`"
    );
}
