//! `connectors.d/mailchimp.yaml` against the Mailchimp fake.

use chrono::{DateTime, Duration};
use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, membership, refused, shipped};
use crate::common::service::{self, Consent, People, epoch, realistic};
use crate::common::services::mailchimp::{self, LIST_ID};
use crate::common::sync_env::{SyncEnv, field};

const KEY: &str = "0123456789abcdef0123456789abcdef-us21";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: mailchimp\ncredentials:\n  api_key: {}\nsettings: {{dc: us21, list_id: {LIST_ID}}}\nlist: {list}\npage_size: 10\n{extra}",
        env.secret("mailchimp", KEY)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_consent_custom_fields_and_an_incremental_run() {
    let people = People::new(realistic(25));
    let fake = service::start(mailchimp::service(KEY), &people).await;
    let env = SyncEnv::new();
    env.connector("mailchimp", &shipped("mailchimp", &fake.base));
    env.importer("audience", &importer(&env, "Newsletter", ""));

    let summary = env.run("audience").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created, c.skipped), (3, 25, 25, 0));

    // What Mailchimp received: three pages, the key as the Basic password, no `since`
    // on the first page of a first run, the sort and the field selection. Safe paging
    // (issue 17): each later page is a new query from the newest `last_changed`
    // committed (a second earlier: Mailchimp's filter is exclusive), at offset 0, so a
    // member edited mid-pass shifts nobody past the pass.
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let offsets: Vec<_> = requests.iter().map(|r| r.q("offset").unwrap()).collect();
    assert_eq!(offsets, ["0", "0", "0"]);
    let since: Vec<_> = requests.iter().map(|r| r.q("since_last_changed")).collect();
    assert_eq!(
        since,
        [
            None,
            Some("2024-05-01T11:39:59Z"),
            Some("2024-05-01T13:09:59Z")
        ]
    );
    for r in &requests {
        assert_eq!(r.path, format!("/3.0/lists/{LIST_ID}/members"));
        assert_eq!(r.q("count"), Some("10"));
        assert_eq!(r.q("sort_field"), Some("last_changed"));
        assert_eq!(r.q("vip_only"), None, "no filter given, none sent");
        assert!(r.q("fields").unwrap().contains("members.location"));
        assert!(r.header("authorization").unwrap().starts_with("Basic "));
    }

    // Contacts, with unicode names, and the custom fields under their tags.
    let all = env.all_contacts().await;
    assert_eq!(all.len(), 25);
    let one = contact(&all, "person1@example.com");
    assert_eq!(
        (one.first_name.as_deref(), one.last_name.as_deref()),
        (Some("Zoë"), Some("Brontë"))
    );
    assert_eq!(one.phone.as_deref(), Some("+44 20 7946 0001"));
    assert_eq!(field(one, "%MAILCHIMP_TAGS%"), Some(r#"["customer","t1"]"#));
    assert_eq!(field(one, "%MAILCHIMP_MEMBER_RATING%"), Some("2"));
    assert_eq!(field(one, "%MAILCHIMP_CITY%"), Some("Kraków"));
    assert_eq!(field(one, "%MAILCHIMP_COUNTRY%"), Some("PL"));
    assert_eq!(field(one, "%MAILCHIMP_VIP%"), Some("false"));
    assert_eq!(
        field(one, "%MAILCHIMP_SIGNED_UP%"),
        Some("2024-04-01T10:00:01Z")
    );
    let seven = contact(&all, "person7@example.com");
    assert_eq!(seven.last_name, None, "no LNAME: nothing stored");
    assert_eq!(seven.first_name.as_deref(), Some("Noah"));

    // Every status: unsubscribed final, cleaned bounced, pending / transactional /
    // archived not mailable now, subscribed active.
    let states = consent(&env, "Newsletter").await;
    for (email, status, member) in &states {
        let id: u64 = email
            .trim_start_matches("person")
            .trim_end_matches("@example.com")
            .parse()
            .unwrap();
        let want = match id {
            3 => (ContactStatus::Normal, Some(MembershipStatus::Unsubscribed)),
            5 => (ContactStatus::Bounced, None),
            7 | 11 | 13 => (ContactStatus::Normal, Some(MembershipStatus::Pending)),
            _ => (ContactStatus::Normal, Some(MembershipStatus::Active)),
        };
        assert_eq!((*status, *member), want, "{email}");
    }

    // Two members change at Mailchimp: the pending one confirms, the unsubscribed one
    // is "subscribed" again (say re-added by an admin) and renamed.
    people.edit(7, |c| c.consent = Consent::Subscribed);
    people.edit(3, |c| {
        c.consent = Consent::Subscribed;
        c.first = Some("Renée".into());
    });
    fake.clear();
    let summary = env.run("audience").await.unwrap();
    let c = &summary.counts;
    // The last member of the first run comes back once more through the one-minute
    // lookback, unchanged; only the two edited ones are written.
    assert_eq!(
        (c.pages, c.fetched, c.updated, c.unchanged, c.created),
        (1, 3, 2, 1, 0)
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let since = DateTime::parse_from_rfc3339(requests[0].q("since_last_changed").unwrap()).unwrap();
    assert_eq!(
        since,
        epoch() + Duration::minutes(250) - Duration::minutes(1) - Duration::seconds(1),
        "the newest last_changed of the first run, minus the lookback and a second (the filter is exclusive)"
    );
    let all = env.all_contacts().await;
    let seven = contact(&all, "person7@example.com");
    assert_eq!(
        membership(seven, "Newsletter"),
        Some(MembershipStatus::Active)
    );
    let three = contact(&all, "person3@example.com");
    assert_eq!(three.first_name.as_deref(), Some("Renée"));
    assert_eq!(
        membership(three, "Newsletter"),
        Some(MembershipStatus::Unsubscribed),
        "an unsubscribe is never lifted by an import"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vip_filter_goes_to_mailchimp_and_a_wrong_key_fails_the_run() {
    let people = People::new(realistic(25));
    let fake = service::start(mailchimp::service(KEY), &people).await;
    let env = SyncEnv::new();
    env.connector("mailchimp", &shipped("mailchimp", &fake.base));
    env.importer(
        "vips",
        &importer(&env, "VIPs", "filters: {vip_only: true}\n"),
    );
    let summary = env.run("vips").await.unwrap();
    assert_eq!(summary.counts.fetched, 6);
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.q("vip_only") == Some("true"))
    );
    let emails: Vec<String> = env
        .contacts("VIPs")
        .await
        .into_iter()
        .map(|c| c.email)
        .collect();
    let want: Vec<String> = [12, 16, 20, 24, 4, 8]
        .iter()
        .map(|i| format!("person{i}@example.com"))
        .collect();
    assert_eq!(emails, want);

    let bad = SyncEnv::new();
    bad.connector("mailchimp", &shipped("mailchimp", &fake.base));
    bad.importer(
        "audience",
        &format!(
            "connector: mailchimp\ncredentials:\n  api_key: {}\nsettings: {{dc: us21, list_id: {LIST_ID}}}\nlist: L\n",
            bad.secret("k", "wrong-us21")
        ),
    );
    refused(&bad, "audience", &["401"], &["wrong-us21"]).await;
}
