//! After each Tributary scenario, the store is read back with SQL, so a fast but
//! incomplete import cannot pass: contacts, list memberships, custom-field values
//! (sampled and compared with the generator), change events and the checkpoint.
//!
//! Only reads; the schema is the store module's (migrations), so when it changes, the
//! queries here change with it.

use std::str::FromStr;

use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::data;

/// What was just measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The hand-written pipeline.
    Reference,
    /// First import into an empty store.
    First,
    /// Incremental run after 1 % of the contacts changed at the service.
    Incremental,
    /// A full-refresh pass in which nothing changed.
    FullRefresh,
}

impl Scenario {
    pub fn label(self) -> &'static str {
        match self {
            Scenario::Reference => "reference",
            Scenario::First => "first import",
            Scenario::Incremental => "incremental 1 %",
            Scenario::FullRefresh => "full refresh, unchanged",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Scenario::Reference => "reference",
            Scenario::First => "first",
            Scenario::Incremental => "incremental",
            Scenario::FullRefresh => "full-refresh",
        }
    }
}

/// What the store must hold after a scenario.
pub struct Expectation {
    pub scenario: Scenario,
    pub n: u64,
    /// How many change generations the fake has applied.
    pub generation: u32,
    pub percent: u32,
    /// Records the fake served during the run.
    pub records_served: u64,
    /// Update time the fake gave the last changed contacts, if any changed.
    pub changed_at: Option<i64>,
}

/// A read-only handle on the store under test.
pub enum CheckDb {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Runs one statement on the admin database (create or drop a benchmark database).
pub async fn pg_admin(url: &str, sql: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

impl CheckDb {
    pub async fn open(url: &str) -> anyhow::Result<CheckDb> {
        if url.starts_with("sqlite:") {
            // Tributary creates the file; the checker only reads.
            let options = SqliteConnectOptions::from_str(url)?.read_only(true);
            Ok(CheckDb::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(options),
            ))
        } else {
            Ok(CheckDb::Postgres(
                PgPoolOptions::new().max_connections(1).connect_lazy(url)?,
            ))
        }
    }

    pub async fn close(self) {
        match self {
            CheckDb::Sqlite(pool) => pool.close().await,
            CheckDb::Postgres(pool) => pool.close().await,
        }
    }

    /// One integer.
    async fn int(&self, sql: &str) -> Result<i64, String> {
        let text = AssertSqlSafe(sql.to_string());
        let result = match self {
            CheckDb::Sqlite(pool) => sqlx::query_scalar::<_, i64>(text).fetch_one(pool).await,
            CheckDb::Postgres(pool) => sqlx::query_scalar::<_, i64>(text).fetch_one(pool).await,
        };
        result.map_err(|e| format!("{e}: {sql}"))
    }

    /// Rows of text columns (NULL as `None`); the query casts what is not text.
    async fn rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let text = AssertSqlSafe(sql.to_string());
        let result = match self {
            CheckDb::Sqlite(pool) => sqlx::query(text).fetch_all(pool).await.map(|rows| {
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.get::<Option<String>, _>(i))
                            .collect()
                    })
                    .collect()
            }),
            CheckDb::Postgres(pool) => sqlx::query(text).fetch_all(pool).await.map(|rows| {
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.get::<Option<String>, _>(i))
                            .collect()
                    })
                    .collect()
            }),
        };
        result.map_err(|e| format!("{e}: {sql}"))
    }
}

/// How many generations changed contact `id` (its version at the fake).
fn version_of(id: u64, generation: u32, percent: u32) -> u32 {
    (1..=generation)
        .filter(|g| data::changed_in(id, *g, percent))
        .count() as u32
}

