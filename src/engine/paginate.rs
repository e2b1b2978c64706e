//! The pagination state machine: given the connector's style and what the last page
//! said, decide whether the pass goes on and what the next request carries.
//!
//! Owns the pass position (what `model::Checkpoint::position` holds), the stop rules and
//! the loop guards. Never sends a request, never reads records: the run hands it what a
//! page said (status, body, `Link` header, record count, the last record's keyset) and
//! asks for the template variables or the URL of the next request.
//!
//! Rules, in order: a 204/304 or empty body ends the pass; any stop rule that fires ends
//! it (a stop rule wins over a has-more flag that still says true); `max_pages` ends it
//! with a warning; a style with no next token or URL ends it; a token or URL seen before
//! in this run fails the run (the service is looping, and finishing the pass would move
//! the watermark past records never read).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::engine::redact::SecretSet;
use crate::plan::{PageCommon, Pagination, TimeFormat};

pub use crate::plan::StopRule;

/// Where a pass stands: what the next request carries and what the pass has read so far.
/// Saved (as JSON) with every page; a next URL is kept with its secrets replaced by
/// placeholders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PassPosition {
    /// Pages read in this pass.
    pub pages: u64,
    /// Records read in this pass.
    pub records: u64,
    /// Records read since the query last (re)started (`max_results_per_query`).
    #[serde(default)]
    pub query_records: u64,
    /// Next page number (page-number style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
    /// Next offset (offset style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Next cursor (cursor style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Next URL to follow (next-URL and `Link` styles), secrets as placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Keyset of the last record read (keyset style, and query restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyset: Option<Keyset>,
    /// The update time the current query asks from (`since`; `None`: everything). Kept
    /// here, not derived from the watermark, because the watermark may advance while a
    /// pass goes on and a resumed cursor only works with the query it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Queries this pass started by update time (safe paging).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requeries: u64,
    /// Tie-breakers of the records read at exactly `since` before the query re-started
    /// from it: read already, they are dropped when the new query returns them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boundary: Vec<Value>,
    /// The change token this pass sends (`sync.mode: change_token`; `None`: a full pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_token: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How `since` is written for the service, and whether a pass re-queries by it.
#[derive(Debug, Clone)]
pub struct SinceQuery<'a> {
    /// `sync.since_format`.
    pub format: &'a TimeFormat,
    /// `sync.since_inclusive`: with `false`, the value sent is a second (a day, for dates)
    /// earlier, so that records updated exactly at the boundary are not lost.
    pub inclusive: bool,
    /// Safe paging: after each page, the next query starts from the page's newest update
    /// time instead of moving an offset, page number or URL that shifts when a record
    /// changes mid-pass (the service sorts by update time, oldest first).
    pub requery: bool,
}

impl SinceQuery<'_> {
    /// `since` as the service receives it (null: omitted).
    pub fn render(&self, since: Option<DateTime<Utc>>) -> Value {
        let Some(since) = since else {
            return Value::Null;
        };
        let since = if self.inclusive {
            since
        } else {
            let step = match self.format {
                TimeFormat::Date => chrono::Duration::days(1),
                _ => chrono::Duration::seconds(1),
            };
            since.checked_sub_signed(step).unwrap_or(since)
        };
        self.format.format(
            since,
            chrono::FixedOffset::east_opt(0).expect("zero offset"),
        )
    }
}

/// The update time and id of a record, as the service wrote them, for re-querying from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Keyset {
    /// The record's update time, raw.
    pub updated: Value,
    /// The record's id, raw.
    pub id: Value,
}

/// What one page said, as far as pagination cares.
#[derive(Debug)]
pub struct PageSeen<'a> {
    /// HTTP status.
    pub status: u16,
    /// Parsed body; `None` for an empty body (a 204/304 end).
    pub body: Option<&'a Value>,
    /// `Link` header values, if any.
    pub link: Option<&'a str>,
    /// The URL the page was requested from (relative next URLs resolve against it).
    pub url: &'a str,
    /// Records on the page.
    pub records: usize,
    /// Keyset of the page's last record.
    pub last_keyset: Option<Keyset>,
    /// The newest update time on the page that is not in the future (safe paging
    /// re-queries from it).
    pub newest: Option<DateTime<Utc>>,
    /// Tie-breakers of the page's records updated exactly at `newest`.
    pub at_newest: Vec<Value>,
}

