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

use crate::engine::client::{Client, ClientError, Prepared, Response, body_start};
use crate::engine::extract::{Extractor, Mapped, PageShapeError};
use crate::engine::filter::ClientFilters;
use crate::engine::paginate::{PageSeen, PaginateError, Paginator, PassPosition, Step};
use crate::engine::projection::PageProjection;
use crate::model::{
    Checkpoint, ContactRecord, CustomFieldDef, FieldBinding, PageOutcome, PageWrite,
};
use crate::plan::{Importer, Pagination, Sync};
use crate::store::{Lease, RunCounts, RunOutcome, Store, StoreError};

/// Attempts at a page whose body is not JSON or has no records where expected.
const PAGE_ATTEMPTS: u32 = 3;
/// Records skipped for a bad email that are logged with a sample, per run.
const SKIP_SAMPLES: u32 = 3;

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
    pages: u32,
    /// Where the group goes, set by its newest page (`None`: nothing gathered).
    target: Option<GroupTarget>,
}

/// The checkpoint, list and field bindings a group is written with.
struct GroupTarget {
    checkpoint: Checkpoint,
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
    let id = importer.id.clone();
    let store_error = |source| RunError::Store {
        importer: id.clone(),
        source,
    };
    let lease = acquire(&*store, &id, &options)
        .await
        .map_err(store_error)?
        .ok_or_else(|| RunError::Busy {
            importer: id.clone(),
        })?;
    if !options.dry_run {
        close_abandoned_runs(&*store, &id).await;
    }
    let run_id = if options.dry_run {
        None
    } else {
        match store.begin_run(&id).await {
            Ok(run_id) => Some(run_id),
            Err(e) => {
                release(&*store, &lease).await;
                return Err(store_error(e));
            }
        }
    };
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
    };
    let result = run.execute().await;
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
    release(&*store, &run.lease).await;
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
            })
        }
        Err(fail) => {
            let message = fail.to_string();
            tracing::error!(importer = %id, run = run_id.unwrap_or(0), error = %message, "Import run failed.");
            Err(RunError::Failed {
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
            (Some(_), _) => {
                tracing::info!(importer = %importer.id, "Saved position belongs to another configuration; starting a new pass.");
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
        if !resumed {
            let first = checkpoint.watermark.is_none() && checkpoint.last_full_refresh.is_none();
            let full = first
                || self.options.full_refresh
                || match &connector.sync {
                    Sync::FullRefresh { .. } => true,
                    Sync::Incremental {
                        full_refresh_every, ..
                    } => full_refresh_every.is_some_and(|every| {
                        checkpoint
                            .last_full_refresh
                            .is_none_or(|last| (now - last).to_std().unwrap_or_default() >= every)
                    }),
                };
            checkpoint.position = None;
            checkpoint.pass_high_water = None;
            checkpoint.full_refresh = full || checkpoint.watermark.is_none();
            checkpoint.pass_started_at = Some(now);
        }
        checkpoint.fingerprint = Some(importer.fingerprint.clone());
        let pass = if checkpoint.watermark.is_none() && checkpoint.last_full_refresh.is_none() {
            PassKind::First
        } else if checkpoint.full_refresh {
            PassKind::FullRefresh
        } else {
            PassKind::Incremental
        };

        let mut client = Client::new(Arc::clone(&importer), Arc::clone(&self.store))?;
        let since = match (
            &connector.sync,
            checkpoint.full_refresh,
            checkpoint.watermark,
        ) {
            (
                Sync::Incremental {
                    since_format,
                    lookback,
                    ..
                },
                false,
                Some(watermark),
            ) => {
                let lookback = chrono::Duration::from_std(*lookback).unwrap_or_default();
                since_format.format(
                    watermark - lookback,
                    chrono::FixedOffset::east_opt(0).expect("zero offset"),
                )
            }
            _ => Value::Null,
        };
        client.set("since", since);

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
        );
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

        loop {
            if budget.is_some_and(|b| pages_this_run >= b) {
                return Ok((RunOutcome::Partial, pass, resumed));
            }
            self.renew_lease_if_due().await?;

            let fetch_started = Instant::now();
            let (prepared, response, body) = match pending.take() {
                Some(fetched) => fetched,
                None => {
                    self.fetch_page(
                        &mut client,
                        &paginator,
                        &extractor,
                        projection.as_ref(),
                        readd,
                    )
                    .await?
                }
            };
            self.timing.fetch += fetch_started.elapsed();
            let map_started = Instant::now();
            if self.options.dry_run {
                self.dry.requests.push(client.describe(&prepared));
            }
            let records = match &body {
                Some(value) => extractor.records(value).unwrap_or_default(),
                None => Vec::new(),
            };

            let mut contacts = Vec::with_capacity(records.len());
            let mut deleted = Vec::new();
            let mut page_high: Option<DateTime<Utc>> = None;
            for record in &records {
                let out = extractor.map(record);
                page_high = page_high.max(out.updated_at);
                match out.mapped {
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
                            tracing::warn!(
                                importer = %importer.id,
                                reason = %client.secrets().redact(&reason.to_string()),
                                external_id = out.external_id.as_deref().unwrap_or("-"),
                                "Skipped a record without a valid email."
                            );
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
            };
            let step = paginator.advance(&seen, client.secrets())?;
            self.counts.pages += 1;
            self.counts.fetched += records.len() as u64;
            pages_this_run += 1;
            drop(records);
            // Freeing a parsed page (hundreds of thousands of small allocations) is a
            // sixth of the engine thread's time on a first import; a blocking-pool thread
            // does it while this one goes on.
            if let Some(body) = body {
                tokio::task::spawn_blocking(move || drop(body));
            }

            checkpoint.pass_high_water = checkpoint.pass_high_water.max(page_high);
            match step {
                Step::Continue => {
                    checkpoint.position = Some(
                        serde_json::to_value(paginator.position())
                            .map_err(|e| Fail::Other(format!("saving the position: {e}")))?,
                    );
                }
                Step::Done(end) => {
                    tracing::debug!(importer = %importer.id, end = ?end, "Pass complete.");
                    checkpoint.watermark = checkpoint.watermark.max(checkpoint.pass_high_water);
                    if checkpoint.full_refresh {
                        checkpoint.last_full_refresh = checkpoint.pass_started_at;
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
                group.pages += 1;
                group.target = Some(GroupTarget {
                    checkpoint: checkpoint.clone(),
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
                if prefetch {
                    pending = Some(
                        self.fetch_page(
                            &mut client,
                            &paginator,
                            &extractor,
                            projection.as_ref(),
                            readd,
                        )
                        .await?,
                    );
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

    /// Fetches the next page and checks its shape: a body that is not JSON, or whose
    /// records path matches nothing, is fetched again, then fails the run.
    ///
    /// With a `projection`, record members no path of the connector reads are skipped
    /// instead of built: the full parse was the engine's largest cost, and a smaller page
    /// is also cheaper to free.
    async fn fetch_page(
        &self,
        client: &mut Client,
        paginator: &Paginator<'_>,
        extractor: &Extractor<'_>,
        projection: Option<&PageProjection>,
        readd: bool,
    ) -> Result<Fetched, Fail> {
        let connector = &self.importer.connector;
        let vars = paginator.variables();
        let follow = paginator
            .follow_url(client.secrets())
            .map_err(Fail::Other)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (prepared, response) = client
                .send(&|c: &Client| match &follow {
                    Some(url) => c.prepare_follow(url, &connector.request, readd, &vars),
                    None => c.prepare(&connector.request, &vars),
                })
                .await?;
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
        let write = async move {
            if group.contacts.is_empty() && group.deleted.is_empty() {
                store
                    .save_checkpoint(&importer.id, fencing_token, &checkpoint)
                    .await
                    .map(|()| None)
            } else {
                store
                    .write_page(PageWrite {
                        importer: &importer.id,
                        run_id,
                        fencing_token,
                        list_id,
                        fields: &bindings,
                        contacts: &group.contacts,
                        deleted_external_ids: &group.deleted,
                        checkpoint: &checkpoint,
                    })
                    .await
                    .map(Some)
            }
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
        if let Some(outcome) = written? {
            self.counts.created += outcome.created;
            self.counts.updated += outcome.updated;
            self.counts.unchanged += outcome.unchanged;
            self.counts.field_failures += outcome.field_failures;
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

    async fn renew_lease_if_due(&mut self) -> Result<(), Fail> {
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
