//! Fake services for the sync tests, one per documented pagination style, each imitating
//! the shape and paging of a real API in /work/shared/reference/services.md.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::fake::{Db, Person};

/// The API token every fake expects.
pub const TOKEN: &str = "tok-SECRET-1234";

type Params = Query<HashMap<String, String>>;

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn since_filter(people: &[Person], since: Option<&String>) -> Vec<Person> {
    let since = since.and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    let mut list: Vec<Person> = people
        .iter()
        .filter(|p| since.is_none_or(|s| p.updated >= s))
        .cloned()
        .collect();
    list.sort_by_key(|p| (p.updated, p.id));
    list
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, Json401).into_response()
}

struct Json401;
impl IntoResponse for Json401 {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"success":false,"error":"unauthorized"}"#,
        )
            .into_response()
    }
}

fn number(q: &HashMap<String, String>, name: &str, default: usize) -> usize {
    q.get(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// Pipedrive v2: cursor in body (`additional_data.next_cursor`, null at the end),
// `x-api-token` header, `updated_since` RFC 3339, emails array with a primary flag.
// ---------------------------------------------------------------------------------------

/// A Pipedrive v2 person.
pub fn pipedrive_person(p: &Person) -> Value {
    let emails = match &p.email {
        Some(e) => json!([
            {"label": "home", "value": format!("home.{e}"), "primary": false},
            {"label": "work", "value": e, "primary": true}
        ]),
        None => json!([]),
    };
    json!({
        "id": p.id,
        "name": format!("{} {}", p.first, p.last),
        "first_name": null,
        "last_name": null,
        "emails": emails,
        "update_time": rfc(p.updated),
        "custom_fields": {"tier": p.tier},
        "labels": p.tags,
        "is_deleted": p.deleted,
    })
}

async fn pipedrive_persons(State(db): State<Db>, headers: HeaderMap, Query(q): Params) -> Response {
    if headers.get("x-api-token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
        return unauthorized();
    }
    let limit = number(&q, "limit", 100).min(500);
    let start = q
        .get("cursor")
        .and_then(|c| c.strip_prefix("cur-"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0usize);
    let list = since_filter(&db.lock().unwrap(), q.get("updated_since"));
    let page: Vec<Value> = list
        .iter()
        .skip(start)
        .take(limit)
        .map(pipedrive_person)
        .collect();
    let next = (start + limit < list.len()).then(|| format!("cur-{}", start + limit));
    axum::Json(json!({"success": true, "data": page, "additional_data": {"next_cursor": next}}))
        .into_response()
}

/// Pipedrive v2 at `/api/v2/persons`.
pub fn pipedrive(db: Db) -> Router {
    Router::new()
        .route("/api/v2/persons", get(pipedrive_persons))
        .with_state(db)
}

/// The Pipedrive v2 connector spec.
pub const PIPEDRIVE_CONNECTOR: &str = r#"
spec_version: 1
service: pipedrive
base_url: "{{settings.base}}/api/v2"
settings:
  base: {description: "fake host"}
auth:
  token:
    type: api_key
    in: header
    name: x-api-token
    value: "{{credentials.api_token}}"
contacts:
  request:
    path: /persons
    query:
      limit: "{{page_size}}"
      cursor: "{{cursor}}"
      updated_since: "{{since}}"
      sort_by: update_time
      sort_direction: asc
  pagination:
    type: cursor
    cursor: $.additional_data.next_cursor
    stop: [missing_token]
  records: $.data[*]
  page_size: {max: 500, default: 100}
  fields:
    email: ["$.emails[?@.primary==true].value", "$.emails[*].value"]
    first_name: $.first_name
    last_name: $.last_name
    full_name: $.name
    external_id: $.id
    updated_at: {path: $.update_time}
  custom_fields:
    - label: Tier
      path: $.custom_fields.tier
    - label: Labels
      path: $.labels
      type: list
sync:
  mode: incremental
"#;

// ---------------------------------------------------------------------------------------
// Mailchimp members: offset/count, `total_items`, basic auth with the key as password,
// status `unsubscribed`/`cleaned`, `since_last_changed`.
// ---------------------------------------------------------------------------------------

async fn mailchimp_members(State(db): State<Db>, headers: HeaderMap, Query(q): Params) -> Response {
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anystring:{TOKEN}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return unauthorized();
    }
    let count = number(&q, "count", 10).min(1000);
    let offset = number(&q, "offset", 0);
    let list = since_filter(&db.lock().unwrap(), q.get("since_last_changed"));
    let members: Vec<Value> = list
        .iter()
        .skip(offset)
        .take(count)
        .map(|p| {
            json!({
                "id": format!("{:x}", p.id),
                "email_address": p.email,
                "full_name": format!("{} {}", p.first, p.last),
                "status": if p.id == 3 { "unsubscribed" } else { "subscribed" },
                "merge_fields": {"FNAME": p.first, "LNAME": p.last, "TIER": p.tier},
                "last_changed": rfc(p.updated),
                "tags": p.tags.iter().map(|t| json!({"id": 1, "name": t})).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({"members": members, "list_id": "57afe96172", "total_items": list.len()}))
        .into_response()
}

/// The Mailchimp connector spec.
pub const MAILCHIMP_CONNECTOR: &str = r#"
spec_version: 1
base_url: "{{settings.base}}/3.0"
settings:
  base: {}
auth:
  key:
    type: basic
    username: anystring
    password: "{{credentials.api_token}}"
contacts:
  request:
    path: /lists/57afe96172/members
    query:
      count: "{{page_size}}"
      offset: "{{offset}}"
      since_last_changed: "{{since}}"
  pagination:
    type: offset
    total: $.total_items
    stop: [total_reached, short_page]
  records: $.members[*]
  page_size: {max: 1000, default: 10}
  fields:
    email: $.email_address
    first_name: $.merge_fields.FNAME
    last_name: $.merge_fields.LNAME
    external_id: $.id
    updated_at: {path: $.last_changed}
  custom_fields:
    - {label: Tier, path: $.merge_fields.TIER}
    - {label: Tags, path: "$.tags[*].name", type: list}
  subscription:
    path: $.status
    map: {unsubscribed: unsubscribed, cleaned: bounced}
sync:
  mode: incremental
"#;

/// Mailchimp at `/3.0/lists/57afe96172/members`.
pub fn mailchimp(db: Db) -> Router {
    Router::new()
        .route("/3.0/lists/57afe96172/members", get(mailchimp_members))
        .with_state(db)
}

// ---------------------------------------------------------------------------------------
// BigCommerce v3: page number, `meta.pagination.total_pages`, `X-Auth-Token`.
// ---------------------------------------------------------------------------------------

async fn bigcommerce_v3(State(db): State<Db>, headers: HeaderMap, Query(q): Params) -> Response {
    if headers.get("x-auth-token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
        return unauthorized();
    }
    let limit = number(&q, "limit", 50).min(250);
    let page = number(&q, "page", 1).max(1);
    let list = since_filter(&db.lock().unwrap(), q.get("date_modified:min"));
    let total_pages = list.len().div_ceil(limit);
    let data: Vec<Value> = list
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|p| {
            json!({"id": p.id, "email": p.email, "first_name": p.first, "last_name": p.last,
                   "company": "Analytical Engines Ltd", "date_modified": rfc(p.updated)})
        })
        .collect();
    axum::Json(json!({"data": data, "meta": {"pagination": {
        "total": list.len(), "count": data.len(), "per_page": limit,
        "current_page": page, "total_pages": total_pages}}}))
    .into_response()
}

/// BigCommerce v3 at `/stores/abc/v3/customers`.
pub fn bigcommerce(db: Db) -> Router {
    Router::new()
        .route("/stores/abc/v3/customers", get(bigcommerce_v3))
        .route("/stores/abc/v2/customers", get(bigcommerce_v2))
        .with_state(db)
}

// BigCommerce v2: bare array, RFC 2822 dates, HTTP 204 with no body when empty.
async fn bigcommerce_v2(State(db): State<Db>, Query(q): Params) -> Response {
    let limit = number(&q, "limit", 50).min(250);
    let page = number(&q, "page", 1).max(1);
    let list = since_filter(&db.lock().unwrap(), None);
    let data: Vec<Value> = list
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|p| {
            json!({"id": p.id, "email": p.email, "first_name": p.first, "last_name": p.last,
                   "date_modified": p.updated.to_rfc2822()})
        })
        .collect();
    if data.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    axum::Json(Value::Array(data)).into_response()
}

// ---------------------------------------------------------------------------------------
// Salesforce SOQL: relative `nextRecordsUrl` followed with no parameters, `done`.
// ---------------------------------------------------------------------------------------

async fn salesforce_query(State(db): State<Db>, headers: HeaderMap, Query(q): Params) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return unauthorized();
    }
    let Some(soql) = q.get("q") else {
        return (StatusCode::BAD_REQUEST, "missing q").into_response();
    };
    assert!(
        soql.starts_with("SELECT Id, FirstName"),
        "unexpected SOQL {soql}"
    );
    salesforce_page(&db, 0)
}

fn salesforce_page(db: &Db, start: usize) -> Response {
    const BATCH: usize = 2;
    let list = since_filter(&db.lock().unwrap(), None);
    let records: Vec<Value> = list
        .iter()
        .skip(start)
        .take(BATCH)
        .map(|p| {
            json!({"attributes": {"type": "Contact"}, "Id": format!("003{:05}", p.id),
                   "FirstName": p.first, "LastName": p.last, "Email": p.email,
                   "Account": {"Name": "Acme"},
                   "SystemModstamp": p.updated.format("%Y-%m-%dT%H:%M:%S.000+0000").to_string()})
        })
        .collect();
    let done = start + BATCH >= list.len();
    let mut body = json!({"totalSize": list.len(), "done": done, "records": records});
    if !done {
        body["nextRecordsUrl"] = json!(format!(
            "/services/data/v62.0/query/01gXX-{}",
            start + BATCH
        ));
    }
    axum::Json(body).into_response()
}

async fn salesforce_more(
    State(db): State<Db>,
    headers: HeaderMap,
    axum::extract::Path(locator): axum::extract::Path<String>,
    Query(q): Params,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return unauthorized();
    }
    if !q.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "nextRecordsUrl takes no parameters",
        )
            .into_response();
    }
    let start = locator
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    salesforce_page(&db, start)
}

