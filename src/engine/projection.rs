//! A page parse that builds only what the connector can read.
//!
//! A fetched page is parsed into a [`Value`] and then read through the connector's
//! JSONPaths. A connector reads a few top-level members of each record (the benchmark's
//! Pipedrive-like records have 40, its connector reads 13), yet the full parse builds
//! every member: strings, arrays and maps that are allocated, never read, and freed again.
//! That parse was the engine's largest cost. [`PageProjection::parse`] parses a page
//! exactly as `serde_json::from_slice::<Value>` does, except that each record keeps only
//! the members named by the first step of one of the connector's record paths; the others
//! are skipped without being built.
//!
//! Pruning is only done where it provably changes nothing the engine reads:
//! [`PageProjection::for_connector`] gives `None` (parse in full) for any connector whose
//! paths it cannot follow exactly. Everything outside the records (pagination metadata,
//! the records' container chain) is parsed in full.

use std::fmt;

use serde::Deserialize as _;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value};

use crate::jsonpath::{JsonPath, Rest};
use crate::plan::{
    Connector, CustomField, Fields, PageCommon, Pagination, Predicate, Subscription, Sync,
    Timestamp,
};

/// The first keys that `Value`'s own deserialization treats specially (serde_json's
/// `raw_value` and `arbitrary_precision` tokens: such an object is read as the value it
/// encodes). An object whose first key starts with this is handed whole to `Value`.
const PRIVATE_KEY_PREFIX: &str = "$serde_json::private::";

/// How one connector's pages are parsed when its records can be pruned. Built once per
/// run: proving that pruning is safe walks every path of the connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageProjection {
    /// The member names leading to the records' container (`$.a.b[*]`: `a`, `b`); never
    /// empty.
    container: Vec<String>,
    /// Whether the records path ends in a wildcard (then an object container's member
    /// values are the records, else the object is the one record).
    wildcard: bool,
    /// The record members kept: the first step of every record path.
    keep: Names,
}

impl PageProjection {
    /// The projection for `connector`, or `None` when pruning its records cannot be proven
    /// to change nothing the engine reads: then pages must be parsed in full.
    ///
    /// Pruning needs (1) a records path of one or more member steps, optionally followed
    /// by one wildcard; (2) every record path in the direct-walk grammar, starting with a
    /// member step (its name is kept); (3) every path evaluated on the page body
    /// (pagination) in that grammar and leaving the records' container chain at a member
    /// step of another name, so that it never reaches into the records.
    pub fn for_connector(connector: &Connector) -> Option<PageProjection> {
        let records = connector.records.leading_members()?;
        let wildcard = match records.rest {
            Rest::Nothing => false,
            Rest::Wildcard => true,
            Rest::More => return None,
        };
        if records.members.is_empty() {
            return None;
        }
        let container: Vec<String> = records.members.iter().map(|m| m.to_string()).collect();

        let mut keep = Vec::new();
        for path in record_paths(connector) {
            let leading = path.leading_members()?;
            keep.push(leading.members.first()?.to_string());
        }

        for path in body_paths(&connector.pagination) {
            let leading = path.leading_members()?;
            let leaves = leading
                .members
                .iter()
                .zip(&container)
                .any(|(member, link)| member != link);
            if !leaves {
                return None;
            }
        }
        Some(PageProjection {
            container,
            wildcard,
            keep: Names::new(keep),
        })
    }

    /// Parses a page: the same value as `serde_json::from_slice::<Value>(body)` except
    /// that record members no record path reads are missing, or the same error.
    ///
    /// # Errors
    /// When `body` is not one JSON value (trailing characters included), or is one that
    /// `Value` refuses (a lone surrogate, a number beyond `f64`, nesting deeper than 128),
    /// wherever it is.
    pub fn parse(&self, body: &[u8]) -> serde_json::Result<Value> {
        // UTF-8 is checked once for the whole body, several times cheaper than string by
        // string as `from_slice` does it. A body that is not UTF-8 gets the full parse's
        // own error.
        let Ok(text) = std::str::from_utf8(body) else {
            return serde_json::from_slice(body);
        };
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Node::along(self, 0).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }
}

