//! Integration tests: one binary, modules per concern.

mod config;
mod store;
