//! The SQLite backend: one file (WAL, `synchronous = NORMAL`, created owner-only), a small
//! pool, every write transaction started with `BEGIN IMMEDIATE` so that a transaction
//! never has to upgrade a read lock (which SQLite may refuse with `SQLITE_BUSY` at once).
//!
//! Pages are written set-based: each insert statement takes 250 rows of bound values as a
//! multi-row `VALUES` (a short last chunk padded with NULL rows), so its SQL text is fixed
//! (prepared once per connection), a page costs one execution per 250 rows of a table, and
//! the 32,766 bind-parameter limit is never approached; lookups receive their keys as one
//! JSON array unpacked with `jsonb_each`. Times are stored as fixed-width UTC text so
//! that text order is time order. Page writes run with foreign keys off on a connection
//! they keep, and WAL checkpoints run beside them; see `write_page` and
//! `spawn_checkpointer`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, SqliteConnection, Transaction};

use super::crypto::{TokenCipher, create_owner_only, default_key_path, read_or_create_key_file};
use super::lease::{LeaseHolder, held_by_dead_process};
use super::migrate::{self, Migration};
use super::page::{self, ExistingContact};
use super::{
    Backend, ChangeEvent, ChangeKind, ChangeOrigin, ContactFilter, ContactStatus, ContactView,
    CustomField, FieldChange, FieldOrigin, FieldValueView, ImporterState, Lease, MembershipStatus,
    MembershipView, PruneCounts, RunCounts, RunOutcome, RunRecord, SourceView, Store, StoreError,
    StoreOptions, StoreResult, UnsubscribeScope, field_type_from_str, field_type_str, phase_of,
    validate_tag,
};
use crate::model::{
    Checkpoint, CustomFieldDef, CustomFieldType, FieldBinding, PageOutcome, PageWrite,
    normalize_email,
};

type Query = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

/// How often `finish_run` prunes old history by itself.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The SQLite store.
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    cipher: Option<TokenCipher>,
    holder: LeaseHolder,
    retention: Duration,
    statements: AtomicU64,
    last_prune: Mutex<Option<Instant>>,
    lease_ttls: Mutex<HashMap<(String, i64), Duration>>,
    /// Wakes the checkpointer after a write; `close` drops it, which ends the
    /// checkpointer with a last `TRUNCATE`.
    checkpoints: Mutex<Option<tokio::sync::mpsc::Sender<()>>>,
    /// The checkpointer, awaited by `close`.
    checkpointer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The connection page writes keep between them (see `write_page`).
    writer: tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<Sqlite>>>,
    /// Held by the checkpointer during a pass (see `start_wal_over_if_large`).
    checkpoint_passes: std::sync::Arc<tokio::sync::Mutex<()>>,
    wal_path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Fixed-width UTC text.
pub(crate) fn ts(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn opt_ts(time: Option<DateTime<Utc>>) -> Option<String> {
    time.map(ts)
}

fn parse_ts(text: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| StoreError::Other(format!("bad time `{text}` in store: {error}")))
}

fn parse_opt_ts(text: Option<String>) -> StoreResult<Option<DateTime<Utc>>> {
    text.as_deref().map(parse_ts).transpose()
}

/// What the WAL file is cut back to after a checkpoint (`PRAGMA journal_size_limit`).
const WAL_KEEP_BYTES: &str = "16777216";

/// A WAL file larger than this is started over by the next page write (see
/// `start_wal_over_if_large`).
const WAL_RESET_BYTES: u64 = 64 * 1024 * 1024;

/// A WAL file larger than this is checkpointed by the writer itself, waiting for readers
/// (see `checkpoint_after_write`).
const WAL_FORCE_BYTES: u64 = 512 * 1024 * 1024;

/// How often the checkpointer runs when nothing wakes it.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// The WAL file SQLite keeps beside `path`.
fn wal_path_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Starts the task that copies the WAL back into the database file: woken after every
/// page write (wakes while it runs are merged into one) and every `CHECKPOINT_EVERY`.
/// `PASSIVE` never waits for a reader or blocks a writer, so page writes go on while it
/// copies. When its sender is dropped (`close`, or the store dropped) it makes a last
/// `TRUNCATE` checkpoint and ends.
fn spawn_checkpointer(
    connect: SqliteConnectOptions,
    passes: std::sync::Arc<tokio::sync::Mutex<()>>,
) -> (tokio::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (wake, mut woken) = tokio::sync::mpsc::channel::<()>(1);
    let task = tokio::spawn(async move {
        let mut conn = match sqlx::SqliteConnection::connect_with(&connect).await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "The WAL checkpointer could not connect; the WAL is checkpointed only by writers once it passes 64 MiB.");
                return;
            }
        };
        let checkpoint = async |conn: &mut sqlx::SqliteConnection, mode: &'static str| {
            let _pass = passes.lock().await;
            if let Err(error) = sqlx::query(mode).execute(&mut *conn).await {
                tracing::warn!(%error, "WAL checkpoint failed; trying again after the next write.");
            }
        };
        // Woken, or `CHECKPOINT_EVERY` passed: a pass. The sender dropped: the last one.
        while !matches!(
            tokio::time::timeout(CHECKPOINT_EVERY, woken.recv()).await,
            Ok(None)
        ) {
            checkpoint(&mut conn, "PRAGMA wal_checkpoint(PASSIVE)").await;
        }
        checkpoint(&mut conn, "PRAGMA wal_checkpoint(TRUNCATE)").await;
        let _ = conn.close().await;
    });
    (wake, task)
}

/// A pooled connection with foreign keys switched off for a page write: closed instead
/// of returned to the pool unless they were switched back on.
struct ForeignKeysOff {
    conn: Option<sqlx::pool::PoolConnection<Sqlite>>,
    restored: bool,
}

impl Drop for ForeignKeysOff {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.conn
            && !self.restored
        {
            conn.close_on_drop();
        }
    }
}

/// `PRAGMA cache_size` of each store connection: negative means KiB (8 MiB), not pages.
const CACHE_SIZE: &str = "-8192";

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|error| StoreError::Other(error.to_string()))
}

/// Rows per execution of a page write's insert statements. Each statement's text holds
/// exactly this many `VALUES` rows, a short last chunk padded with NULL rows that its
/// `WHERE` drops, so each is prepared once per connection and a write costs one
/// execution per 250 rows of a table, never one per record. 250 rows of at most 7
/// columns stay far below SQLite's 32,766 bind parameters.
///
/// Bound values replaced rows packed into one JSON array per statement and unpacked with
/// `jsonb_each` and `->>`: SQLite parsed every batch from text and spent about a
/// thousand instructions per column read, a quarter of a first import's instructions
/// (callgrind), where binding a value costs a fraction of that.
const BATCH_ROWS: usize = 250;