/// Every path the engine evaluates on a record (see `engine::extract`). Destructured in
/// full, so that a path added to the plan does not compile until it is listed here.
fn record_paths(connector: &Connector) -> Vec<&JsonPath> {
    let Connector {
        id: _,
        file: _,
        service: _,
        base_url: _,
        headers: _,
        connect_timeout: _,
        request_timeout: _,
        rate_limit: _,
        error_rules: _,
        auth: _,
        request: _,
        pagination: _,
        records: _,
        records_absent_is_empty: _,
        page_size_max: _,
        page_size_default: _,
        max_results_per_query: _,
        fields,
        custom_fields,
        subscription,
        deleted,
        // Its pages are parsed whole, apart from the list's (see `run::read_deletions`).
        deletions: _,
        sync,
        filters: _,
        settings: _,
        fingerprint: _,
        pass_parts: _,
    } = connector;
    let Fields {
        email,
        first_name,
        last_name,
        full_name,
        phone,
        organization,
        external_id,
        updated_at,
    } = fields;
    let mut paths: Vec<&JsonPath> = [
        email,
        first_name,
        last_name,
        full_name,
        phone,
        organization,
        external_id,
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(Timestamp {
        paths: updated,
        format: _,
        zone: _,
    }) = updated_at
    {
        paths.extend(updated);
    }
    // The tie-breaker a keyset or a safe-paging re-query reads from each record.
    if let Sync::Incremental {
        tie_breaker: Some(tie),
        ..
    } = sync
    {
        paths.push(tie);
    }
    for CustomField {
        def: _,
        paths: custom,
        delimiter: _,
        format: _,
    } in custom_fields
    {
        paths.extend(custom);
    }
    for Subscription { path, map: _ } in subscription {
        paths.push(path);
    }
    if let Some(Predicate { path, equals: _ }) = deleted {
        paths.push(path);
    }
    paths
}

/// Every path the engine evaluates on a whole page besides the records path (see
/// `engine::paginate`).
fn body_paths(pagination: &Pagination) -> Vec<&JsonPath> {
    let (token, common) = match pagination {
        Pagination::None => (None, None),
        Pagination::PageNumber { start: _, common }
        | Pagination::Offset { start: _, common }
        | Pagination::LinkHeader { common }
        | Pagination::Keyset { common } => (None, Some(common)),
        Pagination::Cursor { cursor, common } => (Some(cursor), Some(common)),
        Pagination::NextUrl {
            next_url,
            verbatim: _,
            common,
        } => (Some(next_url), Some(common)),
    };
    let mut paths: Vec<&JsonPath> = token.into_iter().collect();
    if let Some(PageCommon {
        stop: _,
        has_more,
        total,
        total_pages,
        max_pages: _,
    }) = common
    {
        paths.extend([has_more, total, total_pages].into_iter().flatten());
    }
    paths
}

/// Where in the page the value being parsed is, as far as pruning cares.
#[derive(Debug, Clone, Copy)]
enum At {
    /// Reached by the first `n` members of the container chain (fewer than all).
    Along(usize),
    /// The container: reached by the whole chain.
    Container,
    /// A record.
    Record,
}

/// Parses one value at a known place: a seed and its visitor. Whatever is not an object
/// or array on the way to the records (and every member off that way) is handed to
/// `Value`'s own deserialization, so that it comes out exactly as the full parse builds
/// it (numbers included, whatever serde_json features are on).
#[derive(Clone, Copy)]
struct Node<'p> {
    projection: &'p PageProjection,
    at: At,
}

impl<'p> Node<'p> {
    fn along(projection: &'p PageProjection, members: usize) -> Self {
        let at = if members < projection.container.len() {
            At::Along(members)
        } else {
            At::Container
        };
        Node { projection, at }
    }

    fn record(self) -> Self {
        Node {
            at: At::Record,
            ..self
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Value::deserialize(v.into_deserializer())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Value::deserialize(v.into_deserializer())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Value::deserialize(v.into_deserializer())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Value::deserialize(v.into_deserializer())
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Value::deserialize(v.into_deserializer())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Value::deserialize(v.into_deserializer())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Value::deserialize(v.into_deserializer())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Value::deserialize(v.into_deserializer())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Value::deserialize(().into_deserializer())
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Value::deserialize(().into_deserializer())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        match self.at {
            At::Container => {
                let record = self.record();
                let mut items = Vec::new();
                while let Some(item) = seq.next_element_seed(record)? {
                    items.push(item);
                }
                Ok(Value::Array(items))
            }
            At::Along(_) | At::Record => Value::deserialize(SeqAccessDeserializer::new(seq)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        let projection = self.projection;
        match self.at {
            At::Along(members) => {
                let link = projection.container[members].as_str();
                let next = Node::along(projection, members + 1);
                object(map, None, |key| (key == link).then_some(next))
            }
            At::Container if projection.wildcard => {
                let record = self.record();
                object(map, None, |_| Some(record))
            }
            At::Container | At::Record => object(map, Some(&projection.keep), |_| None),
        }
    }
}

/// Builds an object as `Value` does (a repeated key: the last one wins), keeping the
/// members whose key is in `keep` (all when `None`) and skipping the others unbuilt. A
/// kept member is parsed by the node `child` gives for its key, or as a plain `Value`.
fn object<'de, 'p, A: MapAccess<'de>>(
    mut map: A,
    keep: Option<&Names>,
    child: impl Fn(&str) -> Option<Node<'p>>,
) -> Result<Value, A::Error> {
    let mut object = Map::new();
    let mut first = true;
    while let Some(key) = map.next_key_seed(KeySeed { keep, first })? {
        first = false;
        match key {
            Key::Private(key) => {
                // Exactly what `Value` makes of it (an error, a raw value's content):
                // nothing in it is pruned.
                let replay = Replay {
                    key: Some(key),
                    map,
                };
                return Value::deserialize(MapAccessDeserializer::new(replay));
            }
            Key::Skip => {
                map.next_value_seed(Unread)?;
            }
            Key::Keep(key) => {
                let value = match child(&key) {
                    Some(node) => map.next_value_seed(node)?,
                    None => map.next_value::<Value>()?,
                };
                object.insert(key, value);
            }
        }
    }
    Ok(Value::Object(object))
}

/// A member nothing reads: parsed and checked exactly as `Value` parses it (the same
/// errors at the same places), but nothing is built or allocated.
///
/// Not `serde::de::IgnoredAny`: serde_json skips that with a scan that does not check
/// what `Value` refuses (`\ud800` alone, `1e400`, nesting deeper than 128), so a page
/// the full parse rejects would be accepted. Checking costs about 2% more instructions
/// than that scan.
#[derive(Clone, Copy)]
struct Unread;

impl<'de> DeserializeSeed<'de> for Unread {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unread {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(UnreadKey)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// The key of an unread member, read as `Value` reads a key.
struct UnreadKey;

impl<'de> DeserializeSeed<'de> for UnreadKey {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(Unread)
    }
}

/// An object key, read without copying it when its member is skipped.
enum Key {
    /// A member to build.
    Keep(String),
    /// A member to skip.
    Skip,
    /// A first key `Value` treats specially (see [`PRIVATE_KEY_PREFIX`]).
    Private(String),
}

struct KeySeed<'k> {
    keep: Option<&'k Names>,
    first: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        if self.first && key.starts_with(PRIVATE_KEY_PREFIX) {
            return Ok(Key::Private(key.to_owned()));
        }
        let kept = match self.keep {
            None => true,
            Some(keep) => keep.contains(key),
        };
        Ok(if kept {
            Key::Keep(key.to_owned())
        } else {
            Key::Skip
        })
    }
}

/// A set of member names for telling each key of a record kept or skipped (a page of
/// 500 records has some 20,000): by length, then first byte, then the whole name, so that
/// most keys are told apart without a string comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Names {
    /// The names of each length, at that index.
    by_length: Vec<Vec<String>>,
}

