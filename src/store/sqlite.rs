//! The SQLite dialect: one file (WAL, `synchronous = NORMAL`, created owner-only), a small
//! pool, every write transaction started with `BEGIN IMMEDIATE` so that a transaction
//! never has to upgrade a read lock (which SQLite may refuse with `SQLITE_BUSY` at once).
//! Everything else a store does is [`SqlStore`], shared with PostgreSQL.
//!
//! What is SQLite's own: times stored as fixed-width UTC text (text order is time order),
//! sets of keys bound as one JSON array read with `json_each`, and page writes. Those bind
//! 250 rows per execution of each insert statement as a multi-row `VALUES` (a short last
//! chunk padded with NULL rows), so its SQL text is fixed (prepared once per connection),
//! a page costs one execution per 250 rows of a table, and the 32,766 bind-parameter
//! limit is never approached. Page writes run with foreign keys off on a connection they
//! keep, and WAL checkpoints run beside them; see `write_page` and `spawn_checkpointer`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row, Sqlite, SqliteConnection, Transaction};

use super::crypto::{TokenCipher, create_owner_only, default_key_path, read_or_create_key_file};
use super::page;
use super::sql::{
    Arg, Dialect, DialectColumns, PlannedRows, SqlStore, Statement, Stored, membership_rule,
    run_columns, snapshot_of, sqlx_statements, upsert_contact_rule, upsert_source_rule,
    upsert_value_rule,
};
use super::{Backend, StoreError, StoreOptions, StoreResult};
use crate::model::{PageOutcome, PageWrite};

type Query = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

/// The SQLite store.
pub type SqliteStore = SqlStore<SqliteDialect>;

/// What an SQLite store keeps beside the shared layer: its pool, file, kept writer
/// connection and checkpointer.
pub struct SqliteDialect {
    pool: SqlitePool,
    path: PathBuf,
    wal_path: PathBuf,
    /// Wakes the checkpointer after a write; `close` drops it, which ends the
    /// checkpointer with a last `TRUNCATE`.
    checkpoints: Mutex<Option<tokio::sync::mpsc::Sender<()>>>,
    /// The checkpointer, awaited by `close`.
    checkpointer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The connection page writes keep between them (see `write_page`).
    writer: tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<Sqlite>>>,
    /// Held by the checkpointer during a pass (see `start_wal_over_if_large`).
    checkpoint_passes: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Fixed-width UTC text.
pub(crate) fn ts(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(text: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| StoreError::corrupt("time", text))
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
    concat!(
        "INSERT INTO contacts (email, first_name, last_name, phone, organization,
        status, status_changed_at, created_at, updated_at)
     SELECT column1, column2, column3, column4, column5, column6,
        CASE WHEN column6 <> 'normal' THEN k.now END, k.now, k.now
     FROM (SELECT ? AS now) k, (VALUES {rows}) WHERE column1 IS NOT NULL",
        upsert_contact_rule!()
    ),
    6,
);

/// Source rows. Shared: importer, list, run, now.
static UPSERT_SOURCES: Batched = Batched::new(
    concat!(
        "INSERT INTO contact_sources (importer, contact_id, external_id, content_hash,
        list_id, run_id, first_seen_at, written_at, deleted_at)
     SELECT k.importer, column1, column2, column3, k.list, k.run, k.now, k.now, NULL
     FROM (SELECT ? AS importer, ? AS list, ? AS run, ? AS now) k, (VALUES {rows})
     WHERE column1 IS NOT NULL",
        upsert_source_rule!()
    ),
    3,
);

/// Memberships. Shared: list, now.
static UPSERT_MEMBERSHIPS: Batched = Batched::new(
    concat!(
        "INSERT INTO memberships (list_id, contact_id, status, origin, created_at,
        subscribed_at, unsubscribed_at, updated_at)
     SELECT k.list, c.id, v.column2, 'import', k.now,
        CASE WHEN v.column2 = 'active' THEN k.now END,
        CASE WHEN v.column2 = 'unsubscribed' THEN k.now END, k.now
     FROM (SELECT ? AS list, ? AS now) k, (VALUES {rows}) v
     JOIN contacts c ON c.id = v.column1",
        membership_rule!("v.column2")
    ),
    2,
);

/// Custom field values. Shared: importer, run, now.
static UPSERT_VALUES: Batched = Batched::new(
    concat!(
        "INSERT INTO field_values (contact_id, field_id, value, importer, run_id,
        updated_at)
     SELECT column1, column2, column3, k.importer, k.run, k.now
     FROM (SELECT ? AS importer, ? AS run, ? AS now) k, (VALUES {rows})
     WHERE column1 IS NOT NULL",
        upsert_value_rule!()
    ),
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
        return Err(StoreError::BadUrl(String::from(
            "an SQLite store needs a file path: `sqlite://PATH`",
        )));
    }
    Ok(PathBuf::from(path))
}

