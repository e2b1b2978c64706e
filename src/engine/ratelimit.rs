//! Client-side rate limits, shared by every importer on one service **account**.
//!
//! A service limits an account, not an importer: three importers reading one Pipedrive
//! company with one API token share its requests per second. So a limiter belongs to the
//! account: the connector's `service`, its declared `rate_limit`, and the importer's
//! resolved credentials, hashed (blake3) into the key. The credentials are never kept in
//! clear here; logs show a short prefix of the hash. Limiters live in a process-wide
//! registry of weak references: one exists while a run on its account is going, so ten
//! thousand idle importers hold nothing.
//!
//! What a limiter does before each request: waits while the account is paused (a quota
//! header said the quota is spent, or a 429 said to wait), takes one of the account's
//! concurrent slots, and waits for its turn in an even pace (`governor`'s GCRA with a
//! burst of one, so two importers together never exceed the documented rate in any
//! second). Never sends anything, never decides a retry (`retry.rs` does).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::plan::{RateLimit, RemainingFormat, ResetFormat};

/// Wait when a quota header says none is left but no reset header says until when: a
/// leaky bucket (Shopify's leaks two a second) has room again within a second.
const DEFAULT_QUOTA_WAIT: Duration = Duration::from_secs(1);

type Registry = Mutex<HashMap<[u8; 32], Weak<AccountLimiter>>>;

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// The limits of one service account, shared by its importers' runs.
pub struct AccountLimiter {
    /// A short prefix of the account key, for logs (never a credential).
    pub account: String,
    spec: RateLimit,
    pace: Option<DefaultDirectRateLimiter>,
    slots: Option<Arc<Semaphore>>,
    /// Until when the account must not send, and the status that said so.
    paused: Mutex<Option<Pause>>,
}

#[derive(Debug, Clone, Copy)]
struct Pause {
    until: Instant,
    until_utc: DateTime<Utc>,
    status: u16,
}

impl std::fmt::Debug for AccountLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountLimiter")
            .field("account", &self.account)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// A turn to send one request; the account's concurrent slot is held until it drops.
#[derive(Debug)]
pub struct Turn {
    _slot: Option<OwnedSemaphorePermit>,
}

/// The account is paused for longer than a run waits.
#[derive(Debug, Clone, Copy)]
pub struct Paused {
    /// When the service accepts requests again.
    pub until: DateTime<Utc>,
    /// The status of the response that announced it.
    pub status: u16,
}

impl AccountLimiter {
    /// The limiter of `service`'s account named by `credentials` (resolved values, in any
    /// order) under `spec`: the one already in use, or a new one.
    pub fn for_account(
        service: &str,
        spec: &RateLimit,
        credentials: &[(&str, &str)],
    ) -> Arc<AccountLimiter> {
        let mut sorted: Vec<&(&str, &str)> = credentials.iter().collect();
        sorted.sort();
        let mut hasher = blake3::Hasher::new();
        hasher.update(service.as_bytes());
        hasher.update(&[0]);
        hasher.update(format!("{spec:?}").as_bytes());
        for (name, value) in sorted {
            hasher.update(&[0]);
            hasher.update(name.as_bytes());
            hasher.update(&[0]);
            hasher.update(value.as_bytes());
        }
        let key = *hasher.finalize().as_bytes();
        let mut registry = REGISTRY.lock().expect("rate-limit registry");
        if let Some(limiter) = registry.get(&key).and_then(Weak::upgrade) {
            return limiter;
        }
        registry.retain(|_, weak| weak.strong_count() > 0);
        let limiter = Arc::new(AccountLimiter::new(
            format!("{service}:{}", &blake3::Hash::from(key).to_hex()[..12]),
            spec.clone(),
        ));
        registry.insert(key, Arc::downgrade(&limiter));
        limiter
    }

    fn new(account: String, spec: RateLimit) -> AccountLimiter {
        let pace = spec
            .interval
            .and_then(Quota::with_period)
            .map(|quota| RateLimiter::direct(quota.allow_burst(NonZeroU32::MIN)));
        let slots = spec
            .concurrent
            .map(|n| Arc::new(Semaphore::new(n as usize)));
        AccountLimiter {
            account,
            spec,
            pace,
            slots,
            paused: Mutex::new(None),
        }
    }

    /// Waits for this account's turn: past any pause, a free concurrent slot, the pace.
    ///
    /// # Errors
    /// [`Paused`] when the account is paused for longer than `max_wait` (a spent daily
    /// quota): the caller stops its run instead of waiting.
    pub async fn turn(&self, max_wait: Duration) -> Result<Turn, Paused> {
        loop {
            let pause = *self.paused.lock().expect("pause lock");
            let Some(pause) = pause else { break };
            let now = Instant::now();
            if pause.until <= now {
                break;
            }
            let wait = pause.until - now;
            if wait > max_wait {
                return Err(Paused {
                    until: pause.until_utc,
                    status: pause.status,
                });
            }
            tracing::debug!(account = %self.account, wait_seconds = wait.as_secs_f64(), "Waiting for the account's quota.");
            tokio::time::sleep(wait).await;
        }
        let slot = match &self.slots {
            Some(slots) => Some(
                Arc::clone(slots)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            ),
            None => None,
        };
        if let Some(pace) = &self.pace {
            pace.until_ready().await;
        }
        Ok(Turn { _slot: slot })
    }

