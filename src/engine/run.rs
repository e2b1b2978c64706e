//! One run of one importer: lease, state, pass decision, then page by page fetch ->
//! extract -> filter -> store, each page written with its checkpoint in one transaction.
//!
//! Owns the order of things and the run's bookkeeping (counts, run history, watermark,
//! page budget). Must never write a page without the lease's fencing token, never save a
//! position that holds a secret, and never let a bad record stop a run (only a bad page
//! does, after retries). Stops only at page boundaries, so the next run resumes exactly
//! where this one left off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::engine::client::{Client, ClientError, Prepared, Response, body_start};
use crate::engine::extract::{Extractor, Mapped, PageShapeError, SkipReason};
use crate::engine::filter::ClientFilters;
use crate::engine::paginate::{PageSeen, PaginateError, Paginator, PassPosition, SinceQuery, Step};
use crate::engine::projection::PageProjection;
use crate::model::{
    Checkpoint, ContactRecord, CustomFieldDef, FieldBinding, FieldValue, PageCounts, PageOutcome,
    PageWrite,
};
use crate::plan::{ErrorAction, Importer, Limits, Pagination, Sync};
use crate::store::lease::HeldLease;
use crate::store::{Lease, RunCounts, RunOutcome, Store, StoreError};

/// Attempts at a page whose body is not JSON or has no records where expected.
const PAGE_ATTEMPTS: u32 = 3;
/// Records skipped for a bad email that are logged with a sample, per run.
const SKIP_SAMPLES: u32 = 3;
/// Pass restarts one run may make for positions the service no longer accepts: one, so
/// a service that refuses every position fails the run instead of looping.
const PASS_RESTARTS: u32 = 1;
/// Pages one fetch may skip in a row for `skip_page` error rules before it fails: a
/// service refusing every page is down, not refusing one bad page.
const PAGE_SKIPS: u32 = 10;

/// A callback told about progress after each page.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + std::marker::Sync>;

/// How a run is asked for.
#[derive(Clone)]
pub struct RunOptions {
    /// Fetch and map, write nothing (no contact, no checkpoint, no run history).
    pub dry_run: bool,
    /// Pages a dry run reads.
    pub dry_run_pages: u64,
    /// Lease duration; renewed while the run goes on.
    pub lease_ttl: Duration,
    /// How long to wait for a lease another run holds; zero refuses at once.
    pub lease_wait: Duration,
    /// Start a new full pass now, whatever the schedule says, dropping a saved position:
    /// how a person re-reads everything after fixing a connector's mapping.
    pub full_refresh: bool,
    /// Called after each page (live progress on a terminal).
    pub progress: Option<ProgressFn>,
    /// Caps on response size, value size and records per page (`limits` in
    /// `tributary.yaml`).
    pub limits: Limits,
    /// Asks the run to stop at the next page boundary (shutdown, reload): the page being
    /// written commits first, a fetch in flight is abandoned, and the run ends as
    /// [`RunOutcome::Cancelled`] with its checkpoint saved.
    pub cancel: CancellationToken,
    /// A lease the daemon already claimed for this run, renewed by the daemon: the run
    /// neither takes nor releases one, and stops before its next request once this one
    /// is lost. `None`: the run takes the importer's lease itself.
    pub lease: Option<Arc<HeldLease>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            dry_run_pages: 1,
            lease_ttl: Duration::from_secs(300),
            lease_wait: Duration::ZERO,
            full_refresh: false,
            progress: None,
            limits: Limits::default(),
            cancel: CancellationToken::new(),
            lease: None,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("dry_run", &self.dry_run)
            .field("dry_run_pages", &self.dry_run_pages)
            .field("lease_ttl", &self.lease_ttl)
            .field("full_refresh", &self.full_refresh)
            .field("lease_wait", &self.lease_wait)
            .finish_non_exhaustive()
    }
}

/// Progress after a page.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Pages so far.
    pub pages: u64,
    /// Records fetched so far.
    pub fetched: u64,
    /// Time since the run started.
    pub elapsed: Duration,
}

/// What kind of pass a run worked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    /// The importer's first pass: everyone matching its filters.
    First,
    /// Records updated since the watermark (minus the lookback).
    Incremental,
    /// Everything again (full-refresh service, or the periodic full pass).
    FullRefresh,
}

impl PassKind {
    /// The words status output and reports use (`first`, `incremental`, `full_refresh`).
    pub fn as_str(self) -> &'static str {
        match self {
            PassKind::First => "first",
            PassKind::Incremental => "incremental",
            PassKind::FullRefresh => "full_refresh",
        }
    }
}

/// What a dry run would have written.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    /// Each request sent, secrets masked.
    pub requests: Vec<String>,
    /// The custom fields the contacts' values refer to (by index).
    pub fields: Vec<CustomFieldDef>,
    /// Contacts as mapped.
    pub contacts: Vec<ContactRecord>,
    /// External ids reported deleted.
    pub deleted: Vec<String>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Importer id.
    pub importer: String,
    /// Run id in the history (`None` for a dry run).
    pub run_id: Option<i64>,
    /// Completed (the pass ended) or partial (the page budget was spent).
    pub outcome: RunOutcome,
    /// Counts.
    pub counts: RunCounts,
    /// Wall time.
    pub duration: Duration,
    /// The pass worked on.
    pub pass: PassKind,
    /// Whether the run continued a saved position.
    pub resumed: bool,
    /// What a dry run saw.
    pub dry_run: Option<DryRun>,
    /// When the service accepts requests again, for a run it stopped with a quota (a
    /// wait longer than a run holds on for): the next run must not start before.
    pub not_before: Option<DateTime<Utc>>,
    /// Why this run dropped a saved position and started a new pass (`changed: request,
    /// filter_values`), when it did.
    pub pass_restarted: Option<String>,
    /// Records stamped later than now plus `sync.future_tolerance`: imported, but they
    /// did not move the watermark.
    pub future_stamped: u64,
}

/// What kind of failure ended a run: what the scheduler decides on (back off, pause for
/// new credentials, wait for a fixed file), kept apart from the message shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The service refused the credentials (401 after a renewal, `invalid_grant`, a
    /// refused login) or a credential reference does not resolve: retrying cannot help
    /// until they change.
    Credentials,
    /// Worth trying again later: 429 and 5xx streaks, timeouts, connection errors.
    Transient,
    /// The service answered in a way the connector does not expect (another 4xx, a page
    /// that is not JSON, a pagination loop, a redirect to another origin).
    Service,
    /// The connector or importer cannot work as written (a template that does not
    /// render, a URL that is not one).
    Config,
    /// The store failed.
    Store,
    /// The run lost its lease (it expired while the process was paused or cut off from
    /// the store, or another node took it over): its next page was refused.
    Lease,
}