impl Names {
    fn new(names: Vec<String>) -> Self {
        let mut by_length: Vec<Vec<String>> = Vec::new();
        for name in names {
            if by_length.len() <= name.len() {
                by_length.resize_with(name.len() + 1, Vec::new);
            }
            let same_length = &mut by_length[name.len()];
            if !same_length.contains(&name) {
                same_length.push(name);
            }
        }
        Names { by_length }
    }

    fn contains(&self, key: &str) -> bool {
        self.by_length.get(key.len()).is_some_and(|names| {
            names
                .iter()
                .any(|name| name.as_bytes().first() == key.as_bytes().first() && name == key)
        })
    }
}

/// A map whose first key was already read: gives it again, then the rest.
struct Replay<A> {
    key: Option<String>,
    map: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.key.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::config::load::load_plan;
    use crate::engine::extract::Extractor;
    use crate::model::FieldBinding;
    use crate::plan::StopRule;

    /// Every connector in `connectors_dir`, loaded as `tributary` loads them.
    fn load_connectors(connectors_dir: &Path) -> Vec<Arc<Connector>> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tributary.yaml");
        std::fs::write(
            &config,
            format!(
                "connectors_dir: {}\nimporters_dir: {}\n",
                connectors_dir.display(),
                dir.path().join("none").display()
            ),
        )
        .unwrap();
        let plan = load_plan(&config).unwrap_or_else(|d| panic!("{d:?}"));
        plan.connectors.into_values().collect()
    }

    /// A connector from the YAML of its `contacts` section.
    fn connector(contacts: &str) -> Connector {
        let dir = tempfile::tempdir().unwrap();
        let connectors = dir.path().join("connectors.d");
        std::fs::create_dir(&connectors).unwrap();
        let contacts: String = contacts.lines().map(|l| format!("  {l}\n")).collect();
        std::fs::write(
            connectors.join("crm.yaml"),
            format!(
                "spec_version: 1\nbase_url: https://crm.example\ncontacts:\n  request:\n    \
                 path: /people\n    query:\n      offset: \"{{{{offset}}}}\"\n      \
                 cursor: \"{{{{cursor}}}}\"\n{contacts}sync:\n  mode: full_refresh\n"
            ),
        )
        .unwrap();
        let mut loaded = load_connectors(&connectors);
        assert_eq!(loaded.len(), 1);
        Arc::unwrap_or_clone(loaded.pop().unwrap())
    }

    /// A Pipedrive-like connector reading every kind of record path.
    const CRM: &str = r#"pagination:
  type: offset
  stop: [has_more_false, empty_page]
  has_more: $.additional_data.pagination.more_items_in_collection
records: $.data[*]
fields:
  email: "$.emails[?@.primary == true].value"
  first_name: $.first_name
  last_name: $.last_name
  full_name: $.name
  phone: ["$.phones[0].value", "$['phone number']"]
  organization: $.org_id.name
  external_id: $.id
  updated_at:
    path: $.update_time
    format: "%Y-%m-%d %H:%M:%S"
custom_fields:
  - label: Segment
    path: "$['5a1c3f0e9b8d7c6a5f4e3d2c1b0a998877665544']"
    type: text
  - label: Interests
    path: $.interests[*]
    type: list
subscription:
  path: $.marketing_status
  map:
    unsubscribed: unsubscribed
deleted:
  path: $.is_deleted
  equals: true
