//! `connectors.d/sugarcrm.yaml` against the SugarCRM fake: the password-grant login and
//! its session header, `next_offset` paging until -1, per-address opt-out and bounce.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, refused, shipped};
use crate::common::service::{self, Consent, People, Tokens, realistic};
use crate::common::services::sugarcrm::{self, PLATFORM};
use crate::common::sync_env::{SyncEnv, field};

const USER: (&str, &str) = ("tributary-api", "pa\"ss wörd");

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: sugarcrm\ncredentials:\n  username: {{literal: {}}}\n  password: {}\nsettings: {{host: sugar.example, platform: {PLATFORM}}}\nlist: {list}\npage_size: 10\n{extra}",
        USER.0,
        env.secret("sugar", USER.1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_next_offset_pages_opt_out_and_bounce_and_a_session_renewed() {
    let people = People::new(realistic(25));
    let tokens = Tokens::new("6a7d0c1e-session-");
    let fake = service::start(sugarcrm::service(USER, &tokens), &people).await;
    let env = SyncEnv::new();
    env.connector("sugarcrm", &shipped("sugarcrm", &fake.base));
    env.importer("crm", &importer(&env, "Sugar", ""));

    let summary = env.run("crm").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));

    // The login: a JSON body with the empty client secret kept, the password escaped.
    let requests = fake.requests();
    assert_eq!(requests[0].path, "/rest/v11/oauth2/token");
    let login: serde_json::Value = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(login["client_secret"], "");
    assert_eq!(login["password"], USER.1);
    assert_eq!(login["platform"], PLATFORM);
    let offsets: Vec<Option<&str>> = requests[1..].iter().map(|r| r.q("offset")).collect();
    assert_eq!(
        offsets,
        [None, Some("10"), Some("20")],
        "next_offset sent back"
    );
    for r in &requests[1..] {
        assert_eq!(r.path, "/rest/v11/Contacts");
        assert_eq!(r.header("oauth-token"), Some("6a7d0c1e-session-1"));
        assert_eq!(r.q("max_num"), Some("10"));
        assert_eq!(r.q("order_by"), Some("date_modified:ASC"));
        assert_eq!(r.q("filter[0][date_modified][$gte]"), None);
    }

    let all = env.all_contacts().await;
    let three = contact(&all, "person3@example.com");
    assert_eq!(three.organization.as_deref(), Some("Firma 3"));
    let two = contact(&all, "person2@example.com");
    assert_eq!(field(two, "%SUGARCRM_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%SUGARCRM_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%SUGARCRM_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%SUGARCRM_LEAD_SOURCE%"), Some("lead"));
    assert_eq!(field(two, "%SUGARCRM_OWNER%"), Some("user10"));
    assert_eq!(field(two, "%SUGARCRM_TAGS%"), Some(r#"["customer","t2"]"#));
    for (email, status, member) in consent(&env, "Sugar").await {
        let want = match email.as_str() {
            "person3@example.com" => (ContactStatus::Normal, Some(MembershipStatus::Unsubscribed)),
            "person5@example.com" => (ContactStatus::Bounced, None),
            _ => (ContactStatus::Normal, Some(MembershipStatus::Active)),
        };
        assert_eq!((status, member), want, "{email}");
    }

    // The session expires; two contacts change. The next run's session is refused,
    // it logs in again, and asks from the newest date_modified (inclusive).
    tokens.expire();
    people.edit(9, |c| c.consent = Consent::Bounced);
    people.edit(2, |c| c.job_title = Some("Head of buying".into()));
    fake.clear();
    let summary = env.run("crm").await.unwrap();
    let c = &summary.counts;
    assert_eq!((c.fetched, c.updated, c.unchanged, c.created), (3, 2, 1, 0));
    let requests = fake.requests();
    let last = requests.last().unwrap();
    assert_eq!(last.header("oauth-token"), Some("6a7d0c1e-session-2"));
    assert_eq!(
        last.q("filter[0][date_modified][$gte]"),
        Some("2024-05-01T14:10:00+00:00")
    );
    assert!(
        requests.iter().any(|r| r.path == "/rest/v11/oauth2/token"),
        "logged in again"
    );
    let all = env.all_contacts().await;
    assert_eq!(
        contact(&all, "person9@example.com").status,
        ContactStatus::Bounced
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_source_filter_and_a_wrong_password() {
    let people = People::new(realistic(25));
    let tokens = Tokens::new("s-");
    let fake = service::start(sugarcrm::service(USER, &tokens), &people).await;
    let env = SyncEnv::new();
    env.connector("sugarcrm", &shipped("sugarcrm", &fake.base));
    env.importer(
        "leads",
        &importer(&env, "Leads", "filters: {lead_source: [lead]}\n"),
    );
    let filtered = env.run("leads").await.unwrap();
    // Client side: the service was asked for everyone and sent everyone; the filter
    // decided what landed.
    assert!(filtered.counts.fetched as usize >= people.all().len());
    assert_eq!(env.contacts("Leads").await.len(), 12);

    let bad = SyncEnv::new();
    bad.connector("sugarcrm", &shipped("sugarcrm", &fake.base));
    bad.importer(
        "crm",
        &format!(
            "connector: sugarcrm\ncredentials:\n  username: {{literal: {}}}\n  password: {}\nsettings: {{host: sugar.example}}\nlist: L\n",
            USER.0,
            bad.secret("p", "wrong-password"),
        ),
    );
    refused(&bad, "crm", &["401", "need_login"], &["wrong-password"]).await;
}
