//! Client-side filters: the importer's predicates on mapped contacts, for what a service
//! cannot filter itself.
//!
//! Owns the comparison semantics of `equals`, `one_of`, `contains`, `exists`, `before`
//! and `after` on standard and custom fields. Resolves field names once per run, never
//! per record; never sees raw JSON (server-side filters are the templates' business).
//! Text comparisons ignore case and surrounding spaces: a segment named `VIP` in the
//! importer and `vip` at the service is the same segment to the person writing it.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::{ContactRecord, FieldValue};
use crate::plan::{ClientFilter, Connector, FilterOp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Email,
    FirstName,
    LastName,
    Phone,
    Organization,
    ExternalId,
    UpdatedAt,
    Custom(usize),
}

#[derive(Debug)]
struct Compiled {
    target: Target,
    op: FilterOp,
    value: Value,
}

/// The importer's client-side filters, resolved against its connector.
#[derive(Debug, Default)]
pub struct ClientFilters {
    filters: Vec<Compiled>,
}

/// A field value as filters see it.
enum Seen<'a> {
    Text(&'a str),
    Number(f64),
    Date(DateTime<Utc>),
    List(&'a [String]),
}

impl ClientFilters {
    /// Resolves each filter's field: a standard field name, else a custom field label
    /// (case-insensitive) or tag.
    ///
    /// # Errors
    /// The name of a filter whose field the connector does not map.
    pub fn new(filters: &[ClientFilter], connector: &Connector) -> Result<Self, String> {
        let mut compiled = Vec::new();
        for filter in filters {
            let target = match filter.field.as_str() {
                "email" => Target::Email,
                "first_name" => Target::FirstName,
                "last_name" => Target::LastName,
                "phone" => Target::Phone,
                "organization" => Target::Organization,
                "external_id" => Target::ExternalId,
                "updated_at" => Target::UpdatedAt,
                other => connector
                    .custom_fields
                    .iter()
                    .position(|f| f.def.label.eq_ignore_ascii_case(other) || f.def.tag == other)
                    .map(Target::Custom)
                    .ok_or_else(|| {
                        format!(
                            "filter `{}` reads field `{other}`, which connector `{}` does not map",
                            filter.name, connector.id
                        )
                    })?,
            };
            compiled.push(Compiled {
                target,
                op: filter.op,
                value: filter.value.clone(),
            });
        }
        Ok(Self { filters: compiled })
    }

    /// Whether a contact passes every filter.
    pub fn keep(&self, contact: &ContactRecord) -> bool {
        self.filters.iter().all(|f| f.keep(contact))
    }

    /// Whether there is any filter.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

impl Compiled {
    fn seen<'c>(&self, contact: &'c ContactRecord) -> Option<Seen<'c>> {
        let text = |v: &'c Option<String>| v.as_deref().map(Seen::Text);
        match self.target {
            Target::Email => Some(Seen::Text(&contact.email)),
            Target::FirstName => text(&contact.first_name),
            Target::LastName => text(&contact.last_name),
            Target::Phone => text(&contact.phone),
            Target::Organization => text(&contact.organization),
            Target::ExternalId => text(&contact.external_id),
            Target::UpdatedAt => contact.updated_at.map(Seen::Date),
            Target::Custom(index) => {
                contact
                    .custom_values
                    .iter()
                    .find(|v| v.field == index)
                    .map(|v| match &v.value {
                        FieldValue::Text(s) => Seen::Text(s),
                        FieldValue::Number(n) => Seen::Number(*n),
                        FieldValue::Date(t) => Seen::Date(*t),
                        FieldValue::List(items) => Seen::List(items),
                    })
            }
        }
    }

    fn keep(&self, contact: &ContactRecord) -> bool {
        let seen = self.seen(contact);
        match self.op {
            FilterOp::Exists => {
                let present = match &seen {
                    None => false,
                    Some(Seen::Text(s)) => !s.trim().is_empty(),
                    Some(Seen::List(items)) => !items.is_empty(),
                    Some(_) => true,
                };
                present == self.value.as_bool().unwrap_or(true)
            }
            FilterOp::Equals => seen.is_some_and(|s| equals(&s, &self.value)),
            FilterOp::OneOf => seen.is_some_and(|s| match &self.value {
                Value::Array(options) => options.iter().any(|o| equals(&s, o)),
                other => equals(&s, other),
            }),
            FilterOp::Contains => seen.is_some_and(|s| {
                let Some(needle) = value_text(&self.value) else {
                    return false;
                };
                match s {
                    Seen::Text(t) => fold(t).contains(&needle),
                    Seen::List(items) => items.iter().any(|i| fold(i) == needle),
                    _ => false,
                }
            }),
            FilterOp::Before | FilterOp::After => {
                let (Some(Seen::Date(at)), Some(bound)) = (seen, value_time(&self.value)) else {
                    return false;
                };
                if self.op == FilterOp::Before {
                    at < bound
                } else {
                    at > bound
                }
            }
        }
    }
}

fn fold(text: &str) -> String {
    text.trim().to_lowercase()
}

fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(fold(s)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn value_time(value: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.as_str()?.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn equals(seen: &Seen<'_>, expected: &Value) -> bool {
    match seen {
        Seen::Text(t) => value_text(expected).is_some_and(|e| fold(t) == e),
        Seen::Number(n) => match expected {
            Value::Number(e) => e.as_f64() == Some(*n),
            Value::String(e) => e.trim().parse::<f64>().ok() == Some(*n),
            _ => false,
        },
        Seen::Date(t) => value_time(expected) == Some(*t),
        Seen::List(items) => {
            value_text(expected).is_some_and(|e| items.iter().any(|i| fold(i) == e))
        }
    }
}