/// Why a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassEnd {
    /// The style has one page only.
    SinglePage,
    /// The service answered 204/304 or an empty body.
    EmptyBody,
    /// A stop rule fired.
    Rule(StopRule),
    /// No next token or URL, and no stop rule said so.
    NoNext,
    /// The page holds no records (page-number, offset and keyset styles cannot go on).
    EmptyPage,
    /// `max_pages` reached.
    MaxPages,
}

/// What to do after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fetch the next page.
    Continue,
    /// The pass is complete.
    Done(PassEnd),
}

/// Pagination that cannot go on safely.
#[derive(Debug, thiserror::Error)]
pub enum PaginateError {
    /// The service sent a token or URL already followed in this run.
    #[error("pagination loop: the service sent the same {what} twice (`{value}`)")]
    Loop {
        /// `cursor`, `next URL`, `keyset`, `offset`.
        what: &'static str,
        /// The repeated value, secrets masked.
        value: String,
    },
    /// A next URL that is not a URL.
    #[error("next URL `{0}` is not a valid URL")]
    BadUrl(String),
}

/// The state machine of one pass.
#[derive(Debug)]
pub struct Paginator<'a> {
    style: &'a Pagination,
    page_size: u32,
    max_results_per_query: Option<u64>,
    pos: PassPosition,
    /// Tokens and URLs seen in the current query (a restarted query numbers its cursors
    /// afresh, so this is cleared on restart).
    seen: HashSet<blake3::Hash>,
    /// Keysets a query started from, over the whole pass.
    seen_keysets: HashSet<blake3::Hash>,
    /// How `since` is written; `None` for a connector that never sends one.
    since: Option<SinceQuery<'a>>,
    /// The connector sends a change token (`{{change_token}}`).
    token_mode: bool,
    /// A restart dropped the pass's change token: the pass became a full one.
    token_dropped: bool,
}

impl<'a> Paginator<'a> {
    /// Starts a pass asking from `since`, or resumes one from a saved position (a
    /// position saved before positions kept their `since` asks from `since`).
    pub fn new(
        style: &'a Pagination,
        page_size: u32,
        max_results_per_query: Option<u64>,
        resume: Option<PassPosition>,
        since: Option<SinceQuery<'a>>,
        pass_since: Option<DateTime<Utc>>,
    ) -> Self {
        let mut pos = resume.unwrap_or_else(|| PassPosition {
            page: match style {
                Pagination::PageNumber { start, .. } => Some(*start),
                _ => None,
            },
            offset: match style {
                Pagination::Offset { start, .. } => Some(*start),
                _ => None,
            },
            ..PassPosition::default()
        });
        if pos.since.is_none() {
            pos.since = pass_since;
        }
        Self {
            style,
            page_size,
            max_results_per_query,
            pos,
            seen: HashSet::new(),
            seen_keysets: HashSet::new(),
            since,
            token_mode: false,
            token_dropped: false,
        }
    }

    /// A pass of a change-token connector: a new pass sends `token` (`None`: a full
    /// pass); a resumed one the token saved in its position.
    pub fn with_change_token(mut self, token: Option<String>) -> Self {
        self.token_mode = true;
        if token.is_some() {
            self.pos.change_token = token;
        }
        self
    }

    /// Whether a restart dropped the pass's change token (the service refused it).
    pub fn token_dropped(&self) -> bool {
        self.token_dropped
    }

    /// Starts the pass again from its first page, forgetting every token seen: the
    /// service no longer accepts the position (an expired cursor or query locator). The
    /// query keeps its `since`: everything before it was read.
    pub fn restart(&mut self) {
        let since = self.pos.since;
        let (token_mode, dropped) = (self.token_mode, self.token_dropped);
        // A change token the service refuses (expired) cannot be sent again: the pass
        // starts over as a full one.
        let dropped = dropped || (token_mode && self.pos.change_token.is_some());
        *self = Paginator::new(
            self.style,
            self.page_size,
            self.max_results_per_query,
            None,
            self.since.clone(),
            since,
        );
        self.token_mode = token_mode;
        self.token_dropped = dropped;
    }

    /// Whether safe paging re-queries this pass: the run then gathers what
    /// [`PageSeen::at_newest`] needs and asks [`Paginator::read_before`] of each record.
    pub fn requeries(&self) -> bool {
        self.since.as_ref().is_some_and(|q| q.requery)
    }

