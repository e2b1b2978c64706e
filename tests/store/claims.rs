//! Claiming due importers for a node (`claim_due`), giving them back with the next run's
//! time (`release_claim`), who holds what (`lease_holders`) and the commit record.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound as _, Utc};
use tributary::model::Checkpoint;
use tributary::store::lease::LeaseHolder;
use tributary::store::{
    Backend, ClaimRefusal, ClaimRequest, Clock, ManualClock, Store, StoreError,
};

use super::harness::{Ctx, on_both_backends};

fn due(ids: &[&str]) -> Vec<ClaimRequest> {
    ids.iter()
        .map(|id| ClaimRequest {
            importer: (*id).to_string(),
            forced: false,
        })
        .collect()
}

async fn node(ctx: &Ctx, name: &str, clock: &ManualClock) -> Arc<dyn Store> {
    let mut options = ctx.options();
    options.clock = Clock::Manual(clock.clone());
    options.lease_holder = LeaseHolder {
        node: name.to_string(),
        pid: 1,
    };
    ctx.reopen(options).await.unwrap()
}

async fn claims_take_due_importers_once_and_say_why_not(ctx: Ctx) {
    let clock = ManualClock::new(Utc::now());
    let a = node(&ctx, "node-a", &clock).await;
    let b = node(&ctx, "node-b", &clock).await;
    let now = clock.now();
    // Stored times keep microseconds.
    let later = (now + chrono::Duration::hours(1)).trunc_subsecs(6);
    let ttl = Duration::from_secs(10);
    a.set_next_run("past", Some(now - chrono::Duration::minutes(1)))
        .await
        .unwrap();
    a.set_next_run("future", Some(later)).await.unwrap();
    a.set_needs_new_credentials("paused", true).await.unwrap();
    a.set_next_run("paused", None).await.unwrap();

    // Due (saved in the past, or never scheduled) is claimed; the rest says why not.
    let claims = a
        .claim_due(&due(&["past", "future", "new", "paused"]), now, 10, ttl)
        .await
        .unwrap();
    let claimed: Vec<&str> = claims.claimed.iter().map(|l| l.importer.as_str()).collect();
    assert_eq!(claimed, ["past", "new"], "in the order asked");
    assert!(
        claims
            .claimed
            .iter()
            .all(|l| l.owner.starts_with("node-a:1:"))
    );
    let refused: std::collections::BTreeMap<_, _> = claims.refused.into_iter().collect();
    assert!(
        matches!(refused.get("future"), Some(ClaimRefusal::NotDue(at)) if *at == later),
        "{refused:?}"
    );
    assert_eq!(refused.get("paused"), Some(&ClaimRefusal::NeedsCredentials));
    assert_eq!(
        a.importer_state("past").await.unwrap().next_run_at,
        None,
        "a claimed importer is not due for anyone else"
    );

    // Another node: held, by node-a, for the lease's time.
    let claims = b
        .claim_due(&due(&["past", "new"]), now, 10, ttl)
        .await
        .unwrap();
    assert!(claims.claimed.is_empty());
    for (_, why) in &claims.refused {
        match why {
            ClaimRefusal::Held { node, remaining } => {
                assert_eq!(node.as_deref(), Some("node-a"));
                assert!(*remaining <= ttl && *remaining > Duration::from_secs(9));
            }
            other => panic!("{other:?}"),
        }
    }
    let holders = b.lease_holders().await.unwrap();
    let held: Vec<(&str, &str)> = holders
        .iter()
        .map(|l| (l.importer.as_str(), l.node.as_str()))
        .collect();
    assert_eq!(held, [("new", "node-a"), ("past", "node-a")]);

    // Forced (asked for by hand): claimed whether due or paused, as long as it is free.
    let forced: Vec<ClaimRequest> = ["future", "paused"]
        .iter()
        .map(|id| ClaimRequest {
            importer: (*id).to_string(),
            forced: true,
        })
        .collect();
    let claims = b.claim_due(&forced, now, 10, ttl).await.unwrap();
    assert_eq!(claims.claimed.len(), 2);

    // The commit record: a checkpoint saved under a claimed lease names node and token;
    // given back with the next run's time in one transaction, it is not due for node-b.
    let claims = a.claim_due(&due(&["fresh"]), now, 10, ttl).await.unwrap();
    let fresh = &claims.claimed[0];
    a.save_checkpoint("fresh", fresh.fencing_token, &Checkpoint::default())
        .await
        .unwrap();
    let commits = b.commits("fresh").await.unwrap();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].node, "node-a");
    assert_eq!(commits[0].fencing_token, fresh.fencing_token);
    assert!(a.release_claim(fresh, Some(later)).await.unwrap());
    assert!(
        b.lease_holders()
            .await
            .unwrap()
            .iter()
            .all(|l| l.importer != "fresh")
    );
    let claims = b.claim_due(&due(&["fresh"]), now, 10, ttl).await.unwrap();
    assert!(claims.claimed.is_empty());
    assert!(matches!(
        claims.refused[0].1,
        ClaimRefusal::NotDue(at) if at == later
    ));

    // Expired (its node paused or dead): taken over with a new token; the old holder can
    // neither renew nor commit nor write its next run time any more.
    let taken = a
        .claim_due(&due(&["t"]), now, 10, ttl)
        .await
        .unwrap()
        .claimed
        .remove(0);
    clock.advance(Duration::from_secs(11));
    let renewed = a.renew_lease(&taken, ttl).await.unwrap_err();
    assert!(matches!(renewed, StoreError::LeaseLost { .. }), "{renewed}");
    let over = b
        .claim_due(&due(&["t"]), clock.now(), 10, ttl)
        .await
        .unwrap()
        .claimed
        .remove(0);
    assert_eq!(over.fencing_token, taken.fencing_token + 1);
    let late = a
        .save_checkpoint("t", taken.fencing_token, &Checkpoint::default())
        .await
        .unwrap_err();
    assert!(matches!(late, StoreError::LeaseLost { .. }), "{late}");
    assert!(!a.release_claim(&taken, Some(later)).await.unwrap());
    assert_eq!(a.importer_state("t").await.unwrap().next_run_at, None);
    assert_eq!(
        b.lease_holders()
            .await
            .unwrap()
            .iter()
            .find(|l| l.importer == "t")
            .unwrap()
            .node,
        "node-b"
    );
}

