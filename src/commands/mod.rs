//! One module per CLI subcommand. Each exposes `*Args` (clap) and an `execute` function
//! returning the process exit code.

pub mod auth;
pub mod contacts;
pub mod daemon;
pub mod fields;
pub mod run;
pub mod schema;
pub mod state;
pub mod status;
pub mod validate;
