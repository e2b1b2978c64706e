//! Salesforce REST API, `GET /services/data/v60.0/queryAll?q=<SOQL>` on Contact, and the
//! OAuth2 token endpoint.
//!
//! Sources: services.md §12 (Airbyte source-salesforce and the REST API guide: the token
//! response's `instance_url`, `/queryAll` also returning deleted rows with `IsDeleted`,
//! unquoted datetime literals, `{totalSize, done, nextRecordsUrl, records}` with a
//! relative `nextRecordsUrl` fetched without parameters, `Sforce-Query-Options:
//! batchSize=N` (200-2000, default 2000), `attributes` on every record, relationship
//! fields nested, timestamps like `2024-05-01T10:00:00.000+0000`, the 403
//! `REQUEST_LIMIT_EXCEEDED`); connector-review.md [SF] (`/query` never returns deleted
//! rows: only `/queryAll` is faked, so a connector reading `/query` gets a 404 here).
//! Error documents are Salesforce's `[{message, errorCode}]` arrays (`INVALID_SESSION_ID`,
//! `INVALID_FIELD`, `MALFORMED_QUERY`); their message texts are unverified. The SOQL the
//! fake understands is the connector's shape: `SELECT <fields> FROM Contact [WHERE
//! SystemModstamp > <datetime>] ORDER BY SystemModstamp ASC`, each field checked.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, Grant, PageInfo, Paging, Query, Service, TokenEndpoint,
};

/// The access token the token endpoint hands out.
pub const ACCESS: &str = "00D5g000004ABCD!AQ0AQfake";
/// The API version the fake serves (the connector's).
pub const VERSION: &str = "v60.0";

const FIELDS: [&str; 16] = [
    "Id",
    "Email",
    "FirstName",
    "LastName",
    "Phone",
    "Account.Name",
    "Title",
    "MailingCity",
    "MailingCountry",
    "OwnerId",
    "LeadSource",
    "HasOptedOutOfEmail",
    "IsEmailBounced",
    "IsDeleted",
    "SystemModstamp",
    "LastModifiedDate",
];