impl FailureKind {
    /// The word used in status output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Credentials => "credentials",
            FailureKind::Transient => "transient",
            FailureKind::Service => "service",
            FailureKind::Config => "config",
            FailureKind::Store => "store",
            FailureKind::Lease => "lease",
        }
    }
}

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another run holds the importer's lease.
    #[error(
        "importer `{importer}` is being run by another process (its lease is held); nothing was done"
    )]
    Busy {
        /// Importer id.
        importer: String,
    },
    /// The run started and failed; it is recorded in the run history.
    #[error("importer `{importer}`: {message}")]
    Failed {
        /// Importer id.
        importer: String,
        /// What kind of failure, for the scheduler.
        kind: FailureKind,
        /// Run id, when the run was recorded.
        run_id: Option<i64>,
        /// What happened, secrets masked.
        message: String,
        /// What was done before the failure (committed pages stay committed).
        counts: RunCounts,
    },
    /// The store failed before the run began.
    #[error("importer `{importer}`: store: {source}")]
    Store {
        /// Importer id.
        importer: String,
        /// Cause.
        #[source]
        source: StoreError,
    },
}

/// A failure inside the page loop, before it is given the importer's name.
#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Paginate(#[from] PaginateError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

impl Fail {
    fn kind(&self) -> FailureKind {
        match self {
            Fail::Client(error) => match error.last() {
                ClientError::Credential { .. }
                | ClientError::CredentialsRefused { .. }
                | ClientError::GrantRefused { .. } => FailureKind::Credentials,
                ClientError::Status { status: 401, .. } => FailureKind::Credentials,
                ClientError::Status { status, .. } if *status == 429 || *status >= 500 => {
                    FailureKind::Transient
                }
                ClientError::Transport { .. } | ClientError::Auth { .. } => FailureKind::Transient,
                ClientError::Quota { .. } => FailureKind::Transient,
                ClientError::Template { .. } | ClientError::Url(_) => FailureKind::Config,
                ClientError::Store(_) => FailureKind::Store,
                ClientError::Exhausted { .. } => FailureKind::Transient,
                ClientError::Rule { action, .. } => match action {
                    ErrorAction::FailConfig => FailureKind::Config,
                    ErrorAction::RefreshAuth => FailureKind::Credentials,
                    ErrorAction::Retry | ErrorAction::RateLimited | ErrorAction::FailTransient => {
                        FailureKind::Transient
                    }
                    ErrorAction::RestartPass | ErrorAction::SkipPage => FailureKind::Service,
                },
                ClientError::Status { .. }
                | ClientError::ForeignNextUrl(_)
                | ClientError::ForeignRedirect { .. }
                | ClientError::Redirect { .. }
                | ClientError::TooLarge { .. } => FailureKind::Service,
            },
            Fail::Paginate(_) | Fail::Other(_) => FailureKind::Service,
            Fail::Store(StoreError::LeaseLost { .. }) => FailureKind::Lease,
            Fail::Store(_) => FailureKind::Store,
        }
    }
}

/// At most this many records are gathered into one write while the previous write runs:
/// enough to amortise a transaction's fixed cost (commit, WAL sync, statement setup) over
/// several pages, small enough that a crash re-fetches little and memory stays flat.
const GROUP_RECORDS: usize = 1_000;

/// At most this many pages per group, for services with small pages.
const GROUP_PAGES: u32 = 8;

/// Pages mapped but not yet handed to the store.
#[derive(Default)]
struct PageGroup {
    contacts: Vec<ContactRecord>,
    deleted: Vec<String>,
    /// External ids of the records the pages returned (full passes of importers with
    /// `gone_after_full_pass` only).
    seen: Vec<String>,
    /// The group completes such a pass: what it did not return is gone.
    sweep: bool,
    pages: u32,
    /// The engine's counts for the group's pages, written with them.
    counts: PageCounts,
    /// Where the group goes, set by its newest page (`None`: nothing gathered).
    target: Option<GroupTarget>,
}

/// The checkpoint, list and field bindings a group is written with.
struct GroupTarget {
    checkpoint: Checkpoint,
    /// The stamp of a full pass that finds gone records (see [`PageWrite::seen_pass`]).
    seen_pass: Option<DateTime<Utc>>,
    list_id: i64,
    bindings: Arc<Vec<FieldBinding>>,
}

/// A fetched page: the request as sent, the response, the parsed body (`None`: an empty
/// 204/304 end).
type Fetched = (Prepared, Response, Option<Value>);

/// Runs one importer now.
///
/// # Errors
/// [`RunError::Busy`] when another run holds the lease (after `lease_wait`);
/// [`RunError::Failed`] when the run failed (recorded in the run history, with the pages
/// committed before the failure kept).
pub async fn run_importer(
    importer: Arc<Importer>,
    store: Arc<dyn Store>,
    options: RunOptions,
) -> Result<RunSummary, RunError> {
    // One span per run: every line logged inside names the importer and the run.
    let span = tracing::info_span!("run", importer = %importer.id, run = tracing::field::Empty);
    run_in_span(importer, store, options, span.clone())
        .instrument(span)
        .await
}

