//! Rough write throughput of `write_page` (ignored: run with
//! `cargo test --release --test tests store::perf -- --ignored --nocapture`). The real
//! figure is issue #5's benchmark; this one isolates the store.

use std::time::Instant;

use tributary::model::{CustomFieldDef, CustomFieldType, FieldValue};
use tributary::store::Backend;

use super::harness::{Ctx, RecordExt, importer, rec};

async fn measure(ctx: Ctx) {
    let total = 50_000;
    let page_size = 500;
    let mut crm = importer(&ctx.store, "crm", "customers").await;
    crm.fields = ctx
        .store
        .ensure_custom_fields(&["Tier", "Score", "Notes"].map(|label| CustomFieldDef {
            tag: tributary::model::personalization_tag("crm", label),
            label: label.into(),
            field_type: if label == "Score" {
                CustomFieldType::Number
            } else {
                CustomFieldType::Text
            },
            service: "crm".into(),
        }))
        .await
        .unwrap();
    let records = |round: u32| -> Vec<_> {
        (0..total)
            .map(|i| {
                let mut r = rec(&format!("person{i}@example.com"))
                    .first(&format!("First{i}"))
                    .last("Last")
                    .phone("+1 555 0100")
                    .org("Example Inc")
                    .external(&i.to_string())
                    .custom(0, FieldValue::Text("gold".into()))
                    .custom(1, FieldValue::Number(f64::from(i)))
                    .custom(2, FieldValue::Text("a note of some length".into()));
                if round > 0 && i % 100 == 0 {
                    r = r.first(&format!("Changed{i} {round}"));
                }
                r
            })
            .collect()
    };
    for (round, label) in [(0, "create"), (1, "1% changed")] {
        let all = records(round);
        let started = Instant::now();
        for page in all.chunks(page_size) {
            crm.write(&ctx.store, page).await.unwrap();
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        println!("{:?} {label}: {rate:.0} contacts/s", ctx.backend);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement, not a check"]
async fn write_throughput_sqlite() {
    super::harness::run(Backend::Sqlite, measure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement, not a check"]
async fn write_throughput_postgres() {
    super::harness::run(Backend::Postgres, measure).await;
}
