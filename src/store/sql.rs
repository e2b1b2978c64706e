//! The one SQL layer: every [`Store`] method written once, generic over a backend's
//! [`Dialect`], so that each rule that lives in SQL (unsubscribe, bounce, never
//! re-activate, leases, retention) exists once.
//!
//! Shared statements are written in the SQL both databases understand, with `$N`
//! parameters (sqlx binds them by number on SQLite too) and two kinds of dialect
//! fragments that [`Dialect::render`] rewrites: `= ANY($N)` for a set of keys (an array on
//! PostgreSQL, a JSON array read with `json_each` on SQLite) and `{for_update}` /
//! `{for_key_share}` / `{claim_lock}` (`FOR UPDATE OF l SKIP LOCKED`) row locks
//! (PostgreSQL only: an SQLite write transaction holds the whole file), and
//! `{by_external_id}`, which names SQLite's index on `contact_sources (importer,
//! external_id)`: without statistics its planner reads every source of the importer by the
//! primary key instead, once per page (quadratic over a first import). Values go through [`Arg`], which each dialect binds in its own stored
//! form (times: `TIMESTAMPTZ`, or fixed-width UTC text on SQLite so that text order is time
//! order), and rows are read through [`RowGet`].
//!
//! What truly differs stays in the dialects: opening, transactions (`BEGIN IMMEDIATE` on
//! SQLite), `write_page`'s batched row writes (arrays and `UNNEST` on PostgreSQL, 250-row
//! `VALUES` of anonymous `?` parameters on SQLite: numbered parameters there made sqlx's
//! binding quadratic in the row count, see docs/store.md), the page snapshot queries, and
//! SQLite's connection handling and checkpointer. Numbered parameters in the shared
//! statements are harmless: none has more than a dozen.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::DerefMut;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::crypto::TokenCipher;
use super::lease::{LeaseHolder, held_by_dead_process, owner_node};
use super::page::{self, ExistingContact, PagePlan, PreparedPage};
use super::{
    Backend, ChangeEvent, ChangeKind, ChangeOrigin, ClaimRefusal, ClaimRequest, Claims, Clock,
    CommitRecord, ConfigFileText, ContactFilter, ContactStatus, ContactView, CustomField,
    FieldChange, FieldOrigin, FieldValueView, ImporterState, Lease, LeaseView, MembershipStatus,
    MembershipView, PruneCounts, RunCounts, RunOutcome, RunRecord, SourceView, Store, StoreError,
    StoreOptions, StoreResult, UnsubscribeScope, chrono_duration, field_type_from_str,
    field_type_str, phase_of, validate_tag,
};
use crate::model::{
    Checkpoint, CustomFieldDef, CustomFieldType, FieldBinding, PageOutcome, PageWrite,
    normalize_email,
};

/// The version of [`normalize_email`] stored emails are in once a store is opened (see
/// `SqlStore::renormalize_emails`). Raise it whenever the normalization changes.
/// Version 2: trimmed, NFC, lower-cased (not case-folded), the domain by IDNA.
const EMAIL_NORMALIZATION: i64 = 2;

/// How often `finish_run` prunes old history by itself (by the store's clock).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A value bound to a shared statement's parameter.
#[derive(Debug, Clone)]
pub enum Arg {
    /// An integer.
    Int(Option<i64>),
    /// Text.
    Text(Option<String>),
    /// A boolean (`BOOLEAN`, or 0/1 on SQLite).
    Bool(bool),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A value each dialect stores its own way.
    Stored(Stored),
}

/// A value each dialect binds in its own stored form.
#[derive(Debug, Clone)]
pub enum Stored {
    /// A time (`TIMESTAMPTZ`, or fixed-width UTC text on SQLite).
    Time(Option<DateTime<Utc>>),
    /// A JSON document (`JSONB`, or its text on SQLite).
    Json(Option<Value>),
    /// A set of integer keys, for `= ANY($N)` (an array, or a JSON array on SQLite).
    Ints(Vec<i64>),
    /// A set of text keys, for `= ANY($N)`.
    Texts(Vec<String>),
}

impl Arg {
    fn json(value: Option<Value>) -> Self {
        Arg::Stored(Stored::Json(value))
    }

    fn ints(keys: Vec<i64>) -> Self {
        Arg::Stored(Stored::Ints(keys))
    }

    fn texts(keys: Vec<String>) -> Self {
        Arg::Stored(Stored::Texts(keys))
    }
}

impl From<i64> for Arg {
    fn from(value: i64) -> Self {
        Arg::Int(Some(value))
    }
}
impl From<Option<i64>> for Arg {
    fn from(value: Option<i64>) -> Self {
        Arg::Int(value)
    }
}
impl From<&str> for Arg {
    fn from(value: &str) -> Self {
        Arg::Text(Some(value.to_string()))
    }
}
impl From<&String> for Arg {
    fn from(value: &String) -> Self {
        Arg::Text(Some(value.clone()))
    }
}
impl From<Option<&str>> for Arg {
    fn from(value: Option<&str>) -> Self {
        Arg::Text(value.map(str::to_string))
    }
}
impl From<Option<String>> for Arg {
    fn from(value: Option<String>) -> Self {
        Arg::Text(value)
    }
}
impl From<bool> for Arg {
    fn from(value: bool) -> Self {
        Arg::Bool(value)
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(value: DateTime<Utc>) -> Self {
        Arg::Stored(Stored::Time(Some(value)))
    }
}
impl From<Option<DateTime<Utc>>> for Arg {
    fn from(value: Option<DateTime<Utc>>) -> Self {
        Arg::Stored(Stored::Time(value))
    }
}
impl From<Vec<u8>> for Arg {
    fn from(value: Vec<u8>) -> Self {
        Arg::Bytes(value)
    }
}

/// A shared statement, rendered for one dialect, with its arguments.
#[derive(Debug)]
pub struct Statement {
    /// The SQL text.
    pub sql: Cow<'static, str>,
    /// The arguments, `$1` first.
    pub args: Vec<Arg>,
}

impl Statement {
    /// Adds the next argument.
    pub fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// Reading a column of a result row. Blanket-implemented for every sqlx row type whose
/// dialect says how it stores times and JSON ([`DialectColumns`]).
pub trait RowGet {
    /// An integer.
    fn int(&self, col: usize) -> StoreResult<i64>;
    /// An integer or NULL.
    fn opt_int(&self, col: usize) -> StoreResult<Option<i64>>;
    /// Text.
    fn text(&self, col: usize) -> StoreResult<String>;
    /// Text or NULL.
    fn opt_text(&self, col: usize) -> StoreResult<Option<String>>;
    /// A boolean.
    fn flag(&self, col: usize) -> StoreResult<bool>;
    /// A boolean or NULL.
    fn opt_flag(&self, col: usize) -> StoreResult<Option<bool>>;
    /// Bytes.
    fn bytes(&self, col: usize) -> StoreResult<Vec<u8>>;
    /// A time or NULL.
    fn opt_time(&self, col: usize) -> StoreResult<Option<DateTime<Utc>>>;
    /// A JSON document or NULL.
    fn opt_json(&self, col: usize) -> StoreResult<Option<Value>>;
    /// A time.
    fn time(&self, col: usize) -> StoreResult<DateTime<Utc>> {
        self.opt_time(col)?
            .ok_or_else(|| StoreError::corrupt("time", "NULL"))
    }
}

/// How a dialect's rows hold what the two databases store differently.
pub trait DialectColumns {
    /// A time or NULL.
    fn stored_time(&self, col: usize) -> StoreResult<Option<DateTime<Utc>>>;
    /// A JSON document or NULL.
    fn stored_json(&self, col: usize) -> StoreResult<Option<Value>>;
}

impl<R> RowGet for R
where
    R: sqlx::Row + DialectColumns,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn int(&self, col: usize) -> StoreResult<i64> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: usize) -> StoreResult<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn text(&self, col: usize) -> StoreResult<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: usize) -> StoreResult<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: usize) -> StoreResult<bool> {
        Ok(self.try_get(col)?)
    }
    fn opt_flag(&self, col: usize) -> StoreResult<Option<bool>> {
        Ok(self.try_get(col)?)
    }
    fn bytes(&self, col: usize) -> StoreResult<Vec<u8>> {
        Ok(self.try_get(col)?)
    }
    fn opt_time(&self, col: usize) -> StoreResult<Option<DateTime<Utc>>> {
        self.stored_time(col)
    }
    fn opt_json(&self, col: usize) -> StoreResult<Option<Value>> {
        self.stored_json(col)
    }
}

/// Everything a page write decided, for a dialect's batched row writes.
#[derive(Clone, Copy)]
pub struct PlannedRows<'a> {
    /// The page.
    pub page: &'a PageWrite<'a>,
    /// The page de-duplicated.
    pub prepared: &'a PreparedPage,
    /// What the store held for its emails.
    pub existing: &'a HashMap<String, ExistingContact>,
    /// The rows to write.
    pub plan: &'a PagePlan,
    /// The write's time.
    pub now: DateTime<Utc>,
}

impl PlannedRows<'_> {
    /// Each record's contact id where the store already had the contact; a dialect
    /// fills in the ids of those it creates.
    pub fn known_ids(&self) -> Vec<Option<i64>> {
        self.prepared
            .records
            .iter()
            .map(|r| self.existing.get(&r.email).map(|e| e.contact_id))
            .collect()
    }

    /// The contact id of record `index` once the contacts are written.
    pub fn id_of(&self, ids: &[Option<i64>], index: usize) -> StoreResult<i64> {
        ids[index].ok_or_else(|| {
            StoreError::corrupt(
                "contact id",
                format!(
                    "none for `{}` after the upsert",
                    self.prepared.records[index].email
                ),
            )
        })
    }
}

