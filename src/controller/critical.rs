//! The critical path first: the claims this process is serving right now,
//! so that work off their critical path waits for them.
//!
//! Between a claim reconcile's pick and its Ready write the API server is
//! the bottleneck: every other write it handles meanwhile (the adoption of
//! a Pod a claim stole a moment ago, the refill Pod create, its binding and
//! its status updates) is CPU the claim's own writes wait for. So, bounded
//! by [`Config::defer_off_path`](super::Config):
//! - a Sandbox adopts the Pod of a claim in flight only once that claim's
//!   round two is done ([`InFlight::yield_to`]);
//! - a pool creates refill Pods only when no claim of its namespace is in
//!   flight, or the bound has passed ([`InFlight::yield_to_namespace`]).
//!   Under steady load in one namespace the set is rarely empty there, so
//!   refills then wait the whole bound each time: the price is that much
//!   later a refill, against a busy API server's time for the claims.
//!
//! Guarantees: this only orders writes, it never skips one: every wait ends
//! at the bound at the latest, and a claim leaves the set when its serve
//! returns, however it returns (the entry is removed on drop). Nothing here
//! is persisted: another process, or this one after a restart, simply does
//! not wait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Claims in flight in this process (between the pick and the Ready write).
#[derive(Default)]
pub struct InFlight {
    /// Claim uid -> number of serves of it under way (a retried reconcile
    /// may overlap nothing, but the count keeps removal exact) and the
    /// claim's namespace.
    claims: Mutex<HashMap<String, (usize, String)>>,
    /// Woken whenever a claim leaves the set.
    left: Notify,
}

/// A claim's place in [`InFlight`]; dropping it takes the claim out.
pub struct Serving<'a> {
    set: &'a InFlight,
    uid: String,
}

impl InFlight {
    /// Marks `claim_uid` (in `namespace`) as being served until the
    /// returned guard drops.
    pub fn begin(&self, claim_uid: &str, namespace: &str) -> Serving<'_> {
        self.lock()
            .entry(claim_uid.to_string())
            .or_insert_with(|| (0, namespace.to_string()))
            .0 += 1;
        Serving {
            set: self,
            uid: claim_uid.to_string(),
        }
    }

    /// Whether `claim_uid` is being served.
    pub fn contains(&self, claim_uid: &str) -> bool {
        self.lock().contains_key(claim_uid)
    }

    /// Whether a claim of `namespace` is being served.
    pub fn serves_in(&self, namespace: &str) -> bool {
        self.lock().values().any(|(_, ns)| ns == namespace)
    }

    /// Waits until `claim_uid` is no longer served, `max` at most. Returns
    /// how long it waited.
    pub async fn yield_to(&self, claim_uid: &str, max: Duration) -> Duration {
        self.wait_until(|set| !set.contains(claim_uid), max).await
    }

    /// Waits until no claim of `namespace` is served, `max` at most.
    /// Returns how long it waited.
    pub async fn yield_to_namespace(&self, namespace: &str, max: Duration) -> Duration {
        self.wait_until(|set| !set.serves_in(namespace), max).await
    }

    async fn wait_until(&self, done: impl Fn(&InFlight) -> bool, max: Duration) -> Duration {
        let start = Instant::now();
        let deadline = start + max;
        loop {
            // Registered before the check, so a claim leaving in between
            // still wakes this waiter.
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if done(self) || Instant::now() >= deadline {
                return start.elapsed();
            }
            if tokio::time::timeout_at(deadline, left).await.is_err() {
                return start.elapsed();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (usize, String)>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        {
            let mut claims = self.set.lock();
            if let Some((count, _)) = claims.get_mut(&self.uid) {
                *count -= 1;
                if *count == 0 {
                    claims.remove(&self.uid);
                }
            }
        }
        self.set.left.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiter_wakes_when_its_claim_is_done() {
        let set = Arc::new(InFlight::default());
        let guard = set.begin("c1", "a");
        let other = set.begin("c2", "a");
        let waiter = {
            let set = Arc::clone(&set);
            tokio::spawn(async move { set.yield_to("c1", Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "c1 is still in flight");
        drop(guard);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken when c1 left, long before the bound")
            .unwrap();
        assert!(waited < Duration::from_secs(30));
        // c2 is still served: waiting for everyone is not over.
        assert!(set.contains("c2") && !set.contains("c1"));
        drop(other);
        assert!(!set.contains("c2") && !set.serves_in("a"));
    }

    #[tokio::test]
    async fn every_wait_ends_at_the_bound() {
        let set = InFlight::default();
        let _guard = set.begin("c1", "a");
        let waited = set.yield_to_namespace("a", Duration::from_millis(30)).await;
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(set.contains("c1"), "waiting never takes a claim out");
    }

    #[tokio::test]
    async fn nothing_in_flight_means_no_wait() {
        let set = InFlight::default();
        let _other = set.begin("c2", "a");
        let bound = Duration::from_secs(30);
        assert!(set.yield_to("c1", bound).await < Duration::from_secs(1));
        assert!(set.yield_to_namespace("b", bound).await < Duration::from_secs(1));
        assert!(InFlight::default().yield_to_namespace("a", bound).await < Duration::from_secs(1));
    }

    #[test]
    fn overlapping_serves_of_one_claim_leave_it_in_until_both_end() {
        let set = InFlight::default();
        let a = set.begin("c1", "a");
        let b = set.begin("c1", "a");
        drop(a);
        assert!(set.contains("c1"));
        drop(b);
        assert!(!set.contains("c1"));
    }
}