"#;

    fn crm() -> Connector {
        connector(CRM)
    }

    fn path(source: &str) -> JsonPath {
        JsonPath::parse(source).unwrap()
    }

    fn bindings(connector: &Connector) -> Vec<FieldBinding> {
        connector
            .custom_fields
            .iter()
            .enumerate()
            .map(|(i, field)| FieldBinding {
                field_id: i as i64 + 1,
                tag: field.def.tag.clone(),
                stored_type: field.def.field_type,
            })
            .collect()
    }

    impl Names {
        fn sorted(&self) -> Vec<&str> {
            let mut names: Vec<&str> = self
                .by_length
                .iter()
                .flatten()
                .map(String::as_str)
                .collect();
            names.sort_unstable();
            names
        }
    }

    #[test]
    fn names_are_found_by_length_first_byte_and_content() {
        let names = Names::new(
            ["id", "ie", "id", "", "emails", "名前", "5a1c"]
                .map(String::from)
                .to_vec(),
        );
        assert_eq!(names.sorted(), ["", "5a1c", "emails", "id", "ie", "名前"]);
        for name in ["", "id", "ie", "emails", "名前", "5a1c"] {
            assert!(names.contains(name), "{name}");
        }
        for name in ["i", "if", "ide", "email", "emailz", "名", "5a1d", "x"] {
            assert!(!names.contains(name), "{name}");
        }
        assert!(!Names::new(Vec::new()).contains(""));
    }

    /// `record` with only the members `projection` keeps.
    fn pruned(projection: &PageProjection, record: &Value) -> Value {
        match record {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, _)| projection.keep.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Parses `body` both ways and checks that every path the engine evaluates selects
    /// the same values, that the extractor maps every record the same, and that each
    /// record is either untouched or exactly its kept members. Returns both parses.
    fn assert_same_reads(connector: &Connector, body: &str) -> (Value, Value) {
        let projection = PageProjection::for_connector(connector)
            .unwrap_or_else(|| panic!("{}: no projection", connector.id));
        let full: Value = serde_json::from_str(body).unwrap();
        let projected = projection
            .parse(body.as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e} in {body}", connector.id));
        for page_path in body_paths(&connector.pagination) {
            assert_eq!(
                page_path.query(&full),
                page_path.query(&projected),
                "{} on {body}",
                page_path.as_str()
            );
        }
        assert_eq!(
            connector.records.query(&full).len(),
            connector.records.query(&projected).len()
        );
        let bindings = bindings(connector);
        let extractor = Extractor::new(connector, &bindings);
        match (extractor.records(&full), extractor.records(&projected)) {
            (Ok(full_records), Ok(projected_records)) => {
                assert_eq!(full_records.len(), projected_records.len(), "{body}");
                for (&a, &b) in full_records.iter().zip(&projected_records) {
                    assert!(
                        b == a || *b == pruned(&projection, a),
                        "{b} is neither {a} nor its kept members"
                    );
                    for record_path in record_paths(connector) {
                        assert_eq!(
                            record_path.query(a),
                            record_path.query(b),
                            "{} on {a}",
                            record_path.as_str()
                        );
                    }
                    assert_eq!(extractor.map(a), extractor.map(b), "{a}");
                    assert_eq!(extractor.keyset(a), extractor.keyset(b), "{a}");
                }
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("records differ on {body}: {a:?} / {b:?}"),
        }
        (full, projected)
    }

    /// A benchmark-like record: read members, and many that nothing reads.
    fn person(id: u64) -> Value {
        json!({
            "id": id,
            "company_id": 7_654_321,
            "owner_id": {"id": 3, "name": "Owner 3", "email": "o@seller.example",
                         "pic_hash": null, "active_flag": true, "value": 3},
            "org_id": {"name": format!("Org {id}"), "people_count": 12, "label_ids": [],
                       "value": id % 7},
            "name": format!("Ada{id} Lovelace"),
            "first_name": format!("Ada{id}"),
            "last_name": "Lovelace",
            "open_deals_count": 2,
            "phones": [{"label": "work", "value": format!("+49 30 {id:07}"), "primary": true}],
            "emails": [
                {"label": "home", "value": format!("home{id}@example.com"), "primary": false},
                {"label": "work", "value": format!("ada{id}@example.com"), "primary": true}
            ],
            "update_time": "2024-05-01 10:00:00",
            "add_time": "2023-01-01 09:00:00",
            "visible_to": "3",
            "next_activity_date": null,
            "label_ids": [1, 2],
            "marketing_status": if id.is_multiple_of(3) { "unsubscribed" } else { "subscribed" },
            "is_deleted": id.is_multiple_of(5),
            "interests": ["chess", format!("topic {id}")],
            "5a1c3f0e9b8d7c6a5f4e3d2c1b0a998877665544": "Enterprise",
            "0b7e2d9c4a1f3e8d6c5b4a3928171615141312a1": 1234.5,
            "notes": "a \"quoted\" note\nwith \\ escapes and \u{e9}\u{1F600}",
            "big": 18_446_744_073_709_551_615_u64,
            "small": -9_223_372_036_854_775_808_i64,
            "float": 1.0e-7,
        })
    }

    fn crm_page(ids: std::ops::RangeInclusive<u64>, more: bool) -> String {
        let records: Vec<Value> = ids.map(person).collect();
        json!({
            "success": true,
            "data": records,
            "additional_data": {"pagination": {"start": 0, "limit": 500,
                "more_items_in_collection": more, "next_start": 500}},
            "related_objects": {"user": {"3": {"id": 3, "name": "Owner 3"}}}
        })
        .to_string()
    }

    #[test]
    fn reads_are_the_same_on_a_pipedrive_like_page() {
        let crm = crm();
        for body in [
            crm_page(1..=30, true),
            crm_page(1..=1, false),
            r#"{"success": true, "data": [], "additional_data": {"pagination": {}}}"#.into(),
            r#"{"success": true, "data": null}"#.into(),
            r#"{"success": false, "error": "unauthorized"}"#.into(),
            r#"{"data": [1, "x", null, [{"id": 1, "junk": 2}], {"id": 2, "junk": 3}, {}]}"#.into(),
            r#"{"data": [[{"id": 1, "junk": 2}, {"id": 2}]]}"#.into(),
            r#"{"data": [{"id": 1, "junk": 2}]}"#.into(),
            r#"{"data": {"id": 1, "emails": [], "junk": 2}}"#.into(),
            r#"{"data": {"a": {"id": 1, "junk": 2}, "b": 2}}"#.into(),
            r#"{"data": "text", "additional_data": 1}"#.into(),
            "[1, 2, {\"data\": []}]".into(),
            "\"just a string\"".into(),
            "12".into(),
        ] {
            assert_same_reads(&crm, &body);
        }
    }

    #[test]
    fn members_nothing_reads_are_not_built() {
        let crm = crm();
        let (full, projected) = assert_same_reads(&crm, &crm_page(1..=3, true));
        let record = &projected["data"][0];
        let mut keys: Vec<&str> = record
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "5a1c3f0e9b8d7c6a5f4e3d2c1b0a998877665544",
                "emails",
                "first_name",
                "id",
                "interests",
                "is_deleted",
                "last_name",
                "marketing_status",
                "name",
                "org_id",
                "phones",
                "update_time",
            ]
        );
        // Kept members whole, however deep (not pruned below the record's top level).
        assert_eq!(record["org_id"], full["data"][0]["org_id"]);
        assert_eq!(record["emails"], full["data"][0]["emails"]);
        assert_ne!(projected, full);
        // Everything outside the records is parsed in full.
        let outside = |v: &Value| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("data");
            v
        };
        assert_eq!(outside(&projected), outside(&full));
        assert_eq!(outside(&full).as_object().unwrap().len(), 3);
    }

    #[test]
    fn kept_members_come_out_as_value_builds_them() {
        let crm = crm();
        // Numbers at the edges of each representation, escapes in keys and strings,
        // repeated keys (the last wins, kept or skipped), an escaped key that names a kept
        // member.
        let body = r#"{"data": [{
            "id": 18446744073709551615, "first_name": "x", "first_name": "Ada",
            "last_name": "L\u00f6velace", "name": 1e-400, "junk": 1, "junk": {"a": [1, 2]},
            "org_\u0069d": {"name": -9223372036854775808, "n": 1.7976931348623157e308},
            "update_time": 123456789012345678901234567890, "phones": [0.1, -0, 0.0, 1E2]
        }, {"id": -1, "id": "\ud83d\ude00", "first_name": null}],
        "additional_data": {"pagination": {"more_items_in_collection": 1.0}}}"#;
        let (full, projected) = assert_same_reads(&crm, body);
        let full_first = &full["data"][0];
        let first = &projected["data"][0];
        for key in [
            "id",
            "first_name",
            "last_name",
            "name",
            "org_id",
            "update_time",
            "phones",
        ] {
            assert_eq!(first[key], full_first[key], "{key}");
            assert_eq!(first[key].to_string(), full_first[key].to_string(), "{key}");
        }
        assert_eq!(first["first_name"], "Ada");
        assert!(first.get("junk").is_none());
        assert_eq!(projected["data"][1], full["data"][1]);
        assert_eq!(projected["additional_data"], full["additional_data"]);
    }

    #[test]
    fn objects_that_value_reads_specially_are_left_to_value() {
        let crm = crm();
        // With serde_json's `raw_value` feature, an object whose first key is its token
        // is read as the JSON text it holds, or is an error.
        let raw = r#"{"$serde_json::private::RawValue": "{\"id\": 5, \"junk\": 1}"}"#;
        let body = format!(r#"{{"data": [{raw}, {{"id": 6, "junk": 2}}]}}"#);
        let (full, projected) = assert_same_reads(&crm, &body);
        assert_eq!(full["data"][0], json!({"id": 5, "junk": 1}));
        assert_eq!(projected["data"][0], full["data"][0]);
        assert_eq!(projected["data"][1], json!({"id": 6}));
        let at_top =
            r#"{"$serde_json::private::RawValue": "{\"data\": [{\"id\": 1, \"junk\": 1}]}"}"#;
        let (full, projected) = assert_same_reads(&crm, at_top);
        assert_eq!(projected, full);
        assert_eq!(full, json!({"data": [{"id": 1, "junk": 1}]}));
        let projection = PageProjection::for_connector(&crm).unwrap();
        for body in [
            r#"{"data": [{"$serde_json::private::RawValue": "1", "id": 2}]}"#,
            r#"{"data": [{"$serde_json::private::RawValue": 1}]}"#,
            r#"{"data": [{"$serde_json::private::RawValue": "[1,"}]}"#,
        ] {
            let full = serde_json::from_str::<Value>(body);
            let projected = projection.parse(body.as_bytes());
            assert_eq!(
                full.map_err(|e| e.to_string()),
                projected.map_err(|e| e.to_string()),
                "{body}"
            );
        }
        // Not as a later key.
        let later = r#"{"data": [{"id": 1, "$serde_json::private::RawValue": "2"}]}"#;
        let (_, projected) = assert_same_reads(&crm, later);
        assert_eq!(projected, json!({"data": [{"id": 1}]}));
    }

    #[test]
    fn records_as_members_of_an_object_and_nested_containers() {
        let members = connector(
            "pagination:\n  type: cursor\n  cursor: $.meta.next\n  stop: [missing_token]\n\
             records: $.results.*\nfields:\n  email: $.email\n  external_id: $.id\n",
        );
        let projection = PageProjection::for_connector(&members).unwrap();
        assert!(projection.wildcard);
        let body = r#"{"results": {"b": {"id": 2, "email": "b@example.com", "x": [1]},
            "a": {"id": 1, "email": "a@example.com", "y": {"z": 1}}, "c": 7, "d": [{"x": 1}]},
            "meta": {"next": "abc"}}"#;
        let (full, projected) = assert_same_reads(&members, body);
        assert_eq!(
            projected["results"],
            json!({"a": {"id": 1, "email": "a@example.com"}, "b": {"id": 2, "email":
                   "b@example.com"}, "c": 7, "d": [{"x": 1}]})
        );
        assert_eq!(projected["meta"], full["meta"]);
        // One array member: its elements are the records, kept whole.
        assert_same_reads(&members, r#"{"results": {"only": [{"id": 1, "x": 2}]}}"#);
        assert_same_reads(&members, r#"{"results": [{"id": 1, "x": 2}, {"id": 3}]}"#);

        let nested = connector(
            "pagination:\n  type: next_url\n  next_url: $.response.paging.next\n  \
             total: $.response.total\n  stop: [missing_token]\n\
             records: $.response.result.items[*]\nfields:\n  email: $.contact.email\n",
        );
        let projection = PageProjection::for_connector(&nested).unwrap();
        assert_eq!(projection.container, ["response", "result", "items"]);
        assert_eq!(projection.keep.sorted(), ["contact"]);
        let body = r#"{"response": {"total": 2, "paging": {"next": "https://x/2"},
            "result": {"count": 2, "items": [
                {"contact": {"email": "a@example.com", "extra": 1}, "other": 2},
                {"contact": {"email": "b@example.com"}, "other": [3]}
            ], "items_total": 2}}, "items": [{"other": 1}]}"#;
        let (full, projected) = assert_same_reads(&nested, body);
        assert_eq!(
            projected["response"]["result"]["items"],
            json!([{"contact": {"email": "a@example.com", "extra": 1}},
                   {"contact": {"email": "b@example.com"}}])
        );
        for outside in [
            "/response/total",
            "/response/paging",
            "/response/result/count",
            "/response/result/items_total",
            "/items",
        ] {
            assert_eq!(
                projected.pointer(outside),
                full.pointer(outside),
                "{outside}"
            );
        }
        // A container that is one object: it is the record.
        let single =
            connector("pagination:\n  type: none\nrecords: $.person\nfields:\n  email: $.email\n");
        let (_, projected) =
            assert_same_reads(&single, r#"{"person": {"email": "a@example.com", "x": 1}}"#);
        assert_eq!(projected, json!({"person": {"email": "a@example.com"}}));
        assert_same_reads(
            &single,
            r#"{"person": [{"email": "a@example.com", "x": 1}]}"#,
        );
    }

    #[test]
    fn every_shipped_connector_reads_the_same_from_its_sample_response() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut projected = Vec::new();
        for connector in load_connectors(&repo.join("connectors.d")) {
            let sample = repo.join(format!("tests/fixtures/responses/{}.json", connector.id));
            let Ok(body) = std::fs::read_to_string(&sample) else {
                continue;
            };
            if PageProjection::for_connector(&connector).is_some() {
                let (full, pruned) = assert_same_reads(&connector, &body);
                if pruned != full {
                    projected.push(connector.id.clone());
                }
            }
        }
        projected.sort();
        // Not: heap, bigcommerce-v2 (records at the top: `$[*]`), stripe (its cursor,
        // `$.data[-1:].id`, reads the records), zoho-coql (its bracketed member names,
        // `$['Account_Name.Account_Name']`, are outside the direct-walk grammar).
        assert_eq!(
            projected,
            [
                "batchbook",
                "bigcommerce",
                "google-people",
                "hubspot",
                "hubspot-search",
                "mailchimp",
                "pipedrive",
                "salesforce",
                "shopify",
                "zoho",
            ]
        );
    }

    #[test]
    fn the_benchmark_connector_is_projected() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let connectors = load_connectors(&repo.join("benches/fixtures/pipedrive/connectors.d"));
        let projection = PageProjection::for_connector(&connectors[0]).unwrap();
        assert_eq!(projection.container, ["data"]);
        assert!(projection.wildcard);
        assert_eq!(projection.keep.sorted().len(), 13, "{:?}", projection.keep);
    }

    #[test]
    fn no_projection_where_the_records_path_is_not_a_member_chain() {
        for records in [
            "$",
            "$[*]",
            "$.*",
            "$.data[0]",
            "$.data[*].x",
            "$.data[*][*]",
            "$.data.*.*",
            "$..data",
            "$.data[?@.x == 1]",
            "$.data[0:2]",
            "$['data','more']",
        ] {
            let mut crm = crm();
            crm.records = path(records);
            assert_eq!(PageProjection::for_connector(&crm), None, "{records}");
        }
        for records in [
            "$.data",
            "$.data[*]",
            "$.data.*",
            "$['data'].x[*]",
            "$.a.b.c",
        ] {
            let mut crm = crm();
            crm.records = path(records);
            assert!(PageProjection::for_connector(&crm).is_some(), "{records}");
        }
    }

    #[test]
    fn no_projection_where_a_record_path_does_not_start_with_a_member() {
        let unknown = [
            "$",
            "$.*",
            "$[*]",
            "$..email",
            "$[?@.x == 1]",
            "$[0]",
            "$['a','b']",
            "$.emails[0:1]",
            "$.a[?@.n > 1]",
        ];
        type Set = fn(&mut Connector, JsonPath);
        let setters: [(&str, Set); 8] = [
            ("email", |c, p| c.fields.email.push(p)),
            ("full_name", |c, p| c.fields.full_name = vec![p]),
            ("phone", |c, p| c.fields.phone.insert(0, p)),
            ("external_id", |c, p| c.fields.external_id = vec![p]),
            ("updated_at", |c, p| {
                c.fields.updated_at.as_mut().unwrap().paths.push(p);
            }),
            ("custom", |c, p| c.custom_fields[1].paths.push(p)),
            ("subscription", |c, p| c.subscription[0].path = p),
            ("deleted", |c, p| c.deleted.as_mut().unwrap().path = p),
        ];
        for (name, set) in setters {
            for source in unknown {
                let mut crm = crm();
                set(&mut crm, path(source));
                assert_eq!(
                    PageProjection::for_connector(&crm),
                    None,
                    "{name}: {source}"
                );
            }
            let mut crm = crm();
            set(&mut crm, path("$['a b'][?@.x == 1].y"));
            let projection = PageProjection::for_connector(&crm).unwrap();
            assert!(projection.keep.contains("a b"), "{name}");
        }
    }

    #[test]
    fn no_projection_where_a_page_path_may_read_the_records() {
        let common =
            |has_more: Option<&str>, total: Option<&str>, pages: Option<&str>| PageCommon {
                stop: vec![StopRule::EmptyPage],
                has_more: has_more.map(path),
                total: total.map(path),
                total_pages: pages.map(path),
                max_pages: 10,
            };
        let with = |records: &str, pagination: Pagination| {
            let mut crm = crm();
            crm.records = path(records);
            crm.pagination = pagination;
            PageProjection::for_connector(&crm)
        };
        let reading = [
            "$",
            "$.data",
            "$.data[-1].id",
            "$.data[0]",
            "$.data.next",
            "$.*",
            "$.*.next",
            "$[0]",
            "$..next",
            "$.data[-1:].id",
            "$[?@.next == 1]",
            "$['data','meta'].next",
        ];
        for source in reading {
            let p = || Some(source);
            let cases = [
                Pagination::Cursor {
                    cursor: path(source),
                    common: common(None, None, None),
                },
                Pagination::NextUrl {
                    next_url: path(source),
                    verbatim: true,
                    common: common(None, None, None),
                },
                Pagination::Offset {
                    start: 0,
                    common: common(p(), None, None),
                },
                Pagination::PageNumber {
                    start: 1,
                    common: common(None, p(), None),
                },
                Pagination::Keyset {
                    common: common(None, None, p()),
                },
                Pagination::LinkHeader {
                    common: common(p(), Some("$.total"), None),
                },
            ];
            for pagination in cases {
                assert_eq!(with("$.data[*]", pagination), None, "{source}");
            }
        }
        // Leaving the container chain at another member is fine, at any depth.
        let disjoint = [
            ("$.data[*]", "$.additional_data.total"),
            ("$.data[*]", "$.meta[0].next"),
            ("$.data[*]", "$['data x']"),
            ("$.data[*]", "$.next[?@.rel == 'next'].href"),
            ("$.a.b[*]", "$.a.c"),
            ("$.a.b[*]", "$.a.c[*].d"),
            ("$.a.b", "$.c.b"),
        ];
        for (records, page) in disjoint {
            let cursor = Pagination::Cursor {
                cursor: path(page),
                common: common(Some(page), Some(page), Some(page)),
            };
            assert!(with(records, cursor).is_some(), "{records} / {page}");
        }
        // The container or one of its ancestors.
        for (records, page) in [
            ("$.a.b[*]", "$.a"),
            ("$.a.b[*]", "$.a.b"),
            ("$.a.b", "$.a.b.c"),
        ] {
            let cursor = Pagination::Cursor {
                cursor: path(page),
                common: common(None, None, None),
            };
            assert_eq!(with(records, cursor), None, "{records} / {page}");
        }
        // No page path at all.
        assert!(with("$.data[*]", Pagination::None).is_some());
        assert!(
            with(
                "$.data[*]",
                Pagination::LinkHeader {
                    common: common(None, None, None)
                }
            )
            .is_some()
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        let projection = PageProjection::for_connector(&crm()).unwrap();
        // Past serde_json's recursion limit, in a member nothing reads.
        let deep = format!(
            "{{\"data\": [{{\"junk\": {}{}}}]}}",
            "[".repeat(130),
            "]".repeat(130)
        )
        .into_bytes();
        let bad: &[&[u8]] = &[
            b"",
            b"   ",
            b"{",
            b"{\"data\": [",
            b"{\"data\": [{\"junk\": 1,}]}",
            b"{\"data\": [{\"junk\": [1,]}]}",
            b"{\"data\": [{\"junk\": {\"a\" 1}}]}",
            b"{\"data\": [{\"junk\": {1: 1}}]}",
            b"{\"data\": [{\"junk\": 01}]}",
            b"{\"data\": [{\"junk\": 1.}]}",
            b"{\"data\": [{\"junk\": -}]}",
            b"{\"data\": [{\"junk\": tru}]}",
            b"{\"data\": [{\"junk\": \"\\q\"}]}",
            b"{\"data\": [{\"junk\": \"\\u12\"}]}",
            b"{\"data\": [{\"junk\": \"a\nb\"}]}",
            b"{\"data\": [{\"junk\": \"open}]}",
            b"{\"data\": [{\"junk\": \"\xff\xfe\"}]}",
            b"{\"data\": [{\"id\": \"\xc3\x28\"}]}",
            b"{\"data\": [{\"j\xffnk\": 1}]}",
            b"{\"data\": [{\"junk\": 1}], \"meta\": [}",
            b"{\"data\": [{\"junk\": 1}]} x",
            b"{\"data\": [{\"junk\": 1}]}{}",
            b"{\"data\": []},",
            b"{\"data\": [{\"junk\": 1}]]",
            b"{\"data\": [{\"junk\": 1}}",
            b"{\"data\": [{\"junk\": 1} {\"junk\": 2}]}",
            // What `Value` refuses though the grammar allows it, kept or not.
            b"{\"data\": [{\"id\": 1e400}]}",
            b"{\"data\": [{\"junk\": 1e400}]}",
            b"{\"data\": [{\"junk\": [-1e309]}]}",
            b"{\"data\": [{\"id\": \"\\ud800\"}]}",
            b"{\"data\": [{\"junk\": \"\\ud800\"}]}",
            b"{\"data\": [{\"junk\": {\"a\": \"\\udc00x\"}}]}",
            b"{\"data\": [{\"ju\\ud83dnk\": 1}]}",
            b"{\"data\": [{\"junk\": \"\\ud83d\\u0041\"}]}",
            &deep,
        ];
        for body in bad {
            let full = serde_json::from_slice::<Value>(body);
            let projected = projection.parse(body);
            let shown = String::from_utf8_lossy(body);
            assert!(full.is_err(), "the full parse accepts {shown}");
            assert!(projected.is_err(), "the projection accepts {shown}");
            assert_eq!(
                projected.unwrap_err().to_string(),
                full.unwrap_err().to_string(),
                "{shown}"
            );
        }
        // Whitespace around a value is not garbage; nesting within the limit is fine.
        assert!(projection.parse(b" \n{\"data\": []}\r\n\t").is_ok());
        let nested = format!(
            "{{\"data\": [{{\"junk\": {}{}}}]}}",
            "[".repeat(120),
            "]".repeat(120)
        );
        assert_eq!(
            projection.parse(nested.as_bytes()).unwrap(),
            json!({"data": [{}]})
        );
    }

    /// A JSON text whose objects may repeat keys and spell them with escapes.
    fn random_text(rng: &mut rand::rngs::StdRng, depth: u32, out: &mut String) {
        use rand::Rng;
        const KEYS: [&str; 12] = [
            "\"id\"",
            "\"emails\"",
            "\"em\\u0061ils\"",
            "\"name\"",
            "\"junk\"",
            "\"x\"",
            "\"org_id\"",
            "\"data\"",
            "\"is_deleted\"",
            "\"first_name\"",
            "\"\\ud83d\\ude00\"",
            "\"update_time\"",
        ];
        const SCALARS: [&str; 12] = [
            "true",
            "false",
            "null",
            "0",
            "-1",
            "1.5",
            "1e3",
            "18446744073709551616",
            "\"\"",
            "\"ada@example.com\"",
            "\"2024-01-02 03:04:05\"",
            "\"a\\\"b\\n\"",
        ];
        match if depth == 0 {
            0
        } else {
            rng.random_range(0..4)
        } {
            0 | 1 => out.push_str(SCALARS[rng.random_range(0..SCALARS.len())]),
            2 => {
                out.push('[');
                for i in 0..rng.random_range(0..4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_text(rng, depth - 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.random_range(0..6) {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(KEYS[rng.random_range(0..KEYS.len())]);
                    out.push(':');
                    random_text(rng, depth - 1, out);
                }
                out.push('}');
            }
        }
    }

    #[test]
    fn random_pages_read_the_same() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(20240501);
        let connectors = [
            crm(),
            connector(
                "pagination:\n  type: cursor\n  cursor: $.data.x\n  has_more: $.junk\n  \
                 stop: [missing_token]\nrecords: $.data.emails.*\nfields:\n  \
                 email: \"$.emails[?@.primary == true].value\"\n  external_id: $.id\n  \
                 full_name: $.name\n",
            ),
        ];
        for _ in 0..400 {
            let mut body = String::from("{\"data\": ");
            if rng.random_bool(0.5) {
                body.push('[');
                for i in 0..rng.random_range(0..5) {
                    if i > 0 {
                        body.push(',');
                    }
                    random_text(&mut rng, 3, &mut body);
                }
                body.push(']');
            } else {
                random_text(&mut rng, 4, &mut body);
            }
            body.push_str(", \"junk\": ");
            random_text(&mut rng, 2, &mut body);
            body.push('}');
            for connector in &connectors {
                assert_same_reads(connector, &body);
            }
        }
    }
}