/// Salesforce at `/services/data/v62.0/query`.
pub fn salesforce(db: Db) -> Router {
    Router::new()
        .route("/services/data/v62.0/query", get(salesforce_query))
        .route("/services/data/v62.0/query/{locator}", get(salesforce_more))
        .with_state(db)
}

// ---------------------------------------------------------------------------------------
// A next URL that is absolute and carries the access token again (Nimble-style
// `access_token` query parameter, Graph-style `@odata.nextLink`).
// ---------------------------------------------------------------------------------------

async fn tokenlink(State((db, base)): State<(Db, String)>, Query(q): Params) -> Response {
    if q.get("access_token").map(String::as_str) != Some(TOKEN) {
        return unauthorized();
    }
    let top = number(&q, "$top", 10);
    let skip = number(&q, "$skip", 0);
    let list = since_filter(&db.lock().unwrap(), None);
    let value: Vec<Value> = list
        .iter()
        .skip(skip)
        .take(top)
        .map(|p| {
            json!({"id": format!("AAMk{}", p.id), "givenName": p.first, "surname": p.last,
                   "emailAddresses": [{"name": p.first, "address": p.email}],
                   "lastModifiedDateTime": rfc(p.updated)})
        })
        .collect();
    let mut body = json!({"value": value});
    if skip + top < list.len() {
        body["@odata.nextLink"] = json!(format!(
            "{base}/v1.0/me/contacts?access_token={TOKEN}&%24top={top}&%24skip={}",
            skip + top
        ));
    }
    axum::Json(body).into_response()
}

