//! Shopify REST Admin API, `GET /admin/api/{version}/customers.json`.
//!
//! Sources: services.md §8 (shopify.dev admin-rest pagination: `Link` header with
//! `page_info`, only `limit` and `fields` alongside it, 400 otherwise; `limit` default 50
//! max 250; `X-Shopify-Access-Token`; tags one comma-separated string; timestamps with the
//! shop's offset; the sample customer; deletions not listed); connector-review.md [SHR]
//! (`order` is not a documented `customers.json` parameter: the fake accepts it, as
//! services.md lists it, but ignores it and returns customers by id) and [SHV]
//! (2024-04 is no longer supported). Email marketing consent states `subscribed`,
//! `not_subscribed`, `pending`, `unsubscribed`, `redacted`, `invalid` (Shopify's
//! `CustomerEmailMarketingState`, as in the @shopify/shopify-api type definitions).
//! The 401 body is Shopify's `{"errors": "[API] Invalid API key or access token ..."}`;
//! the 400 text for a parameter next to `page_info` is unverified.

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, PageInfo, Paging, Query, Service, Since,
};

/// The API version the fake serves (the connector's default).
pub const VERSION: &str = "2026-10";

/// The consent state word.
pub fn state(consent: Consent) -> &'static str {
    match consent {
        Consent::Subscribed => "subscribed",
        Consent::Pending => "pending",
        Consent::NotSubscribed | Consent::Archived => "not_subscribed",
        Consent::Unsubscribed => "unsubscribed",
        Consent::Bounced => "invalid",
    }
}

fn shop_time(t: DateTime<Utc>) -> String {
    // The shop's zone: New York in summer.
    t.with_timezone(&FixedOffset::west_opt(4 * 3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// One customer as services.md §8's sample.
pub fn customer(c: &Contact, _query: &Query) -> Value {
    json!({
        "id": 207_119_000 + c.id,
        "email": c.email(),
        "first_name": c.first,
        "last_name": c.last,
        "phone": c.phone.as_ref().map(|p| p.replace(' ', "")),
        "state": "enabled",
        "verified_email": true,
        "tags": c.tags.join(", "),
        "note": null,
        "currency": "GBP",
        "created_at": shop_time(c.created),
        "updated_at": shop_time(c.updated),
        "email_marketing_consent": {"state": state(c.consent), "opt_in_level": "single_opt_in",
                                    "consent_updated_at": shop_time(c.created)},
        "default_address": {"id": 1000 + c.id, "customer_id": 207_119_000 + c.id,
                            "company": c.company, "city": c.city, "country_code": c.country,
                            "phone": c.phone, "default": true},
        "addresses": [],
        "admin_graphql_api_id": format!("gid://shopify/Customer/{}", 207_119_000 + c.id),
    })
}

/// Shopify's customers endpoint at API version [`VERSION`], with `token`.
pub fn service(token: &str) -> Service {
    Service {
        name: "shopify",
        path: format!("/admin/api/{VERSION}/customers.json"),
        auth: Auth::Header("x-shopify-access-token", token.to_string()),
        denied: Canned::json(
            401,
            json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}),
        ),
        params: vec![
            "ids",
            "since_id",
            "created_at_min",
            "created_at_max",
            "updated_at_max",
            "order",
        ],
        bad_param: |name| {
            Canned::json(
                400,
                json!({"errors": {name: "cannot be passed here (or when page_info is present)"}}),
            )
        },
        paging: Paging::LinkHeader {
            limit: "limit",
            page_info: "page_info",
        },
        page_size: (50, 250),
        // "Show customers last updated after date"; whether equal counts is unverified.
        since: Some(Since {
            param: "updated_at_min",
            parse: |t| {
                DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            },
            inclusive: false,
        }),
        query_since: None,
        filters: Vec::new(),
        order: |c, _| (c.id as i64, 0),
        lists_deleted: false,
        record: customer,
        body: |customers, _info: &PageInfo| json!({"customers": customers}),
        fields_param: Some("fields"),
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Default::default(),
        token: None,
    }
}

/// The same endpoint for a Dev Dashboard app: tokens from the client credentials grant
/// at the shop's `/admin/oauth/access_token` (shopify.dev .../client-credentials-grant:
/// form-encoded `grant_type=client_credentials`, `client_id`, `client_secret`; answer
/// `{access_token, scope, expires_in: 86399}`), issued by `tokens`; and the REST
/// limit's answers (shopify.dev REST rate limits: `X-Shopify-Shop-Api-Call-Limit:
/// used/40` on every response, 429 with `Retry-After: 2.0` over it; the fake's bucket is
/// a few requests and its `Retry-After` one second).
pub fn client_credentials_service(
    client: (&str, &str),
    tokens: &crate::common::service::Tokens,
) -> Service {
    use crate::common::service::{Grant, Protocol, Throttle, TokenEndpoint};
    Service {
        auth: Auth::Issued("x-shopify-access-token", "", tokens.clone()),
        protocol: Protocol {
            throttle: Some(Throttle {
                every: 3,
                refusal: Canned::json(429, json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}))
                    .with_header("retry-after", "1.0"),
                headers: |left| vec![("x-shopify-shop-api-call-limit", format!("{}/40", 40 - left))],
            }),
            ..Protocol::default()
        },
        token: Some(TokenEndpoint {
            path: "/admin/oauth/access_token",
            client: (client.0.to_string(), client.1.to_string()),
            grant: Grant::ClientCredentials,
            access_token: String::new(),
            tokens: Some(tokens.clone()),
            extra: json!({"scope": "read_customers", "expires_in": 86399}),
            refused: Canned::json(
                400,
                json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
            ),
        }),
        ..service("unused")
    }
}
