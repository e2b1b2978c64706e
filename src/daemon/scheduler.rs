//! When each importer runs: intervals, full passes, continuation after a budget stop,
//! quota waits, back-off, pausing on refused credentials, runs asked for by hand, and the
//! global concurrency limit.
//!
//! One loop owns the schedule; runs are tasks of their own that report back on a
//! channel. The loop never waits for a run, so a slow import never delays another
//! importer's start beyond the concurrency limit. Order is by due time (oldest first),
//! which gives the fairness and no-starvation guarantees: a continuation of a large
//! import is due a few seconds after its previous run, behind every importer that became
//! due meanwhile, so a small importer waits at most one page budget of the large one;
//! under overload every importer's lateness grows at the same rate and none starves.
//!
//! The schedule lives in the store (`next_run_at`), so a restart neither skips nor
//! repeats runs. The clock is a parameter ([`Clock`]) so tests drive time by hand.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound as _, Utc};
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::app::exit;
use crate::daemon::clock::Clock;
use crate::engine::{FailureKind, Progress, RunError, RunOptions, RunSummary, run_importer};
use crate::metrics;
use crate::plan::{Importer, Sync};
use crate::store::lease::HeldLease;
use crate::store::{ClaimRefusal, ClaimRequest, Lease, RunCounts, RunOutcome, Store, StoreError};

/// Tunables of the schedule. Defaults are what the daemon uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Importers allowed to run at once.
    pub concurrency: usize,
    /// How soon a pass stopped by its page budget continues.
    pub continue_after: Duration,
    /// First wait after a failure; doubles with each failure in a row.
    pub backoff_base: Duration,
    /// Longest wait after failures.
    pub backoff_cap: Duration,
    /// How often paused importers' credentials are checked for a change.
    pub credential_check: Duration,
    /// How long a run that another process holds the lease of waits before trying again.
    pub busy_retry: Duration,
    /// Run lease duration.
    pub lease_ttl: Duration,
    /// Caps on responses, values and records per page (`limits` in `tributary.yaml`).
    pub limits: crate::plan::Limits,
    /// Seed of the jitter (tests); `None`: random.
    pub seed: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 4,
            continue_after: Duration::from_secs(2),
            backoff_base: Duration::from_secs(60),
            backoff_cap: Duration::from_secs(3600),
            credential_check: Duration::from_secs(30),
            busy_retry: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(300),
            limits: crate::plan::Limits::default(),
            seed: None,
        }
    }
}

/// Longest jitter added to a scheduled start.
pub const MAX_JITTER: Duration = Duration::from_secs(300);

/// The jitter bound for a period: 10 % of it, at most five minutes, so that importers
/// with the same interval drift apart instead of firing together.
pub fn jitter_bound(period: Duration) -> Duration {
    (period / 10).min(MAX_JITTER)
}

/// Wait after `failures` failures in a row: `base`, doubling, at most `cap`.
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << exponent).min(cap)
}

/// What an importer is doing, as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for its next run.
    Idle,
    /// Running now.
    Running,
    /// The service refused its credentials; it waits until they change (or `tributary
    /// state resume`).
    NeedsCredentials,
    /// `enabled: false`: never scheduled, runs only when asked.
    Disabled,
}

/// Why an importer's next run is when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DueReason {
    /// Its first run (or the first since the daemon learnt of it).
    First,
    /// The interval (or the full-refresh period) since the last run.
    Interval,
    /// The pass stopped on its page budget and continues.
    Continue,
    /// The service asked to wait (a quota).
    Quota,
    /// Failures in a row: backing off.
    Backoff,
    /// Another process held the run lease.
    Busy,
    /// Asked for by hand.
    Requested,
    /// Resumed after a shutdown or cancelled run.
    Resume,
}

/// One importer's place in the schedule.
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    /// Importer id.
    pub importer: String,
    /// Connector id.
    pub connector: String,
    /// Target list.
    pub list: String,
    /// What it is doing.
    pub phase: Phase,
    /// When it runs next (`None` while running, paused or disabled).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Why then.
    pub due_reason: DueReason,
    /// Failures in a row.
    pub failures: u32,
    /// Kind of the last failure.
    pub last_failure: Option<FailureKind>,
    /// Last error text (secrets masked).
    pub last_error: Option<String>,
    /// When the last run started.
    pub last_run_at: Option<DateTime<Utc>>,
    /// How the last run ended.
    pub last_outcome: Option<RunOutcome>,
    /// When a run last succeeded.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Pages and records of the run in flight.
    pub progress: Option<RunProgress>,
    /// Runs started by this daemon.
    pub runs: u64,
    /// When a run last dropped a saved position for a new pass, and why (the parts of
    /// the configuration that changed).
    pub pass_restarted: Option<String>,
}

/// Progress of a run in flight.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct RunProgress {
    /// Pages so far.
    pub pages: u64,
    /// Records so far.
    pub fetched: u64,
}

/// A run asked for by hand (`tributary run` handed to the daemon, `POST
/// /importers/<id>/run`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunRequest {
    /// Start a new full pass.
    pub full_refresh: bool,
    /// How long to wait when the importer is running already (zero: refuse at once).
    pub wait_seconds: f64,
}

/// The result of a run asked for by hand, as the CLI prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Importer id.
    pub importer: String,
    /// The exit code `tributary run` would have had in-process (0, 1, 75, 78).
    pub exit_code: i32,
    /// How the run ended (`None`: it did not start).
    pub outcome: Option<RunOutcome>,
    /// The pass it worked on (`first`, `incremental`, `full_refresh`).
    pub pass: Option<String>,
    /// Whether it continued a saved position.
    pub resumed: bool,
    /// Counts.
    pub counts: RunCounts,
    /// Wall time in seconds.
    pub duration_seconds: f64,
    /// Why it failed or did not start.
    pub error: Option<String>,
}

