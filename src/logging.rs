//! The process's log subscriber: `RUST_LOG` (or a default) for Tributary's own events,
//! and a fixed ceiling for every other crate's.
//!
//! Third-party crates log what passes through them, and some of it is secret: handlebars
//! logs each helper's evaluated parameters at debug level (a rendered credential, issue 11
//! finding 9), reqwest and hyper log URLs (query keys) and, at trace level, raw request
//! bytes (authorization headers). Tributary's own events are written to carry no secret
//! (the engine redacts every text it logs), but no redaction can be applied to another
//! crate's messages. So whatever `RUST_LOG` asks, events from outside `tributary` are
//! shown only up to [`THIRD_PARTY_CEILING`]; `RUST_LOG=debug` makes Tributary itself
//! verbose and leaves the libraries at `info`.

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The most verbose level shown for events of crates other than Tributary.
pub const THIRD_PARTY_CEILING: Level = Level::INFO;

/// Whether an event or span may be shown at all: Tributary's own at any level, another
/// crate's only up to [`THIRD_PARTY_CEILING`].
pub fn allowed(metadata: &Metadata<'_>) -> bool {
    is_own(metadata.target()) || *metadata.level() <= THIRD_PARTY_CEILING
}

/// Whether `target` (a module path, or a `log` crate target) is Tributary's.
fn is_own(target: &str) -> bool {
    target == "tributary" || target.starts_with("tributary::")
}

/// Installs the process's subscriber, writing to stderr: `RUST_LOG` when set and valid,
/// else `default_directives` (e.g. `tributary=warn`), always under the third-party
/// ceiling. A second call does nothing (a subscriber is already installed).
pub fn init(default_directives: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directives));
    let _ = tracing_subscriber::registry()
        .with(FilterFn::new(allowed))
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_targets_pass_above_the_ceiling() {
        assert!(is_own("tributary"));
        assert!(is_own("tributary::engine::client"));
        assert!(!is_own("tributary_helper"));
        assert!(!is_own("handlebars::render"));
        assert!(!is_own("reqwest::connect"));
    }
}
