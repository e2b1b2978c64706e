//! `connectors.d/klaviyo.yaml` against the Klaviyo fake: the API key and revision
//! headers, pages sorted by `updated`, consent and suppression read apart, a profile
//! that never subscribed becoming active when it does, a 429 with `Retry-After`.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, membership, shipped};
use crate::common::service::{self, Consent, People, realistic};
use crate::common::services::klaviyo::{self, REVISION};
use crate::common::sync_env::{SyncEnv, field};

const KEY: &str = "pk_0123456789abcdef0123456789abcdef01";

fn importer(env: &SyncEnv, list: &str) -> String {
    format!(
        "connector: klaviyo\ncredentials:\n  api_key: {}\nlist: {list}\npage_size: 10\n",
        env.secret("klaviyo", KEY)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_consent_and_suppression_a_pending_one_confirming_and_an_incremental_run() {
    let people = People::new(realistic(25));
    let fake = service::start(klaviyo::service(KEY), &people).await;
    let env = SyncEnv::new();
    env.connector("klaviyo", &shipped("klaviyo", &fake.base));
    env.importer("k", &importer(&env, "Klaviyo"));

    let summary = env.run("k").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.created), (3, 25), "{c:?}");
    let requests = fake.requests();
    // Three pages, one refused once with 429 and Retry-After and sent again.
    assert_eq!(requests.len(), 4);
    for r in &requests {
        assert_eq!(r.path, "/api/profiles");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Klaviyo-API-Key {KEY}").as_str())
        );
        assert_eq!(r.header("revision"), Some(REVISION));
        assert_eq!(r.q("sort"), Some("updated"));
        assert_eq!(r.q("additional-fields[profile]"), Some("subscriptions"));
        assert_eq!(r.q("page[size]"), Some("10"));
    }
    assert_eq!(requests[0].q("filter"), None, "first run: everyone");

    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(two.phone.as_deref(), Some("+442079460002"));
    assert_eq!(field(two, "%KLAVIYO_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%KLAVIYO_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%KLAVIYO_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%KLAVIYO_LIFECYCLE_STAGE%"), Some("lead"));
    for (email, status, member) in consent(&env, "Klaviyo").await {
        let id: u64 = email[6..email.find('@').unwrap()].parse().unwrap();
        let want = match id {
            3 => (ContactStatus::Normal, Some(MembershipStatus::Unsubscribed)),
            // SUBSCRIBED with a HARD_BOUNCE suppression: the bounce wins.
            5 => (ContactStatus::Bounced, None),
            7 | 11 | 13 => (ContactStatus::Normal, Some(MembershipStatus::Pending)),
            _ => (ContactStatus::Normal, Some(MembershipStatus::Active)),
        };
        assert_eq!((status, member), want, "{email}");
    }

    // Profile 7 subscribes, profile 3 is re-subscribed by an admin: 7 becomes active,
    // 3's unsubscribe stands. The next run filters on updated, exclusive.
    people.edit(7, |c| c.consent = Consent::Subscribed);
    people.edit(3, |c| {
        c.consent = Consent::Subscribed;
        c.first = Some("Renée".into());
    });
    fake.clear();
    let summary = env.run("k").await.unwrap();
    let c = &summary.counts;
    assert_eq!((c.updated, c.created), (2, 0), "{c:?}");
    let requests = fake.requests();
    let filter = requests[0].q("filter").unwrap();
    assert!(
        filter.starts_with("greater-than(updated,2024-05-01T14:09:59"),
        "{filter}"
    );
    let all = env.all_contacts().await;
    assert_eq!(
        membership(contact(&all, "person7@example.com"), "Klaviyo"),
        Some(MembershipStatus::Active)
    );
    assert_eq!(
        contact(&all, "person3@example.com").first_name.as_deref(),
        Some("Renée")
    );
    assert_eq!(
        membership(contact(&all, "person3@example.com"), "Klaviyo"),
        Some(MembershipStatus::Unsubscribed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_stage_filter_is_applied_here() {
    let people = People::new(realistic(25));
    let fake = service::start(klaviyo::service(KEY), &people).await;
    let env = SyncEnv::new();
    env.connector("klaviyo", &shipped("klaviyo", &fake.base));
    env.importer(
        "leads",
        &format!(
            "{}filters: {{lifecycle_stage: lead}}\n",
            importer(&env, "Leads")
        ),
    );
    let summary = env.run("leads").await.unwrap();
    // Klaviyo received no filter of ours (only the update-time one the engine re-queries
    // pages with): every profile came, the even ids (lifecycle "lead") landed.
    assert_eq!(summary.counts.created, 12);
    assert!(fake.requests().iter().all(|r| {
        r.q("filter")
            .is_none_or(|f| f.starts_with("greater-than(updated,"))
    }));
    let landed = env.contacts("Leads").await;
    assert_eq!(landed.len(), 12, "ids 2, 4, ..., 24");
    assert!(
        landed
            .iter()
            .all(|c| field(c, "%KLAVIYO_LIFECYCLE_STAGE%") == Some("lead"))
    );
}
