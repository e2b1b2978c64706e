//! `connectors.d/salesforce-leads.yaml` against the Salesforce fake's Lead object:
//! converted leads left out, opt-out and bounce, deletions, an incremental run.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, shipped};
use crate::common::service::{self, Consent, People, realistic};
use crate::common::services::salesforce::{self, ACCESS, VERSION};
use crate::common::sync_env::{SyncEnv, field};

const CLIENT: (&str, &str) = ("3MVG9fake.client", "F00DCAFE");
const REFRESH: &str = "5Aep861fake-refresh";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: salesforce-leads\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\n  refresh_token: {}\nlist: {list}\npage_size: 200\n{extra}",
        CLIENT.0,
        env.secret("secret", CLIENT.1),
        env.secret("refresh", REFRESH),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_leads_with_opt_out_bounce_deletions_and_an_incremental_run() {
    let mut people = realistic(460);
    for i in [10, 20, 30, 40, 50, 60, 70, 80, 90, 100] {
        people[i - 1].tags.push("converted".into());
    }
    people[24].deleted = true; // lead 25, in the recycle bin
    let people = People::new(people);
    let fake = service::start_with(
        |base| salesforce::leads_service(base, CLIENT, REFRESH),
        &people,
    )
    .await;
    let env = SyncEnv::new();
    env.connector("salesforce-leads", &shipped("salesforce-leads", &fake.base));
    env.importer("leads", &importer(&env, "Leads", ""));

    let summary = env.run("leads").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    // 450 open leads (one deleted) in three pages of at most 200.
    assert_eq!((c.pages, c.fetched, c.created), (3, 450, 449));

    let requests = fake.requests();
    assert_eq!(requests[0].path, "/services/oauth2/token");
    let q = requests[1].q("q").unwrap();
    assert!(
        q.contains("FROM Lead WHERE IsConverted = false ORDER BY"),
        "{q}"
    );
    for r in &requests[1..] {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {ACCESS}").as_str())
        );
        assert!(
            r.path
                .starts_with(&format!("/services/data/{VERSION}/queryAll"))
        );
    }

    let all = env.all_contacts().await;
    assert!(
        all.iter().all(|c| c.email != "person10@example.com"),
        "converted"
    );
    assert!(
        all.iter().all(|c| c.email != "person25@example.com"),
        "deleted"
    );
    let two = contact(&all, "person2@example.com");
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(
        field(two, "%SALESFORCE_LEAD_STATUS%"),
        Some("Open - Not Contacted")
    );
    assert_eq!(field(two, "%SALESFORCE_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%SALESFORCE_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%SALESFORCE_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%SALESFORCE_LEAD_SOURCE%"), Some("lead"));
    for (email, status, member) in consent(&env, "Leads").await {
        let want = match email.as_str() {
            "person3@example.com" => (ContactStatus::Normal, Some(MembershipStatus::Unsubscribed)),
            "person5@example.com" => (ContactStatus::Bounced, None),
            _ => (ContactStatus::Normal, Some(MembershipStatus::Active)),
        };
        assert_eq!((status, member), want, "{email}");
    }

    // Lead 9 bounces, lead 2 changes title: the next run asks from the watermark minus
    // the lookback and writes only them.
    people.edit(9, |c| c.consent = Consent::Bounced);
    people.edit(2, |c| c.job_title = Some("Head of buying".into()));
    fake.clear();
    let summary = env.run("leads").await.unwrap();
    let c = &summary.counts;
    assert_eq!((c.updated, c.created), (2, 0), "{c:?}");
    let q = fake
        .requests()
        .iter()
        .find_map(|r| r.q("q").map(str::to_string))
        .unwrap();
    assert!(
        q.contains("WHERE IsConverted = false AND SystemModstamp > "),
        "{q}"
    );
    let all = env.all_contacts().await;
    assert_eq!(
        contact(&all, "person9@example.com").status,
        ContactStatus::Bounced
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_source_filter() {
    let people = People::new(realistic(30));
    let fake = service::start_with(
        |base| salesforce::leads_service(base, CLIENT, REFRESH),
        &people,
    )
    .await;
    let env = SyncEnv::new();
    env.connector("salesforce-leads", &shipped("salesforce-leads", &fake.base));
    env.importer(
        "leads",
        &importer(&env, "Leads", "filters: {lead_source: lead}\n"),
    );
    let filtered = env.run("leads").await.unwrap();
    // Client side: the service was asked for everyone and sent everyone; the filter
    // decided what landed.
    assert!(filtered.counts.fetched as usize >= people.all().len());
    assert_eq!(env.contacts("Leads").await.len(), 15, "even ids");
}
