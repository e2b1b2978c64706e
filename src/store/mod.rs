//! The contact store: one interface, two backends (SQLite, the embedded default, and
//! PostgreSQL), both through sqlx runtime queries.
//!
//! The store owns the rules that make automatic import safe for an email marketer
//! (never re-activating an unsubscribed or bounced contact, never erasing a value with an
//! empty one) so that every caller gets them. It knows nothing about HTTP or specs.
//!
//! Layout: [`crypto`] (token encryption and key files), [`lease`] (run-lease owner
//! identity), [`page`] (backend-independent planning of one page write: de-duplication,
//! the membership and empty-value rules, change detection), [`migrate`] (embedded
//! schema migrations), [`sql`] (the one SQL layer: every [`Store`] method written once,
//! generic over a backend's `Dialect`), and the two dialects [`sqlite`] and
//! [`postgres`], which keep only what truly differs: opening, placeholders for sets of
//! keys and row locks, how times and JSON are stored, `write_page`'s batching, and
//! SQLite's checkpointer. A page write reads what it needs, hands it to
//! [`page::plan_page`], and writes the plan set-based, so the rules live in one place and
//! both backends agree.
//!
//! The store must never hold a secret in clear text, never erase a stored value with an
//! empty one, and never make a bounced or unsubscribed contact active.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    Checkpoint, CustomFieldDef, CustomFieldType, FieldBinding, PageOutcome, PageWrite,
};

pub mod crypto;
pub mod lease;
pub(crate) mod migrate;
pub mod page;
pub mod postgres;
pub(crate) mod sql;
pub mod sqlite;

/// Errors of the store, mapped to meaning at the boundary.
///
/// Each variant prints its cause in its own message and reports no `source()`: callers
/// keep `to_string()` (a run's last error, the engine's messages), and the CLI prints
/// error chains with `{:#}`, so a cause that was both would be printed twice.
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
    /// A migration this store has applied differs from the one this binary carries.
    #[error(
        "store migration {version} was applied with different SQL than this binary carries (its checksum differs): a released migration was edited; restore it and add a new migration instead"
    )]
    MigrationChanged {
        /// The edited migration's version.
        version: i64,
    },
    /// Migrating failed for another reason.
    #[error("migrating the store: {cause}")]
    Migration {
        /// What sqlx reported.
        cause: String,
    },
    /// The database could not be reached or refused the connection. Callers name the
    /// store (its masked URL) in their context, so the message does not repeat it.
    #[error("cannot connect: {cause}")]
    Unreachable {
        /// The store URL, its password masked.
        url: String,
        /// The real cause (connection refused, authentication failed, no such database,
        /// timed out).
        cause: String,
    },
    /// The store URL is not one tributary can open.
    #[error("{0}")]
    BadUrl(String),
    /// A file of the store (the SQLite file, its directory, its key file) could not be
    /// read or written.
    #[error("{action} {}: {cause}", path.display())]
    File {
        /// What was being done (`creating store`, `reading key file`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The token-encryption key is unusable (too short, an empty key file, ...), or a
    /// token call was made where no key is configured; the message says what to do.
    #[error("{0}")]
    Key(String),
    /// A kept token could not be sealed or opened (never shows the token).
    #[error("{0}")]
    Token(String),
    /// A page names a list or custom field that is not in the store.
    #[error(
        "importer `{importer}` wrote a page for a list or custom field that is not in the store"
    )]
    MissingParent {
        /// Importer id.
        importer: String,
    },
    /// Contacts a page writes for were deleted while it was being written.
    #[error(
        "importer `{importer}`: {count} contact(s) were deleted while their page was being written"
    )]
    ContactsDeleted {
        /// Importer id.
        importer: String,
        /// How many.
        count: usize,
    },
    /// Concurrent writers kept creating the same contacts while this page was written
    /// (each time it was planned again).
    #[error(
        "importer `{importer}`: other writers kept creating the same contacts at the same moment; try again"
    )]
    WriteRaced {
        /// Importer id.
        importer: String,
    },
    /// The store holds something this binary cannot read (an unknown word, a bad time).
    #[error("unexpected {what} `{value}` in the store")]
    Corrupt {
        /// What was read (`field type`, `time`, ...).
        what: &'static str,
        /// The stored text.
        value: String,
    },
    /// Any other database error.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(error)
    }
}

