//! The daemon's HTTP listener: `/healthz`, `/status` (JSON), `/metrics` (Prometheus
//! text), and the two things a person asks of a running daemon: run an importer now,
//! resume a paused one.
//!
//! `/healthz` never touches the store or the schedule's lock for long, so it answers
//! while a thousand runs are due. Nothing here ever prints a secret: errors are the
//! engine's (already masked), the store URL is shown with its password masked.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use crate::daemon::scheduler::{EntryView, Handle, Phase, RunReport, RunRequest};
use crate::store::Store;

/// What the listener serves from.
#[derive(Clone)]
pub struct AppState {
    /// The schedule.
    pub scheduler: Handle,
    /// The store, for watermarks.
    pub store: Arc<dyn Store>,
    /// The store URL, password masked: how `tributary run` recognizes its daemon.
    pub store_url: String,
    /// The config file.
    pub config: String,
    /// When the daemon started.
    pub started_at: DateTime<Utc>,
    /// The configuration that runs, kept current by hot reload.
    pub loaded: crate::daemon::reload::SharedConfig,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    /// A bearer token `POST` endpoints require, if configured.
    pub control_token: Option<Arc<String>>,
    /// This process's node id.
    pub node: String,
}

/// `/healthz`: alive, and which store this daemon serves.
#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The store URL, password masked.
    pub store: String,
    /// Process id.
    pub pid: u32,
}

/// `/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The daemon.
    pub daemon: DaemonStatus,
    /// The configuration: generation, last reload, the hash of every file that runs.
    pub configuration: crate::daemon::reload::ConfigView,
    /// One entry per importer.
    pub importers: Vec<ImporterStatus>,
}

/// The daemon part of `/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Version.
    pub version: String,
    /// Process id.
    pub pid: u32,
    /// This daemon's node id.
    pub node: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// Config file.
    pub config: String,
    /// Store, password masked.
    pub store: String,
    /// Importers scheduled.
    pub importers: usize,
    /// Runs in flight.
    pub running: usize,
    /// The most runs in flight at once so far.
    pub max_running: usize,
    /// Config problems (broken files are skipped, the rest runs).
    pub config_errors: Vec<String>,
}

/// One importer in `/status`.
#[derive(Debug, Serialize)]
pub struct ImporterStatus {
    /// Its place in the schedule (written as it is: an intermediate JSON value per
    /// importer made `/status` of 10,000 importers cost tens of MiB at its peak).
    #[serde(flatten)]
    pub schedule: EntryView,
    /// Newest update time committed.
    pub watermark: Option<DateTime<Utc>>,
    /// Whether a pass is in progress (a saved position).
    pub pass_in_progress: bool,
    /// The node holding the importer's lease now (running it), this one or another
    /// sharing the store; `None` when no run holds it.
    pub node: Option<String>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/importers/{id}/run", post(run))
        .route("/importers/{id}/resume", post(resume))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        store: state.store_url.clone(),
        pid: std::process::id(),
    })
}

async fn status(State(state): State<AppState>) -> Json<Status> {
    let entries = state.scheduler.entries();
    let count = entries.len();
    let load = state.scheduler.load();
    let saved: std::collections::BTreeMap<String, crate::store::ImporterState> = state
        .store
        .importer_states()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.importer.clone(), s))
        .collect();
    let holders: std::collections::BTreeMap<String, String> = state
        .store
        .lease_holders()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|l| (l.importer, l.node))
        .collect();
    let importers = entries
        .into_iter()
        .map(|entry: EntryView| {
            let saved = saved.get(&entry.importer);
            ImporterStatus {
                watermark: saved.and_then(|s| s.checkpoint.watermark),
                pass_in_progress: saved.is_some_and(|s| s.checkpoint.position.is_some()),
                node: holders.get(&entry.importer).cloned(),
                schedule: entry,
            }
        })
        .collect();
    let configuration = state.loaded.read().expect("config lock").view.clone();
    Json(Status {
        daemon: DaemonStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            node: state.node.clone(),
            started_at: state.started_at,
            config: state.config.clone(),
            store: state.store_url.clone(),
            importers: count,
            running: load.running,
            max_running: load.max_running,
            config_errors: configuration.errors.clone(),
        },
        configuration,
        importers,
    })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not recorded").into_response();
    };
    let now = Utc::now();
    let entries = state.scheduler.entries();
    for phase in [
        Phase::Idle,
        Phase::Running,
        Phase::NeedsCredentials,
        Phase::Disabled,
    ] {
        let count = entries.iter().filter(|e| e.phase == phase).count();
        let name = serde_json::to_value(phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        metrics::gauge!(crate::metrics::IMPORTERS, "phase" => name).set(count as f64);
    }
    if let Ok(saved) = state.store.importer_states().await {
        for s in saved {
            if !state.scheduler.knows(&s.importer) {
                continue;
            }
            if let Some(watermark) = s.checkpoint.watermark {
                let lag = (now - watermark).num_milliseconds() as f64 / 1000.0;
                metrics::gauge!(crate::metrics::WATERMARK_LAG, "importer" => s.importer.clone())
                    .set(lag.max(0.0));
            }
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.control_token else {
        return true;
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compared whole; the token is high-entropy and the listener local.
    given.as_bytes() == token.as_bytes()
}

async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "a bearer token is required").into_response();
    }
    // An empty body asks for a plain run; anything else must be a valid request.
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        match serde_json::from_slice::<RunRequest>(&body) {
            Ok(request) => request,
            Err(e) => {
                let report = not_run(
                    id,
                    crate::app::exit::FAILURE,
                    format!("bad request body: {e}"),
                );
                return (StatusCode::BAD_REQUEST, Json(report)).into_response();
            }
        }
    };
    if !state.scheduler.knows(&id) {
        // A broken importer file is skipped by the daemon: say so, as `run` would (78).
        let loaded = state.loaded.read().expect("config lock");
        let broken: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error() && d.file.file_stem().is_some_and(|s| s == id.as_str()))
            .map(ToString::to_string)
            .collect();
        let (code, error) = if broken.is_empty() {
            (
                crate::app::exit::FAILURE,
                format!("the daemon has no importer `{id}`"),
            )
        } else {
            (crate::app::exit::CONFIG, broken.join("\n"))
        };
        return (StatusCode::NOT_FOUND, Json(not_run(id, code, error))).into_response();
    }
    Json(state.scheduler.run_now(&id, request).await).into_response()
}

/// The report of a run that never started, shaped like any other so the CLI needs one path.
fn not_run(importer: String, exit_code: i32, error: String) -> RunReport {
    RunReport {
        importer,
        exit_code,
        outcome: None,
        pass: None,
        resumed: false,
        counts: Default::default(),
        duration_seconds: 0.0,
        error: Some(error),
    }
}

async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "a bearer token is required").into_response();
    }
    if !state.scheduler.knows(&id) {
        return (StatusCode::NOT_FOUND, format!("no importer `{id}`")).into_response();
    }
    state.scheduler.resume(&id);
    StatusCode::NO_CONTENT.into_response()
}
