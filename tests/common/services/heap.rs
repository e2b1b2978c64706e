//! Heap CRM (WBP Systems): the account's JSON webhook, `POST /json/{key}` with the
//! account login and a search phrase as form fields, answering every matching person as
//! one JSON array.
//!
//! Sources: services.md §6 (heap.wbpsystems.com/api.php, knowledgebase.wbpsystems.com
//! "Heap Simple API" and "Heap POST JSON WebHook", developer.wbpsystems.com): form
//! fields `login_email` and `login_password` on every call, `search=<phrase>` with
//! `searchpeople=true` returning people as a JSON array, the person fields (`name`,
//! `title`, `email`, `phone`, `mobile`, `city`, `country`, `categories`, ...), no paging,
//! no timestamps, no ids. **Unverifiable**: the service is defunct or unreachable, so
//! the read-side shape is the one services.md assumes from the write-side field list,
//! the refusal of a wrong login (here 200 with the word `Failed`, as the simple API's
//! `Success` answer suggests) is a guess, and how the search phrase matches (here: a
//! substring of the name or email, case-insensitive) is unknown.

use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Contact, PageInfo, Paging, Protocol, Query, Service, by_update,
};

/// The webhook key the fake serves.
pub const KEY: &str = "9f8e7d6c5b4a";

/// One person, as the assumed read-side shape (services.md §6), categories as an array.
/// services.md's sample writes the name as "Ada Lovelace - Analytical Engines"; whether
/// the real webhook appends the company is unverifiable, so the fake writes the name
/// alone (were the company appended, it would land in the last name).
pub fn person(c: &Contact, _query: &Query) -> Value {
    json!({
        "name": c.full_name(),
        "title": c.job_title.clone().unwrap_or_default(),
        "email": c.email().unwrap_or_default(),
        "phone": if c.id.is_multiple_of(2) { c.phone.clone().unwrap_or_default() } else { String::new() },
        "mobile": if c.id.is_multiple_of(2) { String::new() } else { c.phone.clone().unwrap_or_default() },
        "fax": "",
        "address": "",
        "city": c.city,
        "state": "",
        "zip": "",
        "country": c.country,
        "website": "",
        "notes": "",
        "categories": c.tags,
    })
}

/// Reads the form: the login must be the account's, `searchpeople` must be `true`; the
/// search phrase becomes the `search` parameter.
fn form(login: (&'static str, &'static str)) -> impl Fn(&Value) -> Result<Query, String> {
    move |body| {
        let object = body.as_object().ok_or("body")?;
        let get = |k: &str| object.get(k).and_then(Value::as_str);
        if let Some(other) = object.keys().find(|k| {
            !["login_email", "login_password", "search", "searchpeople"].contains(&k.as_str())
        }) {
            return Err(other.clone());
        }
        if get("login_email") != Some(login.0) || get("login_password") != Some(login.1) {
            return Err("login".into());
        }
        if get("searchpeople") != Some("true") {
            return Err("searchpeople".into());
        }
        let mut query = Query::new();
        if let Some(search) = get("search") {
            query.insert("search".into(), search.to_string());
        }
        Ok(query)
    }
}

/// The webhook of account `login` (the fake accepts this one login only).
pub fn service() -> Service {
    Service {
        name: "heap",
        path: format!("/json/{KEY}"),
        auth: Auth::None,
        denied: Canned::json(200, json!("Failed")),
        params: Vec::new(),
        // A wrong login or form: the word `Failed` (a guess, see above).
        bad_param: |_| Canned {
            status: 200,
            content_type: "text/html",
            body: "Failed".into(),
            headers: Vec::new(),
        },
        // One response holds everyone.
        paging: Paging::Offset {
            offset: "__offset",
            count: "__count",
        },
        page_size: (usize::MAX / 2, usize::MAX / 2),
        since: None,
        query_since: None,
        filters: vec![("search", |c, v| {
            let v = v.to_lowercase();
            c.full_name().to_lowercase().contains(&v)
                || c.email().is_some_and(|e| e.to_lowercase().contains(&v))
        })],
        order: by_update,
        lists_deleted: false,
        record: person,
        body: |people, _: &PageInfo| Value::Array(people),
        fields_param: None,
        required: vec!["search"],
        cursor_binds_params: false,
        protocol: Protocol {
            body_params: Some(|body| form(LOGIN)(body)),
            ..Protocol::default()
        },
        token: None,
    }
}

/// The account's login.
pub const LOGIN: (&str, &str) = ("owner@acme.example", "hunter2 ünïcode");
