//! `connectors.d/woocommerce.yaml` against the WooCommerce fake: Basic auth with the
//! consumer key, page numbers over a bare array, totals only in headers, daily passes.

use tributary::engine::RunOptions;
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, refused, shipped};
use crate::common::service::{self, People, realistic};
use crate::common::services::woocommerce;
use crate::common::sync_env::{SyncEnv, field};

const KEY: &str = "ck_0123456789abcdef0123456789abcdef01234567";
const SECRET: &str = "cs_fedcba9876543210fedcba9876543210fedcba98";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: woocommerce\ncredentials:\n  consumer_key: {{literal: {KEY}}}\n  consumer_secret: {}\nsettings: {{host: shop.example}}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("woo", SECRET)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_by_page_with_basic_auth_and_a_daily_pass_writing_only_changes() {
    let people = People::new(realistic(25));
    let fake = service::start(woocommerce::service(SECRET), &people).await;
    let env = SyncEnv::new();
    env.connector("woocommerce", &shipped("woocommerce", &fake.base));
    env.importer("shop", &importer(&env, "Shop", ""));

    let summary = env.run("shop").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));
    let requests = fake.requests();
    let pages: Vec<_> = requests.iter().map(|r| r.q("page").unwrap()).collect();
    assert_eq!(pages, ["1", "2", "3"], "the short third page ends the pass");
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"))
    );
    for r in &requests {
        assert_eq!(r.path, "/wp-json/wc/v3/customers");
        assert_eq!(r.header("authorization"), Some(basic.as_str()));
        assert_eq!(r.q("per_page"), Some("10"));
        assert_eq!(r.q("orderby"), Some("id"));
        assert_eq!(r.q("role"), Some("customer"));
    }

    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(two.phone.as_deref(), Some("+44 20 7946 0002"));
    assert_eq!(field(two, "%WOOCOMMERCE_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%WOOCOMMERCE_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%WOOCOMMERCE_PAYING_CUSTOMER%"), Some("true"));
    assert_eq!(
        field(two, "%WOOCOMMERCE_REGISTERED%"),
        Some("2024-04-01T10:00:02Z")
    );
    assert_eq!(
        contact(&all, "person5@example.com").organization,
        None,
        "empty company"
    );
    assert!(
        consent(&env, "Shop")
            .await
            .iter()
            .all(|(_, s, m)| *s == ContactStatus::Normal && *m == Some(MembershipStatus::Active)),
        "no consent in WooCommerce core: everyone active"
    );

    // The next daily pass after two customers change: everyone fetched, two written.
    people.edit(4, |c| c.company = Some("Neue Firma".into()));
    people.edit(9, |c| c.city = Some("Genève".into()));
    fake.clear();
    let summary = env
        .run_with(
            "shop",
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
        field(contact(&all, "person9@example.com"), "%WOOCOMMERCE_CITY%"),
        Some("Genève")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiple_of_the_page_size_ends_on_an_empty_page_the_role_filter_and_a_wrong_secret() {
    let people = People::new(realistic(30));
    let fake = service::start(woocommerce::service(SECRET), &people).await;
    let env = SyncEnv::new();
    env.connector("woocommerce", &shipped("woocommerce", &fake.base));
    env.importer("all", &importer(&env, "All", "filters: {role: all}\n"));
    let summary = env.run("all").await.unwrap();
    assert_eq!(summary.counts.fetched, 30);
    let requests = fake.requests();
    assert_eq!(requests.len(), 4, "three full pages, then an empty one");
    assert!(requests.iter().all(|r| r.q("role") == Some("all")));

    let bad = SyncEnv::new();
    bad.connector("woocommerce", &shipped("woocommerce", &fake.base));
    bad.importer(
        "shop",
        &format!(
            "connector: woocommerce\ncredentials:\n  consumer_key: {{literal: {KEY}}}\n  consumer_secret: {}\nsettings: {{host: shop.example}}\nlist: L\n",
            bad.secret("s", "cs_wrong")
        ),
    );
    refused(&bad, "shop", &["401"], &["cs_wrong"]).await;
}