impl RunReport {
    fn refused(importer: &str, exit_code: i32, error: String) -> RunReport {
        RunReport {
            importer: importer.to_string(),
            exit_code,
            outcome: None,
            pass: None,
            resumed: false,
            counts: RunCounts::default(),
            duration_seconds: 0.0,
            error: Some(error),
        }
    }

    fn from_result(importer: &str, result: &Result<RunSummary, RunError>) -> RunReport {
        match result {
            Ok(summary) => RunReport {
                importer: importer.to_string(),
                exit_code: exit::OK,
                outcome: Some(summary.outcome),
                pass: Some(summary.pass.as_str().to_string()),
                resumed: summary.resumed,
                counts: summary.counts.clone(),
                duration_seconds: summary.duration.as_secs_f64(),
                error: None,
            },
            Err(RunError::Busy { .. }) => RunReport::refused(
                importer,
                exit::BUSY,
                format!("importer `{importer}` is being run by another process; nothing was done"),
            ),
            Err(error @ RunError::Failed { counts, .. }) => RunReport {
                importer: importer.to_string(),
                exit_code: exit::FAILURE,
                outcome: Some(RunOutcome::Failed),
                pass: None,
                resumed: false,
                counts: counts.clone(),
                duration_seconds: 0.0,
                error: Some(error.to_string()),
            },
            Err(error) => RunReport::refused(importer, exit::FAILURE, error.to_string()),
        }
    }
}

/// How the scheduler runs an importer: the engine against the store in the daemon, and
/// the same in tests (with fake services); a test may count or slow runs down.
#[async_trait]
pub trait Executor: Send + std::marker::Sync + 'static {
    /// Runs one importer once.
    async fn run(
        &self,
        importer: Arc<Importer>,
        options: RunOptions,
    ) -> Result<RunSummary, RunError>;

    /// The saved time of the importer's last complete full pass (full-refresh services
    /// are scheduled from it).
    async fn last_full_refresh(&self, importer: &str) -> Option<DateTime<Utc>>;
}

/// The engine, on a store.
pub struct EngineExecutor {
    /// The store runs write to.
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl Executor for EngineExecutor {
    async fn run(
        &self,
        importer: Arc<Importer>,
        options: RunOptions,
    ) -> Result<RunSummary, RunError> {
        run_importer(importer, Arc::clone(&self.store), options).await
    }

    async fn last_full_refresh(&self, importer: &str) -> Option<DateTime<Utc>> {
        self.store
            .importer_state(importer)
            .await
            .ok()
            .and_then(|s| s.checkpoint.last_full_refresh)
    }
}

struct Waiting {
    request: RunRequest,
    reply: oneshot::Sender<RunReport>,
    /// Refused with 75 if the importer is still running then.
    deadline: DateTime<Utc>,
}

struct Entry {
    importer: Arc<Importer>,
    phase: Phase,
    next_due: DateTime<Utc>,
    due_reason: DueReason,
    failures: u32,
    last_failure: Option<FailureKind>,
    last_error: Option<String>,
    last_run_at: Option<DateTime<Utc>>,
    last_outcome: Option<RunOutcome>,
    last_success_at: Option<DateTime<Utc>>,
    /// A keyed hash of the credentials the service refused.
    refused_credentials: Option<[u8; 32]>,
    /// Runs asked for by hand, served before anything else.
    requested: Vec<Waiting>,
    cancel: Option<CancellationToken>,
    progress: Option<Arc<Mutex<RunProgress>>>,
    runs: u64,
    /// Its file was removed while it ran: dropped from the schedule when the run ends.
    removed: bool,
    /// When a run last dropped a saved position for a new pass, and why.
    pass_restarted: Option<String>,
}

impl Entry {
    /// An importer's place in the schedule from what the store saved: `next_run_at` as
    /// saved (a time in the past is due at once, once), failures in a row from the run
    /// history.
    fn from_store(
        importer: Arc<Importer>,
        state: Option<&crate::store::ImporterState>,
        history: &[crate::store::RunRecord],
        now: DateTime<Utc>,
    ) -> Entry {
        let failures = history
            .iter()
            .take_while(|r| r.outcome == Some(RunOutcome::Failed))
            .count() as u32;
        let last = history.iter().find(|r| r.finished_at.is_some());
        let (next_due, due_reason) = match state.and_then(|s| s.next_run_at) {
            Some(at) if failures > 0 => (at, DueReason::Backoff),
            Some(at) => (at, DueReason::Interval),
            None => (now, DueReason::First),
        };
        Entry {
            phase: if importer.enabled {
                Phase::Idle
            } else {
                Phase::Disabled
            },
            next_due,
            due_reason,
            failures,
            last_failure: None,
            last_error: state.and_then(|s| s.last_error.clone()),
            last_run_at: state.and_then(|s| s.last_run_at),
            last_outcome: last.and_then(|r| r.outcome),
            last_success_at: history
                .iter()
                .find(|r| matches!(r.outcome, Some(RunOutcome::Completed | RunOutcome::Partial)))
                .and_then(|r| r.finished_at),
            refused_credentials: None,
            requested: Vec::new(),
            cancel: None,
            progress: None,
            runs: 0,
            removed: false,
            pass_restarted: None,
            importer,
        }
    }

