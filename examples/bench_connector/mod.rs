//! The import benchmark's connector (`benches/fixtures/pipedrive/`), loaded as `tributary`
//! loads it, with field bindings as a store would give them: what the measuring examples
//! map and parse with.

use std::path::PathBuf;

use tributary::config::load::load_plan;
use tributary::model::FieldBinding;
use tributary::plan::{Connector, Plan};

/// Loads the plan holding the benchmark connector (`pipedrive_v1_bench`).
pub fn load() -> Plan {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("tributary.yaml");
    std::fs::write(
        &config,
        format!(
            "connectors_dir: {}\nimporters_dir: {}\n",
            repo.join("benches/fixtures/pipedrive/connectors.d")
                .display(),
            dir.path().join("none").display()
        ),
    )
    .expect("writing the config");
    load_plan(&config).unwrap_or_else(|d| panic!("loading the connector: {d:?}"))
}

/// The benchmark connector of `plan`.
pub fn connector(plan: &Plan) -> &Connector {
    plan.connectors
        .get("pipedrive_v1_bench")
        .expect("the benchmark connector")
}

/// Bindings numbering the connector's custom fields from 1, with their declared types.
pub fn bindings(connector: &Connector) -> Vec<FieldBinding> {
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