impl StoreError {
    /// A stored word or value this binary does not understand.
    pub(crate) fn corrupt(what: &'static str, value: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            what,
            value: value.to_string(),
        }
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// A run lease: only its holder may write pages for the importer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Importer id.
    pub importer: String,
    /// Owner string (`node:pid:random`).
    pub owner: String,
    /// Increases every time the lease changes hands; written pages carry it.
    pub fencing_token: i64,
    /// When the lease expires unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// The last good version of a connector or importer file, kept so that a file broken by a
/// merge keeps running in that version, also across a restart (see `daemon::last_good`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileText {
    /// The path the daemon read it from.
    pub path: String,
    /// The SHA-256 of `text`, in hex.
    pub sha256: String,
    /// The file's content.
    pub text: String,
}

/// An importer a daemon asks to claim (see [`Store::claim_due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Importer id.
    pub importer: String,
    /// Asked for by hand: claimed whenever its lease is free, due or not, paused or not.
    pub forced: bool,
}

/// Why an importer asked for was not claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// The store says it is not due before this time (another node ran it meanwhile).
    NotDue(DateTime<Utc>),
    /// Paused until its credentials change (as another node found).
    NeedsCredentials,
    /// Another run holds its lease, for this long yet by the database's clock.
    Held {
        /// The node holding it (`None`: an owner string of another form).
        node: Option<String>,
        /// Time left before it expires unless renewed.
        remaining: Duration,
    },
}

/// What [`Store::claim_due`] did.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// Leases taken, in the order asked.
    pub claimed: Vec<Lease>,
    /// Importers refused, and why. Importers neither claimed nor refused were claimable
    /// but over the limit, or were being claimed by another node at that very moment.
    pub refused: Vec<(String, ClaimRefusal)>,
}

/// An importer's lease as status shows it: who runs it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Importer id.
    pub importer: String,
    /// The node holding it.
    pub node: String,
    /// Its fencing token.
    pub fencing_token: i64,
    /// When it expires unless renewed (database clock).
    pub expires_at: DateTime<Utc>,
}

/// One committed page (or checkpoint) as the store recorded it: which node, under which
/// fencing token. Commits of one importer are numbered in commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// Commit number (increasing in commit order per importer).
    pub id: i64,
    /// Importer id.
    pub importer: String,
    /// The run that committed it (`None`: a checkpoint saved outside a page).
    pub run_id: Option<i64>,
    /// The node that committed it.
    pub node: String,
    /// The fencing token it was checked against.
    pub fencing_token: i64,
    /// When (database clock).
    pub committed_at: DateTime<Utc>,
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

