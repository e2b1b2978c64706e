//! `connectors.d/nimble.yaml` against the Nimble fake: bearer auth, page numbers until
//! `meta.pages`, updated-since inside the JSON `query` with day granularity.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, refused, shipped};
use crate::common::service::{self, People, realistic};
use crate::common::services::nimble;
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "nimble-0123456789abcdef";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: nimble\ncredentials:\n  token: {}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("nimble", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_by_page_fields_by_display_name_and_a_day_granular_incremental_run() {
    let people = People::new(realistic(25));
    let fake = service::start(nimble::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("nimble", &shipped("nimble", &fake.base));
    env.importer("crm", &importer(&env, "Nimble", ""));

    let summary = env.run("crm").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));
    let requests = fake.requests();
    let pages: Vec<_> = requests.iter().map(|r| r.q("page").unwrap()).collect();
    assert_eq!(pages, ["1", "2", "3"]);
    for r in &requests {
        assert_eq!(r.path, "/api/v1/contacts");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(r.q("per_page"), Some("10"));
        assert_eq!(r.q("sort"), Some("updated:asc"));
        assert_eq!(r.q("record_type"), Some("person"), "first run: persons");
        assert_eq!(r.q("query"), None);
    }

    let all = env.all_contacts().await;
    let three = contact(&all, "person3@example.com");
    assert_eq!(
        (three.first_name.as_deref(), three.last_name.as_deref()),
        (Some("Søren"), Some("Kierkegaard"))
    );
    assert_eq!(three.organization.as_deref(), Some("Firma 3"));
    assert_eq!(three.phone.as_deref(), Some("+44 20 7946 0003"));
    let two = contact(&all, "person2@example.com");
    assert_eq!(field(two, "%NIMBLE_TAGS%"), Some(r#"["customer","t2"]"#));
    assert_eq!(field(two, "%NIMBLE_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%NIMBLE_LEAD_STATUS%"), Some("lead"));
    assert_eq!(
        field(two, "%NIMBLE_OWNER_ID%"),
        Some("5049f696a694620a07000010")
    );
    // Nimble keeps no consent: everyone active (documented in the connector).
    assert!(
        consent(&env, "Nimble")
            .await
            .iter()
            .all(|(_, s, m)| *s == ContactStatus::Normal && *m == Some(MembershipStatus::Active))
    );

    // Two contacts change. `updated` has day granularity: the query starts a whole day
    // before the watermark's day, so everyone updated that day comes again; only the
    // two changed ones are written.
    people.edit(4, |c| c.company = Some("Neue Firma".into()));
    people.edit(6, |c| c.first = Some("Renée".into()));
    fake.clear();
    let summary = env.run("crm").await.unwrap();
    let c = &summary.counts;
    assert_eq!(
        (c.fetched, c.updated, c.unchanged, c.created),
        (25, 2, 23, 0)
    );
    let requests = fake.requests();
    let query: serde_json::Value = serde_json::from_str(requests[0].q("query").unwrap()).unwrap();
    assert_eq!(query["updated"]["range"]["start_date"], "2024-04-30");
    assert_eq!(requests[0].q("record_type"), None, "not with query");
    let all = env.all_contacts().await;
    assert_eq!(
        contact(&all, "person4@example.com").organization.as_deref(),
        Some("Neue Firma")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tag_filter_and_a_wrong_token() {
    let people = People::new(realistic(25));
    let fake = service::start(nimble::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("nimble", &shipped("nimble", &fake.base));
    env.importer("t0", &importer(&env, "T0", "filters: {tag: t0}\n"));
    let filtered = env.run("t0").await.unwrap();
    // Client side: the service was asked for everyone and sent everyone; the filter
    // decided what landed.
    assert!(filtered.counts.fetched as usize >= people.all().len());
    assert_eq!(env.contacts("T0").await.len(), 8, "ids divisible by 3");

    let bad = SyncEnv::new();
    bad.connector("nimble", &shipped("nimble", &fake.base));
    bad.importer(
        "crm",
        &format!(
            "connector: nimble\ncredentials:\n  token: {}\nlist: L\n",
            bad.secret("t", "wrong-token")
        ),
    );
    refused(&bad, "crm", &["401"], &["wrong-token"]).await;
}