    fn view(&self) -> EntryView {
        let scheduled = matches!(self.phase, Phase::Idle);
        EntryView {
            importer: self.importer.id.clone(),
            connector: self.importer.connector.id.clone(),
            list: self.importer.list.clone(),
            phase: self.phase,
            next_run_at: scheduled.then_some(self.next_due),
            due_reason: self.due_reason,
            failures: self.failures,
            last_failure: self.last_failure,
            last_error: self.last_error.clone(),
            last_run_at: self.last_run_at,
            last_outcome: self.last_outcome,
            last_success_at: self.last_success_at,
            progress: self
                .progress
                .as_ref()
                .map(|p| *p.lock().expect("progress lock")),
            runs: self.runs,
            pass_restarted: self.pass_restarted.clone(),
        }
    }
}

enum Event {
    Finished {
        importer: String,
        started: DateTime<Utc>,
        result: Box<Result<RunSummary, RunError>>,
        replies: Vec<oneshot::Sender<RunReport>>,
        /// The run's slot, given back only once the schedule has taken the run's end
        /// into account, so the count of runs in flight never lags the limit.
        permit: tokio::sync::OwnedSemaphorePermit,
        /// The lease claimed for the run, given back with the next run's time.
        lease: Lease,
    },
    Request {
        importer: String,
        request: RunRequest,
        reply: oneshot::Sender<RunReport>,
    },
    Resume {
        importer: String,
    },
    Reload {
        importers: Vec<Arc<Importer>>,
        reply: oneshot::Sender<ReloadSummary>,
    },
}

/// What a reload changed in the schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSummary {
    /// Importers scheduled for the first time (or again, after their file came back).
    pub added: Vec<String>,
    /// Importers whose compiled form changed: the next run uses the new one.
    pub changed: Vec<String>,
    /// Importers no longer scheduled (their state stays in the store).
    pub removed: Vec<String>,
    /// Importers left as they were.
    pub unchanged: usize,
}

impl ReloadSummary {
    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Counters a test or `/status` reads.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Load {
    /// Runs in flight now.
    pub running: usize,
    /// The most runs ever in flight at once.
    pub max_running: usize,
    /// Runs started.
    pub started: u64,
}

struct State {
    entries: BTreeMap<String, Entry>,
    load: Load,
    rng: rand::rngs::StdRng,
}

/// A handle to ask the scheduler for things and read its state, cheap to clone.
#[derive(Clone)]
pub struct Handle {
    events: mpsc::UnboundedSender<Event>,
    state: Arc<Mutex<State>>,
}

impl Handle {
    /// Asks for a run now, behind the concurrency limit, and waits for its report.
    pub async fn run_now(&self, importer: &str, request: RunRequest) -> RunReport {
        let (reply, answer) = oneshot::channel();
        let sent = self.events.send(Event::Request {
            importer: importer.to_string(),
            request,
            reply,
        });
        if sent.is_err() {
            return RunReport::refused(
                importer,
                exit::BUSY,
                "the daemon is shutting down; nothing was done".into(),
            );
        }
        answer.await.unwrap_or_else(|_| {
            RunReport::refused(
                importer,
                exit::BUSY,
                "the daemon stopped before the run ended; the next run resumes from its checkpoint"
                    .into(),
            )
        })
    }

    /// Resumes an importer paused for its credentials (or clears its back-off) now.
    pub fn resume(&self, importer: &str) {
        let _ = self.events.send(Event::Resume {
            importer: importer.to_string(),
        });
    }

    /// Replaces the scheduled importers with `importers` (a reload): added ones are
    /// scheduled as the store says, changed ones take effect from their next run (a run
    /// in flight goes on with the version it started with), removed ones are dropped
    /// once their run in flight, if any, has committed its page.
    pub async fn reload(&self, importers: Vec<Arc<Importer>>) -> Option<ReloadSummary> {
        let (reply, answer) = oneshot::channel();
        self.events.send(Event::Reload { importers, reply }).ok()?;
        answer.await.ok()
    }

    /// Every importer's place in the schedule, by id.
    pub fn entries(&self) -> Vec<EntryView> {
        let state = self.state.lock().expect("scheduler lock");
        state.entries.values().map(Entry::view).collect()
    }

    /// One importer's place in the schedule.
    pub fn entry(&self, importer: &str) -> Option<EntryView> {
        let state = self.state.lock().expect("scheduler lock");
        state.entries.get(importer).map(Entry::view)
    }

    /// Runs in flight, and the most there ever were.
    pub fn load(&self) -> Load {
        self.state.lock().expect("scheduler lock").load
    }

    /// Whether the scheduler knows this importer.
    pub fn knows(&self, importer: &str) -> bool {
        self.state
            .lock()
            .expect("scheduler lock")
            .entries
            .get(importer)
            .is_some_and(|e| !e.removed)
    }
}

/// The schedule of a set of importers.
pub struct Scheduler {
    settings: Settings,
    clock: Arc<dyn Clock>,
    executor: Arc<dyn Executor>,
    store: Arc<dyn Store>,
    state: Arc<Mutex<State>>,
    events: mpsc::UnboundedReceiver<Event>,
    sender: mpsc::UnboundedSender<Event>,
    permits: Arc<Semaphore>,
    tasks: tokio::task::JoinSet<()>,
    /// Keys the hash of refused credentials; random per process, never stored.
    credentials_key: [u8; 32],
    next_credential_check: DateTime<Utc>,
}

/// What the scheduler writes to the store after deciding, outside its lock.
enum Save {
    NextRun(String, Option<DateTime<Utc>>),
    NeedsCredentials(String, bool),
    /// A claimed lease given back, with the importer's next run time, in one transaction.
    Release(Lease, Option<DateTime<Utc>>),
}

/// Wait before asking again for importers that another node was claiming at the same
/// moment, or when the store could not be asked.
const CLAIM_RETRY: Duration = Duration::from_millis(250);

/// Renews a claimed lease every third of its lifetime while its run goes on (also while
/// a request or a page write takes long), until aborted. A renewal refused because the
/// lease changed hands marks it lost, and the run stops before its next request.
async fn keep_lease(store: Arc<dyn Store>, held: Arc<HeldLease>) {
    let every = held.ttl() / 3;
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        let asked_at = std::time::Instant::now();
        match store.renew_lease(held.lease(), held.ttl()).await {
            Ok(_) => {
                held.renewed(asked_at);
                wait = every;
            }
            Err(StoreError::LeaseLost { .. }) => {
                held.mark_lost();
                metrics::lease_lost(&held.lease().importer);
                tracing::warn!(importer = %held.lease().importer, fencing_token = held.lease().fencing_token, "Lease lost while running (it expired, or another node took it over); the run stops before its next request.");
                return;
            }
            Err(e) => {
                // Tried again soon; if the store stays out of reach the lease runs out
                // locally and the run stops before its next request.
                tracing::warn!(importer = %held.lease().importer, error = %e, "Could not renew the run lease.");
                wait = (every / 4).max(Duration::from_millis(200));
            }
        }
    }
}

