//! Every metric the daemon exposes, and the functions that record them, in one place.
//!
//! Recorded through the `metrics` facade, so the engine can count HTTP responses and
//! retries without being handed a registry; rendered in Prometheus text format by
//! `metrics-exporter-prometheus`, installed only by the daemon (elsewhere, as in
//! `tributary run`, recording is a no-op). No label takes unbounded values: importer and
//! connector ids come from file names, the other labels from fixed sets; never a URL, an
//! email or an error text.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::{RunError, RunSummary};
use crate::plan::Importer;
use crate::store::RunOutcome;

/// Runs ended, by outcome (`completed`, `partial`, `cancelled`, `failed`, `busy`).
pub const RUNS: &str = "tributary_runs_total";
/// Contacts by what a run did with them (`created`, `updated`, `unchanged`, `skipped`,
/// `removed`).
pub const CONTACTS: &str = "tributary_contacts_total";
/// Pages fetched.
pub const PAGES: &str = "tributary_pages_total";
/// Records stamped in the future, which never move the watermark.
pub const FUTURE_STAMPED: &str = "tributary_future_stamped_records_total";
/// HTTP responses by class (`2xx`, `3xx`, `4xx`, `429`, `5xx`, `error`).
pub const HTTP_RESPONSES: &str = "tributary_http_responses_total";
/// Requests sent again after a failure.
pub const RETRIES: &str = "tributary_retries_total";
/// Wall time of runs that ended without failing.
pub const RUN_DURATION: &str = "tributary_run_duration_seconds";
/// When a run of the importer last succeeded (Unix time).
pub const LAST_SUCCESS: &str = "tributary_last_success_timestamp_seconds";
/// How far the importer's watermark is behind now.
pub const WATERMARK_LAG: &str = "tributary_watermark_lag_seconds";
/// Importers by schedule phase.
pub const IMPORTERS: &str = "tributary_importers";
/// Config files the daemon skipped for errors.
pub const CONFIG_ERRORS: &str = "tributary_config_file_errors";
/// The configuration generation that runs (rises with each reload that changed it).
pub const CONFIG_GENERATION: &str = "tributary_config_generation";
/// Reloads by result (`applied`, `applied_with_errors`, `refused`).
pub const RELOADS: &str = "tributary_config_reloads_total";
/// Always 1, labelled with this process's node id: each node serves its own `/metrics`,
/// and this names the node whatever the scrape target is called.
pub const NODE: &str = "tributary_node_info";
/// Importers claimed by this node, by result (`claimed`, `held` by another run,
/// `not_due` as the store says).
pub const CLAIMS: &str = "tributary_claims_total";
/// Leases this node held and lost while running (expired, or taken over).
pub const LEASES_LOST: &str = "tributary_leases_lost_total";

/// Installs the process-wide recorder and returns the handle that renders it.
///
/// # Errors
/// A recorder is installed already (a second daemon in one process).
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let buckets = [
        0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(RUN_DURATION.to_string()),
            &buckets,
        )?
        .install_recorder()?;
    metrics::describe_counter!(RUNS, "Runs ended, by outcome.");
    metrics::describe_counter!(CONTACTS, "Contacts by what a run did with them.");
    metrics::describe_counter!(PAGES, "Pages fetched.");
    metrics::describe_counter!(
        FUTURE_STAMPED,
        "Records stamped later than now plus the connector's future tolerance."
    );
    metrics::describe_counter!(HTTP_RESPONSES, "HTTP responses by class.");
    metrics::describe_counter!(RETRIES, "Requests sent again after a failure.");
    metrics::describe_histogram!(RUN_DURATION, metrics::Unit::Seconds, "Wall time of runs.");
    metrics::describe_gauge!(LAST_SUCCESS, "When a run last succeeded (Unix time).");
    metrics::describe_gauge!(
        WATERMARK_LAG,
        metrics::Unit::Seconds,
        "Watermark behind now."
    );
    metrics::describe_gauge!(IMPORTERS, "Importers by schedule phase.");
    metrics::describe_gauge!(CONFIG_ERRORS, "Config files skipped for errors.");
    metrics::describe_gauge!(CONFIG_GENERATION, "Configuration generation that runs.");
    metrics::describe_counter!(RELOADS, "Configuration reloads by result.");
    metrics::describe_gauge!(NODE, "This node's id (always 1).");
    metrics::describe_counter!(CLAIMS, "Importers this node asked to claim, by result.");
    metrics::describe_counter!(LEASES_LOST, "Leases this node lost while running.");
    Ok(handle)
}