/// The rules of a page write's row upserts, shared by both dialects' batched statements
/// (which differ only in how the rows arrive): each `ON CONFLICT` clause, and the
/// membership rule, exist once.
///
/// An existing contact: an empty incoming value never erases a stored one, and an import
/// only ever moves a `normal` contact to `bounced` (never lifts a bounce or an
/// unsubscribe).
macro_rules! upsert_contact_rule {
    () => {
        " ON CONFLICT (email) DO UPDATE SET
            first_name = COALESCE(excluded.first_name, contacts.first_name),
            last_name = COALESCE(excluded.last_name, contacts.last_name),
            phone = COALESCE(excluded.phone, contacts.phone),
            organization = COALESCE(excluded.organization, contacts.organization),
            status = CASE WHEN contacts.status = 'normal' AND excluded.status = 'bounced'
                          THEN 'bounced' ELSE contacts.status END,
            status_changed_at = CASE WHEN contacts.status = 'normal'
                                      AND excluded.status = 'bounced'
                                     THEN excluded.updated_at
                                     ELSE contacts.status_changed_at END,
            updated_at = excluded.updated_at"
    };
}
pub(crate) use upsert_contact_rule;

/// A contact source written again: the record came back, so any deletion mark goes.
macro_rules! upsert_source_rule {
    () => {
        " ON CONFLICT (importer, contact_id) DO UPDATE SET
            external_id = COALESCE(excluded.external_id, contact_sources.external_id),
            content_hash = excluded.content_hash, list_id = excluded.list_id,
            run_id = excluded.run_id, written_at = excluded.written_at, deleted_at = NULL"
    };
}
pub(crate) use upsert_source_rule;

/// Memberships (`$status` names the incoming status column). Enforced here too, not only
/// in the plan (`page::membership_wanted`): a contact bounced or unsubscribed concurrently
/// is never made active or pending, an unsubscribed membership never changes again;
/// `pending` and `active` follow the service both ways. The change is the import's
/// (`origin`).
macro_rules! membership_rule {
    ($status:literal) => {
        concat!(
            " WHERE ",
            $status,
            " = 'unsubscribed' OR c.status = 'normal'
             ON CONFLICT (list_id, contact_id) DO UPDATE SET
                status = excluded.status, origin = 'import',
                subscribed_at = CASE WHEN excluded.status = 'active' THEN excluded.updated_at
                                     ELSE memberships.subscribed_at END,
                unsubscribed_at = CASE WHEN excluded.status = 'unsubscribed'
                                       THEN excluded.updated_at
                                       ELSE memberships.unsubscribed_at END,
                updated_at = excluded.updated_at
             WHERE memberships.status <> 'unsubscribed' AND memberships.status <> excluded.status"
        )
    };
}
pub(crate) use membership_rule;

/// A custom value written again, with the importer and run that wrote it.
macro_rules! upsert_value_rule {
    () => {
        " ON CONFLICT (contact_id, field_id) DO UPDATE SET value = excluded.value,
            importer = excluded.importer, run_id = excluded.run_id,
            updated_at = excluded.updated_at"
    };
}
pub(crate) use upsert_value_rule;

/// The page snapshot's columns (as [`page::existing_from_row`] reads them), from the
/// contacts `c` a dialect finds for the emails `$1`, with importer `$2`'s source and the
/// membership in list `$3`: `snapshot_of!("FROM ... c", "WHERE ...")`.
/// The columns [`run_from_row`] reads, of runs aliased `r`.
macro_rules! run_columns {
    () => {
        "r.id, r.importer, r.started_at, r.finished_at, r.outcome, r.pages, r.fetched,
         r.created, r.updated, r.unchanged, r.skipped, r.field_failures, r.deleted, r.error"
    };
}
pub(crate) use run_columns;

macro_rules! snapshot_of {
    ($contacts:literal, $filter:literal) => {
        concat!(
            "SELECT c.email, c.id, c.first_name, c.last_name, c.phone, c.organization,
                c.status, s.content_hash, s.list_id, s.deleted_at IS NOT NULL, m.status ",
            $contacts,
            " LEFT JOIN contact_sources s ON s.importer = $2 AND s.contact_id = c.id
              LEFT JOIN memberships m ON m.list_id = $3 AND m.contact_id = c.id ",
            $filter
        )
    };
}
pub(crate) use snapshot_of;

/// `(contact, list)` of sources an `UPDATE ... RETURNING contact_id, list_id` marked.
fn gone_rows(rows: &[impl RowGet]) -> StoreResult<Vec<(i64, Option<i64>)>> {
    rows.iter()
        .map(|row| Ok((row.int(0)?, row.opt_int(1)?)))
        .collect()
}

