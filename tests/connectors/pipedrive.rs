//! `connectors.d/pipedrive.yaml` against the Pipedrive v2 fake.

use chrono::DateTime;
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, membership, shipped};
use crate::common::service::{self, Consent, Contact, People, realistic};
use crate::common::services::pipedrive;
use crate::common::sync_env::{SyncEnv, field};

const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";

/// 25 realistic persons, plus a second person with person4's email (a duplicate, as a
/// CRM allows) and one without any email.
fn people() -> Vec<Contact> {
    let mut people = realistic(25);
    let mut twin = people[3].clone();
    twin.id = 26;
    twin.first = Some("Second".into());
    twin.last = None;
    twin.updated = people[24].updated + chrono::Duration::minutes(10);
    let mut nobody = people[0].clone();
    nobody.id = 27;
    nobody.emails.clear();
    nobody.updated = twin.updated + chrono::Duration::minutes(10);
    people.extend([twin, nobody]);
    people
}

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: pipedrive\nauth: api_token\ncredentials:\n  api_token: {}\nsettings: {{company_domain: acme}}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("pd", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persons_marketing_status_organization_and_an_incremental_run() {
    let people = People::new(people());
    let fake = service::start(pipedrive::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", &shipped("pipedrive", &fake.base));
    env.importer("sales", &importer(&env, "Sales", ""));

    let summary = env.run("sales").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    // 27 records: one without email skipped; the duplicate email updates person4.
    assert_eq!((c.pages, c.fetched, c.skipped), (3, 27, 1));
    assert_eq!(c.created + c.updated, 26);
    assert_eq!(c.created, 25);

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].q("cursor"), None);
    assert_eq!(requests[1].q("cursor"), Some("c10"));
    assert_eq!(requests[2].q("cursor"), Some("c20"));
    for r in &requests {
        assert_eq!(r.header("x-api-token"), Some(TOKEN));
        assert_eq!(r.q("limit"), Some("10"));
        assert_eq!(r.q("sort_by"), Some("update_time"));
        assert_eq!(r.q("sort_direction"), Some("asc"));
        assert_eq!(r.q("include_fields"), Some("marketing_status"));
        assert_eq!(r.q("updated_since"), None);
        assert_eq!((r.q("owner_id"), r.q("org_id")), (None, None));
    }

    let all = env.all_contacts().await;
    assert_eq!(all.len(), 25);
    // The primary email (listed last by the fake), the id of the organization and the
    // other segmenting fields under their tags.
    let six = contact(&all, "person6@example.com");
    assert_eq!(
        (six.first_name.as_deref(), six.last_name.as_deref()),
        (Some("Chloé"), Some("Dubois"))
    );
    assert_eq!(six.phone.as_deref(), Some("+44 20 7946 0006"));
    assert_eq!(
        six.organization, None,
        "v2 gives only org_id (documented gap)"
    );
    assert_eq!(field(six, "%PIPEDRIVE_ORGANIZATION_ID%"), Some("100"));
    assert_eq!(field(six, "%PIPEDRIVE_OWNER_ID%"), Some("10"));
    assert_eq!(field(six, "%PIPEDRIVE_LABELS%"), Some("[\"1\",\"2\"]"));
    assert_eq!(
        field(six, "%PIPEDRIVE_ADDED%"),
        Some("2024-04-01T10:00:06Z")
    );
    let four = contact(&all, "person4@example.com");
    assert_eq!(
        four.first_name.as_deref(),
        Some("Second"),
        "the later duplicate wins"
    );
    assert_eq!(
        four.last_name.as_deref(),
        Some("Núñez"),
        "empty never erases"
    );

    for (email, status, member) in consent(&env, "Sales").await {
        let id: u64 = email[6..email.find('@').unwrap()].parse().unwrap();
        let want = match id {
            3 => Some(MembershipStatus::Unsubscribed),
            5 | 7 | 11 | 13 => Some(MembershipStatus::Pending),
            _ => Some(MembershipStatus::Active),
        };
        assert_eq!((status, member), (ContactStatus::Normal, want), "{email}");
    }

    // Person 7 gives consent, person 9 is renamed; the next run asks from the watermark
    // (person 27, the newest record read, even though it had no email) minus the
    // lookback.
    people.edit(7, |c| c.consent = Consent::Subscribed);
    people.edit(9, |c| c.last = Some("Nowak".into()));
    fake.clear();
    let summary = env.run("sales").await.unwrap();
    let c = &summary.counts;
    // The one-minute lookback re-reads person 27 (no email: skipped again).
    assert_eq!(
        (c.fetched, c.updated, c.unchanged, c.skipped, c.created),
        (3, 2, 0, 1, 0)
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let since = DateTime::parse_from_rfc3339(requests[0].q("updated_since").unwrap()).unwrap();
    let newest = people.all().iter().find(|p| p.id == 27).unwrap().updated;
    assert_eq!(since, newest - chrono::Duration::minutes(1));
    let all = env.all_contacts().await;
    assert_eq!(
        membership(contact(&all, "person7@example.com"), "Sales"),
        Some(MembershipStatus::Active)
    );
    assert_eq!(
        contact(&all, "person9@example.com").last_name.as_deref(),
        Some("Nowak")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_and_organization_filters_go_to_pipedrive() {
    let people = People::new(realistic(25));
    let fake = service::start(pipedrive::service(TOKEN), &people).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", &shipped("pipedrive", &fake.base));
    env.importer(
        "mine",
        &importer(&env, "Mine", "filters: {owner_id: 11, org_id: 101}\n"),
    );
    env.run("mine").await.unwrap();
    for r in fake.requests() {
        assert_eq!((r.q("owner_id"), r.q("org_id")), (Some("11"), Some("101")));
    }
    // Odd ids (owner 11) with an organization, org 100 + id % 6 == 101: 1, 7, 13, 19.
    let emails: Vec<String> = env
        .contacts("Mine")
        .await
        .into_iter()
        .map(|c| c.email)
        .collect();
    assert_eq!(
        emails,
        [
            "person13@example.com",
            "person19@example.com",
            "person1@example.com",
            "person7@example.com"
        ]
    );
}
