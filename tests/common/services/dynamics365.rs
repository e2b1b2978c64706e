//! Microsoft Dynamics 365 / Dataverse Web API v9.2, `GET /api/data/v9.2/contacts`, and
//! Entra ID's token endpoint for the client credentials grant.
//!
//! Sources: learn.microsoft.com power-apps/developer/data-platform/webapi/query/
//! page-results (`Prefer: odata.maxpagesize=N` up to 5,000, larger asks ignored;
//! `@odata.nextLink` with `$skiptoken`; no `$skip`; the sample page with `@odata.context`
//! and `@odata.etag`), filter-rows (`gt`, `eq`, `and`; GUIDs unquoted), order-rows,
//! select-columns (only the selected columns and the primary key come back), formatted
//! values (`<column>@OData.Community.Display.V1.FormattedValue` when the Prefer header asks
//! for `odata.include-annotations`); Entra ID client credentials (`POST
//! /<tenant>/oauth2/v2.0/token`, `grant_type=client_credentials`, `scope=<resource>/
//! .default`; the harness checks the grant and client, the test the scope). Unverified:
//! the texts of the 400 and 401 error documents (Dataverse's `{"error": {"code",
//! "message"}}` shape is documented; the codes here are illustrative).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, Grant, PageInfo, Paging, Protocol, Query, Service, Since,
    TokenEndpoint, Tokens,
};

/// The tenant the fake's token endpoint serves.
pub const TENANT: &str = "contoso.onmicrosoft.com";

const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";

fn error(status: u16, code: &str, message: &str) -> Canned {
    Canned::json(status, json!({"error": {"code": code, "message": message}}))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The GUID of a contact.
pub fn contact_id(c: &Contact) -> String {
    format!("49b0be2e-d01c-ed11-b83e-{:012}", c.id)
}

/// The GUID of a contact's company (parent customer), if it has one.
pub fn account_id(c: &Contact) -> Option<String> {
    c.company
        .as_ref()
        .map(|_| format!("7a1b2c3d-0000-ed11-b83e-{:012}", c.id % 6))
}

/// One contact with only the `$select`ed columns (and the key and etag, always).
pub fn contact(c: &Contact, query: &Query) -> Value {
    let all = json!({
        "contactid": contact_id(c),
        "firstname": c.first,
        "lastname": c.last,
        "emailaddress1": c.email(),
        "telephone1": c.phone,
        "mobilephone": null,
        "jobtitle": c.job_title,
        "address1_city": c.city,
        "address1_country": c.country,
        "donotemail": false,
        "donotbulkemail": c.consent == Consent::Unsubscribed,
        "statecode": if c.deleted { 1 } else { 0 },
        "modifiedon": stamp(c.updated),
        "_parentcustomerid_value": account_id(c),
        "_ownerid_value": format!("0b1c2d3e-0000-ed11-b83e-{:012}", c.owner),
    });
    let annotations = query
        .get("prefer")
        .is_some_and(|p| p.contains("odata.include-annotations="));
    let mut out = Map::new();
    out.insert(
        "@odata.etag".into(),
        json!(format!("W/\"{}\"", c.updated.timestamp())),
    );
    let selected: Vec<&str> = query
        .get("$select")
        .map(|s| s.split(',').map(str::trim).collect())
        .unwrap_or_default();
    for (name, value) in all.as_object().unwrap() {
        if name != "contactid" && !selected.is_empty() && !selected.contains(&name.as_str()) {
            continue;
        }
        out.insert(name.clone(), value.clone());
        if annotations && !value.is_null() {
            let shown = match name.as_str() {
                "_parentcustomerid_value" => c.company.clone().map(Value::String),
                "_ownerid_value" => Some(json!(format!("Rep {}", c.owner))),
                "modifiedon" => Some(json!(c.updated.format("%-m/%-d/%Y %-I:%M %p").to_string())),
                _ => None,
            };
            if let Some(shown) = shown {
                out.insert(format!("{name}{FORMATTED}"), shown);
            }
        }
    }
    Value::Object(out)
}

const COLUMNS: [&str; 15] = [
    "contactid",
    "firstname",
    "lastname",
    "emailaddress1",
    "telephone1",
    "mobilephone",
    "jobtitle",
    "address1_city",
    "address1_country",
    "donotemail",
    "donotbulkemail",
    "statecode",
    "modifiedon",
    "_parentcustomerid_value",
    "_ownerid_value",
];

/// Reads the Prefer header and `$filter` into parameters the harness applies:
/// `maxpagesize`, `modifiedon_gt`, `parentcustomerid`; anything else it does not read
/// (another clause, an `or`, an unknown column in `$select`) becomes a parameter named
/// after it, which the harness refuses with 400.
fn derive(query: &Query) -> Query {
    let mut out = Query::new();
    if let Some(prefer) = query.get("prefer") {
        for preference in prefer.split(',') {
            if let Some(n) = preference.trim().strip_prefix("odata.maxpagesize=") {
                // Larger asks are ignored: the default of 5,000 applies.
                let n = n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 5000)
                    .unwrap_or(5000);
                out.insert("maxpagesize".into(), n.to_string());
            }
        }
    }
    if let Some(select) = query.get("$select")
        && let Some(unknown) = select.split(',').find(|c| !COLUMNS.contains(&c.trim()))
    {
        out.insert(format!("$select:{unknown}"), String::new());
    }
    if let Some(filter) = query.get("$filter") {
        for clause in filter.split(" and ") {
            let parts: Vec<&str> = clause.trim().splitn(3, ' ').collect();
            match parts.as_slice() {
                ["modifiedon", "gt", value] => {
                    out.insert("modifiedon_gt".into(), value.to_string());
                }
                ["_parentcustomerid_value", "eq", value] => {
                    out.insert("parentcustomerid".into(), value.to_string());
                }
                _ => {
                    out.insert(format!("$filter:{clause}"), String::new());
                }
            }
        }
    }
    out
}