async fn run_in_span(
    importer: Arc<Importer>,
    store: Arc<dyn Store>,
    options: RunOptions,
    span: tracing::Span,
) -> Result<RunSummary, RunError> {
    let id = importer.id.clone();
    let store_error = |source| RunError::Store {
        importer: id.clone(),
        source,
    };
    let claimed = options.lease.clone();
    let lease = match &claimed {
        Some(held) => held.lease().clone(),
        None => acquire(&*store, &id, &options)
            .await
            .map_err(store_error)?
            .ok_or_else(|| RunError::Busy {
                importer: id.clone(),
            })?,
    };
    if !options.dry_run {
        close_abandoned_runs(&*store, &id).await;
    }
    let run_id = if options.dry_run {
        None
    } else {
        match store.begin_run(&id).await {
            Ok(run_id) => Some(run_id),
            Err(e) => {
                if claimed.is_none() {
                    release(&*store, &lease).await;
                }
                return Err(store_error(e));
            }
        }
    };
    if let Some(run_id) = run_id {
        span.record("run", run_id);
    }
    let started = Instant::now();
    let mut run = Run {
        importer: Arc::clone(&importer),
        store: Arc::clone(&store),
        options,
        lease,
        lease_renewed: Instant::now(),
        run_id: run_id.unwrap_or(0),
        counts: RunCounts::default(),
        started,
        skip_samples: 0,
        timing: Timing::default(),
        dry: DryRun::default(),
        in_flight: None,
        group: PageGroup::default(),
        write_failed: false,
        pass: PassKind::First,
        resumed: false,
        restarts: std::sync::atomic::AtomicU32::new(0),
        pass_restarted: None,
        future_stamped: 0,
    };
    let result = run.execute().await;
    // A quota stop is not a failure: the pages before it are committed (below), and the
    // next run starts from the checkpoint once the service accepts requests again.
    let mut not_before = None;
    let result = match result {
        Err(Fail::Client(ClientError::Quota { until, status, .. })) => {
            tracing::warn!(importer = %id, status, until = %until, "The service asks to wait; the run stops at its checkpoint.");
            not_before = Some(until);
            Ok((RunOutcome::Partial, run.pass, run.resumed))
        }
        other => other,
    };
    // A failure while a page was being written: that write still ends (committed or
    // not) before the run is recorded; its error, if any, is secondary to the first.
    let drained = run.drain_writes().await;
    let result = match (result, drained) {
        (Ok(_), Err(fail)) => Err(fail),
        (result, _) => result,
    };
    let counts = run.counts.clone();
    let outcome = match &result {
        Ok((outcome, ..)) => *outcome,
        Err(_) => RunOutcome::Failed,
    };
    let error_text = result.as_ref().err().map(|e| e.to_string());
    if let Some(run_id) = run_id
        && let Err(e) = store
            .finish_run(run_id, outcome, &counts, error_text.as_deref())
            .await
    {
        tracing::warn!(importer = %id, run = run_id, error = %e, "Could not record the end of the run.");
    }
    // A lease the daemon claimed is given back by the daemon, with the next run's time.
    if claimed.is_none() {
        release(&*store, &run.lease).await;
    }
    let duration = started.elapsed();
    tracing::debug!(
        importer = %id,
        fetch_wait_seconds = run.timing.fetch.as_secs_f64(),
        map_seconds = run.timing.map.as_secs_f64(),
        write_wait_seconds = run.timing.write.as_secs_f64(),
        "Run timing."
    );
    match result {
        Ok((outcome, pass, resumed)) => {
            tracing::info!(
                importer = %id,
                run = run_id.unwrap_or(0),
                outcome = ?outcome,
                pages = counts.pages,
                fetched = counts.fetched,
                created = counts.created,
                updated = counts.updated,
                unchanged = counts.unchanged,
                skipped = counts.skipped,
                seconds = duration.as_secs_f64(),
                "Import run finished."
            );
            Ok(RunSummary {
                importer: id,
                run_id,
                outcome,
                counts,
                duration,
                pass,
                resumed,
                dry_run: run.options.dry_run.then(|| std::mem::take(&mut run.dry)),
                not_before,
                pass_restarted: run.pass_restarted.take(),
                future_stamped: run.future_stamped,
            })
        }
        Err(fail) => {
            let message = fail.to_string();
            let kind = fail.kind();
            tracing::error!(importer = %id, run = run_id.unwrap_or(0), kind = kind.as_str(), error = %message, "Import run failed.");
            Err(RunError::Failed {
                kind,
                importer: id,
                run_id,
                message,
                counts,
            })
        }
    }
}

