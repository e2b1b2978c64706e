//! From a page body to contacts: the records JSONPath, then each field by the JSONPaths
//! the plan parsed at load time, with the value rules of the spec language.
//!
//! Owns record-level decisions: which value wins (the first non-empty match across a path
//! list), how names, timestamps and custom values are read, when a record is skipped (no
//! or invalid email) or a removal (the deleted predicate), and each contact's content
//! hash. Never parses a JSONPath per record, never touches the network or the store, and
//! never puts a credential in what it reports.

use std::borrow::Cow;
use std::io::Write as _;

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::Value;

use crate::engine::paginate::Keyset;
use crate::jsonpath::JsonPath;
use crate::model::{
    ContactRecord, CustomFieldType, CustomValue, FieldBinding, FieldValue, SubscriptionMeaning,
    normalize_email,
};
use crate::plan::{Connector, CustomField, Sync, TimeFormat};
use crate::template::context_time;

/// Why a record was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// No email at any of the email paths.
    NoEmail,
    /// An email that is not a plausible address (the value, shortened).
    InvalidEmail(String),
    /// A value longer than `limits.max_value_bytes`.
    ValueTooLarge {
        /// Which value (`first_name`, a custom field's tag).
        field: String,
        /// Its length in bytes.
        bytes: usize,
        /// The cap.
        limit: u64,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NoEmail => f.write_str("no email"),
            SkipReason::InvalidEmail(value) => write!(f, "invalid email `{value}`"),
            SkipReason::ValueTooLarge {
                field,
                bytes,
                limit,
            } => write!(
                f,
                "{field} is {bytes} bytes, more than limits.max_value_bytes ({limit})"
            ),
        }
    }
}

/// What one record became.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// A contact to write, with the number of custom values that failed to parse.
    Contact(ContactRecord, u64),
    /// A record the service marks deleted (its external id, if it has one).
    Deleted(Option<String>),
    /// A record skipped.
    Skipped(SkipReason),
}

/// One record's mapping plus what pagination and the watermark need from it, whatever
/// became of the record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordOut {
    /// What the record became.
    pub mapped: Mapped,
    /// The record's update time, if it has one that parses.
    pub updated_at: Option<DateTime<Utc>>,
    /// The record's external id (for skip samples).
    pub external_id: Option<String>,
}

/// Why a page could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageShapeError {
    /// The records path matched nothing and its container does not exist either.
    NoRecordsPath,
}

/// Maps records of one connector, with the store's field bindings.
#[derive(Debug)]
pub struct Extractor<'a> {
    connector: &'a Connector,
    bindings: &'a [FieldBinding],
    container: Option<JsonPath>,
    utc: FixedOffset,
}

impl<'a> Extractor<'a> {
    /// `bindings` are the store's answer to the connector's custom fields, in order.
    pub fn new(connector: &'a Connector, bindings: &'a [FieldBinding]) -> Self {
        Self {
            connector,
            bindings,
            container: container_path(connector.records.as_str())
                .and_then(|p| JsonPath::parse(&p).ok()),
            utc: FixedOffset::east_opt(0).expect("zero offset is valid"),
        }
    }

