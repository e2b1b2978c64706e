//! Hot reload with real file-system events and a running daemon: what is scheduled and
//! what `/status` reports after files are added, changed, broken, fixed, removed,
//! swapped in by a symlink the way git-sync does, or changed a hundred at once.

use std::time::Duration;

use serde_json::Value;
use sha2::Digest as _;

use super::process::{Daemon, cli, completed_once, env_with_listener};
use super::{Crm, connector, crm, importer};
use crate::common::fake::{db, people};

fn generation(status: &Value) -> u64 {
    status["configuration"]["generation"].as_u64().unwrap()
}

fn scheduled(status: &Value) -> Vec<String> {
    status["importers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["importer"].as_str().unwrap().to_string())
        .collect()
}

fn sha256(path: &std::path::Path) -> String {
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Add, change, break, fix, remove and restore importer files while the daemon runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importers_added_changed_broken_fixed_removed_and_restored() {
    let state = Crm::new(db(people(4)));
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer(
        "alpha",
        &importer(&fake.base, "A", &key, "interval: PT6H\n"),
    );
    let daemon = Daemon::start(&env, &listen).await;
    let start = daemon
        .until("alpha's first run", |s| completed_once(s, "alpha"))
        .await;
    assert_eq!(generation(&start), 1);
    assert_eq!(start["configuration"]["trigger"], "start");

    // Added: scheduled and run, and `/status` shows the hash of the file that runs.
    env.importer("beta", &importer(&fake.base, "B", &key, "interval: PT6H\n"));
    let status = daemon
        .until("beta added and run", |s| {
            scheduled(s).contains(&"beta".to_string()) && completed_once(s, "beta")
        })
        .await;
    let beta_file = env.dir.path().join("importers.d/beta.yaml");
    assert_eq!(
        status["configuration"]["files"]["importers.d/beta.yaml"],
        sha256(&beta_file)
    );
    assert!(generation(&status) >= 2);
    assert!(
        status["configuration"]["result"]
            .as_str()
            .unwrap()
            .starts_with("1 added, 0 changed, 0 removed, 1 unchanged"),
        "{status:#}"
    );
    assert_eq!(env.contacts("B").await.len(), 4);

    // Changed: takes effect from the next run (asked for now).
    env.importer(
        "alpha",
        &importer(&fake.base, "A2", &key, "interval: PT6H\n"),
    );
    daemon
        .until("alpha changed", |s| {
            Daemon::importer(s, "alpha")["list"] == "A2"
        })
        .await;
    // A new list is not a new pass (the records a pass returns are the same): a full
    // refresh asked for by hand fills it.
    let (code, stdout, stderr) = cli(&env, &["run", "alpha", "--full-refresh"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("run by the daemon"), "{stdout}");
    assert_eq!(env.contacts("A2").await.len(), 4);

    // Broken: reported with its line; the last good version keeps running.
    let alpha_file = env.dir.path().join("importers.d/alpha.yaml");
    let good_hash = sha256(&alpha_file);
    env.importer("alpha", "connector: crm\nlist: [unclosed\n");
    let status = daemon
        .until("alpha's error reported", |s| {
            s["daemon"]["config_errors"].as_array().unwrap().len() == 1
        })
        .await;
    let error = status["daemon"]["config_errors"][0].as_str().unwrap();
    assert!(error.starts_with("importers.d/alpha.yaml:3:1: "), "{error}");
    assert_eq!(Daemon::importer(&status, "alpha")["list"], "A2");
    assert_eq!(
        status["configuration"]["files"]["importers.d/alpha.yaml"],
        good_hash.as_str(),
        "the hash of the version that runs"
    );
    assert!(
        status["configuration"]["result"]
            .as_str()
            .unwrap()
            .contains("last good version kept for alpha"),
        "{status:#}"
    );
    let (code, stdout, stderr) = cli(&env, &["run", "alpha", "--here"]).await;
    assert_eq!(
        code, 78,
        "the CLI refuses the broken file: {stdout}{stderr}"
    );
    let metrics = daemon.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("tributary_config_file_errors 1"),
        "{metrics}"
    );

    // Fixed: the new version runs, the error is gone.
    env.importer(
        "alpha",
        &importer(&fake.base, "A3", &key, "interval: PT6H\n"),
    );
    let status = daemon
        .until("alpha fixed", |s| {
            Daemon::importer(s, "alpha")["list"] == "A3"
                && s["daemon"]["config_errors"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(
        status["configuration"]["files"]["importers.d/alpha.yaml"],
        sha256(&alpha_file)
    );

    // Removed: unscheduled, its state kept in the store.
    std::fs::remove_file(&beta_file).unwrap();
    daemon
        .until("beta removed", |s| {
            !scheduled(s).contains(&"beta".to_string())
        })
        .await;
    let store = env.store().await;
    let saved = store.importer_state("beta").await.unwrap();
    assert!(saved.checkpoint.watermark.is_some(), "beta's state stays");
    let (code, _, stderr) = cli(&env, &["run", "beta"]).await;
    assert_ne!(code, 0, "{stderr}");

    // Restored: scheduled again where it stopped (its next run as saved, not a first run).
    env.importer("beta", &importer(&fake.base, "B", &key, "interval: PT6H\n"));
    let status = daemon
        .until("beta restored", |s| {
            scheduled(s).contains(&"beta".to_string())
        })
        .await;
    let beta = Daemon::importer(&status, "beta");
    assert_eq!(beta["due_reason"], "interval", "{beta}");
    assert_eq!(beta["phase"], "idle", "{beta}");
    let metrics = daemon.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("tributary_config_generation "),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tributary_config_reloads_total{result="applied"}"#),
        "{metrics}"
    );
}

/// A changed connector changes exactly the importers that use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_connector_reaches_exactly_its_importers() {
    let state = Crm::new(db(people(3)));
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    env.connector("other", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer("one", &importer(&fake.base, "L1", &key, "interval: PT6H\n"));
    env.importer("two", &importer(&fake.base, "L2", &key, "interval: PT6H\n"));
    env.importer(
        "three",
        &importer(&fake.base, "L3", &key, "interval: PT6H\n")
            .replace("connector: crm", "connector: other"),
    );
    let daemon = Daemon::start(&env, &listen).await;
    let before = daemon
        .until("three runs", |s| {
            ["one", "two", "three"].iter().all(|i| completed_once(s, i))
        })
        .await;
    env.connector(
        "crm",
        &connector("{mode: incremental}")
            .replace("spec_version: 1", "spec_version: 1\ndescription: edited"),
    );
    let after = daemon
        .until("the connector change applied", |s| {
            generation(s) > generation(&before)
        })
        .await;
    assert!(
        after["configuration"]["result"]
            .as_str()
            .unwrap()
            .starts_with("0 added, 2 changed, 0 removed, 1 unchanged"),
        "{after:#}"
    );
    assert_eq!(scheduled(&after).len(), 3);
}

/// git-sync's way: the directory is reached through a symlink that a new symlink is
/// renamed over. The change is applied by file events, long before the rescan (60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_sync_symlink_swap_is_applied_by_events() {
    let state = Crm::new(db(people(2)));
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("");
    let root = env.dir.path().join("git");
    let key = env.secret("key", "k");
    let checkout = |rev: &str, importers: &[&str]| {
        let dir = root.join(rev);
        std::fs::create_dir_all(dir.join("importers.d")).unwrap();
        std::fs::create_dir_all(dir.join("connectors.d")).unwrap();
        std::fs::write(
            dir.join("connectors.d/crm.yaml"),
            connector("{mode: incremental}"),
        )
        .unwrap();
        for id in importers {
            std::fs::write(
                dir.join(format!("importers.d/{id}.yaml")),
                importer(&fake.base, id, &key, "interval: PT6H\n"),
            )
            .unwrap();
        }
    };
    checkout("rev1", &["first"]);
    std::os::unix::fs::symlink("rev1", root.join("current")).unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!(
            "{text}connectors_dir: git/current/connectors.d\nimporters_dir: git/current/importers.d\n"
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&env, &listen).await;
    daemon
        .until("first runs", |s| completed_once(s, "first"))
        .await;

    checkout("rev2", &["first", "second"]);
    std::os::unix::fs::symlink("rev2", root.join("current.tmp")).unwrap();
    let swapped = std::time::Instant::now();
    std::fs::rename(root.join("current.tmp"), root.join("current")).unwrap();
    let status = daemon
        .until("second scheduled", |s| completed_once(s, "second"))
        .await;
    // git-sync removes the old worktree afterwards.
    std::fs::remove_dir_all(root.join("rev1")).unwrap();
    assert!(
        swapped.elapsed() < Duration::from_secs(20),
        "applied by events, not by the rescan"
    );
    assert_eq!(status["configuration"]["trigger"], "files");

    // The watch follows the swap: a change inside the new checkout is seen too.
    checkout("rev2", &["first", "second", "third"]);
    daemon
        .until("third scheduled", |s| completed_once(s, "third"))
        .await;
}

/// A hundred files written at once make one or two reloads, not a hundred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_files_at_once_raise_the_generation_by_at_most_two() {
    let state = Crm::new(db(people(1)));
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("concurrency: 8\n");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer("seed", &importer(&fake.base, "S", &key, "interval: PT6H\n"));
    let daemon = Daemon::start(&env, &listen).await;
    let before = daemon
        .until("seed runs", |s| completed_once(s, "seed"))
        .await;
    for i in 0..100 {
        env.importer(
            &format!("bulk-{i:03}"),
            &importer(&fake.base, "Bulk", &key, "interval: PT6H\n"),
        );
    }
    let after = daemon
        .until("101 scheduled", |s| scheduled(s).len() == 101)
        .await;
    // Let any straggling event batch land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = daemon.status().await;
    assert_eq!(scheduled(&settled).len(), 101);
    let rise = generation(&settled) - generation(&before);
    assert!(
        (1..=2).contains(&rise),
        "generation rose by {rise}: {after:#}"
    );
}

/// SIGHUP asks for the same reload (nothing changed: nothing is applied, the daemon
/// lives on); a change followed by SIGHUP is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let state = Crm::new(db(people(1)));
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer("one", &importer(&fake.base, "L", &key, "interval: PT6H\n"));
    let mut daemon = Daemon::start(&env, &listen).await;
    let before = daemon.until("one runs", |s| completed_once(s, "one")).await;
    daemon.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let same = daemon.status().await;
    assert_eq!(generation(&same), generation(&before), "nothing changed");
    assert!(
        daemon
            .log()
            .contains("SIGHUP: reloading the configuration.")
    );
    env.importer("one", &importer(&fake.base, "L2", &key, "interval: PT6H\n"));
    daemon.signal(libc::SIGHUP);
    daemon
        .until("the change applied", |s| {
            Daemon::importer(s, "one")["list"] == "L2"
        })
        .await;
    // `tributary.yaml` changed: reported as needing a restart, not half-applied.
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{text}concurrency: 7\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    let status = daemon
        .until("restart reported", |s| {
            s["configuration"]["restart_needed"].is_string()
        })
        .await;
    assert!(
        status["configuration"]["restart_needed"]
            .as_str()
            .unwrap()
            .contains("apply at the next restart")
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).await, 0);
}

