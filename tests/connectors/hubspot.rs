//! `connectors.d/hubspot.yaml` against the HubSpot CRM v3 list fake.

use tributary::engine::RunOptions;
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, refused, shipped};
use crate::common::service::{self, Consent, People, realistic};
use crate::common::services::hubspot;
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "pat-eu1-00000000-1111-2222-3333-444444444444";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: hubspot\nauth: private_app\ncredentials:\n  token: {}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("hubspot", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_opt_out_and_bounce_apart_archived_left_out_and_a_daily_pass() {
    let mut people = realistic(26);
    people[12].deleted = true; // person 13, archived at HubSpot
    let people = People::new(people);
    let fake = service::start(hubspot::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("hubspot", &shipped("hubspot", &fake.base));
    env.importer("crm", &importer(&env, "CRM", ""));

    let summary = env.run("crm").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let afters: Vec<Option<&str>> = requests.iter().map(|r| r.q("after")).collect();
    assert_eq!(afters, [None, Some("c10"), Some("c20")]);
    for r in &requests {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(r.q("archived"), Some("false"));
        assert_eq!(r.q("limit"), Some("10"));
        let properties = r.q("properties").unwrap();
        assert!(
            properties.contains("hs_email_optout") && properties.contains("hs_email_bad_address")
        );
    }

    let all = env.all_contacts().await;
    assert!(
        all.iter().all(|c| c.email != "person13@example.com"),
        "archived: not listed"
    );
    let two = contact(&all, "person2@example.com");
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(field(two, "%HUBSPOT_LIFECYCLE_STAGE%"), Some("lead"));
    assert_eq!(field(two, "%HUBSPOT_LEAD_STATUS%"), Some("OPEN"));
    assert_eq!(field(two, "%HUBSPOT_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%HUBSPOT_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%HUBSPOT_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%HUBSPOT_OWNER_ID%"), Some("10"));

    // Opt-out and hard bounce read from their own properties; HubSpot has no pending.
    for (email, status, member) in consent(&env, "CRM").await {
        let id: u64 = email[6..email.find('@').unwrap()].parse().unwrap();
        let want = match id {
            3 => (ContactStatus::Normal, Some(MembershipStatus::Unsubscribed)),
            5 => (ContactStatus::Bounced, None),
            _ => (ContactStatus::Normal, Some(MembershipStatus::Active)),
        };
        assert_eq!((status, member), want, "{email}");
    }

    // The next daily pass: person 9 opts out, person 2 changes job; only they are written.
    people.edit(9, |c| c.consent = Consent::Unsubscribed);
    people.edit(2, |c| c.job_title = Some("Head of buying".into()));
    let summary = env
        .run_with(
            "crm",
            RunOptions {
                full_refresh: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    let c = &summary.counts;
    assert_eq!(
        (c.fetched, c.updated, c.unchanged, c.created),
        (25, 2, 23, 0)
    );
    let all = env.all_contacts().await;
    let nine = contact(&all, "person9@example.com");
    assert_eq!(
        nine.lists
            .iter()
            .find(|m| m.list == "CRM")
            .map(|m| m.status),
        Some(MembershipStatus::Unsubscribed)
    );

    // Person 4 is archived: the next daily pass first lists the archived contacts
    // (`archived=true`), and person 4 leaves the list as `removed` (kept, not
    // unsubscribed); restored, the pass after makes it active again.
    let in_list = |all: &[tributary::store::ContactView], email: &str| {
        contact(all, email)
            .lists
            .iter()
            .find(|m| m.list == "CRM")
            .map(|m| m.status)
    };
    people.edit(4, |c| c.deleted = true);
    fake.clear();
    let daily = RunOptions {
        full_refresh: true,
        ..RunOptions::default()
    };
    let summary = env.run_with("crm", daily.clone()).await.unwrap();
    let requests = fake.requests();
    assert_eq!(requests[0].q("archived"), Some("true"));
    assert!(
        requests[1..]
            .iter()
            .all(|r| r.q("archived") == Some("false"))
    );
    // Person 13 was never imported; person 4 was.
    assert_eq!((summary.counts.deleted, summary.counts.fetched), (2, 24));
    let all = env.all_contacts().await;
    assert_eq!(
        in_list(&all, "person4@example.com"),
        Some(MembershipStatus::Removed)
    );
    assert_eq!(all.len(), 25, "the archived contact is kept");
    people.edit(4, |c| c.deleted = false);
    env.run_with("crm", daily).await.unwrap();
    assert_eq!(
        in_list(&env.all_contacts().await, "person4@example.com"),
        Some(MembershipStatus::Active)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_stage_filter_and_a_wrong_token() {
    let people = People::new(realistic(25));
    let fake = service::start(hubspot::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("hubspot", &shipped("hubspot", &fake.base));
    env.importer(
        "leads",
        &importer(&env, "Leads", "filters: {lifecycle_stage: [lead]}\n"),
    );
    let filtered = env.run("leads").await.unwrap();
    // Client side: the service was asked for everyone and sent everyone; the filter
    // decided what landed.
    assert!(filtered.counts.fetched as usize >= people.all().len());
    let emails: Vec<String> = env
        .contacts("Leads")
        .await
        .into_iter()
        .map(|c| c.email)
        .collect();
    let mut want: Vec<String> = (1..=25)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("person{i}@example.com"))
        .collect();
    want.sort();
    assert_eq!(emails, want);

    let bad = SyncEnv::new();
    bad.connector("hubspot", &shipped("hubspot", &fake.base));
    bad.importer(
        "crm",
        &format!(
            "connector: hubspot\nauth: private_app\ncredentials:\n  token: {}\nlist: L\n",
            bad.secret("t", "pat-wrong")
        ),
    );
    refused(&bad, "crm", &["401"], &["pat-wrong"]).await;
}
