//! `connectors.d/bigcommerce-v2.yaml` against the BigCommerce v2 fake: bare arrays, the
//! 204 past the end, and its rate limit (`X-Rate-Limit-*` headers and a 429).

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, shipped};
use crate::common::service::{self, People, realistic};
use crate::common::services::bigcommerce_v2::{self, STORE};
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "bc2v0123456789abcdef0123456789a";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: bigcommerce-v2\ncredentials:\n  access_token: {}\nsettings: {{store_hash: {STORE}}}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("bc", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_array_pages_end_at_204_through_a_429_and_an_incremental_run() {
    let people = People::new(realistic(30));
    let fake = service::start(bigcommerce_v2::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("bigcommerce-v2", &shipped("bigcommerce-v2", &fake.base));
    env.importer("store", &importer(&env, "Store", ""));

    let summary = env.run("store").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.fetched, c.created), (30, 30));

    // Pages 1-3 full, page 4 answered 204; the third request of the window was refused
    // with a 429 and sent again after the reset the headers announced.
    let requests = fake.requests();
    let pages: Vec<_> = requests.iter().map(|r| r.q("page").unwrap()).collect();
    assert_eq!(pages, ["1", "2", "3", "3", "4"]);
    for r in &requests {
        assert_eq!(r.path, format!("/stores/{STORE}/v2/customers"));
        assert_eq!(r.header("x-auth-token"), Some(TOKEN));
        assert_eq!(r.header("accept"), Some("application/json"));
        assert_eq!(r.q("limit"), Some("10"));
        assert_eq!(r.q("min_date_modified"), None, "first run: everyone");
        assert_eq!(r.q("customer_group_id"), None);
    }

    let all = env.all_contacts().await;
    let eight = contact(&all, "person8@example.com");
    assert_eq!(eight.organization.as_deref(), Some("Firma 2"));
    assert_eq!(eight.phone, None, "an empty phone stores nothing");
    assert_eq!(
        contact(&all, "person6@example.com").phone.as_deref(),
        Some("+44 20 7946 0006")
    );
    assert_eq!(field(eight, "%BIGCOMMERCE_CUSTOMER_GROUP%"), Some("3"));
    assert_eq!(
        field(eight, "%BIGCOMMERCE_REGISTERED%"),
        Some("2024-04-01T10:00:08Z")
    );
    let seven = contact(&all, "person7@example.com");
    assert_eq!(seven.last_name, None, "an empty last name stores nothing");
    assert_eq!(contact(&all, "person5@example.com").organization, None);
    // No consent on v2 customers: everyone active (documented in the connector).
    assert!(
        consent(&env, "Store")
            .await
            .iter()
            .all(|(_, s, m)| *s == ContactStatus::Normal && *m == Some(MembershipStatus::Active))
    );

    // Two customers change: the next run asks from the newest date_modified (RFC 2822,
    // inclusive) and writes only them.
    people.edit(4, |c| c.company = Some("Neue Firma".into()));
    people.edit(12, |c| c.first = Some("Renée".into()));
    fake.clear();
    let summary = env.run("store").await.unwrap();
    let c = &summary.counts;
    assert_eq!((c.fetched, c.updated, c.unchanged, c.created), (3, 2, 1, 0));
    let requests = fake.requests();
    let since = requests[0].q("min_date_modified").unwrap();
    assert_eq!(
        since, "Wed, 1 May 2024 15:00:00 +0000",
        "person 30's date_modified"
    );
    let all = env.all_contacts().await;
    assert_eq!(
        contact(&all, "person4@example.com").organization.as_deref(),
        Some("Neue Firma")
    );
    assert_eq!(
        contact(&all, "person12@example.com").first_name.as_deref(),
        Some("Renée")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_group_filter_goes_to_bigcommerce_and_nothing_is_a_204() {
    let people = People::new(realistic(30));
    let fake = service::start(bigcommerce_v2::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("bigcommerce-v2", &shipped("bigcommerce-v2", &fake.base));
    env.importer(
        "group",
        &importer(&env, "Group 2", "filters: {customer_group: 2}\n"),
    );
    env.run("group").await.unwrap();
    let emails: Vec<String> = env
        .contacts("Group 2")
        .await
        .into_iter()
        .map(|c| c.email)
        .collect();
    assert_eq!(emails.len(), 10, "ids 1, 4, ..., 28: {emails:?}");
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.q("customer_group_id") == Some("2"))
    );

    // A store without customers answers the first page with 204: nothing to do.
    let empty = People::new(Vec::new());
    let fake = service::start(bigcommerce_v2::service(TOKEN), &empty).await;
    let env = SyncEnv::new();
    env.connector("bigcommerce-v2", &shipped("bigcommerce-v2", &fake.base));
    env.importer("store", &importer(&env, "Store", ""));
    let summary = env.run("store").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!(summary.counts.fetched, 0);
}