/// The store interface, implemented once by `sql::SqlStore` for both backends
/// (`sqlite::SqliteStore`, `postgres::PostgresStore`); `open` picks one from the URL
/// scheme.
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

    /// Extends a held lease; `LeaseLost` if it changed hands or expired (by the
    /// database's clock) in the meantime.
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

    /// The newest `limit` runs of each of `importers`, newest first, by importer: what a
    /// daemon's start reads in one statement instead of one per importer (10,000
    /// importers), a few index steps each however long the history.
    async fn recent_runs(
        &self,
        importers: &[String],
        limit: u32,
    ) -> StoreResult<std::collections::HashMap<String, Vec<RunRecord>>>;

    /// Reads an encrypted token the store keeps for `key` (OAuth tokens, sessions).
    async fn load_token(&self, key: &str) -> StoreResult<Option<String>>;

    /// Saves a token for `key`, encrypted with the configured key.
    async fn save_token(&self, key: &str, value: &str) -> StoreResult<()>;

    // --- Additions (store issue #3); all additive to the draft above. ---

    /// Which backend this is, for messages and tests.
    fn backend(&self) -> Backend;

    /// Finishes background work before the process exits: SQLite copies its WAL back
    /// into the database file, so the next run (a timer's, minutes later) does not start
    /// by copying this one's tail. The store stays usable; nothing is lost without it.
    async fn close(&self) {}

    /// How many SQL statements this store has sent since it was opened (transaction
    /// control included). Tests use it to prove a page costs a fixed number of
    /// statements, whatever its size.
    fn statements_executed(&self) -> u64;

    /// Forgets a kept token (credentials replaced, importer removed).
    async fn delete_token(&self, key: &str) -> StoreResult<()>;

    /// Claims due importers for this node, at most `limit`, in the order asked: each one
    /// whose lease is free (or expired by the database's clock, or held by a dead process
    /// of this same node) and that is due by `due_before` (the store's `next_run_at`, or
    /// never scheduled) and not paused for its credentials, or that is `forced`. Its lease
    /// is taken (a new fencing token) and its `next_run_at` cleared, in one transaction;
    /// on PostgreSQL rows another node is claiming are skipped (`SKIP LOCKED`), so nodes
    /// share the work without waiting for each other.
    async fn claim_due(
        &self,
        candidates: &[ClaimRequest],
        due_before: DateTime<Utc>,
        limit: usize,
        ttl: Duration,
    ) -> StoreResult<Claims>;

    /// Gives a claimed lease back and records when the importer runs next, in one
    /// transaction (so no other node sees it free and due in between). `false` when the
    /// lease had already changed hands: then nothing is written.
    async fn release_claim(
        &self,
        lease: &Lease,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<bool>;

    /// The leases held now (not expired by the database's clock): which node runs which
    /// importer.
    async fn lease_holders(&self) -> StoreResult<Vec<LeaseView>>;

    /// The commits recorded for an importer, oldest first.
    async fn commits(&self, importer: &str) -> StoreResult<Vec<CommitRecord>>;

    /// Records when the importer should run next (shown by status, used after restart).
    async fn set_next_run(&self, importer: &str, at: Option<DateTime<Utc>>) -> StoreResult<()>;

    /// Carries an importer's state (watermark, saved position, schedule), run history
    /// and the provenance of what it imported (contact sources, field values) over to a
    /// new id, as for a renamed importer file. Refused when the new id already has any of
    /// them; change events keep the id they were recorded under. The caller holds both
    /// ids' leases.
    async fn move_importer(&self, from: &str, to: &str) -> StoreResult<()>;

    /// Sets or clears the "needs new credentials" flag; a person must act when it is set.
    async fn set_needs_new_credentials(&self, importer: &str, needed: bool) -> StoreResult<()>;

    /// Every importer the store has state for, by id.
    async fn importer_states(&self) -> StoreResult<Vec<ImporterState>>;

    /// The SHA-256 of every config file's last good version kept, by path: what the
    /// daemon compares with what runs before writing anything.
    async fn config_file_hashes(&self) -> StoreResult<BTreeMap<String, String>>;

    /// The last good versions kept for these paths (those the store has).
    async fn config_file_texts(&self, paths: &[String]) -> StoreResult<Vec<ConfigFileText>>;

    /// Keeps `save` as the last good versions of their paths and forgets `forget`, in one
    /// transaction.
    async fn save_config_files(
        &self,
        save: &[ConfigFileText],
        forget: &[String],
    ) -> StoreResult<()>;

    /// Every custom field, by tag.
    async fn fields(&self) -> StoreResult<Vec<CustomField>>;

    /// Creates a field as a person would (origin: person, unlocked). `Refused` when the tag
    /// exists or is not a well-formed `%TAG%`.
    async fn create_field(
        &self,
        label: &str,
        tag: &str,
        field_type: CustomFieldType,
    ) -> StoreResult<CustomField>;

    /// Changes a field's label and/or tag. Changing the tag of a locked field (one an
    /// import uses) is `Refused`; its label can always change.
    async fn update_field(&self, tag: &str, change: &FieldChange) -> StoreResult<CustomField>;

    /// Contacts with their memberships, custom values (with the importer and run that
    /// wrote each) and sources, ordered by email.
    async fn contacts(&self, filter: &ContactFilter) -> StoreResult<Vec<ContactView>>;

    /// Unsubscribes a contact from one list (by name) or from everything, as a person
    /// would. Returns the contact as it is afterwards.
    async fn unsubscribe(&self, email: &str, scope: UnsubscribeScope) -> StoreResult<ContactView>;

    /// Marks a contact bounced everywhere, as the mail system would.
    async fn bounce(&self, email: &str) -> StoreResult<ContactView>;

    /// Change events with an id greater than `after`, oldest first: the feed for anything
    /// downstream (autoresponders, webhooks), which must not fire for `notify = false`.
    async fn change_events(&self, after: i64, limit: u32) -> StoreResult<Vec<ChangeEvent>>;

    /// Deletes change events and finished run history older than `now - retention`. The
    /// store also calls this itself from `finish_run`, at most once an hour, so a daemon
    /// left alone does not grow without bound; `now` is a parameter so tests need no clock.
    async fn prune(&self, now: DateTime<Utc>) -> StoreResult<PruneCounts>;
}

