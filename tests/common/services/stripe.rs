//! Stripe API, `GET /v1/customers`.
//!
//! Sources: services.md §9 (docs.stripe.com/api/customers/list: Bearer secret key,
//! `limit` 1-100 default 10, `starting_after` = the last object's id, `has_more`, newest
//! first, `created[gte]`/`created[lte]` in unix seconds, `email`, no updated-since
//! filter, deleted customers not listed, the sample customer); connector-review.md [ST]
//! (async-stripe's ListCustomer). Stripe refuses unknown parameters
//! (`parameter_unknown`) and unknown keys (401 `Invalid API Key provided`), in its
//! `{"error": {...}}` documents; the exact texts here are unverified.

use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Contact, DeletedList, DeletedPaging, PageInfo, Paging, Protocol, Query, Service,
};

/// A customer's id.
pub fn id(c: &Contact) -> String {
    id_of(c.id)
}

/// The id of the customer made from person `n`.
pub fn id_of(n: u64) -> String {
    format!("cus_{n:014}")
}

fn error(status: u16, code: Option<&str>, message: &str, param: Option<&str>) -> Canned {
    Canned::json(
        status,
        json!({"error": {"code": code, "message": message, "param": param,
                         "type": "invalid_request_error"}}),
    )
}

/// One customer as services.md §9's sample.
pub fn customer(c: &Contact, _query: &Query) -> Value {
    json!({
        "id": id(c),
        "object": "customer",
        "email": c.email(),
        "name": if c.full_name().is_empty() { Value::Null } else { json!(c.full_name()) },
        "phone": c.phone,
        "description": null,
        "address": {"line1": null, "city": c.city, "country": c.country},
        "balance": 0,
        "currency": "gbp",
        "created": c.created.timestamp(),
        "delinquent": c.id.is_multiple_of(10),
        "livemode": false,
        "metadata": {"segment": c.stage},
        "preferred_locales": ["en-GB"],
        "tax_exempt": "none",
    })
}

/// Stripe's customers list with `key`.
pub fn service(key: &str) -> Service {
    Service {
        name: "stripe",
        path: "/v1/customers".into(),
        auth: Auth::Header("authorization", format!("Bearer {key}")),
        denied: error(
            401,
            None,
            "Invalid API Key provided: sk_test_****wxyz",
            None,
        ),
        params: vec![
            "ending_before",
            "email",
            "created[lte]",
            "created[lt]",
            "created[gt]",
            "test_clock",
        ],
        bad_param: |name| {
            error(
                400,
                Some("parameter_unknown"),
                &format!("Received unknown parameter: {name}"),
                Some(name),
            )
        },
        paging: Paging::StartingAfter {
            limit: "limit",
            after: "starting_after",
            id,
        },
        page_size: (10, 100),
        since: None,
        query_since: None,
        filters: vec![("created[gte]", |c, v| {
            v.parse::<i64>().is_ok_and(|t| c.created.timestamp() >= t)
        })],
        // Newest first.
        order: |c, _| (-c.created.timestamp(), -(c.id as i64)),
        lists_deleted: false,
        record: customer,
        body: |data, info: &PageInfo| {
            json!({"object": "list", "url": "/v1/customers", "has_more": info.has_more,
                   "data": data})
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Protocol {
            // `GET /v1/events?type=customer.deleted` (docs.stripe.com/api/events/list:
            // `type`, `limit`, `starting_after`, newest first, `has_more`; an event's
            // `data.object` is the customer as it was). Events are kept 30 days (not
            // modelled: the fake lists every deletion).
            deleted_list: Some(DeletedList {
                path: "/v1/events",
                params: vec!["created[gte]"],
                required: vec![("type", "customer.deleted")],
                paging: DeletedPaging::StartingAfter { id: event_id },
                record: |c| {
                    json!({"id": event_id(c), "object": "event", "api_version": "2024-06-20",
                           "created": c.updated.timestamp(), "type": "customer.deleted",
                           "livemode": false, "pending_webhooks": 0,
                           "data": {"object": customer(c, &Query::new())}})
                },
                body: |data, _, _, more| json!({"object": "list", "url": "/v1/events", "has_more": more, "data": data}),
                empty_status: None,
            }),
            ..Protocol::default()
        },
        token: None,
    }
}

/// The id of the event that deleted a customer.
fn event_id(c: &Contact) -> String {
    format!("evt_{:014}", c.id)
}
