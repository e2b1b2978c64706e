//! `connectors.d/zoho.yaml` against the Zoho CRM fake: OAuth2 with an access token that
//! expires, `page_token` paging, `If-Modified-Since` and its 304, a 429.

use tributary::store::{ContactStatus, MembershipStatus, RunOutcome};

use super::{consent, contact, refused, shipped};
use crate::common::service::{self, Consent, People, Tokens, realistic};
use crate::common::services::zoho;
use crate::common::sync_env::{SyncEnv, field};

const CLIENT: (&str, &str) = ("1000.FAKECLIENT", "f00dcafe-secret");
const REFRESH: &str = "1000.fake-refresh.token";

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: zoho\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\n  refresh_token: {}\nlist: {list}\npage_size: 10\n{extra}",
        CLIENT.0,
        env.secret("secret", CLIENT.1),
        env.secret("refresh", REFRESH),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_by_page_token_an_expired_token_renewed_and_if_modified_since() {
    let people = People::new(realistic(25));
    let tokens = Tokens::new("1000.access.");
    let fake = service::start_with(
        |base| zoho::service(base, CLIENT, REFRESH, &tokens),
        &people,
    )
    .await;
    let env = SyncEnv::new();
    env.connector("zoho", &shipped("zoho", &fake.base));
    env.importer("crm", &importer(&env, "Zoho", ""));

    let summary = env.run("crm").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.fetched, c.created), (3, 25, 25));

    // The refresh grant, then three pages by page_token; the third list request
    // was refused 429 TOO_MANY_REQUESTS and sent again.
    let requests = fake.requests();
    assert_eq!(requests[0].path, "/oauth/v2/token");
    assert!(requests[0].body.contains("grant_type=refresh_token"));
    let list: Vec<_> = requests[1..].iter().collect();
    let tokens_sent: Vec<Option<&str>> = list.iter().map(|r| r.q("page_token")).collect();
    assert_eq!(tokens_sent, [None, Some("c10"), Some("c20"), Some("c20")]);
    for r in &list {
        assert_eq!(r.path, "/crm/v5/Contacts");
        assert_eq!(
            r.header("authorization"),
            Some("Zoho-oauthtoken 1000.access.1")
        );
        assert_eq!(r.q("page"), None, "page_token, never page");
        assert_eq!(r.q("per_page"), Some("10"));
        assert_eq!(r.q("sort_by"), Some("Modified_Time"));
        assert_eq!(r.q("sort_order"), Some("asc"));
        assert!(r.q("fields").unwrap().contains("Email_Opt_Out"));
        assert_eq!(r.header("if-modified-since"), None, "first run: everyone");
    }

    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(two.organization.as_deref(), Some("Firma 2"));
    assert_eq!(two.last_name.as_deref(), Some("Wałęsa"));
    assert_eq!(field(two, "%ZOHO_LEAD_SOURCE%"), Some("lead"));
    assert_eq!(field(two, "%ZOHO_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%ZOHO_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%ZOHO_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%ZOHO_OWNER%"), Some("Rep 10"));
    assert_eq!(field(two, "%ZOHO_TAGS%"), Some(r#"["customer","t2"]"#));
    // Zoho keeps only the opt-out: unsubscribed is final, everyone else active.
    for (email, status, member) in consent(&env, "Zoho").await {
        let want = match email.as_str() {
            "person3@example.com" => Some(MembershipStatus::Unsubscribed),
            _ => Some(MembershipStatus::Active),
        };
        assert_eq!((status, member), (ContactStatus::Normal, want), "{email}");
    }

    // An hour later the access token has expired; two contacts changed. The run's
    // cached token is refused (401 INVALID_TOKEN), renewed once, and If-Modified-Since
    // asks from the newest Modified_Time (inclusive, so person 25 comes again).
    tokens.expire();
    people.edit(9, |c| c.consent = Consent::Unsubscribed);
    people.edit(2, |c| c.job_title = Some("Head of buying".into()));
    fake.clear();
    let summary = env.run("crm").await.unwrap();
    let c = &summary.counts;
    assert_eq!((c.fetched, c.updated, c.unchanged, c.created), (3, 2, 1, 0));
    let requests = fake.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    // The deletions first (none yet: 204), refused with the expired token, renewed, sent
    // again; then the list (refused once by the fake's rate limit, sent again).
    assert_eq!(
        paths,
        [
            "/crm/v5/Contacts/deleted",
            "/oauth/v2/token",
            "/crm/v5/Contacts/deleted",
            "/crm/v5/Contacts",
            "/crm/v5/Contacts"
        ],
        "refused, renewed, sent again"
    );
    assert_eq!(
        requests[4].header("if-modified-since"),
        requests[2].header("if-modified-since"),
        "the deletions and the pass ask from the same time"
    );
    assert_eq!(
        requests[2].header("authorization"),
        Some("Zoho-oauthtoken 1000.access.2")
    );
    assert_eq!(
        requests[2].header("if-modified-since"),
        Some("2024-05-01T14:10:00+00:00"),
        "person 25's Modified_Time, in the documented form"
    );
    let all = env.all_contacts().await;
    assert_eq!(
        field(contact(&all, "person2@example.com"), "%ZOHO_JOB_TITLE%"),
        Some("Head of buying")
    );
    assert_eq!(
        consent(&env, "Zoho")
            .await
            .into_iter()
            .find(|(e, _, _)| e == "person9@example.com")
            .unwrap()
            .2,
        Some(MembershipStatus::Unsubscribed)
    );

    // Both are then deleted at Zoho (deleted contacts are not listed): the deletions
    // request lists them, nothing is modified since the watermark, Zoho answers the list
    // 304 with no body, and the pass ends. Person 2 leaves the list as `removed` (kept,
    // not unsubscribed); person 9's unsubscribe stays what it was.
    people.edit(2, |c| c.deleted = true);
    people.edit(9, |c| c.deleted = true);
    fake.clear();
    let summary = env.run("crm").await.unwrap();
    assert_eq!(
        (
            summary.outcome,
            summary.counts.fetched,
            summary.counts.deleted
        ),
        (RunOutcome::Completed, 0, 2)
    );
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.header("if-modified-since") == Some("2024-05-01T16:10:00+00:00"))
    );
    let deletions = requests
        .iter()
        .find(|r| r.path == "/crm/v5/Contacts/deleted")
        .expect("the deletions are read");
    assert_eq!(
        (deletions.q("type"), deletions.q("page")),
        (Some("all"), Some("1"))
    );
    let members: std::collections::HashMap<String, Option<MembershipStatus>> =
        consent(&env, "Zoho")
            .await
            .into_iter()
            .map(|(email, _, member)| (email, member))
            .collect();
    assert_eq!(
        members["person2@example.com"],
        Some(MembershipStatus::Removed)
    );
    assert_eq!(
        members["person9@example.com"],
        Some(MembershipStatus::Unsubscribed)
    );
    assert_eq!(members.len(), 25, "deleted contacts are kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_source_filter_an_empty_module_and_a_revoked_refresh_token() {
    let people = People::new(realistic(25));
    let tokens = Tokens::new("1000.access.");
    let fake = service::start_with(
        |base| zoho::service(base, CLIENT, REFRESH, &tokens),
        &people,
    )
    .await;
    let env = SyncEnv::new();
    env.connector("zoho", &shipped("zoho", &fake.base));
    env.importer(
        "leads",
        &importer(&env, "Leads", "filters: {lead_source: [lead]}\n"),
    );
    let filtered = env.run("leads").await.unwrap();
    // Client side: the service was asked for everyone and sent everyone; the filter
    // decided what landed.
    assert!(filtered.counts.fetched as usize >= people.all().len());
    assert_eq!(env.contacts("Leads").await.len(), 12, "even ids are leads");

    // An org without contacts: 204 on the first page, nothing to do.
    let empty = People::new(Vec::new());
    let fake =
        service::start_with(|base| zoho::service(base, CLIENT, REFRESH, &tokens), &empty).await;
    let env = SyncEnv::new();
    env.connector("zoho", &shipped("zoho", &fake.base));
    env.importer("crm", &importer(&env, "Zoho", ""));
    let summary = env.run("crm").await.unwrap();
    assert_eq!(
        (summary.outcome, summary.counts.fetched),
        (RunOutcome::Completed, 0)
    );

    let bad = SyncEnv::new();
    bad.connector("zoho", &shipped("zoho", &fake.base));
    bad.importer(
        "crm",
        &format!(
            "connector: zoho\ncredentials:\n  client_id: {{literal: x}}\n  client_secret: {}\n  refresh_token: {}\nlist: L\n",
            bad.secret("s", CLIENT.1),
            bad.secret("r", "1000.revoked"),
        ),
    );
    refused(&bad, "crm", &["invalid_code"], &["1000.revoked", CLIENT.1]).await;
}