    /// Whether a record a re-started query returns was read before in this pass: one
    /// updated before the query's `since` (the service sorts oldest first, so the pass
    /// read it; an exclusive filter asked from a second earlier), or at `since` with a
    /// tie-breaker read there. Such a record is dropped, not fetched again.
    pub fn read_before(&self, at: Option<DateTime<Utc>>, tie: &Value) -> bool {
        if self.pos.requeries == 0 || !self.requeries() {
            return false;
        }
        match (at, self.pos.since) {
            (Some(at), Some(since)) => {
                at < since || (at == since && !tie.is_null() && self.pos.boundary.contains(tie))
            }
            _ => false,
        }
    }

    /// `since` of the next request, as the service receives it.
    pub fn since_value(&self) -> Value {
        match &self.since {
            Some(query) => query.render(self.pos.since),
            None => Value::Null,
        }
    }

    /// Moves past the next page without reading it (`page_number` and `offset` styles:
    /// the page a `skip_page` error rule recognised). `false` for a style with no page
    /// after one that was not read.
    pub fn skip(&mut self) -> bool {
        match self.style {
            Pagination::PageNumber { .. } => {
                self.pos.page = Some(self.pos.page.unwrap_or(0) + 1);
                true
            }
            Pagination::Offset { .. } => {
                self.pos.offset = Some(self.pos.offset.unwrap_or(0) + u64::from(self.page_size));
                true
            }
            _ => false,
        }
    }

    /// The position to save: what the next request of this pass carries.
    pub fn position(&self) -> &PassPosition {
        &self.pos
    }

    /// Template variables of the next request: `page`, `offset`, `cursor`, `keyset.*`.
    /// Always all of them (null when unused), so strict templates never miss one.
    pub fn variables(&self) -> Map<String, Value> {
        let mut vars = Map::new();
        vars.insert("page".into(), json!(self.pos.page));
        vars.insert("offset".into(), json!(self.pos.offset.unwrap_or(0)));
        vars.insert("cursor".into(), json!(self.pos.cursor));
        let keyset = match &self.pos.keyset {
            Some(k) => json!({"updated": k.updated, "id": k.id}),
            None => json!({"updated": null, "id": null}),
        };
        vars.insert("keyset".into(), keyset);
        if self.since.is_some() {
            vars.insert("since".into(), self.since_value());
        }
        if self.token_mode {
            vars.insert("change_token".into(), json!(self.pos.change_token));
        }
        vars
    }

    /// The URL to follow instead of rendering the request (next-URL and `Link` styles
    /// after the first page), with secrets filled in again.
    pub fn follow_url(&self, secrets: &SecretSet) -> Result<Option<String>, String> {
        self.pos.url.as_deref().map(|u| secrets.fill(u)).transpose()
    }