/// The two backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// An SQLite file (the embedded default).
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// Where the token-encryption key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// Key material (any length of at least 16 bytes; a 32-byte key is derived from it),
    /// as read from the daemon config's `encryption_key` secret reference.
    Bytes(Vec<u8>),
    /// A file holding the key material (created with 32 random bytes, owner-only, if
    /// missing).
    File(PathBuf),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Bytes(_) => f.write_str("Bytes(****)"),
            KeySource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// How to open a store, beyond its URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Token-encryption key. `None`: for SQLite a key file `<store>.key` is generated
    /// beside the store (owner-only); for PostgreSQL, saving or loading a token is
    /// refused with a message naming `encryption_key`.
    pub encryption_key: Option<KeySource>,
    /// Identity written into leases this store takes (`host:pid`, a random part is added
    /// per lease). Default: this host and process; tests set another to play a second
    /// process or a dead one.
    pub lease_holder: lease::LeaseHolder,
    /// How long change events and run history are kept. Default: 90 days (`P90D`).
    pub retention: Duration,
    /// Largest number of pooled connections. Default: 4 (SQLite), 8 (PostgreSQL).
    pub max_connections: Option<u32>,
    /// Whether this process keeps tokens. The CLI's contact and field commands never do:
    /// with `false` no key is read or generated, and token calls are refused.
    pub keep_tokens: bool,
    /// Where the store reads the time (leases, retention, the times it records).
    /// Default: the system clock.
    pub clock: Clock,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            encryption_key: None,
            lease_holder: lease::LeaseHolder::current(),
            retention: DEFAULT_RETENTION,
            max_connections: None,
            keep_tokens: true,
            clock: Clock::System,
        }
    }
}

/// `P90D`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Opens the store a URL names, creating and migrating it as needed: `sqlite://PATH`
/// (also `sqlite:PATH`; relative paths are relative to the working directory, so callers
/// resolve them against the config file first) or `postgres://...` /
/// `postgresql://...`.
///
/// # Errors
/// `TooNew` when the store was migrated by a newer tributary, `MigrationChanged` when a
/// migration it applied was edited since, `Unreachable` (within a few seconds, with the
/// real cause) when a database cannot be reached, `BadUrl`, `File` or `Key` for an
/// unusable URL, store file or key.
pub async fn open(url: &str, options: StoreOptions) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url, options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::open(url, options).await?))
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        Err(StoreError::BadUrl(format!(
            "unsupported store url scheme `{scheme}`: use `sqlite://PATH` or `postgres://...`"
        )))
    }
}

