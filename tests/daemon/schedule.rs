//! The schedule, driven by a manual clock: the real scheduler, the real engine and a
//! real store, against a fake CRM on 127.0.0.1. Runs take real time; only the
//! scheduler's idea of "now" is the test's to move.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound as _, Utc};
use tokio_util::sync::CancellationToken;
use tributary::daemon::clock::{Clock, ManualClock};
use tributary::daemon::scheduler::{
    DueReason, EngineExecutor, Executor, Handle, Phase, Scheduler, Settings, backoff, jitter_bound,
};
use tributary::engine::{FailureKind, RunError, RunOptions, RunSummary};
use tributary::plan::Importer;
use tributary::store::Store;

use super::{Crm, connector, crm, eventually, importer};
use crate::common::fake::{FakeService, db, people};
use crate::common::sync_env::SyncEnv;

/// Each run's importer and start time on the manual clock, in order.
type Starts = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

/// Records when (on the manual clock) each run started, in order.
struct Recording {
    inner: EngineExecutor,
    clock: ManualClock,
    starts: Starts,
}

#[async_trait]
impl Executor for Recording {
    async fn run(
        &self,
        importer: Arc<Importer>,
        options: RunOptions,
    ) -> Result<RunSummary, RunError> {
        self.starts
            .lock()
            .unwrap()
            .push((importer.id.clone(), self.clock.now()));
        self.inner.run(importer, options).await
    }

    async fn last_full_refresh(&self, importer: &str) -> Option<DateTime<Utc>> {
        self.inner.last_full_refresh(importer).await
    }
}

struct Harness {
    env: SyncEnv,
    store: Arc<dyn Store>,
    clock: ManualClock,
    handle: Handle,
    starts: Starts,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    start: DateTime<Utc>,
}

impl Harness {
    async fn start(env: SyncEnv, settings: Settings) -> Harness {
        // Whole microseconds, as the store keeps times.
        let start = Utc::now().trunc_subsecs(6);
        let store = env.store().await;
        Harness::start_at(env, store, settings, start).await
    }

    async fn start_at(
        env: SyncEnv,
        store: Arc<dyn Store>,
        settings: Settings,
        start: DateTime<Utc>,
    ) -> Harness {
        let plan = env.plan();
        let clock = ManualClock::new(start);
        let starts = Arc::new(Mutex::new(Vec::new()));
        let executor = Arc::new(Recording {
            inner: EngineExecutor {
                store: Arc::clone(&store),
            },
            clock: clock.clone(),
            starts: Arc::clone(&starts),
        });
        let (scheduler, handle) = Scheduler::new(
            plan.importers.values().cloned(),
            Arc::clone(&store),
            executor,
            Arc::new(clock.clone()),
            settings,
        )
        .await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(scheduler.run(shutdown.clone()));
        Harness {
            env,
            store,
            clock,
            handle,
            starts,
            shutdown,
            task,
            start,
        }
    }

    fn runs(&self, id: &str) -> u64 {
        self.handle.entry(id).map(|e| e.runs).unwrap_or(0)
    }

    /// Waits until `id` has started `n` runs and is no longer running.
    async fn settled(&self, id: &str, n: u64) {
        eventually(&format!("{id} to finish run {n}"), || {
            self.handle
                .entry(id)
                .is_some_and(|e| e.runs >= n && e.phase != Phase::Running)
        })
        .await;
    }

    fn advance(&self, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
    }

