//! Compiles `contacts.fields` (standard fields), `contacts.custom_fields`,
//! `contacts.subscription` and `contacts.deleted`: JSONPaths parsed, formats and zones
//! read, personalization tags derived and checked for collisions.

use std::collections::BTreeMap;

use crate::config::compile::context::{TemplateCx, join};
use crate::config::spec::{
    CustomFieldSpec, FieldsSpec, PathList, PredicateSpec, SubscriptionSpecs, TimestampSpec,
};
use crate::model::{self, CustomFieldType, personalization_tag};
use crate::plan::{CustomField, Fields, Predicate, Subscription, Timestamp};
use crate::timeformat::{TimeFormat, parse_zone};

/// Standard contact fields a client-side filter may read.
pub const STANDARD_FIELDS: &[&str] = &[
    "email",
    "first_name",
    "last_name",
    "full_name",
    "phone",
    "organization",
    "external_id",
    "updated_at",
];

/// `contacts.fields`: each standard field's JSONPaths, first non-empty match wins.
pub(super) fn standard(cx: &mut TemplateCx, f: &FieldsSpec) -> Fields {
    let mut optional = |name: &str, list: &Option<PathList>| {
        list.as_ref()
            .map(|l| cx.paths(&format!("contacts.fields.{name}"), l))
            .unwrap_or_default()
    };
    let first_name = optional("first_name", &f.first_name);
    let last_name = optional("last_name", &f.last_name);
    let full_name = optional("full_name", &f.full_name);
    let phone = optional("phone", &f.phone);
    let organization = optional("organization", &f.organization);
    let external_id = optional("external_id", &f.external_id);
    Fields {
        email: cx.paths("contacts.fields.email", &f.email),
        first_name,
        last_name,
        full_name,
        phone,
        organization,
        external_id,
        updated_at: f
            .updated_at
            .as_ref()
            .and_then(|ts| timestamp(cx, "contacts.fields.updated_at", ts)),
    }
}

/// `contacts.custom_fields`: each label gives a tag `%SERVICE_LABEL%` no other label of
/// this connector gives; a delimiter only on lists, a format only on dates.
pub(super) fn custom(
    cx: &mut TemplateCx,
    service: &str,
    specs: &[CustomFieldSpec],
) -> Vec<CustomField> {
    let mut custom_fields = Vec::new();
    let mut tags: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (index, cf) in specs.iter().enumerate() {
        let key = format!("contacts.custom_fields[{index}]");
        let field_type = cf.field_type.unwrap_or(CustomFieldType::Text);
        if cf.label.trim().is_empty() {
            cx.file.error(&join(&key, "label"), "must not be empty");
        }
        let tag = personalization_tag(service, &cf.label);
        if let Some((other, other_label)) = tags.get(&tag) {
            cx.file.error(
                &join(&key, "label"),
                format!(
                    "label '{}' gives the tag {tag}, as custom_fields[{other}] ('{other_label}') does",
                    cf.label
                ),
            );
        } else {
            tags.insert(tag.clone(), (index, cf.label.clone()));
        }
        if cf.delimiter.is_some() && field_type != CustomFieldType::List {
            cx.file.error(
                &join(&key, "delimiter"),
                "only a `list` field is split on a delimiter",
            );
        }
        if cf.delimiter.as_deref() == Some("") {
            cx.file.error(&join(&key, "delimiter"), "must not be empty");
        }
        if cf.format.is_some() && field_type != CustomFieldType::Date {
            cx.file
                .error(&join(&key, "format"), "only a `date` field has a format");
        }
        let format = match cf.format.as_deref().map(TimeFormat::parse) {
            None => TimeFormat::Rfc3339,
            Some(Ok(f)) => f,
            Some(Err(message)) => {
                cx.file.error(&join(&key, "format"), message);
                TimeFormat::Rfc3339
            }
        };
        let paths = cx.paths(&join(&key, "path"), &cf.path);
        custom_fields.push(CustomField {
            def: model::CustomFieldDef {
                tag,
                label: cf.label.clone(),
                field_type,
                service: service.to_string(),
            },
            paths,
            delimiter: cf.delimiter.clone(),
            format,
        });
    }
    custom_fields
}

/// `contacts.subscription`: where each status is and what its values mean.
pub(super) fn subscription(
    cx: &mut TemplateCx,
    spec: Option<&SubscriptionSpecs>,
) -> Vec<Subscription> {
    let Some(spec) = spec else {
        return Vec::new();
    };
    let many = matches!(spec, SubscriptionSpecs::Many(_));
    if spec.as_slice().is_empty() {
        cx.file.error(
            "contacts.subscription",
            "give at least one field (e.g. {path: $.status, map: {unsubscribed: unsubscribed}})",
        );
    }
    let mut out = Vec::new();
    for (i, s) in spec.as_slice().iter().enumerate() {
        let key = if many {
            format!("contacts.subscription[{i}]")
        } else {
            "contacts.subscription".to_string()
        };
        if s.map.is_empty() {
            cx.file.error(
                &format!("{key}.map"),
                "map at least one service value (e.g. `unsubscribed: unsubscribed`)",
            );
        }
        if let Some(path) = cx.path(&format!("{key}.path"), &s.path) {
            out.push(Subscription {
                path,
                map: s.map.clone(),
            });
        }
    }
    out
}

/// `contacts.deleted`: the predicate marking a record deleted at the service.
pub(super) fn deleted(cx: &mut TemplateCx, spec: Option<&PredicateSpec>) -> Option<Predicate> {
    let d = spec?;
    cx.path("contacts.deleted.path", &d.path)
        .map(|path| Predicate {
            path,
            equals: d.equals.clone(),
        })
}

fn timestamp(cx: &mut TemplateCx, key: &str, spec: &TimestampSpec) -> Option<Timestamp> {
    let paths = cx.paths(&join(key, "path"), &spec.path);
    let format = match spec.format.as_deref().map(TimeFormat::parse) {
        None => TimeFormat::Rfc3339,
        Some(Ok(f)) => f,
        Some(Err(message)) => {
            cx.file.error(&join(key, "format"), message);
            return None;
        }
    };
    let zone = match spec.timezone.as_deref().map(parse_zone) {
        None => chrono::FixedOffset::east_opt(0).expect("zero offset is valid"),
        Some(Ok(z)) => z,
        Some(Err(message)) => {
            cx.file.error(&join(key, "timezone"), message);
            return None;
        }
    };
    Some(Timestamp {
        paths,
        format,
        zone,
    })
}
