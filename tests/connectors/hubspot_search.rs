//! `connectors.d/hubspot-search.yaml` against the HubSpot search fake: the query and the
//! cursor in a POST body, sorted by modification time, the 10,000-results cap and the
//! restart after it, the search limit's 429.

use serde_json::Value;
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, shipped};
use crate::common::service::{self, Consent, People, realistic};
use crate::common::services::hubspot;
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "pat-eu1-00000000-1111-2222-3333-444444444444";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: hubspot-search\nauth: private_app\ncredentials:\n  token: {}\nlist: {list}\n{extra}",
        env.secret("hubspot", TOKEN)
    )
}

fn body(r: &crate::common::fake::Recorded) -> Value {
    serde_json::from_str(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_pass_past_10000_restarts_by_modification_time_then_an_incremental_run() {
    let people = People::new(realistic(10_050));
    let fake = service::start(hubspot::search_service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("hubspot-search", &shipped("hubspot-search", &fake.base));
    env.importer("crm", &importer(&env, "CRM", "page_budget: 0\n"));

    let summary = env.run("crm").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.created), (51, 10_050), "{c:?}");

    let requests = fake.requests();
    let bodies: Vec<Value> = requests.iter().map(body).collect();
    for (r, b) in requests.iter().zip(&bodies) {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(b["limit"], 200);
        assert_eq!(b["sorts"][0]["propertyName"], "lastmodifieddate");
        assert!(
            b["properties"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "hs_email_bad_address")
        );
    }
    // The first request: no filter at all (nothing rendered), no cursor.
    assert!(bodies[0].get("filterGroups").is_none(), "{}", bodies[0]);
    assert!(bodies[0].get("after").is_none());
    // The search limit refused every twentieth request once: each was sent again.
    assert_eq!(requests.len(), 51 + 2, "two 429s");
    // After 10,000 results the query restarted: no cursor, the 10,000th contact's
    // lastmodifieddate as a GTE bound, exactly as HubSpot wrote it.
    let restart = bodies
        .iter()
        .position(|b| b.get("filterGroups").is_some())
        .expect("a restarted query");
    assert!(bodies[restart].get("after").is_none());
    assert_eq!(
        bodies[restart]["filterGroups"][0]["filters"][0],
        serde_json::json!({"propertyName": "lastmodifieddate", "operator": "GTE",
                           "value": "2024-07-09T20:40:00.000Z"})
    );
    let afters: Vec<&str> = bodies[..restart]
        .iter()
        .filter_map(|b| b["after"].as_str())
        .collect();
    assert_eq!(
        afters.last(),
        Some(&"c9800"),
        "the last page before the cap"
    );

    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(field(two, "%HUBSPOT_LEAD_STATUS%"), Some("OPEN"));
    assert_eq!(field(two, "%HUBSPOT_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%HUBSPOT_OWNER_ID%"), Some("10"));
    let states = consent(&env, "CRM").await;
    let state = |email: &str| {
        states
            .iter()
            .find(|(e, _, _)| e == email)
            .map(|(_, s, m)| (*s, *m))
            .unwrap()
    };
    assert_eq!(
        state("person3@example.com"),
        (ContactStatus::Normal, Some(MembershipStatus::Unsubscribed))
    );
    assert_eq!(state("person5@example.com").0, ContactStatus::Bounced);
    assert_eq!(
        state("person7@example.com"),
        (ContactStatus::Normal, Some(MembershipStatus::Active)),
        "HubSpot has no pending state"
    );

    // Two contacts change: the next run asks from the newest lastmodifieddate minus the
    // five-minute lookback, in epoch milliseconds, and writes only them.
    people.edit(9, |c| c.consent = Consent::Unsubscribed);
    people.edit(2, |c| c.job_title = Some("Head of buying".into()));
    fake.clear();
    let summary = env.run("crm").await.unwrap();
    let c = &summary.counts;
    assert_eq!((c.fetched, c.updated, c.unchanged, c.created), (3, 2, 1, 0));
    let requests = fake.requests();
    let first = body(&requests[0]);
    let since = chrono::DateTime::parse_from_rfc3339("2024-07-10T04:55:00Z")
        .unwrap()
        .timestamp_millis()
        .to_string();
    assert_eq!(
        first["filterGroups"][0]["filters"][0],
        serde_json::json!({"propertyName": "lastmodifieddate", "operator": "GTE", "value": since})
    );
    let all = env.all_contacts().await;
    assert_eq!(
        field(contact(&all, "person2@example.com"), "%HUBSPOT_JOB_TITLE%"),
        Some("Head of buying")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_status_filter_goes_into_the_body() {
    let people = People::new(realistic(45));
    let fake = service::start(hubspot::search_service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("hubspot-search", &shipped("hubspot-search", &fake.base));
    env.importer(
        "open",
        &importer(
            &env,
            "Open",
            "page_size: 10\nfilters: {lead_status: OPEN}\n",
        ),
    );
    let summary = env.run("open").await.unwrap();
    assert_eq!((summary.counts.pages, summary.counts.fetched), (3, 22));
    let requests = fake.requests();
    let afters: Vec<Option<String>> = requests
        .iter()
        .map(|r| body(r)["after"].as_str().map(str::to_string))
        .collect();
    assert_eq!(afters, [None, Some("c10".into()), Some("c20".into())]);
    for r in &requests {
        assert_eq!(
            body(r)["filterGroups"][0]["filters"],
            serde_json::json!([{"propertyName": "hs_lead_status", "operator": "EQ", "value": "OPEN"}])
        );
    }
    assert_eq!(env.contacts("Open").await.len(), 22);
}
