//! The scheduler's clock, as a parameter: the daemon uses the system clock, tests a
//! manual one they advance by hand.
//!
//! Why not tokio's paused clock: it also pauses the timeouts of real HTTP requests, so a
//! test with a fake service would see its requests time out (see
//! `../shared/reference/crates.md`). With a clock of its own, the scheduler's idea of
//! "now" moves only when a test says so, while runs and their requests take real time.

use std::sync::{Arc, Mutex};

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// A future the scheduler can hold across awaits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the scheduler reads the time and waits for it.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once `now() >= at`.
    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told: for tests of the schedule.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    tick: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        let (tick, _) = watch::channel(start);
        ManualClock {
            now: Arc::new(Mutex::new(start)),
            tick,
        }
    }

    /// Moves the clock forward by `by`, waking whoever waits for a time now reached.
    pub fn advance(&self, by: chrono::Duration) {
        let now = {
            let mut now = self.now.lock().expect("clock lock");
            *now += by;
            *now
        };
        self.tick.send_replace(now);
    }

    /// Sets the clock to `at` (never backwards).
    pub fn set(&self, at: DateTime<Utc>) {
        let now = {
            let mut now = self.now.lock().expect("clock lock");
            *now = (*now).max(at);
            *now
        };
        self.tick.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock lock")
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut rx = self.tick.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone, nothing will ever
            // move the time, so waiting forever is the honest answer.
            if rx.wait_for(|now| *now >= at).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}
