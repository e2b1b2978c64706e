//! A temporary Tributary configuration (daemon config, connectors, importers, SQLite or
//! PostgreSQL store) that goes through the real loader and the real engine.

use std::path::PathBuf;
use std::sync::Arc;

use tributary::config::load::load_plan;
use tributary::engine::{RunError, RunOptions, RunSummary, run_importer};
use tributary::plan::Plan;
use tributary::store::{ContactFilter, ContactView, Store, StoreOptions};

/// A config tree in a temp dir.
pub struct SyncEnv {
    /// The temp dir (removed on drop).
    pub dir: tempfile::TempDir,
    /// `tributary.yaml`.
    pub config: PathBuf,
    /// The store URL written in it.
    pub store_url: String,
}

impl SyncEnv {
    /// A tree with a SQLite store in the temp dir.
    pub fn new() -> SyncEnv {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tributary.db").display());
        SyncEnv::with_store(dir, url)
    }

    /// A tree whose store is `url`.
    pub fn with_store(dir: tempfile::TempDir, store_url: String) -> SyncEnv {
        std::fs::create_dir_all(dir.path().join("connectors.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("importers.d")).unwrap();
        let config = dir.path().join("tributary.yaml");
        std::fs::write(&config, format!("store: \"{store_url}\"\n")).unwrap();
        SyncEnv {
            dir,
            config,
            store_url,
        }
    }

    /// Writes `connectors.d/<id>.yaml`.
    pub fn connector(&self, id: &str, yaml: &str) -> &Self {
        std::fs::write(
            self.dir.path().join(format!("connectors.d/{id}.yaml")),
            yaml,
        )
        .unwrap();
        self
    }

    /// Writes `importers.d/<id>.yaml`.
    pub fn importer(&self, id: &str, yaml: &str) -> &Self {
        std::fs::write(self.dir.path().join(format!("importers.d/{id}.yaml")), yaml).unwrap();
        self
    }

    /// Loads the tree with the real loader; panics with every diagnostic if invalid.
    pub fn plan(&self) -> Plan {
        match load_plan(&self.config) {
            Ok(plan) => plan,
            Err(diagnostics) => {
                let text: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
                panic!("config does not load:\n{}", text.join("\n"));
            }
        }
    }

    /// Opens the store.
    pub async fn store(&self) -> Arc<dyn Store> {
        tributary::store::open(&self.store_url, StoreOptions::default())
            .await
            .unwrap()
    }

    /// Runs an importer with default options and the `limits` of `tributary.yaml`.
    pub async fn run(&self, importer: &str) -> Result<RunSummary, RunError> {
        let limits = self.plan().daemon.limits;
        self.run_with(
            importer,
            RunOptions {
                limits,
                ..RunOptions::default()
            },
        )
        .await
    }

    /// Runs an importer with `options`.
    pub async fn run_with(
        &self,
        importer: &str,
        options: RunOptions,
    ) -> Result<RunSummary, RunError> {
        let plan = self.plan();
        let importer = plan
            .importers
            .get(importer)
            .expect("importer exists")
            .clone();
        // A store that cannot be opened fails the run as the CLI's would, so tests that
        // cut the store's connections see a failed run, not a panic.
        let store = tributary::store::open(&self.store_url, StoreOptions::default())
            .await
            .map_err(|source| RunError::Store {
                importer: importer.id.clone(),
                source,
            })?;
        run_importer(importer, store, options).await
    }

    /// Every contact in `list`, sorted by email.
    pub async fn contacts(&self, list: &str) -> Vec<ContactView> {
        let store = self.store().await;
        let mut contacts = store
            .contacts(&ContactFilter {
                list: Some(list.to_string()),
                ..ContactFilter::default()
            })
            .await
            .unwrap();
        contacts.sort_by(|a, b| a.email.cmp(&b.email));
        contacts
    }

    /// Writes a secret file and returns the `{file: ...}` reference to it.
    pub fn secret(&self, name: &str, value: &str) -> String {
        let path = self.dir.path().join(format!("{name}.secret"));
        std::fs::write(&path, value).unwrap();
        format!("{{file: \"{}\"}}", path.display())
    }

    /// Every contact in the store, sorted by email.
    pub async fn all_contacts(&self) -> Vec<ContactView> {
        let store = self.store().await;
        let mut contacts = store.contacts(&ContactFilter::default()).await.unwrap();
        contacts.sort_by(|a, b| a.email.cmp(&b.email));
        contacts
    }
}

/// The custom value of `tag` on a contact, as the store shows it.
pub fn field<'a>(contact: &'a ContactView, tag: &str) -> Option<&'a str> {
    contact
        .fields
        .iter()
        .find(|f| f.tag == tag)
        .map(|f| f.value.as_str())
}

/// The emails of contacts.
pub fn emails(contacts: &[ContactView]) -> Vec<String> {
    contacts.iter().map(|c| c.email.clone()).collect()
}