/// `template` with `{rows}` replaced by `BATCH_ROWS` rows of `columns` parameters.
///
/// Every parameter of a batched statement is an anonymous `?`, bound in text order (the
/// values shared by all rows come first, in a one-row subquery `k`): for a numbered
/// parameter, `sqlite3_bind_parameter_name` (which sqlx calls for every parameter)
/// scans the statement's list of names, which made binding quadratic in the row count.
fn batched_sql(template: &str, columns: usize) -> String {
    let mut row = String::from("(?");
    for _ in 1..columns {
        row.push_str(", ?");
    }
    row.push(')');
    let rows = vec![row; BATCH_ROWS].join(", ");
    template.replace("{rows}", &rows)
}

/// Binds a contact row's columns after its id, if any: email, names, phone,
/// organization, status (the column order of both contact statements).
fn bind_contact(query: Query, record: &page::MergedRecord, row: &page::ContactRow) -> Query {
    query
        .bind(record.email.clone())
        .bind(record.first_name.clone())
        .bind(record.last_name.clone())
        .bind(record.phone.clone())
        .bind(record.organization.clone())
        .bind(row.status.as_str())
}

/// A page write's batched statement: its template (see `batched_sql`) and row width;
/// the SQL text is built once per process, on first use.
struct Batched {
    template: &'static str,
    columns: usize,
    sql: std::sync::OnceLock<String>,
}

impl Batched {
    const fn new(template: &'static str, columns: usize) -> Self {
        Batched {
            template,
            columns,
            sql: std::sync::OnceLock::new(),
        }
    }

    fn sql(&'static self) -> &'static str {
        self.sql
            .get_or_init(|| batched_sql(self.template, self.columns))
    }
}

/// New contacts, with the ids the write assigned. Shared: now.
static INSERT_NEW_CONTACTS: Batched = Batched::new(
    "INSERT INTO contacts (id, email, first_name, last_name, phone, organization,
        status, status_changed_at, created_at, updated_at)
     SELECT column1, column2, column3, column4, column5, column6, column7,
        CASE WHEN column7 <> 'normal' THEN k.now END, k.now, k.now
     FROM (SELECT ? AS now) k, (VALUES {rows}) WHERE column1 IS NOT NULL",
    7,
);

/// Contacts that exist, merged field by field. Shared: now.
static UPSERT_CONTACTS: Batched = Batched::new(
    "INSERT INTO contacts (email, first_name, last_name, phone, organization,
        status, status_changed_at, created_at, updated_at)
     SELECT column1, column2, column3, column4, column5, column6,
        CASE WHEN column6 <> 'normal' THEN k.now END, k.now, k.now
     FROM (SELECT ? AS now) k, (VALUES {rows}) WHERE column1 IS NOT NULL
     ON CONFLICT (email) DO UPDATE SET
        first_name = COALESCE(excluded.first_name, contacts.first_name),
        last_name = COALESCE(excluded.last_name, contacts.last_name),
        phone = COALESCE(excluded.phone, contacts.phone),
        organization = COALESCE(excluded.organization, contacts.organization),
        status = CASE WHEN contacts.status = 'normal'
                       AND excluded.status = 'bounced'
                      THEN 'bounced' ELSE contacts.status END,
        status_changed_at = CASE WHEN contacts.status = 'normal'
                       AND excluded.status = 'bounced'
                      THEN excluded.updated_at ELSE contacts.status_changed_at END,
        updated_at = excluded.updated_at",
    6,
);

/// Source rows. Shared: importer, list, run, now.
static UPSERT_SOURCES: Batched = Batched::new(
    "INSERT INTO contact_sources (importer, contact_id, external_id, content_hash,
        list_id, run_id, first_seen_at, written_at, deleted_at)
     SELECT k.importer, column1, column2, column3, k.list, k.run, k.now, k.now, NULL
     FROM (SELECT ? AS importer, ? AS list, ? AS run, ? AS now) k, (VALUES {rows})
     WHERE column1 IS NOT NULL
     ON CONFLICT (importer, contact_id) DO UPDATE SET
        external_id = COALESCE(excluded.external_id, contact_sources.external_id),
        content_hash = excluded.content_hash, list_id = excluded.list_id,
        run_id = excluded.run_id, written_at = excluded.written_at,
        deleted_at = NULL",
    3,
);

/// Memberships. Shared: list, now. The rules are enforced here too, not only in the
/// plan: a contact bounced or unsubscribed concurrently is never made active, an
/// unsubscribed membership never re-activated.
static UPSERT_MEMBERSHIPS: Batched = Batched::new(
    "INSERT INTO memberships (list_id, contact_id, status, origin, created_at,
        subscribed_at, unsubscribed_at, updated_at)
     SELECT k.list, c.id, v.column2, 'import', k.now,
        CASE WHEN v.column2 = 'active' THEN k.now END,
        CASE WHEN v.column2 = 'unsubscribed' THEN k.now END, k.now
     FROM (SELECT ? AS list, ? AS now) k, (VALUES {rows}) v
     JOIN contacts c ON c.id = v.column1
     WHERE v.column2 = 'unsubscribed' OR c.status = 'normal'
     ON CONFLICT (list_id, contact_id) DO UPDATE SET
        status = 'unsubscribed', unsubscribed_at = excluded.updated_at,
        updated_at = excluded.updated_at
     WHERE excluded.status = 'unsubscribed' AND memberships.status = 'active'",
    2,
);

/// Custom field values. Shared: importer, run, now.
static UPSERT_VALUES: Batched = Batched::new(
    "INSERT INTO field_values (contact_id, field_id, value, importer, run_id,
        updated_at)
     SELECT column1, column2, column3, k.importer, k.run, k.now
     FROM (SELECT ? AS importer, ? AS run, ? AS now) k, (VALUES {rows})
     WHERE column1 IS NOT NULL
     ON CONFLICT (contact_id, field_id) DO UPDATE SET value = excluded.value,
        importer = excluded.importer, run_id = excluded.run_id,
        updated_at = excluded.updated_at",
    3,
);

/// Change events, in the plan's order (rows are inserted in `VALUES` order, so ids
/// follow it). Shared: now, importer, run. The changes are the plan's JSON text,
/// stored as it is.
static INSERT_EVENTS: Batched = Batched::new(
    "INSERT INTO change_events (at, kind, contact_id, email, list_id, origin, notify,
        importer, run_id, changes)
     SELECT k.now, column1, column2, column3, column4, 'import', 0, k.importer, k.run,
        column5
     FROM (SELECT ? AS now, ? AS importer, ? AS run) k, (VALUES {rows})
     WHERE column1 IS NOT NULL",
    5,
);

/// The file path a `sqlite:` URL names.
pub fn path_of_url(url: &str) -> StoreResult<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return Err(StoreError::Other(String::from(
            "an SQLite store needs a file path: `sqlite://PATH`",
        )));
    }
    Ok(PathBuf::from(path))
}

