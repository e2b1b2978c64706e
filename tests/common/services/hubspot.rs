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
        // `archived=false` (the default) lists live contacts only; the fake keeps no
        // archived list of its own.
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
        protocol: Default::default(),
        token: None,
    }
}