    fn common(&self) -> Option<&'a PageCommon> {
        self.style.common()
    }

    /// Takes in a page and moves the position to the next request.
    pub fn advance(
        &mut self,
        page: &PageSeen<'_>,
        secrets: &SecretSet,
    ) -> Result<Step, PaginateError> {
        let step = self.advance_in_query(page, secrets)?;
        if step == Step::Continue {
            self.requery_if_safe(page);
        }
        Ok(step)
    }

    /// Safe paging: the next query asks from the page's newest update time (inclusive),
    /// from its first page, instead of the offset, page number or URL the style would
    /// move to, which a record changed mid-pass shifts. Only when that time is written
    /// differently from the current query's: a page whose records all share the query's
    /// own time (more ties than a page, or a coarse `since_format`) goes on within the
    /// query instead, so the pass always moves forward and never loops.
    fn requery_if_safe(&mut self, page: &PageSeen<'_>) {
        let Some(query) = &self.since else {
            return;
        };
        if !query.requery {
            return;
        }
        let Some(newest) = page.newest else {
            return;
        };
        if self.pos.since.is_some_and(|since| newest <= since)
            || query.render(Some(newest)) == query.render(self.pos.since)
        {
            return;
        }
        self.pos.since = Some(newest);
        self.pos.requeries += 1;
        self.pos.boundary = page.at_newest.clone();
        self.pos.page = match self.style {
            Pagination::PageNumber { start, .. } => Some(*start),
            _ => None,
        };
        self.pos.offset = match self.style {
            Pagination::Offset { start, .. } => Some(*start),
            _ => None,
        };
        self.pos.url = None;
        self.pos.cursor = None;
        self.pos.query_records = 0;
        self.seen.clear();
    }

    fn advance_in_query(
        &mut self,
        page: &PageSeen<'_>,
        secrets: &SecretSet,
    ) -> Result<Step, PaginateError> {
        self.pos.pages += 1;
        self.pos.records += page.records as u64;
        self.pos.query_records += page.records as u64;
        let Some(body) = page.body else {
            return Ok(Step::Done(PassEnd::EmptyBody));
        };
        if matches!(page.status, 204 | 304) {
            return Ok(Step::Done(PassEnd::EmptyBody));
        }
        let Some(common) = self.common() else {
            return Ok(Step::Done(PassEnd::SinglePage));
        };

        // The token the style offers for the next request, if any.
        let token: Option<String> = match self.style {
            Pagination::Cursor { cursor, .. } => cursor.find_map(body, scalar),
            Pagination::NextUrl { next_url, .. } => next_url.find_map(body, scalar),
            Pagination::LinkHeader { .. } => page.link.and_then(link_next),
            _ => None,
        };
        let token_style = matches!(
            self.style,
            Pagination::Cursor { .. } | Pagination::NextUrl { .. } | Pagination::LinkHeader { .. }
        );

        if let Some(rule) = self.fired_rule(common, body, page, token.is_none() && token_style) {
            return Ok(Step::Done(PassEnd::Rule(rule)));
        }
        if page.records == 0
            && matches!(
                self.style,
                Pagination::PageNumber { .. }
                    | Pagination::Offset { .. }
                    | Pagination::Keyset { .. }
            )
        {
            return Ok(Step::Done(PassEnd::EmptyPage));
        }
        if self.pos.pages >= common.max_pages {
            tracing::warn!(
                pages = self.pos.pages,
                max_pages = common.max_pages,
                "Pass stopped at the max_pages loop guard."
            );
            return Ok(Step::Done(PassEnd::MaxPages));
        }

        // A query capped at N results restarts by keyset from its last record (HubSpot
        // search stops at 10,000).
        if let Some(max) = self.max_results_per_query
            && self.pos.query_records >= max
            && let Some(keyset) = page.last_keyset.clone()
        {
            self.guard("keyset", &keyset_text(&keyset), secrets)?;
            self.seen.clear();
            self.pos.keyset = Some(keyset);
            self.pos.cursor = None;
            // The restarted query numbers its pages and offsets from the start again.
            self.pos.page = match self.style {
                Pagination::PageNumber { start, .. } => Some(*start),
                _ => None,
            };
            self.pos.offset = match self.style {
                Pagination::Offset { start, .. } => Some(*start),
                _ => None,
            };
            self.pos.url = None;
            self.pos.query_records = 0;
            return Ok(Step::Continue);
        }

        match self.style {
            Pagination::None => Ok(Step::Done(PassEnd::SinglePage)),
            Pagination::PageNumber { .. } => {
                self.pos.page = Some(self.pos.page.unwrap_or(0) + 1);
                Ok(Step::Continue)
            }
            Pagination::Offset { .. } => {
                self.pos.offset = Some(self.pos.offset.unwrap_or(0) + page.records as u64);
                Ok(Step::Continue)
            }
            Pagination::Cursor { .. } => {
                let Some(cursor) = token else {
                    return Ok(Step::Done(PassEnd::NoNext));
                };
                self.guard("cursor", &cursor, secrets)?;
                self.pos.cursor = Some(cursor);
                Ok(Step::Continue)
            }
            Pagination::NextUrl { .. } | Pagination::LinkHeader { .. } => {
                let Some(next) = token else {
                    return Ok(Step::Done(PassEnd::NoNext));
                };
                let base = url::Url::parse(page.url)
                    .map_err(|_| PaginateError::BadUrl(secrets.redact(page.url)))?;
                let absolute = base
                    .join(&next)
                    .map_err(|_| PaginateError::BadUrl(secrets.redact(&next)))?;
                let absolute = absolute.to_string();
                self.guard("next URL", &absolute, secrets)?;
                self.pos.url = Some(secrets.to_placeholders(&absolute));
                Ok(Step::Continue)
            }
            Pagination::Keyset { .. } => {
                let Some(keyset) = page.last_keyset.clone() else {
                    return Ok(Step::Done(PassEnd::NoNext));
                };
                self.guard("keyset", &keyset_text(&keyset), secrets)?;
                self.pos.keyset = Some(keyset);
                Ok(Step::Continue)
            }
        }
    }

    fn fired_rule(
        &self,
        common: &PageCommon,
        body: &Value,
        page: &PageSeen<'_>,
        token_missing: bool,
    ) -> Option<StopRule> {
        common.stop.iter().copied().find(|rule| match rule {
            StopRule::MissingToken => token_missing,
            StopRule::EmptyPage => page.records == 0,
            StopRule::ShortPage => (page.records as u64) < u64::from(self.page_size),
            StopRule::HasMoreFalse => common
                .has_more
                .as_ref()
                .is_some_and(|path| !truthy(path.first(body))),
            StopRule::TotalReached => {
                let total = common
                    .total
                    .as_ref()
                    .and_then(|p| p.first(body).and_then(number));
                let total_pages = common
                    .total_pages
                    .as_ref()
                    .and_then(|p| p.first(body).and_then(number));
                // A total counts the current query's records: a pass that re-queried
                // (safe paging, a capped query) has read more than this query matches.
                total.is_some_and(|t| self.pos.query_records >= t)
                    || total_pages.is_some_and(|t| self.pages_read_in_numbering() >= t)
            }
        })
    }

    /// Pages read, counted the way a service's page total counts them: for page-number
    /// style the page just read relative to the start, so a resumed pass agrees.
    fn pages_read_in_numbering(&self) -> u64 {
        match self.style {
            Pagination::PageNumber { start, .. } => {
                self.pos.page.unwrap_or(*start).saturating_sub(*start) + 1
            }
            _ => self.pos.pages,
        }
    }

    fn guard(
        &mut self,
        what: &'static str,
        value: &str,
        secrets: &SecretSet,
    ) -> Result<(), PaginateError> {
        let seen = if what == "keyset" {
            &mut self.seen_keysets
        } else {
            &mut self.seen
        };
        if seen.insert(blake3::hash(value.as_bytes())) {
            Ok(())
        } else {
            Err(PaginateError::Loop {
                what,
                value: secrets.redact(value),
            })
        }
    }
}

