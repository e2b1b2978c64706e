//! Reading, checking and compiling Tributary's files into the [`crate::plan::Plan`].
//! Never touches the network or the store.
//!
//! Data flows one way, one module per stage (none imports a later one):
//!
//! ```text
//! tributary.yaml, connectors.d/*.yaml, importers.d/*.yaml
//!   --read: YAML with positions-->           SourceFile<*Spec> (+ Locator)
//!   --check: rules across files-->           diagnostics
//!   --compile: one function per section-->   plan::{Connector, Importer, DaemonConfig}
//!   --load: all of it, every diagnostic-->   Plan, or every error of every file
//! ```
//!
//! - [`spec`]: the three file kinds as written (serde + JSON Schema types), with
//!   [`tagged`] deserializers that keep positions inside `type:`-tagged blocks.
//! - [`read`]: finding and parsing files (the only user of `serde_yaml`); [`locate`]:
//!   key path to line and column.
//! - [`check`]: cross-file rules on parsed specs.
//! - [`compile`]: specs into runnable plan types, section by section.
//! - [`load`]: the pipeline, and where the config file is found.
//! - [`diagnostic`]: the one error format; [`schema`]: JSON Schemas of the specs.

pub mod check;
pub mod compile;
pub mod diagnostic;
pub mod load;
pub mod locate;
pub mod read;
pub mod schema;
pub mod spec;
pub mod tagged;
