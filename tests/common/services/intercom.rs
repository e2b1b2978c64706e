//! Intercom, `POST /contacts/search` (REST API 2.11).
//!
//! Sources: intercom/Intercom-OpenAPI `descriptions/2.11/api.intercom.io.yaml`
//! (SearchContacts: `Authorization: Bearer`; the body `search_request` with a required
//! `query` (one filter `{field, operator, value}` or `{operator: AND|OR, value: [...]}`)
//! and `pagination: {per_page, starting_after}`; default 50 per page; timestamps matched
//! by calendar day in the workspace's zone, `>` starting at the next day, `>=`/`<=`/`IN`
//! refused on dates; `role` accepts `user` or `lead`; the `contact_list` response with
//! `pages: {type, page, per_page, total_pages, next: {page, starting_after}}`; the
//! `contact` schema (unix-second times, `location`, `tags` as `{type, id, url}` references,
//! `unsubscribed_from_emails`, `marked_email_as_spam`, `has_hard_bounced`); the 401
//! `error.list` body "Access Token Invalid"); developers.intercom.com "Pagination
//! (Cursor)" (at most 150 per page) and "Rate Limiting" (X-RateLimit-Limit, -Remaining,
//! -Reset as a unix timestamp). The fake's workspace is in UTC. Unverified: the order of
//! results without a sort (the fake uses id order), the text of a 400 (the fake answers
//! `parameter_invalid` naming what it refuses), whether per_page above 150 is clamped
//! (the fake clamps), and whether search leaves archived contacts out (the fake does).

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, PageInfo, Paging, Protocol, Query, Service, Since, Throttle,
};

/// The API version the connector pins in `Intercom-Version`.
pub const VERSION: &str = "2.11";

fn errors(status: u16, code: &str, message: &str) -> Canned {
    Canned::json(
        status,
        json!({"type": "error.list", "request_id": "000ahb1u2c6ptbhcqsp0",
               "errors": [{"code": code, "message": message}]}),
    )
}

/// The contact's role: every fifth one is a lead, the others users.
pub fn role(c: &Contact) -> &'static str {
    if c.id.is_multiple_of(5) {
        "lead"
    } else {
        "user"
    }
}

/// The id Intercom gives a tag (contacts carry tag references, not names).
pub fn tag_id(name: &str) -> String {
    let n: u64 = name.bytes().map(u64::from).sum();
    format!("{}", 7_000_000 + n)
}

/// One contact as the `contact` schema writes it.
pub fn contact(c: &Contact, _query: &Query) -> Value {
    let id = format!("6329bd9ffe4e2e91dac7{:04}", c.id);
    json!({
        "type": "contact",
        "id": id,
        "workspace_id": "ecahpwf5",
        "external_id": null,
        "role": role(c),
        "email": c.email(),
        "email_domain": c.email().and_then(|e| e.split_once('@')).map(|(_, d)| d),
        "phone": c.phone.as_ref().map(|p| p.replace(' ', "")),
        "formatted_phone": c.phone.as_ref().map(|p| p.replace(' ', "")),
        "name": Some(c.full_name()).filter(|n| !n.is_empty()),
        "owner_id": c.owner,
        "has_hard_bounced": c.consent == Consent::Bounced,
        "marked_email_as_spam": false,
        "unsubscribed_from_emails": c.consent == Consent::Unsubscribed,
        "created_at": c.created.timestamp(),
        "updated_at": c.updated.timestamp(),
        "signed_up_at": c.created.timestamp(),
        "last_seen_at": null,
        "last_replied_at": null,
        "last_contacted_at": null,
        "last_email_opened_at": null,
        "last_email_clicked_at": null,
        "language_override": null,
        "browser": null,
        "browser_version": null,
        "browser_language": null,
        "os": null,
        "custom_attributes": {"job_title": c.job_title},
        "avatar": null,
        "tags": {
            "type": "list",
            "data": c.tags.iter().map(|t| {
                let tid = tag_id(t);
                json!({"type": "tag", "id": tid, "url": format!("/tags/{tid}")})
            }).collect::<Vec<_>>(),
            "url": format!("/contacts/{id}/tags"),
            "total_count": c.tags.len(),
            "has_more": false,
        },
        "companies": {"type": "list", "data": [], "url": format!("/contacts/{id}/companies"),
                      "total_count": 0, "has_more": false},
        "location": {"type": "location", "country": c.country, "region": null, "city": c.city},
        "social_profiles": {"type": "list", "data": []},
    })
}

/// `updated_at > N`: N truncated to its day (UTC here), matching from the next day.
fn next_day(text: &str) -> Option<DateTime<Utc>> {
    let seconds: i64 = text.parse().ok()?;
    let t = DateTime::from_timestamp(seconds, 0)?;
    let day = t.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
    Some(day + Duration::days(1))
}

