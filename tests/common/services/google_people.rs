//! Google People API v1, `GET /v1/people/me/connections`, and Google's OAuth2 token
//! endpoint.
//!
//! Sources: services.md §13 (developers.google.com/people/api/rest/v1/people.connections/list:
//! parameters, `personFields` required, `pageSize` 1-1000 default 100, `nextPageToken`
//! absent on the last page, other parameters must match the first call's with a page
//! token, `metadata.sources[].updateTime`, the sample person); connector-review.md [GPI]
//! (rapidwebltd/php-google-people-api PRs #23, #35: no `connections` key for an account
//! without contacts). Google's JSON error documents (`{"error": {code, message, status}}`)
//! follow the Google API error model (cloud.google.com/apis/design/errors); their exact
//! message texts here are unverified.

use serde_json::{Value, json};

use crate::common::service::{
    Auth, Canned, Contact, Grant, PageInfo, Paging, Protocol, Query, Service, SyncTokens,
    TokenEndpoint, by_update,
};

/// The access token the token endpoint hands out.
pub const ACCESS: &str = "ya29.fake-access-token";

fn error(code: u16, status: &str, message: &str) -> Canned {
    Canned::json(
        code,
        json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

/// One person with only the `personFields` asked for (the API returns nothing else),
/// shaped as services.md §13's sample: every field an array of objects with their own
/// `metadata`, `resourceName` as the id. Google Contacts keeps no marketing consent.
pub fn person(c: &Contact, query: &Query) -> Value {
    let fields = query.get("personFields").cloned().unwrap_or_default();
    let wants = |f: &str| fields.split(',').any(|x| x.trim() == f);
    let mut p = json!({
        "resourceName": format!("people/c{:019}", c.id),
        "etag": format!("%EgcBAgkLLjc9GgQBAgUHIgxk{}", c.id),
    });
    if wants("metadata") {
        p["metadata"] = json!({
            "sources": [{"type": "CONTACT", "id": format!("{:x}", c.id),
                         "updateTime": c.updated.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}],
            "objectType": "PERSON",
        });
    }
    if wants("names") && (c.first.is_some() || c.last.is_some()) {
        p["names"] = json!([{"metadata": {"primary": true},
            "displayName": c.full_name(), "givenName": c.first, "familyName": c.last}]);
    }
    if wants("emailAddresses") && !c.emails.is_empty() {
        // The primary address is not always listed first.
        let mut list: Vec<Value> = c
            .emails
            .iter()
            .enumerate()
            .map(|(i, e)| json!({"metadata": {"primary": i == 0}, "value": e, "type": "work"}))
            .collect();
        list.reverse();
        p["emailAddresses"] = Value::Array(list);
    }
    if wants("phoneNumbers")
        && let Some(phone) = &c.phone
    {
        p["phoneNumbers"] = json!([{"value": phone, "type": "mobile"}]);
    }
    if wants("organizations") && (c.company.is_some() || c.job_title.is_some()) {
        p["organizations"] = json!([{"name": c.company, "title": c.job_title}]);
    }
    if wants("addresses") {
        p["addresses"] = json!([{"city": c.city, "countryCode": c.country, "type": "work"}]);
    }
    if wants("memberships") {
        let mut groups = vec![json!({"contactGroupMembership": {
            "contactGroupId": "myContacts", "contactGroupResourceName": "contactGroups/myContacts"}})];
        for tag in &c.tags {
            groups.push(json!({"contactGroupMembership": {
                "contactGroupId": tag, "contactGroupResourceName": format!("contactGroups/{tag}")}}));
        }
        p["memberships"] = Value::Array(groups);
    }
    p
}

/// A person deleted since a sync token, as its listing returns it: "resources deleted
/// since the last sync will be returned as a person with PersonMetadata.deleted set to
/// true" (people.connections.list); no other field.
fn deleted_person(c: &Contact) -> Value {
    json!({
        "resourceName": format!("people/c{:019}", c.id),
        "etag": format!("%EgcBAgkLLjc9GgQBAgUHIgxk{}", c.id),
        "metadata": {"deleted": true, "objectType": "PERSON",
                     "sources": [{"type": "CONTACT", "id": format!("{:x}", c.id)}]},
    })
}

/// The People API with Google's token endpoint at `/token`.
pub fn service(client: (&str, &str), refresh_token: &str) -> Service {
    Service {
        name: "google-people",
        path: "/v1/people/me/connections".into(),
        auth: Auth::Header("authorization", format!("Bearer {ACCESS}")),
        denied: error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        ),
        // people.connections.list's parameters, and the system parameters every Google
        // API takes that a connector might send.
        params: vec![
            "personFields",
            "sortOrder",
            "requestSyncToken",
            "syncToken",
            "sources",
            "fields",
            "prettyPrint",
        ],
        // Google refuses what it cannot bind ("Cannot bind query parameter"), and a page
        // token sent with other parameters than the first call's.
        bad_param: |name| {
            error(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid value at '{name}', or cannot bind query parameter '{name}'."),
            )
        },
        paging: Paging::Cursor {
            limit: "pageSize",
            cursor: "pageToken",
        },
        page_size: (100, 1000),
        // No update-time filter: only sync tokens (services.md §13).
        since: None,
        query_since: None,
        filters: Vec::new(),
        // sortOrder LAST_MODIFIED_ASCENDING is the default.
        order: by_update,
        // Deleted people appear only in sync-token responses (`protocol.sync_tokens`).
        lists_deleted: false,
        record: person,
        body: |connections, info: &PageInfo| {
            // No `connections` at all when there are none; no `nextPageToken` on the last
            // page. Unverified: whether the totals are present (0) for an empty account.
            let mut body = json!({"totalPeople": info.total, "totalItems": info.total});
            if !connections.is_empty() {
                body["connections"] = Value::Array(connections);
            }
            if let Some(next) = &info.next_cursor {
                body["nextPageToken"] = json!(next);
            }
            body
        },
        fields_param: None,
        required: vec!["personFields"],
        cursor_binds_params: true,
        protocol: Protocol {
            sync_tokens: Some(SyncTokens {
                request: "requestSyncToken",
                token: "syncToken",
                next: "nextSyncToken",
                lifetime: chrono::Duration::days(7),
                deleted: deleted_person,
                write: |token, _| json!(token),
                // "The request returns a 410 error if syncToken is specified and is
                // expired" (the reference's earlier text); today's names the ErrorInfo
                // reason EXPIRED_SYNC_TOKEN. The `status` word is unverified.
                expired: Canned::json(
                    410,
                    json!({"error": {
                        "code": 410,
                        "message": "Sync token is expired. Clear local cache and retry call without the sync token.",
                        "status": "FAILED_PRECONDITION",
                        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                     "reason": "EXPIRED_SYNC_TOKEN", "domain": "googleapis.com"}]
                    }}),
                ),
            }),
            ..Protocol::default()
        },
        token: Some(TokenEndpoint {
            path: "/token",
            client: (client.0.to_string(), client.1.to_string()),
            grant: Grant::RefreshToken(refresh_token.to_string()),
            tokens: None,
            access_token: ACCESS.to_string(),
            extra: json!({"scope": "https://www.googleapis.com/auth/contacts.readonly"}),
            // Google's answer to a revoked or expired refresh token (RFC 6749 §5.2).
            refused: Canned::json(
                400,
                json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
            ),
        }),
    }
}
