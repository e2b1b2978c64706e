//! One data-driven harness for service fakes (issue 18): a [`Service`] says what one real
//! API does (its list path, auth check and real 401 body, the parameters it accepts, its
//! paging parameters and end-of-data signal, its update-time filter and sort, where the
//! pieces go in its response, how it writes a record); [`start`] serves it on 127.0.0.1
//! through [`FakeService`], which records every request so that tests assert what
//! Tributary sent, not only what it stored. A parameter the service does not accept is
//! refused with 400, as the real services do for the ones cited.
//!
//! The definitions of the real services live in `tests/common/services/`, each behaviour
//! citing its source (or saying it is unverified); the people they serve are [`Contact`]s
//! that tests change between runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use crate::common::fake::FakeService;

/// Consent and deliverability as the services keep them; each service writes these in
/// its own words (Mailchimp `status`, Shopify `email_marketing_consent.state`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// Opted in.
    Subscribed,
    /// Signed up, confirmation (double opt-in) outstanding.
    Pending,
    /// Never opted in (Shopify `not_subscribed`, Mailchimp `transactional`).
    NotSubscribed,
    /// Opted out.
    Unsubscribed,
    /// Hard bounce (Mailchimp `cleaned`, Shopify `invalid`).
    Bounced,
    /// Removed from the audience without opting out (Mailchimp `archived`).
    Archived,
}

/// A person at a fake service, with the values people commonly segment on.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    /// Id at the service.
    pub id: u64,
    /// Email addresses, the primary one first; empty when the record has none.
    pub emails: Vec<String>,
    /// First name.
    pub first: Option<String>,
    /// Last name.
    pub last: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Organization.
    pub company: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Country (ISO code).
    pub country: Option<String>,
    /// Tags or labels.
    pub tags: Vec<String>,
    /// Owner (a user id at the service).
    pub owner: u64,
    /// Lifecycle stage or equivalent.
    pub stage: Option<String>,
    /// Marketing consent.
    pub consent: Consent,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Last update time.
    pub updated: DateTime<Utc>,
    /// Deleted or archived at the service.
    pub deleted: bool,
}

impl Contact {
    /// The primary email, if any.
    pub fn email(&self) -> Option<&str> {
        self.emails.first().map(String::as_str)
    }

