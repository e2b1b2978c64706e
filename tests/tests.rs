//! Integration tests: one binary, modules per concern.

mod common;
mod config;
mod connectors;
mod daemon;
mod reliability;
mod store;
mod sync;
