//! Integration tests: one binary, modules per concern.

mod common;
mod config;
mod store;
mod sync;
