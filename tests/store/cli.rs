//! `tributary fields` and `tributary contacts` against the store a daemon config names.

use std::path::PathBuf;
use std::process::Output;

use tributary::model::{CustomFieldDef, CustomFieldType, FieldValue};

use super::harness::{Ctx, RecordExt, importer, on_both_backends, rec};

fn config(ctx: &Ctx) -> PathBuf {
    let path = ctx.dir.path().join("tributary.yaml");
    std::fs::write(&path, format!("store: \"{}\"\n", ctx.url)).unwrap();
    path
}

fn tributary(config: &PathBuf, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("TRIBUTARY_CONFIG")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

async fn fields_commands_list_create_and_rename(ctx: Ctx) {
    let config = config(&ctx);
    let out = stdout(&tributary(
        &config,
        &[
            "fields",
            "create",
            "Headquarters",
            "--tag",
            "%BATCHBOOK_COMPANY_HQ%",
            "--type",
            "text",
        ],
    ));
    assert!(out.contains("%BATCHBOOK_COMPANY_HQ%"), "{out}");
    let out = stdout(&tributary(&config, &["fields", "list"]));
    let line = out
        .lines()
        .find(|l| l.contains("%BATCHBOOK_COMPANY_HQ%"))
        .unwrap();
    assert!(line.contains("Headquarters") && line.contains("person") && line.ends_with("no"));

    // An import uses it: locked, label still editable, tag not.
    ctx.store
        .ensure_custom_fields(&[CustomFieldDef {
            tag: "%BATCHBOOK_COMPANY_HQ%".into(),
            label: "Company (HQ)".into(),
            field_type: CustomFieldType::Text,
            service: "batchbook".into(),
        }])
        .await
        .unwrap();
    stdout(&tributary(
        &config,
        &["fields", "rename", "%BATCHBOOK_COMPANY_HQ%", "Main office"],
    ));
    let refused = tributary(
        &config,
        &[
            "fields",
            "rename",
            "%BATCHBOOK_COMPANY_HQ%",
            "--tag",
            "%HQ%",
        ],
    );
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("tag is locked"), "{message}");
    let listed: serde_json::Value = serde_json::from_str(&stdout(&tributary(
        &config,
        &["fields", "list", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(listed[0]["label"], "Main office");
    assert_eq!(listed[0]["tag"], "%BATCHBOOK_COMPANY_HQ%");
    assert_eq!(listed[0]["locked"], true);
    assert_eq!(listed[0]["origin"], "person");
}

async fn contacts_commands_show_unsubscribe_and_bounce(ctx: Ctx) {
    let config = config(&ctx);
    let mut crm = importer(&ctx.store, "crm", "customers").await;
    crm.fields = ctx
        .store
        .ensure_custom_fields(&[CustomFieldDef {
            tag: "%CRM_TIER%".into(),
            label: "Tier".into(),
            field_type: CustomFieldType::Text,
            service: "crm".into(),
        }])
        .await
        .unwrap();
    crm.write(
        &ctx.store,
        &[
            rec("ada@example.com")
                .first("Ada")
                .external("7")
                .custom(0, FieldValue::Text("gold".into())),
            rec("bob@example.com").first("Bob"),
        ],
    )
    .await
    .unwrap();

    let table = stdout(&tributary(&config, &["contacts", "--list", "customers"]));
    assert!(table.contains("ada@example.com  Ada  [normal]"), "{table}");
    assert!(
        table.contains(&format!(
            "%CRM_TIER% Tier = gold  (crm, run {})",
            crm.run_id
        )),
        "{table}"
    );
    assert!(table.contains("lists: customers (active)"), "{table}");
    assert!(table.contains("source: crm id 7"), "{table}");

    let json: serde_json::Value = serde_json::from_str(&stdout(&tributary(
        &config,
        &["contacts", "--email", "ADA@example.com", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["fields"][0]["importer"], "crm");
    assert_eq!(json[0]["fields"][0]["run_id"], crm.run_id);

    stdout(&tributary(
        &config,
        &[
            "contacts",
            "unsubscribe",
            "ada@example.com",
            "--list",
            "customers",
        ],
    ));
    stdout(&tributary(
        &config,
        &["contacts", "unsubscribe", "bob@example.com", "--all"],
    ));
    let out = stdout(&tributary(
        &config,
        &["contacts", "bounce", "ada@example.com"],
    ));
    assert!(out.contains("[bounced]"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&tributary(
        &config,
        &["contacts", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(json[0]["lists"][0]["status"], "unsubscribed");
    assert_eq!(json[0]["status"], "bounced");
    assert_eq!(json[1]["status"], "unsubscribed");

    let missing = tributary(&config, &["contacts", "bounce", "nobody@example.com"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("contact `nobody@example.com` not found")
    );
    let neither = tributary(&config, &["contacts", "unsubscribe", "ada@example.com"]);
    assert!(!neither.status.success(), "--list or --all is required");
}

on_both_backends!(
    fields_commands_list_create_and_rename,
    contacts_commands_show_unsubscribe_and_bounce,
);

async fn broken_importer_files_do_not_hide_the_store(ctx: Ctx) {
    let config = config(&ctx);
    let importers = ctx.dir.path().join("importers.d");
    std::fs::create_dir_all(&importers).unwrap();
    std::fs::write(importers.join("broken.yaml"), "connector: [unclosed\n").unwrap();
    let crm = importer(&ctx.store, "crm", "customers").await;
    crm.write(&ctx.store, &[rec("ada@example.com")])
        .await
        .unwrap();
    let output = tributary(&config, &["contacts"]);
    let out = stdout(&output);
    assert!(out.contains("ada@example.com"), "{out}");
    let warning = String::from_utf8_lossy(&output.stderr);
    assert!(warning.contains("tributary validate"), "{warning}");

    // A broken daemon config is an error, not a guess at another store.
    std::fs::write(&config, "store: [unclosed\n").unwrap();
    let output = tributary(&config, &["contacts"]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("tributary.yaml"), "{message}");
}

on_both_backends!(broken_importer_files_do_not_hide_the_store);