/// Where the store reads the time: for the expiry of run leases, for retention (what
/// `prune` deletes, and when `finish_run` prunes by itself), and for the times it records.
///
/// Tests drive a [`ManualClock`] instead of sleeping. With the system clock, PostgreSQL
/// judges lease expiry by the database server's clock, so that nodes sharing one database
/// agree on whether a lease has expired even when their own clocks are skewed.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// This host's clock (PostgreSQL leases: the database server's).
    #[default]
    System,
    /// A clock its owner sets and advances; every store opened with a clone of it reads
    /// the same time.
    Manual(ManualClock),
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<std::sync::Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(std::sync::Mutex::new(start)))
    }

    /// The time it shows.
    pub fn now(&self) -> DateTime<Utc> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves it forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += chrono_duration(by);
    }
}

impl Clock {
    /// The time this clock shows.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(clock) => clock.now(),
        }
    }
}

/// A store URL fit for messages: a password (in the authority or as a `password` query
/// parameter) is replaced by `****`.
pub fn masked_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return String::from("(an unparsable url)");
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("****"));
    }
    if parsed.query_pairs().any(|(key, _)| key == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if key == "password" {
                    "****".into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Who made a custom field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldOrigin {
    /// A person (`tributary fields create` or the product's UI).
    Person,
    /// An import created it for its connector.
    Import,
}

impl FieldOrigin {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldOrigin::Person => "person",
            FieldOrigin::Import => "import",
        }
    }

    pub(crate) fn parse(text: &str) -> StoreResult<Self> {
        match text {
            "person" => Ok(FieldOrigin::Person),
            "import" => Ok(FieldOrigin::Import),
            other => Err(StoreError::corrupt("field origin", other)),
        }
    }
}

/// A custom field as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomField {
    /// Store id.
    pub id: i64,
    /// `%TAG%`.
    pub tag: String,
    /// Label shown to people.
    pub label: String,
    /// Type values are stored as.
    pub field_type: CustomFieldType,
    /// Who made it.
    pub origin: FieldOrigin,
    /// Owning service, for fields an import created.
    pub service: Option<String>,
    /// Set once an import uses the field: its tag can no longer change.
    pub locked: bool,
}

/// A change to a field asked by a person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldChange {
    /// New label.
    pub label: Option<String>,
    /// New tag (refused on a locked field).
    pub tag: Option<String>,
}

/// Which contacts `contacts` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactFilter {
    /// Only members (active or unsubscribed) of the list with this name.
    pub list: Option<String>,
    /// Only the contact with this email (normalized by the store).
    pub email: Option<String>,
    /// At most this many (default: all).
    pub limit: Option<u32>,
}

/// Contact-level status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactStatus {
    /// May receive mail on lists it is active in.
    Normal,
    /// Mail bounced: never made active anywhere by an import.
    Bounced,
    /// Unsubscribed from everything: never made active anywhere by an import.
    Unsubscribed,
}

impl ContactStatus {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactStatus::Normal => "normal",
            ContactStatus::Bounced => "bounced",
            ContactStatus::Unsubscribed => "unsubscribed",
        }
    }

    pub(crate) fn parse(text: &str) -> StoreResult<Self> {
        match text {
            "normal" => Ok(ContactStatus::Normal),
            "bounced" => Ok(ContactStatus::Bounced),
            "unsubscribed" => Ok(ContactStatus::Unsubscribed),
            other => Err(StoreError::corrupt("contact status", other)),
        }
    }
}

/// Status of one list membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipStatus {
    /// Receives the list's mail.
    Active,
    /// Not mailable now, but not an opt-out either (Mailchimp `pending`, Shopify
    /// `not_subscribed`): becomes active when the service says subscribed.
    Pending,
    /// Left the list; an import never makes it active again.
    Unsubscribed,
    /// Removed at source: the service deleted the record this importer brought (or a
    /// complete full pass of an importer with `gone_after_full_pass` no longer returned
    /// it, or it moved to another address). Not mailable, but no opt-out either: it says
    /// nothing about consent, so the membership becomes active again if the record comes
    /// back (unless the person unsubscribed or bounced meanwhile).
    Removed,
}

