//! Maps benchmark-shaped records through the engine's extractor, with nothing else
//! around it (no HTTP, no store), so that the CPU cost of record mapping can be measured
//! on its own and repeatably:
//!
//! ```text
//! cargo build --release --example map_records
//! valgrind --tool=callgrind --callgrind-out-file=map.out \
//!     target/release/examples/map_records 20000
//! callgrind_annotate --inclusive=yes map.out | grep extract::Extractor
//! ```
//!
//! Instruction counts under callgrind do not depend on machine load, unlike wall time.
//! The records come from the import benchmark's own generator (`benches/import/data.rs`)
//! with the benchmark's connector, split into pages of 500 as the fake service serves
//! them. The last line is a digest of every mapping result: two builds that print the same
//! digest mapped every record identically.
//!
//! Usage: `map_records [RECORDS]` (default 20,000).

use serde_json::Value;
use tributary::engine::extract::Extractor;

mod bench_connector;
#[allow(dead_code)]
#[path = "../benches/import/data.rs"]
mod data;

const PAGE: u64 = 500;

fn main() {
    let count: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("RECORDS is a number"))
        .unwrap_or(20_000);

    let plan = bench_connector::load();
    let connector = bench_connector::connector(&plan);
    let bindings = bench_connector::bindings(connector);

    // Pages as parsed JSON, built before any mapping.
    let pages: Vec<Value> = (0..count.div_ceil(PAGE))
        .map(|page| {
            let ids = page * PAGE + 1..=((page + 1) * PAGE).min(count);
            let records: Vec<Value> = ids
                .map(|id| {
                    let text = data::record_json(id, 0, data::initial_update_time(id));
                    serde_json::from_slice(&text).expect("generated JSON")
                })
                .collect();
            serde_json::json!({"data": records, "additional_data": {"pagination": {
                "more_items_in_collection": false}}})
        })
        .collect();

    let extractor = Extractor::new(connector, &bindings);
    let mut digest = blake3::Hasher::new();
    let mut mapped = 0u64;
    for page in &pages {
        let records = extractor.records(page).expect("records");
        for record in records {
            let out = extractor.map(record);
            digest.update(format!("{out:?}\n").as_bytes());
            mapped += 1;
        }
    }
    println!("mapped {mapped} records");
    println!("digest {}", digest.finalize().to_hex());
}
