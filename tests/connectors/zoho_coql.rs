//! `connectors.d/zoho-coql.yaml` against the Zoho COQL fake: the query in a POST body,
//! paged by keyset on `(Modified_Time, id)`, OAuth2, 204 when nothing matches.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, shipped};
use crate::common::service::{self, Consent, People, Tokens, realistic};
use crate::common::services::zoho;
use crate::common::sync_env::{SyncEnv, field};

const CLIENT: (&str, &str) = ("1000.FAKECLIENT", "f00dcafe-secret");
const REFRESH: &str = "1000.fake-refresh.token";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: zoho-coql\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\n  refresh_token: {}\nlist: {list}\npage_size: 10\n{extra}",
        CLIENT.0,
        env.secret("secret", CLIENT.1),
        env.secret("refresh", REFRESH),
    )
}

fn select_query(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["select_query"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_by_keyset_in_the_coql_body_and_an_incremental_run() {
    let mut people = realistic(25);
    // Two contacts modified in the same second as the tenth: the keyset's id breaks the
    // tie, so a page boundary inside them loses nobody.
    let tenth = people[9].updated;
    people[10].updated = tenth;
    people[11].updated = tenth;
    let people = People::new(people);
    let tokens = Tokens::new("1000.access.");
    let fake = service::start_with(
        |base| zoho::coql_service(base, CLIENT, REFRESH, &tokens),
        &people,
    )
    .await;
    let env = SyncEnv::new();
    env.connector("zoho-coql", &shipped("zoho-coql", &fake.base));
    env.importer("crm", &importer(&env, "Zoho", ""));

    let summary = env.run("crm").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));

    let requests = fake.requests();
    assert_eq!(requests[0].path, "/oauth/v2/token");
    let queries: Vec<String> = requests[1..]
        .iter()
        .map(|r| select_query(&r.body))
        .collect();
    // Three pages, the third refused once by the rate limit and sent again.
    assert_eq!(queries.len(), 4);
    assert!(
        queries[0].contains("where id is not null order by"),
        "{}",
        queries[0]
    );
    assert!(
        queries[1].contains(&format!(
            "((Modified_Time > '2024-05-01T12:40:00+01:00') or (Modified_Time = '2024-05-01T12:40:00+01:00' and id > {}))",
            zoho::record_id(10)
        )),
        "after the tenth: {}",
        queries[1]
    );
    for r in &requests[1..] {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/crm/v5/coql");
        assert_eq!(
            r.header("authorization"),
            Some("Zoho-oauthtoken 1000.access.1")
        );
        assert!(select_query(&r.body).ends_with("limit 10"));
    }

    let all = env.all_contacts().await;
    assert_eq!(all.len(), 25);
    let two = contact(&all, "person2@example.com");
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(field(two, "%ZOHO_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%ZOHO_OWNER%"), Some("Rep 10"));
    assert_eq!(field(two, "%ZOHO_COUNTRY%"), Some("CH"));
    for (email, status, member) in consent(&env, "Zoho").await {
        let want = match email.as_str() {
            "person3@example.com" => Some(MembershipStatus::Unsubscribed),
            _ => Some(MembershipStatus::Active),
        };
        assert_eq!((status, member), (ContactStatus::Normal, want), "{email}");
    }

    // Two contacts change: the next run's COQL asks from the newest Modified_Time
    // (inclusive: person 25 comes again, unchanged).
    people.edit(4, |c| c.company = Some("Neue Firma".into()));
    people.edit(6, |c| c.consent = Consent::Unsubscribed);
    fake.clear();
    let summary = env.run("crm").await.unwrap();
    let c = &summary.counts;
    assert_eq!((c.fetched, c.updated, c.unchanged, c.created), (3, 2, 1, 0));
    let query = select_query(&fake.requests()[0].body);
    assert!(
        query.contains("where Modified_Time >= '2024-05-01T14:10:00+00:00' order by"),
        "{query}"
    );
    let all = env.all_contacts().await;
    assert_eq!(
        contact(&all, "person4@example.com").organization.as_deref(),
        Some("Neue Firma")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_source_filter_and_no_rows_at_all() {
    let people = People::new(realistic(25));
    let tokens = Tokens::new("1000.access.");
    let fake = service::start_with(
        |base| zoho::coql_service(base, CLIENT, REFRESH, &tokens),
        &people,
    )
    .await;
    let env = SyncEnv::new();
    env.connector("zoho-coql", &shipped("zoho-coql", &fake.base));
    env.importer(
        "leads",
        &importer(&env, "Leads", "filters: {lead_source: [lead]}\n"),
    );
    let filtered = env.run("leads").await.unwrap();
    // Client side: the service was asked for everyone and sent everyone; the filter
    // decided what landed.
    assert!(filtered.counts.fetched as usize >= people.all().len());
    assert_eq!(env.contacts("Leads").await.len(), 12);

    let empty = People::new(Vec::new());
    let fake = service::start_with(
        |base| zoho::coql_service(base, CLIENT, REFRESH, &tokens),
        &empty,
    )
    .await;
    let env = SyncEnv::new();
    env.connector("zoho-coql", &shipped("zoho-coql", &fake.base));
    env.importer("crm", &importer(&env, "Zoho", ""));
    let summary = env.run("crm").await.unwrap();
    assert_eq!(
        (summary.outcome, summary.counts.fetched),
        (RunOutcome::Completed, 0)
    );
}