impl MembershipStatus {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipStatus::Active => "active",
            MembershipStatus::Pending => "pending",
            MembershipStatus::Unsubscribed => "unsubscribed",
            MembershipStatus::Removed => "removed",
        }
    }

    pub(crate) fn parse(text: &str) -> StoreResult<Self> {
        match text {
            "active" => Ok(MembershipStatus::Active),
            "pending" => Ok(MembershipStatus::Pending),
            "unsubscribed" => Ok(MembershipStatus::Unsubscribed),
            "removed" => Ok(MembershipStatus::Removed),
            other => Err(StoreError::corrupt("membership status", other)),
        }
    }
}

/// One list membership of a contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    /// List name.
    pub list: String,
    /// Status.
    pub status: MembershipStatus,
    /// When the contact joined (as active), if it ever did.
    pub subscribed_at: Option<DateTime<Utc>>,
    /// When it was unsubscribed, if it was.
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

/// One custom value of a contact, with who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldValueView {
    /// Field tag.
    pub tag: String,
    /// Field label.
    pub label: String,
    /// The value as text (numbers as written, dates RFC 3339, lists as a JSON array).
    pub value: String,
    /// Importer that last wrote it (`None`: a person).
    pub importer: Option<String>,
    /// Run that last wrote it.
    pub run_id: Option<i64>,
    /// When it was written.
    pub updated_at: DateTime<Utc>,
}

/// Which importer brought a contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    /// Importer id.
    pub importer: String,
    /// Id at the service.
    pub external_id: Option<String>,
    /// Hash of the record as last imported.
    pub content_hash: String,
    /// Last time a changed record was written from this source.
    pub last_written_at: DateTime<Utc>,
    /// When the service reported the record deleted (the contact itself is kept).
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A contact with everything `tributary contacts` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactView {
    /// Store id.
    pub id: i64,
    /// Normalized email.
    pub email: String,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Organization.
    pub organization: Option<String>,
    /// Contact-level status.
    pub status: ContactStatus,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// List memberships.
    pub lists: Vec<MembershipView>,
    /// Custom values.
    pub fields: Vec<FieldValueView>,
    /// Sources.
    pub sources: Vec<SourceView>,
}

/// What `unsubscribe` applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsubscribeScope {
    /// One list, by name.
    List(String),
    /// Everything (contact-level status).
    All,
}

/// Who caused a change event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOrigin {
    /// An import run.
    Import,
    /// A person (CLI).
    Person,
}

impl ChangeOrigin {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOrigin::Import => "import",
            ChangeOrigin::Person => "person",
        }
    }

    pub(crate) fn parse(text: &str) -> StoreResult<Self> {
        match text {
            "import" => Ok(ChangeOrigin::Import),
            "person" => Ok(ChangeOrigin::Person),
            other => Err(StoreError::corrupt("change origin", other)),
        }
    }
}

/// What a change event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A contact was created.
    ContactCreated,
    /// A contact's stored values or status changed.
    ContactChanged,
    /// A list membership was added or changed status.
    MembershipChanged,
    /// The record an importer brought for this contact arrived with another email: the
    /// source (importer, external id) moved to the new address (`changes.email`).
    SourceMoved,
}

impl ChangeKind {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::ContactCreated => "contact_created",
            ChangeKind::ContactChanged => "contact_changed",
            ChangeKind::MembershipChanged => "membership_changed",
            ChangeKind::SourceMoved => "source_moved",
        }
    }

    pub(crate) fn parse(text: &str) -> StoreResult<Self> {
        match text {
            "contact_created" => Ok(ChangeKind::ContactCreated),
            "contact_changed" => Ok(ChangeKind::ContactChanged),
            "membership_changed" => Ok(ChangeKind::MembershipChanged),
            "source_moved" => Ok(ChangeKind::SourceMoved),
            other => Err(StoreError::corrupt("change kind", other)),
        }
    }
}

