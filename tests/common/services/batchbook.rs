//! Batchbook API v1, `GET /api/v1/people.json` (the last published contract; the
//! service itself could not be confirmed).
//!
//! Sources: services.md §4 (batchblue/batchbook-api README.md, sections/people.md:
//! `auth_token` query parameter, a fixed 30 people per page selected by `page`, stop on
//! `{"people": []}`, filters `updated_since`/`updated_before` (ISO 8601 with offset),
//! `exact_email`, `email`, `tags`, `name`, `state`, `champion`, `company_name`,
//! `company_id`, no sort documented, the sample person). Error bodies, whether
//! `updated_since` is inclusive and the order of an unsorted listing are unverified
//! (the fake answers 401 `{"error": ...}`, treats it as `>=` and lists by id).

use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Contact, PageInfo, Paging, Query, Service, Since, parse_rfc3339,
};

/// One person as the sample.
pub fn person(c: &Contact, _query: &Query) -> Value {
    let offset = chrono::FixedOffset::west_opt(4 * 3600).unwrap();
    let time = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&offset)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    };
    json!({
        "id": c.id,
        "first_name": c.first,
        "last_name": c.last,
        "champion": c.id.is_multiple_of(5),
        "emails": c.emails.iter().enumerate().map(|(i, e)|
            json!({"id": i, "address": e, "label": "work", "primary": i == 0})).collect::<Vec<_>>(),
        "phones": c.phone.iter().map(|p|
            json!({"id": 1, "number": p, "label": "work", "primary": true})).collect::<Vec<_>>(),
        "addresses": [{"id": 1, "city": c.city, "country": c.country, "label": "work", "primary": true}],
        "tags": c.tags.iter().enumerate().map(|(i, t)| json!({"id": i, "name": t})).collect::<Vec<_>>(),
        "company_affiliations": c.job_title.iter().map(|t|
            json!({"id": 3, "company_id": 33, "current": true, "job_title": t})).collect::<Vec<_>>(),
        "created_at": time(c.created),
        "updated_at": time(c.updated),
    })
}

/// Batchbook's people endpoint with `token`.
pub fn service(token: &str) -> Service {
    Service {
        name: "batchbook",
        path: "/api/v1/people.json".into(),
        auth: Auth::Query("auth_token", token.to_string()),
        denied: Canned::json(401, json!({"error": "Unauthorized"})),
        params: vec![
            "updated_before",
            "exact_email",
            "email",
            "name",
            "state",
            "company_name",
            "company_id",
        ],
        bad_param: |name| Canned::json(400, json!({"error": format!("unknown parameter {name}")})),
        // A fixed 30 per page: `page` only (the fake's per-page parameter is never sent).
        paging: Paging::PageNumber {
            page: "page",
            per_page: "__fixed",
        },
        page_size: (30, 30),
        since: Some(Since {
            param: "updated_since",
            parse: parse_rfc3339,
            inclusive: true,
        }),
        query_since: None,
        filters: vec![
            ("tags", |c, v| c.tags.iter().any(|t| t == v)),
            ("champion", |c, v| (v == "true") == c.id.is_multiple_of(5)),
        ],
        order: |c, _| (c.id as i64, 0),
        lists_deleted: false,
        record: person,
        body: |people, _info: &PageInfo| json!({"people": people}),
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Default::default(),
        token: None,
    }
}
