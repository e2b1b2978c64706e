//! The PostgreSQL backend: the same model and rules as SQLite, for several nodes sharing
//! one database.
//!
//! Pages are written set-based: each batch statement receives one array per column and
//! unpacks them with `UNNEST`, so the SQL text is fixed (prepared once per connection), a
//! page costs a constant number of statements and a handful of bind parameters whatever
//! its size (the 65,535 limit is never approached). The page is de-duplicated by email
//! before writing because one `INSERT ... ON CONFLICT DO UPDATE` may not touch a row
//! twice. The lease row is updated first in each page's transaction, so the row lock it
//! takes serializes the page against anyone taking the lease over; no advisory locks
//! (they belong to one pooled connection and vanish with it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::crypto::TokenCipher;
use super::lease::{LeaseHolder, held_by_dead_process};
use super::migrate;
use super::page::{self, ExistingContact};
use super::{
    Backend, ChangeEvent, ChangeKind, ChangeOrigin, ContactFilter, ContactStatus, ContactView,
    CustomField, FieldChange, FieldOrigin, FieldValueView, ImporterState, Lease, MembershipStatus,
    MembershipView, PruneCounts, RunCounts, RunOutcome, RunRecord, SourceView, Store, StoreError,
    StoreOptions, StoreResult, UnsubscribeScope, chrono_duration, field_type_from_str,
    field_type_str, phase_of, validate_tag,
};
use crate::model::{
    Checkpoint, CustomFieldDef, CustomFieldType, FieldBinding, PageOutcome, PageWrite,
    normalize_email,
};

type Query = sqlx::query::Query<'static, Postgres, PgArguments>;

