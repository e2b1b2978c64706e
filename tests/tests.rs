//! Integration tests: one binary, modules per concern.

mod common;
mod sync;
