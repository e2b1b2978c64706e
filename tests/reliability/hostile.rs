//! An import through a hostile service: for each seed, 20,000 people served by a fake
//! that, on a seeded share of its requests, answers 429 (with and without `Retry-After`),
//! 500 or 503, resets the connection mid-body, never answers, trickles or floods an
//! endless body, sends truncated JSON with a 200, repeats the previous page, loops its
//! cursor back, redirects to another origin, or declares a body over the cap; a few people
//! carry a value over `limits.max_value_bytes`. A failed run is run again, as the
//! scheduler would, and resumes from its checkpoint.
//!
//! While the pass pages, the service also **updates people**, already read or not: each
//! update gives the person a newer update time, which moves them to the end of the
//! service's order. The service pages by update time with a keyset cursor, as services
//! that sort by update time do, so no one is skipped and an updated person is served again
//! later in the pass; an update made after the pass went by is read by the next
//! (incremental) run.
//!
//! After the first pass and one incremental run with no more updates, the store must be
//! exact: its contacts, memberships, custom values and sources equal what the service
//! holds (the oversized people skipped and counted), none missing, extra or duplicated, no
//! stale value; and the other origin received nothing.
//!
//! `TRIBUTARY_HOSTILE_SEEDS` and `TRIBUTARY_HOSTILE_PEOPLE` make a longer run.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use tributary::engine::{RunError, RunOptions};
use tributary::store::{MembershipStatus, RunOutcome};

use crate::common::hostile::{HostileRequest, HostileService, Reply};
use crate::common::sync_env::SyncEnv;

/// Share of requests that meet a fault.
const FAULT_RATE: f64 = 0.2;
/// Runs one seed may take before the test gives up on it.
const MAX_RUNS: usize = 60;
/// Page size the importer asks for.
const PAGE: usize = 500;
/// Share of good answers after which the service updates a few people.
const UPDATE_RATE: f64 = 0.5;
/// `limits.max_value_bytes` in the test's config.
pub const MAX_VALUE: usize = 4096;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One person at the service.
#[derive(Debug, Clone)]
pub struct Person {
    id: usize,
    email: String,
    first: String,
    last: String,
    tier: String,
    score: i64,
    pub notes: String,
    /// Update time, in seconds after [`EPOCH`].
    updated: i64,
}

/// The service's update times count from here (2024-01-01T00:00:00Z).
const EPOCH: i64 = 1_704_067_200;