    /// Gives the scheduler a moment of real time to react (it must not start anything).
    async fn quiet(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    async fn stop(self) -> SyncEnv {
        self.shutdown.cancel();
        self.task.await.unwrap();
        self.env
    }
}

fn settings() -> Settings {
    Settings {
        seed: Some(7),
        ..Settings::default()
    }
}

#[test]
fn jitter_is_a_tenth_of_the_period_at_most_five_minutes_and_backoff_doubles_to_a_cap() {
    assert_eq!(
        jitter_bound(Duration::from_secs(600)),
        Duration::from_secs(60)
    );
    assert_eq!(
        jitter_bound(Duration::from_secs(30 * 60)),
        Duration::from_secs(180)
    );
    assert_eq!(
        jitter_bound(Duration::from_secs(7 * 86_400)),
        Duration::from_secs(300)
    );
    let base = Duration::from_secs(60);
    let cap = Duration::from_secs(3600);
    let waits: Vec<u64> = (1..=8).map(|n| backoff(n, base, cap).as_secs()).collect();
    assert_eq!(waits, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
}

/// Incremental importers run every `interval`; full-refresh services every `sync.every`
/// since the last complete full pass; both with jitter within its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_follow_each_sync_mode_with_bounded_jitter() {
    let fake = crm(Crm::new(db(people(5)))).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("{mode: incremental}"));
    env.connector(
        "crmfull",
        &connector("{mode: full_refresh, every: P1D}").replace("since: \"{{since}}\"", ""),
    );
    let key = env.secret("key", "k");
    env.importer(
        "inc",
        &importer(&fake.base, "Inc", &key, "interval: PT10M\n"),
    );
    env.importer(
        "full",
        &importer(&fake.base, "Full", &key, "").replace("connector: crm", "connector: crmfull"),
    );
    let h = Harness::start(env, settings()).await;
    h.settled("inc", 1).await;
    h.settled("full", 1).await;
    let inc = h.handle.entry("inc").unwrap();
    let full = h.handle.entry("full").unwrap();
    let ten = chrono::Duration::minutes(10);
    let inc_next = inc.next_run_at.unwrap();
    assert!(
        inc_next >= h.start + ten && inc_next <= h.start + ten + chrono::Duration::minutes(1),
        "incremental: {inc_next} vs start {}",
        h.start
    );
    assert_eq!(inc.due_reason, DueReason::Interval);
    let full_next = full.next_run_at.unwrap();
    let last_full = h
        .store
        .importer_state("full")
        .await
        .unwrap()
        .checkpoint
        .last_full_refresh
        .unwrap();
    let day = chrono::Duration::days(1);
    assert!(
        full_next >= last_full + day && full_next <= last_full + day + chrono::Duration::minutes(5),
        "full refresh: {full_next} vs last full pass {last_full}"
    );
    // The saved schedule is what status and a restart read (saved just after the
    // schedule counted the run's end).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let saved = h.store.importer_state("inc").await.unwrap();
        if saved.next_run_at == Some(inc_next) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "saved {:?}, scheduled {inc_next}",
            saved.next_run_at
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    h.advance(9 * 60);
    h.quiet().await;
    assert_eq!((h.runs("inc"), h.runs("full")), (1, 1), "nothing due yet");
    h.advance(2 * 60);
    h.settled("inc", 2).await;
    h.quiet().await;
    assert_eq!(h.runs("full"), 1, "the full refresh waits for its day");
    h.clock.set(full_next);
    h.settled("full", 2).await;
    h.stop().await;
}

/// Thirty importers with one interval do not stay in step: each next start is within
/// its jitter bound, and they are spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_times_are_spread_within_the_jitter_bound() {
    let fake = crm(Crm::new(db(people(2)))).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    for i in 0..30 {
        env.importer(
            &format!("imp{i:02}"),
            &importer(&format!("{}/t{i}", fake.base), &format!("L{i}"), &key, ""),
        );
    }
    let h = Harness::start(env, settings()).await;
    let mut offsets = Vec::new();
    for i in 0..30 {
        let id = format!("imp{i:02}");
        h.settled(&id, 1).await;
        let entry = h.handle.entry(&id).unwrap();
        let started = entry.last_run_at.unwrap();
        let offset = entry.next_run_at.unwrap() - started - chrono::Duration::minutes(30);
        assert!(
            offset >= chrono::Duration::zero() && offset <= chrono::Duration::minutes(3),
            "{id}: jitter {offset}"
        );
        offsets.push(offset.num_milliseconds());
    }
    offsets.sort();
    offsets.dedup();
    assert!(offsets.len() > 20, "spread: {offsets:?}");
    h.stop().await;
}

