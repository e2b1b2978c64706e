//! Microsoft Graph v1.0, `GET /v1.0/users/<mailbox>/contactFolders/<folder>/contacts/delta`,
//! and Entra ID's token endpoint (client credentials).
//!
//! Sources: learn.microsoft.com graph/api/contact-delta (per-folder delta, `$select`,
//! `Prefer: odata.maxpagesize`), graph/delta-query-overview (`@odata.nextLink` on every
//! page but the last, `@odata.deltaLink` on the last, never both; links followed as
//! given; removed items as `{"@odata.type", "id", "@removed": {"reason"}}`), Q&A 649481
//! (410 on a delta token Graph no longer holds; full synchronization needed), the contact
//! resource (`givenName`, `surname`, `displayName`, `emailAddresses` `[{name, address}]`,
//! `businessPhones`, `mobilePhone`, `companyName`, `jobTitle`, `businessAddress
//! {city, countryOrRegion}`, `categories`, `lastModifiedDateTime`, `parentFolderId`).
//! The fake's delta token is the harness's sync token (its lifetime, 30 days of fake
//! time, is the fake's choice: Outlook's is a cache size, not a time). Its next links
//! carry the first request's parameters visibly (Graph encodes them in `$skiptoken`).
//! Unverified: the 410 body's code (`SyncStateNotFound` here) and the 400 texts.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::common::service::{
    Auth, Canned, Contact, Grant, PageInfo, Paging, Protocol, Query, Service, SyncTokens,
    TokenEndpoint, Tokens,
};

/// The tenant, mailbox and folder the fake serves.
pub const TENANT: &str = "contoso.onmicrosoft.com";
/// The mailbox (its user id; a principal name works too).
pub const MAILBOX: &str = "8c2b4b6e-1d3a-4f5e-9a7b-2c4d6e8f0a1b";
/// The default Contacts folder's id.
pub const FOLDER: &str = "AAMkADRiOTExMDAwLWZlZTAtNDM5Ni04YTY4LTg3YmMwZDRkMGRjZQAuAAAAAAAy";

fn path() -> String {
    format!("/v1.0/users/{MAILBOX}/contactFolders/{FOLDER}/contacts/delta")
}

