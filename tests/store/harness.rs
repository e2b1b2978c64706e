//! Runs each store test on a fresh SQLite file and on a fresh PostgreSQL schema.
//!
//! PostgreSQL is reached at `$TRIBUTARY_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`); a test that cannot reach it fails, it is
//! never skipped. Each test gets its own schema (`search_path` set through the URL), so
//! tests run in parallel against the shared server, and the schema is dropped afterwards
//! even when the test panics.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, Row};
use tributary::model::{
    Checkpoint, ContactRecord, CustomValue, FieldBinding, FieldValue, PageOutcome, PageWrite,
    SubscriptionMeaning,
};
use tributary::store::{self, Backend, KeySource, Lease, Store, StoreOptions, StoreResult};

/// Key material tests configure (PostgreSQL has no key file beside it).
pub const TEST_KEY: &[u8] = b"tributary test key material 0123456789";

/// One test's store and how to reach its database again.
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub backend: Backend,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Ctx {
    /// Options like the ones the test store was opened with.
    pub fn options(&self) -> StoreOptions {
        let mut options = StoreOptions::default();
        if self.backend == Backend::Postgres {
            options.encryption_key = Some(KeySource::Bytes(TEST_KEY.to_vec()));
        }
        options
    }

    /// Opens a second store on the same database (another process, as far as the store
    /// can tell when `options.lease_holder` differs).
    pub async fn reopen(&self, options: StoreOptions) -> StoreResult<Arc<dyn Store>> {
        store::open(&self.url, options).await
    }

    /// Runs raw SQL on the test database (checks and tampering only).
    pub async fn exec(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }

    /// The first column of every row of a query, as bytes (BLOB/BYTEA or text).
    pub async fn column_bytes(&self, sql: &str) -> Vec<Vec<u8>> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query(AssertSqlSafe(sql.to_string()))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.try_get::<Vec<u8>, _>(0).unwrap())
                    .collect()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(AssertSqlSafe(sql.to_string()))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.try_get::<Vec<u8>, _>(0).unwrap())
                    .collect()
            }
        }
    }

    /// A count query's result.
    pub async fn count(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }
}

/// The PostgreSQL server tests use.
pub fn pg_base_url() -> String {
    std::env::var("TRIBUTARY_TEST_PG")
        .unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/test"))
}

