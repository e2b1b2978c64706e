//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod fake;
pub mod hostile;
pub mod service;
pub mod services;
pub mod sync_env;
