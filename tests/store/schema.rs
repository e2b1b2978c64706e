//! Migrations at start, refusal of a newer store, SQLite file settings.

use std::os::unix::fs::PermissionsExt;

use tributary::store::{self, Backend, StoreError, StoreOptions};

use super::harness::{Ctx, RecordExt, on_both_backends};

async fn migrations_apply_once_and_a_newer_store_is_refused(ctx: Ctx) {
    let applied = "SELECT COUNT(*) FROM tributary_schema";
    // Every migration shipped for this backend, once.
    let dir = match ctx.backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count() as i64;
    assert!(shipped >= 4);
    assert_eq!(ctx.count(applied).await, shipped);
    // Opening again applies nothing twice.
    ctx.reopen(ctx.options()).await.unwrap();
    assert_eq!(ctx.count(applied).await, shipped);

    let checksum = match ctx.backend {
        Backend::Sqlite => "X'00'",
        Backend::Postgres => "'\\x00'::bytea",
    };
    ctx.exec(&format!(
        "INSERT INTO tributary_schema (version, description, success, checksum, execution_time)
         VALUES (999, 'from the future', TRUE, {checksum}, 0)"
    ))
    .await;
    let error = ctx.reopen(ctx.options()).await.err().unwrap();
    assert!(
        matches!(error, StoreError::TooNew { found: 999, .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("newer than this binary"), "{message}");
    assert!(message.contains("upgrade tributary"), "{message}");
}

/// sqlx keeps a checksum of each applied migration: a store whose migration 1 was
/// applied from other SQL than this binary carries (a released migration edited since)
/// is refused with a message saying which and what to do, and left untouched.
async fn an_edited_applied_migration_is_refused(ctx: Ctx) {
    ctx.store.ensure_list("customers").await.unwrap();
    let other_checksum = match ctx.backend {
        Backend::Sqlite => "X'00'",
        Backend::Postgres => "'\\x00'::bytea",
    };
    ctx.exec(&format!(
        "UPDATE tributary_schema SET checksum = {other_checksum} WHERE version = 1"
    ))
    .await;
    let error = ctx.reopen(ctx.options()).await.err().unwrap();
    assert!(
        matches!(error, StoreError::MigrationChanged { version: 1 }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("store migration 1 was applied with different SQL"),
        "{message}"
    );
    assert!(message.contains("add a new migration"), "{message}");
    assert_eq!(ctx.count("SELECT COUNT(*) FROM lists").await, 1);
}

/// Page writes check a page's list and fields once (SQLite with its foreign keys switched
/// off for the write, PostgreSQL without per-row foreign keys since migration 2), so both
/// must still refuse a page naming a list or field that is not in the store, and deleting
/// a contact, list or field by hand must still take what hangs off it along.
async fn missing_parents_are_refused_and_deletes_cascade(ctx: Ctx) {
    use tributary::model::{CustomFieldDef, CustomFieldType, FieldValue};

    let store = &ctx.store;
    let def = |tag: &str| CustomFieldDef {
        tag: tag.into(),
        label: tag.trim_matches('%').into(),
        field_type: CustomFieldType::Text,
        service: "crm".into(),
    };
    let mut crm = super::harness::importer(store, "crm", "Customers").await;
    crm.fields = store
        .ensure_custom_fields(&[def("%CRM_TIER%"), def("%CRM_REGION%")])
        .await
        .unwrap();
    let records: Vec<_> = (0..3)
        .map(|i| {
            super::harness::rec(&format!("p{i}@example.com"))
                .external(&i.to_string())
                .custom(0, FieldValue::Text(format!("tier {i}")))
                .custom(1, FieldValue::Text(format!("region {i}")))
        })
        .collect();
    assert_eq!(crm.write(store, &records).await.unwrap().created, 3);
    let shop = super::harness::importer(store, "shop", "Buyers").await;
    shop.write(store, &records[..1]).await.unwrap();

    let count = |table: &str| format!("SELECT COUNT(*) FROM {table}");
    assert_eq!(ctx.count(&count("field_values")).await, 6);
    assert_eq!(ctx.count(&count("memberships")).await, 4);
    assert_eq!(ctx.count(&count("contact_sources")).await, 4);

    // A page for a list or a field that is not there is refused, and writes nothing.
    let mut stray = super::harness::importer(store, "stray", "Other").await;
    stray.list_id = 987_654;
    let error = stray
        .write(store, &[super::harness::rec("q@example.com")])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not in the store"), "{error}");
    let mut stray = super::harness::importer(store, "stray-field", "Other").await;
    stray.fields = crm.fields.clone();
    stray.fields[1].field_id = 987_654;
    let error = stray
        .write(store, &[super::harness::rec("q@example.com")])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not in the store"), "{error}");
    assert_eq!(
        ctx.count("SELECT COUNT(*) FROM contacts WHERE email = 'q@example.com'")
            .await,
        0
    );

    // Deleting by hand: a contact takes its values, memberships and sources along; a
    // list its memberships; a field its values.
    let on = if ctx.backend == tributary::store::Backend::Sqlite {
        "PRAGMA foreign_keys = ON; "
    } else {
        ""
    };
    ctx.exec(&format!(
        "{on}DELETE FROM contacts WHERE email = 'p0@example.com'"
    ))
    .await;
    assert_eq!(ctx.count(&count("field_values")).await, 4);
    assert_eq!(ctx.count(&count("memberships")).await, 2);
    assert_eq!(ctx.count(&count("contact_sources")).await, 2);
    ctx.exec(&format!("{on}DELETE FROM lists WHERE name = 'Customers'"))
        .await;
    assert_eq!(ctx.count(&count("memberships")).await, 0);
    ctx.exec(&format!(
        "{on}DELETE FROM custom_fields WHERE tag = '%CRM_REGION%'"
    ))
    .await;
    assert_eq!(ctx.count(&count("field_values")).await, 2);
    assert_eq!(ctx.count(&count("contacts")).await, 2);

    // PostgreSQL: truncating contacts truncates what hangs off them (SQLite has no
    // TRUNCATE).
    if ctx.backend == tributary::store::Backend::Postgres {
        assert_eq!(ctx.count(&count("contact_sources")).await, 2);
        ctx.exec("TRUNCATE contacts").await;
        for table in ["field_values", "memberships", "contact_sources"] {
            assert_eq!(ctx.count(&count(table)).await, 0, "{table}");
        }
    }
}

/// Migration 3 (pending memberships) keeps every membership a store already has: run
/// again over rows of each status, it leaves them as they were and `pending` is allowed
/// afterwards (SQLite rebuilds the table to change its CHECK).
async fn the_pending_membership_migration_keeps_memberships(ctx: Ctx) {
    let (now, ids) = match ctx.backend {
        Backend::Sqlite => ("'2024-05-01T10:00:00Z'", ""),
        Backend::Postgres => (
            "TIMESTAMPTZ '2024-05-01T10:00:00Z'",
            "OVERRIDING SYSTEM VALUE",
        ),
    };
    ctx.exec(&format!(
        "INSERT INTO lists (id, name, created_at) {ids} VALUES (1, 'news', {now});
         INSERT INTO contacts (id, email, status, created_at, updated_at) {ids}
            VALUES (1, 'a@example.com', 'normal', {now}, {now}),
                   (2, 'b@example.com', 'normal', {now}, {now});
         INSERT INTO memberships (list_id, contact_id, status, origin, created_at,
            subscribed_at, unsubscribed_at, updated_at)
            VALUES (1, 1, 'active', 'import', {now}, {now}, NULL, {now}),
                   (1, 2, 'unsubscribed', 'person', {now}, NULL, {now}, {now});"
    ))
    .await;
    let migration = match ctx.backend {
        Backend::Sqlite => include_str!("../../migrations/sqlite/0003_pending_membership.sql"),
        Backend::Postgres => {
            include_str!("../../migrations/postgres/0003_pending_membership.sql")
        }
    };
    ctx.exec(migration).await;
    assert_eq!(
        ctx.count(
            "SELECT COUNT(*) FROM memberships WHERE (contact_id = 1 AND status = 'active'
                AND subscribed_at IS NOT NULL) OR (contact_id = 2 AND status = 'unsubscribed'
                AND origin = 'person' AND unsubscribed_at IS NOT NULL)"
        )
        .await,
        2
    );
    ctx.exec("UPDATE memberships SET status = 'pending' WHERE contact_id = 1")
        .await;
    assert_eq!(
        ctx.count("SELECT COUNT(*) FROM memberships WHERE status = 'pending'")
            .await,
        1
    );
}

/// The last good config versions the daemon keeps: saved, replaced, read back by path,
/// forgotten, all in the store (so they survive the process).
async fn config_files_are_kept_replaced_and_forgotten(ctx: Ctx) {
    let file = |path: &str, text: &str| store::ConfigFileText {
        path: path.into(),
        sha256: format!("sha-of-{text}"),
        text: text.into(),
    };
    let a = file("/etc/tributary/importers.d/a.yaml", "list: A\n");
    let b = file("/etc/tributary/importers.d/b.yaml", "list: B\n");
    ctx.store
        .save_config_files(&[a.clone(), b.clone()], &[])
        .await
        .unwrap();
    let a2 = file(&a.path, "list: A2\n");
    ctx.store
        .save_config_files(std::slice::from_ref(&a2), &[])
        .await
        .unwrap();
    let hashes = ctx.store.config_file_hashes().await.unwrap();
    assert_eq!(hashes.len(), 2);
    assert_eq!(hashes[&a.path], a2.sha256);
    let texts = ctx
        .store
        .config_file_texts(&[a.path.clone(), "/nowhere.yaml".into()])
        .await
        .unwrap();
    assert_eq!(texts, [a2]);
    ctx.store
        .save_config_files(&[], std::slice::from_ref(&b.path))
        .await
        .unwrap();
    assert!(
        ctx.store
            .config_file_texts(std::slice::from_ref(&b.path))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(ctx.store.config_file_hashes().await.unwrap().len(), 1);
}

on_both_backends!(
    config_files_are_kept_replaced_and_forgotten,
    migrations_apply_once_and_a_newer_store_is_refused,
    the_pending_membership_migration_keeps_memberships,
    an_edited_applied_migration_is_refused,
    missing_parents_are_refused_and_deletes_cascade,
);

#[tokio::test]
async fn sqlite_store_and_key_file_are_owner_only_and_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("tributary.db");
    let url = format!("sqlite://{}", path.display());
    let opened = store::open(&url, StoreOptions::default()).await.unwrap();
    assert_eq!(opened.backend(), Backend::Sqlite);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "store file mode {mode:o}");
    let key = path.with_file_name("tributary.db.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode {mode:o}");
    assert_eq!(std::fs::read(&key).unwrap().len(), 64, "32 bytes as hex");

    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    let concrete = tributary::store::sqlite::SqliteStore::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(concrete.pool())
        .await
        .unwrap();
    assert_eq!(synchronous, 1, "NORMAL on the store's connections");
    let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
        .fetch_one(concrete.pool())
        .await
        .unwrap();
    assert_eq!(
        cache,
        -8 * 1024,
        "8 MiB of page cache on the store's connections"
    );

    // The WAL and shared-memory files SQLite creates inherit the owner-only mode.
    opened.ensure_list("customers").await.unwrap();
    for suffix in ["-wal", "-shm"] {
        let side = path.with_file_name(format!("tributary.db{suffix}"));
        let mode = std::fs::metadata(&side).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{suffix} mode {mode:o}");
    }
}

#[tokio::test]
async fn unknown_schemes_and_memory_stores_are_refused_clearly() {
    let error = store::open("mysql://x", StoreOptions::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("unsupported store url scheme `mysql`"),
        "{error}"
    );
    let error = store::open("sqlite::memory:", StoreOptions::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("needs a file path"), "{error}");
}

/// A page write switches foreign keys off for its own transaction only: afterwards every
/// connection of the pool enforces them again, and a page naming a list that is not in
/// the store is refused rather than written. `close` leaves no WAL behind.
#[tokio::test]
async fn sqlite_page_writes_leave_foreign_keys_on_and_close_truncates_the_wal() {
    use std::sync::Arc;
    use tributary::store::Store;
    use tributary::store::sqlite::SqliteStore;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tributary.db");
    let url = format!("sqlite://{}", path.display());
    let concrete = Arc::new(
        SqliteStore::open(&url, StoreOptions::default())
            .await
            .unwrap(),
    );
    let dyn_store: Arc<dyn Store> = concrete.clone();
    let crm = super::harness::importer(&dyn_store, "crm", "Customers").await;
    let records: Vec<_> = (0..50)
        .map(|i| super::harness::rec(&format!("p{i}@example.com")))
        .collect();
    crm.write(&dyn_store, &records).await.unwrap();

    dyn_store.close().await;
    let wal = dir.path().join("tributary.db-wal");
    let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(
        wal_bytes, 0,
        "the WAL is copied back and truncated on close"
    );

    // Every pooled connection (acquired together, so all of them, the one page writes
    // kept included: `close` gave it back) enforces foreign keys.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(concrete.pool().acquire().await.unwrap());
    }
    for conn in &mut held {
        let on: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(on, 1, "foreign keys back on after a page write");
    }
    drop(held);

    // The store stays usable after `close`.
    let mut stray = super::harness::importer(&dyn_store, "stray", "Other").await;
    stray.list_id = 987_654;
    let error = stray
        .write(&dyn_store, &[super::harness::rec("q@example.com")])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not in the store"), "{error}");
    crm.write(&dyn_store, &[super::harness::rec("late@example.com")])
        .await
        .unwrap();
}
