//! Stage 2, check: rules across files that need no compilation, run on the parsed specs.
//! Each problem is a [`Diagnostic`] on the later file, naming the earlier one.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::config::diagnostic::Diagnostic;
use crate::config::read::SourceFile;
use crate::config::spec::{ConnectorSpec, ImporterSpec};
use crate::model::{CustomFieldType, personalization_tag};

/// Two service names that differ only in case or punctuation (`fakecrm`, `FakeCRM`,
/// `fake-crm`) give the same personalization tags, so their connectors would share custom
/// fields without anyone having said so: an error on the later file, naming the earlier.
pub fn service_names(files: &[SourceFile<ConnectorSpec>], out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<String, (String, &Path)> = BTreeMap::new();
    for file in files {
        let service = file.spec.service.clone().unwrap_or_else(|| file.id.clone());
        let prefix = personalization_tag(&service, "");
        match seen.get(&prefix) {
            Some((other, other_file)) if *other != service => {
                let key = if file.spec.service.is_some() {
                    "service"
                } else {
                    ""
                };
                out.push(Diagnostic::error(
                    &file.shown,
                    file.locator.find(key),
                    key,
                    format!(
                        "service '{service}' and service '{other}' of {} give the same tags \
                         ({}) and would share custom fields; write the service name the same \
                         way in both",
                        other_file.display(),
                        prefix.trim_end_matches('%').to_string() + "_...%"
                    ),
                ));
            }
            Some(_) => {}
            None => {
                seen.insert(prefix, (service, file.shown.as_path()));
            }
        }
    }
}

/// Two connectors of one service share custom fields by tag: a tag that two different
/// labels give is an error (the same label in both is sharing, and fine).
pub fn service_tags(files: &[SourceFile<ConnectorSpec>], out: &mut Vec<Diagnostic>) {
    type Seen<'f> = BTreeMap<(String, String), (String, &'f Path, CustomFieldType)>;
    let mut seen: Seen = BTreeMap::new();
    for file in files {
        let service = file.spec.service.clone().unwrap_or_else(|| file.id.clone());
        for (index, cf) in file.spec.contacts.custom_fields.iter().enumerate() {
            let tag = personalization_tag(&service, &cf.label);
            let field_type = cf.field_type.unwrap_or(CustomFieldType::Text);
            match seen.get(&(service.clone(), tag.clone())) {
                Some((label, other, other_type))
                    if *label == cf.label
                        && *other_type != field_type
                        && *other != file.shown.as_path() =>
                {
                    // One field in the store: the first connector to run would fix its
                    // type and the other's values would be converted or fail.
                    let key = format!("contacts.custom_fields[{index}].type");
                    out.push(Diagnostic::warning(
                        &file.shown,
                        file.locator.find(&key),
                        key,
                        format!(
                            "custom field '{label}' is `{}` here but `{}` in {} (same service '{service}', one field {tag})",
                            <&str>::from(field_type),
                            <&str>::from(*other_type),
                            other.display()
                        ),
                    ));
                }
                Some((label, other, _)) if *label != cf.label && *other != file.shown.as_path() => {
                    let key = format!("contacts.custom_fields[{index}].label");
                    out.push(Diagnostic::error(
                        &file.shown,
                        file.locator.find(&key),
                        key,
                        format!(
                            "label '{}' gives the tag {tag}, as label '{label}' in {} does (same service '{service}')",
                            cf.label,
                            other.display()
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    seen.insert(
                        (service.clone(), tag),
                        (cf.label.clone(), file.shown.as_path(), field_type),
                    );
                }
            }
        }
    }
}

/// Two enabled importers with the same connector, account (credentials and settings),
/// filters and list make two data streams into one list: a warning on the later file.
pub fn duplicate_streams(files: &[SourceFile<ImporterSpec>], out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<String, &SourceFile<ImporterSpec>> = BTreeMap::new();
    for file in files {
        let s = &file.spec;
        // A disabled copy is a deliberate spare, not a second stream.
        if s.enabled == Some(false) {
            continue;
        }
        let key = serde_json::json!({
            "connector": s.connector,
            "auth": s.auth,
            "credentials": serde_json::to_value(&s.credentials).unwrap_or(Value::Null),
            "settings": s.settings,
            "filters": s.filters,
            "list": s.list,
        })
        .to_string();
        if let Some(first) = seen.get(&key) {
            out.push(Diagnostic::warning(
                &file.shown,
                file.locator.find("connector"),
                "",
                format!(
                    "importer '{}' ({}) already imports the same connector, account, filters and list: two data streams into one list",
                    first.id,
                    first.shown.display()
                ),
            ));
        } else {
            seen.insert(key, file);
        }
    }
}
