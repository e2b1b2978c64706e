//! Klaviyo API, `GET /api/profiles` (JSON:API).
//!
//! Sources (developers.klaviyo.com "Get Profiles", "API overview", "Rate limits",
//! "Filtering", "Sorting", "Pagination"; from the reference as recalled, not re-read
//! here: treat as unverified where noted): `Authorization: Klaviyo-API-Key <private
//! key>`; a required `revision` header (a date); `page[size]` default 20, max 100;
//! `page[cursor]` with the next page's absolute URL in `links.next` (null at the end);
//! `filter=greater-than(updated,<ISO 8601>)` (exclusive); `sort=updated`;
//! `additional-fields[profile]=subscriptions` adds
//! `attributes.subscriptions.email.marketing` with `consent` (`SUBSCRIBED`,
//! `UNSUBSCRIBED`, `NEVER_SUBSCRIBED`) and `suppression` (`[{reason, timestamp}]`,
//! reasons such as `HARD_BOUNCE`, `SPAM_COMPLAINT`, `USER_SUPPRESSED`, `INVALID_EMAIL`;
//! the list of reasons is unverified); 429 with `Retry-After` and a JSON:API `errors`
//! document. Unverified: whether an unknown parameter is refused (the fake refuses it)
//! and the error texts.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, PageInfo, Paging, Protocol, Query, Service, Throttle, by_update,
};

/// The API revision the connector pins.
pub const REVISION: &str = "2024-10-15";

fn errors(status: u16, code: &str, detail: &str) -> Canned {
    Canned::json(
        status,
        json!({"errors": [{"id": "8c2b4b6e-0000-4000-8000-000000000000", "status": status,
                            "code": code, "title": code, "detail": detail, "source": {"pointer": "/data/"}}]}),
    )
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// `filter=greater-than(updated,<time>)`, exclusive; other filters are refused.
fn filter_since(query: &Query) -> Result<Option<(DateTime<Utc>, bool)>, String> {
    let Some(filter) = query.get("filter") else {
        return Ok(None);
    };
    let time = filter
        .strip_prefix("greater-than(updated,")
        .and_then(|f| f.strip_suffix(')'))
        .ok_or("filter: the fake reads greater-than(updated,...)")?;
    let t = DateTime::parse_from_rfc3339(time).map_err(|_| "filter: not ISO 8601")?;
    Ok(Some((t.with_timezone(&Utc), false)))
}

/// One profile; `subscriptions` only when asked for with `additional-fields[profile]`.
pub fn profile(c: &Contact, query: &Query) -> Value {
    let mut attributes = json!({
        "email": c.email(),
        "phone_number": c.phone.as_ref().map(|p| p.replace(' ', "")),
        "external_id": null,
        "first_name": c.first,
        "last_name": c.last,
        "organization": c.company,
        "title": c.job_title,
        "image": null,
        "created": stamp(c.created),
        "updated": stamp(c.updated),
        "last_event_date": null,
        "location": {"address1": null, "city": c.city, "country": c.country, "region": null,
                     "zip": null, "timezone": null},
        "properties": {"lifecycle": c.stage, "tags": c.tags},
    });
    if query.get("additional-fields[profile]").map(String::as_str) == Some("subscriptions") {
        let consent = match c.consent {
            Consent::Subscribed | Consent::Bounced => "SUBSCRIBED",
            Consent::Unsubscribed => "UNSUBSCRIBED",
            Consent::Pending | Consent::NotSubscribed | Consent::Archived => "NEVER_SUBSCRIBED",
        };
        let suppression: Vec<Value> = if c.consent == Consent::Bounced {
            vec![json!({"reason": "HARD_BOUNCE", "timestamp": stamp(c.updated)})]
        } else {
            Vec::new()
        };
        attributes["subscriptions"] = json!({"email": {"marketing": {
            "can_receive_email_marketing": consent == "SUBSCRIBED" && suppression.is_empty(),
            "consent": consent, "consent_timestamp": stamp(c.created), "method": "FORM",
            "suppression": suppression, "list_suppressions": []}}});
    }
    json!({"type": "profile", "id": format!("01GDDKASAP8TKDDA2GRZDSVP{:02}", c.id % 100),
           "attributes": attributes,
           "links": {"self": format!("https://a.klaviyo.com/api/profiles/{}/", c.id)}})
}

/// Klaviyo's profiles with private key `key`.
pub fn service(key: &str) -> Service {
    Service {
        name: "klaviyo",
        path: "/api/profiles".into(),
        auth: Auth::Header("authorization", format!("Klaviyo-API-Key {key}")),
        denied: errors(
            401,
            "not_authenticated",
            "Authentication credentials were not provided.",
        ),
        params: vec![
            "sort",
            "additional-fields[profile]",
            "fields[profile]",
            "filter",
            "revision",
        ],
        bad_param: |name| {
            errors(
                400,
                "invalid",
                &format!("'{name}' is not a valid field for the resource 'profile'."),
            )
        },
        paging: Paging::Cursor {
            limit: "page[size]",
            cursor: "page[cursor]",
        },
        page_size: (20, 100),
        since: None,
        query_since: Some(filter_since),
        filters: Vec::new(),
        order: |c, q| match q.get("sort").map(String::as_str) {
            Some("updated") => by_update(c, q),
            _ => (c.id as i64, 0),
        },
        lists_deleted: false,
        record: profile,
        body: |data, info: &PageInfo| {
            let next = info.next_cursor.as_ref().map(|cursor| {
                let mut q = info.query.clone();
                q.remove("revision");
                q.insert("page[cursor]".into(), cursor.clone());
                let query: String = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&q)
                    .finish();
                format!("{}/api/profiles?{query}", info.origin)
            });
            json!({"data": data, "links": {"self": format!("{}/api/profiles", info.origin),
                                           "next": next, "prev": null}})
        },
        fields_param: None,
        required: vec!["revision"],
        cursor_binds_params: false,
        protocol: Protocol {
            header_params: vec![("revision", "revision")],
            throttle: Some(Throttle {
                every: 3,
                refusal: errors(
                    429,
                    "throttled",
                    "Request was throttled. Expected available in 1 second.",
                )
                .with_header("retry-after", "1"),
                headers: |left| vec![("ratelimit-remaining", left.to_string())],
            }),
            ..Protocol::default()
        },
        token: None,
    }
}
