//! BigCommerce Management API v2 (deprecated), `GET /stores/{hash}/v2/customers`.
//!
//! Sources: services.md §2 (bigcommerce/docs reference/customers.v2.yml: `deprecated:
//! true`, `page`/`limit` default 50 max 250, the filters `min_date_modified`,
//! `max_date_modified`, `min_date_created`, `min_id`, `email`, `company`,
//! `customer_group_id`, default order by id, a bare JSON array per page, RFC 2822 dates,
//! addresses as a sub-resource link; aligent/bigcommerce-v3-api-php-client PR #177: an
//! empty result is HTTP 204 with no body; docs/api-docs/getting-started/api-rate-limits:
//! 429 with `X-Rate-Limit-Time-Reset-Ms`, `X-Rate-Limit-Requests-Left`,
//! `X-Rate-Limit-Requests-Quota`, `X-Rate-Limit-Time-Window-Ms`). Unverified: whether
//! `min_date_modified` is inclusive (the fake treats it as `>=`), the texts of v2's error
//! documents (`[{status, message}]` arrays), and whether an unknown parameter is refused
//! (the fake refuses it). v2 customers carry no marketing consent the reference
//! documents.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Contact, PageInfo, Paging, Protocol, Query, Service, Since, Throttle,
};

/// The store hash the fake serves.
pub const STORE: &str = "abc123";

/// Requests per rate-limit window in the fake (BigCommerce: 150 per 30 s on Standard;
/// the fake's window is a few requests so that a test meets its 429).
pub const WINDOW: usize = 3;

fn errors(status: u16, message: &str) -> Canned {
    Canned::json(status, json!([{"status": status, "message": message}]))
}

/// RFC 2822 or ISO 8601 ("RFC 2822 or ISO 8601", services.md §2).
fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(text)
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One v2 customer as services.md §2's sample: RFC 2822 dates, addresses a link.
pub fn customer(c: &Contact, _query: &Query) -> Value {
    json!({
        "id": c.id,
        "company": c.company.clone().unwrap_or_default(),
        "first_name": c.first,
        "last_name": c.last.clone().unwrap_or_default(),
        "email": c.email(),
        "phone": c.phone.clone().unwrap_or_default(),
        "date_created": c.created.to_rfc2822(),
        "date_modified": c.updated.to_rfc2822(),
        "store_credit": "0.0000",
        "registration_ip_address": "",
        "customer_group_id": 1 + c.id % 3,
        "notes": "",
        "tax_exempt_category": "",
        "addresses": {
            "url": format!("https://api.bigcommerce.com/stores/{STORE}/v2/customers/{}/addresses", c.id),
            "resource": format!("/customers/{}/addresses", c.id),
        },
    })
}

/// The v2 customers endpoint of store [`STORE`], with `token`, and its rate limit.
pub fn service(token: &str) -> Service {
    Service {
        name: "bigcommerce-v2",
        path: format!("/stores/{STORE}/v2/customers"),
        auth: Auth::Header("x-auth-token", token.to_string()),
        denied: errors(401, "You are not authorized to access this resource."),
        params: vec![
            "max_date_modified",
            "min_date_created",
            "max_date_created",
            "min_id",
            "max_id",
            "email",
            "company",
            "first_name",
            "last_name",
        ],
        bad_param: |name| errors(400, &format!("The field '{name}' is invalid.")),
        paging: Paging::PageNumber {
            page: "page",
            per_page: "limit",
        },
        page_size: (50, 250),
        since: Some(Since {
            param: "min_date_modified",
            parse: parse_date,
            inclusive: true,
        }),
        query_since: None,
        filters: vec![("customer_group_id", |c, v| v.parse() == Ok(1 + c.id % 3))],
        // "Default order is by id ascending".
        order: |c, _| (c.id as i64, 0),
        lists_deleted: false,
        record: customer,
        body: |customers, _: &PageInfo| Value::Array(customers),
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Protocol {
            // Past the last customer (or none at all): 204, no body.
            empty: Some(|_| 204),
            throttle: Some(Throttle {
                every: WINDOW,
                refusal: errors(429, "Rate limit exceeded")
                    .with_header("x-rate-limit-time-reset-ms", "300")
                    .with_header("x-rate-limit-time-window-ms", "1000")
                    .with_header("x-rate-limit-requests-left", "0")
                    .with_header("x-rate-limit-requests-quota", (WINDOW - 1).to_string()),
                headers: |left| {
                    vec![
                        ("x-rate-limit-requests-left", (left - 1).to_string()),
                        ("x-rate-limit-requests-quota", (WINDOW - 1).to_string()),
                        ("x-rate-limit-time-reset-ms", "300".to_string()),
                        ("x-rate-limit-time-window-ms", "1000".to_string()),
                    ]
                },
            }),
            ..Protocol::default()
        },
        token: None,
    }
}
