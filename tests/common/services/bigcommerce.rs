//! BigCommerce Management API v3, `GET /stores/{hash}/v3/customers`.
//!
//! Sources: services.md §2 (bigcommerce/docs reference/customers.v3.yml: `X-Auth-Token`,
//! `page`/`limit` default 50 max 250, `date_modified:min` "e.g. `2024-05-14` or
//! `2024-05-14T09:34:00`", `sort=date_modified:asc`, the `:in` filters, `include`,
//! `meta.pagination` with `total_pages`, the sample customer); connector-review.md (the
//! `...Z` form is not among the documented ones; no marketing consent on customers).
//! The fake accepts only the documented forms (whether BigCommerce refuses others is
//! unverified), reads them as UTC, and treats `:min` as inclusive (unverified). Error
//! bodies are v3's `{status, title, type}` documents; their texts are unverified.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Contact, PageInfo, Paging, Query, Service, Since, rfc3339,
};

/// The store hash the fake serves.
pub const STORE: &str = "abc123";

fn parse_min(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .map(|t| t.and_utc())
}

fn problem(status: u16, title: &str) -> Canned {
    Canned::json(
        status,
        json!({"status": status, "title": title,
               "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes"}),
    )
}

/// One customer as the sample, with `addresses` only when `include` asks for them.
pub fn customer(c: &Contact, query: &Query) -> Value {
    let mut v = json!({
        "id": c.id,
        "email": c.email(),
        "first_name": c.first,
        "last_name": c.last,
        "company": c.company.clone().unwrap_or_default(),
        "phone": c.phone.clone().unwrap_or_default(),
        "customer_group_id": 1 + c.id % 3,
        "notes": "",
        "date_created": rfc3339(c.created),
        "date_modified": rfc3339(c.updated),
        "address_count": 1,
        "channel_ids": [1],
        "accepts_product_review_abandoned_cart_emails": false,
    });
    let include = query.get("include").cloned().unwrap_or_default();
    if include.split(',').any(|i| i == "addresses") {
        v["addresses"] = json!([{"id": 900 + c.id, "customer_id": c.id, "city": c.city,
                                 "country_code": c.country, "address_type": "residential"}]);
    }
    v
}

/// The v3 customers endpoint of store [`STORE`], with `token`.
pub fn service(token: &str) -> Service {
    Service {
        name: "bigcommerce",
        path: format!("/stores/{STORE}/v3/customers"),
        auth: Auth::Header("x-auth-token", token.to_string()),
        denied: problem(401, "Unauthorized"),
        params: vec![
            "date_modified:max",
            "date_created:min",
            "date_created:max",
            "sort",
            "id:in",
            "email:in",
            "company:in",
            "name:like",
            "include",
        ],
        bad_param: |name| problem(422, &format!("The filter or parameter `{name}` is invalid")),
        paging: Paging::PageNumber {
            page: "page",
            per_page: "limit",
        },
        page_size: (50, 250),
        since: Some(Since {
            param: "date_modified:min",
            parse: parse_min,
            inclusive: true,
        }),
        query_since: None,
        filters: vec![("customer_group_id:in", |c, v| {
            v.split(',').any(|g| g.parse() == Ok(1 + c.id % 3))
        })],
        order: |c, q| match q.get("sort").map(String::as_str) {
            Some("date_modified:asc") => (c.updated.timestamp(), c.id as i64),
            _ => (c.id as i64, 0),
        },
        lists_deleted: false,
        record: customer,
        body: |data, info: &PageInfo| {
            let count = data.len();
            json!({"data": data, "meta": {"pagination": {
                "total": info.total, "count": count, "per_page": info.limit,
                "current_page": info.page, "total_pages": info.total_pages,
                "links": {"current": format!("?page={}&limit={}", info.page, info.limit)}}}})
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Default::default(),
        token: None,
    }
}