/// The contacts of an environment, app-only: `client` at the token endpoint, access
/// tokens from `tokens`.
pub fn service(client: (&str, &str), tokens: &Tokens) -> Service {
    Service {
        name: "dynamics365",
        path: "/api/data/v9.2/contacts".into(),
        auth: Auth::Issued("authorization", "Bearer ", tokens.clone()),
        denied: Canned::json(
            401,
            json!({"error": {"code": "0x80072560", "message": "The user is not a member of the organization."}}),
        ),
        params: vec!["$select", "$filter", "$orderby", "prefer"],
        bad_param: |name| {
            error(
                400,
                "0x80060888",
                &format!("Could not find a property named '{name}'."),
            )
        },
        paging: Paging::Cursor {
            limit: "maxpagesize",
            cursor: "$skiptoken",
        },
        page_size: (5000, 5000),
        since: Some(Since {
            param: "modifiedon_gt",
            parse: crate::common::service::parse_rfc3339,
            inclusive: false,
        }),
        query_since: None,
        filters: vec![("parentcustomerid", |c, v| {
            account_id(c).is_some_and(|id| id == v)
        })],
        order: |c, q| match q.get("$orderby").map(String::as_str) {
            Some("modifiedon asc,contactid asc") => (c.updated.timestamp(), c.id as i64),
            _ => (c.id as i64, 0),
        },
        lists_deleted: true,
        record: contact,
        body: |value, info: &PageInfo| {
            let mut body = json!({
                "@odata.context": format!("{}/api/data/v9.2/$metadata#contacts", info.origin),
                "value": value,
            });
            if let Some(cursor) = &info.next_cursor {
                let mut q = info.query.clone();
                for derived in ["prefer", "maxpagesize", "modifiedon_gt", "parentcustomerid"] {
                    q.remove(derived);
                }
                // Dataverse's token is a paging cookie; the fake's is its own position.
                q.insert("$skiptoken".into(), cursor.clone());
                let query: String = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&q)
                    .finish();
                body["@odata.nextLink"] =
                    json!(format!("{}/api/data/v9.2/contacts?{query}", info.origin));
            }
            body
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Protocol {
            header_params: vec![("prefer", "prefer")],
            derived: Some(derive),
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
