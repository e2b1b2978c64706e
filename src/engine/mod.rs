//! The sync engine: runs an importer against its service, page by page, into the store.
//!
//! Data flows one way through one module per concern:
//!
//! ```text
//! client (render request, auth, send) -> paginate (next request, stop rules, position)
//!   -> extract (records -> contacts) -> filter (client-side) -> run (store, checkpoint)
//! ```
//!
//! [`run::run_importer`] is the entry point. The engine reads the compiled [`crate::plan`]
//! only (never a `*Spec`), and reaches the store only through [`crate::store::Store`].
//! Secrets live in [`client`] and are scrubbed from anything leaving the engine by
//! [`redact`].

pub mod client;
pub mod extract;
pub mod filter;
pub mod paginate;
pub mod projection;
pub mod ratelimit;
pub mod redact;
pub mod retry;
pub mod rules;
pub mod run;

pub use run::{
    DryRun, FailureKind, PassKind, Progress, ProgressFn, RunError, RunOptions, RunSummary,
    run_importer,
};