/// A reload while a run is in flight: a changed importer's run goes on to the end with
/// the version it started with; a removed importer's run commits its page and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_in_flight_during_a_reload() {
    let state = Crm::new(db(people(40)));
    state.behaviour.lock().unwrap().delay = Duration::from_millis(150);
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    let slow = "interval: PT6H\npage_size: 5\npage_budget: 0\n";
    env.importer("kept", &importer(&fake.base, "K", &key, slow));
    env.importer("dropped", &importer(&fake.base, "D", &key, slow));
    let daemon = Daemon::start(&env, &listen).await;
    daemon
        .until("both running", |s| {
            ["kept", "dropped"]
                .iter()
                .all(|i| Daemon::importer(s, i)["progress"]["pages"].as_u64() >= Some(1))
        })
        .await;
    env.importer(
        "kept",
        &importer(
            &fake.base,
            "K",
            &key,
            "interval: PT7H\npage_size: 5\npage_budget: 0\n",
        ),
    );
    std::fs::remove_file(env.dir.path().join("importers.d/dropped.yaml")).unwrap();
    daemon
        .until("dropped gone, kept completed", |s| {
            !scheduled(s).contains(&"dropped".to_string()) && completed_once(s, "kept")
        })
        .await;
    assert_eq!(
        env.contacts("K").await.len(),
        40,
        "the changed importer's run went on"
    );
    let store = env.store().await;
    let runs = store.runs("dropped", 5).await.unwrap();
    assert_eq!(
        runs[0].outcome,
        Some(tributary::store::RunOutcome::Cancelled),
        "{runs:?}"
    );
    let committed = env.contacts("D").await.len();
    assert!(
        (5..40).contains(&committed),
        "{committed} committed before the stop"
    );
    assert!(
        store
            .importer_state("dropped")
            .await
            .unwrap()
            .checkpoint
            .position
            .is_some(),
        "its position stays for a restored file"
    );
}