fn stamp(updated: i64) -> String {
    chrono::DateTime::from_timestamp(EPOCH + updated, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn people(seed: u64, n: usize) -> Vec<Person> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    (1..=n)
        .map(|id| {
            // Some addresses in capitals or with an IDNA domain: stored normalized.
            let email = match id % 101 {
                0 => format!("Person{id}.S{seed}@Example.COM"),
                1 => format!("person{id}.s{seed}@xn--mnchen-3ya.de"),
                _ => format!("person{id}.s{seed}@example.com"),
            };
            let oversized = rng.random_bool(0.002);
            Person {
                id,
                email,
                first: format!("First{id}"),
                last: format!("Läst{}", rng.random_range(0..1000)),
                tier: ["gold", "silver", "bronze"][rng.random_range(0..3)].to_string(),
                score: rng.random_range(-1000..1000),
                notes: if oversized {
                    "n".repeat(MAX_VALUE + 1)
                } else {
                    format!("note {id}")
                },
                updated: id as i64,
            }
        })
        .collect()
}

fn record(p: &Person) -> Value {
    json!({
        "id": p.id,
        "email": p.email,
        "first": p.first,
        "last": p.last,
        "tier": p.tier,
        "score": p.score,
        "notes": p.notes,
        "updated": stamp(p.updated),
    })
}

/// The hostile service's state: its people (person `id` at index `id - 1`), their order
/// by update time, its dice, what it has done.
struct Service {
    people: Vec<Person>,
    /// `(updated, id)` of every person: the order pages are served in.
    order: BTreeSet<(i64, usize)>,
    /// The newest update time given.
    clock: i64,
    /// Whether people are still being updated.
    updating: bool,
    updates: usize,
    rng: StdRng,
    thief: String,
    faults: BTreeMap<&'static str, usize>,
}

const FAULTS: [&str; 14] = [
    "429 with Retry-After",
    "429 without Retry-After",
    "500",
    "503",
    "connection reset",
    "hung response",
    "endless trickle",
    "endless flood",
    "truncated JSON with 200",
    "repeated page",
    "looping cursor",
    "redirect to another origin",
    "oversized body",
    "empty 200",
];

pub fn page_body(people: &[Person], start: usize, limit: usize, next: Option<usize>) -> Value {
    let records: Vec<Value> = people.iter().skip(start).take(limit).map(record).collect();
    json!({"data": records, "next": next.map(|n| format!("c{n}"))})
}

impl Service {
    fn new(seed: u64, n: usize, thief: String) -> Service {
        let people = people(seed, n);
        Service {
            order: people.iter().map(|p| (p.updated, p.id)).collect(),
            clock: n as i64,
            people,
            updating: true,
            updates: 0,
            rng: StdRng::seed_from_u64(seed),
            thief,
            faults: BTreeMap::new(),
        }
    }

    /// Updates one to three people picked at random (read by the pass already or not):
    /// new names and values, a newer update time, the end of the order.
    fn update_some(&mut self) {
        for _ in 0..self.rng.random_range(1..=3) {
            let index = self.rng.random_range(0..self.people.len());
            self.clock += 1;
            let (tier, score, last) = (
                ["gold", "silver", "bronze", "platinum"][self.rng.random_range(0..4)],
                self.rng.random_range(-1000..1000),
                format!("Updäted{}", self.clock),
            );
            let person = &mut self.people[index];
            self.order.remove(&(person.updated, person.id));
            person.updated = self.clock;
            person.tier = tier.to_string();
            person.score = score;
            person.last = last;
            self.order.insert((person.updated, person.id));
            self.updates += 1;
        }
    }

    /// Up to `limit` people after `after` (or from the start) updated at or after `since`,
    /// in update-time order, and the cursor of the page after (`k<updated>_<id>` of the
    /// last one), `None` at the end.
    fn page(&self, since: i64, after: Option<(i64, usize)>, limit: usize) -> Value {
        let lower = after.map_or(Bound::Included((since, 0)), Bound::Excluded);
        let keys: Vec<(i64, usize)> = self
            .order
            .range((lower, Bound::Unbounded))
            .filter(|(updated, _)| *updated >= since)
            .take(limit)
            .copied()
            .collect();
        let next = keys.last().filter(|last| {
            keys.len() == limit
                && self
                    .order
                    .range((Bound::Excluded(**last), Bound::Unbounded))
                    .next()
                    .is_some()
        });
        self.body(&keys, next.map(|(u, id)| format!("k{u}_{id}")))
    }

    /// A page of the people at `keys`, with the cursor `next`.
    fn body(&self, keys: &[(i64, usize)], next: Option<String>) -> Value {
        let records: Vec<Value> = keys
            .iter()
            .map(|(_, id)| record(&self.people[id - 1]))
            .collect();
        json!({"data": records, "next": next})
    }

    /// The `limit` people before the cursor `after`: what the previous page served.
    fn previous_page(&self, since: i64, after: Option<(i64, usize)>, limit: usize) -> Value {
        let Some(after) = after else {
            return self.page(since, None, limit);
        };
        let mut keys: Vec<(i64, usize)> = self
            .order
            .range((Bound::Included((since, 0)), Bound::Included(after)))
            .rev()
            .take(limit)
            .copied()
            .collect();
        keys.reverse();
        self.body(&keys, Some(format!("k{}_{}", after.0, after.1)))
    }

    fn answer(&mut self, request: &HostileRequest) -> Reply {
        let limit: usize = request
            .q("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(PAGE);
        let after: Option<(i64, usize)> = request
            .q("cursor")
            .and_then(|c| c.strip_prefix('k'))
            .and_then(|c| c.split_once('_'))
            .and_then(|(u, id)| Some((u.parse().ok()?, id.parse().ok()?)));
        let since: i64 = request
            .q("since")
            .filter(|s| !s.is_empty())
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map_or(i64::MIN, |t| t.timestamp() - EPOCH);
        let good = self.page(since, after, limit);
        if self.updating && self.rng.random_bool(UPDATE_RATE) {
            self.update_some();
        }
        if !self.rng.random_bool(FAULT_RATE) {
            return Reply::json(200, &good);
        }
        let fault = FAULTS[self.rng.random_range(0..FAULTS.len())];
        *self.faults.entry(fault).or_default() += 1;
        let text = good.to_string().into_bytes();
        match fault {
            "429 with Retry-After" => Reply::status(429, &[("Retry-After", "0")], "slow down"),
            "429 without Retry-After" => Reply::status(429, &[], "{\"error\":\"rate\"}"),
            "500" => Reply::status(500, &[], "oops"),
            "503" => Reply::status(503, &[("Retry-After", "0.05")], "busy"),
            "connection reset" => Reply::Reset {
                body: text[..text.len() / 2].to_vec(),
            },
            "hung response" => Reply::Hang(Duration::from_millis(1500)),
            "endless trickle" => Reply::Endless {
                prefix: b"{\"data\": [".to_vec(),
                chunk: b" ".to_vec(),
                pause: Some(Duration::from_millis(20)),
            },
            "endless flood" => Reply::Endless {
                prefix: b"{\"data\": [".to_vec(),
                chunk: vec![b' '; 64 * 1024],
                pause: None,
            },
            "truncated JSON with 200" => Reply::Truncated {
                declared: text.len() / 3,
                body: text[..text.len() / 3].to_vec(),
            },
            "repeated page" => Reply::json(200, &self.previous_page(since, after, limit)),
            "looping cursor" => {
                // The cursor of this request again (the first page has none to repeat).
                let mut looping = good.clone();
                if let Some(cursor) = request.q("cursor").filter(|c| !c.is_empty()) {
                    looping["next"] = json!(cursor);
                }
                Reply::json(200, &looping)
            }
            "redirect to another origin" => Reply::status(
                302,
                &[(
                    "Location",
                    &format!("{}/people?{}", self.thief, request.raw_query),
                )],
                "",
            ),
            "oversized body" => Reply::Full {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: format!("{{\"pad\": \"{}\"}}", " ".repeat(2 * 1024 * 1024)).into_bytes(),
            },
            _ => Reply::status(200, &[("Content-Type", "application/json")], ""),
        }
    }
}

pub const CONNECTOR: &str = r#"
spec_version: 1
service: hostile
base_url: "{{settings.base}}"
settings:
  base: {}
auth:
  key: {type: bearer, token: "{{credentials.token}}"}
timeouts: {connect: PT1S, request: PT1S}
contacts:
  request:
    path: /people
    query: {limit: "{{page_size}}", cursor: "{{cursor}}"}
  pagination: {type: cursor, cursor: $.next, stop: [missing_token]}
  records: $.data[*]
  page_size: {max: 1000}
  fields:
    email: $.email
    first_name: $.first
    last_name: $.last
    external_id: $.id
  custom_fields:
    - {label: Tier, path: $.tier, type: text}
    - {label: Score, path: $.score, type: number}
    - {label: Notes, path: $.notes, type: text}
sync: {mode: full_refresh}
"#;

/// [`CONNECTOR`] as the updating service is read: sorted by update time, an inclusive
/// `since`, incremental after the first pass.
const SORTED_CONNECTOR: &str = r#"
spec_version: 1
service: hostile
base_url: "{{settings.base}}"
settings:
  base: {}
auth:
  key: {type: bearer, token: "{{credentials.token}}"}
timeouts: {connect: PT1S, request: PT1S}
contacts:
  request:
    path: /people
    query: {limit: "{{page_size}}", cursor: "{{cursor}}", since: "{{since}}"}
  pagination: {type: cursor, cursor: $.next, stop: [missing_token]}
  records: $.data[*]
  page_size: {max: 1000}
  fields:
    email: $.email
    first_name: $.first
    last_name: $.last
    external_id: $.id
    updated_at: {path: $.updated, format: rfc3339}
  custom_fields:
    - {label: Tier, path: $.tier, type: text}
    - {label: Score, path: $.score, type: number}
    - {label: Notes, path: $.notes, type: text}
sync:
  mode: incremental
  since_format: rfc3339
  order: updated_asc
  since_inclusive: true
"#;

/// What one seed took.
#[derive(Debug)]
struct SeedReport {
    runs: usize,
    /// People updated while the first pass paged.
    updates: usize,
    requests: usize,
    faults: BTreeMap<&'static str, usize>,
    oversized: usize,
}

/// Runs the importer until a pass completes, as the scheduler would after failures;
/// returns the runs it took.
async fn complete_a_pass(seed: u64, env: &SyncEnv, limits: tributary::plan::Limits) -> usize {
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(
            runs <= MAX_RUNS,
            "seed {seed}: no complete pass in {MAX_RUNS} runs"
        );
        let result = env
            .run_with(
                "h",
                RunOptions {
                    limits,
                    ..RunOptions::default()
                },
            )
            .await;
        match result {
            Ok(summary) if summary.outcome == RunOutcome::Completed => return runs,
            Ok(summary) => panic!("seed {seed}: unexpected outcome {summary:?}"),
            Err(RunError::Failed { message, .. }) => {
                assert!(!message.contains("hostile-Bearer-Q8v"), "{message}");
            }
            Err(other) => panic!("seed {seed}: {other}"),
        }
    }
}

async fn one_seed(seed: u64, n: usize) -> SeedReport {
    let thief = HostileService::start(|_| Reply::json(200, &json!({"data": []}))).await;
    let service = Arc::new(Mutex::new(Service::new(seed, n, thief.base.clone())));
    let fake = {
        let service = service.clone();
        HostileService::start(move |r| service.lock().unwrap().answer(r)).await
    };
    let env = SyncEnv::new();
    std::fs::write(
        &env.config,
        format!(
            "store: \"{}\"\nlimits: {{max_response_bytes: 1048576, max_value_bytes: {MAX_VALUE}}}\n",
            env.store_url
        ),
    )
    .unwrap();
    env.connector("hostile", SORTED_CONNECTOR);
    env.importer(
        "h",
        &format!(
            "connector: hostile\ncredentials:\n  token: {}\nsettings:\n  base: \"{}\"\nlist: People\npage_size: {PAGE}\npage_budget: 0\n",
            env.secret("token", "hostile-Bearer-Q8v"),
            fake.base
        ),
    );
    let limits = env.plan().daemon.limits;
    // The first pass, with people updated while it pages; then, updates over, one
    // incremental pass reads what changed after the first went by.
    let mut runs = complete_a_pass(seed, &env, limits).await;
    let updates = {
        let mut service = service.lock().unwrap();
        service.updating = false;
        service.updates
    };
    runs += complete_a_pass(seed, &env, limits).await;
    let (served, faults) = {
        let service = service.lock().unwrap();
        (service.people.clone(), service.faults.clone())
    };
    assert!(updates > 0, "seed {seed}: no one was updated mid-pass");
    assert_exact(seed, &env, &served).await;
    assert!(
        thief.requests().is_empty(),
        "seed {seed}: a request reached the other origin: {:?}",
        thief.requests()
    );
    SeedReport {
        runs,
        updates,
        requests: fake.requests().len(),
        faults,
        oversized: served.iter().filter(|p| p.notes.len() > MAX_VALUE).count(),
    }
}

/// The store holds exactly the service's people that fit the limits: each contact once,
/// with its names, an active membership of `People`, its current custom values and one
/// source with its id.
pub async fn assert_exact(seed: u64, env: &SyncEnv, people: &[Person]) {
    let expected: BTreeMap<String, &Person> = people
        .iter()
        .filter(|p| p.notes.len() <= MAX_VALUE)
        .map(|p| (tributary::model::normalize_email(&p.email).unwrap(), p))
        .collect();
    let stored = env.all_contacts().await;
    let emails: Vec<&str> = stored.iter().map(|c| c.email.as_str()).collect();
    let unique: BTreeSet<&str> = emails.iter().copied().collect();
    assert_eq!(
        unique.len(),
        emails.len(),
        "seed {seed}: duplicated contacts"
    );
    let missing: Vec<&String> = expected
        .keys()
        .filter(|e| !unique.contains(e.as_str()))
        .collect();
    let extra: Vec<&&str> = emails
        .iter()
        .filter(|e| !expected.contains_key(**e))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "seed {seed}: {} missing (first {:?}), {} extra (first {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first()
    );
    let mut differing = Vec::new();
    for contact in &stored {
        let p = expected[&contact.email];
        let field = |tag: &str| {
            contact
                .fields
                .iter()
                .find(|f| f.tag == tag)
                .map(|f| f.value.clone())
        };
        let membership_ok = contact.lists.len() == 1
            && contact.lists[0].list == "People"
            && contact.lists[0].status == MembershipStatus::Active;
        let source_ok = contact.sources.len() == 1
            && contact.sources[0].importer == "h"
            && contact.sources[0].external_id.as_deref() == Some(p.id.to_string().as_str());
        let same = contact.first_name.as_deref() == Some(p.first.as_str())
            && contact.last_name.as_deref() == Some(p.last.as_str())
            && field("%HOSTILE_TIER%").as_deref() == Some(p.tier.as_str())
            && field("%HOSTILE_SCORE%") == Some(p.score.to_string())
            && field("%HOSTILE_NOTES%").as_deref() == Some(p.notes.as_str())
            && contact.fields.len() == 3
            && membership_ok
            && source_ok;
        if !same {
            differing.push(contact);
        }
    }
    assert!(
        differing.is_empty(),
        "seed {seed}: {} contacts differ from the service, first: {:#?}",
        differing.len(),
        differing.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_through_a_hostile_service_are_exact() {
    let seeds = env_number("TRIBUTARY_HOSTILE_SEEDS", 20) as u64;
    let n = env_number("TRIBUTARY_HOSTILE_PEOPLE", 20_000);
    let started = Instant::now();
    let mut total_faults: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut runs, mut requests, mut oversized) = (0, 0, 0);
    // Seeds run four at a time: a seed spends most of its time waiting out hung
    // responses, trickles and backoff, not on the CPU.
    // (A run's future is not `Send`: the seeds share this thread through a `LocalSet`.)
    let local = tokio::task::LocalSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(4));
    let handles: Vec<_> = (1..=seeds)
        .map(|seed| {
            let permits = permits.clone();
            local.spawn_local(async move {
                let _permit = permits.acquire_owned().await.unwrap();
                one_seed(seed, n).await
            })
        })
        .collect();
    let reports = local
        .run_until(async move {
            let mut reports = Vec::new();
            for handle in handles {
                reports.push(
                    handle
                        .await
                        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
                );
            }
            reports
        })
        .await;
    let mut updates = 0;
    for report in reports {
        runs += report.runs;
        updates += report.updates;
        requests += report.requests;
        oversized += report.oversized;
        for (fault, count) in report.faults {
            *total_faults.entry(fault).or_default() += count;
        }
    }
    println!(
        "hostile service: {seeds} seeds x {n} people, {runs} runs, {requests} requests, \
         {updates} people updated while the first pass paged, \
         {oversized} people with an oversized value skipped, lost = 0, duplicated = 0, \
         differing = 0, requests to the other origin = 0, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (fault, count) in &total_faults {
        println!("  {fault}: {count}");
    }
    for fault in FAULTS {
        assert!(
            total_faults.get(fault).copied().unwrap_or(0) > 0 || seeds < 5,
            "fault `{fault}` never happened"
        );
    }
}