    /// The full name as a service that only keeps one would show it.
    pub fn full_name(&self) -> String {
        [self.first.as_deref(), self.last.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// When fake data starts.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()
}

const FIRST: [&str; 8] = [
    "Ada", "Zoë", "Łukasz", "Søren", "José", "Aiko", "Chloé", "Noah",
];
const LAST: [&str; 8] = [
    "Lovelace",
    "Brontë",
    "Wałęsa",
    "Kierkegaard",
    "Núñez",
    "山田",
    "Dubois",
    "Smith",
];
const CITY: [&str; 4] = ["London", "Kraków", "Zürich", "São Paulo"];
const COUNTRY: [&str; 4] = ["GB", "PL", "CH", "BR"];

/// `n` realistic people, ids 1..=n, updated ten minutes apart in id order (so that a
/// connector's lookback of a minute re-reads only the last one):
/// `person{i}@example.com`, unicode names, a second email on every third, no phone or
/// company on some, no last name on every seventh, consent varied: id 3 unsubscribed,
/// 5 bounced, 7 pending (double opt-in outstanding), 11 never subscribed, 13 archived,
/// the rest subscribed. Tests add missing, invalid and duplicate emails where they
/// need them.
pub fn realistic(n: usize) -> Vec<Contact> {
    (1..=n as u64)
        .map(|i| {
            let k = i as usize;
            let mut emails = vec![format!("person{i}@example.com")];
            if i % 3 == 0 {
                emails.push(format!("p{i}.home@example.org"));
            }
            Contact {
                id: i,
                emails,
                first: Some(FIRST[k % FIRST.len()].to_string()),
                last: (i % 7 != 0).then(|| LAST[k % LAST.len()].to_string()),
                phone: (i % 4 != 0).then(|| format!("+44 20 7946 {:04}", i % 10_000)),
                company: (i % 5 != 0).then(|| format!("Firma {}", i % 6)),
                job_title: (i % 2 == 0).then(|| "Buyer".to_string()),
                city: Some(CITY[k % CITY.len()].to_string()),
                country: Some(COUNTRY[k % COUNTRY.len()].to_string()),
                tags: vec!["customer".into(), format!("t{}", i % 3)],
                owner: 10 + i % 2,
                stage: Some(if i % 2 == 0 { "lead" } else { "customer" }.to_string()),
                consent: match i {
                    3 => Consent::Unsubscribed,
                    5 => Consent::Bounced,
                    7 => Consent::Pending,
                    11 => Consent::NotSubscribed,
                    13 => Consent::Archived,
                    _ => Consent::Subscribed,
                },
                created: epoch() - Duration::days(30) + Duration::seconds(i as i64),
                updated: epoch() + Duration::minutes(10 * i as i64),
                deleted: false,
            }
        })
        .collect()
}

/// The people a fake serves, shared with the test.
#[derive(Clone, Default)]
pub struct People(Arc<Mutex<Vec<Contact>>>);

impl People {
    /// People to serve.
    pub fn new(people: Vec<Contact>) -> People {
        People(Arc::new(Mutex::new(people)))
    }

    /// Changes person `id` as the service would on an edit: its update time moves to an
    /// hour after every other person's (well past any connector's lookback).
    pub fn edit(&self, id: u64, change: impl FnOnce(&mut Contact)) {
        let mut people = self.0.lock().unwrap();
        let latest = people.iter().map(|p| p.updated).max().unwrap_or_else(epoch);
        let person = people
            .iter_mut()
            .find(|p| p.id == id)
            .expect("person exists");
        change(person);
        person.updated = latest + Duration::hours(1);
    }

    /// Changes person `id` and stamps it `at` (a test of time near now, or in the
    /// future, where [`People::edit`]'s "an hour after everyone" does not fit).
    pub fn edit_at(&self, id: u64, at: DateTime<Utc>, change: impl FnOnce(&mut Contact)) {
        let mut people = self.0.lock().unwrap();
        let person = people
            .iter_mut()
            .find(|p| p.id == id)
            .expect("person exists");
        change(person);
        person.updated = at;
    }

    /// Adds a person (one that becomes visible only now).
    pub fn add(&self, person: Contact) {
        self.0.lock().unwrap().push(person);
    }

    /// A copy of everyone.
    pub fn all(&self) -> Vec<Contact> {
        self.0.lock().unwrap().clone()
    }
}

/// How the service checks who calls.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Anyone.
    None,
    /// A header with exactly this value (`x-api-token`, `Authorization: Bearer ...`).
    Header(&'static str, String),
    /// HTTP Basic with any user name and this password (Mailchimp's API key).
    BasicAnyUser(String),
    /// A query parameter with exactly this value.
    Query(&'static str, String),
    /// A header holding `prefix` and the access token the service's token endpoint
    /// issued last (an expired one is refused: see [`Tokens::expire`]).
    Issued(&'static str, &'static str, Tokens),
}

/// The access tokens a service's token endpoint issues: `{prefix}{generation}`. Expiring
/// the current one (as Zoho does after an hour) makes the list endpoint refuse it and the
/// token endpoint issue the next.
#[derive(Debug, Clone)]
pub struct Tokens(Arc<Mutex<(String, u32)>>);

impl Tokens {
    /// Tokens `{prefix}1`, `{prefix}2`, ...
    pub fn new(prefix: &str) -> Tokens {
        Tokens(Arc::new(Mutex::new((prefix.to_string(), 1))))
    }

    /// The token the endpoint issues now and the list endpoint accepts.
    pub fn current(&self) -> String {
        let guard = self.0.lock().unwrap();
        format!("{}{}", guard.0, guard.1)
    }

    /// The current token expires.
    pub fn expire(&self) {
        self.0.lock().unwrap().1 += 1;
    }
}

/// A response the real service gives, with its status, content type and body.
#[derive(Debug, Clone)]
pub struct Canned {
    /// Status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
    /// Other headers (`Retry-After`, a vendor's rate-limit headers).
    pub headers: Vec<(&'static str, String)>,
}

impl Canned {
    /// A JSON response.
    pub fn json(status: u16, body: Value) -> Canned {
        Canned {
            status,
            content_type: "application/json",
            body: body.to_string(),
            headers: Vec::new(),
        }
    }

    /// The same response with one more header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Canned {
        self.headers.push((name, value.into()));
        self
    }

    fn into_response(self) -> Response {
        let mut response = (
            StatusCode::from_u16(self.status).unwrap(),
            [(header::CONTENT_TYPE, self.content_type)],
            self.body,
        )
            .into_response();
        for (name, value) in self.headers {
            response
                .headers_mut()
                .insert(name, value.parse().expect("header value"));
        }
        response
    }
}

/// How the service pages, with its own parameter names.
#[derive(Debug, Clone)]
pub enum Paging {
    /// An opaque cursor in the body, sent back as `cursor`.
    Cursor {
        /// Page size parameter.
        limit: &'static str,
        /// Cursor parameter.
        cursor: &'static str,
    },
    /// `offset` and a count.
    Offset {
        /// Offset parameter.
        offset: &'static str,
        /// Count parameter.
        count: &'static str,
    },
    /// An RFC 5988 `Link: <...>; rel="next"` header whose URL carries an opaque
    /// `page_info` holding the first request's filters; a request with it may add only
    /// `limit` and the fields parameter (Shopify, services.md §8).
    LinkHeader {
        /// Page size parameter.
        limit: &'static str,
        /// The opaque position parameter.
        page_info: &'static str,
    },
    /// A query locator: the body's next URL is `{path}/{locator}`, fetched with no
    /// parameters, the page size read from a header as `batchSize=N` (Salesforce's
    /// `nextRecordsUrl` and `Sforce-Query-Options`, services.md §12).
    QueryLocator {
        /// The header carrying `batchSize=N`.
        size_header: &'static str,
    },
    /// The last record's id sent back (Stripe's `starting_after`); an id the service
    /// does not know is refused.
    StartingAfter {
        /// Page size parameter.
        limit: &'static str,
        /// The parameter naming the last record read.
        after: &'static str,
        /// A record's id as the service writes it.
        id: fn(&Contact) -> String,
    },
    /// Page numbers from 1.
    PageNumber {
        /// Page parameter.
        page: &'static str,
        /// Page size parameter.
        per_page: &'static str,
    },
}

impl Paging {
    fn params(&self) -> Vec<&'static str> {
        match self {
            Paging::Cursor { limit, cursor } => vec![limit, cursor],
            Paging::Offset { offset, count } => vec![offset, count],
            Paging::PageNumber { page, per_page } => vec![page, per_page],
            Paging::LinkHeader { limit, page_info } => vec![limit, page_info],
            Paging::QueryLocator { .. } => Vec::new(),
            Paging::StartingAfter { limit, after, .. } => vec![limit, after],
        }
    }
}

/// Where one page stands, for the service's envelope to write where the real one does.
#[derive(Debug, Clone)]
pub struct PageInfo {
    /// The next page's URL path, when there is one (`Paging::QueryLocator`).
    pub next_url: Option<String>,
    /// The cursor of the next page, when there is one (`Paging::Cursor`).
    pub next_cursor: Option<String>,
    /// Whether more records follow.
    pub has_more: bool,
    /// Records matching the query, over all pages.
    pub total: usize,
    /// Pages over all.
    pub total_pages: usize,
    /// Page number (from 1).
    pub page: usize,
    /// Position of the page's first record in the whole result.
    pub start: usize,
    /// The request's parameters (for a next link that repeats them).
    pub query: Query,
    /// `http://host` the request was sent to (for absolute next links).
    pub origin: String,
    /// Page size used.
    pub limit: usize,
}

/// The update-time filter.
#[derive(Debug, Clone)]
pub struct Since {
    /// The parameter.
    pub param: &'static str,
    /// Reads its value as the service does; `None` is a 400.
    pub parse: fn(&str) -> Option<DateTime<Utc>>,
    /// `>=` (true) or `>` (false).
    pub inclusive: bool,
}

/// A server-side filter: the parameter and whether a person matches its value.
pub type Filter = (&'static str, fn(&Contact, &str) -> bool);

/// One real service, as data.
#[derive(Clone)]
pub struct Service {
    /// Name, for messages.
    pub name: &'static str,
    /// The list endpoint's path.
    pub path: String,
    /// The auth check.
    pub auth: Auth,
    /// The service's answer to a missing or wrong credential.
    pub denied: Canned,
    /// Parameters the service accepts besides paging, `since` and filters (others: 400).
    pub params: Vec<&'static str>,
    /// The service's answer to a parameter it does not accept (given its name).
    pub bad_param: fn(&str) -> Canned,
    /// Paging.
    pub paging: Paging,
    /// Page size when none is asked for, and the largest accepted (larger: clamped).
    pub page_size: (usize, usize),
    /// The update-time filter, if the service has one.
    pub since: Option<Since>,
    /// An update-time filter inside another parameter (SOQL's `WHERE ... > ...`): the
    /// time and whether it is inclusive, or the service's complaint.
    pub query_since: Option<QuerySince>,
    /// Server-side filters.
    pub filters: Vec<Filter>,
    /// The sort key of a record, given the request's query (a service's `sort_by`).
    pub order: fn(&Contact, &Query) -> (i64, i64),
    /// Whether deleted people are listed (with their deleted marker) or left out.
    pub lists_deleted: bool,
    /// One record as the service writes it, given the request's query (Google returns
    /// only the `personFields` asked for).
    pub record: fn(&Contact, &Query) -> Value,
    /// The page body around the records.
    pub body: fn(Vec<Value>, &PageInfo) -> Value,
    /// A parameter naming the only fields to return, comma-separated dot paths
    /// (Mailchimp's `fields`): what a connector does not ask for, it does not get.
    pub fields_param: Option<&'static str>,
    /// Parameters without which the service answers 400 (Google's `personFields`).
    pub required: Vec<&'static str>,
    /// A next-page cursor only valid with the same other parameters as the first call
    /// (Google: "all other parameters must match the first call"): the fake binds them
    /// into the cursor and refuses a cursor sent with different ones.
    pub cursor_binds_params: bool,
    /// The OAuth2 token endpoint, for services whose list takes an access token.
    pub token: Option<TokenEndpoint>,
    /// Where the service departs from a plain `GET` with query parameters.
    pub protocol: Protocol,
}

/// Reads a POST body's JSON as the flat parameters the rest of the harness checks
/// (`limit`, `after`, an update-time bound), or names what the service refuses in it.
pub type BodyParams = fn(&Value) -> Result<Query, String>;

/// Where a service departs from a plain `GET` with query parameters; all optional.
#[derive(Clone, Default)]
pub struct Protocol {
    /// The list request is a `POST` whose JSON body carries the parameters (HubSpot
    /// search, Zoho COQL, Intercom search); the function reads and checks the body.
    pub body_params: Option<BodyParams>,
    /// Request headers read as parameters: `(header, parameter)` (Zoho's
    /// `If-Modified-Since`).
    pub header_params: Vec<(&'static str, &'static str)>,
    /// The status the service answers, with no body, instead of a page without records
    /// (BigCommerce v2's 204; Zoho's 304 when nothing changed since `If-Modified-Since`),
    /// given the request's parameters.
    pub empty: Option<fn(&Query) -> u16>,
    /// The service's rate limit, as the fake enforces it.
    pub throttle: Option<Throttle>,
    /// Totals in response headers (WooCommerce's `X-WP-Total`, `X-WP-TotalPages`).
    pub total_headers: Option<(&'static str, &'static str)>,
    /// Parameters derived from the query itself, merged into it (a query language's
    /// conditions the service's filters then apply: SOQL's `IsConverted = false`).
    pub derived: Option<fn(&Query) -> Query>,
    /// The most results one query can page through (HubSpot search: 10,000); a page
    /// starting at or past it is refused as a bad parameter named `after`.
    pub max_results: Option<usize>,
    /// Change tokens (Google People's sync tokens).
    pub sync_tokens: Option<SyncTokens>,
    /// The parameter that, sent as `true`, lists the archived (deleted) people instead
    /// of the live ones (HubSpot's `archived=true`).
    pub archived: Option<&'static str>,
    /// A list of the deleted people at a path of its own (Zoho's `/Contacts/deleted`).
    pub deleted_list: Option<DeletedList>,
}

/// A deletions endpoint: `GET path` lists the deleted people (deleted at their update
/// time), from the service's update-time filter on (its `since`, inclusive), paged as
/// `paging` says, and answers `empty_status` with no body when none is left. Other
/// parameters than `params`, `required`, the paging ones and the filter are refused as
/// on the list.
#[derive(Clone)]
pub struct DeletedList {
    /// Path.
    pub path: &'static str,
    /// Parameters accepted besides the paging ones and the update-time filter.
    pub params: Vec<&'static str>,
    /// Parameters that must be sent with exactly this value (Stripe's events list returns
    /// every kind of event without `type=customer.deleted`).
    pub required: Vec<(&'static str, &'static str)>,
    /// How its pages go.
    pub paging: DeletedPaging,
    /// One deleted person as the endpoint writes it.
    pub record: fn(&Contact) -> Value,
    /// The page around the records: records, page number, page size, more to come.
    pub body: fn(Vec<Value>, usize, usize, bool) -> Value,
    /// The status with no body when there is nothing to list (`None`: an empty page).
    pub empty_status: Option<u16>,
}

/// How a [`DeletedList`] pages.
#[derive(Clone)]
pub enum DeletedPaging {
    /// By id, `page` from 1 and `per_page` (Zoho).
    PageNumber,
    /// Newest deletion first, `limit`, and `starting_after` = the last record's id as
    /// `id` writes it (Stripe's events).
    StartingAfter {
        /// A deleted person's record id.
        id: fn(&Contact) -> String,
    },
}

/// Serves a [`DeletedList`] request (authorized, rate-limited, parameters read).
fn deleted_page(service: &Service, list: &DeletedList, people: &People, query: &Query) -> Response {
    let since_param = service.since.as_ref().map(|s| s.param);
    let paging: &[&str] = match list.paging {
        DeletedPaging::PageNumber => &["page", "per_page"],
        DeletedPaging::StartingAfter { .. } => &["limit", "starting_after"],
    };
    if let Some(unknown) = query.keys().find(|k| {
        !(list.params.contains(&k.as_str())
            || list.required.iter().any(|(name, _)| name == k)
            || paging.contains(&k.as_str())
            || Some(k.as_str()) == since_param)
    }) {
        return (service.bad_param)(unknown).into_response();
    }
    if let Some((name, _)) = list
        .required
        .iter()
        .find(|(name, value)| query.get(*name).map(String::as_str) != Some(*value))
    {
        return (service.bad_param)(name).into_response();
    }
    let since = match (
        service.since.as_ref(),
        since_param.and_then(|p| query.get(p)),
    ) {
        (Some(s), Some(text)) => match (s.parse)(text) {
            Some(t) => Some(t),
            None => return (service.bad_param)(s.param).into_response(),
        },
        _ => None,
    };
    let number = |name: &str, default: usize| match query.get(name) {
        None => Some(default),
        Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1),
    };
    let mut deleted: Vec<Contact> = people
        .all()
        .into_iter()
        .filter(|p| p.deleted && since.is_none_or(|t| p.updated >= t))
        .collect();
    let (page, per_page, start) = match list.paging {
        DeletedPaging::PageNumber => {
            deleted.sort_by_key(|p| p.id);
            let (Some(page), Some(per_page)) =
                (number("page", 1), number("per_page", service.page_size.0))
            else {
                return (service.bad_param)("page").into_response();
            };
            let per_page = per_page.min(service.page_size.1);
            (page, per_page, (page - 1) * per_page)
        }
        DeletedPaging::StartingAfter { id } => {
            deleted.sort_by_key(|p| (std::cmp::Reverse(p.updated), std::cmp::Reverse(p.id)));
            let Some(limit) = number("limit", service.page_size.0) else {
                return (service.bad_param)("limit").into_response();
            };
            let limit = limit.min(service.page_size.1);
            let start = match query.get("starting_after") {
                None => 0,
                Some(last) => match deleted.iter().position(|c| id(c) == *last) {
                    Some(i) => i + 1,
                    None => return (service.bad_param)("starting_after").into_response(),
                },
            };
            (start / limit + 1, limit, start)
        }
    };
    let records: Vec<Value> = deleted
        .iter()
        .skip(start)
        .take(per_page)
        .map(list.record)
        .collect();
    if records.is_empty()
        && let Some(status) = list.empty_status
    {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let more = start + per_page < deleted.len();
    axum::Json((list.body)(records, page, per_page, more)).into_response()
}

/// Change tokens as Google People hands them out: a listing asked with `request`
/// (`requestSyncToken=true`) carries `next` (`nextSyncToken`) on its last page; a
/// listing sent with `token` (`syncToken`) returns only the people changed since that
/// token was issued, deleted ones included as `deleted` writes them
/// (`metadata.deleted: true`). A token expires `lifetime` after the full listing its
/// chain started from ("Sync tokens expire 7 days after the full sync"); the fake's
/// clock is the newest update time it holds (people are stamped in fake time). An
/// expired or unreadable token is answered with `expired`.
#[derive(Clone)]
pub struct SyncTokens {
    /// The parameter asking for a token on the last page.
    pub request: &'static str,
    /// The parameter sending one.
    pub token: &'static str,
    /// The body member carrying the next token.
    pub next: &'static str,
    /// How long after its full listing a token works.
    pub lifetime: Duration,
    /// A deleted person as a token's listing writes it.
    pub deleted: fn(&Contact) -> Value,
    /// The answer to an expired token.
    pub expired: Canned,
    /// The next token as the body carries it, given the token and the page: the token
    /// itself (Google's `nextSyncToken`), or a URL holding it (Graph's
    /// `@odata.deltaLink`).
    pub write: fn(&str, &PageInfo) -> Value,
}

/// A sync token: when it was issued, and when the full listing its chain started from
/// was (both the fake's clock, as milliseconds).
fn encode_sync_token(issued: DateTime<Utc>, full: DateTime<Utc>) -> String {
    format!("s{}.{}", issued.timestamp_millis(), full.timestamp_millis())
}

fn decode_sync_token(token: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (issued, full) = token.strip_prefix('s')?.split_once('.')?;
    let at = |t: &str| Utc.timestamp_millis_opt(t.parse().ok()?).single();
    Some((at(issued)?, at(full)?))
}

/// A rate limit: every `every`-th list request is refused with `refusal` (a 429 with
/// `Retry-After`, or the service's own words); the others carry the headers `headers`
/// writes from the requests left in the window.
#[derive(Clone)]
pub struct Throttle {
    /// Requests per window; the next is refused.
    pub every: usize,
    /// The refusal.
    pub refusal: Canned,
    /// Headers on answered requests, given how many are left in the window.
    pub headers: fn(usize) -> Vec<(&'static str, String)>,
}

/// Reads an update-time filter from a query language (see `Service::query_since`).
pub type QuerySince = fn(&Query) -> Result<Option<(DateTime<Utc>, bool)>, String>;

/// The request's query, one value per name.
pub type Query = BTreeMap<String, String>;

/// How a token endpoint grants tokens.
#[derive(Debug, Clone)]
pub enum Grant {
    /// `refresh_token` (RFC 6749 §6), form body, this refresh token.
    RefreshToken(String),
    /// `refresh_token` where every refresh answers a new refresh token and retires the
    /// one used (Keap: "securing tokens by requiring rotation"): only the current one
    /// of these generations is accepted.
    RotatingRefreshToken(Tokens),
    /// `client_credentials` (RFC 6749 §4.4), form body, the client's own id and secret.
    ClientCredentials,
    /// `password` with a JSON body (SugarCRM's login: `username`, `password`, `platform`,
    /// `client_id`, `client_secret`, the last possibly empty).
    PasswordJson {
        /// User name.
        username: String,
        /// Password.
        password: String,
        /// The API platform the body must name.
        platform: String,
    },
}

/// An OAuth2 token endpoint.
#[derive(Debug, Clone)]
pub struct TokenEndpoint {
    /// Its path.
    pub path: &'static str,
    /// Client id and secret expected in the form body.
    pub client: (String, String),
    /// The grant it answers.
    pub grant: Grant,
    /// The access token it hands out (the list endpoint's `Auth` expects it), unless
    /// `tokens` issues them.
    pub access_token: String,
    /// Tokens issued in generations, for a service whose tokens expire.
    pub tokens: Option<Tokens>,
    /// Other members of the token response (Salesforce's `instance_url`, ...).
    pub extra: Value,
    /// The answer to a wrong refresh token or client (RFC 6749 §5.2: 400 `invalid_grant`
    /// or 401 `invalid_client`, in the service's words).
    pub refused: Canned,
}

/// By update time, then id (most services' `sort=updated` / `sort_by=update_time`),
/// whatever the request asks.
pub fn by_update(c: &Contact, _query: &Query) -> (i64, i64) {
    (c.updated.timestamp_millis(), c.id as i64)
}

/// RFC 3339 with seconds, `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// RFC 3339 as services accept it (`Z` or an offset).
pub fn parse_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

struct Fake {
    service: Service,
    people: People,
    /// List requests received, for the throttle.
    served: std::sync::atomic::AtomicUsize,
}

/// Serves `service` over `people` on a free loopback port.
pub async fn start(service: Service, people: &People) -> FakeService {
    let state = Arc::new(Fake {
        service,
        people: people.clone(),
        served: Default::default(),
    });
    FakeService::start(Router::new().fallback(serve).with_state(state)).await
}

/// Serves the service `build` makes from the fake's own base URL (for a token response
/// naming the host, as Salesforce's `instance_url`).
pub async fn start_with(build: impl FnOnce(&str) -> Service, people: &People) -> FakeService {
    let people = people.clone();
    FakeService::start_with(move |base| {
        let state = Arc::new(Fake {
            service: build(&base),
            people,
            served: Default::default(),
        });
        Router::new().fallback(serve).with_state(state)
    })
    .await
}

fn authorized(auth: &Auth, headers: &HeaderMap, query: &BTreeMap<String, String>) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match auth {
        Auth::None => true,
        Auth::Header(name, value) => header(name) == Some(value.as_str()),
        Auth::Query(name, value) => query.get(*name) == Some(value),
        Auth::BasicAnyUser(password) => {
            use base64::Engine as _;
            header("authorization")
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|pair| pair.split_once(':').map(|(_, p)| p.to_string()))
                .as_deref()
                == Some(password.as_str())
        }
        Auth::Issued(name, prefix, tokens) => {
            header(name) == Some(format!("{prefix}{}", tokens.current()).as_str())
        }
    }
}

async fn serve(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let service = &fake.service;
    if let Some(token) = &service.token
        && method == Method::POST
        && uri.path() == token.path
    {
        return grant(token, &headers, &body);
    }
    let locator = match &service.paging {
        Paging::QueryLocator { .. } => uri
            .path()
            .strip_prefix(service.path.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_string),
        _ => None,
    };
    let list_method = match service.protocol.body_params {
        Some(_) => Method::POST,
        None => Method::GET,
    };
    let deleted_list = service
        .protocol
        .deleted_list
        .as_ref()
        .filter(|d| method == Method::GET && uri.path() == d.path);
    if deleted_list.is_none()
        && (method != list_method || (uri.path() != service.path && locator.is_none()))
    {
        return Canned::json(404, json!({"error": "not found"})).into_response();
    }
    let mut pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if let Some(read) = service.protocol.body_params {
        // A JSON body, or a form read as an object of strings.
        let parsed = serde_json::from_slice::<Value>(&body).or_else(|_| {
            let form = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
            if form {
                Ok(Value::Object(
                    url::form_urlencoded::parse(&body)
                        .into_owned()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                ))
            } else {
                Err("body".to_string())
            }
        });
        match parsed.and_then(|b| read(&b)) {
            Ok(found) => pairs.extend(found),
            Err(complaint) => return (service.bad_param)(&complaint).into_response(),
        }
    }
    for (header, name) in &service.protocol.header_params {
        if let Some(value) = headers.get(*header).and_then(|v| v.to_str().ok()) {
            pairs.push((name.to_string(), value.to_string()));
        }
    }
    let mut query = BTreeMap::new();
    for (name, value) in pairs {
        if query.insert(name.clone(), value).is_some() {
            // Repeated parameters: none of the faked list endpoints takes one twice.
            return (service.bad_param)(&name).into_response();
        }
    }
    if !authorized(&service.auth, &headers, &query) {
        return service.denied.clone().into_response();
    }
    // Authorized list requests count against the rate limit.
    let served = fake
        .served
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        + 1;
    let mut extra_headers = Vec::new();
    if let Some(throttle) = &service.protocol.throttle {
        if served.is_multiple_of(throttle.every) {
            return throttle.refusal.clone().into_response();
        }
        extra_headers = (throttle.headers)(throttle.every - served % throttle.every);
    }
    if let Some(list) = deleted_list {
        return deleted_page(service, list, &fake.people, &query);
    }
    // A query locator stands for the whole first request: nothing may come with it.
    let mut locator_at = None;
    if let Some(locator) = &locator {
        if let Some(other) = query.keys().next() {
            return (service.bad_param)(other).into_response();
        }
        let Some((start, first)) = decode_page_info(locator) else {
            return (service.bad_param)("locator").into_response();
        };
        locator_at = Some(start);
        query.extend(first);
    }
    // A `page_info` stands for the first request's filters and position: nothing but the
    // page size and the field selection may come with it.
    let mut link_start = 0;
    if let Paging::LinkHeader { limit, page_info } = &service.paging
        && let Some(token) = query.get(*page_info).cloned()
    {
        if let Some(other) = query
            .keys()
            .find(|k| *k != limit && *k != page_info && Some(k.as_str()) != service.fields_param)
        {
            return (service.bad_param)(other).into_response();
        }
        let Some((start, first)) = decode_page_info(&token) else {
            return (service.bad_param)(page_info).into_response();
        };
        link_start = start;
        for (k, v) in first {
            query.entry(k).or_insert(v);
        }
    }
    if let Some(derive) = service.protocol.derived {
        let extra = derive(&query);
        query.extend(extra);
    }
    let auth_param = match &service.auth {
        Auth::Query(name, _) => Some(*name),
        _ => None,
    };
    let known = |name: &str| {
        service.params.contains(&name)
            || service.paging.params().contains(&name)
            || service.since.as_ref().is_some_and(|s| s.param == name)
            || service.filters.iter().any(|(f, _)| *f == name)
            || auth_param == Some(name)
            || service.fields_param == Some(name)
            // The page size a query locator carries (see `Paging::QueryLocator`).
            || name == "__batch"
    };
    if let Some(unknown) = query.keys().find(|k| !known(k)) {
        return (service.bad_param)(unknown).into_response();
    }
    if let Some(missing) = service.required.iter().find(|r| !query.contains_key(**r)) {
        return (service.bad_param)(missing).into_response();
    }
    let cursor_param = match &service.paging {
        Paging::Cursor { cursor, .. } => Some(*cursor),
        _ => None,
    };
    // What a bound cursor carries: every other parameter, as sent.
    let binding = {
        let rest: Vec<String> = query
            .iter()
            .filter(|(k, _)| Some(k.as_str()) != cursor_param)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{:x}", fxhash(&rest.join("&")))
    };
    let since = match (&service.query_since, &service.since) {
        (Some(read), _) => match read(&query) {
            Ok(found) => found,
            Err(complaint) => return (service.bad_param)(&complaint).into_response(),
        },
        (None, Some(s)) => match query.get(s.param) {
            Some(text) => match (s.parse)(text) {
                Some(t) => Some((t, s.inclusive)),
                None => return (service.bad_param)(s.param).into_response(),
            },
            None => None,
        },
        (None, None) => None,
    };
    // A sync token: only what changed since it, deleted people included.
    let people_now = fake.people.all();
    let clock = people_now
        .iter()
        .map(|p| p.updated)
        .max()
        .unwrap_or_else(epoch);
    let mut sync_from: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    if let Some(tokens) = &service.protocol.sync_tokens
        && let Some(token) = query.get(tokens.token).filter(|t| !t.is_empty())
    {
        match decode_sync_token(token) {
            Some((issued, full)) if clock - full <= tokens.lifetime => {
                sync_from = Some((issued, full));
            }
            _ => return tokens.expired.clone().into_response(),
        }
    }
    let archived_only = service
        .protocol
        .archived
        .is_some_and(|p| query.get(p).map(String::as_str) == Some("true"));
    let (default, max) = service.page_size;
    let size_param = match &service.paging {
        Paging::Cursor { limit, .. } => *limit,
        Paging::Offset { count, .. } => *count,
        Paging::PageNumber { per_page, .. } => *per_page,
        Paging::LinkHeader { limit, .. } => *limit,
        Paging::StartingAfter { limit, .. } => *limit,
        // The size travels in a header on the first request, then in the locator.
        Paging::QueryLocator { .. } => "__batch",
    };
    if let Paging::QueryLocator { size_header } = &service.paging
        && locator.is_none()
        && let Some(size) = headers
            .get(*size_header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("batchSize="))
    {
        // "200-2000, not guaranteed": smaller asks get 200.
        let size = size.parse::<usize>().map_or(2000, |n| n.clamp(200, 2000));
        query.insert("__batch".into(), size.to_string());
    }
    let number = |name: &str| query.get(name).map(|v| v.parse::<usize>());
    let limit = match number(size_param) {
        None => default,
        Some(Ok(n)) if n > 0 => n.min(max),
        Some(_) => return (service.bad_param)(size_param).into_response(),
    };
    let mut list: Vec<Contact> = people_now
        .into_iter()
        .filter(|p| match archived_only {
            true => p.deleted,
            false => service.lists_deleted || !p.deleted || sync_from.is_some(),
        })
        .filter(|p| sync_from.is_none_or(|(issued, _)| p.updated > issued))
        .filter(|p| match since {
            Some((t, true)) => p.updated >= t,
            Some((t, false)) => p.updated > t,
            None => true,
        })
        .filter(|p| {
            service
                .filters
                .iter()
                .all(|(name, matches)| query.get(*name).is_none_or(|v| matches(p, v)))
        })
        .collect();
    list.sort_by_key(|c| (service.order)(c, &query));
    let start = match &service.paging {
        Paging::Cursor { cursor, .. } => match query.get(*cursor) {
            None => 0,
            Some(c) => {
                let (position, bound) = match c.split_once('.') {
                    Some((p, b)) => (p, Some(b)),
                    None => (c.as_str(), None),
                };
                if service.cursor_binds_params && bound != Some(binding.as_str()) {
                    return (service.bad_param)(cursor).into_response();
                }
                match position.strip_prefix("c").and_then(|n| n.parse().ok()) {
                    Some(n) => n,
                    None => return (service.bad_param)(cursor).into_response(),
                }
            }
        },
        Paging::Offset { offset, .. } => match number(offset) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return (service.bad_param)(offset).into_response(),
        },
        Paging::LinkHeader { .. } => link_start,
        Paging::QueryLocator { .. } => locator_at.unwrap_or(0),
        Paging::StartingAfter { after, id, .. } => match query.get(*after) {
            None => 0,
            Some(last) => match list.iter().position(|c| id(c) == *last) {
                Some(i) => i + 1,
                None => return (service.bad_param)(after).into_response(),
            },
        },
        Paging::PageNumber { page, .. } => match number(page) {
            None => 0,
            Some(Ok(n)) if n >= 1 => (n - 1) * limit,
            Some(_) => return (service.bad_param)(page).into_response(),
        },
    };
    if let Some(max) = service.protocol.max_results
        && start >= max
    {
        return (service.bad_param)("after").into_response();
    }
    let total = list.len();
    let records: Vec<Value> = list
        .iter()
        .skip(start)
        .take(limit)
        .map(|c| match &service.protocol.sync_tokens {
            Some(tokens) if c.deleted && sync_from.is_some() => (tokens.deleted)(c),
            _ => (service.record)(c, &query),
        })
        .collect();
    let has_more = start + limit < total;
    let records_empty = records.is_empty();
    let next_url = match &service.paging {
        Paging::QueryLocator { .. } if has_more => {
            let first: Vec<(String, String)> =
                query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Some(format!(
                "{}/{}",
                service.path,
                encode_page_info(start + limit, &first)
            ))
        }
        _ => None,
    };
    let info = PageInfo {
        next_url,
        next_cursor: has_more.then(|| {
            if service.cursor_binds_params {
                format!("c{}.{binding}", start + limit)
            } else {
                format!("c{}", start + limit)
            }
        }),
        has_more,
        total,
        total_pages: total.div_ceil(limit),
        page: start / limit + 1,
        start,
        query: query.clone(),
        origin: format!(
            "http://{}",
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1")
        ),
        limit,
    };
    let (info_total, info_pages) = (info.total, info.total_pages);
    let mut body = (service.body)(records, &info);
    if let Some(tokens) = &service.protocol.sync_tokens
        && !has_more
        && query.get(tokens.request).map(String::as_str) == Some("true")
    {
        // The last page: a token for what changes after now, in the same chain.
        let full = sync_from.map_or(clock, |(_, full)| full);
        body[tokens.next] = (tokens.write)(&encode_sync_token(clock, full), &info);
    }
    if let Some(param) = service.fields_param
        && let Some(wanted) = query.get(param)
    {
        let paths: Vec<Vec<&str>> = wanted
            .split(',')
            .map(|p| p.trim().split('.').collect())
            .collect();
        body = select(&body, &paths);
    }
    if records_empty && let Some(status) = service.protocol.empty {
        let mut response = StatusCode::from_u16(status(&query))
            .unwrap()
            .into_response();
        for (name, value) in extra_headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    let mut response = axum::Json(body).into_response();
    for (name, value) in extra_headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    if let Some((total, pages)) = service.protocol.total_headers {
        let h = response.headers_mut();
        h.insert(total, info_total.to_string().parse().unwrap());
        h.insert(pages, info_pages.to_string().parse().unwrap());
    }
    if let Paging::LinkHeader {
        limit: size,
        page_info,
    } = &service.paging
        && has_more
    {
        let first: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| {
                k != size && k != page_info && Some(k.as_str()) != service.fields_param
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let link = format!(
            "<http://{host}{}?{size}={limit}&{page_info}={}>; rel=\"next\"",
            service.path,
            encode_page_info(start + limit, &first)
        );
        response
            .headers_mut()
            .insert(header::LINK, link.parse().unwrap());
    }
    response
}

/// `page_info`: the next position and the first request's filters, base64url, opaque to
/// the client as Shopify's is.
fn encode_page_info(start: usize, first: &[(String, String)]) -> String {
    use base64::Engine as _;
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(first)
        .finish();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{start}|{query}"))
}

fn decode_page_info(token: &str) -> Option<(usize, Vec<(String, String)>)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (start, query) = text.split_once('|')?;
    let pairs = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    Some((start.parse().ok()?, pairs))
}

/// FNV-1a: a stable digest of the parameters a bound cursor carries.
fn fxhash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The token endpoint: the grant's form (or JSON) must carry the grant type, what the
/// grant needs and the client's id and secret, in the body or as HTTP Basic (RFC 6749
/// §2.3.1: both ways of client authentication; tests assert which one was sent).
fn grant(token: &TokenEndpoint, headers: &HeaderMap, body: &[u8]) -> Response {
    let json: Option<BTreeMap<String, Value>> = serde_json::from_slice(body).ok();
    let is_json = json.is_some();
    let form: BTreeMap<String, String> = match json {
        Some(map) => map
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect(),
        None => url::form_urlencoded::parse(body).into_owned().collect(),
    };
    let field = |name: &str| form.get(name).map(String::as_str);
    let granted = match &token.grant {
        Grant::RefreshToken(refresh) => {
            field("grant_type") == Some("refresh_token")
                && field("refresh_token") == Some(refresh.as_str())
        }
        Grant::RotatingRefreshToken(refresh) => {
            field("grant_type") == Some("refresh_token")
                && field("refresh_token") == Some(refresh.current().as_str())
        }
        Grant::ClientCredentials => field("grant_type") == Some("client_credentials"),
        Grant::PasswordJson {
            username,
            password,
            platform,
        } => {
            is_json
                && field("grant_type") == Some("password")
                && field("username") == Some(username.as_str())
                && field("password") == Some(password.as_str())
                && field("platform") == Some(platform.as_str())
        }
    };
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let client_in_body = field("client_id") == Some(token.client.0.as_str())
        && field("client_secret") == Some(token.client.1.as_str());
    let client_in_basic =
        basic.as_deref() == Some(format!("{}:{}", token.client.0, token.client.1).as_str());
    if !granted || !(client_in_body || client_in_basic) {
        return token.refused.clone().into_response();
    }
    let access = match &token.tokens {
        Some(tokens) => tokens.current(),
        None => token.access_token.clone(),
    };
    let mut answer = json!({
        "access_token": access,
        "expires_in": 3599,
        "token_type": "Bearer",
    });
    if let (Some(answer), Some(extra)) = (answer.as_object_mut(), token.extra.as_object()) {
        answer.extend(extra.clone());
    }
    if let Grant::RotatingRefreshToken(refresh) = &token.grant {
        // The one used is retired; the answer carries its successor.
        refresh.expire();
        answer["refresh_token"] = Value::String(refresh.current());
    }
    axum::Json(answer).into_response()
}

/// Keeps only the dot paths `paths` of `value`, through arrays (`members.id` keeps the
/// `id` of every member).
fn select(value: &Value, paths: &[Vec<&str>]) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|v| select(v, paths)).collect()),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (key, inner) in map {
                let below: Vec<Vec<&str>> = paths
                    .iter()
                    .filter(|p| p.first() == Some(&key.as_str()))
                    .map(|p| p[1..].to_vec())
                    .collect();
                if below.is_empty() {
                    continue;
                }
                if below.iter().any(Vec::is_empty) {
                    out.insert(key.clone(), inner.clone());
                } else {
                    out.insert(key.clone(), select(inner, &below));
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}