impl SqliteStore {
    /// Opens (creating if needed, owner-only) and migrates the store at `url`.
    pub async fn open(url: &str, options: StoreOptions) -> StoreResult<Self> {
        let path = path_of_url(url)?;
        create_file_owner_only(&path)?;
        let key = match (&options.encryption_key, options.keep_tokens) {
            (_, false) => None,
            (Some(source), true) => Some(TokenCipher::load(source)?),
            (None, true) => Some(TokenCipher::from_material(&read_or_create_key_file(
                &default_key_path(&path),
            )?)?),
        };
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // 8 MiB of page cache (SQLite's default is 2 MiB) per connection, allocated
            // only as pages are read: a page write updates indexes at random email keys,
            // and with the default cache each page re-read most of their B-tree pages from
            // the OS. Not more: writes rotate through the pool's connections, and an
            // incremental run at 1,000,000 contacts filled four 16 MiB caches with random
            // pages (peak RSS 109 MiB, over the 100 MiB the daemon is allowed).
            .pragma("cache_size", CACHE_SIZE)
            // Checkpoints run on a connection of their own (see `spawn_checkpointer`),
            // not inside whichever commit crosses SQLite's 1,000-page threshold: there
            // they were 15 % of a first import's CPU, all of it on the writer's path.
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", WAL_KEEP_BYTES);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.unwrap_or(4))
            .connect_with(connect.clone())
            .await?;
        let checkpoint_passes = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        // Checkpoints copy WAL frames straight to the file; the page cache is not used.
        let (checkpoints, checkpointer) = spawn_checkpointer(
            connect.pragma("cache_size", "-1024"),
            std::sync::Arc::clone(&checkpoint_passes),
        );
        let store = SqliteStore {
            pool,
            wal_path: wal_path_of(&path),
            path,
            cipher: key,
            holder: options.lease_holder,
            retention: options.retention,
            statements: AtomicU64::new(0),
            last_prune: Mutex::new(None),
            lease_ttls: Mutex::new(HashMap::new()),
            checkpoints: Mutex::new(Some(checkpoints)),
            checkpointer: tokio::sync::Mutex::new(Some(checkpointer)),
            checkpoint_passes,
            writer: tokio::sync::Mutex::new(None),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection pool, for checks of its settings (tests, diagnostics); writes go
    /// through the trait so that the rules apply.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Lets the next write start the WAL over once it has grown past `WAL_RESET_BYTES`.
    /// SQLite starts it over only when a write begins after every frame was copied; the
    /// checkpointer copies each commit's frames while the writer already prepares the
    /// next, so with a writer that never pauses (an import) that moment never comes and
    /// the WAL grows as large as the import. Here the writer waits for the checkpointer's
    /// pass to end (a few milliseconds) and copies what is left itself, about once per
    /// 64 MiB of WAL.
    ///
    /// Never fails the write: a checkpoint that could not be made now (another process
    /// checkpointing, say) is made by a later one.
    async fn start_wal_over_if_large(&self) {
        let wal_bytes = std::fs::metadata(&self.wal_path).map_or(0, |m| m.len());
        if wal_bytes > WAL_RESET_BYTES {
            let _pass = self.checkpoint_passes.lock().await;
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await
            {
                tracing::warn!(%error, "WAL checkpoint failed; trying again before the next write.");
            }
        }
    }

    /// The page write itself, on `conn` (see `write_page`).
    async fn write_page_on(
        &self,
        conn: &mut SqliteConnection,
        page: PageWrite<'_>,
    ) -> StoreResult<PageOutcome> {
        let prepared = page::prepare(&page);
        let now = Utc::now();
        let now_text = ts(now);
        self.statements.fetch_add(1, Ordering::Relaxed);
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        self.check_lease(&mut tx, page.importer, page.fencing_token, now)
            .await?;

        // Foreign keys are off in this transaction (see `write_page`). The contact ids it
        // writes come from this transaction; the two references a page brings from
        // outside, its list and its fields, are checked here once instead of per row.
        let mut field_ids: Vec<i64> = page.fields.iter().map(|f| f.field_id).collect();
        field_ids.sort_unstable();
        field_ids.dedup();
        let references_exist: bool = self
            .q("SELECT EXISTS (SELECT 1 FROM lists WHERE id = ?1)
                  AND (SELECT COUNT(*) FROM custom_fields
                       WHERE id IN (SELECT value FROM json_each(?2))) = ?3")
            .bind(page.list_id)
            .bind(to_json(&field_ids)?)
            .bind(field_ids.len() as i64)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if !references_exist {
            return Err(StoreError::Other(format!(
                "importer `{}` wrote a page for a list or custom field that is not in the store",
                page.importer
            )));
        }

        // What the store holds for the page's emails (one statement).
        let mut existing: HashMap<String, ExistingContact> = HashMap::new();
        if !prepared.records.is_empty() {
            // In email order: the index probes then walk the email index forwards instead
            // of jumping around it, which matters when its pages are not cached yet.
            let mut emails: Vec<&str> = prepared.records.iter().map(|r| r.email.as_str()).collect();
            emails.sort_unstable();
            let rows = self
                .q(
                    "SELECT c.email, c.id, c.first_name, c.last_name, c.phone, c.organization,
                        c.status, s.content_hash, s.list_id, s.deleted_at IS NOT NULL, m.status
                     FROM jsonb_each(?1) j
                     JOIN contacts c ON c.email = j.value
                     LEFT JOIN contact_sources s ON s.importer = ?2 AND s.contact_id = c.id
                     LEFT JOIN memberships m ON m.list_id = ?3 AND m.contact_id = c.id",
                )
                .bind(to_json(&emails)?)
                .bind(page.importer)
                .bind(page.list_id)
                .fetch_all(&mut *tx)
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
        if !candidates.is_empty() && !page.fields.is_empty() {
            let field_ids: Vec<i64> = page.fields.iter().map(|f| f.field_id).collect();
            let rows = self
                .q("SELECT v.contact_id, v.field_id, v.value
                     FROM jsonb_each(?1) j
                     JOIN field_values v ON v.contact_id = j.value
                     WHERE v.field_id IN (SELECT value FROM json_each(?2))")
                .bind(to_json(&candidates)?)
                .bind(to_json(&field_ids)?)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                values.insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
            }
        }

        let plan = page::plan_page(&page, &prepared, &existing, &values);
        let mut ids: Vec<Option<i64>> = prepared
            .records
            .iter()
            .map(|r| existing.get(&r.email).map(|e| e.contact_id))
            .collect();

        // New contacts get their ids here (the next after the largest, as SQLite would
        // pick them) and go in with a plain INSERT; only contacts that exist are upserted.
        // `BEGIN IMMEDIATE` holds the write lock since the snapshot above was read, so no
        // other writer can have added one of these emails meanwhile (if it had, the
        // INSERT would fail the page, never write a wrong id). Without this, every row
        // came back through `RETURNING` and a lookup by email.
        let (created, changed): (Vec<_>, Vec<_>) = plan
            .contacts
            .iter()
            .partition(|row| ids[row.contact].is_none());
        if !created.is_empty() {
            let first_id: i64 = self
                .q("SELECT COALESCE(MAX(id), 0) + 1 FROM contacts")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            for (offset, row) in created.iter().enumerate() {
                ids[row.contact] = Some(first_id + offset as i64);
            }
            self.execute_batched(
                &mut tx,
                &INSERT_NEW_CONTACTS,
                &created,
                |q| q.bind(now_text.clone()),
                |q, row| {
                    bind_contact(
                        q.bind(ids[row.contact]),
                        &prepared.records[row.contact],
                        row,
                    )
                },
            )
            .await?;
        }
        if !changed.is_empty() {
            self.execute_batched(
                &mut tx,
                &UPSERT_CONTACTS,
                &changed,
                |q| q.bind(now_text.clone()),
                |q, row| bind_contact(q, &prepared.records[row.contact], row),
            )
            .await?;
        }
        let id_of = |index: usize| -> StoreResult<i64> {
            ids[index].ok_or_else(|| {
                StoreError::Other(format!(
                    "contact `{}` has no id after the upsert",
                    prepared.records[index].email
                ))
            })
        };

        // Rows in key order, in every batch below: B-tree pages are then visited once
        // each, in order.
        if !plan.sources.is_empty() {
            let mut rows = plan
                .sources
                .iter()
                .map(|&i| Ok((id_of(i)?, i)))
                .collect::<StoreResult<Vec<_>>>()?;
            rows.sort_unstable();
            self.execute_batched(
                &mut tx,
                &UPSERT_SOURCES,
                &rows,
                |q| {
                    q.bind(page.importer.to_string())
                        .bind(page.list_id)
                        .bind(page.run_id)
                        .bind(now_text.clone())
                },
                |q, &(id, i)| {
                    let r = &prepared.records[i];
                    q.bind(id)
                        .bind(r.external_id.clone())
                        .bind(r.content_hash.clone())
                },
            )
            .await?;
        }

        if !plan.memberships.is_empty() {
            let mut rows = plan
                .memberships
                .iter()
                .map(|m| Ok((id_of(m.contact)?, m.status.as_str())))
                .collect::<StoreResult<Vec<_>>>()?;
            rows.sort_unstable_by_key(|row| row.0);
            self.execute_batched(
                &mut tx,
                &UPSERT_MEMBERSHIPS,
                &rows,
                |q| q.bind(page.list_id).bind(now_text.clone()),
                |q, &(id, status)| q.bind(id).bind(status),
            )
            .await?;
        }

        if !plan.values.is_empty() {
            let mut rows = plan
                .values
                .iter()
                .map(|v| Ok((id_of(v.contact)?, v.field_id, v)))
                .collect::<StoreResult<Vec<_>>>()?;
            rows.sort_unstable_by_key(|row| (row.0, row.1));
            self.execute_batched(
                &mut tx,
                &UPSERT_VALUES,
                &rows,
                |q| {
                    q.bind(page.importer.to_string())
                        .bind(page.run_id)
                        .bind(now_text.clone())
                },
                |q, &(id, field_id, v)| q.bind(id).bind(field_id).bind(v.value.clone()),
            )
            .await?;
        }

        if !plan.events.is_empty() {
            let rows = plan
                .events
                .iter()
                .map(|e| Ok((id_of(e.contact)?, e)))
                .collect::<StoreResult<Vec<_>>>()?;
            self.execute_batched(
                &mut tx,
                &INSERT_EVENTS,
                &rows,
                |q| {
                    q.bind(now_text.clone())
                        .bind(page.importer.to_string())
                        .bind(page.run_id)
                },
                |q, &(id, e)| {
                    q.bind(e.kind.as_str())
                        .bind(id)
                        .bind(prepared.records[e.contact].email.clone())
                        .bind(e.list_id)
                        .bind(e.changes.clone())
                },
            )
            .await?;
        }

        let mut outcome = plan.outcome;
        if !page.deleted_external_ids.is_empty() {
            let done = self
                .q("UPDATE contact_sources SET deleted_at = ?1
                     WHERE importer = ?2 AND deleted_at IS NULL
                       AND external_id IN (SELECT value FROM json_each(?3))")
                .bind(&now_text)
                .bind(page.importer)
                .bind(to_json(&page.deleted_external_ids)?)
                .execute(&mut *tx)
                .await?;
            outcome.deleted = done.rows_affected();
        }

        self.save_state(&mut tx, page.importer, page.checkpoint, now)
            .await?;
        self.q(
            "UPDATE runs SET pages = pages + 1, created = created + ?1, updated = updated + ?2,
                unchanged = unchanged + ?3, field_failures = field_failures + ?4,
                deleted = deleted + ?5
             WHERE id = ?6",
        )
        .bind(outcome.created as i64)
        .bind(outcome.updated as i64)
        .bind(outcome.unchanged as i64)
        .bind(outcome.field_failures as i64)
        .bind(outcome.deleted as i64)
        .bind(page.run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }

    /// Wakes the checkpointer; when the WAL has grown past `WAL_FORCE_BYTES` anyway (the
    /// checkpointer can only copy what no reader still needs, so a reader that never
    /// pauses could let it grow without bound), checkpoints here, waiting for readers.
    ///
    /// Never fails the write: it runs after the commit, and a checkpoint that could not
    /// be made now is made by a later one.
    async fn checkpoint_after_write(&self) {
        if let Ok(wake) = self.checkpoints.lock()
            && let Some(wake) = wake.as_ref()
        {
            let _ = wake.try_send(());
        }
        let wal_bytes = std::fs::metadata(&self.wal_path).map_or(0, |m| m.len());
        if wal_bytes > WAL_FORCE_BYTES {
            tracing::info!(
                wal_bytes,
                "The WAL outgrew its checkpoints; checkpointing now, waiting for readers."
            );
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                .execute(&self.pool)
                .await
            {
                tracing::warn!(%error, "WAL checkpoint failed; trying again after the next write.");
            }
        }
    }

    fn q(&self, sql: &'static str) -> Query {
        self.statements.fetch_add(1, Ordering::Relaxed);
        sqlx::query(sql)
    }

    /// Runs `statement` once per `BATCH_ROWS` of `rows`: `fixed` binds the parameters
    /// before the rows, `row` one row's columns; a short last chunk is padded with NULLs.
    async fn execute_batched<T>(
        &self,
        conn: &mut SqliteConnection,
        statement: &'static Batched,
        rows: &[T],
        fixed: impl Fn(Query) -> Query,
        row: impl Fn(Query, &T) -> Query,
    ) -> StoreResult<()> {
        for chunk in rows.chunks(BATCH_ROWS) {
            let mut query = fixed(self.q(statement.sql()));
            for item in chunk {
                query = row(query, item);
            }
            for _ in 0..(BATCH_ROWS - chunk.len()) * statement.columns {
                query = query.bind(None::<i64>);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn commit(&self, tx: Transaction<'static, Sqlite>) -> StoreResult<()> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        Ok(tx.commit().await?)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        self.q("CREATE TABLE IF NOT EXISTS tributary_schema (
                version INTEGER PRIMARY KEY,
                description TEXT NOT NULL,
                checksum TEXT NOT NULL,
                applied_at TEXT NOT NULL
            )")
            .execute(&mut *conn)
            .await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM tributary_schema")
            .fetch_one(&mut *tx)
            .await?;
        let current = current.unwrap_or(0);
        let supported = migrate::latest(migrate::SQLITE);
        if current > supported {
            return Err(StoreError::TooNew {
                found: current,
                supported,
            });
        }
        let pending: Vec<&Migration> = migrate::SQLITE
            .iter()
            .filter(|migration| migration.version > current)
            .collect();
        for migration in pending {
            sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO tributary_schema (version, description, checksum, applied_at)
                 VALUES (?, ?, ?, ?)",
            )
            .bind(migration.version)
            .bind(migration.description)
            .bind(migrate::checksum(migration))
            .bind(ts(Utc::now()))
            .execute(&mut *tx)
            .await?;
            tracing::info!(
                version = migration.version,
                description = migration.description,
                "Applied store migration."
            );
        }
        tx.commit().await?;
        Ok(())
    }

    /// Checks the lease inside the page's transaction and extends it by its lifetime.
    async fn check_lease(
        &self,
        tx: &mut SqliteConnection,
        importer: &str,
        token: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let extend_to = self
            .lease_ttls
            .lock()
            .map_err(|_| StoreError::Other(String::from("lease table poisoned")))?
            .get(&(importer.to_string(), token))
            .map(|ttl| super::chrono_duration(*ttl))
            .map_or(now, |ttl| now + ttl);
        let done = self
            .q("UPDATE leases SET expires_at = MAX(expires_at, ?1)
                 WHERE importer = ?2 AND fencing_token = ?3 AND owner <> '' AND expires_at > ?4")
            .bind(ts(extend_to))
            .bind(importer)
            .bind(token)
            .bind(ts(now))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LeaseLost {
                importer: importer.to_string(),
            });
        }
        Ok(())
    }

    async fn save_state(
        &self,
        tx: &mut SqliteConnection,
        importer: &str,
        checkpoint: &Checkpoint,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let position = checkpoint.position.as_ref().map(to_json).transpose()?;
        self.q(
            "INSERT INTO importer_state (importer, watermark, position, pass_high_water,
                 fingerprint, full_refresh, pass_started_at, last_full_refresh, phase, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (importer) DO UPDATE SET
                 watermark = excluded.watermark, position = excluded.position,
                 pass_high_water = excluded.pass_high_water, fingerprint = excluded.fingerprint,
                 full_refresh = excluded.full_refresh, pass_started_at = excluded.pass_started_at,
                 last_full_refresh = excluded.last_full_refresh, phase = excluded.phase,
                 updated_at = excluded.updated_at",
        )
        .bind(importer)
        .bind(opt_ts(checkpoint.watermark))
        .bind(position)
        .bind(opt_ts(checkpoint.pass_high_water))
        .bind(checkpoint.fingerprint.as_deref())
        .bind(checkpoint.full_refresh)
        .bind(opt_ts(checkpoint.pass_started_at))
        .bind(opt_ts(checkpoint.last_full_refresh))
        .bind(phase_of(checkpoint))
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    fn cipher(&self) -> StoreResult<&TokenCipher> {
        self.cipher.as_ref().ok_or_else(|| {
            StoreError::Other(String::from(
                "this process keeps no tokens (opened without an encryption key)",
            ))
        })
    }

    async fn contact_id(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        email: &str,
    ) -> StoreResult<(i64, ContactStatus)> {
        let normalized = normalize_email(email)
            .ok_or_else(|| StoreError::Refused(format!("`{email}` is not an email address")))?;
        let row = self
            .q("SELECT id, status FROM contacts WHERE email = ?")
            .bind(&normalized)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("contact `{normalized}`")))?;
        Ok((row.try_get(0)?, ContactStatus::parse(row.try_get(1)?)?))
    }

    #[allow(clippy::too_many_arguments)]
    async fn person_event(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        kind: ChangeKind,
        contact_id: i64,
        list_id: Option<i64>,
        changes: Value,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.q(
            "INSERT INTO change_events (at, kind, contact_id, email, list_id, origin, notify,
                 importer, run_id, changes)
             SELECT ?1, ?2, id, email, ?3, 'person', 0, NULL, NULL, ?4 FROM contacts WHERE id = ?5",
        )
        .bind(ts(now))
        .bind(kind.as_str())
        .bind(list_id)
        .bind(to_json(&changes)?)
        .bind(contact_id)
        .execute(&mut **tx)
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

    fn maybe_prune_due(&self) -> bool {
        let Ok(mut last) = self.last_prune.lock() else {
            return false;
        };
        let due = last.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

fn create_file_owner_only(path: &Path) -> StoreResult<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::create_dir_all(parent).map_err(|error| {
            StoreError::Other(format!("creating directory {}: {error}", parent.display()))
        })?;
    }
    match create_owner_only(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::Other(format!(
            "creating store {}: {error}",
            path.display()
        ))),
    }
}

fn field_from_row(row: &SqliteRow) -> StoreResult<CustomField> {
    Ok(CustomField {
        id: row.try_get("id")?,
        tag: row.try_get("tag")?,
        label: row.try_get("label")?,
        field_type: field_type_from_str(row.try_get("field_type")?)?,
        origin: FieldOrigin::parse(row.try_get("origin")?)?,
        service: row.try_get("service")?,
        locked: row.try_get("locked")?,
    })
}

fn state_from_row(row: &SqliteRow) -> StoreResult<ImporterState> {
    let position: Option<String> = row.try_get("position")?;
    let position = position
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|error| StoreError::Other(format!("bad position in store: {error}")))?;
    Ok(ImporterState {
        importer: row.try_get("importer")?,
        checkpoint: Checkpoint {
            watermark: parse_opt_ts(row.try_get("watermark")?)?,
            position,
            pass_high_water: parse_opt_ts(row.try_get("pass_high_water")?)?,
            fingerprint: row.try_get("fingerprint")?,
            full_refresh: row.try_get("full_refresh")?,
            pass_started_at: parse_opt_ts(row.try_get("pass_started_at")?)?,
            last_full_refresh: parse_opt_ts(row.try_get("last_full_refresh")?)?,
        },
        last_run_at: parse_opt_ts(row.try_get("last_run_at")?)?,
        next_run_at: parse_opt_ts(row.try_get("next_run_at")?)?,
        last_error: row.try_get("last_error")?,
        needs_new_credentials: row.try_get("needs_new_credentials")?,
    })
}

fn run_from_row(row: &SqliteRow) -> StoreResult<RunRecord> {
    let outcome: Option<String> = row.try_get("outcome")?;
    let count = |name: &str| -> StoreResult<u64> { Ok(row.try_get::<i64, _>(name)?.max(0) as u64) };
    Ok(RunRecord {
        run_id: row.try_get("id")?,
        importer: row.try_get("importer")?,
        started_at: parse_ts(row.try_get("started_at")?)?,
        finished_at: parse_opt_ts(row.try_get("finished_at")?)?,
        outcome: outcome
            .as_deref()
            .map(super::run_outcome_from_str)
            .transpose()?,
        counts: RunCounts {
            pages: count("pages")?,
            fetched: count("fetched")?,
            created: count("created")?,
            updated: count("updated")?,
            unchanged: count("unchanged")?,
            skipped: count("skipped")?,
            field_failures: count("field_failures")?,
            deleted: count("deleted")?,
        },
        error: row.try_get("error")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_list(&self, name: &str) -> StoreResult<i64> {
        let id: i64 = self
            .q("INSERT INTO lists (name, created_at) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id")
            .bind(name)
            .bind(ts(Utc::now()))
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(id)
    }

    async fn ensure_custom_fields(
        &self,
        defs: &[CustomFieldDef],
    ) -> StoreResult<Vec<FieldBinding>> {
        let now = ts(Utc::now());
        let mut tx = self.begin().await?;
        let mut bindings = Vec::with_capacity(defs.len());
        for def in defs {
            let row = self
                .q(
                    "INSERT INTO custom_fields (tag, label, field_type, origin, service, locked,
                         created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'import', ?4, 1, ?5, ?5)
                     ON CONFLICT (tag) DO UPDATE SET
                         locked = 1,
                         updated_at = CASE WHEN custom_fields.locked THEN custom_fields.updated_at
                                           ELSE excluded.updated_at END
                     RETURNING id, field_type",
                )
                .bind(&def.tag)
                .bind(&def.label)
                .bind(field_type_str(def.field_type))
                .bind(&def.service)
                .bind(&now)
                .fetch_one(&mut *tx)
                .await?;
            bindings.push(FieldBinding {
                field_id: row.try_get(0)?,
                tag: def.tag.clone(),
                stored_type: field_type_from_str(row.try_get(1)?)?,
            });
        }
        self.commit(tx).await?;
        Ok(bindings)
    }

    async fn acquire_lease(&self, importer: &str, ttl: Duration) -> StoreResult<Option<Lease>> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let row = self
            .q("SELECT owner, fencing_token, expires_at FROM leases WHERE importer = ?")
            .bind(importer)
            .fetch_optional(&mut *tx)
            .await?;
        let token = match row {
            None => 1,
            Some(row) => {
                let owner: String = row.try_get(0)?;
                let token: i64 = row.try_get(1)?;
                let expires_at = parse_ts(row.try_get(2)?)?;
                let free = owner.is_empty()
                    || expires_at <= now
                    || held_by_dead_process(&owner, &self.holder.host);
                if !free {
                    return Ok(None);
                }
                token + 1
            }
        };
        let owner = self.holder.new_owner();
        let expires_at = now + super::chrono_duration(ttl);
        self.q(
            "INSERT INTO leases (importer, owner, fencing_token, expires_at, acquired_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (importer) DO UPDATE SET owner = excluded.owner,
                 fencing_token = excluded.fencing_token, expires_at = excluded.expires_at,
                 acquired_at = excluded.acquired_at",
        )
        .bind(importer)
        .bind(&owner)
        .bind(token)
        .bind(ts(expires_at))
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        if let Ok(mut ttls) = self.lease_ttls.lock() {
            ttls.insert((importer.to_string(), token), ttl);
        }
        Ok(Some(Lease {
            importer: importer.to_string(),
            owner,
            fencing_token: token,
            expires_at,
        }))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StoreResult<Lease> {
        let expires_at = Utc::now() + super::chrono_duration(ttl);
        let done = self
            .q("UPDATE leases SET expires_at = ?1
                 WHERE importer = ?2 AND owner = ?3 AND fencing_token = ?4")
            .bind(ts(expires_at))
            .bind(&lease.importer)
            .bind(&lease.owner)
            .bind(lease.fencing_token)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LeaseLost {
                importer: lease.importer.clone(),
            });
        }
        if let Ok(mut ttls) = self.lease_ttls.lock() {
            ttls.insert((lease.importer.clone(), lease.fencing_token), ttl);
        }
        Ok(Lease {
            expires_at,
            ..lease.clone()
        })
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        self.q("UPDATE leases SET owner = '', expires_at = ?1
                 WHERE importer = ?2 AND owner = ?3 AND fencing_token = ?4")
            .bind(ts(Utc::now()))
            .bind(&lease.importer)
            .bind(&lease.owner)
            .bind(lease.fencing_token)
            .execute(&self.pool)
            .await?;
        if let Ok(mut ttls) = self.lease_ttls.lock() {
            ttls.remove(&(lease.importer.clone(), lease.fencing_token));
        }
        Ok(())
    }

    async fn importer_state(&self, importer: &str) -> StoreResult<ImporterState> {
        let row = self
            .q(
                "SELECT importer, watermark, position, pass_high_water, fingerprint,
                    full_refresh, pass_started_at, last_full_refresh, last_run_at, next_run_at,
                    last_error, needs_new_credentials
                 FROM importer_state WHERE importer = ?",
            )
            .bind(importer)
            .fetch_optional(&self.pool)
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
        let now = ts(Utc::now());
        let mut tx = self.begin().await?;
        let id: i64 = self
            .q("INSERT INTO runs (importer, started_at) VALUES (?1, ?2) RETURNING id")
            .bind(importer)
            .bind(&now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        self.q(
            "INSERT INTO importer_state (importer, last_run_at, updated_at) VALUES (?1, ?2, ?2)
             ON CONFLICT (importer) DO UPDATE SET last_run_at = excluded.last_run_at,
                 updated_at = excluded.updated_at",
        )
        .bind(importer)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(id)
    }

    async fn write_page(&self, page: PageWrite<'_>) -> StoreResult<PageOutcome> {
        self.start_wal_over_if_large().await;
        // Foreign keys are not checked row by row inside a page write: every id the page
        // writes was read or assigned in this same transaction, under the write lock, so
        // each check would be a B-tree probe that cannot fail (13 per new contact; about
        // 7 % of a first import). Every other write keeps them. `PRAGMA foreign_keys` is
        // ignored inside a transaction, so it is switched around it; a connection whose
        // write was abandoned half-way is closed, never returned to the pool with them off.
        // Page writes keep one connection of the pool between them, so its page cache
        // stays warm from one write to the next (the pool hands connections out in
        // turn, and each would otherwise fill its own cache with the same pages).
        let mut writer = self.writer.lock().await;
        let conn = match writer.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        let mut guard = ForeignKeysOff {
            conn: Some(conn),
            restored: false,
        };
        let conn = guard.conn.as_mut().expect("set above");
        self.q("PRAGMA foreign_keys = OFF")
            .execute(&mut **conn)
            .await?;
        let written = self.write_page_on(conn, page).await;
        let restored = self
            .q("PRAGMA foreign_keys = ON")
            .execute(&mut **conn)
            .await;
        guard.restored = restored.is_ok();
        if guard.restored && written.is_ok() {
            *writer = guard.conn.take();
        }
        drop(guard);
        drop(writer);
        let outcome = written?;
        if let Err(error) = restored {
            // The page is committed; the connection was closed rather than pooled.
            tracing::warn!(%error, "Could not switch foreign keys back on; connection closed.");
        }
        self.checkpoint_after_write().await;
        Ok(outcome)
    }

    async fn save_checkpoint(
        &self,
        importer: &str,
        fencing_token: i64,
        checkpoint: &Checkpoint,
    ) -> StoreResult<()> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        self.check_lease(&mut tx, importer, fencing_token, now)
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
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let importer: String = self
            .q(
                "UPDATE runs SET finished_at = ?1, outcome = ?2, pages = ?3, fetched = ?4,
                    created = ?5, updated = ?6, unchanged = ?7, skipped = ?8,
                    field_failures = ?9, deleted = ?10, error = ?11
                 WHERE id = ?12 RETURNING importer",
            )
            .bind(ts(now))
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
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?
            .try_get(0)?;
        self.q(
            "INSERT INTO importer_state (importer, last_error, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (importer) DO UPDATE SET last_error = excluded.last_error,
                 updated_at = excluded.updated_at",
        )
        .bind(&importer)
        .bind(error)
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        if self.maybe_prune_due() {
            self.prune(now).await?;
        }
        Ok(())
    }

    async fn runs(&self, importer: &str, limit: u32) -> StoreResult<Vec<RunRecord>> {
        let rows = self
            .q("SELECT * FROM runs WHERE importer = ?1 ORDER BY id DESC LIMIT ?2")
            .bind(importer)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn load_token(&self, key: &str) -> StoreResult<Option<String>> {
        let cipher = self.cipher()?;
        let row = self
            .q("SELECT sealed FROM tokens WHERE name = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let sealed: Vec<u8> = row.try_get(0)?;
                cipher.open(key, &sealed).map(Some)
            }
        }
    }

    async fn save_token(&self, key: &str, value: &str) -> StoreResult<()> {
        let sealed = self.cipher()?.seal(key, value)?;
        self.q(
            "INSERT INTO tokens (name, sealed, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed,
                 updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(sealed)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn close(&self) {
        drop(self.writer.lock().await.take());
        if let Ok(mut wake) = self.checkpoints.lock() {
            wake.take();
        }
        if let Some(checkpointer) = self.checkpointer.lock().await.take() {
            let _ = checkpointer.await;
        }
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn statements_executed(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    async fn delete_token(&self, key: &str) -> StoreResult<()> {
        self.q("DELETE FROM tokens WHERE name = ?")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_next_run(&self, importer: &str, at: Option<DateTime<Utc>>) -> StoreResult<()> {
        self.q(
            "INSERT INTO importer_state (importer, next_run_at, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (importer) DO UPDATE SET next_run_at = excluded.next_run_at,
                 updated_at = excluded.updated_at",
        )
        .bind(importer)
        .bind(opt_ts(at))
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_needs_new_credentials(&self, importer: &str, needed: bool) -> StoreResult<()> {
        self.q(
            "INSERT INTO importer_state (importer, needs_new_credentials, updated_at)
             VALUES (?1, ?2, ?3)
             ON CONFLICT (importer) DO UPDATE SET
                 needs_new_credentials = excluded.needs_new_credentials,
                 updated_at = excluded.updated_at",
        )
        .bind(importer)
        .bind(needed)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn importer_states(&self) -> StoreResult<Vec<ImporterState>> {
        let rows = self
            .q(
                "SELECT importer, watermark, position, pass_high_water, fingerprint,
                    full_refresh, pass_started_at, last_full_refresh, last_run_at, next_run_at,
                    last_error, needs_new_credentials
                 FROM importer_state ORDER BY importer",
            )
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(state_from_row).collect()
    }

    async fn fields(&self) -> StoreResult<Vec<CustomField>> {
        let rows = self
            .q("SELECT * FROM custom_fields ORDER BY tag")
            .fetch_all(&self.pool)
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
            .q(
                "INSERT INTO custom_fields (tag, label, field_type, origin, service, locked,
                    created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'person', NULL, 0, ?4, ?4)
                 ON CONFLICT (tag) DO NOTHING RETURNING *",
            )
            .bind(tag)
            .bind(label)
            .bind(field_type_str(field_type))
            .bind(ts(Utc::now()))
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::Refused(format!("a field with tag `{tag}` exists")))?;
        field_from_row(&row)
    }

    async fn update_field(&self, tag: &str, change: &FieldChange) -> StoreResult<CustomField> {
        let mut tx = self.begin().await?;
        let row = self
            .q("SELECT * FROM custom_fields WHERE tag = ?")
            .bind(tag)
            .fetch_optional(&mut *tx)
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
            .q(
                "UPDATE custom_fields SET tag = ?1, label = ?2, updated_at = ?3
                 WHERE id = ?4 RETURNING *",
            )
            .bind(new_tag.unwrap_or(tag))
            .bind(change.label.as_deref().unwrap_or(&field.label))
            .bind(ts(Utc::now()))
            .bind(field.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(|error| match &error {
                sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Refused(
                    format!("a field with tag `{}` exists", new_tag.unwrap_or(tag)),
                ),
                _ => StoreError::Database(error),
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
                .q("SELECT id FROM lists WHERE name = ?")
                .bind(list)
                .fetch_optional(&self.pool)
                .await?;
            if found.is_none() {
                return Err(StoreError::NotFound(format!("list `{list}`")));
            }
        }
        let rows = self
            .q(
                "SELECT id, email, first_name, last_name, phone, organization, status,
                    created_at, updated_at
                 FROM contacts c
                 WHERE (?1 IS NULL OR c.email = ?1)
                   AND (?2 IS NULL OR EXISTS (SELECT 1 FROM memberships m
                        JOIN lists l ON l.id = m.list_id
                        WHERE m.contact_id = c.id AND l.name = ?2))
                 ORDER BY c.email LIMIT ?3",
            )
            .bind(email)
            .bind(filter.list.as_deref())
            .bind(filter.limit.map_or(-1, i64::from))
            .fetch_all(&self.pool)
            .await?;
        let mut contacts = Vec::with_capacity(rows.len());
        let mut position = HashMap::new();
        for row in rows {
            let id: i64 = row.try_get(0)?;
            position.insert(id, contacts.len());
            contacts.push(ContactView {
                id,
                email: row.try_get(1)?,
                first_name: row.try_get(2)?,
                last_name: row.try_get(3)?,
                phone: row.try_get(4)?,
                organization: row.try_get(5)?,
                status: ContactStatus::parse(row.try_get(6)?)?,
                created_at: parse_ts(row.try_get(7)?)?,
                updated_at: parse_ts(row.try_get(8)?)?,
                lists: Vec::new(),
                fields: Vec::new(),
                sources: Vec::new(),
            });
        }
        if contacts.is_empty() {
            return Ok(contacts);
        }
        let ids = to_json(&contacts.iter().map(|c| c.id).collect::<Vec<_>>())?;
        let rows = self
            .q(
                "SELECT m.contact_id, l.name, m.status, m.subscribed_at, m.unsubscribed_at
                 FROM json_each(?1) j JOIN memberships m ON m.contact_id = j.value
                 JOIN lists l ON l.id = m.list_id ORDER BY l.name",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let id: i64 = row.try_get(0)?;
            contacts[position[&id]].lists.push(MembershipView {
                list: row.try_get(1)?,
                status: MembershipStatus::parse(row.try_get(2)?)?,
                subscribed_at: parse_opt_ts(row.try_get(3)?)?,
                unsubscribed_at: parse_opt_ts(row.try_get(4)?)?,
            });
        }
        let rows = self
            .q(
                "SELECT v.contact_id, f.tag, f.label, v.value, v.importer, v.run_id, v.updated_at
                 FROM json_each(?1) j JOIN field_values v ON v.contact_id = j.value
                 JOIN custom_fields f ON f.id = v.field_id ORDER BY f.tag",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let id: i64 = row.try_get(0)?;
            contacts[position[&id]].fields.push(FieldValueView {
                tag: row.try_get(1)?,
                label: row.try_get(2)?,
                value: row.try_get(3)?,
                importer: row.try_get(4)?,
                run_id: row.try_get(5)?,
                updated_at: parse_ts(row.try_get(6)?)?,
            });
        }
        let rows = self
            .q(
                "SELECT s.contact_id, s.importer, s.external_id, s.content_hash, s.written_at,
                    s.deleted_at
                 FROM json_each(?1) j JOIN contact_sources s ON s.contact_id = j.value
                 ORDER BY s.importer",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let id: i64 = row.try_get(0)?;
            contacts[position[&id]].sources.push(SourceView {
                importer: row.try_get(1)?,
                external_id: row.try_get(2)?,
                content_hash: row.try_get(3)?,
                last_written_at: parse_ts(row.try_get(4)?)?,
                deleted_at: parse_opt_ts(row.try_get(5)?)?,
            });
        }
        Ok(contacts)
    }

    async fn unsubscribe(&self, email: &str, scope: UnsubscribeScope) -> StoreResult<ContactView> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let (contact_id, status) = self.contact_id(&mut tx, email).await?;
        match scope {
            UnsubscribeScope::All => {
                if status != ContactStatus::Unsubscribed {
                    self.q(
                        "UPDATE contacts SET status = 'unsubscribed', status_changed_at = ?1,
                             updated_at = ?1 WHERE id = ?2",
                    )
                    .bind(ts(now))
                    .bind(contact_id)
                    .execute(&mut *tx)
                    .await?;
                    let changes =
                        json!({"status": {"old": status.as_str(), "new": "unsubscribed"}});
                    self.person_event(
                        &mut tx,
                        ChangeKind::ContactChanged,
                        contact_id,
                        None,
                        changes,
                        now,
                    )
                    .await?;
                }
            }
            UnsubscribeScope::List(name) => {
                let list_id: i64 = self
                    .q("SELECT id FROM lists WHERE name = ?")
                    .bind(&name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("list `{name}`")))?
                    .try_get(0)?;
                let old: Option<String> = self
                    .q("SELECT status FROM memberships WHERE list_id = ?1 AND contact_id = ?2")
                    .bind(list_id)
                    .bind(contact_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get(0))
                    .transpose()?;
                if old.as_deref() != Some("unsubscribed") {
                    self.q(
                        "INSERT INTO memberships (list_id, contact_id, status, origin, created_at,
                            subscribed_at, unsubscribed_at, updated_at)
                         VALUES (?1, ?2, 'unsubscribed', 'person', ?3, NULL, ?3, ?3)
                         ON CONFLICT (list_id, contact_id) DO UPDATE SET status = 'unsubscribed',
                            unsubscribed_at = excluded.unsubscribed_at,
                            updated_at = excluded.updated_at",
                    )
                    .bind(list_id)
                    .bind(contact_id)
                    .bind(ts(now))
                    .execute(&mut *tx)
                    .await?;
                    let changes =
                        json!({"status": page::change_value(old.as_deref(), "unsubscribed")});
                    self.person_event(
                        &mut tx,
                        ChangeKind::MembershipChanged,
                        contact_id,
                        Some(list_id),
                        changes,
                        now,
                    )
                    .await?;
                }
            }
        }
        self.commit(tx).await?;
        self.one_contact(email).await
    }

    async fn bounce(&self, email: &str) -> StoreResult<ContactView> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let (contact_id, status) = self.contact_id(&mut tx, email).await?;
        if status == ContactStatus::Normal {
            self.q(
                "UPDATE contacts SET status = 'bounced', status_changed_at = ?1,
                     updated_at = ?1 WHERE id = ?2",
            )
            .bind(ts(now))
            .bind(contact_id)
            .execute(&mut *tx)
            .await?;
            let changes = json!({"status": {"old": status.as_str(), "new": "bounced"}});
            self.person_event(
                &mut tx,
                ChangeKind::ContactChanged,
                contact_id,
                None,
                changes,
                now,
            )
            .await?;
        }
        self.commit(tx).await?;
        self.one_contact(email).await
    }

    async fn change_events(&self, after: i64, limit: u32) -> StoreResult<Vec<ChangeEvent>> {
        let rows = self
            .q(
                "SELECT id, at, kind, contact_id, email, list_id, origin, notify, importer,
                    run_id, changes
                 FROM change_events WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let changes: String = row.try_get(10)?;
                Ok(ChangeEvent {
                    id: row.try_get(0)?,
                    at: parse_ts(row.try_get(1)?)?,
                    kind: ChangeKind::parse(row.try_get(2)?)?,
                    contact_id: row.try_get(3)?,
                    email: row.try_get(4)?,
                    list_id: row.try_get(5)?,
                    origin: ChangeOrigin::parse(row.try_get(6)?)?,
                    notify: row.try_get(7)?,
                    importer: row.try_get(8)?,
                    run_id: row.try_get(9)?,
                    changes: serde_json::from_str(&changes)
                        .map_err(|error| StoreError::Other(error.to_string()))?,
                })
            })
            .collect()
    }

    async fn prune(&self, now: DateTime<Utc>) -> StoreResult<PruneCounts> {
        let cutoff = now - super::chrono_duration(self.retention);
        let cutoff = ts(cutoff);
        let mut tx = self.begin().await?;
        let events = self
            .q("DELETE FROM change_events WHERE at < ?")
            .bind(&cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let runs = self
            .q("DELETE FROM runs WHERE COALESCE(finished_at, started_at) < ?")
            .bind(&cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        self.commit(tx).await?;
        Ok(PruneCounts {
            change_events: events,
            runs,
        })
    }
}
