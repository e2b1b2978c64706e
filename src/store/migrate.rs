//! Embedded schema migrations, applied at start by sqlx's runtime [`Migrator`] (no macros,
//! no build-time database or path): one list per backend, the same versions on both.
//!
//! sqlx records each applied migration with a SHA-384 checksum of its SQL in
//! `tributary_schema` and refuses a store where an applied migration's checksum differs
//! from the one this binary carries (someone edited a released migration): that is
//! [`StoreError::MigrationChanged`]. A store migrated by a newer tributary holds a version
//! this binary does not know; sqlx calls that a missing migration, and it is mapped to
//! [`StoreError::TooNew`] before anything touches the store.
//!
//! Concurrent starts: on PostgreSQL sqlx holds an advisory lock on the migrating
//! connection for the whole run. On SQLite it takes none, and each migration is its own
//! transaction, so two processes opening a fresh file at once can both try to apply
//! version 1; the loser's transaction fails and rolls back whole (SQLite's DDL is
//! transactional), and [`run_sqlite`] reads the applied list again and goes on.
//!
//! Never edit a released migration: add a new one. Until the first release they may be
//! squashed (as they were: version 1 is the schema before issue 11).
//!
//! Some changes cannot be SQL: re-normalizing stored emails when
//! [`crate::model::normalize_email`] changes runs in Rust after the SQL migrations, on
//! both backends (`SqlStore::renormalize_emails`).

use std::borrow::Cow;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

use super::{StoreError, StoreResult};

/// Where the applied versions are recorded (sqlx's layout, our name).
pub(crate) const TABLE: &str = "tributary_schema";

/// One embedded migration: version, description, SQL.
type Embedded = (i64, &'static str, &'static str);

/// SQLite migrations.
const SQLITE: &[Embedded] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "email normalization",
        include_str!("../../migrations/sqlite/0002_email_normalization.sql"),
    ),
    (
        3,
        "pending membership",
        include_str!("../../migrations/sqlite/0003_pending_membership.sql"),
    ),
    (
        4,
        "config last good",
        include_str!("../../migrations/sqlite/0004_config_last_good.sql"),
    ),
    (
        5,
        "nodes",
        include_str!("../../migrations/sqlite/0005_nodes.sql"),
    ),
    (
        6,
        "change token",
        include_str!("../../migrations/sqlite/0006_change_token.sql"),
    ),
    (
        7,
        "removed at source",
        include_str!("../../migrations/sqlite/0007_removed_at_source.sql"),
    ),
];

/// PostgreSQL migrations.
const POSTGRES: &[Embedded] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "email normalization",
        include_str!("../../migrations/postgres/0002_email_normalization.sql"),
    ),
    (
        3,
        "pending membership",
        include_str!("../../migrations/postgres/0003_pending_membership.sql"),
    ),
    (
        4,
        "config last good",
        include_str!("../../migrations/postgres/0004_config_last_good.sql"),
    ),
    (
        5,
        "nodes",
        include_str!("../../migrations/postgres/0005_nodes.sql"),
    ),
    (
        6,
        "change token",
        include_str!("../../migrations/postgres/0006_change_token.sql"),
    ),
    (
        7,
        "removed at source",
        include_str!("../../migrations/postgres/0007_removed_at_source.sql"),
    ),
];

/// Newest version this binary knows (the same on both backends).
pub(crate) fn latest() -> i64 {
    SQLITE.iter().map(|m| m.0).max().unwrap_or(0)
}

fn migrator(embedded: &[Embedded]) -> Migrator {
    let migrations = embedded
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                AssertSqlSafe(sql).into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(TABLE);
    migrator
}

/// Migrates an SQLite store (see the module doc for concurrent first starts).
pub(crate) async fn run_sqlite(pool: &sqlx::SqlitePool) -> StoreResult<()> {
    let migrator = migrator(SQLITE);
    let mut attempts = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            // Another process applied the same migration first (its transaction won);
            // what it applied is read again on the next attempt.
            Err(MigrateError::ExecuteMigration(..) | MigrateError::Execute(_)) if attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempts)).await;
            }
            Err(error) => return Err(refusal(error)),
        }
    }
}

/// Migrates a PostgreSQL store (sqlx's advisory lock serializes concurrent starts).
pub(crate) async fn run_postgres(pool: &sqlx::PgPool) -> StoreResult<()> {
    migrator(POSTGRES).run(pool).await.map_err(refusal)
}

/// What a failed migration means for the person starting tributary.
fn refusal(error: MigrateError) -> StoreError {
    let supported = latest();
    match error {
        MigrateError::VersionMissing(found) if found > supported => {
            StoreError::TooNew { found, supported }
        }
        MigrateError::VersionMismatch(version) => StoreError::MigrationChanged { version },
        other => StoreError::Migration {
            cause: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_without_gaps_and_match_across_backends() {
        for list in [SQLITE, POSTGRES] {
            for (index, migration) in list.iter().enumerate() {
                assert_eq!(migration.0, index as i64 + 1);
            }
        }
        let versions = |list: &[Embedded]| list.iter().map(|m| m.0).collect::<Vec<_>>();
        assert_eq!(versions(SQLITE), versions(POSTGRES));
    }
}