fn error(status: u16, code: &str, message: &str) -> Canned {
    Canned::json(
        status,
        json!({"error": {"code": code, "message": message,
                         "innerError": {"date": "2024-05-01T10:00:00", "request-id": "0b1c2d3e-0000-4000-8000-000000000000"}}}),
    )
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A contact's id at Graph.
pub fn contact_id(c: &Contact) -> String {
    format!(
        "AAMkADRiOTExMDAwLWZlZTAtNDM5Ni04YTY4LTg3YmMwZDRkMGRjZQBGAAA{:04}=",
        c.id
    )
}

/// One contact with the `$select`ed properties (and `id`, always).
pub fn contact(c: &Contact, query: &Query) -> Value {
    let all = json!({
        "@odata.etag": format!("W/\"EQAAABYAAAA{}\"", c.updated.timestamp()),
        "id": contact_id(c),
        "createdDateTime": stamp(c.created),
        "lastModifiedDateTime": stamp(c.updated),
        "parentFolderId": FOLDER,
        "displayName": c.full_name(),
        "givenName": c.first,
        "surname": c.last,
        "emailAddresses": c.emails.iter().map(|e| json!({"name": c.full_name(), "address": e})).collect::<Vec<_>>(),
        "businessPhones": c.phone.iter().collect::<Vec<_>>(),
        "mobilePhone": null,
        "companyName": c.company,
        "jobTitle": c.job_title,
        "businessAddress": {"street": null, "city": c.city, "state": null, "countryOrRegion": c.country, "postalCode": null},
        "categories": c.tags,
    });
    let selected: Vec<&str> = query
        .get("$select")
        .map(|s| s.split(',').collect())
        .unwrap_or_default();
    let mut out = Map::new();
    for (name, value) in all.as_object().unwrap() {
        if selected.is_empty()
            || name == "id"
            || name == "@odata.etag"
            || selected.contains(&name.as_str())
        {
            out.insert(name.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// A removed contact as a delta round writes it.
pub fn removed(c: &Contact) -> Value {
    json!({"@odata.type": "#microsoft.graph.contact", "id": contact_id(c),
           "@removed": {"reason": "deleted"}})
}

/// The Prefer header's page size; every request is a delta request (the harness asks for
/// a token on its last page).
fn derive(query: &Query) -> Query {
    let mut out = Query::new();
    out.insert("__delta".into(), "true".into());
    if let Some(prefer) = query.get("prefer")
        && let Some(n) = prefer.trim().strip_prefix("odata.maxpagesize=")
    {
        out.insert("maxpagesize".into(), n.to_string());
    }
    out
}

/// The link of the next page or round: the first request's parameters and a position.
fn link(info: &PageInfo, extra: (&str, &str)) -> String {
    let mut q = info.query.clone();
    // A delta round's pages keep its `$deltatoken`; the round's last link replaces it.
    for derived in ["prefer", "maxpagesize", "__delta", "$skiptoken"] {
        q.remove(derived);
    }
    q.insert(extra.0.into(), extra.1.into());
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&q)
        .finish();
    format!("{}{}?{query}", info.origin, path())
}

/// The mailbox's folder, app-only: `client` at the token endpoint, access tokens from
/// `tokens`.
pub fn service(client: (&str, &str), tokens: &Tokens) -> Service {
    Service {
        name: "microsoft-graph",
        path: path(),
        auth: Auth::Issued("authorization", "Bearer ", tokens.clone()),
        denied: error(
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        ),
        params: vec!["$select", "prefer", "__delta", "$deltatoken"],
        bad_param: |name| {
            error(
                400,
                "ErrorInvalidUrlQuery",
                &format!(
                    "The following parameters are not supported with change tracking over the 'Contacts' resource: '{name}'."
                ),
            )
        },
        paging: Paging::Cursor {
            limit: "maxpagesize",
            cursor: "$skiptoken",
        },
        page_size: (10, 1000),
        since: None,
        query_since: None,
        filters: Vec::new(),
        order: |c, _| (c.id as i64, 0),
        lists_deleted: false,
        record: contact,
        body: |value, info: &PageInfo| {
            let mut body = json!({
                "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#Collection(contact)"),
                "value": value,
            });
            if let Some(cursor) = &info.next_cursor {
                body["@odata.nextLink"] = json!(link(info, ("$skiptoken", cursor)));
            }
            body
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Protocol {
            header_params: vec![("prefer", "prefer")],
            derived: Some(derive),
            sync_tokens: Some(SyncTokens {
                request: "__delta",
                token: "$deltatoken",
                next: "@odata.deltaLink",
                lifetime: chrono::Duration::days(30),
                deleted: removed,
                expired: error(
                    410,
                    "SyncStateNotFound",
                    "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
                ),
                write: |token, info| json!(link(info, ("$deltatoken", token))),
            }),
            ..Protocol::default()
        },
        token: Some(TokenEndpoint {
            path: "/contoso.onmicrosoft.com/oauth2/v2.0/token",
            client: (client.0.to_string(), client.1.to_string()),
            grant: Grant::ClientCredentials,
            access_token: String::new(),
            tokens: Some(tokens.clone()),
            extra: json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599}),
            refused: Canned::json(
                401,
                json!({"error": "invalid_client",
                       "error_description": "AADSTS7000215: Invalid client secret provided.",
                       "error_codes": [7000215]}),
            ),
        }),
    }
}

/// The same folder for a person who consented (delegated): the refresh grant, whose
/// refresh tokens replace themselves on every use (`refresh`), the client in the form.
pub fn delegated_service(client: (&str, &str), refresh: &Tokens, tokens: &Tokens) -> Service {
    let mut service = service(client, tokens);
    if let Some(token) = service.token.as_mut() {
        token.grant = Grant::RotatingRefreshToken(refresh.clone());
        token.refused = Canned::json(
            400,
            json!({"error": "invalid_grant",
                   "error_description": "AADSTS70000: The provided value for the 'refresh_token' is not valid.",
                   "error_codes": [70000]}),
        );
    }
    service
}
