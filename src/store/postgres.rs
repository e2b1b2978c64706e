//! The PostgreSQL dialect: the same model and rules as SQLite ([`SqlStore`]), for several
//! nodes sharing one database.
//!
//! What is PostgreSQL's own: opening (a first connection made alone, within a few seconds,
//! so that an unreachable server is reported with its real cause instead of a pool
//! timeout), `TIMESTAMPTZ` and `JSONB` columns, sets of keys bound as arrays, row locks,
//! lease expiry judged by the server's clock, and page writes: each batch statement
//! receives one array per column and unpacks them with `UNNEST`, so the SQL text is fixed
//! (prepared once per connection), a page costs a constant number of statements and a
//! handful of bind parameters whatever its size (the 65,535 limit is never approached).
//! The page is de-duplicated by email before writing because one `INSERT ... ON CONFLICT
//! DO UPDATE` may not touch a row twice. The lease row is updated first in each page's
//! transaction, so the row lock it takes serializes the page against anyone taking the
//! lease over; no advisory locks (they belong to one pooled connection and vanish with
//! it).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Postgres, Row, Transaction};

use super::crypto::TokenCipher;
use super::sql::{
    Arg, Dialect, DialectColumns, PlannedRows, SqlStore, Statement, Stored, membership_rule,
    run_columns, snapshot_of, sqlx_statements, upsert_contact_rule, upsert_source_rule,
    upsert_value_rule,
};
use super::{Backend, StoreError, StoreOptions, StoreResult, masked_url};
use crate::model::{PageOutcome, PageWrite};

type Query = sqlx::query::Query<'static, Postgres, PgArguments>;

/// How long opening waits for the server to answer before reporting it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a page write is planned again after racing another writer's creation of
/// the same contacts before giving up.
const WRITE_ATTEMPTS: u32 = 5;

/// The PostgreSQL store.
pub type PostgresStore = SqlStore<PostgresDialect>;

/// What a PostgreSQL store keeps beside the shared layer: its pool.
pub struct PostgresDialect {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to and migrates the database at `url`.
    ///
    /// # Errors
    /// `Unreachable` within a few seconds when the server does not answer or refuses the
    /// connection, with its reason (connection refused, password authentication failed,
    /// database does not exist) and the URL with its password masked.
    pub async fn open(url: &str, options: StoreOptions) -> StoreResult<Self> {
        let shown = masked_url(url);
        let connect: PgConnectOptions = url.parse().map_err(|_: sqlx::Error| {
            // sqlx's message may repeat the password: never show it.
            StoreError::BadUrl(format!(
                "`{shown}` is not a PostgreSQL url tributary can read"
            ))
        })?;
        let cipher = match (&options.encryption_key, options.keep_tokens) {
            (Some(source), true) => Ok(TokenCipher::load(source)?),
            _ => Err(
                "no encryption key configured: set `encryption_key` in tributary.yaml to keep tokens in a PostgreSQL store",
            ),
        };
        // One connection alone first: the pool retries until its acquire timeout and
        // then reports only that it timed out, never why.
        let unreachable = |cause: String| StoreError::Unreachable {
            url: shown.clone(),
            cause,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&connect)).await {
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(error)) => return Err(unreachable(connect_cause(&error))),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.unwrap_or(8))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await?;
        super::migrate::run_postgres(&pool).await?;
        let store = SqlStore::new(PostgresDialect { pool }, options, cipher);
        store.renormalize_emails().await?;
        Ok(store)
    }
}

/// Why a connection failed, in the words a person acts on: the server's own message
/// (`password authentication failed for user ...`, `database ... does not exist`) or the
/// system's (`Connection refused`), without sqlx's wrapping.
fn connect_cause(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// A batch statement of a page write (counted as executed).
fn q(store: &PostgresStore, sql: &'static str) -> Query {
    store.count_statement();
    sqlx::query(sql)
}

impl PostgresDialect {
    sqlx_statements!(query);

    /// PostgreSQL's types: `TIMESTAMPTZ`, `JSONB`, arrays.
    fn bind_stored(query: Query, value: Stored) -> Query {
        match value {
            Stored::Time(time) => query.bind(time),
            Stored::Json(json) => query.bind(json),
            Stored::Ints(keys) => query.bind(keys),
            Stored::Texts(keys) => query.bind(keys),
        }
    }
}

impl DialectColumns for PgRow {
    fn stored_time(&self, col: usize) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(self.try_get(col)?)
    }

    fn stored_json(&self, col: usize) -> StoreResult<Option<Value>> {
        Ok(self.try_get(col)?)
    }
}

impl Dialect for PostgresDialect {
    const BACKEND: Backend = Backend::Postgres;
    type Conn = PgConnection;
    type Tx = Transaction<'static, Postgres>;
    type Row = PgRow;

    const CONTACT_SNAPSHOT: &'static str =
        snapshot_of!("FROM contacts c", "WHERE c.email = ANY($1)");

    const VALUE_SNAPSHOT: &'static str = "SELECT contact_id, field_id, value FROM field_values
         WHERE contact_id = ANY($1) AND field_id = ANY($2)";

