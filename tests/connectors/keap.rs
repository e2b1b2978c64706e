//! `connectors.d/keap.yaml` against the Keap fake: OAuth2 whose refresh tokens rotate
//! (the client in HTTP Basic), offset pages ordered by id, `since` on LastUpdated, every
//! `email_status` mapped, an expired access token renewed with the rotated refresh token.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, membership, refused, shipped};
use crate::common::service::{self, Consent, People, Tokens, realistic};
use crate::common::services::keap::{self, tag_id};
use crate::common::sync_env::{SyncEnv, field};

const CLIENT: (&str, &str) = ("keap-client-id", "keap-client-secret");

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: keap\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\n  refresh_token: {}\nlist: {list}\npage_size: 10\n{extra}",
        CLIENT.0,
        env.secret("secret", CLIENT.1),
        env.secret("refresh", "keap-refresh.1"),
    )
}

fn basic() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", CLIENT.0, CLIENT.1))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_pages_every_email_status_and_a_rotated_refresh_token_after_expiry() {
    let people = People::new(realistic(25));
    let refresh = Tokens::new("keap-refresh.");
    let tokens = Tokens::new("keap-access.");
    let fake = service::start(keap::service(CLIENT, &refresh, &tokens), &people).await;
    let env = SyncEnv::new();
    env.connector("keap", &shipped("keap", &fake.base));
    env.importer("k", &importer(&env, "Keap", ""));

    let summary = env.run("k").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25), "{c:?}");
    let requests = fake.requests();
    // The refresh grant, the client in HTTP Basic (not in the form), the refresh token
    // the importer was given.
    assert_eq!(requests[0].path, "/token");
    assert_eq!(requests[0].header("authorization"), Some(basic().as_str()));
    let form: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(requests[0].body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("refresh_token")
    );
    assert_eq!(
        form.get("refresh_token").map(String::as_str),
        Some("keap-refresh.1")
    );
    assert_eq!(
        form.get("client_secret"),
        None,
        "the secret travels in Basic"
    );
    let list = &requests[1..];
    let offsets: Vec<_> = list.iter().map(|r| r.q("offset").unwrap_or("0")).collect();
    assert_eq!(offsets, ["0", "10", "20"]);
    for r in list {
        assert_eq!(r.path, "/crm/rest/v1/contacts");
        assert_eq!(r.header("authorization"), Some("Bearer keap-access.1"));
        assert_eq!(r.q("limit"), Some("10"));
        assert_eq!(r.q("order"), Some("id"));
        assert_eq!(r.q("order_direction"), Some("ascending"));
        assert_eq!(r.q("since"), None, "first run: everyone");
    }

    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(
        (two.first_name.as_deref(), two.last_name.as_deref()),
        (Some("Łukasz"), Some("Wałęsa"))
    );
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(two.phone.as_deref(), Some("+44 20 7946 0002"));
    assert_eq!(field(two, "%KEAP_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%KEAP_COUNTRY%"), Some("CHE"));
    assert_eq!(field(two, "%KEAP_OWNER_ID%"), Some("10"));
    assert_eq!(
        field(two, "%KEAP_TAG_IDS%"),
        Some(format!(r#"["{}","{}"]"#, tag_id("customer"), tag_id("t2")).as_str())
    );
    // Every state: opted out, hard bounce, three kinds of "not marketable now".
    for (email, status, member) in consent(&env, "Keap").await {
        let id: u64 = email[6..email.find('@').unwrap()].parse().unwrap();
        let want = match id {
            3 => (ContactStatus::Normal, Some(MembershipStatus::Unsubscribed)),
            5 => (ContactStatus::Bounced, None),
            7 | 11 | 13 => (ContactStatus::Normal, Some(MembershipStatus::Pending)),
            _ => (ContactStatus::Normal, Some(MembershipStatus::Active)),
        };
        assert_eq!((status, member), want, "{email}");
    }
    // The refresh answered a new refresh token and retired the one used.
    assert_eq!(refresh.current(), "keap-refresh.2");

    // A day later the access token has expired; person 7 becomes marketable and person 4
    // changes company. The cached token is refused, renewed with the rotated refresh
    // token (the original one would be refused now), and `since` asks from the newest
    // LastUpdated less the minute of lookback.
    tokens.expire();
    people.edit(7, |c| c.consent = Consent::Subscribed);
    people.edit(4, |c| c.company = Some("Neue Firma".into()));
    fake.clear();
    let summary = env.run("k").await.unwrap();
    let c = &summary.counts;
    assert_eq!(
        (c.fetched, c.updated, c.unchanged, c.created),
        (3, 2, 1, 0),
        "{c:?}"
    );
    let requests = fake.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/crm/rest/v1/contacts", "/token", "/crm/rest/v1/contacts"],
        "refused, renewed, sent again"
    );
    assert!(
        requests[1].body.contains("refresh_token=keap-refresh.2"),
        "{}",
        requests[1].body
    );
    assert_eq!(
        requests[2].header("authorization"),
        Some("Bearer keap-access.2")
    );
    assert_eq!(requests[2].q("since"), Some("2024-05-01T14:09:00.000Z"));
    let all = env.all_contacts().await;
    assert_eq!(
        membership(contact(&all, "person7@example.com"), "Keap"),
        Some(MembershipStatus::Active)
    );
    assert_eq!(
        contact(&all, "person4@example.com").organization.as_deref(),
        Some("Neue Firma")
    );
    assert_eq!(refresh.current(), "keap-refresh.3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tag_filter_and_a_spent_refresh_token() {
    let people = People::new(realistic(25));
    let refresh = Tokens::new("keap-refresh.");
    let tokens = Tokens::new("keap-access.");
    let fake = service::start(keap::service(CLIENT, &refresh, &tokens), &people).await;
    let env = SyncEnv::new();
    env.connector("keap", &shipped("keap", &fake.base));
    let t1 = tag_id("t1");
    env.importer(
        "t1",
        &importer(&env, "T1", &format!("filters: {{tag_id: \"{t1}\"}}\n")),
    );
    env.run("t1").await.unwrap();
    // The filter is applied here: Keap received no tag parameter and sent everyone.
    assert!(fake.requests().iter().all(|r| r.q("tag_id").is_none()));
    let emails: Vec<String> = env
        .contacts("T1")
        .await
        .into_iter()
        .map(|c| c.email)
        .collect();
    assert_eq!(emails.len(), 9, "ids 1, 4, ..., 25: {emails:?}");
    assert!(emails.contains(&"person4@example.com".to_string()));

    // Another installation still holding the first refresh token: Keap retired it.
    let stale = SyncEnv::new();
    stale.connector("keap", &shipped("keap", &fake.base));
    stale.importer("k", &importer(&stale, "L", ""));
    refused(
        &stale,
        "k",
        &["Invalid Refresh Token", "400"],
        &["keap-refresh.1", CLIENT.1],
    )
    .await;
}
