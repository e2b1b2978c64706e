//! Integration tests: one binary, modules per concern.
mod store;
