//! `connectors.d/pipedrive-v1.yaml` (deprecated) against a fake of Pipedrive's v1 API.

use tributary::engine::RunOptions;
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, shipped};
use crate::common::service::{self, People, realistic};
use crate::common::services::pipedrive_v1;
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: pipedrive-v1\ncredentials:\n  api_token: {}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("pd1", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persons_by_offset_until_no_more_items_and_a_weekly_pass() {
    let people = People::new(realistic(25));
    let fake = service::start(pipedrive_v1::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("pipedrive-v1", &shipped("pipedrive-v1", &fake.base));
    env.importer("persons", &importer(&env, "Persons", ""));

    let summary = env.run("persons").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));
    let starts: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| r.q("start").unwrap().to_string())
        .collect();
    assert_eq!(
        starts,
        ["0", "10", "20"],
        "more_items_in_collection false ends it"
    );
    for r in fake.requests() {
        assert_eq!(r.q("api_token"), Some(TOKEN));
        assert_eq!((r.q("limit"), r.q("filter_id")), (Some("10"), None));
    }
    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(
        two.organization.as_deref(),
        Some("Firma 2"),
        "v1 expands org_id"
    );
    assert_eq!(two.phone.as_deref(), Some("+44 20 7946 0002"));
    assert_eq!(field(two, "%PIPEDRIVE_LABELS%"), Some(r#"["1"]"#));
    assert!(
        consent(&env, "Persons")
            .await
            .iter()
            .all(|(_, s, m)| *s == ContactStatus::Normal && *m == Some(MembershipStatus::Active))
    );

    people.edit(2, |c| c.company = Some("Firma Neu".into()));
    people.edit(3, |c| c.phone = Some("+44 20 7946 9999".into()));
    let summary = env
        .run_with(
            "persons",
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
async fn a_saved_filter_goes_to_pipedrive() {
    let people = People::new(realistic(25));
    let fake = service::start(pipedrive_v1::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("pipedrive-v1", &shipped("pipedrive-v1", &fake.base));
    env.importer(
        "customers",
        &importer(&env, "Customers", "filters: {filter_id: 7}\n"),
    );
    env.run("customers").await.unwrap();
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.q("filter_id") == Some("7"))
    );
    assert_eq!(
        env.contacts("Customers").await.len(),
        13,
        "odd ids are customers"
    );
}
