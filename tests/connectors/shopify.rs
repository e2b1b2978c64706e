//! `connectors.d/shopify.yaml` against the Shopify REST Admin fake.

use chrono::DateTime;
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, membership, refused, shipped};
use crate::common::service::{self, Consent, People, realistic};
use crate::common::services::shopify::{self, VERSION};
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "shpat_0123456789abcdef0123456789abcdef";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: shopify\ncredentials:\n  access_token: {}\nsettings: {{shop: acme}}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("shopify", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_consent_states_link_pages_and_an_incremental_run() {
    let people = People::new(realistic(25));
    let fake = service::start(shopify::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("shopify", &shipped("shopify", &fake.base));
    env.importer("shop", &importer(&env, "Shop", ""));

    let summary = env.run("shop").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));

    // The default API version; the Link header's URL followed verbatim: the pages after
    // the first carry only `limit` and `page_info` (Shopify refuses anything else).
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.path, format!("/admin/api/{VERSION}/customers.json"));
        assert_eq!(r.header("x-shopify-access-token"), Some(TOKEN));
        assert_eq!(r.q("limit"), Some("10"));
    }
    assert_eq!(requests[0].q("page_info"), None);
    assert_eq!(requests[0].q("updated_at_min"), None);
    for r in &requests[1..] {
        let names: Vec<&str> = r.query.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["limit", "page_info"]);
    }

    let all = env.all_contacts().await;
    assert_eq!(all.len(), 25);
    let two = contact(&all, "person2@example.com");
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(two.phone.as_deref(), Some("+442079460002"));
    assert_eq!(field(two, "%SHOPIFY_TAGS%"), Some(r#"["customer","t2"]"#));
    assert_eq!(field(two, "%SHOPIFY_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%SHOPIFY_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%SHOPIFY_ACCOUNT_STATE%"), Some("enabled"));
    assert_eq!(
        field(two, "%SHOPIFY_CUSTOMER_SINCE%"),
        Some("2024-04-01T10:00:02Z"),
        "the shop's -04:00 offset read as such"
    );

    for (email, status, member) in consent(&env, "Shop").await {
        let id: u64 = email[6..email.find('@').unwrap()].parse().unwrap();
        let want = match id {
            3 => (ContactStatus::Normal, Some(MembershipStatus::Unsubscribed)),
            5 => (ContactStatus::Bounced, None),
            7 | 11 | 13 => (ContactStatus::Normal, Some(MembershipStatus::Pending)),
            _ => (ContactStatus::Normal, Some(MembershipStatus::Active)),
        };
        assert_eq!((status, member), want, "{email}");
    }

    // Person 7 confirms the double opt-in; person 5 (bounced) is renamed and says
    // subscribed: renamed, still bounced.
    people.edit(7, |c| c.consent = Consent::Subscribed);
    people.edit(5, |c| {
        c.consent = Consent::Subscribed;
        c.first = Some("Zoé".into());
    });
    fake.clear();
    let summary = env.run("shop").await.unwrap();
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.updated, c.created), (1, 2, 2, 0));
    let requests = fake.requests();
    let since = DateTime::parse_from_rfc3339(requests[0].q("updated_at_min").unwrap()).unwrap();
    let newest_before = people.all().iter().find(|p| p.id == 25).unwrap().updated;
    assert_eq!(since, newest_before, "the watermark, no lookback");
    let all = env.all_contacts().await;
    assert_eq!(
        membership(contact(&all, "person7@example.com"), "Shop"),
        Some(MembershipStatus::Active)
    );
    let five = contact(&all, "person5@example.com");
    assert_eq!(five.first_name.as_deref(), Some("Zoé"));
    assert_eq!(five.status, ContactStatus::Bounced);
    assert_eq!(membership(five, "Shop"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tag_filter_and_a_wrong_token() {
    let people = People::new(realistic(25));
    let fake = service::start(shopify::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("shopify", &shipped("shopify", &fake.base));
    env.importer("t1", &importer(&env, "T1", "filters: {tag: t1}\n"));
    let summary = env.run("t1").await.unwrap();
    assert_eq!(
        summary.counts.fetched, 25,
        "a client-side filter reads everyone"
    );
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

    let bad = SyncEnv::new();
    bad.connector("shopify", &shipped("shopify", &fake.base));
    bad.importer(
        "shop",
        &format!(
            "connector: shopify\ncredentials:\n  access_token: {}\nsettings: {{shop: acme}}\nlist: L\n",
            bad.secret("t", "shpat_wrong")
        ),
    );
    refused(&bad, "shop", &["401"], &["shpat_wrong"]).await;
}

/// A Dev Dashboard app: the client credentials grant, its 24-hour token renewed when
/// Shopify refuses it, and the REST limit's 429 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_a_token_renewed_and_a_429() {
    const CLIENT: (&str, &str) = ("a1b2c3d4e5f6", "shpss_0123456789abcdef");
    let people = People::new(realistic(25));
    let tokens = service::Tokens::new("shpat_cc_");
    let fake = service::start(
        shopify::client_credentials_service(CLIENT, &tokens),
        &people,
    )
    .await;
    let env = SyncEnv::new();
    env.connector("shopify", &shipped("shopify", &fake.base));
    env.importer(
        "shop",
        &format!(
            "connector: shopify\nauth: client_credentials\ncredentials:\n  client_id: {{literal: {}}}\n  client_secret: {}\nsettings: {{shop: acme}}\nlist: Shop\npage_size: 10\n",
            CLIENT.0,
            env.secret("cs", CLIENT.1)
        ),
    );
    let summary = env.run("shop").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    assert_eq!((summary.counts.pages, summary.counts.created), (3, 25));
    let requests = fake.requests();
    assert_eq!(requests[0].path, "/admin/oauth/access_token");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(requests[0].body.as_bytes())
        .into_owned()
        .collect();
    assert!(form.contains(&("grant_type".into(), "client_credentials".into())));
    assert!(form.contains(&("client_id".into(), CLIENT.0.into())));
    // Three pages, the third refused once (429, Retry-After) and sent again.
    assert_eq!(requests.len(), 1 + 4);
    for r in &requests[1..] {
        assert_eq!(r.header("x-shopify-access-token"), Some("shpat_cc_1"));
    }
    assert_eq!(
        requests[3].raw_query, requests[4].raw_query,
        "the same page again"
    );

    // A day later the token has expired: refused, renewed, and the incremental run goes on.
    tokens.expire();
    people.edit(4, |c| c.first = Some("Renée".into()));
    people.edit(6, |c| c.consent = Consent::Unsubscribed);
    fake.clear();
    let summary = env.run("shop").await.unwrap();
    let c = &summary.counts;
    assert_eq!((c.updated, c.created), (2, 0));
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/admin/oauth/access_token")
    );
    assert_eq!(
        requests.last().unwrap().header("x-shopify-access-token"),
        Some("shpat_cc_2")
    );
    assert!(requests.last().unwrap().q("updated_at_min").is_some());
    let all = env.all_contacts().await;
    assert_eq!(
        membership(contact(&all, "person6@example.com"), "Shop"),
        Some(MembershipStatus::Unsubscribed)
    );
}