    const RECENT_RUNS: &'static str = concat!(
        "SELECT ",
        run_columns!(),
        " FROM unnest($1::text[]) AS i(importer)
         CROSS JOIN LATERAL (SELECT * FROM runs x WHERE x.importer = i.importer
                             ORDER BY x.id DESC LIMIT $2) r
         ORDER BY r.importer, r.id DESC"
    );

    fn render(sql: &'static str) -> Cow<'static, str> {
        if !sql.contains('{') {
            return Cow::Borrowed(sql);
        }
        Cow::Owned(
            sql.replace("{for_update}", " FOR UPDATE")
                .replace("{for_key_share}", " FOR KEY SHARE")
                .replace("{claim_lock}", " FOR UPDATE OF l SKIP LOCKED")
                .replace("{by_external_id}", ""),
        )
    }

    sqlx_statements!("BEGIN");

    /// The server's clock: every node sharing the database judges leases by it.
    async fn database_now(&self, conn: &mut PgConnection) -> StoreResult<DateTime<Utc>> {
        Ok(sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(conn)
            .await?)
    }

    /// A page write, planned again when a concurrent writer created some of its
    /// contacts between its snapshot and its upsert (`WriteRaced`): the new snapshot sees
    /// them, so each change gets exactly one event.
    async fn write_page(store: &SqlStore<Self>, page: PageWrite<'_>) -> StoreResult<PageOutcome> {
        let mut attempt = 1;
        loop {
            let mut tx = store.begin().await?;
            match store.write_page_on(&mut tx, &page).await {
                Ok(outcome) => {
                    store.commit(tx).await?;
                    return Ok(outcome);
                }
                // Dropping the transaction rolls it back.
                Err(StoreError::WriteRaced { .. }) if attempt < WRITE_ATTEMPTS => attempt += 1,
                Err(error) => return Err(error),
            }
        }
    }

    async fn write_rows(
        store: &SqlStore<Self>,
        conn: &mut PgConnection,
        rows: PlannedRows<'_>,
    ) -> StoreResult<()> {
        let (page, prepared, plan, now) = (rows.page, rows.prepared, rows.plan, rows.now);
        let mut ids = rows.known_ids();

        if !plan.contacts.is_empty() {
            let n = plan.contacts.len();
            let (mut emails, mut firsts, mut lasts, mut phones, mut orgs, mut statuses) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for row in &plan.contacts {
                let r = &prepared.records[row.contact];
                emails.push(r.email.as_str());
                firsts.push(r.first_name.as_deref());
                lasts.push(r.last_name.as_deref());
                phones.push(r.phone.as_deref());
                orgs.push(r.organization.as_deref());
                statuses.push(row.status.as_str());
            }
            let returned = q(
                store,
                concat!(
                    "INSERT INTO contacts (email, first_name, last_name, phone, organization,
                        status, status_changed_at, created_at, updated_at)
                     SELECT e, f, l, p, o, st, CASE WHEN st <> 'normal' THEN $1 END, $1, $1
                     FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                 $7::text[]) AS t (e, f, l, p, o, st)",
                    upsert_contact_rule!(),
                    " RETURNING id, email, xmax = 0"
                ),
            )
            .bind(now)
            .bind(emails)
            .bind(firsts)
            .bind(lasts)
            .bind(phones)
            .bind(orgs)
            .bind(statuses)
            .fetch_all(&mut *conn)
            .await?;
            let index: HashMap<&str, usize> = plan
                .contacts
                .iter()
                .map(|row| (prepared.records[row.contact].email.as_str(), row.contact))
                .collect();
            // `xmax = 0` is true for a row this statement inserted, false for one it
            // updated. A contact the plan created from an empty snapshot that comes back
            // updated was created by a concurrent writer after the snapshot (this upsert
            // waited for it to commit): the plan's `contact_created` event and counts
            // would be wrong, so the whole page is planned again (see `write_page`).
            let mut raced = false;
            for row in returned {
                let email: String = row.try_get(1)?;
                let inserted: bool = row.try_get(2)?;
                if let Some(&i) = index.get(email.as_str()) {
                    raced |= ids[i].is_none() && !inserted;
                    ids[i] = Some(row.try_get(0)?);
                }
            }
            if raced {
                return Err(StoreError::WriteRaced {
                    importer: page.importer.to_string(),
                });
            }
        }
        // Existing contacts that get rows written without being upserted themselves
        // (the upsert locks its own rows) are held the way a foreign-key check would.
        let upserted: HashSet<usize> = plan.contacts.iter().map(|row| row.contact).collect();
        let mut held: Vec<i64> = plan
            .sources
            .iter()
            .copied()
            .chain(plan.memberships.iter().map(|m| m.contact))
            .chain(plan.values.iter().map(|v| v.contact))
            .filter(|i| !upserted.contains(i))
            .filter_map(|i| rows.existing.get(&prepared.records[i].email))
            .map(|e| e.contact_id)
            .collect();
        held.sort_unstable();
        held.dedup();
        if !held.is_empty() {
            let locked = q(
                store,
                "SELECT id FROM contacts WHERE id = ANY($1) FOR KEY SHARE",
            )
            .bind(&held)
            .fetch_all(&mut *conn)
            .await?;
            if locked.len() != held.len() {
                return Err(StoreError::ContactsDeleted {
                    importer: page.importer.to_string(),
                    count: held.len() - locked.len(),
                });
            }
        }
        let id_of = |index: usize| rows.id_of(&ids, index);

        if !plan.sources.is_empty() {
            let mut contact_ids = Vec::with_capacity(plan.sources.len());
            let mut external = Vec::with_capacity(plan.sources.len());
            let mut hashes = Vec::with_capacity(plan.sources.len());
            for &i in &plan.sources {
                let r = &prepared.records[i];
                contact_ids.push(id_of(i)?);
                external.push(r.external_id.as_deref());
                hashes.push(r.content_hash.as_str());
            }
            q(
                store,
                concat!(
                    "INSERT INTO contact_sources (importer, contact_id, external_id, content_hash,
                    list_id, run_id, first_seen_at, written_at, deleted_at)
                 SELECT $1, c, x, h, $2, $3, $4, $4, NULL
                 FROM UNNEST($5::int8[], $6::text[], $7::text[]) AS t (c, x, h)",
                    upsert_source_rule!()
                ),
            )
            .bind(page.importer)
            .bind(page.list_id)
            .bind(page.run_id)
            .bind(now)
            .bind(contact_ids)
            .bind(external)
            .bind(hashes)
            .execute(&mut *conn)
            .await?;
        }

        if !plan.memberships.is_empty() {
            let mut contact_ids = Vec::with_capacity(plan.memberships.len());
            let mut statuses = Vec::with_capacity(plan.memberships.len());
            for m in &plan.memberships {
                contact_ids.push(id_of(m.contact)?);
                statuses.push(m.status.as_str());
            }
            q(
                store,
                concat!(
                    "INSERT INTO memberships (list_id, contact_id, status, origin, created_at,
                    subscribed_at, unsubscribed_at, updated_at)
                 SELECT $1, c.id, t.st, 'import', $2,
                    CASE WHEN t.st = 'active' THEN $2 END,
                    CASE WHEN t.st = 'unsubscribed' THEN $2 END, $2
                 FROM UNNEST($3::int8[], $4::text[]) AS t (cid, st)
                 JOIN contacts c ON c.id = t.cid",
                    membership_rule!("t.st")
                ),
            )
            .bind(page.list_id)
            .bind(now)
            .bind(contact_ids)
            .bind(statuses)
            .execute(&mut *conn)
            .await?;
        }

        if !plan.values.is_empty() {
            let mut contact_ids = Vec::with_capacity(plan.values.len());
            let mut field_ids = Vec::with_capacity(plan.values.len());
            let mut texts = Vec::with_capacity(plan.values.len());
            for v in &plan.values {
                contact_ids.push(id_of(v.contact)?);
                field_ids.push(v.field_id);
                texts.push(v.value.as_str());
            }
            q(
                store,
                concat!(
                    "INSERT INTO field_values (contact_id, field_id, value, importer, run_id,
                    updated_at)
                 SELECT c, f, v, $1, $2, $3
                 FROM UNNEST($4::int8[], $5::int8[], $6::text[]) AS t (c, f, v)",
                    upsert_value_rule!()
                ),
            )
            .bind(page.importer)
            .bind(page.run_id)
            .bind(now)
            .bind(contact_ids)
            .bind(field_ids)
            .bind(texts)
            .execute(&mut *conn)
            .await?;
        }

        if !plan.events.is_empty() {
            let n = plan.events.len();
            let mut kinds = Vec::with_capacity(n);
            let mut contact_ids = Vec::with_capacity(n);
            let mut emails = Vec::with_capacity(n);
            let mut list_ids: Vec<Option<i64>> = Vec::with_capacity(n);
            let mut changes = Vec::with_capacity(n);
            let mut order = Vec::with_capacity(n);
            for (position, e) in plan.events.iter().enumerate() {
                kinds.push(e.kind.as_str());
                contact_ids.push(id_of(e.contact)?);
                emails.push(prepared.records[e.contact].email.as_str());
                list_ids.push(e.list_id);
                changes.push(e.changes.as_str());
                order.push(position as i64);
            }
            q(
                store,
                "INSERT INTO change_events (at, kind, contact_id, email, list_id, origin, notify,
                    importer, run_id, changes)
                 SELECT $1, k, c, e, l, 'import', FALSE, $2, $3, ch::jsonb
                 FROM UNNEST($4::text[], $5::int8[], $6::text[], $7::int8[], $8::text[],
                             $9::int8[]) AS t (k, c, e, l, ch, o)
                 ORDER BY o",
            )
            .bind(now)
            .bind(page.importer)
            .bind(page.run_id)
            .bind(kinds)
            .bind(contact_ids)
            .bind(emails)
            .bind(list_ids)
            .bind(changes)
            .bind(order)
            .execute(&mut *conn)
            .await?;
        }

        Ok(())
    }
}