async fn acquire(
    store: &dyn Store,
    id: &str,
    options: &RunOptions,
) -> Result<Option<Lease>, StoreError> {
    let deadline = Instant::now() + options.lease_wait;
    loop {
        if let Some(lease) = store.acquire_lease(id, options.lease_ttl).await? {
            return Ok(Some(lease));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs of this importer left without an end by a process that died (killed, crashed,
/// the machine lost power). Holding the lease, this run knows no other is alive, so they
/// are closed as failed, with the counts they had committed, instead of showing as
/// running forever in the history.
async fn close_abandoned_runs(store: &dyn Store, id: &str) {
    const LOOK_BACK: u32 = 20;
    let runs = match store.runs(id, LOOK_BACK).await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(importer = %id, error = %e, "Could not read the run history.");
            return;
        }
    };
    for run in runs.iter().filter(|r| r.finished_at.is_none()) {
        let closed = store
            .finish_run(
                run.run_id,
                RunOutcome::Failed,
                &run.counts,
                Some("the process running it stopped before the run finished (killed or crashed); its committed pages are kept"),
            )
            .await;
        match closed {
            Ok(()) => {
                tracing::warn!(importer = %id, run = run.run_id, "Closed a run whose process stopped before it finished.")
            }
            Err(e) => {
                tracing::warn!(importer = %id, run = run.run_id, error = %e, "Could not close an abandoned run.")
            }
        }
    }
}

async fn release(store: &dyn Store, lease: &Lease) {
    if let Err(e) = store.release_lease(lease).await {
        tracing::warn!(importer = %lease.importer, error = %e, "Could not release the run lease; it expires on its own.");
    }
}

/// Where a run's wall time went, for finding the bottleneck (logged at debug level).
#[derive(Debug, Default)]
struct Timing {
    /// Waiting for a page that was not prefetched.
    fetch: Duration,
    /// Mapping, filtering and pagination of records.
    map: Duration,
    /// Waiting for the store (write and, when overlapped, the prefetch).
    write: Duration,
}

struct Run {
    importer: Arc<Importer>,
    store: Arc<dyn Store>,
    options: RunOptions,
    lease: Lease,
    lease_renewed: Instant,
    run_id: i64,
    counts: RunCounts,
    started: Instant,
    skip_samples: u32,
    timing: Timing,
    dry: DryRun,
    /// Pages gathered while a write runs (see [`Run::drain_writes`]).
    group: PageGroup,
    /// A page write failed in this run: nothing after it may be committed.
    write_failed: bool,
    /// The page write running beside the next fetch (see [`Run::finish_write`]).
    in_flight: Option<tokio::task::JoinHandle<Result<Option<PageOutcome>, StoreError>>>,
    /// The pass this run works on, once decided.
    pass: PassKind,
    /// Whether it continues a saved position.
    resumed: bool,
    /// Pass restarts made (`restart_pass` error rules).
    restarts: std::sync::atomic::AtomicU32,
    /// Why a saved position was dropped for a new pass (the parts of the configuration
    /// that changed), when it was.
    pass_restarted: Option<String>,
    /// Records stamped in the future (see [`RunSummary::future_stamped`]).
    future_stamped: u64,
}

/// The parts of a pass fingerprint (`part=hash;...`) that differ, named for the log;
/// "the configuration" for a fingerprint saved by an older version.
pub fn changed_parts(saved: &str, current: &str) -> String {
    let parse = |f: &str| -> std::collections::BTreeMap<String, String> {
        f.split(';')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (old, new) = (parse(saved), parse(current));
    if old.is_empty() {
        return "the configuration".into();
    }
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let changed: Vec<&str> = names
        .into_iter()
        .filter(|n| old.get(*n) != new.get(*n))
        .map(String::as_str)
        .collect();
    changed.join(", ")
}

impl Run {
    async fn execute(&mut self) -> Result<(RunOutcome, PassKind, bool), Fail> {
        let importer = Arc::clone(&self.importer);
        let connector = &importer.connector;
        let state = self.store.importer_state(&importer.id).await?;
        let now = Utc::now();
        let mut checkpoint = state.checkpoint;

        // Resume a saved position only if it belongs to the same configuration.
        let resume = match (&checkpoint.position, &checkpoint.fingerprint) {
            (Some(position), Some(fingerprint)) if *fingerprint == importer.fingerprint => {
                match serde_json::from_value::<PassPosition>(position.clone()) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(importer = %importer.id, error = %e, "Saved position unreadable; starting a new pass.");
                        None
                    }
                }
            }
            (Some(_), saved) => {
                let changed =
                    changed_parts(saved.as_deref().unwrap_or_default(), &importer.fingerprint);
                tracing::info!(importer = %importer.id, changed = %changed, "What decides the records of a pass changed since the saved position; starting a new pass.");
                self.pass_restarted = Some(format!("changed: {changed}"));
                None
            }
            _ => None,
        };
        // A dry run shows the first pages of a pass, never the middle of one.
        // A forced full refresh starts a new pass too.
        let resume = if self.options.dry_run || self.options.full_refresh {
            None
        } else {
            resume
        };
        let resumed = resume.is_some();
        // No full pass ever completed: this pass reads everyone. (A watermark can exist
        // without one: a pass sorted by update time moves it with each page.)
        let never_full = checkpoint.last_full_refresh.is_none();
        if !resumed {
            let first = never_full;
            let full = first
                || self.options.full_refresh
                || match &connector.sync {
                    Sync::FullRefresh { .. } => true,
                    // Without a token from a complete pass, only a full pass can start.
                    Sync::ChangeToken { .. } if checkpoint.change_token.is_none() => true,
                    Sync::Incremental {
                        full_refresh_every, ..
                    }
                    | Sync::ChangeToken {
                        full_refresh_every, ..
                    } => full_refresh_every.is_some_and(|every| {
                        checkpoint
                            .last_full_refresh
                            .is_none_or(|last| (now - last).to_std().unwrap_or_default() >= every)
                    }),
                };
            checkpoint.position = None;
            checkpoint.pass_high_water = None;
            // An incremental pass needs a watermark; a change-token pass, a token.
            checkpoint.full_refresh = full
                || (checkpoint.watermark.is_none()
                    && !matches!(connector.sync, Sync::ChangeToken { .. }));
            checkpoint.pass_started_at = Some(now);
        }
        checkpoint.fingerprint = Some(importer.fingerprint.clone());
        let mut pass = if never_full && checkpoint.full_refresh {
            PassKind::First
        } else if checkpoint.full_refresh {
            PassKind::FullRefresh
        } else {
            PassKind::Incremental
        };
        self.pass = pass;
        self.resumed = resumed;

        let mut client = Client::new(
            Arc::clone(&importer),
            Arc::clone(&self.store),
            self.options.limits,
        )?;
        // The `since` a new pass asks from; a resumed pass asks from the one it saved.
        let pass_since = match (
            &connector.sync,
            checkpoint.full_refresh,
            checkpoint.watermark,
        ) {
            (Sync::Incremental { lookback, .. }, false, Some(watermark)) => Some(
                // Checked: a lookback reaching before the first representable date
                // means "everything", not a panic (config bounds it to 100 years).
                chrono::Duration::from_std(*lookback)
                    .ok()
                    .and_then(|lookback| watermark.checked_sub_signed(lookback))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
            ),
            _ => None,
        };
        let since_query = match &connector.sync {
            Sync::Incremental {
                since_format,
                since_inclusive,
                ..
            } => Some(SinceQuery {
                format: since_format,
                inclusive: *since_inclusive,
                requery: connector.sync.sorted_by_update()
                    && connector.pagination.shifts_with_changes(),
            }),
            Sync::FullRefresh { .. } | Sync::ChangeToken { .. } => None,
        };
        let pass_started = checkpoint.pass_started_at.unwrap_or(now);
        let safety_lag = chrono::Duration::from_std(connector.sync.safety_lag())
            .unwrap_or(chrono::Duration::zero());
        // The watermark never passes this: what changed after it (or was stamped before
        // it and became visible late) is read by the next pass.
        let watermark_cap = pass_started
            .checked_sub_signed(safety_lag)
            .unwrap_or(pass_started);
        let future_tolerance = chrono::Duration::from_std(connector.sync.future_tolerance())
            .unwrap_or(chrono::Duration::zero());

        let defs: Vec<CustomFieldDef> = connector
            .custom_fields
            .iter()
            .map(|f| f.def.clone())
            .collect();
        let (list_id, bindings) = if self.options.dry_run {
            self.dry.fields = defs.clone();
            let bindings = defs
                .iter()
                .enumerate()
                .map(|(i, d)| FieldBinding {
                    field_id: -(i as i64) - 1,
                    tag: d.tag.clone(),
                    stored_type: d.field_type,
                })
                .collect();
            (0, bindings)
        } else {
            let list_id = self.store.ensure_list(&importer.list).await?;
            (list_id, self.store.ensure_custom_fields(&defs).await?)
        };
        let bindings: Arc<Vec<FieldBinding>> = Arc::new(bindings);
        let extractor = Extractor::new(connector, &bindings);
        let projection = PageProjection::for_connector(connector);
        let filters =
            ClientFilters::new(&importer.client_filters, connector).map_err(Fail::Other)?;
        let mut paginator = Paginator::new(
            &connector.pagination,
            importer.page_size,
            connector.max_results_per_query,
            resume,
            since_query,
            pass_since,
        );
        client.set("since", paginator.since_value());
        client.set("change_token", Value::Null);
        let token_path = match &connector.sync {
            Sync::ChangeToken { token, .. } => {
                let token_now = (!resumed && !checkpoint.full_refresh)
                    .then(|| checkpoint.change_token.clone())
                    .flatten();
                paginator = paginator.with_change_token(token_now);
                Some(token)
            }
            _ => None,
        };
        // The change token a page of this run carried (the last page of a pass does).
        let mut next_token: Option<String> = None;
        let mut token_dropped = false;
        let readd = matches!(
            connector.pagination,
            Pagination::NextUrl {
                verbatim: false,
                ..
            }
        );
        let budget = if self.options.dry_run {
            Some(self.options.dry_run_pages.max(1))
        } else {
            importer.page_budget
        };
        let mut pages_this_run = 0u64;
        let mut pending: Option<Fetched> = None;

        // A new pass first reads what the service deleted since the pass's `since` (a
        // full pass: everything the service still lists as deleted), committed before
        // any page of the pass. An importer's first pass has nothing to remove yet.
        if let Some(deletions) = &connector.deletions
            && !resumed
            && !never_full
            && !self.options.dry_run
        {
            let since_query = match &connector.sync {
                Sync::Incremental {
                    since_format,
                    since_inclusive,
                    ..
                } => Some(SinceQuery {
                    format: since_format,
                    inclusive: *since_inclusive,
                    requery: false,
                }),
                Sync::FullRefresh { .. } | Sync::ChangeToken { .. } => None,
            };
            let deletions_paginator = Paginator::new(
                &deletions.pagination,
                importer.page_size,
                None,
                None,
                since_query,
                pass_since,
            );
            self.read_deletions(
                &mut client,
                deletions,
                deletions_paginator,
                &checkpoint,
                list_id,
                &bindings,
            )
            .await?;
        }

        let cancel = self.options.cancel.clone();
        loop {
            if budget.is_some_and(|b| pages_this_run >= b) {
                return Ok((RunOutcome::Partial, pass, resumed));
            }
            if cancel.is_cancelled() {
                tracing::info!(importer = %importer.id, "Run cancelled at a page boundary; the next run resumes here.");
                return Ok((RunOutcome::Cancelled, pass, resumed));
            }
            self.renew_lease_if_due().await?;

            let fetch_started = Instant::now();
            let (prepared, response, body) = match pending.take() {
                Some(fetched) => fetched,
                None => {
                    // A fetch (with its retries) may take long: cancelling abandons it;
                    // nothing of it was committed, so the next run fetches it again.
                    tokio::select! {
                        fetched = self.fetch_page(
                            &mut client,
                            &mut paginator,
                            &extractor,
                            projection.as_ref(),
                            readd,
                        ) => fetched?,
                        () = cancel.cancelled() => {
                            tracing::info!(importer = %importer.id, "Run cancelled while fetching; the next run resumes at its checkpoint.");
                            return Ok((RunOutcome::Cancelled, pass, resumed));
                        }
                    }
                }
            };
            self.timing.fetch += fetch_started.elapsed();
            if paginator.token_dropped() && !token_dropped {
                token_dropped = true;
                tracing::warn!(importer = %importer.id, "The service refused the change token (expired); a full pass reads everything again.");
                checkpoint.full_refresh = true;
                checkpoint.change_token = None;
                pass = PassKind::FullRefresh;
                self.pass = pass;
                self.pass_restarted =
                    Some("the change token was refused (expired): full pass".into());
            }
            if let (Some(path), Some(body)) = (token_path, body.as_ref())
                && let Some(token) = path.first(body).and_then(|t| t.as_str())
                && !token.is_empty()
            {
                next_token = Some(token.to_string());
            }
            let map_started = Instant::now();
            let counted_before = self.counts.clone();
            if self.options.dry_run {
                self.dry.requests.push(client.describe(&prepared));
            }
            let records = match &body {
                Some(value) => extractor.records(value).unwrap_or_default(),
                None => Vec::new(),
            };
            let max_records = self.options.limits.max_records_per_page;
            if records.len() as u64 > max_records {
                return Err(Fail::Other(format!(
                    "a page of {} records from {} is more than limits.max_records_per_page ({max_records}) allows",
                    records.len(),
                    client.secrets().redact(&response.url),
                )));
            }

            let mut contacts = Vec::with_capacity(records.len());
            let mut deleted = Vec::new();
            // A full pass of an importer with `gone_after_full_pass` stamps what it reads
            // with its start; whatever its last write finds unstamped is gone. Times as
            // both stores keep them (whole microseconds), so the stamp compares exactly.
            let seen_pass =
                (importer.gone_after_full_pass && checkpoint.full_refresh && !self.options.dry_run)
                    .then_some(checkpoint.pass_started_at)
                    .flatten()
                    .map(|at| chrono::SubsecRound::trunc_subsecs(at, 6));
            let mut seen_ids = Vec::new();
            let mut page_high: Option<DateTime<Utc>> = None;
            let future_from = Utc::now()
                .checked_add_signed(future_tolerance)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            let future_from_opt = Some(future_from);
            let requeries = paginator.requeries();
            let mut repeats = 0u64;
            let mut at_newest: Vec<Value> = Vec::new();
            for record in &records {
                let out = extractor.map(record);
                let tie = if requeries {
                    extractor.tie_breaker(record)
                } else {
                    Value::Null
                };
                if paginator.read_before(out.updated_at, &tie) {
                    // Safe paging's re-query returned a record this pass committed.
                    repeats += 1;
                    continue;
                }
                if requeries && out.updated_at.is_some() && out.updated_at <= future_from_opt {
                    if out.updated_at > page_high {
                        at_newest.clear();
                    }
                    if out.updated_at >= page_high {
                        at_newest.push(tie.clone());
                    }
                }
                match out.updated_at {
                    Some(at) if at > future_from => {
                        // Imported, but never the watermark: one record stamped in 2030
                        // would hide every later change until a full refresh.
                        self.future_stamped += 1;
                        if self.future_stamped <= u64::from(SKIP_SAMPLES) {
                            let external_id = out.external_id.as_deref().unwrap_or("-");
                            tracing::warn!(importer = %importer.id, updated_at = %at, external_id, "A record is stamped in the future; it is imported but does not move the watermark.");
                        }
                    }
                    at => page_high = page_high.max(at),
                }
                if seen_pass.is_some()
                    && !matches!(out.mapped, Mapped::Deleted(_))
                    && let Some(external_id) = &out.external_id
                {
                    seen_ids.push(external_id.clone());
                }
                let mapped = match out.mapped {
                    Mapped::Contact(contact, failures) => {
                        match oversized_value(
                            &contact,
                            &bindings,
                            self.options.limits.max_value_bytes,
                        ) {
                            Some((field, bytes)) => Mapped::Skipped(SkipReason::ValueTooLarge {
                                field,
                                bytes,
                                limit: self.options.limits.max_value_bytes,
                            }),
                            None => Mapped::Contact(contact, failures),
                        }
                    }
                    other => other,
                };
                match mapped {
                    Mapped::Contact(contact, failures) => {
                        self.counts.field_failures += failures;
                        if filters.keep(&contact) {
                            contacts.push(contact);
                        } else {
                            self.counts.skipped += 1;
                        }
                    }
                    Mapped::Deleted(external_id) => {
                        self.counts.deleted += 1;
                        deleted.extend(external_id);
                    }
                    Mapped::Skipped(reason) => {
                        self.counts.skipped += 1;
                        if self.skip_samples < SKIP_SAMPLES {
                            self.skip_samples += 1;
                            // A record's value may be anything, even a credential the
                            // service echoes back: the sample is cleaned like any text.
                            let shown = client.secrets().redact(&reason.to_string());
                            let external_id = out.external_id.as_deref().unwrap_or("-");
                            if matches!(reason, SkipReason::ValueTooLarge { .. }) {
                                tracing::warn!(importer = %importer.id, reason = %shown, external_id, "Skipped a record with a value over the limit.");
                            } else {
                                tracing::warn!(importer = %importer.id, reason = %shown, external_id, "Skipped a record without a valid email.");
                            }
                        }
                    }
                }
            }
            let link = response.link();
            let seen = PageSeen {
                status: response.status,
                body: body.as_ref(),
                link: link.as_deref(),
                url: &response.url,
                records: records.len(),
                last_keyset: records.last().and_then(|r| extractor.keyset(r)),
                newest: page_high,
                at_newest,
            };
            let step = paginator.advance(&seen, client.secrets())?;
            self.counts.pages += 1;
            self.counts.fetched += records.len() as u64 - repeats;
            pages_this_run += 1;
            let page_counts = PageCounts {
                pages: self.counts.pages - counted_before.pages,
                fetched: self.counts.fetched - counted_before.fetched,
                skipped: self.counts.skipped - counted_before.skipped,
                field_failures: self.counts.field_failures - counted_before.field_failures,
                deleted: self.counts.deleted - counted_before.deleted,
            };
            drop(records);
            // Freeing a parsed page (hundreds of thousands of small allocations) is a
            // sixth of the engine thread's time on a first import; a blocking-pool thread
            // does it while this one goes on.
            if let Some(body) = body {
                tokio::task::spawn_blocking(move || drop(body));
            }

            checkpoint.pass_high_water = checkpoint.pass_high_water.max(page_high);
            if connector.sync.sorted_by_update() {
                // Sorted oldest first: everything up to this page's newest time is read
                // and commits with this page.
                checkpoint.watermark = checkpoint
                    .watermark
                    .max(page_high.map(|high| high.min(watermark_cap)));
            }
            match step {
                Step::Continue => {
                    checkpoint.position = Some(
                        serde_json::to_value(paginator.position())
                            .map_err(|e| Fail::Other(format!("saving the position: {e}")))?,
                    );
                }
                Step::Done(end) => {
                    tracing::debug!(importer = %importer.id, end = ?end, "Pass complete.");
                    // Never past the pass's start minus the safety lag: a record changed
                    // after the pass read it, or stamped before the pass but visible only
                    // after, is read by the next pass.
                    checkpoint.watermark = checkpoint.watermark.max(
                        checkpoint
                            .pass_high_water
                            .map(|high| high.min(watermark_cap)),
                    );
                    if checkpoint.full_refresh {
                        checkpoint.last_full_refresh = checkpoint.pass_started_at;
                    }
                    if token_path.is_some() {
                        if next_token.is_none() {
                            tracing::warn!(importer = %importer.id, "The pass ended without a change token; the next pass reads everything.");
                        }
                        checkpoint.change_token = next_token.take();
                    }
                    checkpoint.position = None;
                    checkpoint.pass_high_water = None;
                    checkpoint.full_refresh = false;
                    checkpoint.pass_started_at = None;
                }
            }

            // Pages are written by a task of their own while the next page is fetched,
            // parsed and mapped here: on a multi-core machine the engine's CPU work and
            // the store's run side by side instead of taking turns. While a write is still
            // running, the pages mapped meanwhile are gathered and written together in one
            // transaction (group commit, up to `GROUP_RECORDS` records) with the newest
            // of their checkpoints; pages are still committed strictly in order, so the
            // saved checkpoint never runs ahead of the committed contacts, and a crash
            // re-fetches at most the uncommitted group.
            let prefetch = matches!(step, Step::Continue)
                && budget.is_none_or(|b| pages_this_run < b)
                && !self.options.dry_run;
            if self.options.dry_run {
                self.dry.contacts.extend(contacts);
                self.dry.deleted.extend(deleted);
            } else {
                self.timing.map += map_started.elapsed();
                let group = &mut self.group;
                group.contacts.extend(contacts);
                group.deleted.extend(deleted);
                group.seen.extend(seen_ids);
                group.sweep = seen_pass.is_some() && matches!(step, Step::Done(_));
                if group.sweep && paginator.position().records == 0 {
                    // A full pass that returned nobody at all is far more often a service
                    // answering wrongly (an empty 204, a filter it dropped) than an account
                    // emptied: it removes nothing.
                    tracing::warn!(importer = %importer.id, "The full pass returned no record at all; nothing is removed as gone (gone_after_full_pass).");
                    group.sweep = false;
                }
                group.pages += 1;
                group.counts += page_counts;
                group.target = Some(GroupTarget {
                    checkpoint: checkpoint.clone(),
                    seen_pass,
                    list_id,
                    bindings: Arc::clone(&bindings),
                });
                let writing = self.in_flight.as_ref().is_some_and(|w| !w.is_finished());
                let defer = prefetch
                    && writing
                    && group.contacts.len() < GROUP_RECORDS
                    && group.pages < GROUP_PAGES;
                if !defer {
                    self.finish_write().await?;
                    self.start_write();
                }
                if prefetch && !cancel.is_cancelled() {
                    let fetched = tokio::select! {
                        fetched = self.fetch_page(
                            &mut client,
                            &mut paginator,
                            &extractor,
                            projection.as_ref(),
                            readd,
                        ) => Some(fetched?),
                        () = cancel.cancelled() => None,
                    };
                    pending = fetched;
                } else {
                    self.finish_write().await?;
                }
            }
            if let Some(progress) = &self.options.progress {
                progress(&Progress {
                    pages: self.counts.pages,
                    fetched: self.counts.fetched,
                    elapsed: self.started.elapsed(),
                });
            }
            if matches!(step, Step::Done(_)) {
                self.finish_write().await?;
                return Ok((RunOutcome::Completed, pass, resumed));
            }
        }
    }

    /// Reads the connector's deletions request to its end and marks every record it lists
    /// deleted, in one write with the pass's starting checkpoint (nothing of the pass is
    /// committed yet, so a run killed here reads the deletions again). Their sources'
    /// memberships become `removed` in the store. Pages count in the run's history, not
    /// in `page_budget`; a failure fails the run before the pass starts.
    async fn read_deletions(
        &mut self,
        client: &mut Client,
        deletions: &crate::plan::Deletions,
        mut paginator: Paginator<'_>,
        checkpoint: &Checkpoint,
        list_id: i64,
        bindings: &Arc<Vec<FieldBinding>>,
    ) -> Result<(), Fail> {
        let importer = Arc::clone(&self.importer);
        let container = crate::engine::extract::container_path(deletions.records.as_str())
            .and_then(|p| crate::jsonpath::JsonPath::parse(&p).ok());
        let mut ids: Vec<String> = Vec::new();
        let (mut pages, mut skipped) = (0u64, 0u64);
        loop {
            if self.options.cancel.is_cancelled() {
                return Err(Fail::Other(
                    "cancelled while reading deletions; the next run reads them again".into(),
                ));
            }
            self.renew_lease_if_due().await?;
            if let Some(held) = &self.options.lease {
                held.check()?;
            }
            let vars = paginator.variables();
            let follow = paginator
                .follow_url(client.secrets())
                .map_err(Fail::Other)?;
            let (_, response) = client
                .send(&|c: &Client| match &follow {
                    Some(url) => c.prepare_follow(url, &deletions.request, false, &vars),
                    None => c.prepare(&deletions.request, &vars),
                })
                .await?;
            pages += 1;
            let blank = response.body.iter().all(u8::is_ascii_whitespace);
            let body = if blank && matches!(response.status, 204 | 304) {
                None
            } else {
                let shape_error = |problem: &str| {
                    Fail::Other(format!(
                        "deletions request: {problem} (records path `{}`, HTTP {}, {}); body starts: {}",
                        deletions.records.as_str(),
                        response.status,
                        client.secrets().redact(&response.url),
                        body_start(&response.body, client.secrets())
                    ))
                };
                let value: Value = serde_json::from_slice(&response.body)
                    .map_err(|_| shape_error("page is not JSON"))?;
                let found = deletions.records.query(&value);
                let records: Vec<&Value> = match found.as_slice() {
                    [Value::Array(items)] => items.iter().collect(),
                    [] => {
                        let container_exists = container
                            .as_ref()
                            .is_some_and(|c| c.first(&value).is_some());
                        if !(container_exists
                            || deletions.records_absent_is_empty && value.is_object())
                        {
                            return Err(shape_error("records path matches nothing"));
                        }
                        Vec::new()
                    }
                    _ => found,
                };
                for record in &records {
                    match deletions.external_id.first(record) {
                        Some(Value::String(id)) if !id.is_empty() => ids.push(id.clone()),
                        Some(Value::Number(id)) => ids.push(id.to_string()),
                        _ => skipped += 1,
                    }
                }
                let count = records.len();
                drop(records);
                Some((value, count))
            };
            let link = response.link();
            let seen = PageSeen {
                status: response.status,
                body: body.as_ref().map(|(v, _)| v),
                link: link.as_deref(),
                url: &response.url,
                records: body.as_ref().map_or(0, |(_, n)| *n),
                last_keyset: None,
                newest: None,
                at_newest: Vec::new(),
            };
            if let Step::Done(_) = paginator.advance(&seen, client.secrets())? {
                break;
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let counts = PageCounts {
            pages,
            skipped,
            deleted: ids.len() as u64,
            ..PageCounts::default()
        };
        let outcome = self
            .store
            .write_page(PageWrite {
                importer: &importer.id,
                run_id: self.run_id,
                fencing_token: self.lease.fencing_token,
                list_id,
                fields: bindings,
                contacts: &[],
                deleted_external_ids: &ids,
                seen_pass: None,
                seen_external_ids: &[],
                sweep: false,
                checkpoint,
                counts,
            })
            .await?;
        self.counts.pages += pages;
        self.counts.skipped += skipped;
        self.counts.deleted += ids.len() as u64;
        tracing::info!(importer = %importer.id, pages, reported = ids.len(), newly_deleted = outcome.deleted, "Read the service's deletions.");
        Ok(())
    }

    /// Fetches the next page and checks its shape: a body that is not JSON, or whose
    /// records path matches nothing, is fetched again, then fails the run.
    ///
    /// With a `projection`, record members no path of the connector reads are skipped
    /// instead of built: the full parse was the engine's largest cost, and a smaller page
    /// is also cheaper to free.
    async fn fetch_page(
        &self,
        client: &mut Client,
        paginator: &mut Paginator<'_>,
        extractor: &Extractor<'_>,
        projection: Option<&PageProjection>,
        readd: bool,
    ) -> Result<Fetched, Fail> {
        use std::sync::atomic::Ordering;
        let connector = &self.importer.connector;
        let mut vars = paginator.variables();
        let mut follow = paginator
            .follow_url(client.secrets())
            .map_err(Fail::Other)?;
        let mut attempt = 0;
        let mut skipped = 0;
        loop {
            attempt += 1;
            // Before each request: a node whose claimed lease ran out (paused, cut off
            // from the store) or changed hands sends nothing more. A page fetched before
            // still goes to the store, whose commit refuses it by the database's clock.
            if let Some(held) = &self.options.lease {
                held.check()?;
            }
            let sent = client
                .send(&|c: &Client| match &follow {
                    Some(url) => c.prepare_follow(url, &connector.request, readd, &vars),
                    None => c.prepare(&connector.request, &vars),
                })
                .await;
            let (prepared, response) = match sent {
                Ok(sent) => sent,
                Err(
                    error @ ClientError::Rule {
                        action: ErrorAction::RestartPass,
                        ..
                    },
                ) if self.restarts.load(Ordering::SeqCst) < PASS_RESTARTS => {
                    // The pass keeps its kind and its `since`: an incremental pass
                    // re-queries from the watermark, a full pass reads from the start.
                    self.restarts.fetch_add(1, Ordering::SeqCst);
                    tracing::warn!(importer = %self.importer.id, error = %error, "The service no longer accepts the saved position; restarting the pass.");
                    paginator.restart();
                    vars = paginator.variables();
                    follow = None;
                    attempt = 0;
                    continue;
                }
                Err(
                    error @ ClientError::Rule {
                        action: ErrorAction::SkipPage,
                        ..
                    },
                ) if skipped < PAGE_SKIPS => {
                    if !paginator.skip() {
                        return Err(error.into());
                    }
                    skipped += 1;
                    tracing::warn!(importer = %self.importer.id, error = %error, "Skipped a page an error rule recognised.");
                    vars = paginator.variables();
                    attempt = 0;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let blank = response.body.iter().all(u8::is_ascii_whitespace);
            if blank && matches!(response.status, 204 | 304) {
                return Ok((prepared, response, None));
            }
            let parsed = match projection {
                Some(projection) => projection.parse(&response.body),
                None => serde_json::from_slice::<Value>(&response.body),
            };
            let problem = match parsed {
                Ok(value) => match extractor.records(&value) {
                    Ok(_) => return Ok((prepared, response, Some(value))),
                    Err(PageShapeError::NoRecordsPath) => "records path matches nothing",
                },
                Err(_) => "page is not JSON",
            };
            let message = format!(
                "{problem} (records path `{}`, HTTP {}, {}); body starts: {}",
                connector.records.as_str(),
                response.status,
                client.secrets().redact(&response.url),
                body_start(&response.body, client.secrets())
            );
            if attempt >= PAGE_ATTEMPTS {
                return Err(Fail::Other(message));
            }
            tracing::warn!(importer = %self.importer.id, attempt, problem, "Unexpected page; fetching it again.");
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
    }

    /// Starts writing the gathered group with the newest of its pages' checkpoints, on a
    /// thread of its own. Not `tokio::spawn`: a task spawned from a worker waits in that
    /// worker's non-stealable LIFO slot until the fetch yields, so the two would still
    /// take turns on one core.
    fn start_write(&mut self) {
        let group = std::mem::take(&mut self.group);
        let Some(GroupTarget {
            checkpoint,
            seen_pass,
            list_id,
            bindings,
        }) = group.target
        else {
            return;
        };
        let store = Arc::clone(&self.store);
        let importer = Arc::clone(&self.importer);
        let fencing_token = self.lease.fencing_token;
        let run_id = self.run_id;
        let runtime = tokio::runtime::Handle::current();
        // Every group goes through `write_page`, even one that brought no contact (an
        // empty last page, a page of skipped records): its counts join the run's history
        // in the transaction that saves its checkpoint.
        let write = async move {
            store
                .write_page(PageWrite {
                    importer: &importer.id,
                    run_id,
                    fencing_token,
                    list_id,
                    fields: &bindings,
                    contacts: &group.contacts,
                    deleted_external_ids: &group.deleted,
                    seen_pass,
                    seen_external_ids: &group.seen,
                    sweep: group.sweep,
                    checkpoint: &checkpoint,
                    counts: group.counts,
                })
                .await
                .map(Some)
        };
        self.in_flight = Some(tokio::task::spawn_blocking(move || runtime.block_on(write)));
    }

    /// Waits for the page write in flight, if any, and adds its counts. Every way out of
    /// a run passes here first, so a run never ends (or releases its lease) while one of
    /// its pages is still being written.
    async fn finish_write(&mut self) -> Result<(), Fail> {
        let Some(write) = self.in_flight.take() else {
            return Ok(());
        };
        let started = Instant::now();
        let written = write
            .await
            .map_err(|e| Fail::Other(format!("the page write task failed: {e}")))
            .and_then(|written| written.map_err(Fail::from));
        self.timing.write += started.elapsed();
        if written.is_err() {
            self.write_failed = true;
        }
        if let Err(Fail::Store(StoreError::LeaseLost { .. })) = &written {
            tracing::error!(
                importer = %self.importer.id,
                fencing_token = self.lease.fencing_token,
                "Commit refused: this process no longer holds the importer's lease (it expired while the process was paused or cut off, or another node took it over); the page is dropped and the lease holder resumes from the last committed checkpoint."
            );
        }
        if let Some(outcome) = written? {
            self.counts.created += outcome.created;
            self.counts.updated += outcome.updated;
            self.counts.unchanged += outcome.unchanged;
            self.counts.field_failures += outcome.field_failures;
            // Records a complete full pass no longer returned: gone at the service.
            self.counts.deleted += outcome.gone;
            if outcome.gone > 0 {
                tracing::info!(importer = %self.importer.id, gone = outcome.gone, "Records the complete full pass no longer returned are gone at the service; their memberships are now `removed`.");
            }
            if outcome.moved > 0 {
                tracing::info!(importer = %self.importer.id, moved = outcome.moved, "Records arrived with another email; their sources moved to the new addresses.");
            }
        }
        Ok(())
    }

    /// Ends the run's writing: waits for the write in flight, then writes the pages
    /// gathered behind it, if any. A run that fails on a later page (a pagination loop, a
    /// fetch that keeps failing) still commits the pages it had fully fetched and mapped,
    /// with their checkpoint, as it did when every page was written before the next fetch.
    async fn drain_writes(&mut self) -> Result<(), Fail> {
        let in_flight = self.finish_write().await;
        // After a failed write the gathered pages are dropped, never written: their
        // checkpoint would skip the failed pages' contacts.
        if in_flight.is_err() || self.write_failed {
            self.group = PageGroup::default();
            return in_flight;
        }
        self.start_write();
        self.finish_write().await
    }

    /// Renews a lease of the run's own every third of its lifetime. A lease the daemon
    /// claimed is renewed by the daemon and checked before each request instead (see
    /// [`Run::fetch_page`]).
    async fn renew_lease_if_due(&mut self) -> Result<(), Fail> {
        if self.options.lease.is_some() {
            return Ok(());
        }
        if self.lease_renewed.elapsed() >= self.options.lease_ttl / 3 {
            self.lease = self
                .store
                .renew_lease(&self.lease, self.options.lease_ttl)
                .await?;
            self.lease_renewed = Instant::now();
        }
        Ok(())
    }
}

/// The first value of `contact` longer than `limit` bytes, as (field, length): such a
/// record is skipped and counted instead of stored (a 200 MB value was stored whole, with
/// a 200 MB change event). Custom values count as the text they are stored as.
fn oversized_value(
    contact: &ContactRecord,
    bindings: &[FieldBinding],
    limit: u64,
) -> Option<(String, usize)> {
    let standard = [
        ("email", Some(&contact.email)),
        ("first_name", contact.first_name.as_ref()),
        ("last_name", contact.last_name.as_ref()),
        ("phone", contact.phone.as_ref()),
        ("organization", contact.organization.as_ref()),
        ("external_id", contact.external_id.as_ref()),
    ];
    for (name, value) in standard {
        if let Some(value) = value
            && value.len() as u64 > limit
        {
            return Some((name.to_string(), value.len()));
        }
    }
    contact.custom_values.iter().find_map(|custom| {
        let length = match &custom.value {
            FieldValue::Text(text) => text.len(),
            FieldValue::List(items) => items.iter().map(|i| i.len() + 4).sum(),
            FieldValue::Number(_) | FieldValue::Date(_) => 0,
        };
        (length as u64 > limit).then(|| {
            let tag = bindings
                .get(custom.field)
                .map_or("a custom value", |b| b.tag.as_str());
            (tag.to_string(), length)
        })
    })
}
