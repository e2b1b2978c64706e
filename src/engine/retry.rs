//! How long one request keeps trying: exponential backoff with full jitter, bounded by
//! **time** (`limits.retry_budget`), not by a count of attempts, and the waits a service
//! asks for (`Retry-After`, quota headers) honoured up to `limits.max_wait`.
//!
//! Why time and not attempts: a service that is briefly overloaded answers a streak of
//! 429s and 5xx (six in a row is ordinary for a shared CRM at the top of the hour); three
//! attempts turned such a streak into a failed run. A budget of minutes rides it out, and
//! still ends a request against a service that is really down.
//!
//! Why full jitter (a wait drawn uniformly between zero and the exponential ceiling):
//! importers that failed together must not retry together, or they meet the same
//! overload again in step. The exponential ceiling comes from `backon`'s
//! `ExponentialBuilder` (its own jitter only adds to a delay, never draws below it).
//!
//! Only the decision lives here; `client.rs` sleeps and sends. Never knows what was sent.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng as _;

use crate::plan::Limits;

/// First backoff ceiling: a blip is over in a fraction of a second.
pub const BASE_DELAY: Duration = Duration::from_millis(100);
/// Largest backoff ceiling: past it, waiting longer between attempts buys nothing.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again.
    Wait(Duration),
    /// The service asks for a wait longer than `limits.max_wait` (a daily quota): stop
    /// the run at its checkpoint; the next one may start after this wait.
    Quota(Duration),
    /// The budget is spent: the request fails with its last error.
    GiveUp,
}

/// The retry state of one request.
#[derive(Debug)]
pub struct Retrier {
    started: Instant,
    budget: Duration,
    max_wait: Duration,
    ceilings: ExponentialBackoff,
    attempts: u32,
}

impl Retrier {
    /// A request starting now, under `limits`.
    pub fn new(limits: &Limits) -> Self {
        Retrier {
            started: Instant::now(),
            budget: limits.retry_budget,
            max_wait: limits.max_wait,
            ceilings: ExponentialBuilder::new()
                .with_min_delay(BASE_DELAY)
                .with_max_delay(MAX_DELAY)
                .with_factor(2.0)
                .without_max_times()
                .build(),
            attempts: 1,
        }
    }

    /// Decides after a failed attempt that may be retried. `hint` is the wait the service
    /// asked for, if it said one (`Retry-After`, a quota header): it is honoured as a
    /// lower bound, so a service answering `Retry-After: 0` in a loop still meets the
    /// backoff instead of a tight loop.
    pub fn next(&mut self, hint: Option<Duration>) -> Next {
        if let Some(hint) = hint
            && hint > self.max_wait
        {
            return Next::Quota(hint);
        }
        let ceiling = self.ceilings.next().unwrap_or(MAX_DELAY);
        let jittered = full_jitter(ceiling);
        let wait = hint.map_or(jittered, |hint| hint.max(jittered));
        if self.started.elapsed() + wait > self.budget {
            return Next::GiveUp;
        }
        self.attempts += 1;
        Next::Wait(wait)
    }

    /// Attempts made so far, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time since the first attempt began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The budget this request had.
    pub fn budget(&self) -> Duration {
        self.budget
    }
}

/// A wait drawn uniformly from zero to `ceiling`.
fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(budget: u64, max_wait: u64) -> Limits {
        Limits {
            retry_budget: Duration::from_secs(budget),
            max_wait: Duration::from_secs(max_wait),
            ..Limits::default()
        }
    }

    #[test]
    fn waits_are_jittered_below_a_doubling_ceiling() {
        let mut retrier = Retrier::new(&limits(3600, 60));
        let mut ceiling = BASE_DELAY;
        for _ in 0..12 {
            let Next::Wait(wait) = retrier.next(None) else {
                panic!("within the budget");
            };
            assert!(wait <= ceiling, "{wait:?} over {ceiling:?}");
            ceiling = (ceiling * 2).min(MAX_DELAY);
        }
        assert_eq!(retrier.attempts(), 13);
    }

    #[test]
    fn a_service_wait_is_a_lower_bound_and_a_long_one_a_quota() {
        let mut retrier = Retrier::new(&limits(3600, 60));
        assert_eq!(
            retrier.next(Some(Duration::from_secs(5))),
            Next::Wait(Duration::from_secs(5))
        );
        assert_eq!(
            retrier.next(Some(Duration::from_secs(61))),
            Next::Quota(Duration::from_secs(61))
        );
        let Next::Wait(wait) = retrier.next(Some(Duration::ZERO)) else {
            panic!("within the budget");
        };
        assert!(wait <= BASE_DELAY * 4);
    }

    #[test]
    fn the_budget_ends_the_retries() {
        let mut retrier = Retrier::new(&limits(10, 60));
        assert_eq!(retrier.next(Some(Duration::from_secs(11))), Next::GiveUp);
        assert_eq!(
            retrier.next(Some(Duration::from_secs(9))),
            Next::Wait(Duration::from_secs(9))
        );
    }
}
