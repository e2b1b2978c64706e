//! Mailchimp Marketing API 3.0, `GET /lists/{list_id}/members`.
//!
//! Sources: services.md §10 (Airbyte's `source-mailchimp/manifest.yaml`, Mailchimp's
//! fundamentals), the `mailchimp` crate's `ListMembersFilter` on docs.rs (the accepted
//! query parameters), mailchimp.com/developer/marketing/docs/errors/ (problem+json error
//! documents).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, PageInfo, Paging, Query, Service, Since, by_update,
};

/// The audience id the fake serves.
pub const LIST_ID: &str = "57afe96172";

/// A problem+json document as Mailchimp writes its errors (errors page: `type`, `title`,
/// `status`, `detail`, `instance`).
fn problem(status: u16, title: &str, detail: &str) -> Canned {
    Canned {
        status,
        content_type: "application/problem+json; charset=utf-8",
        body: json!({
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": "3b4dcb40-0b6b-4820-bfaa-41267b3826ea",
        })
        .to_string(),
        headers: Vec::new(),
    }
}

/// `since_last_changed` is "ISO 8601, e.g. 2015-10-21T15:41:36+00:00" (ListMembersFilter
/// docs). Unverified: how Mailchimp answers a value it cannot read (a 400 here).
fn parse_since(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The status word (services.md §10: subscribed, unsubscribed, cleaned, pending,
/// transactional, archived).
pub fn status(consent: Consent) -> &'static str {
    match consent {
        Consent::Subscribed => "subscribed",
        Consent::Pending => "pending",
        Consent::NotSubscribed => "transactional",
        Consent::Unsubscribed => "unsubscribed",
        Consent::Bounced => "cleaned",
        Consent::Archived => "archived",
    }
}

/// One member, shaped as services.md §10's sample: `merge_fields` keyed by merge tag,
/// `ADDRESS` an object or an empty string, `tags` as `{id, name}`, times with `+00:00`.
pub fn member(c: &Contact, _query: &Query) -> Value {
    let address = match (&c.city, &c.country) {
        (None, None) => json!(""),
        (city, country) => json!({"addr1": "", "addr2": "", "city": city, "state": "",
                                  "zip": "", "country": country}),
    };
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
    json!({
        "id": format!("{:032x}", c.id),
        "email_address": c.email(),
        "unique_email_id": format!("{:010x}", c.id),
        "full_name": c.full_name(),
        "email_type": "html",
        "status": status(c.consent),
        "merge_fields": {
            "FNAME": c.first.clone().unwrap_or_default(),
            "LNAME": c.last.clone().unwrap_or_default(),
            "PHONE": c.phone.clone().unwrap_or_default(),
            "ADDRESS": address,
        },
        "member_rating": 1 + c.id % 5,
        "vip": c.id.is_multiple_of(4),
        "location": {"country_code": c.country, "timezone": ""},
        "timestamp_signup": time(c.created),
        "last_changed": time(c.updated),
        "tags_count": c.tags.len(),
        "tags": c.tags.iter().enumerate()
            .map(|(i, t)| json!({"id": 100 + i, "name": t})).collect::<Vec<_>>(),
        "list_id": LIST_ID,
    })
}

/// Mailchimp's list members endpoint for audience [`LIST_ID`], with `api_key` as the
/// Basic password.
pub fn service(api_key: &str) -> Service {
    Service {
        name: "mailchimp",
        path: format!("/3.0/lists/{LIST_ID}/members"),
        // Basic auth, any user name, the key as password (services.md §10). 401 "API Key
        // Invalid" since 2023 (Mailchimp release note "Added support for 401"); the
        // detail wording is unverified.
        auth: Auth::BasicAnyUser(api_key.to_string()),
        denied: problem(
            401,
            "API Key Invalid",
            "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
        ),
        // ListMembersFilter (docs.rs `mailchimp`): every other parameter it documents.
        params: vec![
            "exclude_fields",
            "email_type",
            "status",
            "since_timestamp_opt",
            "before_timestamp_opt",
            "before_last_changed",
            "unique_email_id",
            "interest_category_id",
            "interest_ids",
            "interest_match",
            "sort_field",
            "sort_dir",
            "since_last_campaign",
            "unsubscribed_since",
        ],
        // Unverified: whether Mailchimp refuses an unknown parameter or ignores it; the
        // fake refuses it so that a connector never relies on one.
        bad_param: |name| {
            problem(
                400,
                "Invalid Resource",
                &format!("The parameter `{name}` is not valid for this resource."),
            )
        },
        // offset/count, count default 10, max 1000; `total_items` in the body
        // (services.md §10).
        paging: Paging::Offset {
            offset: "offset",
            count: "count",
        },
        page_size: (10, 1000),
        // "changed after the set timeframe": strictly after (whether equal is included
        // is unverified; the connector's lookback covers either).
        since: Some(Since {
            param: "since_last_changed",
            parse: parse_since,
            inclusive: false,
        }),
        query_since: None,
        filters: vec![("vip_only", |c, v| v != "true" || c.id.is_multiple_of(4))],
        // sort_field=last_changed&sort_dir=ASC (Airbyte): the fake sorts by it always.
        order: by_update,
        // Deleted members are gone from the list; archived ones keep a status.
        lists_deleted: false,
        record: member,
        body: |members, info: &PageInfo| {
            json!({"members": members, "list_id": LIST_ID, "total_items": info.total,
                   "_links": []})
        },
        fields_param: Some("fields"),
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Default::default(),
        token: None,
    }
}