fn random_suffix() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `test` on a fresh store of `backend`.
pub async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("store.db").display());
            let store = store::open(&url, StoreOptions::default()).await.unwrap();
            let ctx = Ctx {
                store,
                backend,
                url,
                dir,
            };
            let result = tokio::spawn(test(ctx)).await;
            if let Err(error) = result {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        Backend::Postgres => {
            let base = pg_base_url();
            let mut admin = match tokio::time::timeout(
                Duration::from_secs(20),
                sqlx::PgConnection::connect(&base),
            )
            .await
            {
                Ok(Ok(conn)) => conn,
                Ok(Err(error)) => panic!(
                    "cannot reach PostgreSQL at $TRIBUTARY_TEST_PG ({base}): {error}; store tests need it (run scripts/test)"
                ),
                Err(_) => panic!("timed out connecting to PostgreSQL at {base}"),
            };
            let schema = format!("store_test_{}", random_suffix());
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut admin)
                .await
                .unwrap();
            let separator = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{separator}options[search_path]={schema}");
            let options = StoreOptions {
                encryption_key: Some(KeySource::Bytes(TEST_KEY.to_vec())),
                max_connections: Some(4),
                ..StoreOptions::default()
            };
            let opened = store::open(&url, options).await;
            let result = match opened {
                Ok(store) => {
                    let ctx = Ctx {
                        store,
                        backend,
                        url,
                        dir,
                    };
                    tokio::spawn(test(ctx)).await.map_err(|e| e.into_panic())
                }
                Err(error) => Err(Box::new(format!("opening the store failed: {error}"))
                    as Box<dyn std::any::Any + Send>),
            };
            let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await;
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Declares each listed async test function (taking a [`Ctx`]) as two tests,
/// `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::store::harness::run(tributary::store::Backend::Sqlite, super::$name).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::store::harness::run(tributary::store::Backend::Postgres, super::$name).await
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;

// ------------------------------------------------------------------------------------
// Record and page helpers
// ------------------------------------------------------------------------------------

/// A record with a real content hash (computed from its content, as the engine does).
pub fn rec(email: &str) -> ContactRecord {
    ContactRecord {
        email: email.to_string(),
        first_name: None,
        last_name: None,
        phone: None,
        organization: None,
        external_id: None,
        updated_at: None,
        custom_values: Vec::new(),
        service_status: None,
        content_hash: String::new(),
    }
    .hashed()
}

/// Builder-style edits that keep the hash honest.
pub trait RecordExt: Sized {
    fn hashed(self) -> Self;
    fn first(self, value: &str) -> Self;
    fn last(self, value: &str) -> Self;
    fn phone(self, value: &str) -> Self;
    fn org(self, value: &str) -> Self;
    fn external(self, value: &str) -> Self;
    fn custom(self, field: usize, value: FieldValue) -> Self;
    fn status(self, meaning: SubscriptionMeaning) -> Self;
}

impl RecordExt for ContactRecord {
    fn hashed(mut self) -> Self {
        self.content_hash = String::new();
        self.content_hash = blake3::hash(format!("{self:?}").as_bytes())
            .to_hex()
            .to_string();
        self
    }
    fn first(mut self, value: &str) -> Self {
        self.first_name = Some(value.to_string());
        self.hashed()
    }
    fn last(mut self, value: &str) -> Self {
        self.last_name = Some(value.to_string());
        self.hashed()
    }
    fn phone(mut self, value: &str) -> Self {
        self.phone = Some(value.to_string());
        self.hashed()
    }
    fn org(mut self, value: &str) -> Self {
        self.organization = Some(value.to_string());
        self.hashed()
    }
    fn external(mut self, value: &str) -> Self {
        self.external_id = Some(value.to_string());
        self.hashed()
    }
    fn custom(mut self, field: usize, value: FieldValue) -> Self {
        self.custom_values.push(CustomValue { field, value });
        self.hashed()
    }
    fn status(mut self, meaning: SubscriptionMeaning) -> Self {
        self.service_status = Some(meaning);
        self.hashed()
    }
}

/// An importer ready to write: its list, lease and run.
pub struct Importer {
    pub id: String,
    pub list_id: i64,
    pub lease: Lease,
    pub run_id: i64,
    pub fields: Vec<FieldBinding>,
}

/// Takes the lease, ensures the list and begins a run.
pub async fn importer(store: &Arc<dyn Store>, id: &str, list: &str) -> Importer {
    let list_id = store.ensure_list(list).await.unwrap();
    let lease = store
        .acquire_lease(id, Duration::from_secs(300))
        .await
        .unwrap()
        .expect("lease is free");
    let run_id = store.begin_run(id).await.unwrap();
    Importer {
        id: id.to_string(),
        list_id,
        lease,
        run_id,
        fields: Vec::new(),
    }
}

impl Importer {
    /// Writes one page with an empty checkpoint.
    pub async fn write(
        &self,
        store: &Arc<dyn Store>,
        contacts: &[ContactRecord],
    ) -> StoreResult<PageOutcome> {
        self.write_with(store, contacts, &[], &Checkpoint::default())
            .await
    }

    /// Writes one page with deletions and a checkpoint.
    pub async fn write_with(
        &self,
        store: &Arc<dyn Store>,
        contacts: &[ContactRecord],
        deleted: &[String],
        checkpoint: &Checkpoint,
    ) -> StoreResult<PageOutcome> {
        store
            .write_page(PageWrite {
                importer: &self.id,
                run_id: self.run_id,
                fencing_token: self.lease.fencing_token,
                list_id: self.list_id,
                fields: &self.fields,
                contacts,
                deleted_external_ids: deleted,
                seen_pass: None,
                seen_external_ids: &[],
                sweep: false,
                checkpoint,
                counts: tributary::model::PageCounts {
                    pages: 1,
                    fetched: (contacts.len() + deleted.len()) as u64,
                    deleted: deleted.len() as u64,
                    ..Default::default()
                },
            })
            .await
    }
}