/// A Kubernetes ConfigMap's way: each file is a symlink through `..data`, and an update
/// renames a new `..data` link over the old one inside the watched directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_data_swap_is_applied_by_events() {
    use std::os::unix::fs::symlink;
    let state = Crm::new(db(people(2)));
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    let mount = env.dir.path().join("importers.d");
    let version = |name: &str, list: &str| {
        let dir = mount.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cm.yaml"),
            importer(&fake.base, list, &key, "interval: PT6H\n"),
        )
        .unwrap();
    };
    version("..2026_12_06_v1", "V1");
    symlink("..2026_12_06_v1", mount.join("..data")).unwrap();
    symlink("..data/cm.yaml", mount.join("cm.yaml")).unwrap();
    let daemon = Daemon::start(&env, &listen).await;
    daemon.until("cm runs", |s| completed_once(s, "cm")).await;

    version("..2026_12_06_v2", "V2");
    symlink("..2026_12_06_v2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    // The schedule takes the new version a moment before `/status`'s configuration part
    // says which reload brought it: wait for both.
    let status = daemon
        .until("the new version applied", |s| {
            Daemon::importer(s, "cm")["list"] == "V2" && s["configuration"]["trigger"] != "start"
        })
        .await;
    assert_eq!(status["configuration"]["trigger"], "files");
    assert!(
        status["daemon"]["config_errors"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// Which edits keep a saved position and which start a new pass: only what decides the
/// records a pass returns (connection, request, pagination, records path, sync, filters,
/// auth, credential references, settings, page size) restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_that_restart_a_pass() {
    let state = Crm::new(db(people(20)));
    let fake = crm(state).await;
    let base_connector = connector("{mode: incremental}").replace(
        "    updated_at: {path: $.updated}\n",
        "    updated_at: {path: $.updated}\n  custom_fields:\n    - {label: Tier, path: $.last}\n",
    );
    let base_importer =
        |key: &str| importer(&fake.base, "L", key, "page_size: 5\npage_budget: 1\n");
    type Edit<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let keep = |s: &str| s.to_string();
    let base = fake.base.clone();
    let cases: Vec<(&str, Edit, Edit, bool)> = vec![
        (
            "list",
            Box::new(keep),
            Box::new(|i: &str| i.replace("list: L", "list: Other")),
            false,
        ),
        (
            "interval",
            Box::new(keep),
            Box::new(|i: &str| format!("{i}interval: PT2H\n")),
            false,
        ),
        (
            "page_budget",
            Box::new(keep),
            Box::new(|i: &str| i.replace("page_budget: 1", "page_budget: 2")),
            false,
        ),
        (
            "description",
            Box::new(|c: &str| {
                c.replace("spec_version: 1", "spec_version: 1\ndescription: edited")
            }),
            Box::new(keep),
            false,
        ),
        (
            "rate_limit",
            Box::new(|c: &str| {
                c.replace(
                    "spec_version: 1",
                    "spec_version: 1\nrate_limit: {requests_per_second: 50}",
                )
            }),
            Box::new(keep),
            false,
        ),
        (
            "error_rules",
            Box::new(|c: &str| {
                c.replace(
                    "spec_version: 1",
                    "spec_version: 1\nerror_rules:\n  - {status: 418, action: retry}",
                )
            }),
            Box::new(keep),
            false,
        ),
        (
            "custom field label",
            Box::new(|c: &str| c.replace("label: Tier", "label: Level")),
            Box::new(keep),
            false,
        ),
        (
            "a field's path",
            Box::new(|c: &str| c.replace("first_name: $.first", "first_name: $.last")),
            Box::new(keep),
            false,
        ),
        (
            "request",
            Box::new(|c: &str| {
                c.replace("since: \"{{since}}\"}", "since: \"{{since}}\", order: asc}")
            }),
            Box::new(keep),
            true,
        ),
        (
            "records path",
            Box::new(|c: &str| c.replace("records: $.data[*]", "records: \"$['data'][*]\"")),
            Box::new(keep),
            true,
        ),
        (
            "pagination",
            Box::new(|c: &str| c.replace("stop: [empty_page]", "stop: [empty_page, short_page]")),
            Box::new(keep),
            true,
        ),
        (
            "page_size",
            Box::new(keep),
            Box::new(|i: &str| i.replace("page_size: 5", "page_size: 4")),
            true,
        ),
        (
            "settings",
            Box::new(keep),
            Box::new(move |i: &str| i.replace(&base, &format!("{base}/t1"))),
            true,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, edit_connector, edit_importer, restarts) in cases {
        let env = crate::common::sync_env::SyncEnv::new();
        let key = env.secret("key", "k");
        env.connector("crm", &base_connector);
        env.importer("imp", &base_importer(&key));
        let first = env.run("imp").await.unwrap();
        assert_eq!(
            first.outcome,
            tributary::store::RunOutcome::Partial,
            "{name}"
        );
        env.connector("crm", &edit_connector(&base_connector));
        env.importer("imp", &edit_importer(&base_importer(&key)));
        let second = env
            .run("imp")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if restarts {
            let why = second.pass_restarted.clone().unwrap_or_default();
            assert!(why.starts_with("changed: "), "{name}: {why:?}");
        } else {
            assert_eq!(second.pass_restarted, None, "{name}");
        }
        if second.resumed == restarts {
            wrong.push(format!(
                "{name}: {}",
                if restarts {
                    "kept the position"
                } else {
                    "restarted the pass"
                }
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // The credential reference is part of it too.
    let env = crate::common::sync_env::SyncEnv::new();
    let key = env.secret("key", "k");
    let other = env.secret("other", "k");
    env.connector("crm", &base_connector);
    env.importer("imp", &base_importer(&key));
    env.run("imp").await.unwrap();
    env.importer("imp", &base_importer(&other));
    assert!(
        !env.run("imp").await.unwrap().resumed,
        "a new credential reference restarts"
    );
}

/// An importer added before its secret is deployed waits as "needs credentials" and
/// starts by itself once the secret resolves; nothing else is disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_importer_waits_for_its_credential() {
    let state = Crm::new(db(people(3)));
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer(
        "old",
        &importer(&fake.base, "Old", &key, "interval: PT6H\n"),
    );
    let daemon = Daemon::start(&env, &listen).await;
    daemon.until("old runs", |s| completed_once(s, "old")).await;

    let secret = env.dir.path().join("secrets/new-key");
    let reference = format!("{{file: {}}}", secret.display());
    env.importer(
        "new",
        &importer(&fake.base, "New", &reference, "interval: PT6H\n"),
    );
    let status = daemon
        .until("new waits for its credential", |s| {
            s["importers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["importer"] == "new" && i["phase"] == "needs_credentials")
        })
        .await;
    assert_eq!(Daemon::importer(&status, "old")["phase"], "idle");
    assert_eq!(
        Daemon::importer(&status, "old")["runs"],
        1,
        "nothing else ran"
    );

    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "k").unwrap();
    // Paused importers' credentials are looked at every 30 s.
    daemon
        .until_within(
            "new runs once its secret resolves",
            Duration::from_secs(45),
            |s| completed_once(s, "new"),
        )
        .await;
    assert_eq!(env.contacts("New").await.len(), 3);
}

/// A renamed importer file keeps its history with `tributary state move`: the new id
/// resumes incrementally where the old one stopped instead of starting a first pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_move_carries_a_renamed_importer_over() {
    let state = Crm::new(db(people(6)));
    let fake = crm(state).await;
    let (env, _listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer("old-name", &importer(&fake.base, "L", &key, ""));
    let first = env.run("old-name").await.unwrap();
    assert_eq!(first.counts.created, 6);

    let (code, stdout, stderr) = cli(&env, &["state", "move", "old-name", "new-name"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    std::fs::rename(
        env.dir.path().join("importers.d/old-name.yaml"),
        env.dir.path().join("importers.d/new-name.yaml"),
    )
    .unwrap();
    let store = env.store().await;
    assert!(
        store
            .importer_state("old-name")
            .await
            .unwrap()
            .checkpoint
            .watermark
            .is_none()
    );
    assert_eq!(
        store.runs("new-name", 5).await.unwrap().len(),
        1,
        "history moved"
    );
    let next = env.run("new-name").await.unwrap();
    assert_eq!(
        next.pass,
        tributary::engine::PassKind::Incremental,
        "{next:?}"
    );
    assert_eq!(next.counts.created, 0);

    // Moving onto an id that has history is refused and changes nothing.
    env.importer("other", &importer(&fake.base, "L", &key, ""));
    env.run("other").await.unwrap();
    let (code, _, stderr) = cli(&env, &["state", "move", "new-name", "other"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("has state or history already"), "{stderr}");
    assert_eq!(store.runs("new-name", 5).await.unwrap().len(), 2);
}

/// `/status` says when a pass restarted and which parts of the configuration changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_why_a_pass_restarted() {
    let state = Crm::new(db(people(20)));
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer(
        "imp",
        &importer(
            &fake.base,
            "L",
            &key,
            "interval: PT6H\npage_size: 5\npage_budget: 1\n",
        ),
    );
    let daemon = Daemon::start(&env, &listen).await;
    // The first run stops on its budget with a saved position; its continuation is due
    // two seconds later. The request changes meanwhile.
    daemon
        .until("a saved position", |s| {
            let entry = Daemon::importer(s, "imp");
            entry["runs"].as_u64() >= Some(1)
                && entry["phase"] == "idle"
                && entry["pass_in_progress"] == true
        })
        .await;
    env.connector(
        "crm",
        &connector("{mode: incremental}")
            .replace("since: \"{{since}}\"}", "since: \"{{since}}\", order: asc}"),
    );
    let status = daemon
        .until("the restart reported", |s| {
            Daemon::importer(s, "imp")["pass_restarted"].is_string()
        })
        .await;
    let why = Daemon::importer(&status, "imp")["pass_restarted"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.ends_with("changed: request"), "{why}");
}

/// A file broken while the daemon is down runs its last good version after the restart:
/// the store keeps the content of every file that runs, and a fixed file's new version
/// replaces it there. A broken connector is restored the same way for its importers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_runs_its_last_good_version_across_a_restart() {
    let state = Crm::new(db(people(3)));
    let fake = crm(state).await;
    let (env, listen) = env_with_listener("");
    env.connector("crm", &connector("{mode: incremental}"));
    let key = env.secret("key", "k");
    env.importer(
        "alpha",
        &importer(&fake.base, "A", &key, "interval: PT6H\n"),
    );
    env.importer("beta", &importer(&fake.base, "B", &key, "interval: PT6H\n"));
    let alpha_file = env.dir.path().join("importers.d/alpha.yaml");
    let connector_file = env.dir.path().join("connectors.d/crm.yaml");
    let good_hash = sha256(&alpha_file);
    let mut daemon = Daemon::start(&env, &listen).await;
    daemon
        .until("both ran", |s| {
            completed_once(s, "alpha") && completed_once(s, "beta")
        })
        .await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)).await, 0);

    // Broken while the daemon is down: the restart runs the version the store kept.
    env.importer("alpha", "connector: crm\nlist: [unclosed\n");
    let mut daemon = Daemon::start(&env, &listen).await;
    let status = daemon.status().await;
    assert_eq!(
        scheduled(&status),
        ["alpha", "beta"],
        "{status:#}\n{}",
        daemon.log()
    );
    assert_eq!(Daemon::importer(&status, "alpha")["list"], "A");
    assert_eq!(
        status["configuration"]["files"]["importers.d/alpha.yaml"],
        good_hash.as_str(),
        "the hash of the version that runs"
    );
    let errors = status["configuration"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{status:#}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .starts_with("importers.d/alpha.yaml:3:1: "),
        "{errors:?}"
    );
    assert!(
        status["configuration"]["result"]
            .as_str()
            .unwrap()
            .contains("last good version kept for alpha"),
        "{status:#}"
    );
    assert!(
        daemon
            .log()
            .contains("the last good version kept in the store runs"),
        "{}",
        daemon.log()
    );
    // It runs: a run asked for over HTTP imports into the kept version's list.
    let report: Value = reqwest::Client::new()
        .post(format!("http://{listen}/importers/alpha/run"))
        .json(&serde_json::json!({"full_refresh": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["exit_code"], 0, "{report}");
    assert_eq!(env.contacts("A").await.len(), 3);

    // Fixed: the new version runs, and the store keeps it as the last good one.
    env.importer(
        "alpha",
        &importer(&fake.base, "A2", &key, "interval: PT6H\n"),
    );
    let fixed_hash = sha256(&alpha_file);
    daemon
        .until("alpha fixed", |s| {
            Daemon::importer(s, "alpha")["list"] == "A2"
                && s["configuration"]["errors"].as_array().unwrap().is_empty()
        })
        .await;
    let store = env.store().await;
    let kept = store
        .config_file_texts(&[alpha_file.to_string_lossy().into_owned()])
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].sha256, fixed_hash);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)).await, 0);

    // Both the importer and the connector broken while down: each importer runs its last
    // good version with the connector's last good version.
    env.importer("alpha", "connector: crm\nlist: {\n");
    std::fs::write(&connector_file, "spec_version: 1\nbase_url: [\n").unwrap();
    let daemon = Daemon::start(&env, &listen).await;
    let status = daemon.status().await;
    assert_eq!(scheduled(&status), ["alpha", "beta"], "{status:#}");
    assert_eq!(Daemon::importer(&status, "alpha")["list"], "A2");
    assert_eq!(Daemon::importer(&status, "beta")["list"], "B");
    assert_eq!(
        status["configuration"]["errors"].as_array().unwrap().len(),
        2,
        "{status:#}"
    );
    assert_eq!(
        status["configuration"]["files"]["importers.d/alpha.yaml"],
        fixed_hash.as_str()
    );
}

/// Reading the watched files wakes no reload: notify reports every open and close, and a
/// reload reads every file of the tree, so a reload woken by reads would wake the next one
/// for ever (seen at 10,000 importers: one worker re-reading the tree non-stop and
/// `/healthz` waiting 29 s). A write still wakes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_watched_files_wakes_no_reload() {
    use tributary::daemon::reload::{DEBOUNCE, WatchSet, Watcher};

    let dir = tempfile::tempdir().unwrap();
    let importers = dir.path().join("importers.d");
    std::fs::create_dir(&importers).unwrap();
    let files: Vec<_> = (0..20)
        .map(|i| {
            let path = importers.join(format!("imp-{i:02}.yaml"));
            std::fs::write(&path, format!("connector: crm\nlist: L{i}\n")).unwrap();
            path
        })
        .collect();
    let mut set = WatchSet::default();
    set.directories.insert(importers.clone());
    set.entries_of.insert(importers.clone());
    let (trigger, mut triggered) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = Watcher::start(set, trigger).unwrap();
    tokio::time::sleep(DEBOUNCE * 3).await;
    while triggered.try_recv().is_ok() {}

    for _ in 0..5 {
        for path in &files {
            let _ = std::fs::read_to_string(path).unwrap();
        }
    }
    tokio::time::sleep(DEBOUNCE * 4).await;
    assert!(
        triggered.try_recv().is_err(),
        "reading the files woke a reload"
    );

    std::fs::write(&files[3], "connector: crm\nlist: changed\n").unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(10), triggered.recv()).await;
    assert_eq!(woke.ok().flatten(), Some("files"), "a write woke no reload");
}
