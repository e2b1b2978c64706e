//! Pipedrive API v2, `GET /api/v2/persons`.
//!
//! Sources: services.md §1 (pipedrive.readme.io pagination and v2 migration guide,
//! `pipedrive/client-nodejs` persons-api.ts: `x-api-token`, `limit` default 100 max 500,
//! `additional_data.next_cursor` null at the end, the sample person); the v2 PersonsApi
//! reference as generated from Pipedrive's OpenAPI (Himmelschmidt/pipedrive
//! docs/v2/PersonsApi.md: every `get_persons` parameter, `updated_since` "later than or
//! equal", `sort_by` `id` (default) | `update_time` | `add_time`, `include_fields` with
//! `marketing_status` only when the company has the marketing app); marketing statuses
//! `no_consent`, `subscribed`, `unsubscribed`, `archived` (Flagsmith's Pipedrive
//! integration constants). The 401 and 400 bodies are Pipedrive's `{success: false,
//! error, ...}` shape; their exact texts are unverified.

use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, PageInfo, Paging, Query, Service, Since, parse_rfc3339, rfc3339,
};

/// The marketing status word.
pub fn marketing_status(consent: Consent) -> &'static str {
    match consent {
        Consent::Subscribed => "subscribed",
        Consent::Unsubscribed => "unsubscribed",
        Consent::Archived => "archived",
        // Pipedrive keeps no pending or bounced state: no consent until given.
        Consent::Pending | Consent::NotSubscribed | Consent::Bounced => "no_consent",
    }
}

/// One person as v2 writes it (services.md §1 sample): emails and phones as arrays with
/// a primary flag, `org_id`/`owner_id` plain ints, `marketing_status` only when asked for.
pub fn person(c: &Contact, query: &Query) -> Value {
    let emails: Vec<Value> = c
        .emails
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({"label": if i == 0 { "work" } else { "home" }, "value": e,
                             "primary": i == 0})
        })
        .rev()
        .collect();
    let phones: Vec<Value> = c
        .phone
        .iter()
        .map(|p| json!({"label": "mobile", "value": p, "primary": true}))
        .collect();
    let mut p = json!({
        "id": c.id,
        "name": c.full_name(),
        "first_name": c.first,
        "last_name": c.last,
        "owner_id": c.owner,
        "org_id": c.company.as_ref().map(|_| 100 + c.id % 6),
        "emails": emails,
        "phones": phones,
        "label_ids": c.tags.iter().map(|t| if t == "customer" { 1 } else { 2 }).collect::<Vec<_>>(),
        "visible_to": 3,
        "is_deleted": c.deleted,
        "add_time": rfc3339(c.created),
        "update_time": rfc3339(c.updated),
        "custom_fields": {"8f0c2e1d9a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d": c.stage},
    });
    let included = query.get("include_fields").cloned().unwrap_or_default();
    if included.split(',').any(|f| f == "marketing_status") {
        p["marketing_status"] = json!(marketing_status(c.consent));
    }
    p
}

/// `sort_by` (`id` by default) and `sort_direction` as the reference lists them.
fn order(c: &Contact, query: &Query) -> (i64, i64) {
    let key = match query.get("sort_by").map(String::as_str) {
        Some("update_time") => (c.updated.timestamp(), c.id as i64),
        Some("add_time") => (c.created.timestamp(), c.id as i64),
        _ => (c.id as i64, 0),
    };
    match query.get("sort_direction").map(String::as_str) {
        Some("desc") => (-key.0, -key.1),
        _ => key,
    }
}

fn refusal(status: u16, error: &str) -> Canned {
    Canned::json(
        status,
        json!({"success": false, "error": error, "errorCode": status,
               "error_info": "Please check developers.pipedrive.com for more information about Pipedrive API."}),
    )
}

/// Pipedrive v2 persons with `token` as the API token.
pub fn service(token: &str) -> Service {
    Service {
        name: "pipedrive",
        path: "/api/v2/persons".into(),
        // The official v2 client sends `x-api-token` (services.md §1).
        auth: Auth::Header("x-api-token", token.to_string()),
        denied: refusal(401, "unauthorized access"),
        params: vec![
            "filter_id",
            "ids",
            "deal_id",
            "updated_until",
            "sort_by",
            "sort_direction",
            "include_fields",
            "custom_fields",
        ],
        bad_param: |name| {
            refusal(
                400,
                &format!("Validation failed: {name}: Parameter is not allowed"),
            )
        },
        paging: Paging::Cursor {
            limit: "limit",
            cursor: "cursor",
        },
        page_size: (100, 500),
        since: Some(Since {
            param: "updated_since",
            parse: parse_rfc3339,
            inclusive: true,
        }),
        query_since: None,
        filters: vec![
            ("owner_id", |c, v| v.parse() == Ok(c.owner)),
            ("org_id", |c, v| {
                c.company.is_some() && v.parse() == Ok(100 + c.id % 6)
            }),
        ],
        order,
        // Unverified whether the list returns deleted persons; the fake leaves them out.
        lists_deleted: false,
        record: person,
        body: |data, info: &PageInfo| {
            json!({"success": true, "data": data,
                   "additional_data": {"next_cursor": info.next_cursor}})
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Default::default(),
        token: None,
    }
}