/// One change event: the contract for anything downstream, which must not notify anyone
/// when `notify` is false (every import change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Increasing id (a feed position).
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub kind: ChangeKind,
    /// The contact.
    pub contact_id: i64,
    /// The contact's email at the time.
    pub email: String,
    /// The list, for membership changes.
    pub list_id: Option<i64>,
    /// Who.
    pub origin: ChangeOrigin,
    /// Whether downstream may notify anyone (always false for imports).
    pub notify: bool,
    /// Importer, for import changes.
    pub importer: Option<String>,
    /// Run, for import changes.
    pub run_id: Option<i64>,
    /// Changed fields: `{"first_name": {"old": "Ada", "new": "Adele"}, "%TAG%": {"new": "gold"}}`
    /// (standard fields by name, custom fields by tag; `status` for status changes).
    /// `old` is left out where there was no value, as for every field of a created contact.
    pub changes: serde_json::Value,
}

/// What `prune` deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneCounts {
    /// Change events deleted.
    pub change_events: u64,
    /// Runs deleted.
    pub runs: u64,
}

/// A std duration as a chrono one, capped at a century so that adding it to now never
/// overflows.
pub(crate) fn chrono_duration(duration: Duration) -> chrono::Duration {
    let century = chrono::Duration::days(36_500);
    chrono::Duration::from_std(duration)
        .unwrap_or(century)
        .min(century)
}

/// The stored word of a field type.
pub fn field_type_str(field_type: CustomFieldType) -> &'static str {
    match field_type {
        CustomFieldType::Text => "text",
        CustomFieldType::Number => "number",
        CustomFieldType::Date => "date",
        CustomFieldType::List => "list",
    }
}

pub(crate) fn field_type_from_str(text: &str) -> StoreResult<CustomFieldType> {
    match text {
        "text" => Ok(CustomFieldType::Text),
        "number" => Ok(CustomFieldType::Number),
        "date" => Ok(CustomFieldType::Date),
        "list" => Ok(CustomFieldType::List),
        other => Err(StoreError::corrupt("field type", other)),
    }
}

pub(crate) fn run_outcome_str(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Completed => "completed",
        RunOutcome::Partial => "partial",
        RunOutcome::Failed => "failed",
        RunOutcome::Cancelled => "cancelled",
    }
}

pub(crate) fn run_outcome_from_str(text: &str) -> StoreResult<RunOutcome> {
    match text {
        "completed" => Ok(RunOutcome::Completed),
        "partial" => Ok(RunOutcome::Partial),
        "failed" => Ok(RunOutcome::Failed),
        "cancelled" => Ok(RunOutcome::Cancelled),
        other => Err(StoreError::corrupt("run outcome", other)),
    }
}

/// The importer's phase as stored for people reading the database: `idle` between
/// passes, else the kind of pass in progress.
pub(crate) fn phase_of(checkpoint: &Checkpoint) -> &'static str {
    match (&checkpoint.position, checkpoint.full_refresh) {
        (None, _) => "idle",
        (Some(_), true) => "full_refresh",
        (Some(_), false) => "incremental",
    }
}

/// Checks that a tag a person gives is well formed: `%BODY%`, the body upper-case letters
/// and digits of any script separated by single `_`, as [`crate::model::personalization_tag`]
/// makes them.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let body = tag
        .strip_prefix('%')
        .and_then(|rest| rest.strip_suffix('%'))
        .filter(|body| !body.is_empty())
        .ok_or_else(|| format!("tag `{tag}` must look like `%SERVICE_LABEL%`"))?;
    let well_formed = body.split('_').all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_alphanumeric() && !c.is_lowercase())
    });
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "tag `{tag}` may hold only upper-case letters and digits separated by single `_` between its `%`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_validated_like_generated_ones() {
        assert!(validate_tag("%BATCHBOOK_COMPANY_HQ%").is_ok());
        assert!(validate_tag("%PIPEDRIVE_GRÖSSE%").is_ok());
        assert!(validate_tag(&crate::model::personalization_tag("x", "Größe (cm)")).is_ok());
        for bad in ["BATCHBOOK", "%%", "%lower%", "%A__B%", "%_A%", "%A B%"] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }
}