/// How often `finish_run` prunes old history by itself.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: PgPool,
    cipher: Option<TokenCipher>,
    holder: LeaseHolder,
    retention: Duration,
    statements: AtomicU64,
    last_prune: Mutex<Option<Instant>>,
    lease_ttls: Mutex<HashMap<(String, i64), Duration>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to and migrates the database at `url`.
    pub async fn open(url: &str, options: StoreOptions) -> StoreResult<Arc<dyn Store>> {
        Ok(Arc::new(Self::connect(url, options).await?))
    }

    /// Like [`PostgresStore::open`], keeping the concrete type.
    pub async fn connect(url: &str, options: StoreOptions) -> StoreResult<Self> {
        let connect: PgConnectOptions = url.parse().map_err(|error: sqlx::Error| {
            // The URL may hold a password: never repeat it.
            StoreError::Other(format!("invalid postgresql store url: {}", redact(&error)))
        })?;
        let cipher = match (&options.encryption_key, options.keep_tokens) {
            (Some(source), true) => Some(TokenCipher::load(source)?),
            _ => None,
        };
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.unwrap_or(8))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await?;
        let store = PostgresStore {
            pool,
            cipher,
            holder: options.lease_holder,
            retention: options.retention,
            statements: AtomicU64::new(0),
            last_prune: Mutex::new(None),
            lease_ttls: Mutex::new(HashMap::new()),
        };
        store.migrate().await?;
        Ok(store)
    }

    fn q(&self, sql: &'static str) -> Query {
        self.statements.fetch_add(1, Ordering::Relaxed);
        sqlx::query(sql)
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        Ok(self.pool.begin().await?)
    }

    async fn commit(&self, tx: Transaction<'static, Postgres>) -> StoreResult<()> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        Ok(tx.commit().await?)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let created = sqlx::query(
            "CREATE TABLE IF NOT EXISTS tributary_schema (
                version BIGINT PRIMARY KEY,
                description TEXT NOT NULL,
                checksum TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL
            )",
        )
        .execute(&self.pool)
        .await;
        match created {
            Ok(_) => {}
            // Two processes creating it at once: the other one won, which is fine.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {}
            Err(error) => return Err(error.into()),
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE tributary_schema IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM tributary_schema")
            .fetch_one(&mut *tx)
            .await?;
        let current = current.unwrap_or(0);
        let supported = migrate::latest(migrate::POSTGRES);
        if current > supported {
            return Err(StoreError::TooNew {
                found: current,
                supported,
            });
        }
        for migration in migrate::POSTGRES.iter().filter(|m| m.version > current) {
            sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO tributary_schema (version, description, checksum, applied_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(migration.version)
            .bind(migration.description)
            .bind(migrate::checksum(migration))
            .bind(Utc::now())
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

    async fn check_lease(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        importer: &str,
        token: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let extend_to = self
            .lease_ttls
            .lock()
            .map_err(|_| StoreError::Other(String::from("lease table poisoned")))?
            .get(&(importer.to_string(), token))
            .map(|ttl| chrono_duration(*ttl))
            .map_or(now, |ttl| now + ttl);
        let done = self
            .q("UPDATE leases SET expires_at = GREATEST(expires_at, $1)
                 WHERE importer = $2 AND fencing_token = $3 AND owner <> '' AND expires_at > $4")
            .bind(extend_to)
            .bind(importer)
            .bind(token)
            .bind(now)
            .execute(&mut **tx)
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
        tx: &mut Transaction<'static, Postgres>,
        importer: &str,
        checkpoint: &Checkpoint,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.q(
            "INSERT INTO importer_state (importer, watermark, position, pass_high_water,
                 fingerprint, full_refresh, pass_started_at, last_full_refresh, phase, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (importer) DO UPDATE SET
                 watermark = excluded.watermark, position = excluded.position,
                 pass_high_water = excluded.pass_high_water, fingerprint = excluded.fingerprint,
                 full_refresh = excluded.full_refresh, pass_started_at = excluded.pass_started_at,
                 last_full_refresh = excluded.last_full_refresh, phase = excluded.phase,
                 updated_at = excluded.updated_at",
        )
        .bind(importer)
        .bind(checkpoint.watermark)
        .bind(checkpoint.position.clone())
        .bind(checkpoint.pass_high_water)
        .bind(checkpoint.fingerprint.as_deref())
        .bind(checkpoint.full_refresh)
        .bind(checkpoint.pass_started_at)
        .bind(checkpoint.last_full_refresh)
        .bind(phase_of(checkpoint))
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    fn cipher(&self) -> StoreResult<&TokenCipher> {
        self.cipher.as_ref().ok_or_else(|| {
            StoreError::Other(String::from(
                "no encryption key configured: set `encryption_key` in tributary.yaml to keep tokens in a PostgreSQL store",
            ))
        })
    }

    async fn contact_id(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        email: &str,
    ) -> StoreResult<(i64, ContactStatus)> {
        let normalized = normalize_email(email)
            .ok_or_else(|| StoreError::Refused(format!("`{email}` is not an email address")))?;
        let row = self
            .q("SELECT id, status FROM contacts WHERE email = $1 FOR UPDATE")
            .bind(&normalized)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("contact `{normalized}`")))?;
        Ok((row.try_get(0)?, ContactStatus::parse(row.try_get(1)?)?))
    }

    async fn person_event(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        kind: ChangeKind,
        contact_id: i64,
        list_id: Option<i64>,
        changes: Value,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.q(
            "INSERT INTO change_events (at, kind, contact_id, email, list_id, origin, notify,
                 importer, run_id, changes)
             SELECT $1, $2, id, email, $3, 'person', FALSE, NULL, NULL, $4
             FROM contacts WHERE id = $5",
        )
        .bind(now)
        .bind(kind.as_str())
        .bind(list_id)
        .bind(changes)
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

/// An error text without anything that may be a password.
fn redact(error: &sqlx::Error) -> String {
    let text = error.to_string();
    if text.contains('@') || text.contains("password") {
        String::from("the url could not be parsed")
    } else {
        text
    }
}

fn field_from_row(row: &PgRow) -> StoreResult<CustomField> {
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

fn state_from_row(row: &PgRow) -> StoreResult<ImporterState> {
    Ok(ImporterState {
        importer: row.try_get("importer")?,
        checkpoint: Checkpoint {
            watermark: row.try_get("watermark")?,
            position: row.try_get("position")?,
            pass_high_water: row.try_get("pass_high_water")?,
            fingerprint: row.try_get("fingerprint")?,
            full_refresh: row.try_get("full_refresh")?,
            pass_started_at: row.try_get("pass_started_at")?,
            last_full_refresh: row.try_get("last_full_refresh")?,
        },
        last_run_at: row.try_get("last_run_at")?,
        next_run_at: row.try_get("next_run_at")?,
        last_error: row.try_get("last_error")?,
        needs_new_credentials: row.try_get("needs_new_credentials")?,
    })
}

fn run_from_row(row: &PgRow) -> StoreResult<RunRecord> {
    let outcome: Option<String> = row.try_get("outcome")?;
    let count = |name: &str| -> StoreResult<u64> { Ok(row.try_get::<i64, _>(name)?.max(0) as u64) };
    Ok(RunRecord {
        run_id: row.try_get("id")?,
        importer: row.try_get("importer")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
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
impl Store for PostgresStore {
    async fn ensure_list(&self, name: &str) -> StoreResult<i64> {
        let id: i64 = self
            .q("INSERT INTO lists (name, created_at) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id")
            .bind(name)
            .bind(Utc::now())
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(id)
    }

    async fn ensure_custom_fields(
        &self,
        defs: &[CustomFieldDef],
    ) -> StoreResult<Vec<FieldBinding>> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let mut bindings = Vec::with_capacity(defs.len());
        for def in defs {
            let row = self
                .q(
                    "INSERT INTO custom_fields (tag, label, field_type, origin, service, locked,
                         created_at, updated_at)
                     VALUES ($1, $2, $3, 'import', $4, TRUE, $5, $5)
                     ON CONFLICT (tag) DO UPDATE SET
                         locked = TRUE,
                         updated_at = CASE WHEN custom_fields.locked THEN custom_fields.updated_at
                                           ELSE excluded.updated_at END
                     RETURNING id, field_type",
                )
                .bind(&def.tag)
                .bind(&def.label)
                .bind(field_type_str(def.field_type))
                .bind(&def.service)
                .bind(now)
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
        self.q(
            "INSERT INTO leases (importer, owner, fencing_token, expires_at, acquired_at)
             VALUES ($1, '', 0, $2, $2) ON CONFLICT (importer) DO NOTHING",
        )
        .bind(importer)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = self
            .q(
                "SELECT owner, fencing_token, expires_at FROM leases WHERE importer = $1
                 FOR UPDATE",
            )
            .bind(importer)
            .fetch_one(&mut *tx)
            .await?;
        let owner: String = row.try_get(0)?;
        let token: i64 = row.try_get(1)?;
        let expires_at: DateTime<Utc> = row.try_get(2)?;
        let free = owner.is_empty()
            || expires_at <= now
            || held_by_dead_process(&owner, &self.holder.host);
        if !free {
            return Ok(None);
        }
        let token = token + 1;
        let owner = self.holder.new_owner();
        let expires_at = now + chrono_duration(ttl);
        self.q(
            "UPDATE leases SET owner = $1, fencing_token = $2, expires_at = $3, acquired_at = $4
             WHERE importer = $5",
        )
        .bind(&owner)
        .bind(token)
        .bind(expires_at)
        .bind(now)
        .bind(importer)
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
        let expires_at = Utc::now() + chrono_duration(ttl);
        let done = self
            .q("UPDATE leases SET expires_at = $1
                 WHERE importer = $2 AND owner = $3 AND fencing_token = $4")
            .bind(expires_at)
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
        self.q("UPDATE leases SET owner = '', expires_at = $1
                 WHERE importer = $2 AND owner = $3 AND fencing_token = $4")
            .bind(Utc::now())
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
                 FROM importer_state WHERE importer = $1",
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
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let id: i64 = self
            .q("INSERT INTO runs (importer, started_at) VALUES ($1, $2) RETURNING id")
            .bind(importer)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        self.q(
            "INSERT INTO importer_state (importer, last_run_at, updated_at) VALUES ($1, $2, $2)
             ON CONFLICT (importer) DO UPDATE SET last_run_at = excluded.last_run_at,
                 updated_at = excluded.updated_at",
        )
        .bind(importer)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(id)
    }

    async fn write_page(&self, page: PageWrite<'_>) -> StoreResult<PageOutcome> {
        let prepared = page::prepare(&page);
        let now = Utc::now();
        let mut tx = self.begin().await?;
        self.check_lease(&mut tx, page.importer, page.fencing_token, now)
            .await?;

        // The rows a page writes have no foreign keys (migration 2): their parents are
        // checked and held here, once per write. `FOR KEY SHARE` is what a foreign-key
        // check takes, so a concurrent `DELETE` of the list or a field waits for this
        // write, and its trigger then removes what the write added.
        let field_ids: Vec<i64> = page.fields.iter().map(|f| f.field_id).collect();
        let parents = self
            .q(
                "WITH l AS (SELECT id FROM lists WHERE id = $1 FOR KEY SHARE),
                     f AS (SELECT id FROM custom_fields WHERE id = ANY($2) FOR KEY SHARE)
                SELECT (SELECT COUNT(*) FROM l), (SELECT COUNT(DISTINCT id) FROM f),
                       (SELECT COUNT(DISTINCT x) FROM UNNEST($2) AS t (x))",
            )
            .bind(page.list_id)
            .bind(&field_ids)
            .fetch_one(&mut *tx)
            .await?;
        let (lists, fields, wanted): (i64, i64, i64) = (
            parents.try_get(0)?,
            parents.try_get(1)?,
            parents.try_get(2)?,
        );
        if lists != 1 || fields != wanted {
            return Err(StoreError::Other(format!(
                "importer `{}` wrote a page for a list or custom field that is not in the store",
                page.importer
            )));
        }

        let mut existing: HashMap<String, ExistingContact> = HashMap::new();
        if !prepared.records.is_empty() {
            let emails: Vec<&str> = prepared.records.iter().map(|r| r.email.as_str()).collect();
            let rows = self
                .q(
                    "SELECT c.email, c.id, c.first_name, c.last_name, c.phone, c.organization,
                        c.status, s.content_hash, s.list_id, s.deleted_at IS NOT NULL, m.status
                     FROM contacts c
                     LEFT JOIN contact_sources s ON s.importer = $2 AND s.contact_id = c.id
                     LEFT JOIN memberships m ON m.list_id = $3 AND m.contact_id = c.id
                     WHERE c.email = ANY($1)",
                )
                .bind(emails)
                .bind(page.importer)
                .bind(page.list_id)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let (email, contact) = page::existing_from_row(&row)?;
                existing.insert(email, contact);
            }
        }

        let mut values: HashMap<(i64, i64), String> = HashMap::new();
        let candidates = page::value_candidates(&prepared, &existing, page.list_id);
        if !candidates.is_empty() && !page.fields.is_empty() {
            let field_ids: Vec<i64> = page.fields.iter().map(|f| f.field_id).collect();
            let rows = self
                .q("SELECT contact_id, field_id, value FROM field_values
                     WHERE contact_id = ANY($1) AND field_id = ANY($2)")
                .bind(candidates)
                .bind(field_ids)
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
            let returned = self
                .q(
                    "INSERT INTO contacts (email, first_name, last_name, phone, organization,
                        status, status_changed_at, created_at, updated_at)
                     SELECT e, f, l, p, o, st, CASE WHEN st <> 'normal' THEN $1 END, $1, $1
                     FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                 $7::text[]) AS t (e, f, l, p, o, st)
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
                        updated_at = excluded.updated_at
                     RETURNING id, email",
                )
                .bind(now)
                .bind(emails)
                .bind(firsts)
                .bind(lasts)
                .bind(phones)
                .bind(orgs)
                .bind(statuses)
                .fetch_all(&mut *tx)
                .await?;
            let index: HashMap<&str, usize> = plan
                .contacts
                .iter()
                .map(|row| (prepared.records[row.contact].email.as_str(), row.contact))
                .collect();
            for row in returned {
                let email: String = row.try_get(1)?;
                if let Some(&i) = index.get(email.as_str()) {
                    ids[i] = Some(row.try_get(0)?);
                }
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
            .filter_map(|i| existing.get(&prepared.records[i].email))
            .map(|e| e.contact_id)
            .collect();
        held.sort_unstable();
        held.dedup();
        if !held.is_empty() {
            let locked = self
                .q("SELECT id FROM contacts WHERE id = ANY($1) FOR KEY SHARE")
                .bind(&held)
                .fetch_all(&mut *tx)
                .await?;
            if locked.len() != held.len() {
                return Err(StoreError::Other(format!(
                    "importer `{}`: {} contact(s) were deleted while their page was being written",
                    page.importer,
                    held.len() - locked.len()
                )));
            }
        }
        let id_of = |index: usize| -> StoreResult<i64> {
            ids[index].ok_or_else(|| {
                StoreError::Other(format!(
                    "contact `{}` has no id after the upsert",
                    prepared.records[index].email
                ))
            })
        };

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
            self.q(
                "INSERT INTO contact_sources (importer, contact_id, external_id, content_hash,
                    list_id, run_id, first_seen_at, written_at, deleted_at)
                 SELECT $1, c, x, h, $2, $3, $4, $4, NULL
                 FROM UNNEST($5::int8[], $6::text[], $7::text[]) AS t (c, x, h)
                 ON CONFLICT (importer, contact_id) DO UPDATE SET
                    external_id = COALESCE(excluded.external_id, contact_sources.external_id),
                    content_hash = excluded.content_hash, list_id = excluded.list_id,
                    run_id = excluded.run_id, written_at = excluded.written_at,
                    deleted_at = NULL",
            )
            .bind(page.importer)
            .bind(page.list_id)
            .bind(page.run_id)
            .bind(now)
            .bind(contact_ids)
            .bind(external)
            .bind(hashes)
            .execute(&mut *tx)
            .await?;
        }

        if !plan.memberships.is_empty() {
            let mut contact_ids = Vec::with_capacity(plan.memberships.len());
            let mut statuses = Vec::with_capacity(plan.memberships.len());
            for m in &plan.memberships {
                contact_ids.push(id_of(m.contact)?);
                statuses.push(m.status.as_str());
            }
            // The rules are enforced here too, not only in the plan: a contact bounced or
            // unsubscribed concurrently is never made active, an unsubscribed membership
            // never re-activated.
            self.q(
                "INSERT INTO memberships (list_id, contact_id, status, origin, created_at,
                    subscribed_at, unsubscribed_at, updated_at)
                 SELECT $1, c.id, t.st, 'import', $2,
                    CASE WHEN t.st = 'active' THEN $2 END,
                    CASE WHEN t.st = 'unsubscribed' THEN $2 END, $2
                 FROM UNNEST($3::int8[], $4::text[]) AS t (cid, st)
                 JOIN contacts c ON c.id = t.cid
                 WHERE t.st = 'unsubscribed' OR c.status = 'normal'
                 ON CONFLICT (list_id, contact_id) DO UPDATE SET
                    status = 'unsubscribed', unsubscribed_at = excluded.updated_at,
                    updated_at = excluded.updated_at
                 WHERE excluded.status = 'unsubscribed' AND memberships.status = 'active'",
            )
            .bind(page.list_id)
            .bind(now)
            .bind(contact_ids)
            .bind(statuses)
            .execute(&mut *tx)
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
            self.q(
                "INSERT INTO field_values (contact_id, field_id, value, importer, run_id,
                    updated_at)
                 SELECT c, f, v, $1, $2, $3
                 FROM UNNEST($4::int8[], $5::int8[], $6::text[]) AS t (c, f, v)
                 ON CONFLICT (contact_id, field_id) DO UPDATE SET value = excluded.value,
                    importer = excluded.importer, run_id = excluded.run_id,
                    updated_at = excluded.updated_at",
            )
            .bind(page.importer)
            .bind(page.run_id)
            .bind(now)
            .bind(contact_ids)
            .bind(field_ids)
            .bind(texts)
            .execute(&mut *tx)
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
            self.q(
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
            .execute(&mut *tx)
            .await?;
        }

        let mut outcome = plan.outcome;
        if !page.deleted_external_ids.is_empty() {
            let done = self
                .q("UPDATE contact_sources SET deleted_at = $1
                     WHERE importer = $2 AND deleted_at IS NULL AND external_id = ANY($3)")
                .bind(now)
                .bind(page.importer)
                .bind(page.deleted_external_ids.to_vec())
                .execute(&mut *tx)
                .await?;
            outcome.deleted = done.rows_affected();
        }

        self.save_state(&mut tx, page.importer, page.checkpoint, now)
            .await?;
        self.q(
            "UPDATE runs SET pages = pages + 1, created = created + $1, updated = updated + $2,
                unchanged = unchanged + $3, field_failures = field_failures + $4,
                deleted = deleted + $5
             WHERE id = $6",
        )
        .bind(outcome.created as i64)
        .bind(outcome.updated as i64)
        .bind(outcome.unchanged as i64)
        .bind(outcome.field_failures as i64)
        .bind(outcome.deleted as i64)
        .bind(page.run_id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
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
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?
            .try_get(0)?;
        self.q(
            "INSERT INTO importer_state (importer, last_error, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (importer) DO UPDATE SET last_error = excluded.last_error,
                 updated_at = excluded.updated_at",
        )
        .bind(&importer)
        .bind(error)
        .bind(now)
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
            .q("SELECT * FROM runs WHERE importer = $1 ORDER BY id DESC LIMIT $2")
            .bind(importer)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn load_token(&self, key: &str) -> StoreResult<Option<String>> {
        let cipher = self.cipher()?;
        let row = self
            .q("SELECT sealed FROM tokens WHERE name = $1")
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
            "INSERT INTO tokens (name, sealed, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed,
                 updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(sealed)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn statements_executed(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    async fn delete_token(&self, key: &str) -> StoreResult<()> {
        self.q("DELETE FROM tokens WHERE name = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_next_run(&self, importer: &str, at: Option<DateTime<Utc>>) -> StoreResult<()> {
        self.q(
            "INSERT INTO importer_state (importer, next_run_at, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (importer) DO UPDATE SET next_run_at = excluded.next_run_at,
                 updated_at = excluded.updated_at",
        )
        .bind(importer)
        .bind(at)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_needs_new_credentials(&self, importer: &str, needed: bool) -> StoreResult<()> {
        self.q(
            "INSERT INTO importer_state (importer, needs_new_credentials, updated_at)
             VALUES ($1, $2, $3)
             ON CONFLICT (importer) DO UPDATE SET
                 needs_new_credentials = excluded.needs_new_credentials,
                 updated_at = excluded.updated_at",
        )
        .bind(importer)
        .bind(needed)
        .bind(Utc::now())
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
                 VALUES ($1, $2, $3, 'person', NULL, FALSE, $4, $4)
                 ON CONFLICT (tag) DO NOTHING RETURNING *",
            )
            .bind(tag)
            .bind(label)
            .bind(field_type_str(field_type))
            .bind(Utc::now())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::Refused(format!("a field with tag `{tag}` exists")))?;
        field_from_row(&row)
    }

    async fn update_field(&self, tag: &str, change: &FieldChange) -> StoreResult<CustomField> {
        let mut tx = self.begin().await?;
        let row = self
            .q("SELECT * FROM custom_fields WHERE tag = $1 FOR UPDATE")
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
                "UPDATE custom_fields SET tag = $1, label = $2, updated_at = $3
                 WHERE id = $4 RETURNING *",
            )
            .bind(new_tag.unwrap_or(tag))
            .bind(change.label.as_deref().unwrap_or(&field.label))
            .bind(Utc::now())
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
                .q("SELECT id FROM lists WHERE name = $1")
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
                 WHERE ($1::text IS NULL OR c.email = $1)
                   AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM memberships m
                        JOIN lists l ON l.id = m.list_id
                        WHERE m.contact_id = c.id AND l.name = $2))
                 ORDER BY c.email LIMIT $3",
            )
            .bind(email)
            .bind(filter.list.as_deref())
            .bind(filter.limit.map(i64::from))
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
                created_at: row.try_get(7)?,
                updated_at: row.try_get(8)?,
                lists: Vec::new(),
                fields: Vec::new(),
                sources: Vec::new(),
            });
        }
        if contacts.is_empty() {
            return Ok(contacts);
        }
        let ids: Vec<i64> = contacts.iter().map(|c| c.id).collect();
        let rows = self
            .q(
                "SELECT m.contact_id, l.name, m.status, m.subscribed_at, m.unsubscribed_at
                 FROM memberships m JOIN lists l ON l.id = m.list_id
                 WHERE m.contact_id = ANY($1) ORDER BY l.name",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let id: i64 = row.try_get(0)?;
            contacts[position[&id]].lists.push(MembershipView {
                list: row.try_get(1)?,
                status: MembershipStatus::parse(row.try_get(2)?)?,
                subscribed_at: row.try_get(3)?,
                unsubscribed_at: row.try_get(4)?,
            });
        }
        let rows = self
            .q(
                "SELECT v.contact_id, f.tag, f.label, v.value, v.importer, v.run_id, v.updated_at
                 FROM field_values v JOIN custom_fields f ON f.id = v.field_id
                 WHERE v.contact_id = ANY($1) ORDER BY f.tag",
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
                updated_at: row.try_get(6)?,
            });
        }
        let rows = self
            .q(
                "SELECT contact_id, importer, external_id, content_hash, written_at, deleted_at
                 FROM contact_sources WHERE contact_id = ANY($1) ORDER BY importer",
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
                last_written_at: row.try_get(4)?,
                deleted_at: row.try_get(5)?,
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
                        "UPDATE contacts SET status = 'unsubscribed', status_changed_at = $1,
                             updated_at = $1 WHERE id = $2",
                    )
                    .bind(now)
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
                    .q("SELECT id FROM lists WHERE name = $1 FOR KEY SHARE")
                    .bind(&name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("list `{name}`")))?
                    .try_get(0)?;
                let old: Option<String> = self
                    .q("SELECT status FROM memberships WHERE list_id = $1 AND contact_id = $2")
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
                         VALUES ($1, $2, 'unsubscribed', 'person', $3, NULL, $3, $3)
                         ON CONFLICT (list_id, contact_id) DO UPDATE SET status = 'unsubscribed',
                            unsubscribed_at = excluded.unsubscribed_at,
                            updated_at = excluded.updated_at",
                    )
                    .bind(list_id)
                    .bind(contact_id)
                    .bind(now)
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
                "UPDATE contacts SET status = 'bounced', status_changed_at = $1,
                     updated_at = $1 WHERE id = $2",
            )
            .bind(now)
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
                 FROM change_events WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ChangeEvent {
                    id: row.try_get(0)?,
                    at: row.try_get(1)?,
                    kind: ChangeKind::parse(row.try_get(2)?)?,
                    contact_id: row.try_get(3)?,
                    email: row.try_get(4)?,
                    list_id: row.try_get(5)?,
                    origin: ChangeOrigin::parse(row.try_get(6)?)?,
                    notify: row.try_get(7)?,
                    importer: row.try_get(8)?,
                    run_id: row.try_get(9)?,
                    changes: row.try_get(10)?,
                })
            })
            .collect()
    }

    async fn prune(&self, now: DateTime<Utc>) -> StoreResult<PruneCounts> {
        let cutoff = now - chrono_duration(self.retention);
        let mut tx = self.begin().await?;
        let events = self
            .q("DELETE FROM change_events WHERE at < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let runs = self
            .q("DELETE FROM runs WHERE COALESCE(finished_at, started_at) < $1")
            .bind(cutoff)
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