    /// The records of a page. A path that matches nothing is an empty page when the
    /// container it would select from exists (`{"data": []}`, `{"data": null}`), and an
    /// error otherwise (an error document, a changed API). A path that selects one array
    /// (`$.data` instead of `$.data[*]`) yields the array's elements.
    pub fn records<'v>(&self, body: &'v Value) -> Result<Vec<&'v Value>, PageShapeError> {
        let found = self.connector.records.query(body);
        if let [Value::Array(items)] = found.as_slice() {
            return Ok(items.iter().collect());
        }
        if !found.is_empty() {
            return Ok(found);
        }
        let container_exists = match &self.container {
            Some(path) => path.first(body).is_some(),
            None => false,
        };
        // A connector may declare that the service leaves the key out when there is
        // nothing (Google People without contacts); a body that is not a JSON object is
        // still no page of this service.
        if container_exists || (self.connector.records_absent_is_empty && body.is_object()) {
            Ok(Vec::new())
        } else {
            Err(PageShapeError::NoRecordsPath)
        }
    }

    /// The keyset of a record: its update time and id as the service wrote them.
    pub fn keyset(&self, record: &Value) -> Option<Keyset> {
        let fields = &self.connector.fields;
        let updated = fields
            .updated_at
            .as_ref()
            .and_then(|t| first(&t.paths, record))
            .cloned()
            .unwrap_or(Value::Null);
        let id = self.tie_breaker(record);
        (!updated.is_null() || !id.is_null()).then_some(Keyset { updated, id })
    }

    /// The record's tie-breaker as the service wrote it (`sync.tie_breaker`, else the
    /// external id); null when it has none.
    pub fn tie_breaker(&self, record: &Value) -> Value {
        match &self.connector.sync {
            Sync::Incremental {
                tie_breaker: Some(path),
                ..
            } => path.first(record),
            _ => first(&self.connector.fields.external_id, record),
        }
        .cloned()
        .unwrap_or(Value::Null)
    }

    /// Maps one record.
    pub fn map(&self, record: &Value) -> RecordOut {
        let fields = &self.connector.fields;
        let updated_at = fields
            .updated_at
            .as_ref()
            .and_then(|t| first(&t.paths, record).and_then(|v| t.format.read(v, t.zone)));
        let external_id = text(&fields.external_id, record);
        if let Some(deleted) = &self.connector.deleted {
            let hit = deleted.matches(record);
            if hit {
                return RecordOut {
                    mapped: Mapped::Deleted(external_id.clone()),
                    updated_at,
                    external_id,
                };
            }
        }
        let email = match first(&fields.email, record) {
            None => Err(SkipReason::NoEmail),
            Some(value) => match scalar_str(value) {
                None => Err(SkipReason::NoEmail),
                Some(raw) => normalize_email(&raw).ok_or_else(|| {
                    SkipReason::InvalidEmail(raw.chars().take(64).collect::<String>())
                }),
            },
        };
        let email = match email {
            Ok(email) => email,
            Err(reason) => {
                return RecordOut {
                    mapped: Mapped::Skipped(reason),
                    updated_at,
                    external_id,
                };
            }
        };

        let mut first_name = text(&fields.first_name, record);
        let mut last_name = text(&fields.last_name, record);
        if first_name.is_none()
            && last_name.is_none()
            && let Some(full) = text(&fields.full_name, record)
        {
            (first_name, last_name) = split_full_name(&full);
        }

        let mut failures = 0;
        let mut custom_values = Vec::with_capacity(self.connector.custom_fields.len());
        for (index, field) in self.connector.custom_fields.iter().enumerate() {
            let stored = self
                .bindings
                .get(index)
                .map(|b| b.stored_type)
                .unwrap_or(field.def.field_type);
            match custom_value(field, record, self.utc).and_then(|v| match v {
                Some(v) => convert(v, stored),
                None => Ok(None),
            }) {
                Ok(Some(value)) => custom_values.push(CustomValue {
                    field: index,
                    value,
                }),
                Ok(None) => {}
                Err(()) => failures += 1,
            }
        }

        // Each field the connector reads says what it knows (an opt-out flag, a bounce
        // flag, a status); the strongest meaning wins.
        let service_status = self
            .connector
            .subscription
            .iter()
            .filter_map(|s| {
                s.path
                    .find_map(record, scalar_str)
                    .and_then(|v| s.map.get(v.as_ref()).copied())
            })
            .max();

        let mut contact = ContactRecord {
            email,
            first_name,
            last_name,
            phone: text(&fields.phone, record),
            organization: text(&fields.organization, record),
            external_id: external_id.clone(),
            updated_at,
            custom_values,
            service_status,
            content_hash: String::new(),
        };
        contact.content_hash = content_hash(&contact);
        RecordOut {
            mapped: Mapped::Contact(contact, failures),
            updated_at,
            external_id,
        }
    }
}

