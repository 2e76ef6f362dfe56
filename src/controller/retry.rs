//! When a reconcile runs again: per-object exponential backoff after errors
//! (capped, with jitter) and a jittered periodic resync as the safety net
//! against any missed event.
//!
//! Guarantee: an object whose reconciles keep failing is retried at most
//! once per [`MAX_BACKOFF`], and every object is reconciled at least once per
//! resync period even when no event arrives.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::controller::Action;

/// First retry delay after an error.
pub const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay after repeated errors.
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// The retry delay after `failures` consecutive errors (1 = the first):
/// doubling from [`BASE_BACKOFF`], capped at [`MAX_BACKOFF`], then scaled by
/// `jitter` in [0.8, 1.2). Pure.
pub fn backoff_delay(failures: u32, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let delay = BASE_BACKOFF
        .saturating_mul(1u32 << exponent)
        .min(MAX_BACKOFF);
    delay.mul_f64(jitter.clamp(0.8, 1.2))
}

/// How long after its retry was due an entry is kept without news: an
/// object deleted while failing is never retried (nor succeeds), so its
/// entry is dropped once its retry is this overdue.
pub const OVERDUE_GRACE: Duration = Duration::from_secs(10);

/// Consecutive failures per object (controller and uid), with when the
/// retry is due.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Backoff {
    /// Records one more failure of `key` and returns the delay before the retry.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let now = Instant::now();
        let entry = failures.entry(key.to_string()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        let delay = backoff_delay(entry.0, 0.8 + 0.4 * rand::random::<f64>());
        entry.1 = now + delay;
        delay
    }

    /// Drops the entries whose retry was due more than [`OVERDUE_GRACE`]
    /// before `now` (their object went away: a live one is retried, which
    /// either succeeds or records a new failure). A busy queue that delays a
    /// live retry past the grace only restarts its backoff from the base.
    /// Returns how many were dropped.
    pub fn prune_overdue(&self, now: Instant) -> usize {
        let mut failures = self.failures.lock().expect("backoff lock");
        let before = failures.len();
        failures.retain(|_, (_, due)| now.saturating_duration_since(*due) <= OVERDUE_GRACE);
        before - failures.len()
    }

    /// Forgets `key`'s failures (it reconciled successfully, or went away).
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().expect("backoff lock");
        if !failures.is_empty() {
            failures.remove(key);
        }
    }

    /// Number of objects with failures on record (bounded-state checks).
    pub fn len(&self) -> usize {
        self.failures.lock().expect("backoff lock").len()
    }

    /// Whether no object has failures on record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The resync delay: `period` scaled by a jitter in [0.9, 1.1), so the
/// objects of a large cluster do not all come due at once.
pub fn resync_delay(period: Duration) -> Duration {
    period.mul_f64(0.9 + 0.2 * rand::random::<f64>())
}

/// The action after a successful reconcile: its own requeue when it asked
/// for one sooner than the resync, else the jittered resync.
pub fn with_resync(action: Action, requested: Option<Duration>, period: Duration) -> Action {
    match requested {
        Some(after) if after <= period => action,
        _ => Action::requeue(resync_delay(period)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_delay(1, 1.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(2, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(5, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(40, 1.0), MAX_BACKOFF);
        assert!(backoff_delay(40, 1.19) <= MAX_BACKOFF.mul_f64(1.2));
        assert_eq!(
            backoff_delay(1, 5.0),
            Duration::from_millis(600),
            "jitter clamped"
        );
    }

    #[test]
    fn failures_are_counted_per_object_and_reset_on_success() {
        let b = Backoff::default();
        let first = b.failed("a");
        let second = b.failed("a");
        assert!(second > first, "{second:?} > {first:?}");
        assert!(b.failed("b") < Duration::from_secs(1));
        assert_eq!(b.len(), 2);
        b.succeeded("a");
        assert_eq!(b.len(), 1);
        assert!(b.failed("a") < Duration::from_secs(1));
    }

    #[test]
    fn entries_of_objects_never_retried_are_pruned() {
        let b = Backoff::default();
        let delay = b.failed("gone");
        let now = Instant::now();
        assert_eq!(b.prune_overdue(now), 0, "not due yet");
        assert_eq!(b.prune_overdue(now + delay + OVERDUE_GRACE / 2), 0);
        assert_eq!(b.prune_overdue(now + delay + OVERDUE_GRACE * 2), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn resync_is_jittered_around_the_period() {
        for _ in 0..100 {
            let d = resync_delay(Duration::from_secs(300));
            assert!(d >= Duration::from_secs(270) && d < Duration::from_secs(330));
        }
    }
}
