//! `connectors.d/stripe.yaml` against the Stripe customers fake.

use chrono::Duration;
use tributary::engine::RunOptions;
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, shipped};
use crate::common::service::{self, People, epoch, realistic};
use crate::common::services::stripe;
use crate::common::sync_env::{SyncEnv, field};

const KEY: &str = "rk_test_0123456789abcdefghijwxyz";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: stripe\ncredentials:\n  secret_key: {}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("stripe", KEY)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_newest_first_by_last_id_and_a_daily_pass() {
    let people = People::new(realistic(25));
    let fake = service::start(stripe::service(KEY), &people).await;
    let env = SyncEnv::new();
    env.connector("stripe", &shipped("stripe", &fake.base));
    env.importer("billing", &importer(&env, "Billing", ""));

    let summary = env.run("billing").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));
    // Newest first: the second page starts after customer 16, the third after 6.
    let afters: Vec<Option<String>> = fake
        .requests()
        .iter()
        .map(|r| r.q("starting_after").map(str::to_string))
        .collect();
    assert_eq!(
        afters,
        [None, Some(stripe::id_of(16)), Some(stripe::id_of(6))]
    );
    for r in fake.requests() {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(r.q("limit"), Some("10"));
        assert_eq!(r.q("created[gte]"), None);
    }

    let all = env.all_contacts().await;
    let ten = contact(&all, "person10@example.com");
    assert_eq!(
        (ten.first_name.as_deref(), ten.last_name.as_deref()),
        (Some("Łukasz"), Some("Wałęsa")),
        "the full name split"
    );
    assert_eq!(field(ten, "%STRIPE_DELINQUENT%"), Some("true"));
    assert_eq!(field(ten, "%STRIPE_CITY%"), Some("Zürich"));
    assert_eq!(field(ten, "%STRIPE_COUNTRY%"), Some("CH"));
    assert_eq!(
        field(ten, "%STRIPE_CUSTOMER_SINCE%"),
        Some("2024-04-01T10:00:10Z")
    );
    // No consent at Stripe: everyone active (documented).
    assert!(
        consent(&env, "Billing")
            .await
            .iter()
            .all(|(_, s, m)| *s == ContactStatus::Normal && *m == Some(MembershipStatus::Active))
    );

    people.edit(3, |c| c.city = Some("Lisboa".into()));
    people.edit(4, |c| c.phone = Some("+351 21 000 0000".into()));
    let summary = env
        .run_with(
            "billing",
            RunOptions {
                full_refresh: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    let c = &summary.counts;
    assert_eq!((c.fetched, c.updated, c.unchanged), (25, 2, 23));

    // Customers 7 and 8 are deleted: the next daily pass first reads the
    // `customer.deleted` events (newest first, paged by the last event's id), and their
    // memberships become `removed`; the contacts are kept.
    people.edit(7, |c| c.deleted = true);
    people.edit(8, |c| c.deleted = true);
    fake.clear();
    let summary = env
        .run_with(
            "billing",
            RunOptions {
                full_refresh: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((summary.counts.deleted, summary.counts.fetched), (2, 23));
    let events: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/events")
        .collect();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|r| r.q("type") == Some("customer.deleted"))
    );
    let members = consent(&env, "Billing").await;
    for (email, _, member) in &members {
        let want = match email.as_str() {
            "person7@example.com" | "person8@example.com" => MembershipStatus::Removed,
            _ => MembershipStatus::Active,
        };
        assert_eq!(*member, Some(want), "{email}");
    }
    assert_eq!(members.len(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_created_after_filter_goes_to_stripe_in_unix_seconds() {
    let people = People::new(realistic(25));
    let fake = service::start(stripe::service(KEY), &people).await;
    let env = SyncEnv::new();
    env.connector("stripe", &shipped("stripe", &fake.base));
    let after = epoch() - Duration::days(30) + Duration::seconds(20);
    env.importer(
        "recent",
        &importer(
            &env,
            "Recent",
            &format!("filters: {{created_after: \"{}\"}}\n", after.to_rfc3339()),
        ),
    );
    env.run("recent").await.unwrap();
    let sent = after.timestamp().to_string();
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.q("created[gte]") == Some(sent.as_str()))
    );
    assert_eq!(env.contacts("Recent").await.len(), 6, "customers 20 to 25");
}
