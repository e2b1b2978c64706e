//! Freshsales (Freshworks CRM), `GET /crm/sales/api/contacts/view/<view id>`.
//!
//! Sources: Airbyte source-freshsales manifest.yaml (the `contacts` stream: header
//! `Authorization: Token token=<key>`, `page`, `per_page`, `sort=updated_at`,
//! `sort_type=asc`, records under `contacts`, view ids from `/contacts/filters`; the
//! contacts schema: `emails`, `mobile_number`, `work_number`, `job_title`, `city`,
//! `country`, `tags` (strings), `owner_id`, `lifecycle_stage_id`, `subscription_status`
//! (integer), `is_deleted`, `updated_at`); the Freshsales API reference (`meta:
//! {total_pages, total}`; ISO 8601 times with the account's offset). The fake serves the
//! "All Contacts" view (`VIEW`). Unverified: the meaning of each `subscription_status`
//! number (the fake writes 1 subscribed, 0 unsubscribed, 3 not sure), whether views list
//! deleted contacts (the fake leaves them out), the largest `per_page` (clamped at 100),
//! the 401 and 400 bodies (`{"login": "failed", "message": ...}` here), and whether an
//! unknown parameter is refused (the fake refuses it).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::service::{Auth, Canned, Consent, Contact, PageInfo, Paging, Query, Service};

/// The id of the "All Contacts" view the fake serves.
pub const VIEW: u64 = 16000109021;

fn stamp(t: DateTime<Utc>) -> String {
    // The account's zone, +05:30 (Freshworks writes local times with an offset).
    let local = t.with_timezone(&chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap());
    local.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// `subscription_status` as the fake writes each consent state.
pub fn subscription_status(c: &Contact) -> u8 {
    match c.consent {
        Consent::Unsubscribed => 0,
        Consent::Pending | Consent::NotSubscribed | Consent::Archived => 3,
        Consent::Subscribed | Consent::Bounced => 1,
    }
}

/// One contact as the view writes it.
pub fn contact(c: &Contact, _query: &Query) -> Value {
    json!({
        "id": 16000000000u64 + c.id,
        "first_name": c.first,
        "last_name": c.last,
        "display_name": c.full_name(),
        "email": c.email(),
        "emails": c.emails.iter().enumerate().map(|(i, e)| json!({
            "id": 16000500000u64 + c.id * 10 + i as u64, "value": e,
            "is_primary": i == 0, "label": null, "_destroy": false})).collect::<Vec<_>>(),
        "job_title": c.job_title,
        "city": c.city,
        "state": null,
        "zipcode": null,
        "country": c.country,
        "mobile_number": c.phone,
        "work_number": null,
        "tags": c.tags,
        "owner_id": 16000000100u64 + c.owner,
        "lifecycle_stage_id": if c.stage.as_deref() == Some("lead") { 16000030001u64 } else { 16000030002 },
        "subscription_status": subscription_status(c),
        "subscription_types": "1;2;3;4;5",
        "unsubscription_reason": null,
        "is_deleted": c.deleted,
        "created_at": stamp(c.created),
        "updated_at": stamp(c.updated),
        "custom_field": {},
        "links": {"conversations": format!("/crm/sales/contacts/{}/conversations/all?include=email_conversation_recipients%2Ctargetable%2Cphone_number%2Cphone_caller%2Cnote%2Cuser&per_page=3", 16000000000u64 + c.id)},
    })
}

/// The "All Contacts" view with API key `key`.
pub fn service(key: &str) -> Service {
    Service {
        name: "freshsales",
        path: format!("/crm/sales/api/contacts/view/{VIEW}"),
        auth: Auth::Header("authorization", format!("Token token={key}")),
        denied: Canned::json(
            401,
            json!({"login": "failed", "message": "Incorrect or expired API key"}),
        ),
        params: vec!["sort", "sort_type", "include"],
        bad_param: |name| {
            Canned::json(
                400,
                json!({"errors": {"code": 400, "message": [format!("Invalid parameter: {name}")]}}),
            )
        },
        paging: Paging::PageNumber {
            page: "page",
            per_page: "per_page",
        },
        page_size: (25, 100),
        since: None,
        query_since: None,
        filters: Vec::new(),
        order: |c, q| match (
            q.get("sort").map(String::as_str),
            q.get("sort_type").map(String::as_str),
        ) {
            (Some("updated_at"), Some("asc")) => (c.updated.timestamp(), c.id as i64),
            (Some("updated_at"), _) => (-c.updated.timestamp(), -(c.id as i64)),
            _ => (c.id as i64, 0),
        },
        lists_deleted: false,
        record: contact,
        body: |contacts, info: &PageInfo| json!({"contacts": contacts, "meta": {"total_pages": info.total_pages, "total": info.total}}),
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Default::default(),
        token: None,
    }
}
