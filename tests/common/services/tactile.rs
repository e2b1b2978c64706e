//! Tactile CRM, `GET /people`, as its last published documentation describes it (the
//! service appears retired: nothing here was checked against a live account).
//!
//! Sources: services.md §5 (tactilecrm.com/api/ and /api/people; the application source
//! davidomelettes/tactile-git: the people index template, `Tactile_Person::asJson`, the
//! api_token auth adapter): `api_token` in the query; `page` and `limit` (1-100, default
//! 30); filters `firstname`, `surname`, `name`, `organisation_id`, `created_before`,
//! `created_after`, `updated_before`, `updated_after` (any strtotime() string, default
//! zone Europe/London); people ordered by first name, then surname; `{"status":
//! "success", "people": [...], "cur_page", "num_pages", "per_page", "total"}`; errors
//! `{"status": "error", "errors": [...]}`; flat people with string `email`, `phone`,
//! `mobile`, `tags` absent when empty, `can_email`, times like
//! `2024-05-01T10:00:00+0100`. The fake reads `updated_after` as RFC 3339 / ISO 8601
//! with an offset only (what the connector sends) and as exclusive (unverified); the
//! status of a refused token (401 here) is unverified.

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, PageInfo, Paging, Query, Service, Since,
};

fn error(status: u16, message: &str) -> Canned {
    Canned::json(status, json!({"status": "error", "errors": [message]}))
}

/// Times in the account's zone, Europe/London (BST in May: +0100).
fn stamp(t: DateTime<Utc>) -> String {
    t.with_timezone(&FixedOffset::east_opt(3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%z")
        .to_string()
}

/// The id of a person's organisation (people of one company share it).
pub fn organisation_id(c: &Contact) -> Option<u64> {
    c.company.as_ref().map(|_| 70 + c.id % 6)
}

/// One person as `asJson` writes it.
pub fn person(c: &Contact, _query: &Query) -> Value {
    let mut p = json!({
        "id": 500 + c.id,
        "name": c.full_name(),
        "description": null,
        "title": null,
        "firstname": c.first,
        "surname": c.last,
        "suffix": null,
        "jobtitle": c.job_title,
        "language": null,
        "language_code": null,
        "organisation": c.company,
        "organisation_id": organisation_id(c),
        "reports_to": null,
        "phone": c.phone,
        "mobile": null,
        "email": c.email(),
        "owner": format!("rep{}", c.owner),
        "assigned_to": format!("rep{}", c.owner),
        "street1": null, "street2": null, "street3": null,
        "town": c.city, "county": null, "postcode": null,
        "country": null, "country_code": c.country,
        "can_call": true,
        "can_email": c.consent != Consent::Unsubscribed,
        "created": stamp(c.created),
        "lastupdated": stamp(c.updated),
        "dob": null,
        "custom_fields": [],
        "custom_values": [],
    });
    if !c.tags.is_empty() {
        p["tags"] = json!(c.tags);
    }
    p
}

/// Tactile's people with API token `token`.
pub fn service(token: &str) -> Service {
    Service {
        name: "tactile",
        path: "/people".into(),
        auth: Auth::Query("api_token", token.to_string()),
        denied: error(401, "Invalid API token"),
        params: vec![
            "firstname",
            "surname",
            "name",
            "created_before",
            "created_after",
            "updated_before",
        ],
        bad_param: |name| error(400, &format!("Invalid parameter: {name}")),
        paging: Paging::PageNumber {
            page: "page",
            per_page: "limit",
        },
        page_size: (30, 100),
        since: Some(Since {
            param: "updated_after",
            parse: crate::common::service::parse_rfc3339,
            inclusive: false,
        }),
        query_since: None,
        filters: vec![("organisation_id", |c, v| {
            organisation_id(c).is_some_and(|id| id.to_string() == v)
        })],
        // By first name (its initial standing in for first name, surname), then id:
        // never by update time.
        order: |c, _| {
            let first = c.first.clone().unwrap_or_default();
            let key = first.chars().next().map_or(0, |ch| ch as i64);
            (key, c.id as i64)
        },
        lists_deleted: false,
        record: person,
        body: |people, info: &PageInfo| {
            json!({"status": "success", "people": people, "cur_page": info.page,
                   "num_pages": info.total_pages, "per_page": info.limit, "total": info.total})
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Default::default(),
        token: None,
    }
}
