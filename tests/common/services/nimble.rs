//! Nimble CRM, `GET /api/v1/contacts`.
//!
//! Sources: services.md §3 (nimblecrm/api-docs `docs/contacts/basic/list.rst`,
//! `search.rst`, `responses.rst`, `paging_metadata.rst`, `making_auth_requests.rst`;
//! Nimble's "Generate an API key" support article): `Authorization: Bearer <token>`;
//! `page` from 1, `per_page` default 30, sorting refused above 100; `sort=<field>:asc`;
//! `record_type` not combinable with `query`; `query` a JSON search whose `updated`
//! condition takes a `range` of `start_date`/`end_date` days (`YYYY-MM-DD`, day
//! granularity); `meta = {page, pages, per_page, total}`; fields as arrays of `{value,
//! modifier, label}` keyed by display name; timestamps like `2024-05-01T10:00:00+0000`;
//! the sample record. Unverified: whether sorting by `updated` is honoured (the fake
//! honours it), whether a range's days are inclusive (the fake reads both ends
//! inclusive, in UTC), the error bodies (`{"message": ...}` here), and the largest
//! `per_page` (the fake clamps at 100).

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::common::service::{Auth, Canned, Contact, PageInfo, Paging, Query, Service};

fn error(status: u16, message: &str) -> Canned {
    Canned::json(status, json!({"message": message, "code": status}))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

fn value(v: impl Into<Value>, label: &str) -> Value {
    json!([{"value": v.into(), "modifier": "", "label": label}])
}

/// One contact as the sample: fields keyed by display name, tags as `{tag, id}`.
pub fn contact(c: &Contact, _query: &Query) -> Value {
    let mut fields = serde_json::Map::new();
    if let Some(first) = &c.first {
        fields.insert("first name".into(), value(first.as_str(), "first name"));
    }
    if let Some(last) = &c.last {
        fields.insert("last name".into(), value(last.as_str(), "last name"));
    }
    if !c.emails.is_empty() {
        fields.insert(
            "email".into(),
            Value::Array(
                c.emails
                    .iter()
                    .enumerate()
                    .map(|(i, e)| json!({"value": e, "modifier": if i == 0 { "work" } else { "personal" }, "label": "email"}))
                    .collect(),
            ),
        );
    }
    if let Some(phone) = &c.phone {
        fields.insert(
            "phone".into(),
            json!([{"value": phone, "modifier": "mobile", "label": "phone"}]),
        );
    }
    if let Some(company) = &c.company {
        fields.insert(
            "parent company".into(),
            json!([{"value": company, "modifier": "", "extra_value": "5c459c56ceee1868ee3ab468", "label": "parent company"}]),
        );
    }
    if let Some(title) = &c.job_title {
        fields.insert("title".into(), value(title.as_str(), "title"));
    }
    if let Some(stage) = &c.stage {
        fields.insert("lead status".into(), value(stage.as_str(), "lead status"));
    }
    if let (Some(city), Some(country)) = (&c.city, &c.country) {
        fields.insert(
            "address".into(),
            json!([{"value": format!("{{'city': '{city}', 'street': '', 'zip': '', 'country': '{country}'}}"),
                    "modifier": "work", "label": "address"}]),
        );
    }
    json!({
        "id": format!("5049fb849b85f669e4{:06}", c.id),
        "record_type": "person",
        "object_type": "contact",
        "created": stamp(c.created),
        "updated": stamp(c.updated),
        "owner_id": format!("5049f696a694620a07{:06}", c.owner),
        "creator": "Jane Rep",
        "tags": c.tags.iter().enumerate().map(|(i, t)| json!({"tag": t, "id": format!("5049fa0c9b85f62cb4{i:06}")})).collect::<Vec<_>>(),
        "fields": fields,
    })
}

/// `query={"updated": {"range": {"start_date": D1, "end_date": D2}}}`: from the start of
/// D1 (inclusive); anything else in `query` is refused; `record_type` with it is refused.
fn query_since(query: &Query) -> Result<Option<(DateTime<Utc>, bool)>, String> {
    let Some(text) = query.get("query") else {
        return Ok(None);
    };
    if query.contains_key("record_type") || query.contains_key("keyword") {
        return Err("query cannot be combined with record_type or keyword".into());
    }
    let v: Value = serde_json::from_str(text).map_err(|_| "query: not JSON")?;
    let range = v
        .get("updated")
        .and_then(|u| u.get("range"))
        .filter(|_| v.as_object().is_some_and(|o| o.len() == 1))
        .ok_or("query: the fake reads one `updated` range")?;
    let day = |k: &str| {
        range[k]
            .as_str()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .ok_or(format!("query: {k} must be YYYY-MM-DD"))
    };
    let start = day("start_date")?;
    day("end_date")?;
    Ok(Some((start.and_hms_opt(0, 0, 0).unwrap().and_utc(), true)))
}

/// Nimble's contacts with `token` as the bearer token.
pub fn service(token: &str) -> Service {
    Service {
        name: "nimble",
        path: "/api/v1/contacts".into(),
        auth: Auth::Header("authorization", format!("Bearer {token}")),
        denied: error(401, "Authentication failed"),
        params: vec!["fields", "tags", "sort", "record_type", "keyword", "query"],
        bad_param: |name| error(400, &format!("Invalid parameter: {name}")),
        paging: Paging::PageNumber {
            page: "page",
            per_page: "per_page",
        },
        page_size: (30, 100),
        since: None,
        query_since: Some(query_since),
        filters: Vec::new(),
        order: |c, q| match q.get("sort").map(String::as_str) {
            Some("updated:asc") => (c.updated.timestamp(), c.id as i64),
            _ => (c.id as i64, 0),
        },
        lists_deleted: false,
        record: contact,
        body: |resources, info: &PageInfo| {
            json!({"meta": {"page": info.page, "pages": info.total_pages, "per_page": info.limit,
                            "total": info.total}, "resources": resources})
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Default::default(),
        token: None,
    }
}