/// A Graph-like service whose next links carry `access_token`; `base` is its own URL.
pub fn tokenlink_service(db: Db, base: String) -> Router {
    Router::new()
        .route("/v1.0/me/contacts", get(tokenlink))
        .with_state((db, base))
}

// ---------------------------------------------------------------------------------------
// Shopify customers: `Link` header with `page_info`; a request carrying `page_info` may
// only add `limit` and `fields` (400 otherwise). Tags are one comma-separated string.
// ---------------------------------------------------------------------------------------

async fn shopify_customers(
    State((db, base)): State<(Db, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        != Some(TOKEN)
    {
        return unauthorized();
    }
    let limit = number(&q, "limit", 50).min(250);
    let (start, since) = match q.get("page_info") {
        Some(info) => {
            if q.keys()
                .any(|k| !matches!(k.as_str(), "page_info" | "limit" | "fields"))
            {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"errors": {"page_info": "other parameters cannot be passed when page_info is present"}})),
                )
                    .into_response();
            }
            let (start, since) = info.split_once('|').unwrap_or((info, ""));
            (
                start.parse().unwrap_or(0usize),
                (!since.is_empty()).then(|| since.to_string()),
            )
        }
        None => (0, q.get("updated_at_min").cloned()),
    };
    let list = since_filter(&db.lock().unwrap(), since.as_ref());
    let customers: Vec<Value> = list
        .iter()
        .skip(start)
        .take(limit)
        .map(|p| {
            json!({"id": 207119551u64 + p.id, "email": p.email, "first_name": p.first,
                   "last_name": p.last, "tags": p.tags.join(", "),
                   "updated_at": p.updated.with_timezone(&chrono::FixedOffset::west_opt(4 * 3600).unwrap()).to_rfc3339()})
        })
        .collect();
    let mut response = axum::Json(json!({"customers": customers})).into_response();
    if start + limit < list.len() {
        let info = format!("{}|{}", start + limit, since.unwrap_or_default());
        let info: String = url::form_urlencoded::byte_serialize(info.as_bytes()).collect();
        let link = format!(
            "<{base}/admin/api/2024-10/customers.json?limit={limit}&page_info=prev>; rel=\"previous\", <{base}/admin/api/2024-10/customers.json?limit={limit}&page_info={info}>; rel=\"next\""
        );
        response
            .headers_mut()
            .insert(header::LINK, link.parse().unwrap());
    }
    response
}