fn errors(status: u16, code: &str, message: &str) -> Canned {
    Canned::json(status, json!([{"message": message, "errorCode": code}]))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// The contacts connector's SOQL: every selected field exists, the object is Contact, and
/// an optional `WHERE SystemModstamp > <datetime>` (exclusive).
fn soql_since(query: &Query) -> Result<Option<(DateTime<Utc>, bool)>, String> {
    soql(query, "Contact", &FIELDS, None)
}

/// A SOQL query of `object` whose selected fields are all among `fields`, with the
/// condition `filter` where one is required, an optional `SystemModstamp > <datetime>`
/// (exclusive; `AND`ed to the filter) and `ORDER BY SystemModstamp ASC`: the time asked
/// for, if any.
fn soql(
    query: &Query,
    object: &str,
    fields: &[&str],
    filter: Option<&str>,
) -> Result<Option<(DateTime<Utc>, bool)>, String> {
    let q = query.get("q").ok_or("q")?;
    let q = q.split_whitespace().collect::<Vec<_>>().join(" ");
    let rest = q.strip_prefix("SELECT ").ok_or("q: MALFORMED_QUERY")?;
    let (selected, rest) = rest.split_once(" FROM ").ok_or("q: MALFORMED_QUERY")?;
    for field in selected.split(',') {
        if !fields.contains(&field.trim()) {
            return Err(format!("q: INVALID_FIELD {}", field.trim()));
        }
    }
    let mut rest = rest.strip_prefix(object).ok_or("q: INVALID_TYPE")?.trim();
    let mut since_prefix = "WHERE SystemModstamp > ";
    if let Some(filter) = filter {
        rest = rest
            .strip_prefix(filter)
            .ok_or_else(|| format!("q: the fake expects {filter}"))?
            .trim();
        since_prefix = "AND SystemModstamp > ";
    }
    let since = match rest.strip_prefix(since_prefix) {
        Some(after) => {
            let literal = after.split(' ').next().unwrap_or("");
            let t = DateTime::parse_from_rfc3339(literal)
                .map_err(|_| format!("q: MALFORMED_QUERY datetime {literal}"))?;
            Some((t.with_timezone(&Utc), false))
        }
        None => None,
    };
    if !q.ends_with("ORDER BY SystemModstamp ASC") {
        return Err("q: the fake expects ORDER BY SystemModstamp ASC".into());
    }
    Ok(since)
}

/// One Contact row, as services.md §12's sample.
pub fn row(c: &Contact, _query: &Query) -> Value {
    let id = format!("0035g00000{:08}", c.id);
    json!({
        "attributes": {"type": "Contact", "url": format!("/services/data/{VERSION}/sobjects/Contact/{id}")},
        "Id": id,
        "Email": c.email(),
        "FirstName": c.first,
        "LastName": c.last,
        "Phone": c.phone,
        "Account": c.company.as_ref().map(|name| json!({
            "attributes": {"type": "Account", "url": "/services/data/v60.0/sobjects/Account/0015g00000QrStUAAV"},
            "Name": name})),
        "Title": c.job_title,
        "MailingCity": c.city,
        "MailingCountry": c.country,
        "OwnerId": format!("0055g00000{:08}", c.owner),
        "LeadSource": c.stage,
        "HasOptedOutOfEmail": c.consent == Consent::Unsubscribed,
        "IsEmailBounced": c.consent == Consent::Bounced,
        "IsDeleted": c.deleted,
        "SystemModstamp": stamp(c.updated),
        "LastModifiedDate": stamp(c.updated),
    })
}

/// Salesforce with its token endpoint; the token response names `base` as the
/// instance.
pub fn service(base: &str, client: (&str, &str), refresh_token: &str) -> Service {
    Service {
        name: "salesforce",
        path: format!("/services/data/{VERSION}/queryAll"),
        auth: Auth::Header("authorization", format!("Bearer {ACCESS}")),
        denied: errors(401, "INVALID_SESSION_ID", "Session expired or invalid"),
        params: vec!["q"],
        bad_param: |what| errors(400, "MALFORMED_QUERY", what),
        paging: Paging::QueryLocator {
            size_header: "sforce-query-options",
        },
        page_size: (2000, 2000),
        since: None,
        query_since: Some(soql_since),
        filters: Vec::new(),
        order: |c, _| (c.updated.timestamp_millis(), c.id as i64),
        // `/queryAll`: deleted rows too, with IsDeleted.
        lists_deleted: true,
        record: row,
        body: |records, info: &PageInfo| {
            let mut body = json!({"totalSize": info.total, "done": info.next_url.is_none(),
                                  "records": records});
            if let Some(next) = &info.next_url {
                body["nextRecordsUrl"] = json!(next);
            }
            body
        },
        fields_param: None,
        required: vec!["q"],
        cursor_binds_params: false,
        protocol: Default::default(),
        token: Some(TokenEndpoint {
            path: "/services/oauth2/token",
            client: (client.0.to_string(), client.1.to_string()),
            grant: Grant::RefreshToken(refresh_token.to_string()),
            tokens: None,
            access_token: ACCESS.to_string(),
            extra: json!({"instance_url": base, "id": "https://login.salesforce.com/id/00D/005",
                          "issued_at": "1714557600000", "signature": "x"}),
            refused: Canned::json(
                400,
                json!({"error": "invalid_grant", "error_description": "expired access/refresh token"}),
            ),
        }),
    }
}

const LEAD_FIELDS: [&str; 16] = [
    "Id",
    "Email",
    "FirstName",
    "LastName",
    "Phone",
    "Company",
    "Title",
    "City",
    "Country",
    "OwnerId",
    "LeadSource",
    "Status",
    "HasOptedOutOfEmail",
    "IsEmailBounced",
    "IsDeleted",
    "SystemModstamp",
];

/// A lead is converted when its tags hold `converted` (the fake's convention).
pub fn converted(c: &Contact) -> bool {
    c.tags.iter().any(|t| t == "converted")
}

/// The leads connector's SOQL: every selected field a Lead field, `FROM Lead WHERE
/// IsConverted = false [AND SystemModstamp > <datetime>] ORDER BY SystemModstamp ASC`.
fn soql_lead_since(query: &Query) -> Result<Option<(DateTime<Utc>, bool)>, String> {
    soql(
        query,
        "Lead",
        &LEAD_FIELDS,
        Some("WHERE IsConverted = false"),
    )
}

/// One Lead row (Salesforce Object Reference, Lead: `Company`, `City`, `Country`,
/// `Status`, `IsConverted`).
pub fn lead(c: &Contact, _query: &Query) -> Value {
    let id = format!("00Q5g00000{:08}", c.id);
    json!({
        "attributes": {"type": "Lead", "url": format!("/services/data/{VERSION}/sobjects/Lead/{id}")},
        "Id": id,
        "Email": c.email(),
        "FirstName": c.first,
        "LastName": c.last,
        "Phone": c.phone,
        "Company": c.company,
        "Title": c.job_title,
        "City": c.city,
        "Country": c.country,
        "OwnerId": format!("0055g00000{:08}", c.owner),
        "LeadSource": c.stage,
        "Status": if c.id.is_multiple_of(2) { "Open - Not Contacted" } else { "Working - Contacted" },
        "HasOptedOutOfEmail": c.consent == Consent::Unsubscribed,
        "IsEmailBounced": c.consent == Consent::Bounced,
        "IsDeleted": c.deleted,
        "SystemModstamp": stamp(c.updated),
    })
}

/// Salesforce's Lead object through the same `/queryAll` and token endpoint; converted
/// leads match `IsConverted = false` no more.
pub fn leads_service(base: &str, client: (&str, &str), refresh_token: &str) -> Service {
    use crate::common::service::Protocol;
    Service {
        name: "salesforce-leads",
        query_since: Some(soql_lead_since),
        record: lead,
        filters: vec![("__not_converted", |c, _| !converted(c))],
        protocol: Protocol {
            // `soql_lead_since` refuses a query without `IsConverted = false`.
            derived: Some(|_| Query::from([("__not_converted".to_string(), "1".to_string())])),
            ..Protocol::default()
        },
        ..service(base, client, refresh_token)
    }
}
