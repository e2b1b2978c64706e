//! Embedded schema migrations, one list per backend, applied at start in order.
//!
//! We keep our own small runner instead of `sqlx::migrate!` (which needs sqlx's macros
//! feature and a build-time path) because we need one more check than it gives: a store
//! migrated by a newer tributary must be refused with a message saying so, before
//! anything touches it. Each migration runs in its own transaction with its version row;
//! the backends serialize concurrent starts (SQLite `BEGIN IMMEDIATE`, PostgreSQL a table
//! lock on the version table). Never edit a released migration: add a new one.

/// One migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Version, increasing from 1 without gaps.
    pub version: i64,
    /// Short description, stored with the version.
    pub description: &'static str,
    /// The SQL (several statements).
    pub sql: &'static str,
}

/// SQLite migrations.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial",
        sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "page writes check parents once",
        sql: include_str!("../../migrations/sqlite/0002_page_writes_check_parents_once.sql"),
    },
];

/// PostgreSQL migrations.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "page writes check parents once",
        sql: include_str!("../../migrations/postgres/0002_page_writes_check_parents_once.sql"),
    },
];

/// Newest version in a list.
pub(crate) fn latest(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Checksum stored with each applied migration, so an edited released migration is
/// noticed.
pub(crate) fn checksum(migration: &Migration) -> String {
    blake3::hash(migration.sql.as_bytes()).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_without_gaps() {
        for list in [SQLITE, POSTGRES] {
            for (index, migration) in list.iter().enumerate() {
                assert_eq!(migration.version, index as i64 + 1);
            }
        }
        assert_eq!(latest(SQLITE), latest(POSTGRES));
    }
}
