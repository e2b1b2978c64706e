//! Run leases: one run per importer at a time, fenced page writes, quick takeover from a
//! dead local process.

use std::time::Duration;

use chrono::Utc;
use tributary::model::Checkpoint;
use tributary::store::lease::LeaseHolder;
use tributary::store::{Clock, ManualClock, StoreError};

use super::harness::{Ctx, RecordExt, importer, on_both_backends, rec};

fn holder(pid: u32) -> LeaseHolder {
    LeaseHolder {
        node: LeaseHolder::current().node,
        pid,
    }
}

fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

async fn a_held_lease_excludes_others_until_it_expires(ctx: Ctx) {
    // Time is driven, never slept: every store here reads this clock.
    let clock = ManualClock::new(Utc::now());
    // Another live process of this host (pid 1 always exists).
    let mut options = ctx.options();
    options.clock = Clock::Manual(clock.clone());
    let store = ctx.reopen(options.clone()).await.unwrap();
    options.lease_holder = holder(1);
    let other = ctx.reopen(options).await.unwrap();

    let first = store
        .acquire_lease("crm", Duration::from_secs(1))
        .await
        .unwrap()
        .expect("free lease");
    assert!(first.owner.contains(&format!(":{}:", std::process::id())));
    assert!(
        other
            .acquire_lease("crm", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );
    // The same process cannot start a second run of the importer either.
    assert!(
        store
            .acquire_lease("crm", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );
    // Other importers are independent.
    assert!(
        other
            .acquire_lease("shop", Duration::from_secs(60))
            .await
            .unwrap()
            .is_some()
    );

    clock.advance(Duration::from_millis(1300));
    let second = other
        .acquire_lease("crm", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("expired lease is taken over");
    assert!(second.fencing_token > first.fencing_token);
    assert_ne!(second.owner, first.owner);

    // The first holder lost it: renewing and writing are refused.
    let renewed = store
        .renew_lease(&first, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(renewed, StoreError::LeaseLost { .. }), "{renewed}");
    let list_id = store.ensure_list("customers").await.unwrap();
    let run_id = store.begin_run("crm").await.unwrap();
    let checkpoint = Checkpoint {
        fingerprint: Some("stale".into()),
        ..Checkpoint::default()
    };
    let written = store
        .write_page(tributary::model::PageWrite {
            importer: "crm",
            run_id,
            fencing_token: first.fencing_token,
            list_id,
            fields: &[],
            contacts: &[rec("ada@example.com")],
            deleted_external_ids: &[],
            seen_pass: None,
            seen_external_ids: &[],
            sweep: false,
            checkpoint: &checkpoint,
            counts: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(matches!(written, StoreError::LeaseLost { .. }), "{written}");
    let saved = store
        .save_checkpoint("crm", first.fencing_token, &checkpoint)
        .await
        .unwrap_err();
    assert!(matches!(saved, StoreError::LeaseLost { .. }), "{saved}");
    assert_eq!(ctx.count("SELECT COUNT(*) FROM contacts").await, 0);
    assert_eq!(
        store.importer_state("crm").await.unwrap().checkpoint,
        Checkpoint::default()
    );

    // Released, it is free at once.
    other.release_lease(&second).await.unwrap();
    let third = store
        .acquire_lease("crm", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("released lease is free");
    assert!(third.fencing_token > second.fencing_token);
}

async fn renewing_and_writing_keep_the_lease(ctx: Ctx) {
    // Time is driven, never slept: every store here reads this clock.
    let clock = ManualClock::new(Utc::now());
    let mut options = ctx.options();
    options.clock = Clock::Manual(clock.clone());
    let store = ctx.reopen(options.clone()).await.unwrap();
    options.lease_holder = holder(1);
    let other = ctx.reopen(options).await.unwrap();
    let lease = store
        .acquire_lease("crm", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    let renewed = store
        .renew_lease(&lease, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(renewed.expires_at > lease.expires_at);
    assert_eq!(renewed.fencing_token, lease.fencing_token);
    clock.advance(Duration::from_millis(1200));
    assert!(
        other
            .acquire_lease("crm", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "renewed lease still held"
    );
}

async fn a_lease_of_a_dead_local_process_is_taken_back_at_once(ctx: Ctx) {
    let mut options = ctx.options();
    options.lease_holder = holder(dead_pid());
    let crashed = ctx.reopen(options).await.unwrap();
    let stale = crashed
        .acquire_lease("crm", Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    let started = std::time::Instant::now();
    let taken = ctx
        .store
        .acquire_lease("crm", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("lease of a dead process is free");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(taken.fencing_token, stale.fencing_token + 1);

    // A lease held by a process of another host is left to its expiry.
    let mut options = ctx.options();
    options.lease_holder = LeaseHolder {
        node: String::from("some-other-host"),
        pid: dead_pid(),
    };
    let remote = ctx.reopen(options).await.unwrap();
    remote
        .acquire_lease("shop", Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    assert!(
        ctx.store
            .acquire_lease("shop", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );
}

async fn checkpoint_commits_with_the_page_or_not_at_all(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    let checkpoint = Checkpoint {
        position: Some(serde_json::json!({"page": 3})),
        fingerprint: Some("fp-1".into()),
        pass_high_water: Some("2026-01-02T03:04:05Z".parse().unwrap()),
        ..Checkpoint::default()
    };
    crm.write_with(&ctx.store, &[rec("ada@example.com")], &[], &checkpoint)
        .await
        .unwrap();
    let state = ctx.store.importer_state("crm").await.unwrap();
    assert_eq!(state.checkpoint, checkpoint);
    assert!(state.last_run_at.is_some());

    // A page that fails half-way (a binding to a field that does not exist) leaves
    // neither its contacts nor its checkpoint behind.
    let mut broken = crm;
    broken.fields = vec![tributary::model::FieldBinding {
        field_id: 987_654,
        tag: "%NOPE%".into(),
        stored_type: tributary::model::CustomFieldType::Text,
    }];
    let later = Checkpoint {
        position: Some(serde_json::json!({"page": 4})),
        ..checkpoint.clone()
    };
    let result = broken
        .write_with(
            &ctx.store,
            &[rec("bob@example.com").custom(0, tributary::model::FieldValue::Text("x".into()))],
            &[],
            &later,
        )
        .await;
    assert!(result.is_err());
    assert_eq!(ctx.count("SELECT COUNT(*) FROM contacts").await, 1);
    assert_eq!(
        ctx.store.importer_state("crm").await.unwrap().checkpoint,
        checkpoint
    );
}

/// A page write extends the lease by the lifetime it was taken with, so a run that keeps
/// committing keeps it; one that stops loses it after exactly that lifetime, by the
/// store's clock.
async fn page_writes_extend_the_lease_by_the_clock(ctx: Ctx) {
    let clock = ManualClock::new(Utc::now());
    let mut options = ctx.options();
    options.clock = Clock::Manual(clock.clone());
    let store = ctx.reopen(options.clone()).await.unwrap();
    options.lease_holder = holder(1);
    let other = ctx.reopen(options).await.unwrap();
    let crm = importer(&store, "crm", "customers").await;
    let ttl = Duration::from_secs(300);
    assert_eq!(
        crm.lease.expires_at,
        clock.now() + chrono::Duration::seconds(300)
    );
    for i in 0..3 {
        clock.advance(ttl - Duration::from_secs(1));
        crm.write(&store, &[rec(&format!("p{i}@example.com"))])
            .await
            .unwrap();
        assert!(
            other.acquire_lease("crm", ttl).await.unwrap().is_none(),
            "held while pages commit"
        );
    }
    clock.advance(ttl - Duration::from_secs(1));
    assert!(other.acquire_lease("crm", ttl).await.unwrap().is_none());
    clock.advance(Duration::from_secs(2));
    let taken = other
        .acquire_lease("crm", ttl)
        .await
        .unwrap()
        .expect("expired by the clock");
    assert_eq!(taken.fencing_token, crm.lease.fencing_token + 1);
    let lost = crm
        .write(&store, &[rec("late@example.com")])
        .await
        .unwrap_err();
    assert!(matches!(lost, StoreError::LeaseLost { .. }), "{lost}");
}

on_both_backends!(
    page_writes_extend_the_lease_by_the_clock,
    a_held_lease_excludes_others_until_it_expires,
    renewing_and_writing_keep_the_lease,
    a_lease_of_a_dead_local_process_is_taken_back_at_once,
    checkpoint_commits_with_the_page_or_not_at_all,
);
