//! Pipedrive API v1 (deprecated), `GET /v1/persons`.
//!
//! Sources: services.md §1 (offset paging with `start`/`limit`,
//! `additional_data.pagination = {start, limit, more_items_in_collection, next_start}`,
//! no updated-since filter on `/v1/persons`, the API token as query `api_token`, custom
//! fields at the top level, `org_id`/`owner_id` expanded into objects, times
//! `YYYY-MM-DD HH:MM:SS` UTC); the v1 parameters `user_id`, `filter_id`, `first_char`,
//! `sort` (pipedream's list-persons action, developers.pipedrive.com/docs/api/v1/Persons).
//! The fake's saved filter 7 ("customers") stands for any saved filter; error texts
//! are unverified.

use serde_json::{Value, json};

use crate::common::service::{Auth, Canned, Contact, PageInfo, Paging, Query, Service};

/// One v1 person.
pub fn person(c: &Contact, _query: &Query) -> Value {
    json!({
        "id": c.id,
        "name": c.full_name(),
        "first_name": c.first,
        "last_name": c.last,
        "owner_id": {"id": c.owner, "name": "Owner", "value": c.owner},
        "org_id": c.company.as_ref().map(|name| json!({"name": name, "value": 100 + c.id % 6})),
        "email": c.emails.iter().enumerate().map(|(i, e)|
            json!({"label": "work", "value": e, "primary": i == 0})).collect::<Vec<_>>(),
        "phone": c.phone.iter().map(|p|
            json!({"label": "mobile", "value": p, "primary": true})).collect::<Vec<_>>(),
        "label_ids": [1],
        "update_time": c.updated.format("%Y-%m-%d %H:%M:%S").to_string(),
        "add_time": c.created.format("%Y-%m-%d %H:%M:%S").to_string(),
        "active_flag": true,
    })
}

/// v1 persons with `token` in the query.
pub fn service(token: &str) -> Service {
    Service {
        name: "pipedrive-v1",
        path: "/v1/persons".into(),
        auth: Auth::Query("api_token", token.to_string()),
        denied: Canned::json(
            401,
            json!({"success": false, "error": "You need to be authorized to make this request.", "errorCode": 401}),
        ),
        params: vec!["user_id", "first_char", "sort"],
        bad_param: |name| {
            Canned::json(
                400,
                json!({"success": false, "error": format!("Unknown parameter {name}"), "errorCode": 400}),
            )
        },
        paging: Paging::Offset {
            offset: "start",
            count: "limit",
        },
        page_size: (100, 500),
        since: None,
        query_since: None,
        filters: vec![("filter_id", |c, v| {
            v == "7" && c.stage.as_deref() == Some("customer")
        })],
        order: |c, _| (c.id as i64, 0),
        lists_deleted: false,
        record: person,
        body: |data, info: &PageInfo| {
            let start = (info.page - 1) * info.limit;
            let mut pagination = json!({"start": start, "limit": info.limit,
                                        "more_items_in_collection": info.has_more});
            if info.has_more {
                pagination["next_start"] = json!(start + info.limit);
            }
            json!({"success": true, "data": data, "additional_data": {"pagination": pagination}})
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Default::default(),
        token: None,
    }
}