/// Two nodes claiming the same 40 due importers at the same time, a few at a time, until
/// none is left: each importer is claimed exactly once, and both nodes get some.
async fn concurrent_claims_share_the_work_and_never_claim_twice(ctx: Ctx) {
    let clock = ManualClock::new(Utc::now());
    let a = node(&ctx, "node-a", &clock).await;
    let b = node(&ctx, "node-b", &clock).await;
    let ids: Vec<String> = (0..40).map(|i| format!("imp{i:02}")).collect();
    let ttl = Duration::from_secs(600);
    let claim_all = |store: Arc<dyn Store>, ids: Vec<String>, now| async move {
        let mut mine = Vec::new();
        let requests: Vec<ClaimRequest> = ids
            .iter()
            .map(|id| ClaimRequest {
                importer: id.clone(),
                forced: false,
            })
            .collect();
        for _ in 0..60 {
            let claims = store.claim_due(&requests, now, 3, ttl).await.unwrap();
            let all_held = claims.refused.len() == requests.len();
            mine.extend(claims.claimed.into_iter().map(|l| l.importer));
            if all_held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        mine
    };
    let now = clock.now();
    let (got_a, got_b) = tokio::join!(
        tokio::spawn(claim_all(Arc::clone(&a), ids.clone(), now)),
        tokio::spawn(claim_all(Arc::clone(&b), ids.clone(), now))
    );
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    let all: BTreeSet<&String> = got_a.iter().chain(&got_b).collect();
    assert_eq!(
        got_a.len() + got_b.len(),
        all.len(),
        "claimed twice: {got_a:?} {got_b:?}"
    );
    assert_eq!(
        all.len(),
        ids.len(),
        "every one claimed: {got_a:?} {got_b:?}"
    );
    // On PostgreSQL rows one node is claiming are skipped by the other, so both get some;
    // an SQLite file takes one daemon (its claims queue on the file's write lock).
    if ctx.backend == Backend::Postgres {
        assert!(
            !got_a.is_empty() && !got_b.is_empty(),
            "{got_a:?} {got_b:?}"
        );
    }
}

on_both_backends!(
    claims_take_due_importers_once_and_say_why_not,
    concurrent_claims_share_the_work_and_never_claim_twice,
);