impl Scheduler {
    /// A scheduler for `importers`, their places read from the store: `next_run_at` as
    /// saved (a time in the past is due at once, once), failures in a row from the run
    /// history, and the "needs new credentials" flag (such an importer is tried once
    /// more at start, since its credentials may have changed while no daemon ran).
    pub async fn new(
        importers: impl IntoIterator<Item = Arc<Importer>>,
        store: Arc<dyn Store>,
        executor: Arc<dyn Executor>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> (Scheduler, Handle) {
        let now = clock.now();
        let saved: BTreeMap<String, crate::store::ImporterState> = match store
            .importer_states()
            .await
        {
            Ok(states) => states
                .into_iter()
                .map(|s| (s.importer.clone(), s))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "Could not read the saved schedule; every importer is due now.");
                BTreeMap::new()
            }
        };
        // One statement for every importer's recent history (10,000 importers: one query
        // each took most of the start).
        let importers: Vec<Arc<Importer>> = importers.into_iter().collect();
        let ids: Vec<String> = importers.iter().map(|i| i.id.clone()).collect();
        let mut histories = match store.recent_runs(&ids, 16).await {
            Ok(histories) => histories,
            Err(e) => {
                tracing::warn!(error = %e, "Could not read the run history; failures in a row start from zero.");
                Default::default()
            }
        };
        let mut entries = BTreeMap::new();
        for importer in importers {
            let history = histories.remove(&importer.id).unwrap_or_default();
            let state = saved.get(&importer.id);
            let entry = Entry::from_store(importer, state, &history, now);
            entries.insert(entry.importer.id.clone(), entry);
        }
        let rng = match settings.seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        let state = Arc::new(Mutex::new(State {
            entries,
            load: Load::default(),
            rng,
        }));
        let (sender, events) = mpsc::unbounded_channel();
        let mut credentials_key = [0u8; 32];
        rand::rng().fill(&mut credentials_key);
        let handle = Handle {
            events: sender.clone(),
            state: Arc::clone(&state),
        };
        let scheduler = Scheduler {
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            next_credential_check: now,
            settings,
            clock,
            executor,
            store,
            state,
            events,
            sender,
            tasks: tokio::task::JoinSet::new(),
            credentials_key,
        };
        (scheduler, handle)
    }

    /// Runs the schedule until `shutdown` is cancelled; then cancels every run in flight
    /// (each commits the page it is writing and saves its checkpoint) and waits for them.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let saves = self.start_due().await;
            self.save(saves).await;
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(event) = self.events.recv() => {
                    let saves = self.handle(event).await;
                    self.save(saves).await;
                }
                () = self.clock.sleep_until(wake) => {
                    let saves = self.check_credentials().await;
                    self.save(saves).await;
                }
            }
        }
        self.stop().await;
    }

    /// Cancels the runs in flight and waits for each to end; records where each will
    /// resume.
    async fn stop(&mut self) {
        {
            let state = self.state.lock().expect("scheduler lock");
            for entry in state.entries.values() {
                if let Some(cancel) = &entry.cancel {
                    cancel.cancel();
                }
            }
        }
        while self.tasks.join_next().await.is_some() {
            while let Ok(event) = self.events.try_recv() {
                let saves = self.handle(event).await;
                self.save(saves).await;
            }
        }
        while let Ok(event) = self.events.try_recv() {
            let saves = self.handle(event).await;
            self.save(saves).await;
        }
    }

    async fn save(&self, saves: Vec<Save>) {
        for save in saves {
            let result = match &save {
                Save::NextRun(importer, at) => self.store.set_next_run(importer, *at).await,
                Save::NeedsCredentials(importer, needed) => {
                    self.store
                        .set_needs_new_credentials(importer, *needed)
                        .await
                }
                Save::Release(lease, at) => match self.store.release_claim(lease, *at).await {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        tracing::info!(importer = %lease.importer, "The lease had changed hands before the run ended; its holder records the next run.");
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = result {
                let importer = match &save {
                    Save::NextRun(i, _) | Save::NeedsCredentials(i, _) => i,
                    Save::Release(lease, _) => &lease.importer,
                };
                tracing::warn!(importer = %importer, error = %e, "Could not save the schedule in the store.");
            }
        }
    }

    /// When the loop must look again: the earliest due importer (only while a run may
    /// start: with every slot taken, a finishing run wakes the loop), a waiting request's
    /// deadline, or the next credentials check.
    fn next_wake(&self) -> DateTime<Utc> {
        let state = self.state.lock().expect("scheduler lock");
        let mut wake = self.next_credential_check;
        let free = self.permits.available_permits() > 0;
        for entry in state.entries.values() {
            if free && entry.phase == Phase::Idle {
                wake = wake.min(entry.next_due);
            }
            for waiting in &entry.requested {
                if entry.phase == Phase::Running {
                    wake = wake.min(waiting.deadline);
                }
            }
        }
        wake
    }

    /// Starts every due run that a free slot allows, oldest due first (runs asked for by
    /// hand before all). Due importers are claimed through the store first (their leases
    /// taken in one transaction, rows another node is claiming skipped), so several nodes
    /// sharing one database share the work, and an importer another node ran meanwhile
    /// is rescheduled by what the store says.
    async fn start_due(&mut self) -> Vec<Save> {
        let now = self.clock.now();
        let mut saves = Vec::new();
        let candidates: Vec<ClaimRequest> = {
            let mut state = self.state.lock().expect("scheduler lock");
            // Requests waiting behind a run that is still going past their deadline: 75.
            for entry in state.entries.values_mut() {
                if entry.phase == Phase::Running {
                    let (expired, kept): (Vec<_>, Vec<_>) =
                        entry.requested.drain(..).partition(|w| w.deadline <= now);
                    entry.requested = kept;
                    for waiting in expired {
                        let _ = waiting.reply.send(RunReport::refused(
                            &entry.importer.id,
                            exit::BUSY,
                            format!(
                                "importer `{}` is running in the daemon; nothing was done (use --wait PT5M to wait for it)",
                                entry.importer.id
                            ),
                        ));
                    }
                }
            }
            let mut due: Vec<(bool, DateTime<Utc>, String)> = state
                .entries
                .values()
                .filter_map(|e| {
                    let requested = !e.requested.is_empty();
                    let startable = match e.phase {
                        Phase::Idle => requested || e.next_due <= now,
                        Phase::NeedsCredentials | Phase::Disabled => requested,
                        Phase::Running => false,
                    };
                    startable.then(|| (!requested, e.next_due, e.importer.id.clone()))
                })
                .collect();
            due.sort();
            let free = self.permits.available_permits();
            due.truncate((free * 8).max(32));
            due.into_iter()
                .map(|(scheduled, _, importer)| ClaimRequest {
                    importer,
                    forced: !scheduled,
                })
                .collect()
        };
        let free = self.permits.available_permits();
        if candidates.is_empty() || free == 0 {
            return saves;
        }
        let ttl = self.settings.lease_ttl;
        let asked_at = std::time::Instant::now();
        let claims = match self.store.claim_due(&candidates, now, free, ttl).await {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(error = %e, "Could not claim due importers in the store; trying again shortly.");
                let mut state = self.state.lock().expect("scheduler lock");
                let retry = now + chrono::Duration::from_std(CLAIM_RETRY * 4).unwrap_or_default();
                for c in &candidates {
                    if let Some(entry) = state.entries.get_mut(&c.importer) {
                        entry.next_due = entry.next_due.max(retry);
                    }
                }
                return saves;
            }
        };
        let mut state = self.state.lock().expect("scheduler lock");
        let mut answered: std::collections::HashSet<String> = std::collections::HashSet::new();
        let (mut held, mut not_due) = (0, 0);
        for (id, refusal) in claims.refused {
            let Some(entry) = state.entries.get_mut(&id) else {
                continue;
            };
            answered.insert(id.clone());
            match refusal {
                ClaimRefusal::NotDue(at) => {
                    not_due += 1;
                    if entry.requested.is_empty() {
                        entry.next_due = at;
                        if entry.due_reason == DueReason::First {
                            entry.due_reason = DueReason::Interval;
                        }
                    }
                }
                ClaimRefusal::NeedsCredentials => {
                    not_due += 1;
                    entry.next_due = now
                        + chrono::Duration::from_std(self.settings.credential_check)
                            .unwrap_or_default();
                    entry.due_reason = DueReason::Busy;
                }
                ClaimRefusal::Held { node, remaining } => {
                    held += 1;
                    // Asked for by hand: refused with 75 once every asker's wait is over.
                    let (expired, kept): (Vec<_>, Vec<_>) =
                        entry.requested.drain(..).partition(|w| w.deadline <= now);
                    entry.requested = kept;
                    let holder = node.unwrap_or_else(|| "another process".into());
                    for waiting in expired {
                        let _ = waiting.reply.send(RunReport::refused(
                            &id,
                            exit::BUSY,
                            format!(
                                "importer `{id}` is being run by {holder}; nothing was done (use --wait PT5M to wait for it)"
                            ),
                        ));
                    }
                    let retry = if entry.requested.is_empty() {
                        // Looked at again when the lease would expire (plus a little),
                        // at the latest after the busy retry.
                        (remaining + CLAIM_RETRY).min(self.settings.busy_retry)
                    } else {
                        remaining.min(Duration::from_secs(1)) + CLAIM_RETRY
                    };
                    entry.next_due = now + chrono::Duration::from_std(retry).unwrap_or_default();
                    entry.due_reason = DueReason::Busy;
                }
            }
            entry.next_due = entry.next_due.trunc_subsecs(6);
        }
        metrics::claims("claimed", claims.claimed.len());
        metrics::claims("held", held);
        metrics::claims("not_due", not_due);
        for lease in &claims.claimed {
            answered.insert(lease.importer.clone());
        }
        // Claimable but skipped (another node was claiming them at that moment): looked
        // at again shortly, unless every slot is taken now anyway.
        if claims.claimed.len() < free {
            let retry = now + chrono::Duration::from_std(CLAIM_RETRY).unwrap_or_default();
            for c in candidates
                .iter()
                .filter(|c| !answered.contains(&c.importer))
            {
                if let Some(entry) = state.entries.get_mut(&c.importer) {
                    entry.next_due = entry.next_due.max(retry);
                }
            }
        }
        for lease in claims.claimed {
            let id = lease.importer.clone();
            let held = Arc::new(HeldLease::new(lease, ttl, asked_at));
            let State { entries, load, .. } = &mut *state;
            let Some(entry) = entries.get_mut(&id) else {
                // Cannot happen (the loop alone changes the entries); given back at once.
                saves.push(Save::Release(held.lease().clone(), None));
                continue;
            };
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                saves.push(Save::Release(held.lease().clone(), Some(entry.next_due)));
                continue;
            };
            let replies: Vec<oneshot::Sender<RunReport>>;
            let request = if entry.requested.is_empty() {
                replies = Vec::new();
                RunRequest::default()
            } else {
                let waiting: Vec<Waiting> = entry.requested.drain(..).collect();
                let full_refresh = waiting.iter().any(|w| w.request.full_refresh);
                replies = waiting.into_iter().map(|w| w.reply).collect();
                RunRequest {
                    full_refresh,
                    wait_seconds: 0.0,
                }
            };
            let cancel = CancellationToken::new();
            let progress = Arc::new(Mutex::new(RunProgress::default()));
            let was = entry.phase;
            entry.phase = Phase::Running;
            entry.cancel = Some(cancel.clone());
            entry.progress = Some(Arc::clone(&progress));
            entry.last_run_at = Some(now);
            entry.runs += 1;
            load.running += 1;
            load.max_running = load.max_running.max(load.running);
            load.started += 1;
            if was == Phase::NeedsCredentials {
                saves.push(Save::NeedsCredentials(id.clone(), false));
            }
            let importer = Arc::clone(&entry.importer);
            let executor = Arc::clone(&self.executor);
            let store = Arc::clone(&self.store);
            let events = self.sender.clone();
            let lease_ttl = self.settings.lease_ttl;
            let limits = self.settings.limits;
            tracing::debug!(importer = %id, reason = ?entry.due_reason, fencing_token = held.lease().fencing_token, "Starting a run.");
            self.tasks.spawn(async move {
                let keeper = tokio::spawn(keep_lease(store, Arc::clone(&held)));
                let options = RunOptions {
                    full_refresh: request.full_refresh,
                    lease_ttl,
                    limits,
                    cancel,
                    progress: Some(Arc::new(move |p: &Progress| {
                        *progress.lock().expect("progress lock") = RunProgress {
                            pages: p.pages,
                            fetched: p.fetched,
                        };
                    })),
                    lease: Some(Arc::clone(&held)),
                    ..RunOptions::default()
                };
                let result = executor.run(Arc::clone(&importer), options).await;
                keeper.abort();
                let _ = events.send(Event::Finished {
                    importer: importer.id.clone(),
                    started: now,
                    result: Box::new(result),
                    replies,
                    permit,
                    lease: held.lease().clone(),
                });
            });
        }
        saves
    }

    async fn handle(&mut self, event: Event) -> Vec<Save> {
        match event {
            Event::Finished {
                importer,
                started,
                result,
                replies,
                permit,
                lease,
            } => {
                let mut saves = self.finished(&importer, started, *result, replies).await;
                // The next run's time is recorded with the lease given back, in one
                // transaction: no other node sees the importer free and due in between.
                let next = saves
                    .iter()
                    .position(|s| matches!(s, Save::NextRun(i, _) if *i == importer));
                let at = match next.map(|pos| saves.remove(pos)) {
                    Some(Save::NextRun(_, at)) => at,
                    _ => None,
                };
                saves.push(Save::Release(lease, at));
                drop(permit);
                saves
            }
            Event::Request {
                importer,
                request,
                reply,
            } => {
                let now = self.clock.now();
                let mut state = self.state.lock().expect("scheduler lock");
                let Some(entry) = state.entries.get_mut(&importer) else {
                    let _ = reply.send(RunReport::refused(
                        &importer,
                        exit::FAILURE,
                        format!("the daemon has no importer `{importer}`"),
                    ));
                    return Vec::new();
                };
                if entry.phase == Phase::Running && request.wait_seconds <= 0.0 {
                    let _ = reply.send(RunReport::refused(
                        &importer,
                        exit::BUSY,
                        format!(
                            "importer `{importer}` is running in the daemon; nothing was done (use --wait PT5M to wait for it)"
                        ),
                    ));
                    return Vec::new();
                }
                let wait = chrono::Duration::milliseconds(
                    (request.wait_seconds.clamp(0.0, 86_400.0) * 1000.0) as i64,
                );
                entry.requested.push(Waiting {
                    request,
                    reply,
                    deadline: now + wait,
                });
                entry.due_reason = DueReason::Requested;
                Vec::new()
            }
            Event::Reload { importers, reply } => {
                let (summary, saves) = self.reload(importers).await;
                let _ = reply.send(summary);
                saves
            }
            Event::Resume { importer } => {
                let now = self.clock.now();
                let mut state = self.state.lock().expect("scheduler lock");
                match state.entries.get_mut(&importer) {
                    Some(entry) if entry.phase != Phase::Running => {
                        let mut saves = Vec::new();
                        if entry.phase == Phase::NeedsCredentials {
                            entry.phase = Phase::Idle;
                            saves.push(Save::NeedsCredentials(importer.clone(), false));
                        }
                        entry.refused_credentials = None;
                        entry.failures = 0;
                        if entry.phase == Phase::Idle {
                            entry.next_due = now;
                            entry.due_reason = DueReason::Resume;
                            saves.push(Save::NextRun(importer.clone(), Some(now)));
                        }
                        tracing::info!(importer = %importer, "Resumed by hand.");
                        saves
                    }
                    _ => Vec::new(),
                }
            }
        }
    }

    async fn reload(&mut self, importers: Vec<Arc<Importer>>) -> (ReloadSummary, Vec<Save>) {
        let now = self.clock.now();
        let new: BTreeMap<String, Arc<Importer>> =
            importers.into_iter().map(|i| (i.id.clone(), i)).collect();
        // What the store knows of importers new to this schedule (a restored file resumes
        // where it stopped), read before the schedule is locked.
        let added: Vec<String> = {
            let state = self.state.lock().expect("scheduler lock");
            new.keys()
                .filter(|id| state.entries.get(*id).is_none_or(|e| e.removed))
                .cloned()
                .collect()
        };
        let mut fresh = BTreeMap::new();
        if !added.is_empty() {
            let saved: BTreeMap<String, crate::store::ImporterState> = self
                .store
                .importer_states()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|s| added.contains(&s.importer))
                .map(|s| (s.importer.clone(), s))
                .collect();
            for id in &added {
                let history = self.store.runs(id, 16).await.unwrap_or_default();
                fresh.insert(
                    id.clone(),
                    Entry::from_store(Arc::clone(&new[id]), saved.get(id), &history, now),
                );
            }
        }
        let mut summary = ReloadSummary::default();
        let mut saves = Vec::new();
        let mut state = self.state.lock().expect("scheduler lock");
        // Removed files.
        let gone: Vec<String> = state
            .entries
            .iter()
            .filter(|(id, e)| !e.removed && !new.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            let running = {
                let entry = state.entries.get_mut(&id).expect("listed entry");
                for waiting in entry.requested.drain(..) {
                    let _ = waiting.reply.send(RunReport::refused(
                        &id,
                        exit::FAILURE,
                        format!("importer `{id}` was removed from the configuration"),
                    ));
                }
                if let Some(cancel) = &entry.cancel {
                    // Its run commits the page it is writing and stops there.
                    cancel.cancel();
                }
                entry.removed = true;
                entry.phase == Phase::Running
            };
            if !running {
                state.entries.remove(&id);
            }
            tracing::info!(importer = %id, "Importer removed from the schedule; its state stays in the store.");
            summary.removed.push(id);
        }
        for (id, importer) in new {
            if let Some(entry) = fresh.remove(&id) {
                match state.entries.get_mut(&id) {
                    // Removed while running, and back before the run ended.
                    Some(running) => {
                        running.removed = false;
                        running.importer = importer;
                    }
                    None => {
                        state.entries.insert(id.clone(), entry);
                    }
                }
                tracing::info!(importer = %id, "Importer added to the schedule.");
                summary.added.push(id);
                continue;
            }
            let entry = state.entries.get_mut(&id).expect("kept entry");
            if entry.importer.revision == importer.revision {
                summary.unchanged += 1;
                continue;
            }
            let interval_changed = entry.importer.interval != importer.interval;
            entry.importer = Arc::clone(&importer);
            match entry.phase {
                Phase::Idle | Phase::Disabled => {
                    entry.phase = if importer.enabled {
                        Phase::Idle
                    } else {
                        Phase::Disabled
                    };
                    // A new interval counts from the last run, not from the old due time.
                    if interval_changed
                        && entry.due_reason == DueReason::Interval
                        && matches!(
                            importer.connector.sync,
                            Sync::Incremental { .. } | Sync::ChangeToken { .. }
                        )
                        && let Some(last) = entry.last_run_at
                    {
                        entry.next_due = (last
                            + chrono::Duration::from_std(importer.interval)
                                .unwrap_or(chrono::Duration::MAX))
                        .trunc_subsecs(6);
                        if entry.phase == Phase::Idle {
                            saves.push(Save::NextRun(id.clone(), Some(entry.next_due)));
                        }
                    }
                }
                // Its run goes on with the version it started with; `finished` schedules
                // the next one with the new version.
                Phase::Running | Phase::NeedsCredentials => {}
            }
            tracing::info!(importer = %id, "Importer changed; the next run uses the new version.");
            summary.changed.push(id);
        }
        (summary, saves)
    }

    async fn finished(
        &mut self,
        id: &str,
        started: DateTime<Utc>,
        result: Result<RunSummary, RunError>,
        replies: Vec<oneshot::Sender<RunReport>>,
    ) -> Vec<Save> {
        let now = self.clock.now();
        let importer = {
            let state = self.state.lock().expect("scheduler lock");
            state.entries.get(id).map(|e| Arc::clone(&e.importer))
        };
        let Some(importer) = importer else {
            return Vec::new();
        };
        metrics::run_finished(&importer, &result);
        let report = RunReport::from_result(id, &result);
        for reply in replies {
            let _ = reply.send(report.clone());
        }
        // Full-refresh services are scheduled from their last complete full pass.
        let last_full = match (&importer.connector.sync, &result) {
            (Sync::FullRefresh { .. }, Ok(s)) if s.outcome == RunOutcome::Completed => {
                self.executor.last_full_refresh(id).await
            }
            _ => None,
        };
        let credentials_hash = match &result {
            Err(RunError::Failed {
                kind: FailureKind::Credentials,
                ..
            }) => Some(self.credentials_hash(&importer)),
            _ => None,
        };
        let settings = &self.settings;
        let mut saves = Vec::new();
        let mut state = self.state.lock().expect("scheduler lock");
        let State {
            entries, load, rng, ..
        } = &mut *state;
        load.running = load.running.saturating_sub(1);
        if entries.get(id).is_some_and(|e| e.removed) {
            entries.remove(id);
            return saves;
        }
        let Some(entry) = entries.get_mut(id) else {
            return saves;
        };
        entry.cancel = None;
        entry.progress = None;
        entry.phase = if importer.enabled {
            Phase::Idle
        } else {
            Phase::Disabled
        };
        let jitter = |rng: &mut rand::rngs::StdRng, period: Duration| {
            let bound = jitter_bound(period).as_millis() as i64;
            chrono::Duration::milliseconds(if bound > 0 {
                rng.random_range(0..=bound)
            } else {
                0
            })
        };
        let std_to_chrono =
            |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        match &result {
            Ok(summary) => {
                if let Some(why) = &summary.pass_restarted {
                    entry.pass_restarted = Some(format!("{}: {why}", started.to_rfc3339()));
                }
                entry.failures = 0;
                entry.last_failure = None;
                entry.last_error = None;
                entry.last_outcome = Some(summary.outcome);
                if matches!(summary.outcome, RunOutcome::Completed | RunOutcome::Partial) {
                    entry.last_success_at = Some(now);
                }
                let (next, reason) = match summary.outcome {
                    RunOutcome::Partial => match summary.not_before {
                        Some(at) => (at.max(now), DueReason::Quota),
                        None => (
                            now + std_to_chrono(settings.continue_after),
                            DueReason::Continue,
                        ),
                    },
                    RunOutcome::Cancelled => (now, DueReason::Resume),
                    RunOutcome::Completed | RunOutcome::Failed => match &importer.connector.sync {
                        Sync::FullRefresh { every } => {
                            let from = last_full.unwrap_or(started);
                            (
                                from + std_to_chrono(*every) + jitter(rng, *every),
                                DueReason::Interval,
                            )
                        }
                        Sync::Incremental { .. } | Sync::ChangeToken { .. } => (
                            started
                                + std_to_chrono(importer.interval)
                                + jitter(rng, importer.interval),
                            DueReason::Interval,
                        ),
                    },
                };
                entry.next_due = next;
                entry.due_reason = reason;
            }
            Err(RunError::Busy { .. }) => {
                entry.next_due = now + std_to_chrono(settings.busy_retry);
                entry.due_reason = DueReason::Busy;
            }
            // Not the importer's failure: this node lost its lease (paused, cut off); the
            // store says at once who holds it now and when it runs next.
            Err(
                error @ RunError::Failed {
                    kind: FailureKind::Lease,
                    ..
                },
            ) => {
                entry.last_failure = Some(FailureKind::Lease);
                entry.last_error = Some(error.to_string());
                entry.last_outcome = Some(RunOutcome::Failed);
                entry.next_due = now;
                entry.due_reason = DueReason::Busy;
            }
            Err(error) => {
                let kind = match error {
                    RunError::Failed { kind, .. } => *kind,
                    _ => FailureKind::Store,
                };
                entry.failures += 1;
                entry.last_failure = Some(kind);
                entry.last_error = Some(error.to_string());
                entry.last_outcome = Some(RunOutcome::Failed);
                if kind == FailureKind::Credentials && importer.enabled {
                    entry.phase = Phase::NeedsCredentials;
                    entry.refused_credentials = credentials_hash;
                    tracing::warn!(importer = %id, "The service refused the credentials; the importer waits until they change (or `tributary state resume {id}`).");
                    saves.push(Save::NeedsCredentials(id.to_string(), true));
                    saves.push(Save::NextRun(id.to_string(), None));
                    return saves;
                }
                let wait = backoff(entry.failures, settings.backoff_base, settings.backoff_cap);
                entry.next_due = now + std_to_chrono(wait);
                entry.due_reason = DueReason::Backoff;
                tracing::info!(importer = %id, failures = entry.failures, wait_seconds = wait.as_secs(), "Backing off after a failed run.");
            }
        }
        // Stored times keep microseconds; the schedule keeps what the store keeps.
        entry.next_due = entry.next_due.trunc_subsecs(6);
        // A request that arrived while this run went on is served next.
        if !entry.requested.is_empty() {
            entry.due_reason = DueReason::Requested;
        }
        if entry.phase == Phase::Idle {
            saves.push(Save::NextRun(id.to_string(), Some(entry.next_due)));
        }
        saves
    }

    /// Importers paused for their credentials resume when what their references resolve
    /// to changed, or when `tributary state resume` cleared the store's flag (another
    /// process, so it is read from the store).
    async fn check_credentials(&mut self) -> Vec<Save> {
        let now = self.clock.now();
        if now < self.next_credential_check {
            return Vec::new();
        }
        self.next_credential_check = now
            + chrono::Duration::from_std(self.settings.credential_check)
                .unwrap_or(chrono::Duration::seconds(30));
        let paused: Vec<(Arc<Importer>, Option<[u8; 32]>)> = {
            let state = self.state.lock().expect("scheduler lock");
            state
                .entries
                .values()
                .filter(|e| e.phase == Phase::NeedsCredentials)
                .map(|e| (Arc::clone(&e.importer), e.refused_credentials))
                .collect()
        };
        let mut resume = Vec::new();
        for (importer, refused) in paused {
            let changed = refused != Some(self.credentials_hash(&importer));
            let cleared = self
                .store
                .importer_state(&importer.id)
                .await
                .is_ok_and(|s| !s.needs_new_credentials);
            if changed || cleared {
                tracing::info!(importer = %importer.id, by = if changed { "new credentials" } else { "hand" }, "Credentials changed; the importer runs again.");
                resume.push(importer.id.clone());
            }
        }
        let mut saves = Vec::new();
        let mut state = self.state.lock().expect("scheduler lock");
        for id in resume {
            if let Some(entry) = state.entries.get_mut(&id) {
                entry.phase = Phase::Idle;
                entry.refused_credentials = None;
                entry.failures = 0;
                entry.next_due = now;
                entry.due_reason = DueReason::Resume;
                saves.push(Save::NeedsCredentials(id.clone(), false));
                saves.push(Save::NextRun(id, Some(now)));
            }
        }
        saves
    }

    /// A keyed hash of what the importer's credential references resolve to now (a
    /// reference that does not resolve hashes as its error): compared, never shown, never
    /// stored; the key is random per process.
    fn credentials_hash(&self, importer: &Importer) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.credentials_key);
        for (name, reference) in &importer.credentials {
            hasher.update(name.as_bytes());
            hasher.update(&[0]);
            match crate::secret::resolve(reference) {
                Ok(value) => {
                    hasher.update(b"ok");
                    hasher.update(value.expose().as_bytes());
                }
                Err(error) => {
                    hasher.update(b"error");
                    hasher.update(error.to_string().as_bytes());
                }
            }
            hasher.update(&[0]);
        }
        *hasher.finalize().as_bytes()
    }
}