/// Names this node in `/metrics`.
pub fn node(node: &str) {
    metrics::gauge!(NODE, "node" => node.to_string()).set(1.0);
}

/// Counts claim results.
pub fn claims(result: &'static str, count: usize) {
    if count > 0 {
        counter!(CLAIMS, "result" => result).increment(count as u64);
    }
}

/// Counts a lease lost while running.
pub fn lease_lost(importer: &str) {
    counter!(LEASES_LOST, "importer" => importer.to_string()).increment(1);
}

/// Records a (re)load of the configuration.
pub fn config_loaded(generation: u64, file_errors: usize) {
    metrics::gauge!(CONFIG_GENERATION).set(generation as f64);
    metrics::gauge!(CONFIG_ERRORS).set(file_errors as f64);
}

/// Counts a reload by its result.
pub fn reload(result: &'static str) {
    metrics::counter!(RELOADS, "result" => result).increment(1);
}

/// Records the end of a run.
pub fn run_finished(importer: &Importer, result: &Result<RunSummary, RunError>) {
    let id = importer.id.clone();
    let connector = importer.connector.id.clone();
    let (outcome, counts) = match result {
        Ok(summary) => (
            match summary.outcome {
                RunOutcome::Completed => "completed",
                RunOutcome::Partial => "partial",
                RunOutcome::Cancelled => "cancelled",
                RunOutcome::Failed => "failed",
            },
            Some(&summary.counts),
        ),
        Err(RunError::Failed { counts, .. }) => ("failed", Some(counts)),
        Err(RunError::Busy { .. }) => ("busy", None),
        Err(RunError::Store { .. }) => ("failed", None),
    };
    counter!(RUNS, "importer" => id.clone(), "connector" => connector.clone(), "outcome" => outcome)
        .increment(1);
    if let Some(counts) = counts {
        for (change, n) in [
            ("created", counts.created),
            ("updated", counts.updated),
            ("unchanged", counts.unchanged),
            ("skipped", counts.skipped),
            ("removed", counts.deleted),
        ] {
            counter!(CONTACTS, "importer" => id.clone(), "connector" => connector.clone(), "change" => change)
                .increment(n);
        }
        counter!(PAGES, "importer" => id.clone(), "connector" => connector.clone())
            .increment(counts.pages);
    }
    if let Ok(summary) = result {
        histogram!(RUN_DURATION, "importer" => id.clone()).record(summary.duration.as_secs_f64());
        if matches!(summary.outcome, RunOutcome::Completed | RunOutcome::Partial) {
            gauge!(LAST_SUCCESS, "importer" => id.clone())
                .set(chrono::Utc::now().timestamp() as f64);
        }
        if summary.future_stamped > 0 {
            counter!(FUTURE_STAMPED, "importer" => id, "connector" => connector)
                .increment(summary.future_stamped);
        }
    }
}

/// Records one HTTP exchange of a connector's: its status class, or `error` when no
/// response came.
pub fn http_response(connector: &str, status: Option<u16>) {
    let class = match status {
        None => "error",
        Some(429) => "429",
        Some(s) if s < 300 => "2xx",
        Some(s) if s < 400 => "3xx",
        Some(s) if s < 500 => "4xx",
        Some(_) => "5xx",
    };
    counter!(HTTP_RESPONSES, "connector" => connector.to_string(), "class" => class).increment(1);
}

/// Records a request sent again.
pub fn retry(connector: &str) {
    counter!(RETRIES, "connector" => connector.to_string()).increment(1);
}
