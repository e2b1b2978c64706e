//! The store suite: every test runs on SQLite and on PostgreSQL (`<test>::sqlite`,
//! `<test>::postgres`), written once against the `Store` trait.

mod claims;
mod cli;
mod findings;
mod harness;
mod history;
mod lease;
mod open;
mod perf;
mod rules;
mod schema;
mod tokens;
