//! `connectors.d/tactile.yaml` against a fake written from Tactile CRM's last published
//! documentation (the service appears retired): `api_token` in the query, page numbers
//! until `num_pages`, `updated_after`, `can_email`, the organisation filter.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, refused, shipped};
use crate::common::service::{self, Consent, People, realistic};
use crate::common::services::tactile;
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "3f8a1c0e9b7d4a6f2e5c8b1d0a9f7e6c";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: tactile\ncredentials:\n  api_token: {}\nsettings: {{account: acme}}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("tactile", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_by_page_until_num_pages_can_email_and_an_incremental_run() {
    let people = People::new(realistic(25));
    let fake = service::start(tactile::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("tactile", &shipped("tactile", &fake.base));
    env.importer("t", &importer(&env, "Tactile", ""));

    let summary = env.run("t").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25), "{c:?}");
    let requests = fake.requests();
    let pages: Vec<_> = requests.iter().map(|r| r.q("page").unwrap()).collect();
    assert_eq!(
        pages,
        ["1", "2", "3"],
        "cur_page reaching num_pages ends the pass"
    );
    for r in &requests {
        assert_eq!(r.path, "/people");
        assert_eq!(r.q("api_token"), Some(TOKEN));
        assert_eq!(r.q("limit"), Some("10"));
        assert_eq!(r.q("updated_after"), None, "first run: everyone");
    }

    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(
        (two.first_name.as_deref(), two.last_name.as_deref()),
        (Some("Łukasz"), Some("Wałęsa"))
    );
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(two.phone.as_deref(), Some("+44 20 7946 0002"));
    assert_eq!(field(two, "%TACTILE_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%TACTILE_TOWN%"), Some("Zürich"));
    assert_eq!(field(two, "%TACTILE_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%TACTILE_TAGS%"), Some(r#"["customer","t2"]"#));
    assert_eq!(field(two, "%TACTILE_OWNER%"), Some("rep10"));
    // Only the "do not email" flag exists: person 3 unsubscribed, everyone else mailable.
    for (email, status, member) in consent(&env, "Tactile").await {
        let want = match email.as_str() {
            "person3@example.com" => Some(MembershipStatus::Unsubscribed),
            _ => Some(MembershipStatus::Active),
        };
        assert_eq!((status, member), (ContactStatus::Normal, want), "{email}");
    }

    // Two people change; the next run asks from the newest `lastupdated` less a minute.
    people.edit(4, |c| c.company = Some("Neue Firma".into()));
    people.edit(6, |c| c.consent = Consent::Unsubscribed);
    fake.clear();
    let summary = env.run("t").await.unwrap();
    let c = &summary.counts;
    assert_eq!(
        (c.fetched, c.updated, c.unchanged, c.created),
        (3, 2, 1, 0),
        "{c:?}"
    );
    let requests = fake.requests();
    assert_eq!(
        requests[0].q("updated_after"),
        Some("2024-05-01T14:09:00+00:00"),
        "person 25's time, less the lookback"
    );
    let all = env.all_contacts().await;
    assert_eq!(
        contact(&all, "person4@example.com").organization.as_deref(),
        Some("Neue Firma")
    );
    assert_eq!(
        super::membership(contact(&all, "person6@example.com"), "Tactile"),
        Some(MembershipStatus::Unsubscribed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_organisation_filter_and_a_wrong_token() {
    let people = People::new(realistic(25));
    let fake = service::start(tactile::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("tactile", &shipped("tactile", &fake.base));
    env.importer(
        "org",
        &importer(&env, "Org", "filters: {organisation_id: \"72\"}\n"),
    );
    env.run("org").await.unwrap();
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.q("organisation_id") == Some("72"))
    );
    let emails: Vec<String> = env
        .contacts("Org")
        .await
        .into_iter()
        .map(|c| c.email)
        .collect();
    assert_eq!(
        emails,
        [
            "person14@example.com",
            "person2@example.com",
            "person8@example.com"
        ]
    );

    let bad = SyncEnv::new();
    bad.connector("tactile", &shipped("tactile", &fake.base));
    bad.importer(
        "t",
        &format!(
            "connector: tactile\ncredentials:\n  api_token: {}\nsettings: {{account: acme}}\nlist: L\n",
            bad.secret("t", "wrong-token")
        ),
    );
    refused(&bad, "t", &["401"], &["wrong-token"]).await;
}
