//! Reading and checking Tributary's files. Never touches the network or the store.
//!
//! - [`spec`]: the three file kinds as written (serde + JSON Schema types).
//! - [`load`]: finding the config, reading every file (the only user of `serde_yaml`),
//!   building the [`crate::plan::Plan`].
//! - [`validate`]: compiling specs into the plan with cross-file and semantic checks.
//! - [`locate`]: key path to line and column, for diagnostics of semantic checks.
//! - [`diagnostic`]: the one error format.

pub mod diagnostic;
pub mod load;
pub mod locate;
pub mod schema;
pub mod spec;
pub mod tagged;
pub mod validate;