/// What differs between the two databases; everything else is [`SqlStore`].
///
/// Its futures are declared `Send` so that the generic [`Store`] implementation (whose
/// futures must be `Send`) can await them whatever the dialect.
pub trait Dialect: Send + Sync + Sized + 'static {
    /// Which backend this is.
    const BACKEND: Backend;
    /// A connection (what a transaction dereferences to).
    type Conn: Send;
    /// A transaction taken from the pool.
    type Tx: Send + DerefMut<Target = Self::Conn>;
    /// A result row.
    type Row: RowGet + Send + Sync;

    /// The page snapshot: for the emails `$1` (a set), importer `$2` and list `$3`, rows
    /// as [`page::existing_from_row`] reads them.
    const CONTACT_SNAPSHOT: &'static str;
    /// Stored custom values `(contact id, field id, value)` of contacts `$1` and fields
    /// `$2` (sets).
    const VALUE_SNAPSHOT: &'static str;
    /// The newest `$2` runs of each importer of `$1` (a set), in [`run_from_row`]'s
    /// columns: a few index steps per importer, however long the history.
    const RECENT_RUNS: &'static str;

    /// Rewrites a shared statement's dialect fragments (see the module doc).
    fn render(sql: &'static str) -> Cow<'static, str>;

    /// Starts a write transaction on a pooled connection.
    fn begin(&self) -> impl Future<Output = StoreResult<Self::Tx>> + Send;

    /// Commits it.
    fn commit(tx: Self::Tx) -> impl Future<Output = StoreResult<()>> + Send;

    /// Runs a statement on `conn`, or on the pool when `None`; rows affected.
    fn execute(
        &self,
        conn: Option<&mut Self::Conn>,
        statement: Statement,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Runs a query on `conn`, or on the pool when `None`.
    fn fetch(
        &self,
        conn: Option<&mut Self::Conn>,
        statement: Statement,
    ) -> impl Future<Output = StoreResult<Vec<Self::Row>>> + Send;

    /// The time leases are judged by when the store runs on the system clock: the
    /// database server's on PostgreSQL (several hosts share it), this host's on SQLite.
    fn database_now(
        &self,
        conn: &mut Self::Conn,
    ) -> impl Future<Output = StoreResult<DateTime<Utc>>> + Send;

    /// Writes a planned page's rows: contacts (their ids assigned or returned), sources,
    /// memberships, custom values and change events, set-based.
    fn write_rows(
        store: &SqlStore<Self>,
        conn: &mut Self::Conn,
        rows: PlannedRows<'_>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// One page write: a transaction around [`SqlStore::write_page_on`]. SQLite adds its
    /// kept connection and checkpoints.
    fn write_page(
        store: &SqlStore<Self>,
        page: PageWrite<'_>,
    ) -> impl Future<Output = StoreResult<PageOutcome>> + Send {
        async move {
            let mut tx = store.begin().await?;
            let outcome = store.write_page_on(&mut tx, &page).await?;
            store.commit(tx).await?;
            Ok(outcome)
        }
    }

    /// Finishes background work (see [`Store::close`]).
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A dialect's `begin`, `commit`, `execute` and `fetch` over its sqlx driver (a `pool`
/// field, a `Query` type, a `bind_stored` function for [`Stored`] values), and its
/// `query` binding a statement's [`Arg`]s: the same text for both drivers, written once
/// here. A macro rather than generic code because sqlx's executor bounds
/// (`for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>`, ...) are not implied by
/// a trait and would have to be restated on every generic impl; `begin_statement` is
/// what starts a write transaction.
macro_rules! sqlx_statements {
    (query) => {
        /// A shared statement as an sqlx query.
        fn query(statement: Statement) -> Query {
            let mut query = sqlx::query(AssertSqlSafe(statement.sql));
            for arg in statement.args {
                query = match arg {
                    Arg::Int(value) => query.bind(value),
                    Arg::Text(value) => query.bind(value),
                    Arg::Bool(value) => query.bind(value),
                    Arg::Bytes(value) => query.bind(value),
                    Arg::Stored(value) => Self::bind_stored(query, value),
                };
            }
            query
        }
    };
    ($begin_statement:literal) => {
        async fn begin(&self) -> StoreResult<Self::Tx> {
            Ok(self.pool.begin_with($begin_statement).await?)
        }

        async fn commit(tx: Self::Tx) -> StoreResult<()> {
            Ok(tx.commit().await?)
        }

        async fn execute(
            &self,
            conn: Option<&mut Self::Conn>,
            statement: Statement,
        ) -> StoreResult<u64> {
            let query = Self::query(statement);
            let done = match conn {
                Some(conn) => query.execute(conn).await?,
                None => query.execute(&self.pool).await?,
            };
            Ok(done.rows_affected())
        }

        async fn fetch(
            &self,
            conn: Option<&mut Self::Conn>,
            statement: Statement,
        ) -> StoreResult<Vec<Self::Row>> {
            let query = Self::query(statement);
            Ok(match conn {
                Some(conn) => query.fetch_all(conn).await?,
                None => query.fetch_all(&self.pool).await?,
            })
        }
    };
}
pub(crate) use sqlx_statements;

/// The store, for either backend: the rules in SQL, written once.
pub struct SqlStore<D: Dialect> {
    pub(crate) dialect: D,
    /// The token cipher, or why tokens are refused here.
    cipher: Result<TokenCipher, &'static str>,
    holder: LeaseHolder,
    retention: Duration,
    clock: Clock,
    statements: AtomicU64,
    /// When `finish_run` last pruned, by the store's clock.
    last_prune: Mutex<Option<DateTime<Utc>>>,
    /// The lifetime each held lease was taken or renewed with: page writes extend it.
    lease_ttls: Mutex<HashMap<(String, i64), Duration>>,
}

impl<D: Dialect> std::fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &D::BACKEND)
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> SqlStore<D> {
    /// A store over an opened and migrated dialect.
    pub(crate) fn new(
        dialect: D,
        options: StoreOptions,
        cipher: Result<TokenCipher, &'static str>,
    ) -> Self {
        SqlStore {
            dialect,
            cipher,
            holder: options.lease_holder,
            retention: options.retention,
            clock: options.clock,
            statements: AtomicU64::new(0),
            last_prune: Mutex::new(None),
            lease_ttls: Mutex::new(HashMap::new()),
        }
    }

    /// Brings every stored email to the current [`normalize_email`] once, after the SQL
    /// migrations (on both backends, in Rust, since the normalization is Rust). A contact
    /// whose new spelling another contact already holds keeps its email and is recorded
    /// in `email_collisions` and reported: two contacts are never merged silently (they
    /// may be two people's, and their consents differ). Emails that are no longer valid
    /// addresses are left as they are. Reports remaining collisions at every open.
    pub(crate) async fn renormalize_emails(&self) -> StoreResult<()> {
        let done = self
            .optional(
                None,
                self.q("SELECT version FROM email_normalization WHERE version = $1")
                    .bind(EMAIL_NORMALIZATION),
            )
            .await?;
        if done.is_none() {
            let mut tx = self.begin().await?;
            // Claiming the version serializes concurrent opens: a second one waits for
            // this transaction and then finds the row taken.
            let claimed = self
                .exec(
                    Some(&mut tx),
                    self.q(
                        "INSERT INTO email_normalization (version, applied_at) VALUES ($1, $2)
                         ON CONFLICT (version) DO NOTHING",
                    )
                    .bind(EMAIL_NORMALIZATION)
                    .bind(self.now()),
                )
                .await?;
            if claimed == 1 {
                let mut after = 0;
                loop {
                    let rows = self
                        .all(
                            Some(&mut tx),
                            self.q("SELECT id, email FROM contacts WHERE id > $1 ORDER BY id
                                 LIMIT 10000")
                                .bind(after),
                        )
                        .await?;
                    let Some(last) = rows.last() else { break };
                    after = last.int(0)?;
                    for row in &rows {
                        let email = row.text(1)?;
                        if let Some(normalized) = normalize_email(&email)
                            && normalized != email
                        {
                            self.renormalize_one(&mut tx, row.int(0)?, &email, &normalized)
                                .await?;
                        }
                    }
                }
            }
            self.commit(tx).await?;
        }
        let collisions = self
            .one(None, self.q("SELECT COUNT(*) FROM email_collisions"))
            .await?
            .int(0)?;
        if collisions > 0 {
            tracing::error!(
                collisions,
                "Contacts whose email, normalized, is another contact's are kept apart and listed in the table email_collisions; merge or correct them by hand."
            );
        }
        Ok(())
    }

    async fn renormalize_one(
        &self,
        conn: &mut D::Conn,
        contact_id: i64,
        email: &str,
        normalized: &str,
    ) -> StoreResult<()> {
        let holder = self
            .optional(
                Some(&mut *conn),
                self.q("SELECT id FROM contacts WHERE email = $1")
                    .bind(normalized),
            )
            .await?;
        match holder {
            Some(holder) => {
                let existing_contact_id = holder.int(0)?;
                tracing::error!(
                    contact_id,
                    existing_contact_id,
                    "A stored email, normalized, is another contact's; both are kept apart (see email_collisions)."
                );
                self.exec(
                    Some(conn),
                    self.q(
                        "INSERT INTO email_collisions (contact_id, email, normalized,
                             existing_contact_id, found_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (contact_id) DO UPDATE SET email = excluded.email,
                             normalized = excluded.normalized,
                             existing_contact_id = excluded.existing_contact_id,
                             found_at = excluded.found_at",
                    )
                    .bind(contact_id)
                    .bind(email)
                    .bind(normalized)
                    .bind(existing_contact_id)
                    .bind(self.now()),
                )
                .await?;
            }
            None => {
                self.exec(
                    Some(conn),
                    self.q("UPDATE contacts SET email = $1, updated_at = $2 WHERE id = $3")
                        .bind(normalized)
                        .bind(self.now())
                        .bind(contact_id),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// A shared statement rendered for this dialect (counted as executed).
    pub(crate) fn q(&self, sql: &'static str) -> Statement {
        self.count_statement();
        Statement {
            sql: D::render(sql),
            args: Vec::new(),
        }
    }

    /// Counts a statement a dialect runs itself.
    pub(crate) fn count_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    async fn exec(&self, conn: Option<&mut D::Conn>, statement: Statement) -> StoreResult<u64> {
        self.dialect.execute(conn, statement).await
    }

    async fn all(
        &self,
        conn: Option<&mut D::Conn>,
        statement: Statement,
    ) -> StoreResult<Vec<D::Row>> {
        self.dialect.fetch(conn, statement).await
    }

    async fn optional(
        &self,
        conn: Option<&mut D::Conn>,
        statement: Statement,
    ) -> StoreResult<Option<D::Row>> {
        Ok(self.all(conn, statement).await?.into_iter().next())
    }

    async fn one(&self, conn: Option<&mut D::Conn>, statement: Statement) -> StoreResult<D::Row> {
        self.optional(conn, statement)
            .await?
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    pub(crate) async fn begin(&self) -> StoreResult<D::Tx> {
        self.count_statement();
        self.dialect.begin().await
    }

    pub(crate) async fn commit(&self, tx: D::Tx) -> StoreResult<()> {
        self.count_statement();
        D::commit(tx).await
    }

    /// The store's time for what it records.
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The time leases are judged by (see [`Clock`]).
    async fn lease_now(&self, conn: &mut D::Conn) -> StoreResult<DateTime<Utc>> {
        match &self.clock {
            Clock::Manual(clock) => Ok(clock.now()),
            Clock::System => {
                if D::BACKEND == Backend::Postgres {
                    self.count_statement();
                }
                self.dialect.database_now(conn).await
            }
        }
    }

    /// The page write itself, inside the transaction `conn` holds: lease, parents,
    /// snapshot, plan, the dialect's row writes, deletions, checkpoint and run counts.
    pub(crate) async fn write_page_on(
        &self,
        conn: &mut D::Conn,
        page: &PageWrite<'_>,
    ) -> StoreResult<PageOutcome> {
        let prepared = page::prepare(page);
        let now = self.now();
        self.check_lease(conn, page.importer, page.fencing_token, Some(page.run_id))
            .await?;

        // The list and fields the page names are checked once per write, not per row
        // (SQLite writes with foreign keys off, PostgreSQL's hot tables have none), and on
        // PostgreSQL held the way a foreign-key check would: a concurrent `DELETE` of
        // them waits for this write.
        let mut field_ids: Vec<i64> = page.fields.iter().map(|f| f.field_id).collect();
        field_ids.sort_unstable();
        field_ids.dedup();
        let parents = self
            .one(
                Some(&mut *conn),
                self.q(
                    "WITH l AS (SELECT id FROM lists WHERE id = $1{for_key_share}),
                          f AS (SELECT id FROM custom_fields WHERE id = ANY($2){for_key_share})
                     SELECT (SELECT COUNT(*) FROM l), (SELECT COUNT(*) FROM f)",
                )
                .bind(page.list_id)
                .bind(Arg::ints(field_ids.clone())),
            )
            .await?;
        if parents.int(0)? != 1 || parents.int(1)? != field_ids.len() as i64 {
            return Err(StoreError::MissingParent {
                importer: page.importer.to_string(),
            });
        }

        // What the store holds for the page's emails (one statement), in email order: the
        // index probes then walk the email index forwards.
        let mut existing: HashMap<String, ExistingContact> = HashMap::new();
        if !prepared.records.is_empty() {
            let mut emails: Vec<String> =
                prepared.records.iter().map(|r| r.email.clone()).collect();
            emails.sort_unstable();
            let rows = self
                .all(
                    Some(&mut *conn),
                    self.q(D::CONTACT_SNAPSHOT)
                        .bind(Arg::texts(emails))
                        .bind(page.importer)
                        .bind(page.list_id),
                )
                .await?;
            for row in rows {
                let (email, contact) = page::existing_from_row(&row)?;
                existing.insert(email, contact);
            }
        }

        // Stored custom values of the contacts that need comparing (one statement).
        let mut values: HashMap<(i64, i64), String> = HashMap::new();
        let mut candidates = page::value_candidates(&prepared, &existing, page.list_id);
        candidates.sort_unstable();
        if !candidates.is_empty() && !field_ids.is_empty() {
            let rows = self
                .all(
                    Some(&mut *conn),
                    self.q(D::VALUE_SNAPSHOT)
                        .bind(Arg::ints(candidates))
                        .bind(Arg::ints(field_ids)),
                )
                .await?;
            for row in rows {
                values.insert((row.int(0)?, row.int(1)?), row.text(2)?);
            }
        }

        let plan = page::plan_page(page, &prepared, &existing, &values);
        D::write_rows(
            self,
            conn,
            PlannedRows {
                page,
                prepared: &prepared,
                existing: &existing,
                plan: &plan,
                now,
            },
        )
        .await?;

        let mut outcome = plan.outcome.clone();
        if let Some(pass) = page.seen_pass {
            let emails: Vec<String> = prepared.records.iter().map(|r| r.email.clone()).collect();
            // Two statements, each answered by an index: one `OR` of both would read every
            // source of the importer on SQLite, once per page.
            if !page.seen_external_ids.is_empty() {
                self.exec(
                    Some(&mut *conn),
                    self.q("UPDATE contact_sources{by_external_id} SET seen_pass = $1
                         WHERE importer = $2 AND external_id = ANY($3)")
                        .bind(pass)
                        .bind(page.importer)
                        .bind(Arg::texts(page.seen_external_ids.to_vec())),
                )
                .await?;
            }
            if !emails.is_empty() {
                self.exec(
                    Some(&mut *conn),
                    self.q("UPDATE contact_sources SET seen_pass = $1
                         WHERE importer = $2
                           AND contact_id IN (SELECT id FROM contacts WHERE email = ANY($3))")
                        .bind(pass)
                        .bind(page.importer)
                        .bind(Arg::texts(emails)),
                )
                .await?;
            }
        }
        outcome.moved = self
            .move_sources(&mut *conn, page, &prepared, &existing, &plan, now)
            .await?;
        if !page.deleted_external_ids.is_empty() {
            let rows = self
                .all(
                    Some(&mut *conn),
                    self.q("UPDATE contact_sources{by_external_id} SET deleted_at = $1
                         WHERE importer = $2 AND deleted_at IS NULL AND external_id = ANY($3)
                         RETURNING contact_id, list_id")
                        .bind(now)
                        .bind(page.importer)
                        .bind(Arg::texts(page.deleted_external_ids.to_vec())),
                )
                .await?;
            outcome.deleted = rows.len() as u64;
            let gone = gone_rows(&rows)?;
            self.remove_at_source(&mut *conn, page, &gone, "deleted at the service", now)
                .await?;
        }
        if page.sweep
            && let Some(pass) = page.seen_pass
        {
            let rows = self
                .all(
                    Some(&mut *conn),
                    self.q("UPDATE contact_sources SET deleted_at = $1
                         WHERE importer = $2 AND deleted_at IS NULL
                           AND (seen_pass IS NULL OR seen_pass < $3)
                         RETURNING contact_id, list_id")
                        .bind(now)
                        .bind(page.importer)
                        .bind(pass),
                )
                .await?;
            outcome.gone = rows.len() as u64;
            let gone = gone_rows(&rows)?;
            self.remove_at_source(
                &mut *conn,
                page,
                &gone,
                "not returned by a complete full pass",
                now,
            )
            .await?;
        }

        self.save_state(conn, page.importer, page.checkpoint, now)
            .await?;
        self.exec(
            Some(conn),
            self.q("UPDATE runs SET pages = pages + $1, fetched = fetched + $2,
                    created = created + $3, updated = updated + $4, unchanged = unchanged + $5,
                    skipped = skipped + $6, field_failures = field_failures + $7,
                    deleted = deleted + $8
                 WHERE id = $9")
                .bind(page.counts.pages as i64)
                .bind(page.counts.fetched as i64)
                .bind(outcome.created as i64)
                .bind(outcome.updated as i64)
                .bind(outcome.unchanged as i64)
                .bind(page.counts.skipped as i64)
                .bind((outcome.field_failures + page.counts.field_failures) as i64)
                .bind((page.counts.deleted + outcome.gone) as i64)
                .bind(page.run_id),
        )
        .await?;
        Ok(outcome)
    }

    /// Sources of this importer whose record now arrives with another email: the source
    /// (importer, external id) moved to the new address, so the old address's source is
    /// marked deleted and its membership ends like a deletion (when no other importer
    /// gives it), with a `source_moved` event naming both addresses. Only records whose
    /// source this write created or revived are looked at (an address that changed is
    /// always one this importer did not hold), so an unchanged page costs nothing.
    async fn move_sources(
        &self,
        conn: &mut D::Conn,
        page: &PageWrite<'_>,
        prepared: &PreparedPage,
        existing: &HashMap<String, ExistingContact>,
        plan: &PagePlan,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut new_email: HashMap<&str, &str> = HashMap::new();
        for &index in &plan.sources {
            let record = &prepared.records[index];
            let fresh = existing
                .get(&record.email)
                .is_none_or(|e| e.source_hash.is_none() || e.source_deleted);
            if let (true, Some(external_id)) = (fresh, record.external_id.as_deref()) {
                new_email.insert(external_id, record.email.as_str());
            }
        }
        if new_email.is_empty() {
            return Ok(0);
        }
        let mut ids: Vec<String> = new_email.keys().map(|k| k.to_string()).collect();
        ids.sort_unstable();
        // The sources this write wrote carry its time: the others are older.
        let rows = self
            .all(
                Some(&mut *conn),
                self.q("SELECT s.contact_id, s.list_id, c.email, s.external_id
                     FROM contact_sources s{by_external_id} JOIN contacts c ON c.id = s.contact_id
                     WHERE s.importer = $1 AND s.deleted_at IS NULL
                       AND s.external_id = ANY($2) AND s.written_at <> $3")
                    .bind(page.importer)
                    .bind(Arg::texts(ids))
                    .bind(now),
            )
            .await?;
        let mut moved: Vec<(i64, Option<i64>, String, String)> = Vec::new();
        for row in &rows {
            let (old_email, external_id) = (row.text(2)?, row.text(3)?);
            if let Some(&to) = new_email.get(external_id.as_str())
                && to != old_email
            {
                moved.push((row.int(0)?, row.opt_int(1)?, old_email, to.to_string()));
            }
        }
        if moved.is_empty() {
            return Ok(0);
        }
        let contact_ids: Vec<i64> = moved.iter().map(|m| m.0).collect();
        self.exec(
            Some(&mut *conn),
            self.q("UPDATE contact_sources SET deleted_at = $1
                 WHERE importer = $2 AND contact_id = ANY($3)")
                .bind(now)
                .bind(page.importer)
                .bind(Arg::ints(contact_ids)),
        )
        .await?;
        for (contact_id, list_id, old, new) in &moved {
            let changes = json!({"email": page::change_value(Some(old.as_str()), new)});
            self.import_events(
                conn,
                page,
                ChangeKind::SourceMoved,
                *list_id,
                changes,
                vec![*contact_id],
                now,
            )
            .await?;
        }
        let gone: Vec<(i64, Option<i64>)> = moved.iter().map(|m| (m.0, m.1)).collect();
        self.remove_at_source(conn, page, &gone, "email changed at the service", now)
            .await?;
        Ok(moved.len() as u64)
    }

    /// Memberships given by sources of this importer that are gone at the service
    /// (`(contact, the source's list)`): an active or pending one moves to `removed`, with a
    /// `membership_changed` event (`notify` false, the reason in `changes.reason`), unless
    /// another importer's live source gives the same contact to the same list. Nothing
    /// else changes: the contact, its values, its history and any unsubscribe stay.
    async fn remove_at_source(
        &self,
        conn: &mut D::Conn,
        page: &PageWrite<'_>,
        gone: &[(i64, Option<i64>)],
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut by_list: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (contact_id, list_id) in gone {
            if let Some(list_id) = list_id {
                by_list.entry(*list_id).or_default().push(*contact_id);
            }
        }
        for (list_id, mut contact_ids) in by_list {
            contact_ids.sort_unstable();
            let rows = self
                .all(
                    Some(&mut *conn),
                    self.q("SELECT m.contact_id, m.status FROM memberships m
                         WHERE m.list_id = $1 AND m.contact_id = ANY($2)
                           AND m.status IN ('active', 'pending')
                           AND NOT EXISTS (SELECT 1 FROM contact_sources o
                               WHERE o.contact_id = m.contact_id AND o.list_id = m.list_id
                                 AND o.importer <> $3 AND o.deleted_at IS NULL)
                         ORDER BY m.contact_id{for_update}")
                        .bind(list_id)
                        .bind(Arg::ints(contact_ids))
                        .bind(page.importer),
                )
                .await?;
            let mut by_status: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for row in &rows {
                by_status.entry(row.text(1)?).or_default().push(row.int(0)?);
            }
            for (old, contact_ids) in by_status {
                self.exec(
                    Some(&mut *conn),
                    self.q(
                        "UPDATE memberships SET status = 'removed', origin = 'import',
                             updated_at = $1
                         WHERE list_id = $2 AND contact_id = ANY($3) AND status = $4",
                    )
                    .bind(now)
                    .bind(list_id)
                    .bind(Arg::ints(contact_ids.clone()))
                    .bind(&old),
                )
                .await?;
                let changes = json!({
                    "status": page::change_value(Some(old.as_str()), MembershipStatus::Removed.as_str()),
                    "reason": {"new": reason},
                });
                self.import_events(
                    conn,
                    page,
                    ChangeKind::MembershipChanged,
                    Some(list_id),
                    changes,
                    contact_ids,
                    now,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Change events a page write makes beside its plan's (origin `import`, never
    /// notifying): one per contact of `contact_ids`, each with the same `changes`.
    #[allow(clippy::too_many_arguments)]
    async fn import_events(
        &self,
        conn: &mut D::Conn,
        page: &PageWrite<'_>,
        kind: ChangeKind,
        list_id: Option<i64>,
        changes: Value,
        contact_ids: Vec<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.exec(
            Some(conn),
            self.q(
                "INSERT INTO change_events (at, kind, contact_id, email, list_id, origin,
                     notify, importer, run_id, changes)
                 SELECT $1, $2, id, email, $3, 'import', FALSE, $4, $5, $6
                 FROM contacts WHERE id = ANY($7) ORDER BY id",
            )
            .bind(now)
            .bind(kind.as_str())
            .bind(list_id)
            .bind(page.importer)
            .bind(page.run_id)
            .bind(Arg::json(Some(changes)))
            .bind(Arg::ints(contact_ids)),
        )
        .await?;
        Ok(())
    }

    /// Checks the lease inside a write's transaction and extends it by its lifetime, and
    /// records the commit with this node and the fencing token (the audit of which node
    /// wrote what under which lease).
    async fn check_lease(
        &self,
        conn: &mut D::Conn,
        importer: &str,
        token: i64,
        run_id: Option<i64>,
    ) -> StoreResult<()> {
        let now = self.lease_now(conn).await?;
        let extend_to = self
            .lease_ttls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(importer.to_string(), token))
            .map_or(now, |ttl| now + chrono_duration(*ttl));
        let done = self
            .exec(
                Some(conn),
                self.q("UPDATE leases
                     SET expires_at = CASE WHEN expires_at > $1 THEN expires_at ELSE $1 END
                     WHERE importer = $2 AND fencing_token = $3 AND owner <> ''
                       AND expires_at > $4")
                    .bind(extend_to)
                    .bind(importer)
                    .bind(token)
                    .bind(now),
            )
            .await?;
        if done == 0 {
            return Err(StoreError::LeaseLost {
                importer: importer.to_string(),
            });
        }
        self.exec(
            Some(conn),
            self.q(
                "INSERT INTO page_commits (importer, run_id, node, fencing_token, committed_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(importer)
            .bind(run_id)
            .bind(&self.holder.node)
            .bind(token)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    async fn save_state(
        &self,
        conn: &mut D::Conn,
        importer: &str,
        checkpoint: &Checkpoint,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.exec(
            Some(conn),
            self.q(
                "INSERT INTO importer_state (importer, watermark, position, pass_high_water,
                     fingerprint, full_refresh, pass_started_at, last_full_refresh, phase,
                     updated_at, change_token)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (importer) DO UPDATE SET
                     watermark = excluded.watermark, position = excluded.position,
                     pass_high_water = excluded.pass_high_water,
                     fingerprint = excluded.fingerprint, full_refresh = excluded.full_refresh,
                     pass_started_at = excluded.pass_started_at,
                     last_full_refresh = excluded.last_full_refresh, phase = excluded.phase,
                     updated_at = excluded.updated_at, change_token = excluded.change_token",
            )
            .bind(importer)
            .bind(checkpoint.watermark)
            .bind(Arg::json(checkpoint.position.clone()))
            .bind(checkpoint.pass_high_water)
            .bind(checkpoint.fingerprint.as_deref())
            .bind(checkpoint.full_refresh)
            .bind(checkpoint.pass_started_at)
            .bind(checkpoint.last_full_refresh)
            .bind(phase_of(checkpoint))
            .bind(now)
            .bind(checkpoint.change_token.as_deref()),
        )
        .await?;
        Ok(())
    }

    fn cipher(&self) -> StoreResult<&TokenCipher> {
        self.cipher
            .as_ref()
            .map_err(|why| StoreError::Key((*why).to_string()))
    }

    /// A contact's id and status by email, held for the rest of the transaction.
    async fn contact_id(
        &self,
        conn: &mut D::Conn,
        email: &str,
    ) -> StoreResult<(i64, ContactStatus)> {
        let normalized = normalize_email(email)
            .ok_or_else(|| StoreError::Refused(format!("`{email}` is not an email address")))?;
        let row = self
            .optional(
                Some(conn),
                self.q("SELECT id, status FROM contacts WHERE email = $1{for_update}")
                    .bind(&normalized),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("contact `{normalized}`")))?;
        Ok((row.int(0)?, ContactStatus::parse(&row.text(1)?)?))
    }

    /// A change event made by a person (origin `person`, never notifying).
    async fn person_event(
        &self,
        conn: &mut D::Conn,
        kind: ChangeKind,
        contact_id: i64,
        list_id: Option<i64>,
        changes: Value,
    ) -> StoreResult<()> {
        self.exec(
            Some(conn),
            self.q(
                "INSERT INTO change_events (at, kind, contact_id, email, list_id, origin,
                     notify, importer, run_id, changes)
                 SELECT $1, $2, id, email, $3, 'person', FALSE, NULL, NULL, $4
                 FROM contacts WHERE id = $5",
            )
            .bind(self.now())
            .bind(kind.as_str())
            .bind(list_id)
            .bind(Arg::json(Some(changes)))
            .bind(contact_id),
        )
        .await?;
        Ok(())
    }

    async fn one_contact(&self, email: &str) -> StoreResult<ContactView> {
        let filter = ContactFilter {
            email: Some(email.to_string()),
            ..ContactFilter::default()
        };
        self.contacts(&filter)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound(format!("contact `{email}`")))
    }

    /// Whether `finish_run` should prune now (at most once per `PRUNE_EVERY` of the
    /// store's clock).
    fn prune_due(&self, now: DateTime<Utc>) -> bool {
        let mut last = self
            .last_prune
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| now - at >= chrono_duration(PRUNE_EVERY));
        if due {
            *last = Some(now);
        }
        due
    }

    fn remember_ttl(&self, importer: &str, token: i64, ttl: Option<Duration>) {
        let mut ttls = self
            .lease_ttls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (importer.to_string(), token);
        match ttl {
            Some(ttl) => ttls.insert(key, ttl),
            None => ttls.remove(&key),
        };
    }
}

/// The start of a query `state_from_row` reads.
macro_rules! select_state {
    () => {
        "SELECT importer, watermark, position, pass_high_water, fingerprint, full_refresh,
            pass_started_at, last_full_refresh, last_run_at, next_run_at, last_error,
            needs_new_credentials, change_token
         FROM importer_state "
    };
}

fn state_from_row(row: &impl RowGet) -> StoreResult<ImporterState> {
    Ok(ImporterState {
        importer: row.text(0)?,
        checkpoint: Checkpoint {
            watermark: row.opt_time(1)?,
            position: row.opt_json(2)?,
            pass_high_water: row.opt_time(3)?,
            fingerprint: row.opt_text(4)?,
            full_refresh: row.flag(5)?,
            pass_started_at: row.opt_time(6)?,
            last_full_refresh: row.opt_time(7)?,
            change_token: row.opt_text(12)?,
        },
        last_run_at: row.opt_time(8)?,
        next_run_at: row.opt_time(9)?,
        last_error: row.opt_text(10)?,
        needs_new_credentials: row.flag(11)?,
    })
}

/// The columns `field_from_row` reads, in order.
macro_rules! field_columns {
    () => {
        "id, tag, label, field_type, origin, service, locked"
    };
}

fn field_from_row(row: &impl RowGet) -> StoreResult<CustomField> {
    Ok(CustomField {
        id: row.int(0)?,
        tag: row.text(1)?,
        label: row.text(2)?,
        field_type: field_type_from_str(&row.text(3)?)?,
        origin: FieldOrigin::parse(&row.text(4)?)?,
        service: row.opt_text(5)?,
        locked: row.flag(6)?,
    })
}

fn run_from_row(row: &impl RowGet) -> StoreResult<RunRecord> {
    let count = |col: usize| -> StoreResult<u64> { Ok(row.int(col)?.max(0) as u64) };
    Ok(RunRecord {
        run_id: row.int(0)?,
        importer: row.text(1)?,
        started_at: row.time(2)?,
        finished_at: row.opt_time(3)?,
        outcome: row
            .opt_text(4)?
            .as_deref()
            .map(super::run_outcome_from_str)
            .transpose()?,
        counts: RunCounts {
            pages: count(5)?,
            fetched: count(6)?,
            created: count(7)?,
            updated: count(8)?,
            unchanged: count(9)?,
            skipped: count(10)?,
            field_failures: count(11)?,
            deleted: count(12)?,
        },
        error: row.opt_text(13)?,
    })
}

#[async_trait]
impl<D: Dialect> Store for SqlStore<D> {
    async fn ensure_list(&self, name: &str) -> StoreResult<i64> {
        self.one(
            None,
            self.q("INSERT INTO lists (name, created_at) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id")
                .bind(name)
                .bind(self.now()),
        )
        .await?
        .int(0)
    }

    async fn ensure_custom_fields(
        &self,
        defs: &[CustomFieldDef],
    ) -> StoreResult<Vec<FieldBinding>> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut bindings = Vec::with_capacity(defs.len());
        for def in defs {
            let row = self
                .one(
                    Some(&mut tx),
                    self.q(
                        "INSERT INTO custom_fields (tag, label, field_type, origin, service,
                             locked, created_at, updated_at)
                         VALUES ($1, $2, $3, 'import', $4, TRUE, $5, $5)
                         ON CONFLICT (tag) DO UPDATE SET
                             locked = TRUE,
                             updated_at = CASE WHEN custom_fields.locked
                                               THEN custom_fields.updated_at
                                               ELSE excluded.updated_at END
                         RETURNING id, field_type",
                    )
                    .bind(&def.tag)
                    .bind(&def.label)
                    .bind(field_type_str(def.field_type))
                    .bind(&def.service)
                    .bind(now),
                )
                .await?;
            bindings.push(FieldBinding {
                field_id: row.int(0)?,
                tag: def.tag.clone(),
                stored_type: field_type_from_str(&row.text(1)?)?,
            });
        }
        self.commit(tx).await?;
        Ok(bindings)
    }

    async fn acquire_lease(&self, importer: &str, ttl: Duration) -> StoreResult<Option<Lease>> {
        let mut tx = self.begin().await?;
        let now = self.lease_now(&mut tx).await?;
        self.exec(
            Some(&mut tx),
            self.q(
                "INSERT INTO leases (importer, owner, fencing_token, expires_at, acquired_at)
                 VALUES ($1, '', 0, $2, $2) ON CONFLICT (importer) DO NOTHING",
            )
            .bind(importer)
            .bind(now),
        )
        .await?;
        let row = self
            .one(
                Some(&mut tx),
                self.q("SELECT owner, fencing_token, expires_at FROM leases
                     WHERE importer = $1{for_update}")
                    .bind(importer),
            )
            .await?;
        let owner = row.text(0)?;
        let free = owner.is_empty()
            || row.time(2)? <= now
            || held_by_dead_process(&owner, &self.holder.node);
        if !free {
            return Ok(None);
        }
        let token = row.int(1)? + 1;
        let owner = self.holder.new_owner();
        let expires_at = now + chrono_duration(ttl);
        self.exec(
            Some(&mut tx),
            self.q(
                "UPDATE leases SET owner = $1, fencing_token = $2, expires_at = $3,
                     acquired_at = $4
                 WHERE importer = $5",
            )
            .bind(&owner)
            .bind(token)
            .bind(expires_at)
            .bind(now)
            .bind(importer),
        )
        .await?;
        self.commit(tx).await?;
        self.remember_ttl(importer, token, Some(ttl));
        Ok(Some(Lease {
            importer: importer.to_string(),
            owner,
            fencing_token: token,
            expires_at,
        }))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StoreResult<Lease> {
        let mut tx = self.begin().await?;
        let now = self.lease_now(&mut tx).await?;
        let expires_at = now + chrono_duration(ttl);
        // An expired lease is lost even when nobody took it yet: its holder was paused or
        // cut off for longer than its lifetime, and another node may be claiming it.
        let done = self
            .exec(
                Some(&mut tx),
                self.q("UPDATE leases SET expires_at = $1
                     WHERE importer = $2 AND owner = $3 AND fencing_token = $4
                       AND expires_at > $5")
                    .bind(expires_at)
                    .bind(&lease.importer)
                    .bind(&lease.owner)
                    .bind(lease.fencing_token)
                    .bind(now),
            )
            .await?;
        if done == 0 {
            return Err(StoreError::LeaseLost {
                importer: lease.importer.clone(),
            });
        }
        self.commit(tx).await?;
        self.remember_ttl(&lease.importer, lease.fencing_token, Some(ttl));
        Ok(Lease {
            expires_at,
            ..lease.clone()
        })
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        self.exec(
            None,
            self.q("UPDATE leases SET owner = '', expires_at = $1
                 WHERE importer = $2 AND owner = $3 AND fencing_token = $4")
                .bind(self.now())
                .bind(&lease.importer)
                .bind(&lease.owner)
                .bind(lease.fencing_token),
        )
        .await?;
        self.remember_ttl(&lease.importer, lease.fencing_token, None);
        Ok(())
    }

    async fn claim_due(
        &self,
        candidates: &[ClaimRequest],
        due_before: DateTime<Utc>,
        limit: usize,
        ttl: Duration,
    ) -> StoreResult<Claims> {
        let mut claims = Claims::default();
        if candidates.is_empty() {
            return Ok(claims);
        }
        let ids: Vec<String> = candidates.iter().map(|c| c.importer.clone()).collect();
        // Lease rows of importers never run yet, each its own short statement (rare).
        let known: std::collections::HashSet<String> = self
            .all(
                None,
                self.q("SELECT importer FROM leases WHERE importer = ANY($1)")
                    .bind(Arg::texts(ids.clone())),
            )
            .await?
            .iter()
            .map(|row| row.text(0))
            .collect::<StoreResult<_>>()?;
        for id in ids.iter().filter(|id| !known.contains(*id)) {
            let epoch = DateTime::<Utc>::UNIX_EPOCH;
            self.exec(
                None,
                self.q(
                    "INSERT INTO leases (importer, owner, fencing_token, expires_at, acquired_at)
                     VALUES ($1, '', 0, $2, $2) ON CONFLICT (importer) DO NOTHING",
                )
                .bind(id)
                .bind(epoch),
            )
            .await?;
        }
        let forced: HashMap<&str, bool> = candidates
            .iter()
            .map(|c| (c.importer.as_str(), c.forced))
            .collect();
        let order: HashMap<&str, usize> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (c.importer.as_str(), i))
            .collect();
        let mut tx = self.begin().await?;
        let now = self.lease_now(&mut tx).await?;
        // First without locks: what is claimable, and why the rest is not.
        let judge = |owner: &str,
                     expires_at: DateTime<Utc>,
                     next_run_at: Option<DateTime<Utc>>,
                     needs_credentials: bool,
                     forced: bool|
         -> Option<ClaimRefusal> {
            let free = owner.is_empty()
                || expires_at <= now
                || held_by_dead_process(owner, &self.holder.node);
            if !free {
                return Some(ClaimRefusal::Held {
                    node: owner_node(owner).map(str::to_string),
                    remaining: (expires_at - now).to_std().unwrap_or_default(),
                });
            }
            if forced {
                return None;
            }
            if needs_credentials {
                return Some(ClaimRefusal::NeedsCredentials);
            }
            match next_run_at {
                Some(at) if at > due_before => Some(ClaimRefusal::NotDue(at)),
                _ => None,
            }
        };
        let rows = self
            .all(
                Some(&mut tx),
                self.q("SELECT l.importer, l.owner, l.expires_at, s.next_run_at,
                         COALESCE(s.needs_new_credentials, FALSE)
                     FROM leases l LEFT JOIN importer_state s ON s.importer = l.importer
                     WHERE l.importer = ANY($1)")
                    .bind(Arg::texts(ids)),
            )
            .await?;
        let mut chosen: Vec<String> = Vec::new();
        for row in &rows {
            let importer = row.text(0)?;
            let forced = forced.get(importer.as_str()).copied().unwrap_or(false);
            match judge(
                &row.text(1)?,
                row.time(2)?,
                row.opt_time(3)?,
                row.flag(4)?,
                forced,
            ) {
                Some(refusal) => claims.refused.push((importer, refusal)),
                None => chosen.push(importer),
            }
        }
        chosen.sort_by_key(|id| order.get(id.as_str()).copied().unwrap_or(usize::MAX));
        // Twice the limit is locked for: rows another node is claiming right now are
        // skipped, and the rest still fills this node's free slots.
        chosen.truncate(limit.saturating_mul(2));
        if chosen.is_empty() || limit == 0 {
            self.commit(tx).await?;
            return Ok(claims);
        }
        // Then locked (skipping rows another node holds locked), and judged again: a
        // node may have run and released one of them since the first look.
        let locked = self
            .all(
                Some(&mut tx),
                self.q("SELECT l.importer, l.owner, l.expires_at, s.next_run_at,
                         COALESCE(s.needs_new_credentials, FALSE), l.fencing_token
                     FROM leases l LEFT JOIN importer_state s ON s.importer = l.importer
                     WHERE l.importer = ANY($1){claim_lock}")
                    .bind(Arg::texts(chosen)),
            )
            .await?;
        let mut take: Vec<(String, i64)> = Vec::new();
        for row in &locked {
            let importer = row.text(0)?;
            let forced = forced.get(importer.as_str()).copied().unwrap_or(false);
            if judge(
                &row.text(1)?,
                row.time(2)?,
                row.opt_time(3)?,
                row.flag(4)?,
                forced,
            )
            .is_none()
            {
                take.push((importer, row.int(5)?));
            }
        }
        take.sort_by_key(|(id, _)| order.get(id.as_str()).copied().unwrap_or(usize::MAX));
        take.truncate(limit);
        let expires_at = now + chrono_duration(ttl);
        for (importer, token) in take {
            let owner = self.holder.new_owner();
            let token = token + 1;
            self.exec(
                Some(&mut tx),
                self.q(
                    "UPDATE leases SET owner = $1, fencing_token = $2, expires_at = $3,
                         acquired_at = $4
                     WHERE importer = $5",
                )
                .bind(&owner)
                .bind(token)
                .bind(expires_at)
                .bind(now)
                .bind(&importer),
            )
            .await?;
            self.exec(
                Some(&mut tx),
                self.q(
                    "INSERT INTO importer_state (importer, next_run_at, updated_at)
                     VALUES ($1, NULL, $2)
                     ON CONFLICT (importer) DO UPDATE SET next_run_at = NULL,
                         updated_at = excluded.updated_at",
                )
                .bind(&importer)
                .bind(self.now()),
            )
            .await?;
            claims.claimed.push(Lease {
                importer,
                owner,
                fencing_token: token,
                expires_at,
            });
        }
        self.commit(tx).await?;
        for lease in &claims.claimed {
            self.remember_ttl(&lease.importer, lease.fencing_token, Some(ttl));
        }
        Ok(claims)
    }

    async fn release_claim(
        &self,
        lease: &Lease,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let now = self.lease_now(&mut tx).await?;
        let released = self
            .exec(
                Some(&mut tx),
                self.q("UPDATE leases SET owner = '', expires_at = $1
                     WHERE importer = $2 AND owner = $3 AND fencing_token = $4")
                    .bind(now)
                    .bind(&lease.importer)
                    .bind(&lease.owner)
                    .bind(lease.fencing_token),
            )
            .await?;
        if released == 1 {
            self.exec(
                Some(&mut tx),
                self.q(
                    "INSERT INTO importer_state (importer, next_run_at, updated_at)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (importer) DO UPDATE SET next_run_at = excluded.next_run_at,
                         updated_at = excluded.updated_at",
                )
                .bind(&lease.importer)
                .bind(next_run_at)
                .bind(self.now()),
            )
            .await?;
        }
        self.commit(tx).await?;
        self.remember_ttl(&lease.importer, lease.fencing_token, None);
        Ok(released == 1)
    }

    async fn lease_holders(&self) -> StoreResult<Vec<LeaseView>> {
        let mut tx = self.begin().await?;
        let now = self.lease_now(&mut tx).await?;
        let rows = self
            .all(
                Some(&mut tx),
                self.q(
                    "SELECT importer, owner, fencing_token, expires_at FROM leases
                     WHERE owner <> '' AND expires_at > $1 ORDER BY importer",
                )
                .bind(now),
            )
            .await?;
        self.commit(tx).await?;
        rows.iter()
            .map(|row| {
                let owner = row.text(1)?;
                Ok(LeaseView {
                    importer: row.text(0)?,
                    node: owner_node(&owner).unwrap_or(&owner).to_string(),
                    fencing_token: row.int(2)?,
                    expires_at: row.time(3)?,
                })
            })
            .collect()
    }

    async fn commits(&self, importer: &str) -> StoreResult<Vec<CommitRecord>> {
        let rows = self
            .all(
                None,
                self.q(
                    "SELECT id, importer, run_id, node, fencing_token, committed_at
                     FROM page_commits WHERE importer = $1 ORDER BY id",
                )
                .bind(importer),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(CommitRecord {
                    id: row.int(0)?,
                    importer: row.text(1)?,
                    run_id: row.opt_int(2)?,
                    node: row.text(3)?,
                    fencing_token: row.int(4)?,
                    committed_at: row.time(5)?,
                })
            })
            .collect()
    }

    async fn importer_state(&self, importer: &str) -> StoreResult<ImporterState> {
        let row = self
            .optional(
                None,
                self.q(concat!(select_state!(), "WHERE importer = $1"))
                    .bind(importer),
            )
            .await?;
        match row {
            Some(row) => state_from_row(&row),
            None => Ok(ImporterState {
                importer: importer.to_string(),
                ..ImporterState::default()
            }),
        }
    }

    async fn begin_run(&self, importer: &str) -> StoreResult<i64> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let id = self
            .one(
                Some(&mut tx),
                self.q(
                    "INSERT INTO runs (importer, started_at, node) VALUES ($1, $2, $3)
                     RETURNING id",
                )
                .bind(importer)
                .bind(now)
                .bind(&self.holder.node),
            )
            .await?
            .int(0)?;
        self.exec(
            Some(&mut tx),
            self.q(
                "INSERT INTO importer_state (importer, last_run_at, updated_at)
                 VALUES ($1, $2, $2)
                 ON CONFLICT (importer) DO UPDATE SET last_run_at = excluded.last_run_at,
                     updated_at = excluded.updated_at",
            )
            .bind(importer)
            .bind(now),
        )
        .await?;
        self.commit(tx).await?;
        Ok(id)
    }

    async fn write_page(&self, page: PageWrite<'_>) -> StoreResult<PageOutcome> {
        D::write_page(self, page).await
    }

    async fn save_checkpoint(
        &self,
        importer: &str,
        fencing_token: i64,
        checkpoint: &Checkpoint,
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.begin().await?;
        self.check_lease(&mut tx, importer, fencing_token, None)
            .await?;
        self.save_state(&mut tx, importer, checkpoint, now).await?;
        self.commit(tx).await
    }

    async fn finish_run(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        counts: &RunCounts,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let importer = self
            .optional(
                Some(&mut tx),
                self.q(
                    "UPDATE runs SET finished_at = $1, outcome = $2, pages = $3, fetched = $4,
                        created = $5, updated = $6, unchanged = $7, skipped = $8,
                        field_failures = $9, deleted = $10, error = $11
                     WHERE id = $12 RETURNING importer",
                )
                .bind(now)
                .bind(super::run_outcome_str(outcome))
                .bind(counts.pages as i64)
                .bind(counts.fetched as i64)
                .bind(counts.created as i64)
                .bind(counts.updated as i64)
                .bind(counts.unchanged as i64)
                .bind(counts.skipped as i64)
                .bind(counts.field_failures as i64)
                .bind(counts.deleted as i64)
                .bind(error)
                .bind(run_id),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?
            .text(0)?;
        self.exec(
            Some(&mut tx),
            self.q(
                "INSERT INTO importer_state (importer, last_error, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (importer) DO UPDATE SET last_error = excluded.last_error,
                     updated_at = excluded.updated_at",
            )
            .bind(&importer)
            .bind(error)
            .bind(now),
        )
        .await?;
        self.commit(tx).await?;
        if self.prune_due(now) {
            self.prune(now).await?;
        }
        Ok(())
    }

    async fn runs(&self, importer: &str, limit: u32) -> StoreResult<Vec<RunRecord>> {
        let rows = self
            .all(
                None,
                self.q(
                    "SELECT id, importer, started_at, finished_at, outcome, pages, fetched,
                        created, updated, unchanged, skipped, field_failures, deleted, error
                     FROM runs WHERE importer = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(importer)
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn recent_runs(
        &self,
        importers: &[String],
        limit: u32,
    ) -> StoreResult<HashMap<String, Vec<RunRecord>>> {
        let rows = self
            .all(
                None,
                self.q(D::RECENT_RUNS)
                    .bind(Arg::texts(importers.to_vec()))
                    .bind(i64::from(limit.max(1))),
            )
            .await?;
        let mut by_importer: HashMap<String, Vec<RunRecord>> = HashMap::new();
        for row in &rows {
            let run = run_from_row(row)?;
            by_importer
                .entry(run.importer.clone())
                .or_default()
                .push(run);
        }
        Ok(by_importer)
    }

    async fn load_token(&self, key: &str) -> StoreResult<Option<String>> {
        let cipher = self.cipher()?;
        let row = self
            .optional(
                None,
                self.q("SELECT sealed FROM tokens WHERE name = $1")
                    .bind(key),
            )
            .await?;
        match row {
            None => Ok(None),
            Some(row) => cipher.open(key, &row.bytes(0)?).map(Some),
        }
    }

    async fn save_token(&self, key: &str, value: &str) -> StoreResult<()> {
        let sealed = self.cipher()?.seal(key, value)?;
        self.exec(
            None,
            self.q(
                "INSERT INTO tokens (name, sealed, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed,
                     updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(sealed)
            .bind(self.now()),
        )
        .await?;
        Ok(())
    }

    async fn close(&self) {
        self.dialect.close().await;
    }

    fn backend(&self) -> Backend {
        D::BACKEND
    }

    fn statements_executed(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    async fn delete_token(&self, key: &str) -> StoreResult<()> {
        self.exec(None, self.q("DELETE FROM tokens WHERE name = $1").bind(key))
            .await?;
        Ok(())
    }

    async fn move_importer(&self, from: &str, to: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let mut taken = 0;
        let mut found = 0;
        for statement in [
            "SELECT COUNT(*) FROM importer_state WHERE importer = $1",
            "SELECT COUNT(*) FROM runs WHERE importer = $1",
            "SELECT COUNT(*) FROM contact_sources WHERE importer = $1",
        ] {
            taken += self
                .one(Some(&mut tx), self.q(statement).bind(to))
                .await?
                .int(0)?;
            found += self
                .one(Some(&mut tx), self.q(statement).bind(from))
                .await?
                .int(0)?;
        }
        if taken > 0 {
            return Err(StoreError::Refused(format!(
                "importer `{to}` has state or history already; nothing was moved"
            )));
        }
        if found == 0 {
            return Err(StoreError::NotFound(format!("state of importer `{from}`")));
        }
        for statement in [
            "UPDATE importer_state SET importer = $1 WHERE importer = $2",
            "UPDATE runs SET importer = $1 WHERE importer = $2",
            "UPDATE contact_sources SET importer = $1 WHERE importer = $2",
            "UPDATE field_values SET importer = $1 WHERE importer = $2",
        ] {
            self.exec(Some(&mut tx), self.q(statement).bind(to).bind(from))
                .await?;
        }
        self.commit(tx).await
    }

    async fn set_next_run(&self, importer: &str, at: Option<DateTime<Utc>>) -> StoreResult<()> {
        self.exec(
            None,
            self.q(
                "INSERT INTO importer_state (importer, next_run_at, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (importer) DO UPDATE SET next_run_at = excluded.next_run_at,
                     updated_at = excluded.updated_at",
            )
            .bind(importer)
            .bind(at)
            .bind(self.now()),
        )
        .await?;
        Ok(())
    }

    async fn set_needs_new_credentials(&self, importer: &str, needed: bool) -> StoreResult<()> {
        self.exec(
            None,
            self.q(
                "INSERT INTO importer_state (importer, needs_new_credentials, updated_at)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (importer) DO UPDATE SET
                     needs_new_credentials = excluded.needs_new_credentials,
                     updated_at = excluded.updated_at",
            )
            .bind(importer)
            .bind(needed)
            .bind(self.now()),
        )
        .await?;
        Ok(())
    }

    async fn config_file_hashes(&self) -> StoreResult<BTreeMap<String, String>> {
        let rows = self
            .all(None, self.q("SELECT path, sha256 FROM config_last_good"))
            .await?;
        rows.iter()
            .map(|row| Ok((row.text(0)?, row.text(1)?)))
            .collect()
    }

    async fn config_file_texts(&self, paths: &[String]) -> StoreResult<Vec<ConfigFileText>> {
        let rows = self
            .all(
                None,
                self.q("SELECT path, sha256, content FROM config_last_good
                     WHERE path = ANY($1) ORDER BY path")
                    .bind(Arg::texts(paths.to_vec())),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ConfigFileText {
                    path: row.text(0)?,
                    sha256: row.text(1)?,
                    text: row.text(2)?,
                })
            })
            .collect()
    }

    async fn save_config_files(
        &self,
        save: &[ConfigFileText],
        forget: &[String],
    ) -> StoreResult<()> {
        if save.is_empty() && forget.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for file in save {
            self.exec(
                Some(&mut tx),
                self.q(
                    "INSERT INTO config_last_good (path, sha256, content, saved_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (path) DO UPDATE SET sha256 = excluded.sha256,
                         content = excluded.content, saved_at = excluded.saved_at",
                )
                .bind(file.path.as_str())
                .bind(file.sha256.as_str())
                .bind(file.text.as_str())
                .bind(self.now()),
            )
            .await?;
        }
        if !forget.is_empty() {
            self.exec(
                Some(&mut tx),
                self.q("DELETE FROM config_last_good WHERE path = ANY($1)")
                    .bind(Arg::texts(forget.to_vec())),
            )
            .await?;
        }
        self.commit(tx).await
    }

    async fn importer_states(&self) -> StoreResult<Vec<ImporterState>> {
        let rows = self
            .all(None, self.q(concat!(select_state!(), "ORDER BY importer")))
            .await?;
        rows.iter().map(state_from_row).collect()
    }

    async fn fields(&self) -> StoreResult<Vec<CustomField>> {
        let rows = self
            .all(
                None,
                self.q(concat!(
                    "SELECT ",
                    field_columns!(),
                    " FROM custom_fields ORDER BY tag"
                )),
            )
            .await?;
        rows.iter().map(field_from_row).collect()
    }

    async fn create_field(
        &self,
        label: &str,
        tag: &str,
        field_type: CustomFieldType,
    ) -> StoreResult<CustomField> {
        validate_tag(tag).map_err(StoreError::Refused)?;
        let row = self
            .optional(
                None,
                self.q(concat!(
                    "INSERT INTO custom_fields (tag, label, field_type, origin, service,
                         locked, created_at, updated_at)
                     VALUES ($1, $2, $3, 'person', NULL, FALSE, $4, $4)
                     ON CONFLICT (tag) DO NOTHING RETURNING ",
                    field_columns!()
                ))
                .bind(tag)
                .bind(label)
                .bind(field_type_str(field_type))
                .bind(self.now()),
            )
            .await?
            .ok_or_else(|| StoreError::Refused(format!("a field with tag `{tag}` exists")))?;
        field_from_row(&row)
    }

    async fn update_field(&self, tag: &str, change: &FieldChange) -> StoreResult<CustomField> {
        let mut tx = self.begin().await?;
        let row = self
            .optional(
                Some(&mut tx),
                self.q(concat!(
                    "SELECT ",
                    field_columns!(),
                    " FROM custom_fields WHERE tag = $1{for_update}"
                ))
                .bind(tag),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("field `{tag}`")))?;
        let field = field_from_row(&row)?;
        let new_tag = change.tag.as_deref().filter(|new| *new != tag);
        if let Some(new_tag) = new_tag {
            if field.locked {
                return Err(StoreError::Refused(format!(
                    "field `{tag}` is used by an import, so its tag is locked and cannot change (its label can)"
                )));
            }
            validate_tag(new_tag).map_err(StoreError::Refused)?;
        }
        let row = self
            .one(
                Some(&mut tx),
                self.q(concat!(
                    "UPDATE custom_fields SET tag = $1, label = $2, updated_at = $3
                     WHERE id = $4 RETURNING ",
                    field_columns!()
                ))
                .bind(new_tag.unwrap_or(tag))
                .bind(change.label.as_deref().unwrap_or(&field.label))
                .bind(self.now())
                .bind(field.id),
            )
            .await
            .map_err(|error| match &error {
                StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    StoreError::Refused(format!(
                        "a field with tag `{}` exists",
                        new_tag.unwrap_or(tag)
                    ))
                }
                _ => error,
            })?;
        let updated = field_from_row(&row)?;
        self.commit(tx).await?;
        Ok(updated)
    }

    async fn contacts(&self, filter: &ContactFilter) -> StoreResult<Vec<ContactView>> {
        let email =
            match &filter.email {
                Some(raw) => Some(normalize_email(raw).ok_or_else(|| {
                    StoreError::Refused(format!("`{raw}` is not an email address"))
                })?),
                None => None,
            };
        if let Some(list) = &filter.list {
            let found = self
                .optional(
                    None,
                    self.q("SELECT id FROM lists WHERE name = $1").bind(list),
                )
                .await?;
            if found.is_none() {
                return Err(StoreError::NotFound(format!("list `{list}`")));
            }
        }
        let rows = self
            .all(
                None,
                self.q(
                    "SELECT id, email, first_name, last_name, phone, organization, status,
                        created_at, updated_at
                     FROM contacts c
                     WHERE (CAST($1 AS TEXT) IS NULL OR c.email = $1)
                       AND (CAST($2 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM memberships m
                            JOIN lists l ON l.id = m.list_id
                            WHERE m.contact_id = c.id AND l.name = $2))
                     ORDER BY c.email LIMIT $3",
                )
                .bind(email)
                .bind(filter.list.as_deref())
                .bind(filter.limit.map_or(i64::MAX, i64::from)),
            )
            .await?;
        let mut contacts = Vec::with_capacity(rows.len());
        let mut position = HashMap::new();
        for row in rows {
            let id = row.int(0)?;
            position.insert(id, contacts.len());
            contacts.push(ContactView {
                id,
                email: row.text(1)?,
                first_name: row.opt_text(2)?,
                last_name: row.opt_text(3)?,
                phone: row.opt_text(4)?,
                organization: row.opt_text(5)?,
                status: ContactStatus::parse(&row.text(6)?)?,
                created_at: row.time(7)?,
                updated_at: row.time(8)?,
                lists: Vec::new(),
                fields: Vec::new(),
                sources: Vec::new(),
            });
        }
        if contacts.is_empty() {
            return Ok(contacts);
        }
        let ids = Arg::ints(contacts.iter().map(|c| c.id).collect());
        let rows = self
            .all(
                None,
                self.q(
                    "SELECT m.contact_id, l.name, m.status, m.subscribed_at, m.unsubscribed_at
                     FROM memberships m JOIN lists l ON l.id = m.list_id
                     WHERE m.contact_id = ANY($1) ORDER BY l.name",
                )
                .bind(ids.clone()),
            )
            .await?;
        for row in rows {
            contacts[position[&row.int(0)?]].lists.push(MembershipView {
                list: row.text(1)?,
                status: MembershipStatus::parse(&row.text(2)?)?,
                subscribed_at: row.opt_time(3)?,
                unsubscribed_at: row.opt_time(4)?,
            });
        }
        let rows = self
            .all(
                None,
                self.q(
                    "SELECT v.contact_id, f.tag, f.label, v.value, v.importer, v.run_id,
                        v.updated_at
                     FROM field_values v JOIN custom_fields f ON f.id = v.field_id
                     WHERE v.contact_id = ANY($1) ORDER BY f.tag",
                )
                .bind(ids.clone()),
            )
            .await?;
        for row in rows {
            contacts[position[&row.int(0)?]]
                .fields
                .push(FieldValueView {
                    tag: row.text(1)?,
                    label: row.text(2)?,
                    value: row.text(3)?,
                    importer: row.opt_text(4)?,
                    run_id: row.opt_int(5)?,
                    updated_at: row.time(6)?,
                });
        }
        let rows = self
            .all(
                None,
                self.q(
                    "SELECT contact_id, importer, external_id, content_hash, written_at,
                        deleted_at
                     FROM contact_sources WHERE contact_id = ANY($1) ORDER BY importer",
                )
                .bind(ids),
            )
            .await?;
        for row in rows {
            contacts[position[&row.int(0)?]].sources.push(SourceView {
                importer: row.text(1)?,
                external_id: row.opt_text(2)?,
                content_hash: row.text(3)?,
                last_written_at: row.time(4)?,
                deleted_at: row.opt_time(5)?,
            });
        }
        Ok(contacts)
    }

    async fn unsubscribe(&self, email: &str, scope: UnsubscribeScope) -> StoreResult<ContactView> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let (contact_id, status) = self.contact_id(&mut tx, email).await?;
        match scope {
            UnsubscribeScope::All => {
                if status != ContactStatus::Unsubscribed {
                    self.exec(
                        Some(&mut tx),
                        self.q(
                            "UPDATE contacts SET status = 'unsubscribed', status_changed_at = $1,
                                 updated_at = $1 WHERE id = $2",
                        )
                        .bind(now)
                        .bind(contact_id),
                    )
                    .await?;
                    let changes =
                        json!({"status": {"old": status.as_str(), "new": "unsubscribed"}});
                    self.person_event(
                        &mut tx,
                        ChangeKind::ContactChanged,
                        contact_id,
                        None,
                        changes,
                    )
                    .await?;
                }
            }
            UnsubscribeScope::List(name) => {
                let list_id = self
                    .optional(
                        Some(&mut tx),
                        self.q("SELECT id FROM lists WHERE name = $1{for_key_share}")
                            .bind(&name),
                    )
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("list `{name}`")))?
                    .int(0)?;
                let old = self
                    .optional(
                        Some(&mut tx),
                        self.q(
                            "SELECT status FROM memberships WHERE list_id = $1 AND contact_id = $2",
                        )
                        .bind(list_id)
                        .bind(contact_id),
                    )
                    .await?
                    .map(|row| row.text(0))
                    .transpose()?;
                if old.as_deref() != Some("unsubscribed") {
                    // The change is the person's: the membership's origin says so from now
                    // on, whoever made it active.
                    self.exec(
                        Some(&mut tx),
                        self.q(
                            "INSERT INTO memberships (list_id, contact_id, status, origin,
                                created_at, subscribed_at, unsubscribed_at, updated_at)
                             VALUES ($1, $2, 'unsubscribed', 'person', $3, NULL, $3, $3)
                             ON CONFLICT (list_id, contact_id) DO UPDATE SET
                                status = 'unsubscribed', origin = 'person',
                                unsubscribed_at = excluded.unsubscribed_at,
                                updated_at = excluded.updated_at",
                        )
                        .bind(list_id)
                        .bind(contact_id)
                        .bind(now),
                    )
                    .await?;
                    let changes =
                        json!({"status": page::change_value(old.as_deref(), "unsubscribed")});
                    self.person_event(
                        &mut tx,
                        ChangeKind::MembershipChanged,
                        contact_id,
                        Some(list_id),
                        changes,
                    )
                    .await?;
                }
            }
        }
        self.commit(tx).await?;
        self.one_contact(email).await
    }

    async fn bounce(&self, email: &str) -> StoreResult<ContactView> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let (contact_id, status) = self.contact_id(&mut tx, email).await?;
        if status == ContactStatus::Normal {
            self.exec(
                Some(&mut tx),
                self.q(
                    "UPDATE contacts SET status = 'bounced', status_changed_at = $1,
                         updated_at = $1 WHERE id = $2",
                )
                .bind(now)
                .bind(contact_id),
            )
            .await?;
            let changes = json!({"status": {"old": status.as_str(), "new": "bounced"}});
            self.person_event(
                &mut tx,
                ChangeKind::ContactChanged,
                contact_id,
                None,
                changes,
            )
            .await?;
        }
        self.commit(tx).await?;
        self.one_contact(email).await
    }

    async fn change_events(&self, after: i64, limit: u32) -> StoreResult<Vec<ChangeEvent>> {
        let rows = self
            .all(
                None,
                self.q(
                    "SELECT id, at, kind, contact_id, email, list_id, origin, notify, importer,
                        run_id, changes
                     FROM change_events WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after)
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ChangeEvent {
                    id: row.int(0)?,
                    at: row.time(1)?,
                    kind: ChangeKind::parse(&row.text(2)?)?,
                    contact_id: row.int(3)?,
                    email: row.text(4)?,
                    list_id: row.opt_int(5)?,
                    origin: ChangeOrigin::parse(&row.text(6)?)?,
                    notify: row.flag(7)?,
                    importer: row.opt_text(8)?,
                    run_id: row.opt_int(9)?,
                    changes: row
                        .opt_json(10)?
                        .ok_or_else(|| StoreError::corrupt("change event", "NULL changes"))?,
                })
            })
            .collect()
    }

    async fn prune(&self, now: DateTime<Utc>) -> StoreResult<PruneCounts> {
        let cutoff = now - chrono_duration(self.retention);
        let mut tx = self.begin().await?;
        let change_events = self
            .exec(
                Some(&mut tx),
                self.q("DELETE FROM change_events WHERE at < $1")
                    .bind(cutoff),
            )
            .await?;
        let runs = self
            .exec(
                Some(&mut tx),
                self.q("DELETE FROM runs WHERE COALESCE(finished_at, started_at) < $1")
                    .bind(cutoff),
            )
            .await?;
        self.exec(
            Some(&mut tx),
            self.q("DELETE FROM page_commits WHERE committed_at < $1")
                .bind(cutoff),
        )
        .await?;
        self.commit(tx).await?;
        Ok(PruneCounts {
            change_events,
            runs,
        })
    }
}