/// Shopify at `/admin/api/2024-10/customers.json`; `base` is its own URL.
pub fn shopify(db: Db, base: String) -> Router {
    Router::new()
        .route("/admin/api/2024-10/customers.json", get(shopify_customers))
        .with_state((db, base))
}

// ---------------------------------------------------------------------------------------
// Stripe customers: `starting_after` = id of the last object, `has_more`. (Stripe lists
// newest first; this fake lists by id, which changes nothing for paging.)
// ---------------------------------------------------------------------------------------

async fn stripe_customers(State(db): State<Db>, headers: HeaderMap, Query(q): Params) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return unauthorized();
    }
    let limit = number(&q, "limit", 10).min(100);
    let mut list = db.lock().unwrap().clone();
    list.sort_by_key(|p| p.id);
    let after: usize = match q.get("starting_after") {
        Some(id) => match list.iter().position(|p| format!("cus_{}", p.id) == *id) {
            Some(i) => i + 1,
            None => return (StatusCode::BAD_REQUEST, "no such customer").into_response(),
        },
        None => 0,
    };
    let data: Vec<Value> = list
        .iter()
        .skip(after)
        .take(limit)
        .map(|p| {
            json!({"id": format!("cus_{}", p.id), "object": "customer", "email": p.email,
                   "name": format!("{} {}", p.first, p.last), "created": p.updated.timestamp(),
                   "metadata": {"segment": p.tier}})
        })
        .collect();
    let has_more = after + limit < list.len();
    axum::Json(
        json!({"object": "list", "url": "/v1/customers", "has_more": has_more, "data": data}),
    )
    .into_response()
}

/// Stripe at `/v1/customers`.
pub fn stripe(db: Db) -> Router {
    Router::new()
        .route("/v1/customers", get(stripe_customers))
        .with_state(db)
}

// ---------------------------------------------------------------------------------------
// Batchbook people: page number, fixed 30 per page, `auth_token` query, stop on an empty
// `people` array.
// ---------------------------------------------------------------------------------------

async fn batchbook_people(State(db): State<Db>, Query(q): Params) -> Response {
    if q.get("auth_token").map(String::as_str) != Some(TOKEN) {
        return unauthorized();
    }
    let page = number(&q, "page", 1).max(1);
    let list = since_filter(&db.lock().unwrap(), q.get("updated_since"));
    let people: Vec<Value> = list
        .iter()
        .skip((page - 1) * 30)
        .take(30)
        .map(|p| {
            json!({"id": p.id, "first_name": p.first, "last_name": p.last,
                   "emails": [{"address": p.email, "label": "work", "primary": true}],
                   "updated_at": p.updated.with_timezone(&chrono::FixedOffset::west_opt(5 * 3600).unwrap()).to_rfc3339()})
        })
        .collect();
    axum::Json(json!({"people": people})).into_response()
}

/// Batchbook at `/api/v1/people.json`.
pub fn batchbook(db: Db) -> Router {
    Router::new()
        .route("/api/v1/people.json", get(batchbook_people))
        .with_state(db)
}

// ---------------------------------------------------------------------------------------
// Heap CRM: no pagination, one JSON array of everyone.
// ---------------------------------------------------------------------------------------

async fn heap_people(State(db): State<Db>) -> Response {
    let list = since_filter(&db.lock().unwrap(), None);
    let people: Vec<Value> = list
        .iter()
        .map(|p| {
            json!({"name": format!("{} {}", p.first, p.last), "email": p.email,
                   "categories": p.tags, "city": "London"})
        })
        .collect();
    axum::Json(Value::Array(people)).into_response()
}

/// Heap at `/people`.
pub fn heap(db: Db) -> Router {
    Router::new()
        .route("/people", get(heap_people))
        .with_state(db)
}
