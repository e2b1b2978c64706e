//! `connectors.d/salesforce.yaml` against the Salesforce REST fake.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, refused, shipped};
use crate::common::service::{self, People, realistic};
use crate::common::services::salesforce::{self, ACCESS, VERSION};
use crate::common::sync_env::{SyncEnv, field};

const CLIENT: (&str, &str) = ("3MVG9fake.client", "F00DCAFE");
const REFRESH: &str = "5Aep861fake-refresh";

fn importer(env: &SyncEnv, list: &str) -> String {
    format!(
        "connector: salesforce\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\n  refresh_token: {}\nlist: {list}\npage_size: 200\n",
        CLIENT.0,
        env.secret("secret", CLIENT.1),
        env.secret("refresh", REFRESH),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_through_query_all_with_opt_out_bounce_and_deletions() {
    // 450 contacts: Salesforce never pages by fewer than 200.
    let mut people = realistic(450);
    people[19].deleted = true; // person 20, in the recycle bin
    let people = People::new(people);
    let fake =
        service::start_with(|base| salesforce::service(base, CLIENT, REFRESH), &people).await;
    let env = SyncEnv::new();
    env.connector("salesforce", &shipped("salesforce", &fake.base));
    env.importer("sf", &importer(&env, "Salesforce"));

    let summary = env.run("sf").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 450, 449));

    // The refresh grant, then the first query with the batch size, then (safe paging,
    // issue 17) a new query from the newest `SystemModstamp` committed for each later
    // page instead of the `nextRecordsUrl`, so a contact edited mid-pass shifts nobody
    // past the pass.
    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].path, "/services/oauth2/token");
    let first = &requests[1];
    assert_eq!(first.path, format!("/services/data/{VERSION}/queryAll"));
    assert_eq!(first.header("sforce-query-options"), Some("batchSize=200"));
    assert!(
        !first.q("q").unwrap().contains("WHERE"),
        "first run: everyone"
    );
    for r in &requests[1..] {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {ACCESS}").as_str())
        );
    }
    for r in &requests[2..] {
        assert_eq!(r.path, format!("/services/data/{VERSION}/queryAll"));
        assert_eq!(r.header("sforce-query-options"), Some("batchSize=200"));
        assert!(
            r.q("q").unwrap().contains("WHERE SystemModstamp > "),
            "{:?}",
            r.q("q")
        );
    }

    let all = env.all_contacts().await;
    assert!(
        all.iter().all(|c| c.email != "person20@example.com"),
        "deleted: not imported"
    );
    let two = contact(&all, "person2@example.com");
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(field(two, "%SALESFORCE_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%SALESFORCE_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%SALESFORCE_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%SALESFORCE_LEAD_SOURCE%"), Some("lead"));
    assert_eq!(
        field(two, "%SALESFORCE_OWNER_ID%"),
        Some("0055g0000000000010")
    );
    for (email, status, member) in consent(&env, "Salesforce").await {
        let want = match email.as_str() {
            "person3@example.com" => (ContactStatus::Normal, Some(MembershipStatus::Unsubscribed)),
            "person5@example.com" => (ContactStatus::Bounced, None),
            _ => (ContactStatus::Normal, Some(MembershipStatus::Active)),
        };
        assert_eq!((status, member), want, "{email}");
    }

    // Person 9 is deleted at Salesforce, person 2 changes title: the next run's SOQL
    // asks from the watermark minus a minute (and a second: `>` is exclusive) and marks
    // person 9 deleted here.
    people.edit(9, |c| c.deleted = true);
    people.edit(2, |c| c.job_title = Some("Head of buying".into()));
    fake.clear();
    let summary = env.run("sf").await.unwrap();
    let c = &summary.counts;
    assert_eq!((c.fetched, c.updated, c.deleted, c.created), (3, 1, 1, 0));
    let requests = fake.requests();
    let q = requests.iter().find_map(|r| r.q("q")).unwrap().to_string();
    assert!(
        q.contains("WHERE SystemModstamp > 2024-05-04T12:58:59Z"),
        "the watermark (person 450) minus the lookback and a second, unquoted: {q}"
    );
    let all = env.all_contacts().await;
    let nine = contact(&all, "person9@example.com");
    assert!(
        nine.sources[0].deleted_at.is_some(),
        "marked deleted at the service"
    );
    let in_list = |all: &[tributary::store::ContactView], email: &str| {
        contact(all, email)
            .lists
            .iter()
            .find(|m| m.list == "Salesforce")
            .map(|m| m.status)
    };
    assert_eq!(
        in_list(&all, "person9@example.com"),
        Some(MembershipStatus::Removed),
        "removed at source: not mailed, not unsubscribed"
    );
    assert_eq!(
        field(
            contact(&all, "person2@example.com"),
            "%SALESFORCE_JOB_TITLE%"
        ),
        Some("Head of buying")
    );

    // Undeleted from the recycle bin (a new SystemModstamp): active again.
    people.edit(9, |c| c.deleted = false);
    let summary = env.run("sf").await.unwrap();
    assert_eq!(summary.counts.updated, 1);
    let all = env.all_contacts().await;
    assert_eq!(
        in_list(&all, "person9@example.com"),
        Some(MembershipStatus::Active)
    );
    assert!(
        contact(&all, "person9@example.com").sources[0]
            .deleted_at
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_source_filter_and_an_expired_refresh_token() {
    let people = People::new(realistic(30));
    let fake =
        service::start_with(|base| salesforce::service(base, CLIENT, REFRESH), &people).await;
    let leads = SyncEnv::new();
    leads.connector("salesforce", &shipped("salesforce", &fake.base));
    leads.importer(
        "sf",
        &format!(
            "{}filters: {{lead_source: lead}}\n",
            importer(&leads, "Leads")
        ),
    );
    let filtered = leads.run("sf").await.unwrap();
    // Client side: the service was asked for everyone and sent everyone; the filter
    // decided what landed.
    assert!(filtered.counts.fetched as usize >= people.all().len());
    assert_eq!(
        leads.contacts("Leads").await.len(),
        15,
        "even ids are leads"
    );

    let env = SyncEnv::new();
    env.connector("salesforce", &shipped("salesforce", &fake.base));
    env.importer(
        "sf",
        &format!(
            "connector: salesforce\ncredentials:\n  client_id: {{literal: x}}\n  client_secret: {}\n  refresh_token: {}\nlist: L\n",
            env.secret("s", CLIENT.1),
            env.secret("r", "5Aep-expired"),
        ),
    );
    refused(&env, "sf", &["invalid_grant"], &["5Aep-expired", CLIENT.1]).await;
}