    /// Reads a response's quota headers: when they say no request is left, pauses the
    /// account until the announced reset and returns that wait.
    pub fn observe(&self, status: u16, headers: &HeaderMap) -> Option<Duration> {
        let (name, format) = self.spec.remaining.as_ref()?;
        let value = headers.get(name.as_str())?.to_str().ok()?;
        let left = remaining(value, *format)?;
        if left > 0 {
            return None;
        }
        let wait = self.reset_wait(headers).unwrap_or(DEFAULT_QUOTA_WAIT);
        self.pause(wait, status);
        Some(wait)
    }

    /// The wait the reset header announces, if the connector names one and it is there.
    pub fn reset_wait(&self, headers: &HeaderMap) -> Option<Duration> {
        let (name, format) = self.spec.reset.as_ref()?;
        let value = headers.get(name.as_str())?.to_str().ok()?;
        reset_wait(value, *format, Utc::now())
    }

    /// Pauses every request of the account for `wait` (never shortening a pause).
    pub fn pause(&self, wait: Duration, status: u16) {
        let until = Instant::now() + wait;
        let until_utc = Utc::now()
            + chrono::Duration::from_std(wait)
                .unwrap_or_else(|_| chrono::Duration::days(1))
                .min(chrono::Duration::days(7));
        let mut paused = self.paused.lock().expect("pause lock");
        if paused.is_none_or(|p| p.until < until) {
            *paused = Some(Pause {
                until,
                until_utc,
                status,
            });
        }
    }
}

/// Requests left, as a quota header writes them (`42`, or `32/40` used of the limit).
pub fn remaining(value: &str, format: RemainingFormat) -> Option<i64> {
    let value = value.trim();
    match format {
        RemainingFormat::Count => value.parse::<f64>().ok().map(|v| v.floor() as i64),
        RemainingFormat::UsedOfLimit => {
            let (used, limit) = value.split_once('/')?;
            let used: i64 = used.trim().parse().ok()?;
            let limit: i64 = limit.trim().parse().ok()?;
            Some(limit - used)
        }
    }
}

/// The wait until a reset, as a header writes it, read against `now`; `None` for
/// anything unreadable (then the caller's default applies). A reset in the past is no
/// wait.
pub fn reset_wait(value: &str, format: ResetFormat, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let seconds = |s: f64| (s >= 0.0).then(|| Duration::try_from_secs_f64(s).ok())?;
    match format {
        ResetFormat::Seconds => seconds(value.parse().ok()?),
        ResetFormat::Millis => seconds(value.parse::<f64>().ok()? / 1000.0),
        ResetFormat::UnixSeconds => {
            let at: f64 = value.parse().ok()?;
            seconds((at - now.timestamp() as f64).max(0.0))
        }
        ResetFormat::HttpDate => {
            let at = DateTime::parse_from_rfc2822(value).ok()?;
            Some((at.with_timezone(&Utc) - now).to_std().unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_headers_are_read_in_each_format() {
        assert_eq!(remaining(" 42 ", RemainingFormat::Count), Some(42));
        assert_eq!(remaining("40/40", RemainingFormat::UsedOfLimit), Some(0));
        assert_eq!(remaining("32/40", RemainingFormat::UsedOfLimit), Some(8));
        assert_eq!(remaining("many", RemainingFormat::Count), None);
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let wait = |v, f| reset_wait(v, f, now);
        assert_eq!(
            wait("2", ResetFormat::Seconds),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            wait("1500", ResetFormat::Millis),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait("1714557630", ResetFormat::UnixSeconds),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait("Wed, 01 May 2024 10:01:00 GMT", ResetFormat::HttpDate),
            Some(Duration::from_secs(60))
        );
        assert_eq!(wait("-1", ResetFormat::Seconds), None);
        assert_eq!(wait("1e300", ResetFormat::Seconds), None);
    }

    #[test]
    fn one_account_one_limiter_another_account_another() {
        let spec = RateLimit {
            interval: Some(Duration::from_millis(100)),
            concurrent: Some(2),
            remaining: None,
            reset: None,
        };
        let a = AccountLimiter::for_account("crm", &spec, &[("token", "t1"), ("id", "x")]);
        let same = AccountLimiter::for_account("crm", &spec, &[("id", "x"), ("token", "t1")]);
        let other = AccountLimiter::for_account("crm", &spec, &[("token", "t2"), ("id", "x")]);
        assert!(Arc::ptr_eq(&a, &same));
        assert!(!Arc::ptr_eq(&a, &other));
        assert!(!a.account.contains("t1"));
    }
}