/// `$.a.b[*]` -> `$.a.b`, `$.a.*` -> `$.a`, `$[*]` -> `$`: the container whose presence
/// tells an empty page from a path that matches nothing.
pub(crate) fn container_path(records: &str) -> Option<String> {
    let trimmed = records.trim();
    for suffix in ["[*]", ".*"] {
        if let Some(stripped) = trimmed.strip_suffix(suffix) {
            return Some(stripped.to_string());
        }
    }
    None
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The first non-empty match across a path list.
fn first<'v>(paths: &[JsonPath], record: &'v Value) -> Option<&'v Value> {
    paths
        .iter()
        .find_map(|p| p.find_map(record, |v| (!is_empty(v)).then_some(v)))
}

/// A scalar as text (trimmed; `None` when empty or not a scalar), borrowed from the
/// record where it is a string, so that callers that only look at it copy nothing.
fn scalar_str(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty()).then_some(Cow::Borrowed(t))
        }
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    scalar_str(value).map(Cow::into_owned)
}

fn text(paths: &[JsonPath], record: &Value) -> Option<String> {
    paths
        .iter()
        .find_map(|p| p.find_map(record, |v| if is_empty(v) { None } else { scalar_text(v) }))
}

/// "Ada King Lovelace" -> ("Ada", "King Lovelace"); one word is a first name.
pub fn split_full_name(full: &str) -> (Option<String>, Option<String>) {
    let full = full.trim();
    match full.split_once(char::is_whitespace) {
        Some((first, rest)) => {
            let rest = rest.trim();
            (
                Some(first.to_string()),
                (!rest.is_empty()).then(|| rest.to_string()),
            )
        }
        None if full.is_empty() => (None, None),
        None => (Some(full.to_string()), None),
    }
}