fn keyset_text(keyset: &Keyset) -> String {
    format!("{}|{}", keyset.updated, keyset.id)
}

/// A non-empty string or number as text.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A has-more flag: missing, null, `false`, `0`, `"false"` and `""` all mean no more.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => {
            let s = s.trim();
            !(s.is_empty() || s.eq_ignore_ascii_case("false") || s == "0")
        }
        Some(_) => true,
    }
}

/// The `rel="next"` target of an RFC 8288 `Link` header value (several links separated
/// by commas, each `<uri>; param=value; ...`).
pub fn link_next(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let after = &rest[close + 1..];
        // Parameters run until the next `,` outside quotes.
        let mut in_quotes = false;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &after[..end];
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next && !target.trim().is_empty() {
            return Some(target.trim().to_string());
        }
        if end >= after.len() {
            return None;
        }
        rest = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next_is_found_among_others() {
        let shopify = "<https://s.test/c.json?limit=2&page_info=abc>; rel=\"previous\", \
                       <https://s.test/c.json?limit=2&page_info=def>; rel=\"next\"";
        assert_eq!(
            link_next(shopify).as_deref(),
            Some("https://s.test/c.json?limit=2&page_info=def")
        );
        assert_eq!(
            link_next("<https://a.test/x,y>; rel=\"prev next\"").as_deref(),
            Some("https://a.test/x,y")
        );
        assert_eq!(
            link_next("<https://a.test/x>; rel=\"prev\"; title=\"a, b\""),
            None
        );
        assert_eq!(link_next(""), None);
    }

    #[test]
    fn has_more_flags_read_leniently() {
        assert!(truthy(Some(&json!(true))));
        assert!(truthy(Some(&json!("yes"))));
        assert!(!truthy(Some(&json!(false))));
        assert!(!truthy(Some(&json!("false"))));
        assert!(!truthy(Some(&json!(0))));
        assert!(!truthy(None));
    }
}
