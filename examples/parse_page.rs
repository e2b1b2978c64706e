//! Parses one benchmark-shaped page of 500 records, in full (`serde_json::from_slice`)
//! or with the connector's page projection (`engine::projection`), so that the two can be
//! compared on their own (no HTTP, no mapping, no store):
//!
//! ```text
//! cargo build --release --example parse_page
//! target/release/examples/parse_page time            # best-of-N wall time of each
//! valgrind --tool=callgrind --callgrind-out-file=full.out \
//!     target/release/examples/parse_page full 20     # and `projected 20`, `none 20`
//! ```
//!
//! Under callgrind, `(instructions of MODE N) - (instructions of none N)` divided by N is
//! one page's parse and free; `none` builds the page and the connector only. The page is
//! what the benchmark's fake service serves (`benches/import/data.rs` records, wrapped as
//! `benches/import/fake.rs` wraps them) and the connector is the benchmark's. Before
//! measuring, every record of the page is mapped from both parses and the results must be
//! equal.
//!
//! Usage: `parse_page [full|projected|none|time] [PAGES]` (default `time`; PAGES is the
//! number of parses, default 20 under a mode and 200 for `time`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary::engine::extract::Extractor;
use tributary::engine::projection::PageProjection;

mod bench_connector;
#[allow(dead_code)]
#[path = "../benches/import/data.rs"]
mod data;

const RECORDS: u64 = 500;

/// The body the fake service sends for the first page of `RECORDS` (more to come).
fn page_body() -> Vec<u8> {
    let mut body = br#"{"success":true,"data":["#.to_vec();
    for id in 1..=RECORDS {
        if id > 1 {
            body.push(b',');
        }
        body.extend(data::record_json(id, 0, data::initial_update_time(id)));
    }
    body.extend_from_slice(
        format!(
            r#"],"additional_data":{{"pagination":{{"start":0,"limit":{RECORDS},"more_items_in_collection":true,"next_start":{RECORDS}}}}}}}"#
        )
        .as_bytes(),
    );
    body
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "time".into());
    let pages: u32 = std::env::args()
        .nth(2)
        .map(|n| n.parse().expect("PAGES is a number"))
        .unwrap_or(if mode == "time" { 200 } else { 20 });

    let plan = bench_connector::load();
    let connector = bench_connector::connector(&plan);
    let projection = PageProjection::for_connector(connector).expect("a projection");
    let body = page_body();

    // Both parses must map to the same contacts.
    let bindings = bench_connector::bindings(connector);
    let extractor = Extractor::new(connector, &bindings);
    let full: Value = serde_json::from_slice(&body).expect("JSON");
    let projected = projection.parse(&body).expect("JSON");
    let map = |page: &Value| -> Vec<String> {
        let records = extractor.records(page).expect("records");
        assert_eq!(records.len() as u64, RECORDS);
        records
            .into_iter()
            .map(|r| format!("{:?}", extractor.map(r)))
            .collect()
    };
    assert_eq!(map(&full), map(&projected), "the parses map differently");
    drop((full, projected));

    match mode.as_str() {
        "none" => {}
        "full" => {
            for _ in 0..pages {
                drop(black_box(serde_json::from_slice::<Value>(black_box(&body))));
            }
        }
        "projected" => {
            for _ in 0..pages {
                drop(black_box(projection.parse(black_box(&body))));
            }
        }
        "time" => {
            let full = best(pages, || {
                serde_json::from_slice::<Value>(&body).expect("JSON")
            });
            let projected = best(pages, || projection.parse(&body).expect("JSON"));
            println!(
                "page: {RECORDS} records, {} bytes; best of {pages}",
                body.len()
            );
            for (name, (parse, free)) in [("full", full), ("projected", projected)] {
                println!(
                    "{name:>9}: parse {:>8.1} us, free {:>7.1} us, total {:>8.1} us",
                    micros(parse),
                    micros(free),
                    micros(parse + free)
                );
            }
        }
        other => panic!("unknown mode `{other}`: full, projected, none or time"),
    }
}

/// The shortest parse and the shortest free seen over `runs` runs.
fn best(runs: u32, parse: impl Fn() -> Value) -> (Duration, Duration) {
    let mut best = (Duration::MAX, Duration::MAX);
    for _ in 0..runs {
        let started = Instant::now();
        let value = black_box(parse());
        let parsed = started.elapsed();
        let started = Instant::now();
        drop(value);
        let freed = started.elapsed();
        best = (best.0.min(parsed), best.1.min(freed));
    }
    best
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
