//! The reference pipeline (`--role reference`): the minimal hand-written loop Tributary
//! is measured against, in its own process.
//!
//! Fetch a page with reqwest, parse it with serde_json into a struct holding only what it
//! needs, pick the primary email, and write email, first and last name with one batched
//! upsert per page in one transaction: SQLite in WAL mode with `synchronous=NORMAL`, or
//! PostgreSQL with `UNNEST` arrays. Pages are fetched one after another, as the simplest
//! loop does. It knows nothing of Tributary.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use serde::Deserialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};

/// Options of `--role reference`.
pub struct ReferenceOptions {
    pub base_url: String,
    pub token: String,
    /// `sqlite://PATH` or `postgres://...`.
    pub store: String,
}

#[derive(Deserialize)]
struct Page {
    data: Option<Vec<Person>>,
    additional_data: AdditionalData,
}

#[derive(Deserialize)]
struct AdditionalData {
    pagination: Pagination,
}

#[derive(Deserialize)]
struct Pagination {
    more_items_in_collection: bool,
    next_start: Option<u64>,
}

#[derive(Deserialize)]
struct Person {
    first_name: Option<String>,
    last_name: Option<String>,
    #[serde(default)]
    emails: Vec<Email>,
}

#[derive(Deserialize)]
struct Email {
    value: String,
    #[serde(default)]
    primary: bool,
}

struct Row {
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
}

enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    async fn open(url: &str) -> anyhow::Result<Db> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS contacts (
                    email TEXT PRIMARY KEY, first_name TEXT, last_name TEXT)",
            )
            .execute(&pool)
            .await?;
            Ok(Db::Sqlite(pool))
        } else {
            let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS contacts (
                    email TEXT PRIMARY KEY, first_name TEXT, last_name TEXT)",
            )
            .execute(&pool)
            .await?;
            Ok(Db::Postgres(pool))
        }
    }

    async fn upsert(&self, rows: &[Row]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut qb: QueryBuilder<Sqlite> =
                    QueryBuilder::new("INSERT INTO contacts (email, first_name, last_name) ");
                qb.push_values(rows, |mut b, row| {
                    b.push_bind(&row.email)
                        .push_bind(&row.first_name)
                        .push_bind(&row.last_name);
                });
                qb.push(
                    " ON CONFLICT (email) DO UPDATE SET first_name = excluded.first_name,
                      last_name = excluded.last_name",
                );
                qb.build().execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let mut emails = Vec::with_capacity(rows.len());
                let mut firsts = Vec::with_capacity(rows.len());
                let mut lasts = Vec::with_capacity(rows.len());
                for row in rows {
                    emails.push(row.email.as_str());
                    firsts.push(row.first_name.as_deref());
                    lasts.push(row.last_name.as_deref());
                }
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO contacts (email, first_name, last_name)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
                     ON CONFLICT (email) DO UPDATE SET first_name = excluded.first_name,
                       last_name = excluded.last_name",
                )
                .bind(&emails)
                .bind(&firsts)
                .bind(&lasts)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    async fn count(&self) -> anyhow::Result<i64> {
        Ok(match self {
            Db::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM contacts")
                    .fetch_one(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM contacts")
                    .fetch_one(pool)
                    .await?
            }
        })
    }
}

/// Runs one full import and prints `records=R pages=P rows=C seconds=S rate=X`.
pub fn run(options: ReferenceOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(import(options))
}

async fn import(options: ReferenceOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let db = Db::open(&options.store)
        .await
        .context("opening the reference store")?;
    let client = reqwest::Client::builder().build()?;
    let url = format!("{}/v1/persons", options.base_url);
    let mut start = 0u64;
    let (mut records, mut pages) = (0u64, 0u64);
    loop {
        let body = client
            .get(&url)
            .query(&[("api_token", options.token.as_str()), ("limit", "500")])
            .query(&[("start", start)])
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let page: Page = serde_json::from_slice(&body)?;
        pages += 1;
        let people = page.data.unwrap_or_default();
        records += people.len() as u64;
        // PostgreSQL refuses to touch a row twice in one upsert: one row per email.
        let mut by_email: HashMap<String, Row> = HashMap::with_capacity(people.len());
        for person in people {
            let Some(email) = person.emails.into_iter().find(|e| e.primary) else {
                continue;
            };
            let email = email.value.trim().to_lowercase();
            by_email.insert(
                email.clone(),
                Row {
                    email,
                    first_name: person.first_name,
                    last_name: person.last_name,
                },
            );
        }
        let rows = by_email.into_values().collect::<Vec<_>>();
        db.upsert(&rows).await?;
        match page.additional_data.pagination {
            Pagination {
                more_items_in_collection: true,
                next_start: Some(next),
            } => start = next,
            _ => break,
        }
    }
    let rows = db.count().await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "records={records} pages={pages} rows={rows} seconds={seconds:.3} rate={:.0}",
        records as f64 / seconds
    );
    Ok(())
}
