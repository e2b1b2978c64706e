//! `connectors.d/bigcommerce.yaml` against the BigCommerce v3 fake.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, shipped};
use crate::common::service::{self, People, realistic};
use crate::common::services::bigcommerce::{self, STORE};
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "bc0123456789abcdef0123456789abc";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: bigcommerce\ncredentials:\n  access_token: {}\nsettings: {{store_hash: {STORE}}}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("bc", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_in_pages_with_the_documented_since_form() {
    let people = People::new(realistic(25));
    let fake = service::start(bigcommerce::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("bigcommerce", &shipped("bigcommerce", &fake.base));
    env.importer("store", &importer(&env, "Store", ""));

    let summary = env.run("store").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));
    let requests = fake.requests();
    // Safe paging (issue 17): each later page is a new query from the newest
    // `date_modified` committed (`:min` is inclusive), page 1 again, so a customer edited
    // mid-pass shifts nobody past the pass.
    let pages: Vec<_> = requests.iter().map(|r| r.q("page").unwrap()).collect();
    assert_eq!(pages, ["1", "1", "1"]);
    let since: Vec<_> = requests.iter().map(|r| r.q("date_modified:min")).collect();
    assert_eq!(
        since,
        [
            None,
            Some("2024-05-01T11:40:00"),
            Some("2024-05-01T13:10:00")
        ]
    );
    for r in &requests {
        assert_eq!(r.header("x-auth-token"), Some(TOKEN));
        assert_eq!(r.q("limit"), Some("10"));
        assert_eq!(r.q("sort"), Some("date_modified:asc"));
        assert_eq!(r.q("include"), Some("addresses"));
        assert_eq!(r.q("customer_group_id:in"), None);
    }

    let all = env.all_contacts().await;
    let eight = contact(&all, "person8@example.com");
    assert_eq!(eight.organization.as_deref(), Some("Firma 2"));
    assert_eq!(field(eight, "%BIGCOMMERCE_CUSTOMER_GROUP%"), Some("3"));
    assert_eq!(field(eight, "%BIGCOMMERCE_CHANNELS%"), Some(r#"["1"]"#));
    assert_eq!(field(eight, "%BIGCOMMERCE_CITY%"), Some("London"));
    assert_eq!(field(eight, "%BIGCOMMERCE_COUNTRY%"), Some("GB"));
    assert_eq!(
        field(eight, "%BIGCOMMERCE_REGISTERED%"),
        Some("2024-04-01T10:00:08Z")
    );
    // No consent on BigCommerce customers: everyone active (documented).
    assert!(
        consent(&env, "Store")
            .await
            .iter()
            .all(|(_, s, m)| *s == ContactStatus::Normal && *m == Some(MembershipStatus::Active))
    );

    people.edit(4, |c| c.company = Some("Neue Firma".into()));
    people.edit(6, |c| c.phone = Some("+49 30 1234567".into()));
    fake.clear();
    let summary = env.run("store").await.unwrap();
    let c = &summary.counts;
    // `:min` is inclusive: the newest customer of the first run comes back, unchanged.
    assert_eq!((c.fetched, c.updated, c.unchanged, c.created), (3, 2, 1, 0));
    let since = fake.requests()[0]
        .q("date_modified:min")
        .unwrap()
        .to_string();
    let newest = people.all().iter().find(|p| p.id == 25).unwrap().updated;
    assert_eq!(
        since,
        newest.format("%Y-%m-%dT%H:%M:%S").to_string(),
        "no zone suffix"
    );
    let all = env.all_contacts().await;
    assert_eq!(
        contact(&all, "person4@example.com").organization.as_deref(),
        Some("Neue Firma")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_group_filter_goes_to_bigcommerce() {
    let people = People::new(realistic(25));
    let fake = service::start(bigcommerce::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("bigcommerce", &shipped("bigcommerce", &fake.base));
    env.importer(
        "wholesale",
        &importer(
            &env,
            "Wholesale",
            "filters: {customer_groups: [\"2\", \"3\"]}\n",
        ),
    );
    env.run("wholesale").await.unwrap();
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.q("customer_group_id:in") == Some("2,3"))
    );
    let count = env.contacts("Wholesale").await.len();
    assert_eq!(count, (1..=25).filter(|i| i % 3 != 0).count());
}