/// A custom value as the connector types it. `Ok(None)`: no value (never erases a stored
/// one); `Err`: a value that does not parse as the type.
fn custom_value(
    field: &CustomField,
    record: &Value,
    utc: FixedOffset,
) -> Result<Option<FieldValue>, ()> {
    if field.def.field_type == CustomFieldType::List {
        // Every match of the first path that has a non-empty one: `$.tags[*].name`
        // gives several. Empty matches (null, blank, `[]`, `{}`) add no item, so the
        // items of a path whose matches are all empty stay empty and the next path is
        // tried, without collecting any path's matches first.
        let mut items = Vec::new();
        for path in &field.paths {
            let mut found = false;
            path.for_each(record, |value| {
                found |= !is_empty(value);
                match value {
                    Value::Array(array) => items.extend(array.iter().filter_map(scalar_text)),
                    Value::String(s) => match &field.delimiter {
                        Some(d) => items.extend(
                            s.split(d.as_str())
                                .map(str::trim)
                                .filter(|p| !p.is_empty())
                                .map(str::to_string),
                        ),
                        None => items.extend(scalar_text(value)),
                    },
                    other => items.extend(scalar_text(other)),
                }
            });
            if found {
                break;
            }
        }
        return Ok((!items.is_empty()).then_some(FieldValue::List(items)));
    }
    let Some(value) = first(&field.paths, record) else {
        return Ok(None);
    };
    match field.def.field_type {
        CustomFieldType::Text => Ok(Some(FieldValue::Text(match value {
            Value::Array(items) => items
                .iter()
                .filter_map(scalar_text)
                .collect::<Vec<_>>()
                .join(", "),
            Value::Object(_) => value.to_string(),
            other => scalar_text(other).unwrap_or_default(),
        }))),
        CustomFieldType::Number => match value {
            Value::Number(n) => n.as_f64().map(|f| Some(FieldValue::Number(f))).ok_or(()),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|f| Some(FieldValue::Number(f)))
                .ok_or(()),
            _ => Err(()),
        },
        CustomFieldType::Date => field
            .format
            .read(value, utc)
            .map(|t| Some(FieldValue::Date(t)))
            .ok_or(()),
        CustomFieldType::List => unreachable!("lists are handled above"),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    match context_time(t) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// A value converted to the type the store keeps the field as (a person may have made the
/// field first with another type). `Err` when it cannot be.
fn convert(value: FieldValue, stored: CustomFieldType) -> Result<Option<FieldValue>, ()> {
    let out = match (value, stored) {
        (v @ FieldValue::Text(_), CustomFieldType::Text)
        | (v @ FieldValue::Number(_), CustomFieldType::Number)
        | (v @ FieldValue::Date(_), CustomFieldType::Date)
        | (v @ FieldValue::List(_), CustomFieldType::List) => v,
        (FieldValue::Number(n), CustomFieldType::Text) => FieldValue::Text(number_text(n)),
        (FieldValue::Date(t), CustomFieldType::Text) => FieldValue::Text(rfc3339(t)),
        (FieldValue::List(items), CustomFieldType::Text) => FieldValue::Text(items.join(", ")),
        (FieldValue::Text(s), CustomFieldType::Number) => {
            FieldValue::Number(s.trim().parse::<f64>().map_err(|_| ())?)
        }
        (FieldValue::Text(s), CustomFieldType::Date) => FieldValue::Date(
            TimeFormat::Rfc3339
                .read(&Value::String(s), FixedOffset::east_opt(0).ok_or(())?)
                .ok_or(())?,
        ),
        (FieldValue::Text(s), CustomFieldType::List) => FieldValue::List(vec![s]),
        (FieldValue::Number(n), CustomFieldType::List) => FieldValue::List(vec![number_text(n)]),
        (FieldValue::Date(t), CustomFieldType::List) => FieldValue::List(vec![rfc3339(t)]),
        (FieldValue::List(_), _) | (FieldValue::Number(_), _) | (FieldValue::Date(_), _) => {
            return Err(());
        }
    };
    Ok(Some(out))
}

/// blake3 over every stored value, each length-prefixed so that no two contacts share an
/// encoding.
///
/// The encoding is written into one buffer and hashed in one call: the same bytes and so
/// the same hash as feeding them piece by piece, for a fraction of the cost (each
/// `Hasher::update` call has a fixed overhead larger than the few bytes of a field).
pub fn content_hash(contact: &ContactRecord) -> String {
    fn put(bytes: &mut Vec<u8>, tag: u8, value: Option<&[u8]>) {
        bytes.push(tag);
        match value {
            Some(v) => {
                bytes.extend_from_slice(&(v.len() as u64).to_le_bytes());
                bytes.extend_from_slice(v);
            }
            None => bytes.extend_from_slice(&u64::MAX.to_le_bytes()),
        }
    }
    let mut bytes = Vec::with_capacity(512);
    let mut scratch = Vec::with_capacity(64);
    put(&mut bytes, 1, Some(contact.email.as_bytes()));
    put(
        &mut bytes,
        2,
        contact.first_name.as_deref().map(str::as_bytes),
    );
    put(
        &mut bytes,
        3,
        contact.last_name.as_deref().map(str::as_bytes),
    );
    put(&mut bytes, 4, contact.phone.as_deref().map(str::as_bytes));
    put(
        &mut bytes,
        5,
        contact.organization.as_deref().map(str::as_bytes),
    );
    put(
        &mut bytes,
        6,
        contact.external_id.as_deref().map(str::as_bytes),
    );
    match contact.updated_at {
        Some(t) => {
            write!(scratch, "{}", t.timestamp_millis()).expect("writing to a Vec");
            put(&mut bytes, 7, Some(&scratch));
        }
        None => put(&mut bytes, 7, None),
    }
    let status = contact.service_status.map(SubscriptionMeaning::as_str);
    put(&mut bytes, 8, status.map(str::as_bytes));
    for value in &contact.custom_values {
        scratch.clear();
        write!(scratch, "{}", value.field).expect("writing to a Vec");
        put(&mut bytes, 9, Some(&scratch));
        scratch.clear();
        if serde_json::to_writer(&mut scratch, &value.value).is_err() {
            // As `to_string(..).unwrap_or_default()` did: an empty encoding.
            scratch.clear();
        }
        put(&mut bytes, 10, Some(&scratch));
    }
    blake3::hash(&bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_split_at_the_first_space() {
        assert_eq!(
            split_full_name(" Ada King Lovelace "),
            (Some("Ada".into()), Some("King Lovelace".into()))
        );
        assert_eq!(split_full_name("Cher"), (Some("Cher".into()), None));
        assert_eq!(split_full_name("  "), (None, None));
    }

    #[test]
    fn containers_are_derived_from_record_paths() {
        assert_eq!(container_path("$.data[*]").as_deref(), Some("$.data"));
        assert_eq!(container_path("$[*]").as_deref(), Some("$"));
        assert_eq!(container_path("$.results.*").as_deref(), Some("$.results"));
        assert_eq!(container_path("$.data"), None);
    }

    #[test]
    fn values_convert_to_the_stored_type_or_fail() {
        use CustomFieldType as T;
        assert_eq!(
            convert(FieldValue::Number(3.0), T::Text),
            Ok(Some(FieldValue::Text("3".into())))
        );
        assert_eq!(
            convert(FieldValue::List(vec!["a".into(), "b".into()]), T::Text),
            Ok(Some(FieldValue::Text("a, b".into())))
        );
        assert_eq!(
            convert(FieldValue::Text(" 2.5 ".into()), T::Number),
            Ok(Some(FieldValue::Number(2.5)))
        );
        assert_eq!(convert(FieldValue::Text("x".into()), T::Number), Err(()));
        assert_eq!(convert(FieldValue::List(vec![]), T::Number), Err(()));
    }

    /// The hash as it was first written, one `update` per piece.
    fn content_hash_piecewise(contact: &ContactRecord) -> String {
        let mut hasher = blake3::Hasher::new();
        let mut put = |tag: u8, value: Option<&str>| {
            hasher.update(&[tag]);
            match value {
                Some(v) => {
                    hasher.update(&(v.len() as u64).to_le_bytes());
                    hasher.update(v.as_bytes());
                }
                None => {
                    hasher.update(&u64::MAX.to_le_bytes());
                }
            }
        };
        put(1, Some(&contact.email));
        put(2, contact.first_name.as_deref());
        put(3, contact.last_name.as_deref());
        put(4, contact.phone.as_deref());
        put(5, contact.organization.as_deref());
        put(6, contact.external_id.as_deref());
        let updated = contact.updated_at.map(|t| t.timestamp_millis().to_string());
        put(7, updated.as_deref());
        let status = contact.service_status.map(SubscriptionMeaning::as_str);
        put(8, status);
        for value in &contact.custom_values {
            let encoded = serde_json::to_string(&value.value).unwrap_or_default();
            put(9, Some(&value.field.to_string()));
            put(10, Some(&encoded));
        }
        hasher.finalize().to_hex().to_string()
    }

    #[test]
    fn content_hash_is_the_piecewise_hash() {
        let bare = ContactRecord {
            email: "ada@example.com".into(),
            first_name: None,
            last_name: None,
            phone: None,
            organization: None,
            external_id: None,
            updated_at: None,
            custom_values: Vec::new(),
            service_status: None,
            content_hash: String::new(),
        };
        let full = ContactRecord {
            first_name: Some("Ada".into()),
            last_name: Some("King Lovelace".into()),
            phone: Some("+44 20 0000".into()),
            organization: Some("Analytical Engines".into()),
            external_id: Some("42".into()),
            updated_at: DateTime::from_timestamp(1_714_557_600, 250_000_000),
            custom_values: vec![
                CustomValue {
                    field: 0,
                    value: FieldValue::Text("Enterprise".into()),
                },
                CustomValue {
                    field: 3,
                    value: FieldValue::Number(1234.5),
                },
                CustomValue {
                    field: 12,
                    value: FieldValue::Date(DateTime::from_timestamp(1_420_070_400, 0).unwrap()),
                },
                CustomValue {
                    field: 4,
                    value: FieldValue::List(vec!["vip".into(), "a \"b\"".into()]),
                },
            ],
            service_status: Some(SubscriptionMeaning::Bounced),
            ..bare.clone()
        };
        let unsubscribed = ContactRecord {
            service_status: Some(SubscriptionMeaning::Unsubscribed),
            updated_at: DateTime::from_timestamp(-5, 0),
            ..bare.clone()
        };
        for contact in [&bare, &full, &unsubscribed] {
            assert_eq!(content_hash(contact), content_hash_piecewise(contact));
        }
        assert_ne!(content_hash(&bare), content_hash(&full));
    }
}
