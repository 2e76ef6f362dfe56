//! [`WriteMemo`]: what this process last wrote per object, so a reconcile
//! woken by a stale event does not repeat a write whose result the cache has
//! not shown yet. Safe to lose: after a restart a write is simply repeated.

use std::time::Duration;

/// Remembers the last status (and one-off creates) written per object uid.
/// Safe to lose: after a restart the first write is simply repeated.
#[derive(Default)]
pub struct WriteMemo {
    inner: std::sync::Mutex<
        std::collections::HashMap<String, (serde_json::Value, std::time::Instant)>,
    >,
}

/// How long a remembered write suppresses an identical one.
const MEMO_TTL: Duration = Duration::from_secs(30);

impl WriteMemo {
    /// The comparable form of a status: condition transition times and the
    /// ready time left out (a stale copy of the object recomputes them with
    /// a later clock).
    pub fn status_key_value<T: serde::Serialize>(status: &T) -> serde_json::Value {
        let mut value = serde_json::to_value(status).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.remove("readyTime");
        }
        if let Some(conditions) = value.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for c in conditions {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastTransitionTime");
                }
            }
        }
        value
    }

    /// Whether `value` under `key` was written less than a while ago.
    pub fn recently_wrote(&self, key: &str, value: &serde_json::Value) -> bool {
        let memo = self.inner.lock().expect("memo lock");
        memo.get(key)
            .is_some_and(|(v, at)| v == value && at.elapsed() < MEMO_TTL)
    }

    /// Records a write.
    pub fn record(&self, key: &str, value: serde_json::Value) {
        let mut memo = self.inner.lock().expect("memo lock");
        if memo.len() > 10_000 {
            memo.retain(|_, (_, at)| at.elapsed() < MEMO_TTL);
        }
        memo.insert(key.to_string(), (value, std::time::Instant::now()));
    }

    /// Forgets a write whose result the cache now shows: the memo only
    /// bridges the cache's lag, and an object deleted later must be made
    /// again at once.
    pub fn forget(&self, key: &str) {
        self.inner.lock().expect("memo lock").remove(key);
    }

    /// Drops the writes that no longer suppress anything at `now` (older
    /// than the TTL); returns how many. Without it, entries of deleted
    /// objects stay until the table reaches its prune threshold.
    pub fn prune_expired(&self, now: std::time::Instant) -> usize {
        let mut memo = self.inner.lock().expect("memo lock");
        let before = memo.len();
        memo.retain(|_, (_, at)| now.saturating_duration_since(*at) < MEMO_TTL);
        before - memo.len()
    }

    /// Number of writes remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("memo lock").len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_writes_are_pruned_and_fresh_ones_kept() {
        let memo = WriteMemo::default();
        memo.record("status/a", serde_json::json!(1));
        assert!(memo.recently_wrote("status/a", &serde_json::json!(1)));
        let now = std::time::Instant::now();
        assert_eq!(memo.prune_expired(now), 0);
        assert_eq!(memo.len(), 1);
        assert_eq!(memo.prune_expired(now + MEMO_TTL), 1);
        assert!(memo.is_empty());
    }
}
