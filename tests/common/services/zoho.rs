//! Zoho CRM REST v5, `GET /crm/v5/Contacts`, and Zoho Accounts' token endpoint.
//!
//! Sources: services.md §11 (zoho.com/crm/developer/docs/api/v3/get-records.html and
//! later versions, Kaizen #29, Airbyte `source_zoho_crm`): `Authorization:
//! Zoho-oauthtoken <token>` (not Bearer); `POST accounts.zoho.<dc>/oauth/v2/token` with
//! `grant_type=refresh_token`, access tokens living an hour, the token response's
//! `api_domain`; `fields` mandatory from v3 on; `per_page` default and max 200;
//! `sort_by=Modified_Time`, `sort_order` default `desc`; updated-since in the
//! `If-Modified-Since` request header (inclusive), answered **304** with no body when
//! nothing changed and **204** when the module is empty; `info` with `more_records`,
//! `next_page_token` (`page` reaches only the first 2,000 records; `page_token` cannot be
//! combined with `page`); lookups as `{name, id}`, `Tag` as `[{name, id}]`, times with
//! the org's offset; 429 `TOO_MANY_REQUESTS`. connector-review.md [ZT] (the hour-long
//! access token). Unverified here: the exact texts of the error documents
//! (`{code, details, message, status}` as Zoho writes them), whether the first page
//! already carries `next_page_token` (the reference's sample info lists it on every
//! page; the fake writes it whenever more records follow), whether a `Z` time in
//! `If-Modified-Since` is refused (the fake accepts only the documented `+hh:mm` form),
//! and whether Zoho sends `Retry-After` with its 429 (the fake sends none).

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Map, Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, DeletedList, DeletedPaging, Grant, PageInfo, Paging, Protocol,
    Query, Service, Since, Throttle, TokenEndpoint, Tokens,
};

/// Every field a Contacts request may name in `fields` here (a subset of Zoho's).
const FIELDS: [&str; 16] = [
    "Email",
    "First_Name",
    "Last_Name",
    "Full_Name",
    "Phone",
    "Mobile",
    "Account_Name",
    "Title",
    "Lead_Source",
    "Mailing_City",
    "Mailing_Country",
    "Owner",
    "Tag",
    "Email_Opt_Out",
    "Created_Time",
    "Modified_Time",
];

/// Zoho's error document.
pub fn error(status: u16, code: &str, message: &str) -> Canned {
    Canned::json(
        status,
        json!({"code": code, "details": {}, "message": message, "status": "error"}),
    )
}