/// One condition of the query: the parameters it stands for, or what is refused.
fn condition(filter: &Value, query: &mut Query) -> Result<(), String> {
    let object = filter.as_object().ok_or("query")?;
    if let Some(key) = object
        .keys()
        .find(|k| !["field", "operator", "value"].contains(&k.as_str()))
    {
        return Err(format!("query.{key}"));
    }
    let field = filter["field"].as_str().ok_or("field")?;
    let operator = filter["operator"].as_str().ok_or("operator")?;
    let value = &filter["value"];
    match (field, operator) {
        ("role", "=") => {
            let role = value.as_str().filter(|r| ["user", "lead"].contains(r));
            query.insert("role".into(), role.ok_or("role")?.to_string());
        }
        ("role", "IN") => {
            let roles: Vec<&str> = value
                .as_array()
                .ok_or("IN takes an array")?
                .iter()
                .map(|v| v.as_str().filter(|r| ["user", "lead"].contains(r)))
                .collect::<Option<_>>()
                .ok_or("role")?;
            query.insert("role_in".into(), roles.join(","));
        }
        ("updated_at", ">") => {
            // A date takes a unix timestamp: an integer (a numeric string, as the
            // reference's own example writes it, is accepted too).
            let seconds = match value {
                Value::Number(n) => n.as_i64().ok_or("updated_at")?.to_string(),
                Value::String(s) if s.parse::<i64>().is_ok() => s.clone(),
                _ => return Err("updated_at: a date takes a unix timestamp".into()),
            };
            query.insert("updated_at_gt".into(), seconds);
        }
        ("updated_at", ">=" | "<=" | "!=" | "IN" | "NIN") => {
            return Err(format!("updated_at {operator}: not supported on dates"));
        }
        _ => return Err(format!("{field} {operator}")),
    }
    Ok(())
}

/// Reads a search body into parameters: `role`, `role_in`, `updated_at_gt`, `per_page`,
/// `starting_after`. One level of `AND` here (Intercom allows two levels of nesting and
/// 15 filters per group); an `OR`, an unknown key, field or operator is refused, and so
/// is a body without `query`.
pub fn search_body(body: &Value) -> Result<Query, String> {
    let object = body.as_object().ok_or("body")?;
    let mut query = Query::new();
    if let Some(key) = object
        .keys()
        .find(|k| !["query", "pagination"].contains(&k.as_str()))
    {
        return Err(key.clone());
    }
    let search = object.get("query").ok_or("query is required")?;
    if search.get("field").is_some() {
        condition(search, &mut query)?;
    } else {
        match search["operator"].as_str() {
            Some("AND") => {}
            _ => return Err("query.operator: the fake reads AND".into()),
        }
        let filters = search["value"].as_array().ok_or("query.value")?;
        if filters.is_empty() || filters.len() > 15 {
            return Err("query.value".into());
        }
        for filter in filters {
            condition(filter, &mut query)?;
        }
    }
    if let Some(pagination) = object.get("pagination") {
        let pagination = pagination.as_object().ok_or("pagination")?;
        for (key, value) in pagination {
            match key.as_str() {
                "per_page" => {
                    let n = value.as_u64().ok_or("per_page")?;
                    query.insert("per_page".into(), n.to_string());
                }
                "starting_after" => {
                    let s = value.as_str().ok_or("starting_after")?;
                    query.insert("starting_after".into(), s.to_string());
                }
                other => return Err(format!("pagination.{other}")),
            }
        }
    }
    Ok(query)
}

/// Intercom's contact search with access token `token`.
pub fn service(token: &str) -> Service {
    Service {
        name: "intercom",
        path: "/contacts/search".into(),
        auth: Auth::Header("authorization", format!("Bearer {token}")),
        denied: errors(401, "unauthorized", "Access Token Invalid"),
        params: Vec::new(),
        bad_param: |name| errors(400, "parameter_invalid", &format!("Invalid query: {name}")),
        paging: Paging::Cursor {
            limit: "per_page",
            cursor: "starting_after",
        },
        page_size: (50, 150),
        since: Some(Since {
            param: "updated_at_gt",
            parse: next_day,
            inclusive: true,
        }),
        query_since: None,
        filters: vec![
            ("role", |c, v| role(c) == v),
            ("role_in", |c, v| v.split(',').any(|r| r == role(c))),
        ],
        order: |c, _| (c.id as i64, 0),
        lists_deleted: false,
        record: contact,
        body: |data, info: &PageInfo| {
            let mut pages = json!({"type": "pages", "page": info.page, "per_page": info.limit,
                                   "total_pages": info.total_pages});
            if let Some(cursor) = &info.next_cursor {
                pages["next"] = json!({"page": info.page + 1, "starting_after": cursor});
            }
            json!({"type": "list", "data": data, "total_count": info.total, "pages": pages})
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Protocol {
            body_params: Some(search_body),
            // Authenticated answers carry the window's headers; the fake never runs out.
            throttle: Some(Throttle {
                every: 10_000,
                refusal: errors(
                    429,
                    "rate_limit_exceeded",
                    "Exceeded rate limit of 167 in 10_seconds",
                ),
                headers: |left| {
                    vec![
                        ("x-ratelimit-limit", "167".to_string()),
                        ("x-ratelimit-remaining", left.min(167).to_string()),
                        (
                            "x-ratelimit-reset",
                            (Utc::now().timestamp() + 10).to_string(),
                        ),
                    ]
                },
            }),
            ..Protocol::default()
        },
        token: None,
    }
}
