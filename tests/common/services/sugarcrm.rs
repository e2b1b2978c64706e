//! SugarCRM REST v11, `GET /rest/v11/Contacts`, and its password-grant login.
//!
//! Sources: services.md and connector-review.md [SG] (support.sugarcrm.com
//! Sugar_Developer_Guide_13.0 REST endpoint samples: `POST /rest/v11/oauth2/token` with a
//! JSON body `grant_type=password`, `client_id=sugar`, `client_secret=""`, `username`,
//! `password`, `platform` (a custom platform must be registered by the admin); the
//! session sent as the `OAuth-Token` header; `max_num`, `offset`, `order_by`, `fields`,
//! `filter[0][date_modified][$gte]`); gist SugarCRMExamples/9623178 (the list body
//! `{next_offset, records}`, `date_modified` as `2014-03-17T15:29:16+00:00`, `_acl` and
//! `_module` on each record; `next_offset` is -1 on the last page); the `email` array of
//! `{email_address, primary_address, opt_out, invalid_email}` (volcengine.com article
//! 4580937, a Stack Exchange question on v11 filters). Unverified: the texts of Sugar's
//! error documents (`{error, error_message}`), whether an unknown parameter is refused
//! (the fake refuses it), whether `$gte` accepts a `Z` time (the fake takes only
//! `+00:00`), and the `tag` field's shape (`[{id, name}]`).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Consent, Contact, Grant, PageInfo, Paging, Protocol, Query, Service, Since,
    TokenEndpoint, Tokens, by_update,
};

/// The platform the instance's admin registered for Tributary.
pub const PLATFORM: &str = "tributary";

fn error(status: u16, error: &str, message: &str) -> Canned {
    Canned::json(status, json!({"error": error, "error_message": message}))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

fn parse_since(text: &str) -> Option<DateTime<Utc>> {
    if text.ends_with('Z') {
        return None;
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One contact: the addresses in `email` with their opt-out and invalid flags (on the
/// primary one), `email1` the primary address.
pub fn record(c: &Contact, _query: &Query) -> Value {
    let emails: Vec<Value> = c
        .emails
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let primary = i == 0;
            json!({"email_address": e, "primary_address": primary, "reply_to_address": false,
                   "invalid_email": primary && c.consent == Consent::Bounced,
                   "opt_out": primary && c.consent == Consent::Unsubscribed})
        })
        .collect();
    json!({
        "id": format!("f2d4042e-6d9e-88af-3c00-{:012}", c.id),
        "name": c.full_name(),
        "first_name": c.first,
        "last_name": c.last,
        "email": emails,
        "email1": c.email(),
        "phone_work": c.phone,
        "account_name": c.company.clone().unwrap_or_default(),
        "title": c.job_title,
        "primary_address_city": c.city,
        "primary_address_country": c.country,
        "lead_source": c.stage,
        "assigned_user_name": format!("user{}", c.owner),
        "tag": c.tags.iter().enumerate().map(|(i, t)| json!({"id": format!("tag-{i}"), "name": t})).collect::<Vec<_>>(),
        "date_modified": stamp(c.updated),
        "_acl": {"fields": {}},
        "_module": "Contacts",
    })
}

/// Sugar's Contacts with its login at `/rest/v11/oauth2/token` for `user`; `tokens`
/// issues the sessions (expire one to see a run log in again).
pub fn service(user: (&str, &str), tokens: &Tokens) -> Service {
    Service {
        name: "sugarcrm",
        path: "/rest/v11/Contacts".into(),
        auth: Auth::Issued("oauth-token", "", tokens.clone()),
        denied: error(
            401,
            "invalid_grant",
            "The access token provided is invalid.",
        ),
        params: vec!["fields", "order_by", "deleted", "view"],
        bad_param: |name| {
            error(
                422,
                "invalid_parameter",
                &format!("Invalid parameter: {name}"),
            )
        },
        paging: Paging::Offset {
            offset: "offset",
            count: "max_num",
        },
        page_size: (20, 1000),
        since: Some(Since {
            param: "filter[0][date_modified][$gte]",
            parse: parse_since,
            inclusive: true,
        }),
        query_since: None,
        filters: Vec::new(),
        order: by_update,
        lists_deleted: false,
        record,
        body: |records, info: &PageInfo| {
            let next = if info.has_more {
                json!(info.start + info.limit)
            } else {
                json!(-1)
            };
            json!({"next_offset": next, "records": records})
        },
        fields_param: None,
        required: Vec::new(),
        cursor_binds_params: false,
        protocol: Protocol::default(),
        token: Some(TokenEndpoint {
            path: "/rest/v11/oauth2/token",
            client: ("sugar".into(), String::new()),
            grant: Grant::PasswordJson {
                username: user.0.into(),
                password: user.1.into(),
                platform: PLATFORM.into(),
            },
            access_token: String::new(),
            tokens: Some(tokens.clone()),
            extra: json!({"token_type": "bearer", "scope": null,
                          "refresh_token": "c1be6b2e-refresh", "refresh_expires_in": 1209600,
                          "download_token": "d0wnl0ad"}),
            refused: error(
                401,
                "need_login",
                "You must specify a valid username and password.",
            ),
        }),
    }
}