/// The global limit holds at all times: the fake sees no more requests in flight than
/// `concurrency`, and the scheduler never has more runs going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_is_never_exceeded() {
    let state = Crm::new(db(people(3)));
    state.behaviour.lock().unwrap().delay = Duration::from_millis(150);
    let fake = crm(state.clone()).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    for i in 0..8 {
        env.importer(
            &format!("imp{i}"),
            &importer(&format!("{}/t{i}", fake.base), &format!("L{i}"), &key, ""),
        );
    }
    let h = Harness::start(
        env,
        Settings {
            concurrency: 3,
            ..settings()
        },
    )
    .await;
    for i in 0..8 {
        h.settled(&format!("imp{i}"), 1).await;
    }
    let load = h.handle.load();
    assert_eq!(load.max_running, 3, "the limit is reached, never passed");
    assert!(
        state
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            <= 3,
        "requests in flight at the service"
    );
    assert_eq!(load.started, 8);
    h.stop().await;
}

/// Moves the manual clock forward by `step` every `every` of real time, until stopped.
fn time_lapse(clock: ManualClock, step: chrono::Duration, every: Duration) -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        while !token.is_cancelled() {
            tokio::time::sleep(every).await;
            clock.advance(step);
        }
    });
    stop
}

/// A large first import (page budget 1, a hundred runs) beside ten small importers that
/// fall due one after another, one run at a time: each small importer starts within one
/// of the large importer's runs of being due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_first_import_delays_a_small_importer_by_at_most_one_page_budget() {
    let fake = crm(Crm::new(db(people(200)))).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer(
        "big",
        &importer(
            &format!("{}/big", fake.base),
            "Big",
            &key,
            "page_size: 2\npage_budget: 1\n",
        ),
    );
    for i in 0..10 {
        env.importer(
            &format!("small{i}"),
            &importer(&format!("{}/s{i}", fake.base), &format!("S{i}"), &key, ""),
        );
    }
    let start = Utc::now().trunc_subsecs(6);
    let store = env.store().await;
    // The small importers are due one after another, 10 s apart, while the big one runs.
    let mut due = Vec::new();
    for i in 0..10 {
        let at = start + chrono::Duration::seconds(10 * (i + 1));
        store
            .set_next_run(&format!("small{i}"), Some(at))
            .await
            .unwrap();
        due.push(at);
    }
    let h = Harness::start_at(
        env,
        store,
        Settings {
            concurrency: 1,
            ..settings()
        },
        start,
    )
    .await;
    let lapse = time_lapse(
        h.clock.clone(),
        chrono::Duration::seconds(1),
        Duration::from_millis(15),
    );
    for i in 0..10 {
        h.settled(&format!("small{i}"), 1).await;
    }
    lapse.cancel();
    let starts = h.starts.lock().unwrap().clone();
    for (i, due_at) in due.iter().enumerate() {
        let id = format!("small{i}");
        let position = starts.iter().position(|(s, _)| *s == id).unwrap();
        let big_between = starts[..position]
            .iter()
            .filter(|(s, at)| s == "big" && at >= due_at)
            .count();
        assert!(
            big_between <= 1,
            "{id} (due {due_at}) waited for {big_between} runs of the large import: {starts:?}"
        );
    }
    assert!(
        starts.iter().filter(|(s, _)| s == "big").count() > 10,
        "the large import kept running meanwhile"
    );
    h.stop().await;
}