/// The org's offset: times come back in it (`+01:00` here).
fn org_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&FixedOffset::east_opt(3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// `If-Modified-Since` in the documented form, `2024-05-01T10:00:00+05:30`.
fn parse_since(text: &str) -> Option<DateTime<Utc>> {
    if text.ends_with('Z') {
        return None;
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The record id of person `id`.
pub fn record_id(id: u64) -> String {
    format!("4150868000000{id:06}")
}

/// One contact as services.md §11's sample, with only the `fields` asked for (and `id`).
pub fn contact(c: &Contact, query: &Query) -> Value {
    let all = json!({
        "Owner": {"name": format!("Rep {}", c.owner), "id": format!("41508680000002250{}", c.owner),
                  "email": format!("rep{}@org.example", c.owner)},
        "Email": c.email(),
        "First_Name": c.first,
        "Last_Name": c.last,
        "Full_Name": c.full_name(),
        "Phone": c.phone,
        "Mobile": null,
        "Account_Name": c.company.as_ref().map(|name| json!({"name": name, "id": "4150868000000624002"})),
        "Title": c.job_title,
        "Lead_Source": c.stage,
        "Mailing_City": c.city,
        "Mailing_Country": c.country,
        "Tag": c.tags.iter().enumerate()
            .map(|(i, t)| json!({"name": t, "id": format!("415086800000070100{i}")}))
            .collect::<Vec<_>>(),
        "Email_Opt_Out": c.consent == Consent::Unsubscribed,
        "Created_Time": org_time(c.created),
        "Modified_Time": org_time(c.updated),
    });
    let mut out = Map::new();
    out.insert("id".into(), json!(record_id(c.id)));
    for name in query
        .get("fields")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
    {
        if let Some(value) = all.get(name.trim()) {
            out.insert(name.trim().to_string(), value.clone());
        }
    }
    Value::Object(out)
}

/// Zoho CRM's Contacts with its token endpoint at `/oauth/v2/token`; `tokens` issues the
/// access tokens (expire one to see a run renew it); the token response names `base` as
/// the `api_domain`.
pub fn service(base: &str, client: (&str, &str), refresh_token: &str, tokens: &Tokens) -> Service {
    Service {
        name: "zoho",
        path: "/crm/v5/Contacts".into(),
        auth: Auth::Issued("authorization", "Zoho-oauthtoken ", tokens.clone()),
        denied: error(401, "INVALID_TOKEN", "invalid oauth token"),
        params: vec![
            "fields",
            "sort_by",
            "sort_order",
            "cvid",
            "converted",
            "territory_id",
            "include_child",
        ],
        bad_param: |name| error(400, "INVALID_DATA", &format!("invalid data: {name}")),
        paging: Paging::Cursor {
            limit: "per_page",
            cursor: "page_token",
        },
        page_size: (200, 200),
        // `If-Modified-Since`, read from its header (see `protocol`), inclusive.
        since: Some(Since {
            param: "If-Modified-Since",
            parse: parse_since,
            inclusive: true,
        }),
        query_since: None,
        filters: Vec::new(),
        order: |c, q| {
            let key = match q.get("sort_by").map(String::as_str) {
                Some("Modified_Time") => c.updated.timestamp(),
                Some("Created_Time") => c.created.timestamp(),
                _ => c.id as i64,
            };
            // `sort_order` defaults to desc.
            match q.get("sort_order").map(String::as_str) {
                Some("asc") => (key, c.id as i64),
                _ => (-key, -(c.id as i64)),
            }
        },
        lists_deleted: false,
        record: contact,
        body: |data, info: &PageInfo| {
            json!({"data": data, "info": {
                "per_page": info.limit, "count": data_len(info), "page": info.page,
                "sort_by": "Modified_Time", "sort_order": "asc",
                "more_records": info.has_more, "next_page_token": info.next_cursor,
                "previous_page_token": null,
                "page_token_expiry": info.next_cursor.as_ref().map(|_| "2024-05-02T10:00:00+01:00")}})
        },
        fields_param: None,
        required: vec!["fields"],
        cursor_binds_params: false,
        protocol: Protocol {
            header_params: vec![("if-modified-since", "If-Modified-Since")],
            // 304 when nothing changed since If-Modified-Since, 204 for an empty module.
            empty: Some(|q| {
                if q.contains_key("If-Modified-Since") {
                    304
                } else {
                    204
                }
            }),
            // "Get List of Deleted Records" (v2 reference, unchanged since): `type`
            // (all, recycle, permanent), `page`, `per_page`, `If-Modified-Since`; each
            // record's `id`, `display_name`, `type`, `deleted_by`, `deleted_time`; `info`
            // with `more_records`. Unverified: the 204 for nothing deleted (as the
            // records endpoint answers an empty module).
            deleted_list: Some(DeletedList {
                path: "/crm/v5/Contacts/deleted",
                params: vec!["type"],
                required: Vec::new(),
                paging: DeletedPaging::PageNumber,
                record: |c| {
                    json!({"id": record_id(c.id), "display_name": c.full_name(), "type": "recycle",
                           "deleted_by": {"name": "Rep 10", "id": "415086800000022501"},
                           "created_by": {"name": "Rep 10", "id": "415086800000022501"},
                           "deleted_time": org_time(c.updated)})
                },
                body: |data, page, per_page, more| {
                    json!({"data": data, "info": {"per_page": per_page, "count": data.len(),
                           "page": page, "more_records": more}})
                },
                empty_status: Some(204),
            }),
            throttle: Some(Throttle {
                every: 3,
                refusal: error(
                    429,
                    "TOO_MANY_REQUESTS",
                    "The number of API requests has exceeded the concurrency limit",
                ),
                headers: |_| Vec::new(),
            }),
            ..Protocol::default()
        },
        token: Some(TokenEndpoint {
            path: "/oauth/v2/token",
            client: (client.0.to_string(), client.1.to_string()),
            grant: Grant::RefreshToken(refresh_token.to_string()),
            access_token: String::new(),
            tokens: Some(tokens.clone()),
            extra: json!({"api_domain": base, "token_type": "Bearer", "expires_in": 3600}),
            // Zoho Accounts answers a bad refresh token with 200 `{"error": "invalid_code"}`
            // (unverified); the fake answers 400, as RFC 6749 §5.2 says.
            refused: Canned::json(400, json!({"error": "invalid_code"})),
        }),
    }
}

/// Records on the page (the envelope's `count`).
fn data_len(info: &PageInfo) -> usize {
    if info.has_more {
        info.limit
    } else {
        info.total - (info.page - 1) * info.limit
    }
}

/// COQL's selectable fields here, as the connector names them (a lookup's name through
/// the dot operator: `Account_Name.Account_Name`, `Owner.full_name`; unverified).
const COQL_FIELDS: [&str; 12] = [
    "Email",
    "First_Name",
    "Last_Name",
    "Phone",
    "Account_Name.Account_Name",
    "Title",
    "Lead_Source",
    "Mailing_City",
    "Mailing_Country",
    "Owner.full_name",
    "Email_Opt_Out",
    "Modified_Time",
];

/// One COQL row: the selected fields (lookups through the dot operator come back under
/// their dotted name) and `id`.
pub fn coql_row(c: &Contact, query: &Query) -> Value {
    let mut q = query.clone();
    q.insert(
        "fields".into(),
        query.get("select").cloned().unwrap_or_default(),
    );
    let mut row = contact(c, &q);
    let fields = query.get("select").cloned().unwrap_or_default();
    if let Some(map) = row.as_object_mut() {
        if fields.contains("Account_Name.Account_Name") {
            map.insert("Account_Name.Account_Name".into(), json!(c.company.clone()));
        }
        if fields.contains("Owner.full_name") {
            map.insert("Owner.full_name".into(), json!(format!("Rep {}", c.owner)));
        }
    }
    row
}

/// Reads the connector's COQL (`{"select_query": "select <fields> from Contacts where
/// <condition> order by Modified_Time asc, id asc limit <n>"}`) into parameters:
/// `select`, `limit`, `since` (`Modified_Time >= '<t>'`) or `after` (the keyset
/// `((Modified_Time > '<t>') or (Modified_Time = '<t>' and id > <id>))`). Anything else
/// is Zoho's `SYNTAX_ERROR`. COQL reference (COQL-Overview.html, services.md §11):
/// `LIMIT` at most 2,000, `offset, limit` paging capped (10,000 in v2-v6), datetimes
/// quoted in `yyyy-MM-ddTHH:mm:ss+hh:mm`.
pub fn coql(body: &Value) -> Result<Query, String> {
    let object = body.as_object().ok_or("body")?;
    if let Some(other) = object.keys().find(|k| *k != "select_query") {
        return Err(other.clone());
    }
    let text = object
        .get("select_query")
        .and_then(Value::as_str)
        .ok_or("select_query")?;
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let rest = text.strip_prefix("select ").ok_or("SYNTAX_ERROR select")?;
    let (fields, rest) = rest
        .split_once(" from Contacts where ")
        .ok_or("SYNTAX_ERROR from")?;
    for field in fields.split(',') {
        if !COQL_FIELDS.contains(&field.trim()) {
            return Err(format!("INVALID_QUERY column {}", field.trim()));
        }
    }
    let (condition, rest) = rest
        .split_once(" order by Modified_Time asc, id asc limit ")
        .ok_or("SYNTAX_ERROR order by")?;
    let limit: usize = rest.trim().parse().map_err(|_| "SYNTAX_ERROR limit")?;
    if limit == 0 || limit > 2000 {
        return Err("LIMIT_EXCEEDED".into());
    }
    let mut query = Query::new();
    query.insert(
        "select".into(),
        fields
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(","),
    );
    query.insert("limit".into(), limit.to_string());
    let quoted = |s: &str| -> Result<String, String> {
        let t = s
            .strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .ok_or("SYNTAX_ERROR quote")?;
        parse_since(t).ok_or(format!("INVALID_QUERY datetime {t}"))?;
        Ok(t.to_string())
    };
    if condition == "id is not null" {
    } else if let Some(t) = condition.strip_prefix("Modified_Time >= ") {
        query.insert("since".into(), quoted(t)?);
    } else if let Some(keyset) = condition
        .strip_prefix("((Modified_Time > ")
        .and_then(|k| k.strip_suffix(')'))
    {
        let (t, rest) = keyset
            .split_once(") or (Modified_Time = ")
            .ok_or("SYNTAX_ERROR or")?;
        let (t2, id) = rest.split_once(" and id > ").ok_or("SYNTAX_ERROR and")?;
        let id = id.strip_suffix(')').ok_or("SYNTAX_ERROR )")?;
        if t != t2 {
            return Err("the keyset's two times differ".into());
        }
        id.parse::<u64>().map_err(|_| "INVALID_QUERY id")?;
        query.insert("after".into(), format!("{}|{id}", quoted(t)?));
    } else {
        return Err(format!("SYNTAX_ERROR where {condition}"));
    }
    Ok(query)
}

/// Zoho CRM's COQL endpoint (`POST /crm/v5/coql`) with the same token endpoint.
pub fn coql_service(
    base: &str,
    client: (&str, &str),
    refresh_token: &str,
    tokens: &Tokens,
) -> Service {
    let list = service(base, client, refresh_token, tokens);
    Service {
        name: "zoho-coql",
        path: "/crm/v5/coql".into(),
        params: vec!["select"],
        bad_param: |name| error(400, "SYNTAX_ERROR", &format!("error in query: {name}")),
        // `limit n` alone: always from the start of the condition (the keyset moves).
        paging: Paging::Offset {
            offset: "offset",
            count: "limit",
        },
        page_size: (200, 2000),
        since: Some(Since {
            param: "since",
            parse: parse_since,
            inclusive: true,
        }),
        filters: vec![("after", |c, v| {
            let (t, id) = v.split_once('|').unwrap();
            let t = parse_since(t).unwrap();
            let id: u64 = id.parse().unwrap();
            let mine: u64 = record_id(c.id).parse().unwrap();
            (c.updated, mine) > (t, id)
        })],
        order: |c, _| (c.updated.timestamp(), c.id as i64),
        record: coql_row,
        body: |data, info: &PageInfo| json!({"data": data, "info": {"count": data_len(info), "more_records": info.has_more}}),
        required: vec!["select", "limit"],
        protocol: Protocol {
            body_params: Some(coql),
            // No matching record: 204 with no body.
            empty: Some(|_| 204),
            throttle: list.protocol.throttle.clone(),
            ..Protocol::default()
        },
        ..list
    }
}
