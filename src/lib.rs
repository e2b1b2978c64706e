//! Tributary keeps a contact database filled from the CRMs and shops people already use.
//!
//! Data flows one way, one module per stage:
//!
//! ```text
//! connectors.d/ importers.d/ tributary.yaml
//!   --config (read, locate errors, validate)--> specs
//!   --plan (compile templates and JSONPaths)--> Plan
//!   --engine: fetch -> paginate -> extract -> filter--> ContactRecord pages
//!   --store (contacts + memberships + fields + checkpoint, one transaction)
//! ```
//!
//! - [`config`]: the three file kinds as written ([`config::spec`]), reading them with
//!   file/line/key diagnostics, cross-file validation, JSON Schemas.
//! - [`duration`]: ISO 8601 durations, the one duration syntax of every file.
//! - [`logging`]: the log subscriber, which keeps other crates' debug output (rendered
//!   templates, URLs, headers) from ever printing.
//! - [`model`]: the records the engine hands the store.
//! - [`store`]: the store trait and its SQLite and PostgreSQL backends.
//! - [`commands`]: one file per CLI subcommand; `main.rs` only parses and dispatches.

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod engine;
pub mod jsonpath;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod secret;
pub mod store;
pub mod template;
pub mod timeformat;