/// Under overload (every importer due again before all could run once), intervals
/// stretch evenly: each importer keeps running and none falls far behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_overload_intervals_stretch_evenly_and_none_starves() {
    let state = Crm::new(db(people(2)));
    state.behaviour.lock().unwrap().delay = Duration::from_millis(20);
    let fake = crm(state).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    for i in 0..12 {
        env.importer(
            &format!("imp{i:02}"),
            &importer(
                &format!("{}/t{i}", fake.base),
                &format!("L{i}"),
                &key,
                "interval: PT1M\n",
            ),
        );
    }
    let h = Harness::start(
        env,
        Settings {
            concurrency: 1,
            ..settings()
        },
    )
    .await;
    // A minute of schedule passes every 30 ms of real time: far more is due than runs.
    let lapse = time_lapse(
        h.clock.clone(),
        chrono::Duration::seconds(60),
        Duration::from_millis(30),
    );
    eventually("every importer to run three times", || {
        (0..12).all(|i| h.runs(&format!("imp{i:02}")) >= 3)
    })
    .await;
    lapse.cancel();
    let runs: Vec<u64> = (0..12).map(|i| h.runs(&format!("imp{i:02}"))).collect();
    let (min, max) = (runs.iter().min().unwrap(), runs.iter().max().unwrap());
    assert!(max - min <= 2, "evenly stretched: {runs:?}");
    assert_eq!(h.handle.load().max_running, 1);
    h.stop().await;
}

/// A pass stopped by its page budget continues seconds later, not an interval later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_stopped_by_its_budget_continues_seconds_later() {
    let fake = crm(Crm::new(db(people(25)))).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer(
        "imp",
        &importer(&fake.base, "L", &key, "page_size: 10\npage_budget: 1\n"),
    );
    let h = Harness::start(env, settings()).await;
    h.settled("imp", 1).await;
    let entry = h.handle.entry("imp").unwrap();
    assert_eq!(entry.due_reason, DueReason::Continue);
    assert_eq!(
        entry.next_run_at.unwrap(),
        entry.last_run_at.unwrap() + chrono::Duration::seconds(2),
        "continues two seconds after the run (the clock stood still meanwhile)"
    );
    h.advance(1);
    h.quiet().await;
    assert_eq!(h.runs("imp"), 1);
    h.advance(1);
    h.settled("imp", 2).await;
    h.advance(2);
    h.settled("imp", 3).await;
    // 25 people, 10 a page: the third page held 5, a fourth (empty) ends the pass.
    h.advance(2);
    h.settled("imp", 4).await;
    let entry = h.handle.entry("imp").unwrap();
    assert_eq!(entry.due_reason, DueReason::Interval, "{entry:?}");
    assert_eq!(h.env.contacts("L").await.len(), 25);
    h.stop().await;
}

/// A service asking to wait an hour (a quota) stops the run at its checkpoint; the next
/// run starts no sooner than the service said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_stop_is_honoured_until_its_not_before() {
    let state = Crm::new(db(people(30)));
    {
        let mut b = state.behaviour.lock().unwrap();
        b.fail_with = 429;
        b.retry_after = Some("3600".into());
        b.fail_from_page = 2;
    }
    let fake = crm(state.clone()).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer("imp", &importer(&fake.base, "L", &key, "page_size: 10\n"));
    let h = Harness::start(env, settings()).await;
    h.settled("imp", 1).await;
    let entry = h.handle.entry("imp").unwrap();
    assert_eq!(entry.due_reason, DueReason::Quota, "{entry:?}");
    assert_eq!(entry.failures, 0, "a quota stop is not a failure");
    assert!(entry.next_run_at.unwrap() >= h.start + chrono::Duration::minutes(59));
    assert_eq!(
        h.env.contacts("L").await.len(),
        10,
        "the page before the quota stays committed"
    );
    state.behaviour.lock().unwrap().fail_with = 0;
    h.advance(30 * 60);
    h.quiet().await;
    assert_eq!(h.runs("imp"), 1, "not before the service's time");
    h.advance(31 * 60);
    h.settled("imp", 2).await;
    assert_eq!(h.env.contacts("L").await.len(), 30);
    h.stop().await;
}

