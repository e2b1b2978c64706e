//! Run history, importer state, and pruning after the retention.

use chrono::{Duration as Days, Utc};
use tributary::store::{Clock, ManualClock, RunCounts, RunOutcome};

use super::harness::{Ctx, RecordExt, importer, on_both_backends, rec};

async fn runs_keep_their_counts_newest_first(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    crm.write(
        &ctx.store,
        &[rec("ada@example.com"), rec("bob@example.com")],
    )
    .await
    .unwrap();
    crm.write(&ctx.store, &[rec("ada@example.com").first("Ada")])
        .await
        .unwrap();
    // Before the run finishes, the pages written are already counted.
    let running = &ctx.store.runs("crm", 10).await.unwrap()[0];
    assert_eq!(running.outcome, None);
    assert_eq!(
        (
            running.counts.pages,
            running.counts.created,
            running.counts.updated
        ),
        (2, 2, 1)
    );
    let counts = RunCounts {
        pages: 2,
        fetched: 3,
        created: 2,
        updated: 1,
        skipped: 1,
        ..RunCounts::default()
    };
    ctx.store
        .finish_run(crm.run_id, RunOutcome::Completed, &counts, None)
        .await
        .unwrap();
    let second = ctx.store.begin_run("crm").await.unwrap();
    ctx.store
        .finish_run(
            second,
            RunOutcome::Failed,
            &RunCounts::default(),
            Some("service answered 503"),
        )
        .await
        .unwrap();
    let runs = ctx.store.runs("crm", 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].run_id, second);
    assert_eq!(runs[0].outcome, Some(RunOutcome::Failed));
    assert_eq!(runs[0].error.as_deref(), Some("service answered 503"));
    assert_eq!(runs[1].counts, counts);
    assert!(runs[1].finished_at.is_some());
    let state = ctx.store.importer_state("crm").await.unwrap();
    assert_eq!(state.last_error.as_deref(), Some("service answered 503"));
    assert_eq!(ctx.store.runs("crm", 1).await.unwrap().len(), 1);
    assert!(ctx.store.runs("other", 10).await.unwrap().is_empty());
}

/// A daemon's start reads every importer's recent history at once: the same runs, in the
/// same order, as one read per importer.
async fn recent_runs_of_every_importer_at_once(ctx: Ctx) {
    for (importer, count) in [("many", 20), ("two", 2)] {
        for k in 0..count {
            let run = ctx.store.begin_run(importer).await.unwrap();
            let outcome = if k % 3 == 0 {
                RunOutcome::Failed
            } else {
                RunOutcome::Completed
            };
            ctx.store
                .finish_run(run, outcome, &RunCounts::default(), None)
                .await
                .unwrap();
        }
    }
    let importers = ["many", "two", "none"].map(String::from);
    let recent = ctx.store.recent_runs(&importers, 16).await.unwrap();
    assert_eq!(recent.len(), 2, "{:?}", recent.keys());
    for importer in ["many", "two"] {
        let one_by_one: Vec<(i64, Option<RunOutcome>)> = ctx
            .store
            .runs(importer, 16)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.run_id, r.outcome))
            .collect();
        let at_once: Vec<(i64, Option<RunOutcome>)> = recent[importer]
            .iter()
            .map(|r| (r.run_id, r.outcome))
            .collect();
        assert_eq!(at_once, one_by_one, "{importer}");
    }
    assert_eq!(recent["many"].len(), 16);
    assert!(!recent.contains_key("none"));
}

async fn importer_state_flags_and_schedule(ctx: Ctx) {
    let fresh = ctx.store.importer_state("crm").await.unwrap();
    assert_eq!(fresh.importer, "crm");
    assert!(!fresh.needs_new_credentials);
    let next = Utc::now() + Days::minutes(30);
    ctx.store.set_next_run("crm", Some(next)).await.unwrap();
    ctx.store
        .set_needs_new_credentials("crm", true)
        .await
        .unwrap();
    let state = ctx.store.importer_state("crm").await.unwrap();
    assert!(state.needs_new_credentials);
    let stored = state.next_run_at.unwrap();
    assert!((stored - next).num_milliseconds().abs() < 1);
    ctx.store
        .set_needs_new_credentials("crm", false)
        .await
        .unwrap();
    assert!(
        !ctx.store
            .importer_state("crm")
            .await
            .unwrap()
            .needs_new_credentials
    );
    let all = ctx.store.importer_states().await.unwrap();
    assert_eq!(all.len(), 1);
}