/// Opens the pool. Its first connection switches the file to WAL, which needs a moment of
/// exclusive access that SQLite refuses with "database is locked" at once (no busy
/// handler) while another process opening the same new file holds it, so that refusal
/// is retried for as long as `busy_timeout` would wait.
async fn connect_pool(
    connect: &SqliteConnectOptions,
    max_connections: u32,
) -> Result<sqlx::SqlitePool, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        let result = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(connect.clone())
            .await;
        match result {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("5")
                    && started.elapsed() < Duration::from_secs(30) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)) * 10)).await;
            }
            other => return other,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed, owner-only) and migrates the store at `url`.
    pub async fn open(url: &str, options: StoreOptions) -> StoreResult<Self> {
        let path = path_of_url(url)?;
        create_file_owner_only(&path)?;
        let cipher = match (&options.encryption_key, options.keep_tokens) {
            (_, false) => Err("this process keeps no tokens (opened without an encryption key)"),
            (Some(source), true) => Ok(TokenCipher::load(source)?),
            (None, true) => Ok(TokenCipher::from_material(&read_or_create_key_file(
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
        let pool = connect_pool(&connect, options.max_connections.unwrap_or(4)).await?;
        super::migrate::run_sqlite(&pool).await?;
        let checkpoint_passes = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        // Checkpoints copy WAL frames straight to the file; the page cache is not used.
        let (checkpoints, checkpointer) = spawn_checkpointer(
            connect.pragma("cache_size", "-1024"),
            std::sync::Arc::clone(&checkpoint_passes),
        );
        let dialect = SqliteDialect {
            pool,
            wal_path: wal_path_of(&path),
            path,
            checkpoints: Mutex::new(Some(checkpoints)),
            checkpointer: tokio::sync::Mutex::new(Some(checkpointer)),
            checkpoint_passes,
            writer: tokio::sync::Mutex::new(None),
        };
        let store = SqlStore::new(dialect, options, cipher);
        store.renormalize_emails().await?;
        Ok(store)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.dialect.path
    }

    /// The connection pool, for checks of its settings (tests, diagnostics); writes go
    /// through the trait so that the rules apply.
    pub fn pool(&self) -> &SqlitePool {
        &self.dialect.pool
    }
}

impl SqliteDialect {
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

    sqlx_statements!(query);

    /// SQLite's stored forms: times as fixed-width UTC text, JSON as text, sets of keys
    /// as a JSON array (read with `json_each`).
    fn bind_stored(query: Query, value: Stored) -> Query {
        match value {
            Stored::Time(time) => query.bind(time.map(ts)),
            Stored::Json(json) => query.bind(json.map(|json| json.to_string())),
            Stored::Ints(keys) => query.bind(Value::from(keys).to_string()),
            Stored::Texts(keys) => query.bind(Value::from(keys).to_string()),
        }
    }
}

impl DialectColumns for SqliteRow {
    fn stored_time(&self, col: usize) -> StoreResult<Option<DateTime<Utc>>> {
        let text: Option<&str> = self.try_get(col)?;
        text.map(parse_ts).transpose()
    }

    fn stored_json(&self, col: usize) -> StoreResult<Option<Value>> {
        let text: Option<&str> = self.try_get(col)?;
        text.map(|text| serde_json::from_str(text).map_err(|_| StoreError::corrupt("JSON", text)))
            .transpose()
    }
}

/// `= ANY($N)` of the shared statements, for a JSON array bound as `$N`:
/// `IN (SELECT value FROM json_each($N))`.
fn any_as_json_each(sql: &str) -> String {
    const ANY: &str = "= ANY(";
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find(ANY) {
        out.push_str(&rest[..at]);
        let after = &rest[at + ANY.len()..];
        let parameter = after.split(')').next().unwrap_or_default();
        out.push_str("IN (SELECT value FROM json_each(");
        out.push_str(parameter);
        out.push_str("))");
        rest = after.get(parameter.len() + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

impl Dialect for SqliteDialect {
    const BACKEND: Backend = Backend::Sqlite;
    type Conn = SqliteConnection;
    type Tx = Transaction<'static, Sqlite>;
    type Row = SqliteRow;

    // The emails come in sorted, and `jsonb_each` hands them out in that order, so the
    // index probes walk the email index forwards instead of jumping around it, which
    // matters when its pages are not cached yet.
    const CONTACT_SNAPSHOT: &'static str = snapshot_of!(
        "FROM jsonb_each($1) j JOIN contacts c ON c.email = j.value",
        ""
    );

    const VALUE_SNAPSHOT: &'static str = "SELECT v.contact_id, v.field_id, v.value
         FROM jsonb_each($1) j
         JOIN field_values v ON v.contact_id = j.value
         WHERE v.field_id IN (SELECT value FROM json_each($2))";

    // Per importer, the id of its `$2`-th newest run is found by its index on
    // `(importer, id)`; its runs from there on are a range of that index.
    const RECENT_RUNS: &'static str = concat!(
        "WITH i AS (SELECT j.value AS importer,
                           (SELECT x.id FROM runs x WHERE x.importer = j.value
                            ORDER BY x.id DESC LIMIT 1 OFFSET $2 - 1) AS floor
                    FROM json_each($1) j)
         SELECT ",
        run_columns!(),
        " FROM i JOIN runs r ON r.importer = i.importer AND r.id >= COALESCE(i.floor, 0)
         ORDER BY r.importer, r.id DESC"
    );

    fn render(sql: &'static str) -> Cow<'static, str> {
        if !sql.contains('{') && !sql.contains("= ANY(") {
            return Cow::Borrowed(sql);
        }
        let sql = sql
            .replace("{for_update}", "")
            .replace("{for_key_share}", "")
            .replace("{claim_lock}", "")
            .replace("{by_external_id}", " INDEXED BY contact_sources_external");
        Cow::Owned(any_as_json_each(&sql))
    }

    sqlx_statements!("BEGIN IMMEDIATE");

    async fn database_now(&self, _conn: &mut SqliteConnection) -> StoreResult<DateTime<Utc>> {
        // One file on one host: its clock is the only one.
        Ok(Utc::now())
    }

    async fn write_page(store: &SqlStore<Self>, page: PageWrite<'_>) -> StoreResult<PageOutcome> {
        let this = &store.dialect;
        this.start_wal_over_if_large().await;
        // Foreign keys are not checked row by row inside a page write: every id the page
        // writes was read or assigned in this same transaction, under the write lock, so
        // each check would be a B-tree probe that cannot fail (13 per new contact; about
        // 7 % of a first import). Every other write keeps them. `PRAGMA foreign_keys` is
        // ignored inside a transaction, so it is switched around it; a connection whose
        // write was abandoned half-way is closed, never returned to the pool with them off.
        // Page writes keep one connection of the pool between them, so its page cache
        // stays warm from one write to the next (the pool hands connections out in
        // turn, and each would otherwise fill its own cache with the same pages).
        let mut writer = this.writer.lock().await;
        let conn = match writer.take() {
            Some(conn) => conn,
            None => this.pool.acquire().await?,
        };
        let mut guard = ForeignKeysOff {
            conn: Some(conn),
            restored: false,
        };
        let conn = guard.conn.as_mut().expect("set above");
        store.count_statement();
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut **conn)
            .await?;
        let written = async {
            store.count_statement();
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let outcome = store.write_page_on(&mut tx, &page).await?;
            store.count_statement();
            tx.commit().await?;
            Ok::<_, StoreError>(outcome)
        }
        .await;
        store.count_statement();
        let restored = sqlx::query("PRAGMA foreign_keys = ON")
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
        this.checkpoint_after_write().await;
        Ok(outcome)
    }

    async fn write_rows(
        store: &SqlStore<Self>,
        conn: &mut SqliteConnection,
        rows: PlannedRows<'_>,
    ) -> StoreResult<()> {
        let (page, prepared, plan) = (rows.page, rows.prepared, rows.plan);
        let now_text = ts(rows.now);
        let mut ids = rows.known_ids();

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
            store.count_statement();
            let first_id: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 FROM contacts")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            for (offset, row) in created.iter().enumerate() {
                ids[row.contact] = Some(first_id + offset as i64);
            }
            execute_batched(
                store,
                conn,
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
            execute_batched(
                store,
                conn,
                &UPSERT_CONTACTS,
                &changed,
                |q| q.bind(now_text.clone()),
                |q, row| bind_contact(q, &prepared.records[row.contact], row),
            )
            .await?;
        }
        let id_of = |index: usize| rows.id_of(&ids, index);

        // Rows in key order, in every batch below: B-tree pages are then visited once
        // each, in order.
        if !plan.sources.is_empty() {
            let mut rows = plan
                .sources
                .iter()
                .map(|&i| Ok((id_of(i)?, i)))
                .collect::<StoreResult<Vec<_>>>()?;
            rows.sort_unstable();
            execute_batched(
                store,
                conn,
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
            execute_batched(
                store,
                conn,
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
            execute_batched(
                store,
                conn,
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
            execute_batched(
                store,
                conn,
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
}

/// Runs `statement` once per `BATCH_ROWS` of `rows`: `fixed` binds the parameters
/// before the rows, `row` one row's columns; a short last chunk is padded with NULLs.
async fn execute_batched<T>(
    store: &SqliteStore,
    conn: &mut SqliteConnection,
    statement: &'static Batched,
    rows: &[T],
    fixed: impl Fn(Query) -> Query,
    row: impl Fn(Query, &T) -> Query,
) -> StoreResult<()> {
    for chunk in rows.chunks(BATCH_ROWS) {
        store.count_statement();
        let mut query = fixed(sqlx::query(statement.sql()));
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

fn create_file_owner_only(path: &Path) -> StoreResult<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::create_dir_all(parent).map_err(|cause| StoreError::File {
            action: "creating directory",
            path: parent.to_path_buf(),
            cause,
        })?;
    }
    match create_owner_only(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(cause) => Err(StoreError::File {
            action: "creating store",
            path: path.to_path_buf(),
            cause,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_of_keys_become_json_each() {
        assert_eq!(
            any_as_json_each("WHERE a = ANY($1) AND b = ANY($12) ORDER BY a"),
            "WHERE a IN (SELECT value FROM json_each($1)) AND b IN (SELECT value FROM json_each($12)) ORDER BY a"
        );
        assert_eq!(any_as_json_each("SELECT 1"), "SELECT 1");
    }
}