/// Failures back off exponentially; a success resets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_exponentially_and_a_success_resets() {
    let state = Crm::new(db(people(3)));
    state.behaviour.lock().unwrap().fail_with = 404;
    let fake = crm(state.clone()).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer("imp", &importer(&fake.base, "L", &key, ""));
    let h = Harness::start(env, settings()).await;
    h.settled("imp", 1).await;
    let first = h.handle.entry("imp").unwrap();
    assert_eq!(
        (first.failures, first.due_reason, first.last_failure),
        (1, DueReason::Backoff, Some(FailureKind::Service))
    );
    assert_eq!(
        first.next_run_at.unwrap() - h.clock.now(),
        chrono::Duration::seconds(60)
    );
    assert!(first.last_error.unwrap().contains("HTTP 404"));
    h.advance(60);
    h.settled("imp", 2).await;
    let second = h.handle.entry("imp").unwrap();
    assert_eq!(second.failures, 2);
    assert_eq!(
        second.next_run_at.unwrap() - h.clock.now(),
        chrono::Duration::seconds(120)
    );
    state.behaviour.lock().unwrap().fail_with = 0;
    h.advance(120);
    h.settled("imp", 3).await;
    let third = h.handle.entry("imp").unwrap();
    assert_eq!((third.failures, third.due_reason), (0, DueReason::Interval));
    assert!(third.next_run_at.unwrap() - h.clock.now() >= chrono::Duration::minutes(30));
    h.stop().await;
}

/// A 401 pauses the importer as "needs new credentials" (no retry loop); it resumes by
/// itself when the secret its reference resolves to changes, and by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_pause_until_they_change() {
    let state = Crm::new(db(people(3)));
    state.behaviour.lock().unwrap().key = Some("good-key".into());
    let fake = crm(state).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "bad-key");
    env.importer("imp", &importer(&fake.base, "L", &key, ""));
    let other_key = env.secret("other", "also-bad");
    env.importer(
        "other",
        &importer(&format!("{}/o", fake.base), "O", &other_key, ""),
    );
    let h = Harness::start(env, settings()).await;
    h.settled("imp", 1).await;
    h.settled("other", 1).await;
    let paused = h.handle.entry("imp").unwrap();
    assert_eq!(paused.phase, Phase::NeedsCredentials);
    assert_eq!(paused.last_failure, Some(FailureKind::Credentials));
    assert!(
        h.store
            .importer_state("imp")
            .await
            .unwrap()
            .needs_new_credentials
    );

    // Hours pass: no retry loop against a service that refuses the key.
    for _ in 0..10 {
        h.advance(30 * 60);
        h.quiet().await;
    }
    assert_eq!(h.runs("imp"), 1);

    // The secret file is replaced: the next check sees it and the importer runs.
    std::fs::write(h.env.dir.path().join("key.secret"), "good-key").unwrap();
    h.advance(31);
    h.settled("imp", 2).await;
    let resumed = h.handle.entry("imp").unwrap();
    assert_eq!(resumed.phase, Phase::Idle);
    assert_eq!(resumed.failures, 0);
    assert!(
        !h.store
            .importer_state("imp")
            .await
            .unwrap()
            .needs_new_credentials
    );
    assert_eq!(h.env.contacts("L").await.len(), 3);

    // By hand (`tributary state resume`): tried again even though nothing changed.
    assert_eq!(
        h.handle.entry("other").unwrap().phase,
        Phase::NeedsCredentials
    );
    h.handle.resume("other");
    h.settled("other", 2).await;
    assert_eq!(
        h.handle.entry("other").unwrap().phase,
        Phase::NeedsCredentials,
        "still refused: paused again"
    );
    h.stop().await;
}

/// The schedule lives in the store: a new scheduler on the same store neither runs an
/// importer early (skipping nothing) nor twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_skips_nor_repeats_runs() {
    let fake: FakeService = crm(Crm::new(db(people(3)))).await;
    let env = SyncEnv::new();
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer("imp", &importer(&fake.base, "L", &key, ""));
    let h = Harness::start(env, settings()).await;
    h.settled("imp", 1).await;
    let next = h.handle.entry("imp").unwrap().next_run_at.unwrap();
    let store = Arc::clone(&h.store);
    let env = h.stop().await;

    let later = next - chrono::Duration::minutes(5);
    let h = Harness::start_at(env, store, settings(), later).await;
    h.quiet().await;
    assert_eq!(h.runs("imp"), 0, "not due yet after the restart");
    assert_eq!(h.handle.entry("imp").unwrap().next_run_at, Some(next));
    h.clock.set(next);
    h.settled("imp", 1).await;
    h.stop().await;
}