async fn an_importer_moves_to_a_new_id_with_its_state_and_provenance(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    crm.write(&ctx.store, &[rec("ada@example.com")])
        .await
        .unwrap();
    ctx.store
        .set_next_run("crm", Some(Utc::now() + Days::minutes(30)))
        .await
        .unwrap();
    let before = ctx.store.importer_state("crm").await.unwrap();
    let runs = ctx.store.runs("crm", 10).await.unwrap().len();
    ctx.store.move_importer("crm", "crm-renamed").await.unwrap();
    let moved = ctx.store.importer_state("crm-renamed").await.unwrap();
    assert_eq!(moved.checkpoint.watermark, before.checkpoint.watermark);
    assert_eq!(moved.next_run_at, before.next_run_at);
    assert_eq!(ctx.store.runs("crm-renamed", 10).await.unwrap().len(), runs);
    assert!(ctx.store.runs("crm", 10).await.unwrap().is_empty());
    assert!(
        ctx.store
            .importer_state("crm")
            .await
            .unwrap()
            .next_run_at
            .is_none()
    );
    // Onto an id with history: refused, nothing moved.
    let other = importer(&ctx.store, "other", "customers").await;
    other
        .write(&ctx.store, &[rec("bob@example.com")])
        .await
        .unwrap();
    let refused = ctx.store.move_importer("crm-renamed", "other").await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(ctx.store.runs("crm-renamed", 10).await.unwrap().len(), runs);
    // From an id with nothing: not found.
    assert!(ctx.store.move_importer("nobody", "somebody").await.is_err());
}

async fn events_and_runs_are_pruned_after_the_retention(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    crm.write(&ctx.store, &[rec("ada@example.com")])
        .await
        .unwrap();
    ctx.store
        .finish_run(
            crm.run_id,
            RunOutcome::Completed,
            &RunCounts::default(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(ctx.store.change_events(0, 100).await.unwrap().len(), 2);

    // Within the default retention (P90D) nothing goes.
    let kept = ctx.store.prune(Utc::now() + Days::days(89)).await.unwrap();
    assert_eq!((kept.change_events, kept.runs), (0, 0));
    assert_eq!(ctx.store.runs("crm", 10).await.unwrap().len(), 1);

    let pruned = ctx.store.prune(Utc::now() + Days::days(91)).await.unwrap();
    assert_eq!((pruned.change_events, pruned.runs), (2, 1));
    assert!(ctx.store.change_events(0, 100).await.unwrap().is_empty());
    assert!(ctx.store.runs("crm", 10).await.unwrap().is_empty());
    // Contacts are never pruned.
    assert_eq!(ctx.count("SELECT COUNT(*) FROM contacts").await, 1);

    // The retention is configurable.
    let mut options = ctx.options();
    options.retention = std::time::Duration::from_secs(3600);
    let short = ctx.reopen(options).await.unwrap();
    crm.write(&ctx.store, &[rec("bob@example.com")])
        .await
        .unwrap();
    let pruned = short.prune(Utc::now() + Days::hours(2)).await.unwrap();
    assert_eq!(pruned.change_events, 2);
}

/// `finish_run` prunes by itself, at most once an hour of the store's clock, what is
/// older than the retention by that clock: driven here over 91 days without sleeping.
async fn finished_runs_prune_by_the_store_clock(ctx: Ctx) {
    let clock = ManualClock::new(Utc::now());
    let mut options = ctx.options();
    options.clock = Clock::Manual(clock.clone());
    let store = ctx.reopen(options).await.unwrap();
    let crm = importer(&store, "crm", "customers").await;
    crm.write(&store, &[rec("ada@example.com")]).await.unwrap();
    let finish = async |run_id| {
        store
            .finish_run(run_id, RunOutcome::Completed, &RunCounts::default(), None)
            .await
            .unwrap();
    };
    finish(crm.run_id).await;
    assert_eq!(store.change_events(0, 10).await.unwrap().len(), 2);

    // 89 days on: within the retention, nothing goes.
    clock.advance(std::time::Duration::from_secs(89 * 86_400));
    let second = store.begin_run("crm").await.unwrap();
    finish(second).await;
    assert_eq!(store.change_events(0, 10).await.unwrap().len(), 2);
    assert_eq!(store.runs("crm", 10).await.unwrap().len(), 2);

    // 91 days after the first run: its events and its history go, the rest stays.
    clock.advance(std::time::Duration::from_secs(2 * 86_400));
    let third = store.begin_run("crm").await.unwrap();
    finish(third).await;
    assert!(store.change_events(0, 10).await.unwrap().is_empty());
    let runs: Vec<i64> = store
        .runs("crm", 10)
        .await
        .unwrap()
        .iter()
        .map(|run| run.run_id)
        .collect();
    assert_eq!(runs, [third, second]);
    assert_eq!(ctx.count("SELECT COUNT(*) FROM contacts").await, 1);
}

on_both_backends!(
    finished_runs_prune_by_the_store_clock,
    runs_keep_their_counts_newest_first,
    recent_runs_of_every_importer_at_once,
    importer_state_flags_and_schedule,
    an_importer_moves_to_a_new_id_with_its_state_and_provenance,
    events_and_runs_are_pruned_after_the_retention,
);