/// Ids to compare field by field: spread over the whole range, with changed ones.
fn sample_ids(n: u64, generation: u32, percent: u32) -> Vec<u64> {
    let mut ids = (0..50).map(|k| 1 + data::mix(k) % n).collect::<Vec<_>>();
    if generation > 0 {
        ids.extend(
            (1..=n)
                .filter(|id| data::changed_in(*id, generation, percent))
                .take(20),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

const IMPORTER: &str = "bench";
const LIST: &str = "Pipedrive customers";

/// The connector's custom fields: (tag, texts the stored value must contain, whether the
/// store keeps it as JSON or as plain text). Numbers are compared as numbers.
fn custom_expectations(e: &data::Expected) -> [(&'static str, Vec<String>); 5] {
    [
        ("%PIPEDRIVE_SEGMENT%", vec![e.segment.clone()]),
        ("%PIPEDRIVE_LIFETIME_VALUE%", vec![]),
        ("%PIPEDRIVE_CONTRACT_START%", vec![e.contract_start.clone()]),
        ("%PIPEDRIVE_INTERESTS%", e.interests.clone()),
        ("%PIPEDRIVE_TAGS%", e.tags.clone()),
    ]
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: found {got:?}, expected {want:?}"))
    }
}

/// Checks the store after a scenario; a short summary on success.
pub async fn check(db: &CheckDb, expect: &Expectation) -> Result<String, String> {
    let n = expect.n as i64;
    let changed = (1..=expect.n)
        .filter(|id| {
            expect.generation > 0 && data::changed_in(*id, expect.generation, expect.percent)
        })
        .count() as i64;

    // Records fetched: everything on a full pass, about the changed ones incrementally.
    match expect.scenario {
        Scenario::Incremental => {
            let served = expect.records_served as i64;
            if served < changed || served > changed + 1_000.max(n / 100) {
                return Err(format!(
                    "incremental run fetched {served} records; {changed} changed (not a real incremental pass)"
                ));
            }
        }
        _ => expect_eq("records fetched", expect.records_served as i64, n)?,
    }

    // Contacts, memberships, sources.
    expect_eq(
        "contacts",
        db.int("SELECT COUNT(*) FROM contacts").await?,
        n,
    )?;
    expect_eq(
        "active memberships of the importer's list",
        db.int(&format!(
            "SELECT COUNT(*) FROM memberships m JOIN lists l ON l.id = m.list_id
             WHERE l.name = '{LIST}' AND m.status = 'active'"
        ))
        .await?,
        n,
    )?;
    expect_eq(
        "contact sources with a content hash and an external id",
        db.int(&format!(
            "SELECT COUNT(*) FROM contact_sources WHERE importer = '{IMPORTER}'
             AND content_hash <> '' AND external_id IS NOT NULL"
        ))
        .await?,
        n,
    )?;

    // Custom fields: five, each with a value on every contact.
    expect_eq(
        "custom fields of the connector",
        db.int("SELECT COUNT(*) FROM custom_fields WHERE tag LIKE '%PIPEDRIVE%'")
            .await?,
        5,
    )?;
    expect_eq(
        "custom field values",
        db.int(&format!(
            "SELECT COUNT(*) FROM field_values WHERE importer = '{IMPORTER}'"
        ))
        .await?,
        5 * n,
    )?;

    // A sample, field by field, against the generator.
    let ids = sample_ids(expect.n, expect.generation, expect.percent);
    for id in &ids {
        let e = data::expected(*id, version_of(*id, expect.generation, expect.percent));
        let email = e.email_normalized.replace('\'', "''");
        let rows = db
            .rows(&format!(
                "SELECT c.first_name, c.last_name, c.phone, c.organization, s.external_id
                 FROM contacts c JOIN contact_sources s ON s.contact_id = c.id
                 WHERE c.email = '{email}' AND s.importer = '{IMPORTER}'"
            ))
            .await?;
        let want = vec![
            Some(e.first_name.clone()),
            Some(e.last_name.clone()),
            Some(e.phone.clone()),
            Some(e.organization.clone()),
            Some(id.to_string()),
        ];
        expect_eq(&format!("contact {email}"), rows, vec![want])?;
        let values = db
            .rows(&format!(
                "SELECT f.tag, v.value FROM field_values v
                 JOIN custom_fields f ON f.id = v.field_id
                 JOIN contacts c ON c.id = v.contact_id
                 WHERE c.email = '{email}' ORDER BY f.tag"
            ))
            .await?;
        for (tag, needles) in custom_expectations(&e) {
            let Some(value) = values
                .iter()
                .find(|r| r[0].as_deref() == Some(tag))
                .and_then(|r| r[1].clone())
            else {
                return Err(format!("contact {email} has no value for {tag}"));
            };
            if tag == "%PIPEDRIVE_LIFETIME_VALUE%" {
                let number = value
                    .trim_matches('"')
                    .parse::<f64>()
                    .map_err(|_| format!("contact {email}: {tag} = {value} is not a number"))?;
                if (number - e.lifetime_value).abs() > 1e-6 {
                    return Err(format!(
                        "contact {email}: {tag} = {number}, expected {}",
                        e.lifetime_value
                    ));
                }
            }
            for needle in needles {
                if !value.contains(&needle) {
                    return Err(format!(
                        "contact {email}: {tag} = {value}, expected it to hold {needle}"
                    ));
                }
            }
        }
    }

    // Change events: one per created contact, one per changed contact, one per
    // membership; all from import, none notifying.
    let events = |kind: &str| format!("SELECT COUNT(*) FROM change_events WHERE kind = '{kind}'");
    expect_eq(
        "contact_created events",
        db.int(&events("contact_created")).await?,
        n,
    )?;
    expect_eq(
        "contact_changed events",
        db.int(&events("contact_changed")).await?,
        changed,
    )?;
    expect_eq(
        "membership_changed events",
        db.int(&events("membership_changed")).await?,
        n,
    )?;
    expect_eq(
        "change events not from import or notifying",
        db.int("SELECT COUNT(*) FROM change_events WHERE origin <> 'import' OR notify")
            .await?,
        0,
    )?;

    // Checkpoint: the pass completed, the watermark is the newest update time served.
    let state = db
        .rows(&format!(
            "SELECT CAST(watermark AS TEXT), CAST(position AS TEXT) FROM importer_state
             WHERE importer = '{IMPORTER}'"
        ))
        .await?;
    let [row] = state.as_slice() else {
        return Err(format!(
            "importer_state rows for `{IMPORTER}`: {}",
            state.len()
        ));
    };
    let watermark = row[0]
        .clone()
        .ok_or("no watermark after a completed pass")?;
    let newest = data::v1_time(
        expect
            .changed_at
            .unwrap_or(data::initial_update_time(expect.n)),
    );
    // Both backends write the date first, whatever they use between date and time.
    if !watermark.starts_with(&newest[..10]) {
        return Err(format!(
            "watermark {watermark}, expected the newest update time {newest}"
        ));
    }
    if row[1].as_deref().is_some_and(|p| p != "null") {
        return Err(format!(
            "a pass position is still saved after a completed pass: {:?}",
            row[1]
        ));
    }
    let runs = db
        .rows(&format!(
            "SELECT outcome, CAST(fetched AS TEXT), CAST(created AS TEXT),
                    CAST(updated AS TEXT), CAST(unchanged AS TEXT)
             FROM runs WHERE importer = '{IMPORTER}' ORDER BY id DESC LIMIT 1"
        ))
        .await?;
    let run = runs.first().ok_or("no run recorded")?;
    expect_eq("last run outcome", run[0].as_deref(), Some("completed"))?;
    expect_eq(
        "last run fetched",
        run[1].as_deref().and_then(|v| v.parse::<u64>().ok()),
        Some(expect.records_served),
    )?;
    let count = |i: usize| run[i].as_deref().and_then(|v| v.parse::<i64>().ok());
    match expect.scenario {
        Scenario::First => expect_eq("last run created", count(2), Some(n))?,
        Scenario::Incremental => expect_eq("last run updated", count(3), Some(changed))?,
        Scenario::FullRefresh => {
            expect_eq("last run updated", count(3), Some(0))?;
            expect_eq("last run unchanged", count(4), Some(n))?;
        }
        Scenario::Reference => {}
    }
    Ok(format!(
        "{n} contacts, {} sampled, {changed} changed, watermark {watermark}",
        ids.len()
    ))
}
