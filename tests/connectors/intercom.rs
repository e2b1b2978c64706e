//! `connectors.d/intercom.yaml` against the Intercom fake: the search body with its
//! cursor in `pagination`, users and leads, opt-out and bounce read apart, the
//! day-granular `updated_at >` filter, the role filter, a wrong token.

use serde_json::{Value, json};
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, refused, shipped};
use crate::common::service::{self, Consent, People, realistic};
use crate::common::services::intercom::{self, VERSION, tag_id};
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "dG9rOjAxMjM0NTY3Xzg5YWJfY2RlZl8wMTIzXzQ1Njc4OWFiY2RlZjoxOjA=";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: intercom\ncredentials:\n  token: {}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("intercom", TOKEN)
    )
}

fn body(r: &crate::common::fake::Recorded) -> Value {
    serde_json::from_str(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_leads_by_cursor_in_the_body_consent_and_a_day_granular_incremental_run() {
    let people = People::new(realistic(25));
    let fake = service::start(intercom::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("intercom", &shipped("intercom", &fake.base));
    env.importer("ic", &importer(&env, "Intercom", ""));

    let summary = env.run("ic").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25), "{c:?}");
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let mut cursors = Vec::new();
    for r in &requests {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/contacts/search")
        );
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(r.header("intercom-version"), Some(VERSION));
        let b = body(r);
        // First run: users and leads, no time condition.
        assert_eq!(
            b["query"],
            json!({"operator": "AND", "value": [{"field": "role", "operator": "IN", "value": ["user", "lead"]}]})
        );
        assert_eq!(b["pagination"]["per_page"], 10);
        cursors.push(b["pagination"].get("starting_after").cloned());
    }
    assert_eq!(cursors[0], None);
    assert_eq!(cursors[1], Some(json!("c10")));
    assert_eq!(cursors[2], Some(json!("c20")));

    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(
        (two.first_name.as_deref(), two.last_name.as_deref()),
        (Some("Łukasz"), Some("Wałęsa"))
    );
    assert_eq!(two.phone.as_deref(), Some("+442079460002"));
    assert_eq!(field(two, "%INTERCOM_ROLE%"), Some("user"));
    assert_eq!(field(two, "%INTERCOM_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%INTERCOM_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%INTERCOM_OWNER_ID%"), Some("10"));
    assert_eq!(
        field(two, "%INTERCOM_TAG_IDS%"),
        Some(format!(r#"["{}","{}"]"#, tag_id("customer"), tag_id("t2")).as_str())
    );
    assert!(
        field(two, "%INTERCOM_SIGNED_UP_AT%").is_some_and(|d| d.starts_with("2024-04-01")),
        "{:?}",
        field(two, "%INTERCOM_SIGNED_UP_AT%")
    );
    assert_eq!(
        field(contact(&all, "person5@example.com"), "%INTERCOM_ROLE%"),
        Some("lead")
    );
    // Opt-out and bounce apart; Intercom has no pending state, so a person whose double
    // opt-in is outstanding elsewhere is mailable here.
    for (email, status, member) in consent(&env, "Intercom").await {
        let id: u64 = email[6..email.find('@').unwrap()].parse().unwrap();
        let want = match id {
            3 => (ContactStatus::Normal, Some(MembershipStatus::Unsubscribed)),
            5 => (ContactStatus::Bounced, None),
            _ => (ContactStatus::Normal, Some(MembershipStatus::Active)),
        };
        assert_eq!((status, member), want, "{email}");
    }

    // Two contacts change. `updated_at >` matches from the day after its value's day:
    // the query asks from a day before the watermark, so the whole boundary day comes
    // again and only the two changed contacts are written.
    people.edit(4, |c| c.last = Some("Curie".into()));
    people.edit(3, |c| {
        c.consent = Consent::Subscribed;
        c.first = Some("Renée".into());
    });
    fake.clear();
    let summary = env.run("ic").await.unwrap();
    let c = &summary.counts;
    assert_eq!(
        (c.fetched, c.updated, c.unchanged, c.created),
        (25, 2, 23, 0),
        "{c:?}"
    );
    let b = body(&fake.requests()[0]);
    let conditions = b["query"]["value"].as_array().unwrap();
    let updated = conditions
        .iter()
        .find(|c| c["field"] == "updated_at")
        .expect("a time condition");
    assert_eq!(updated["operator"], ">");
    // The watermark is 2024-05-01T14:10:00Z (person 25); a day earlier, in seconds.
    let sent = updated["value"]
        .as_i64()
        .expect("a unix timestamp, as a number");
    assert_eq!(
        chrono::DateTime::from_timestamp(sent, 0)
            .unwrap()
            .date_naive()
            .to_string(),
        "2024-04-30"
    );
    let all = env.all_contacts().await;
    assert_eq!(
        contact(&all, "person4@example.com").last_name.as_deref(),
        Some("Curie")
    );
    // A re-subscribe at the service does not lift an unsubscribe here.
    assert_eq!(
        super::membership(contact(&all, "person3@example.com"), "Intercom"),
        Some(MembershipStatus::Unsubscribed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_filter_in_the_query_and_a_wrong_token() {
    let people = People::new(realistic(25));
    let fake = service::start(intercom::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("intercom", &shipped("intercom", &fake.base));
    env.importer("leads", &importer(&env, "Leads", "filters: {role: lead}\n"));
    env.run("leads").await.unwrap();
    let leads = env.contacts("Leads").await;
    let emails: Vec<&str> = leads.iter().map(|c| c.email.as_str()).collect();
    // Leads are every fifth contact; person 5 came too, but hard-bounced: imported as
    // bounced, never a member.
    assert_eq!(
        emails,
        [
            "person10@example.com",
            "person15@example.com",
            "person20@example.com",
            "person25@example.com",
        ]
    );
    let all = env.all_contacts().await;
    assert_eq!(all.len(), 5, "only leads were sent");
    assert_eq!(
        contact(&all, "person5@example.com").status,
        ContactStatus::Bounced
    );
    let b = body(&fake.requests()[0]);
    assert_eq!(
        b["query"]["value"][1],
        json!({"field": "role", "operator": "=", "value": "lead"})
    );

    let bad = SyncEnv::new();
    bad.connector("intercom", &shipped("intercom", &fake.base));
    bad.importer(
        "ic",
        &format!(
            "connector: intercom\ncredentials:\n  token: {}\nlist: L\n",
            bad.secret("t", "wrong-token")
        ),
    );
    refused(&bad, "ic", &["401"], &["wrong-token"]).await;
}
