//! [`WriteMemo`]: what this process last wrote per object, so a reconcile
//! woken by a stale event does not repeat a write whose result the cache has
//! not shown yet. Safe to lose: after a restart a write is simply repeated.

use std::time::Duration;

/// Remembers the last status (and one-off creates) written per object uid.
/// Safe to lose: after a restart the first write is simply repeated.
#[derive(Default)]
pub struct WriteMemo {
    inner: std::sync::Mutex<std::collections::HashMap<String, Written>>,
}

/// One remembered write: its value, when, and for a status write the
/// resourceVersion it replaced (see [`WriteMemo::recently_wrote_over`]).
struct Written {
    value: serde_json::Value,
    at: std::time::Instant,
    over: Option<String>,
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
            .is_some_and(|w| w.value == *value && w.at.elapsed() < MEMO_TTL)
    }

    /// Whether `value` under `key` was written less than a while ago on top
    /// of the version `seen`: the object as this process sees it is still
    /// the version that write replaced, so its cache lags and the write
    /// stands. A copy of any other version has moved past that write, and
    /// if its status still differs someone else wrote since (another
    /// process, from its own caches): the write is not suppressed then, or
    /// a status another process overwrote would stand until the memo ends.
    pub fn recently_wrote_over(
        &self,
        key: &str,
        value: &serde_json::Value,
        seen: Option<&str>,
    ) -> bool {
        let memo = self.inner.lock().expect("memo lock");
        memo.get(key).is_some_and(|w| {
            w.value == *value && w.at.elapsed() < MEMO_TTL && w.over.as_deref() == seen
        })
    }

    /// Records a write.
    pub fn record(&self, key: &str, value: serde_json::Value) {
        self.insert(key, value, None);
    }

    /// Records a status write conditioned on the version `over` (see
    /// [`Self::recently_wrote_over`]).
    pub fn record_over(&self, key: &str, value: serde_json::Value, over: Option<&str>) {
        self.insert(key, value, over.map(str::to_owned));
    }

    fn insert(&self, key: &str, value: serde_json::Value, over: Option<String>) {
        let mut memo = self.inner.lock().expect("memo lock");
        if memo.len() > 10_000 {
            memo.retain(|_, w| w.at.elapsed() < MEMO_TTL);
        }
        let at = std::time::Instant::now();
        memo.insert(key.to_string(), Written { value, at, over });
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
        memo.retain(|_, w| now.saturating_duration_since(w.at) < MEMO_TTL);
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

    #[test]
    fn a_status_write_stands_only_while_the_copy_is_the_version_it_replaced() {
        let memo = WriteMemo::default();
        let not_ready = serde_json::json!({"ready": false});
        memo.record_over("status/a", not_ready.clone(), Some("3"));
        // The cache still shows version 3: it lags, the write stands.
        assert!(memo.recently_wrote_over("status/a", &not_ready, Some("3")));
        // Version 5 with another status: someone wrote after ours.
        assert!(!memo.recently_wrote_over("status/a", &not_ready, Some("5")));
        assert!(!memo.recently_wrote_over("status/a", &serde_json::json!(1), Some("3")));
        // The plain check ignores versions.
        assert!(memo.recently_wrote("status/a", &not_ready));
    }
}
