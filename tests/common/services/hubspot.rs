//! HubSpot CRM v3, `GET /crm/v3/objects/contacts` (the list endpoint).
//!
//! Sources: services.md §7 (developers.hubspot.com CRM v3 objects: Bearer private-app or
//! OAuth token, `limit` max 100, cursor in `paging.next.after`, no `paging` on the last
//! page, only the `properties` asked for are returned, every value a string, `archived`,
//! the sample contact); connector-review.md (opt-out `hs_email_optout`). Default contact
//! properties seen in an account's property list (hairsolutionsco/automations_hub
//! hubspot/objects/contacts/properties.md): "Unsubscribed from all email" and "Invalid
//! email address"; their internal names `hs_email_optout` and `hs_email_bad_address` are
//! HubSpot's defaults (the second unverified here). The 401 body is HubSpot's error
//! document (`status`, `message`, `correlationId`, `category`); whether HubSpot refuses
//! an unknown query parameter (rather than ignoring it) is unverified.

use serde_json::{Map, Value, json};

use crate::common::service::{Auth, Canned, Consent, Contact, PageInfo, Paging, Query, Service};

/// One contact with only the `properties` asked for, all as strings.
pub fn contact(c: &Contact, query: &Query) -> Value {
    let millis =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let all = json!({
        "createdate": millis(c.created),
        "email": c.email(),
        "firstname": c.first,
        "lastname": c.last,
        "phone": c.phone,
        "company": c.company,
        "jobtitle": c.job_title,
        "city": c.city,
        "country": c.country,
        "lifecyclestage": c.stage,
        "hs_lead_status": if c.id.is_multiple_of(2) { "OPEN" } else { "CONNECTED" },
        "hubspot_owner_id": c.owner.to_string(),
        "hs_object_id": c.id.to_string(),
        "lastmodifieddate": millis(c.updated),
        "hs_email_optout": (c.consent == Consent::Unsubscribed).to_string(),
        "hs_email_bad_address": (c.consent == Consent::Bounced).to_string(),
    });
    let wanted = query.get("properties").cloned().unwrap_or_else(|| {
        // Without `properties`, only the defaults.
        "createdate,email,firstname,hs_object_id,lastmodifieddate,lastname".into()
    });
    let mut properties = Map::new();
    for name in wanted.split(',') {
        if let Some(value) = all.get(name.trim()) {
            properties.insert(name.trim().to_string(), value.clone());
        }
    }
    json!({
        "id": c.id.to_string(),
        "properties": properties,
        "createdAt": millis(c.created),
        "updatedAt": millis(c.updated),
        "archived": c.deleted,
    })
}

/// The contacts list endpoint with `token` as the Bearer token.
pub fn service(token: &str) -> Service {
    Service {
        name: "hubspot",
        path: "/crm/v3/objects/contacts".into(),
        auth: Auth::Header("authorization", format!("Bearer {token}")),
        denied: Canned::json(
            401,
            json!({"status": "error",
                   "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                   "correlationId": "0f0b8a2c-7b3e-4c1e-9d1a-3b2f5e6a7c8d",
                   "category": "INVALID_AUTHENTICATION"}),
        ),
        params: vec![
            "properties",
            "propertiesWithHistory",
            "associations",
            "archived",
        ],
        bad_param: |name| {
            Canned::json(
                400,
                json!({"status": "error", "message": format!("Unable to process request: unknown parameter {name}"),
                       "category": "VALIDATION_ERROR"}),
            )
        },
        paging: Paging::Cursor {
            limit: "limit",
            cursor: "after",
        },
        page_size: (10, 100),
        since: None,
        query_since: None,
        filters: Vec::new(),
        order: |c, _| (c.id as i64, 0),
        // `archived=false` (the default) lists live contacts only; `archived=true` only
        // the archived ones, with `archived: true` ("Whether to return only results
        // that have been archived", crm/v3 objects list reference).
        lists_deleted: false,
        record: contact,
        body: |results, info: &PageInfo| {
            let mut body = json!({"results": results});
            if let Some(after) = &info.next_cursor {
                body["paging"] = json!({"next": {"after": after,
                    "link": format!("https://api.hubapi.com/crm/v3/objects/contacts?after={after}")}});
            }
            body
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: crate::common::service::Protocol {
            archived: Some("archived"),
            ..Default::default()
        },
        token: None,
    }
}

/// `hs_lead_status` as [`contact`] writes it.
fn lead_status(c: &Contact) -> &'static str {
    if c.id.is_multiple_of(2) {
        "OPEN"
    } else {
        "CONNECTED"
    }
}

/// Epoch milliseconds or ISO 8601 ("Date values as epoch milliseconds (ISO strings also
/// accepted)", services.md §7).
fn parse_date(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    match text.parse::<i64>() {
        Ok(ms) => chrono::DateTime::from_timestamp_millis(ms),
        Err(_) => crate::common::service::parse_rfc3339(text),
    }
}

