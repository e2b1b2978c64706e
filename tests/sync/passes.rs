//! Pass decisions: lookback, a periodic full refresh, a configuration change that drops a
//! saved position, and records the service marks deleted.

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use tributary::engine::PassKind;
use tributary::store::RunOutcome;

use super::fakes::{self, TOKEN};
use crate::common::fake::{FakeService, db, epoch, people};
use crate::common::sync_env::{SyncEnv, emails};

fn importer(env: &SyncEnv, base: &str, extra: &str) -> String {
    format!(
        "connector: pipedrive\ncredentials:\n  api_token: {}\nsettings:\n  base: \"{base}\"\nlist: People\n{extra}",
        env.secret("pd", TOKEN)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_pass_reads_back_by_the_lookback() {
    let fake = FakeService::start(fakes::pipedrive(db(people(3)))).await;
    let env = SyncEnv::new();
    env.connector(
        "pipedrive",
        &fakes::PIPEDRIVE_CONNECTOR.replace(
            "  mode: incremental\n",
            "  mode: incremental\n  lookback: PT1H\n",
        ),
    );
    env.importer("pd", &importer(&env, &fake.base, ""));
    env.run("pd").await.unwrap();
    fake.clear();
    let second = env.run("pd").await.unwrap();
    assert_eq!(second.pass, PassKind::Incremental);
    // Watermark 10:00:03 minus one hour; everyone is read again, nothing rewritten.
    assert_eq!(
        fake.requests()[0].q("updated_since"),
        Some("2024-05-01T09:00:03Z")
    );
    assert_eq!((second.counts.fetched, second.counts.unchanged), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_comes_when_it_is_due() {
    let fake = FakeService::start(fakes::pipedrive(db(people(3)))).await;
    let env = SyncEnv::new();
    env.connector(
        "pipedrive",
        &fakes::PIPEDRIVE_CONNECTOR.replace(
            "  mode: incremental\n",
            "  mode: incremental\n  full_refresh_every: PT1M\n",
        ),
    );
    env.importer("pd", &importer(&env, &fake.base, ""));
    assert_eq!(env.run("pd").await.unwrap().pass, PassKind::First);
    assert_eq!(
        env.run("pd").await.unwrap().pass,
        PassKind::Incremental,
        "not due yet"
    );

    // Make the last full pass two minutes old.
    let store = env.store().await;
    let lease = store
        .acquire_lease("pd", StdDuration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let mut checkpoint = store.importer_state("pd").await.unwrap().checkpoint;
    checkpoint.last_full_refresh = Some(Utc::now() - Duration::minutes(2));
    store
        .save_checkpoint("pd", lease.fencing_token, &checkpoint)
        .await
        .unwrap();
    store.release_lease(&lease).await.unwrap();

    fake.clear();
    let third = env.run("pd").await.unwrap();
    assert_eq!(third.pass, PassKind::FullRefresh);
    assert_eq!(
        fake.requests()[0].q("updated_since"),
        None,
        "a full pass asks for everyone"
    );
    assert_eq!(third.counts.unchanged, 3);
    let state = store.importer_state("pd").await.unwrap();
    assert!(state.checkpoint.last_full_refresh.unwrap() > Utc::now() - Duration::minutes(1));
    assert_eq!(
        state.checkpoint.watermark,
        Some(epoch() + Duration::seconds(3))
    );
    assert_eq!(env.run("pd").await.unwrap().pass, PassKind::Incremental);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_configuration_starts_a_new_pass() {
    let people = people(5);
    let fake = FakeService::start(fakes::pipedrive(db(people.clone()))).await;
    let env = SyncEnv::new();
    env.connector("pipedrive", fakes::PIPEDRIVE_CONNECTOR);
    env.importer(
        "pd",
        &importer(&env, &fake.base, "page_size: 2\npage_budget: 1\n"),
    );
    let first = env.run("pd").await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Partial);
    // Same importer, another page size: the saved cursor means nothing any more.
    env.importer(
        "pd",
        &importer(&env, &fake.base, "page_size: 3\npage_budget: 0\n"),
    );
    fake.clear();
    let second = env.run("pd").await.unwrap();
    assert!(!second.resumed);
    assert_eq!(second.outcome, RunOutcome::Completed);
    let requests = fake.requests();
    assert_eq!(requests[0].q("cursor"), None);
    assert_eq!(requests[0].q("limit"), Some("3"));
    assert_eq!(emails(&env.contacts("People").await).len(), 5);

    // While an unchanged configuration resumes.
    env.importer(
        "pd",
        &importer(&env, &fake.base, "page_size: 2\npage_budget: 1\n"),
    );
    let store = env.store().await;
    let lease = store
        .acquire_lease("pd", StdDuration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let mut checkpoint = store.importer_state("pd").await.unwrap().checkpoint;
    checkpoint.watermark = None;
    checkpoint.last_full_refresh = None;
    store
        .save_checkpoint("pd", lease.fencing_token, &checkpoint)
        .await
        .unwrap();
    store.release_lease(&lease).await.unwrap();
    env.run("pd").await.unwrap();
    fake.clear();
    let resumed = env.run("pd").await.unwrap();
    assert!(resumed.resumed);
    assert_eq!(fake.requests()[0].q("cursor"), Some("cur-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_marked_deleted_is_a_removal_not_a_skip() {
    let shared = db(people(3));
    let fake = FakeService::start(fakes::pipedrive(shared.clone())).await;
    let env = SyncEnv::new();
    env.connector(
        "pipedrive",
        &fakes::PIPEDRIVE_CONNECTOR.replace(
            "  custom_fields:\n",
            "  deleted: {path: $.is_deleted, equals: true}\n  custom_fields:\n",
        ),
    );
    env.importer("pd", &importer(&env, &fake.base, ""));
    env.run("pd").await.unwrap();
    {
        let mut people = shared.lock().unwrap();
        people[1].deleted = true;
        people[1].updated = epoch() + Duration::seconds(60);
    }
    let second = env.run("pd").await.unwrap();
    assert_eq!((second.counts.deleted, second.counts.skipped), (1, 0));
    let stored = env.contacts("People").await;
    assert_eq!(stored.len(), 3, "the contact itself is kept");
    let two = stored
        .iter()
        .find(|c| c.email == "person2@example.com")
        .unwrap();
    assert!(
        two.sources
            .iter()
            .any(|s| s.importer == "pd" && s.deleted_at.is_some())
    );
    let one = stored
        .iter()
        .find(|c| c.email == "person1@example.com")
        .unwrap();
    assert!(one.sources.iter().all(|s| s.deleted_at.is_none()));
}
