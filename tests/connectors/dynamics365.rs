//! `connectors.d/dynamics365.yaml` against the Dataverse fake: client credentials at
//! Entra ID with a scope naming the environment, `Prefer: odata.maxpagesize`,
//! `@odata.nextLink`, `$filter=modifiedon gt`, the do-not-email flags, a deactivated
//! contact, an expired token renewed, the account filter.

use tributary::store::{MembershipStatus, RunOutcome};

use super::{consent, contact, membership, refused, shipped};
use crate::common::service::{self, Consent, People, Tokens, realistic};
use crate::common::services::dynamics365::{self, TENANT, account_id};
use crate::common::sync_env::{SyncEnv, field};

const CLIENT: (&str, &str) = (
    "5f1c7a2e-8d3b-4c6a-9e0f-1a2b3c4d5e6f",
    "Qx8~fake.secret-0123456789abcdefghij",
);

fn importer(env: &SyncEnv, list: &str, extra: &str) -> String {
    format!(
        "connector: dynamics365\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\nsettings: {{host: contoso.crm4.dynamics.com, tenant: {TENANT}}}\nlist: {list}\npage_size: 10\n{extra}",
        CLIENT.0,
        env.secret("secret", CLIENT.1),
    )
}

fn form(body: &str) -> std::collections::BTreeMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_next_links_modifiedon_and_an_expired_token() {
    let people = People::new(realistic(25));
    let tokens = Tokens::new("eyJ0eXAiOiJKV1Qi.access.");
    let fake = service::start(dynamics365::service(CLIENT, &tokens), &people).await;
    let env = SyncEnv::new();
    env.connector("dynamics365", &shipped("dynamics365", &fake.base));
    env.importer("d", &importer(&env, "Dynamics", ""));

    let summary = env.run("d").await.unwrap();
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let c = &summary.counts;
    assert_eq!((c.pages, c.created), (3, 25), "{c:?}");
    let requests = fake.requests();
    // The grant: client credentials, the client in the form, the environment's scope.
    assert_eq!(requests[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
    let grant = form(&requests[0].body);
    assert_eq!(
        grant.get("grant_type").map(String::as_str),
        Some("client_credentials")
    );
    assert_eq!(
        grant.get("scope").cloned(),
        Some(format!("{}/.default", fake.base)),
        "the scope names the environment's host (rehosted to the fake here)"
    );
    let list = &requests[1..];
    assert_eq!(list.len(), 3);
    for r in list {
        assert_eq!(r.path, "/api/data/v9.2/contacts");
        assert_eq!(
            r.header("authorization"),
            Some("Bearer eyJ0eXAiOiJKV1Qi.access.1")
        );
        assert_eq!(
            r.header("prefer"),
            Some(
                "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\",odata.maxpagesize=10"
            )
        );
        assert_eq!(r.header("odata-version"), Some("4.0"));
        assert_eq!(r.q("$orderby"), Some("modifiedon asc,contactid asc"));
        assert!(r.q("$select").unwrap().contains("donotbulkemail"));
    }
    assert_eq!(list[0].q("$filter"), None, "first page: everyone");

    let all = env.all_contacts().await;
    let two = contact(&all, "person2@example.com");
    assert_eq!(
        (two.first_name.as_deref(), two.last_name.as_deref()),
        (Some("Łukasz"), Some("Wałęsa"))
    );
    assert_eq!(
        two.organization.as_deref(),
        Some("Firma 2"),
        "formatted value"
    );
    assert_eq!(two.phone.as_deref(), Some("+44 20 7946 0002"));
    assert_eq!(field(two, "%DYNAMICS365_JOB_TITLE%"), Some("Buyer"));
    assert_eq!(field(two, "%DYNAMICS365_CITY%"), Some("Zürich"));
    assert_eq!(field(two, "%DYNAMICS365_COUNTRY%"), Some("CH"));
    assert_eq!(field(two, "%DYNAMICS365_OWNER%"), Some("Rep 10"));
    let p2 = people.all().into_iter().find(|p| p.id == 2).unwrap();
    assert_eq!(
        field(two, "%DYNAMICS365_ACCOUNT_ID%"),
        account_id(&p2).as_deref()
    );
    // Only the do-not-email flags: person 3 unsubscribed, everyone else mailable.
    for (email, _, member) in consent(&env, "Dynamics").await {
        let want = match email.as_str() {
            "person3@example.com" => Some(MembershipStatus::Unsubscribed),
            _ => Some(MembershipStatus::Active),
        };
        assert_eq!(member, want, "{email}");
    }

    // An hour later the token has expired; person 6 is deactivated, person 4 changes
    // company. The cached token is refused, a new one granted, and the query asks for
    // rows modified after the newest committed `modifiedon` less a second.
    tokens.expire();
    people.edit(4, |c| c.company = Some("Neue Firma".into()));
    people.edit(6, |c| c.deleted = true);
    people.edit(3, |c| c.consent = Consent::Subscribed);
    fake.clear();
    let summary = env.run("d").await.unwrap();
    let c = &summary.counts;
    assert_eq!(c.created, 0, "{c:?}");
    let requests = fake.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths[..3],
        [
            "/api/data/v9.2/contacts",
            "/contoso.onmicrosoft.com/oauth2/v2.0/token",
            "/api/data/v9.2/contacts"
        ],
        "refused, granted again, sent again"
    );
    let filter = requests[2].q("$filter").unwrap();
    assert!(
        filter.starts_with("modifiedon gt 2024-05-01T14:"),
        "{filter}"
    );
    // Only the three changed contacts (and the boundary's) come back.
    assert!(c.fetched <= 4, "{c:?}");
    let all = env.all_contacts().await;
    assert_eq!(
        contact(&all, "person4@example.com").organization.as_deref(),
        Some("Neue Firma")
    );
    // A re-subscribe at the service does not lift the unsubscribe here.
    assert_eq!(
        membership(contact(&all, "person3@example.com"), "Dynamics"),
        Some(MembershipStatus::Unsubscribed)
    );
    let six = contact(&all, "person6@example.com");
    assert!(
        six.sources[0].deleted_at.is_some(),
        "deactivated at Dynamics: its source is marked deleted"
    );
    assert_eq!(c.deleted, 1, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_filter_in_the_odata_filter_and_a_wrong_secret() {
    let people = People::new(realistic(25));
    let tokens = Tokens::new("eyJ0eXAiOiJKV1Qi.access.");
    let fake = service::start(dynamics365::service(CLIENT, &tokens), &people).await;
    let env = SyncEnv::new();
    env.connector("dynamics365", &shipped("dynamics365", &fake.base));
    let p2 = people.all().into_iter().find(|p| p.id == 2).unwrap();
    let firma = account_id(&p2).unwrap();
    env.importer(
        "firma",
        &importer(
            &env,
            "Firma",
            &format!("filters: {{account_id: \"{firma}\"}}\n"),
        ),
    );
    env.run("firma").await.unwrap();
    let list: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/contacts"))
        .collect();
    assert_eq!(
        list[0].q("$filter"),
        Some(format!("_parentcustomerid_value eq {firma}").as_str())
    );
    let emails: Vec<String> = env
        .contacts("Firma")
        .await
        .into_iter()
        .map(|c| c.email)
        .collect();
    // Ids 2, 8, 14 have company "Firma 2" (20 has none).
    assert_eq!(
        emails,
        [
            "person14@example.com",
            "person2@example.com",
            "person8@example.com"
        ]
    );

    let bad = SyncEnv::new();
    bad.connector("dynamics365", &shipped("dynamics365", &fake.base));
    bad.importer(
        "d",
        &format!(
            "connector: dynamics365\ncredentials:\n  client_id: {{literal: \"{}\"}}\n  client_secret: {}\nsettings: {{host: contoso.crm4.dynamics.com, tenant: {TENANT}}}\nlist: L\n",
            CLIENT.0,
            bad.secret("s", "wrong-secret")
        ),
    );
    refused(&bad, "d", &["invalid_client", "401"], &["wrong-secret"]).await;
}

/// The scope names the environment: one app's tokens for two environments are two
/// accounts (two grants, each with its own scope), not one token shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_two_environments_two_tokens() {
    let people = People::new(realistic(3));
    let tokens = Tokens::new("eyJ0eXAiOiJKV1Qi.access.");
    let fake = service::start(dynamics365::service(CLIENT, &tokens), &people).await;
    let env = SyncEnv::new();
    // Rehosted, but with the scope's host left to the importer's setting.
    let text = shipped("dynamics365", &fake.base).replace(
        &format!("\"{}/.default\"", fake.base),
        "\"https://{{settings.host}}/.default\"",
    );
    assert!(text.contains("https://{{settings.host}}/.default"));
    env.connector("dynamics365", &text);
    for (id, host) in [
        ("west", "contoso.crm.dynamics.com"),
        ("europe", "contoso-eu.crm4.dynamics.com"),
    ] {
        env.importer(
            id,
            &importer(&env, id, "").replace("contoso.crm4.dynamics.com", host),
        );
        env.run(id).await.unwrap();
    }
    let scopes: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/token"))
        .filter_map(|r| form(&r.body).get("scope").cloned())
        .collect();
    assert_eq!(
        scopes,
        [
            "https://contoso.crm.dynamics.com/.default",
            "https://contoso-eu.crm4.dynamics.com/.default"
        ]
    );
}