/// Reads a search body (`filterGroups`, `sorts`, `properties`, `limit`, `after`) into
/// parameters: `lastmodifieddate_gte` (the latest of its GTE bounds: filters of one group
/// are ANDed), `hs_lead_status`, `sort`, `properties`, `limit`, `after`. Only one filter
/// group and one sort here (HubSpot allows 5 groups of 25 filters in all and one sort);
/// an operator or property the fake does not know is refused, as is any other key.
pub fn search_body(body: &Value) -> Result<Query, String> {
    let object = body.as_object().ok_or("body")?;
    let mut query = Query::new();
    for (key, value) in object {
        match key.as_str() {
            "limit" => {
                let n = value.as_u64().ok_or("limit")?;
                if n > 200 {
                    return Err("limit".into());
                }
                query.insert("limit".into(), n.to_string());
            }
            "after" => {
                query.insert("after".into(), value.as_str().ok_or("after")?.to_string());
            }
            "properties" => {
                let names: Vec<&str> = value
                    .as_array()
                    .ok_or("properties")?
                    .iter()
                    .map(|v| v.as_str().ok_or("properties"))
                    .collect::<Result<_, _>>()?;
                query.insert("properties".into(), names.join(","));
            }
            "sorts" => {
                let sorts = value.as_array().ok_or("sorts")?;
                if sorts.len() > 1 {
                    return Err("sorts: only one sort".into());
                }
                for sort in sorts {
                    let name = sort["propertyName"].as_str().ok_or("sorts")?;
                    let direction = sort["direction"].as_str().ok_or("sorts")?;
                    query.insert("sort".into(), format!("{name}:{direction}"));
                }
            }
            "filterGroups" => {
                let groups = value.as_array().ok_or("filterGroups")?;
                if groups.len() > 1 {
                    return Err("filterGroups: the fake reads one group".into());
                }
                for group in groups {
                    for filter in group["filters"].as_array().ok_or("filters")? {
                        let name = filter["propertyName"].as_str().ok_or("propertyName")?;
                        let operator = filter["operator"].as_str().ok_or("operator")?;
                        let value = match &filter["value"] {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            _ => return Err("value".into()),
                        };
                        match (name, operator) {
                            ("lastmodifieddate", "GTE") => {
                                let t = parse_date(&value).ok_or("lastmodifieddate")?;
                                let earlier = query
                                    .get("lastmodifieddate_gte")
                                    .and_then(|v| parse_date(v));
                                if earlier.is_none_or(|e| t > e) {
                                    query.insert(
                                        "lastmodifieddate_gte".into(),
                                        t.timestamp_millis().to_string(),
                                    );
                                }
                            }
                            ("hs_lead_status", "EQ") => {
                                query.insert("hs_lead_status".into(), value);
                            }
                            _ => return Err(format!("filter {name} {operator}")),
                        }
                    }
                }
            }
            other => return Err(other.to_string()),
        }
    }
    Ok(query)
}

/// The search endpoint, `POST /crm/v3/objects/contacts/search`, with `token`: the same
/// records as the list, `total`, the cursor in `paging.next.after`, 10,000 results per
/// query at most, and the search limit's 429 (services.md §7: body `{status, message,
/// errorType: RATE_LIMIT, policyName}`, no rate headers on search responses, `Retry-After`
/// not always present: the fake sends none).
pub fn search_service(token: &str) -> Service {
    Service {
        name: "hubspot-search",
        path: "/crm/v3/objects/contacts/search".into(),
        params: vec!["sort", "properties"],
        since: Some(crate::common::service::Since {
            param: "lastmodifieddate_gte",
            parse: parse_date,
            inclusive: true,
        }),
        filters: vec![("hs_lead_status", |c, v| lead_status(c) == v)],
        // Search never returns archived contacts.
        order: |c, q| match q.get("sort").map(String::as_str) {
            Some("lastmodifieddate:ASCENDING") => (c.updated.timestamp_millis(), c.id as i64),
            _ => (c.id as i64, 0),
        },
        page_size: (10, 200),
        body: |results, info: &PageInfo| {
            let mut body = json!({"total": info.total, "results": results});
            if let Some(after) = &info.next_cursor {
                body["paging"] = json!({"next": {"after": after}});
            }
            body
        },
        protocol: crate::common::service::Protocol {
            body_params: Some(search_body),
            max_results: Some(10_000),
            throttle: Some(crate::common::service::Throttle {
                every: 20,
                refusal: Canned::json(
                    429,
                    json!({"status": "error", "message": "You have reached your secondly limit.",
                           "errorType": "RATE_LIMIT", "correlationId": "3c2f6a8e-0000-4000-8000-000000000000",
                           "policyName": "SECONDLY"}),
                ),
                headers: |_| Vec::new(),
            }),
            ..Default::default()
        },
        ..service(token)
    }
}
