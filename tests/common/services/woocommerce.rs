//! WooCommerce REST API v3, `GET /wp-json/wc/v3/customers`.
//!
//! Sources: woocommerce.github.io/woocommerce-rest-api-docs "List all customers" as the
//! WC-CLI reference repeats it (developer.woocommerce.com/docs/wc-cli/wc-cli-commands/
//! wc-customer: `context`, `page`, `per_page`, `search`, `exclude`, `include`, `offset`,
//! `order`, `orderby`, `email`, `role`); per_page at most 100; HTTP Basic with the
//! consumer key and secret over https; totals in `X-WP-Total` and `X-WP-TotalPages`
//! (WordPress REST API pagination); a bare array per page; woocommerce/woocommerce issue
//! #41371 (no `modified_after` on customers: full refresh only). `role` defaults to
//! `customer` (the fake serves only customers). Unverified: the error bodies (WordPress's
//! `{code, message, data: {status}}` here), and whether an unknown parameter is refused
//! (WordPress ignores unregistered ones; the fake refuses them so a connector never
//! relies on one).

use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Contact, PageInfo, Paging, Protocol, Query, Service, by_update,
};

fn error(status: u16, code: &str, message: &str) -> Canned {
    Canned::json(
        status,
        json!({"code": code, "message": message, "data": {"status": status}}),
    )
}

fn local(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// One customer: names at the top, phone, company, city and country in `billing`.
pub fn customer(c: &Contact, _query: &Query) -> Value {
    let billing = json!({
        "first_name": c.first.clone().unwrap_or_default(),
        "last_name": c.last.clone().unwrap_or_default(),
        "company": c.company.clone().unwrap_or_default(),
        "address_1": "", "address_2": "",
        "city": c.city.clone().unwrap_or_default(),
        "state": "", "postcode": "",
        "country": c.country.clone().unwrap_or_default(),
        "email": c.email().unwrap_or_default(),
        "phone": c.phone.clone().unwrap_or_default(),
    });
    json!({
        "id": c.id,
        "date_created": local(c.created),
        "date_created_gmt": local(c.created),
        "date_modified": local(c.updated),
        "date_modified_gmt": local(c.updated),
        "email": c.email().unwrap_or_default(),
        "first_name": c.first.clone().unwrap_or_default(),
        "last_name": c.last.clone().unwrap_or_default(),
        "role": "customer",
        "username": format!("person{}", c.id),
        "billing": billing,
        "shipping": {"first_name": "", "last_name": "", "company": "", "city": "", "country": ""},
        "is_paying_customer": c.id.is_multiple_of(2),
        "avatar_url": "https://secure.gravatar.com/avatar/00000000000000000000000000000000?s=96",
        "meta_data": [],
    })
}

/// The store's customers, with `secret` as the Basic password (the consumer key is the
/// user name).
pub fn service(secret: &str) -> Service {
    Service {
        name: "woocommerce",
        path: "/wp-json/wc/v3/customers".into(),
        auth: Auth::BasicAnyUser(secret.to_string()),
        denied: error(
            401,
            "woocommerce_rest_cannot_view",
            "Sorry, you cannot list resources.",
        ),
        params: vec![
            "context", "search", "exclude", "include", "offset", "order", "orderby", "email",
        ],
        bad_param: |name| {
            error(
                400,
                "rest_invalid_param",
                &format!("Invalid parameter(s): {name}"),
            )
        },
        paging: Paging::PageNumber {
            page: "page",
            per_page: "per_page",
        },
        page_size: (10, 100),
        since: None,
        query_since: None,
        filters: vec![("role", |_, v| v == "customer" || v == "all")],
        order: |c, q| match q.get("orderby").map(String::as_str) {
            Some("registered_date") => (c.created.timestamp(), c.id as i64),
            Some("id") | None => (c.id as i64, 0),
            _ => by_update(c, q),
        },
        lists_deleted: false,
        record: customer,
        body: |customers, _: &PageInfo| Value::Array(customers),
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Protocol {
            total_headers: Some(("x-wp-total", "x-wp-totalpages")),
            ..Protocol::default()
        },
        token: None,
    }
}
