//! Keap (Infusionsoft) REST v1, `GET /crm/rest/v1/contacts`, and its token endpoint.
//!
//! Sources: Keap's v1 client reference (ContactApi.md `listContactsUsingGET`: `limit`,
//! `offset`, `email`, `given_name`, `family_name`, `order` in id, date_created, name,
//! email; `order_direction` ascending or descending; `since`/`until` on LastUpdated
//! written `2017-01-01T22:17:59.039Z`; the Contact model with `email_addresses` `{email,
//! field: EMAIL1..3}`, `phone_numbers`, `addresses` `{field: BILLING, locality,
//! country_code, ...}`, `company {id, company_name}`, `email_status`, `email_opted_in`,
//! `owner_id`, `tag_ids`, `date_created`, `last_updated`); the list envelope `{contacts,
//! count, next, previous}`; developer.infusionsoft.com "Getting Started with OAuth2" (the
//! refresh grant answers a new token pair: rotation) and integration.keap.com threads
//! (client in HTTP Basic; a spent refresh token answered 400 `invalid_request` "Invalid
//! Refresh Token"). Unverified: whether `since` is inclusive (the fake reads it
//! inclusive), whether `limit` above 1000 is clamped (the fake clamps), the 401 body (the
//! fake answers the gateway's `fault` document), the text of a 400, and whether unknown
//! parameters are refused (the fake refuses them).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, Grant, PageInfo, Paging, Query, Service, Since, TokenEndpoint,
    Tokens,
};

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `email_status` as Keap writes each consent state.
pub fn email_status(c: &Contact) -> &'static str {
    match c.consent {
        Consent::Subscribed => "SingleOptIn",
        Consent::Pending => "UnengagedNonMarketable",
        Consent::NotSubscribed => "NonMarketable",
        Consent::Unsubscribed => "ListUnsubscribe",
        Consent::Bounced => "HardBounce",
        Consent::Archived => "Lockdown",
    }
}

/// A tag's numeric id at Keap (contacts carry tag ids only).
pub fn tag_id(name: &str) -> u64 {
    100 + name.bytes().map(u64::from).sum::<u64>()
}

/// One contact as the list writes it.
pub fn contact(c: &Contact, _query: &Query) -> Value {
    let fields = ["EMAIL1", "EMAIL2", "EMAIL3"];
    json!({
        "id": c.id,
        "given_name": c.first,
        "middle_name": null,
        "family_name": c.last,
        "email_addresses": c.emails.iter().zip(fields).map(|(e, f)| json!({"email": e, "field": f})).collect::<Vec<_>>(),
        "email_opted_in": matches!(c.consent, Consent::Subscribed),
        "email_status": email_status(c),
        "phone_numbers": c.phone.iter().map(|p| json!({"number": p, "extension": "", "field": "PHONE1", "type": "Work"})).collect::<Vec<_>>(),
        "addresses": [{"field": "BILLING", "line1": "1 Engine Row", "line2": "", "locality": c.city,
                       "region": null, "postal_code": "EC1A 1BB", "zip_code": "", "zip_four": "",
                       "country_code": match c.country.as_deref() {
                           Some("GB") => "GBR", Some("PL") => "POL", Some("CH") => "CHE",
                           Some("BR") => "BRA", _ => "USA" }}],
        "company": c.company.as_ref().map(|name| json!({"id": 300 + c.id % 6, "company_name": name})),
        "owner_id": c.owner,
        "tag_ids": c.tags.iter().map(|t| tag_id(t)).collect::<Vec<_>>(),
        "date_created": stamp(c.created),
        "last_updated": stamp(c.updated),
        "ScoreValue": null,
    })
}

fn parse_since(text: &str) -> Option<DateTime<Utc>> {
    crate::common::service::parse_rfc3339(text)
}

/// Keap's contacts list with OAuth2: `client` authenticates with HTTP Basic or in the
/// body, the refresh tokens rotate (`refresh`), the access tokens `tokens` expire.
pub fn service(client: (&str, &str), refresh: &Tokens, tokens: &Tokens) -> Service {
    Service {
        name: "keap",
        path: "/crm/rest/v1/contacts".into(),
        auth: Auth::Issued("authorization", "Bearer ", tokens.clone()),
        denied: Canned::json(
            401,
            json!({"fault": {"faultstring": "Invalid Access Token",
                             "detail": {"errorcode": "keymanagement.service.invalid_access_token"}}}),
        ),
        params: vec![
            "email",
            "given_name",
            "family_name",
            "order",
            "order_direction",
            "until",
        ],
        bad_param: |name| {
            Canned::json(
                400,
                json!({"message": format!("Invalid parameter: {name}")}),
            )
        },
        paging: Paging::Offset {
            offset: "offset",
            count: "limit",
        },
        page_size: (1000, 1000),
        since: Some(Since {
            param: "since",
            parse: parse_since,
            inclusive: true,
        }),
        query_since: None,
        filters: Vec::new(),
        order: |c, q| {
            let key = match q.get("order").map(String::as_str) {
                Some("date_created") => c.created.timestamp_millis(),
                _ => c.id as i64,
            };
            match q.get("order_direction").map(String::as_str) {
                Some("descending") => (-key, 0),
                _ => (key, 0),
            }
        },
        lists_deleted: false,
        record: contact,
        body: |contacts, info: &PageInfo| {
            let link = |offset: usize| {
                let mut q = info.query.clone();
                q.insert("offset".into(), offset.to_string());
                q.insert("limit".into(), info.limit.to_string());
                let query: String = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&q)
                    .finish();
                format!("{}/crm/rest/v1/contacts/?{query}", info.origin)
            };
            json!({"contacts": contacts, "count": info.total,
                   "next": link(info.start + info.limit),
                   "previous": link(info.start.saturating_sub(info.limit))})
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Default::default(),
        token: Some(TokenEndpoint {
            path: "/token",
            client: (client.0.to_string(), client.1.to_string()),
            grant: Grant::RotatingRefreshToken(refresh.clone()),
            access_token: String::new(),
            tokens: Some(tokens.clone()),
            extra: json!({"token_type": "bearer", "expires_in": 86399, "scope": "full|ab123.infusionsoft.com"}),
            refused: Canned::json(
                400,
                json!({"error": "invalid_request", "error_description": "Invalid Refresh Token"}),
            ),
        }),
    }
}
