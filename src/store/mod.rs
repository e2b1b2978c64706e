//! The contact store: one interface, two backends (SQLite, the embedded default, and
//! PostgreSQL), both through sqlx runtime queries.
//!
//! The store owns the rules that make automatic import safe for an email marketer
//! (never re-activating an unsubscribed or bounced contact, never erasing a value with an
//! empty one) so that every caller gets them. It knows nothing about HTTP or specs.
//!
//! DRAFT INTERFACE: the store issue (#3) owns and may refine it; the engine codes
//! against it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Checkpoint, CustomFieldDef, FieldBinding, PageOutcome, PageWrite};

/// Errors of the store, mapped to meaning at the boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The lease was lost to another run (fencing token changed or expired).
    #[error("lease for importer `{importer}` is held by another run")]
    LeaseLost {
        /// Importer id.
        importer: String,
    },
    /// A person asked for something the rules refuse (renaming a locked tag, ...).
    #[error("{0}")]
    Refused(String),
    /// Something asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The store's schema is newer than this binary.
    #[error(
        "store schema version {found} is newer than this binary supports ({supported}); upgrade tributary"
    )]
    TooNew {
        /// Version in the store.
        found: i64,
        /// Newest version this binary knows.
        supported: i64,
    },
    /// Any database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else (migrations, I/O, crypto).
    #[error("{0}")]
    Other(String),
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// A run lease: only its holder may write pages for the importer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Importer id.
    pub importer: String,
    /// Owner string (`host:pid:random`).
    pub owner: String,
    /// Increases every time the lease changes hands; written pages carry it.
    pub fencing_token: i64,
    /// When the lease expires unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// Saved state of one importer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImporterState {
    /// Importer id.
    pub importer: String,
    /// Watermark, pass position and fingerprint.
    pub checkpoint: Checkpoint,
    /// When the last run started.
    pub last_run_at: Option<DateTime<Utc>>,
    /// When the next run is due.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Last error, if the last run failed (never holds a secret).
    pub last_error: Option<String>,
    /// Set when the service refused the credentials; a person must act.
    pub needs_new_credentials: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The pass completed.
    Completed,
    /// The page budget was spent; the next run continues.
    Partial,
    /// The run failed.
    Failed,
    /// The run was cancelled (shutdown, reload).
    Cancelled,
}

/// Counts of one run, kept in the run history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    /// Pages fetched.
    pub pages: u64,
    /// Records fetched.
    pub fetched: u64,
    /// Contacts created.
    pub created: u64,
    /// Contacts updated.
    pub updated: u64,
    /// Contacts unchanged.
    pub unchanged: u64,
    /// Records skipped (no or invalid email, filtered out by a client-side filter).
    pub skipped: u64,
    /// Custom values that failed to parse or convert.
    pub field_failures: u64,
    /// Records reported deleted at the service.
    pub deleted: u64,
}

/// One row of run history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: i64,
    /// Importer id.
    pub importer: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End, if finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Outcome, if finished.
    pub outcome: Option<RunOutcome>,
    /// Counts.
    pub counts: RunCounts,
    /// Error text, if failed.
    pub error: Option<String>,
}

/// The store interface. Implemented by `sqlite::SqliteStore` and
/// `postgres::PostgresStore`; `open` picks one from the URL scheme.
#[async_trait]
pub trait Store: Send + Sync {
    /// Creates the list if missing and returns its id.
    async fn ensure_list(&self, name: &str) -> StoreResult<i64>;

    /// Creates missing custom fields (origin: import), reuses and locks existing ones
    /// with the same tag, and returns one binding per definition, in order.
    async fn ensure_custom_fields(&self, defs: &[CustomFieldDef])
    -> StoreResult<Vec<FieldBinding>>;

    /// Takes the importer's run lease if free, expired, or held by a dead process of this
    /// host. `None` when another live run holds it.
    async fn acquire_lease(&self, importer: &str, ttl: Duration) -> StoreResult<Option<Lease>>;

    /// Extends a held lease; `LeaseLost` if it changed hands.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StoreResult<Lease>;

    /// Gives the lease back.
    async fn release_lease(&self, lease: &Lease) -> StoreResult<()>;

    /// Loads an importer's state (a default state for a new importer).
    async fn importer_state(&self, importer: &str) -> StoreResult<ImporterState>;

    /// Records the start of a run and returns its id.
    async fn begin_run(&self, importer: &str) -> StoreResult<i64>;

    /// Writes one page and its checkpoint in one transaction, after checking the lease's
    /// fencing token. The number of statements does not grow with the page size.
    async fn write_page(&self, page: PageWrite<'_>) -> StoreResult<PageOutcome>;

    /// Saves a checkpoint without contacts (an empty page, the end of a pass).
    async fn save_checkpoint(
        &self,
        importer: &str,
        fencing_token: i64,
        checkpoint: &Checkpoint,
    ) -> StoreResult<()>;

    /// Records the end of a run with its counts, and the importer's last error.
    async fn finish_run(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        counts: &RunCounts,
        error: Option<&str>,
    ) -> StoreResult<()>;

    /// Run history of one importer, newest first.
    async fn runs(&self, importer: &str, limit: u32) -> StoreResult<Vec<RunRecord>>;

    /// Reads an encrypted token the store keeps for `key` (OAuth tokens, sessions).
    async fn load_token(&self, key: &str) -> StoreResult<Option<String>>;

    /// Saves a token for `key`, encrypted with the configured key.
    async fn save_token(&self, key: &str, value: &str) -> StoreResult<()>;
}
