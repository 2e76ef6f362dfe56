//! What this process remembers between its reconciles about the Pods it
//! takes: the Pods chosen for a steal (so two reconciles of this process
//! never pick the same candidate), which claim each won steal served (a
//! retried reconcile finds its Pod before the cache shows it), the Pods it
//! gave back (deleted) that the cache may still show stolen, and the Pods
//! whose give-back was refused (kept), to be decided again.
//!
//! Guarantee: memory only, bounded by a TTL; reservations, steal and
//! give-back records are also pruned by the janitor against the Pod cache,
//! kept records only by the TTL (they matter most while the cache lags).
//! Nothing here decides ownership, which the API server's conditioned
//! writes do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pods this process has chosen for a steal, so two concurrent reconciles
/// never pick the same one, which claim each successful steal served (lets
/// a retried reconcile find its Pod before the cache shows it), the Pods it
/// gave back (so none is taken for its claim's Pod again), and the Pods
/// whose give-back was refused (so the claim decides on them again).
#[derive(Default)]
pub struct Reservations {
    inner: Mutex<ReservationState>,
}

#[derive(Default)]
struct ReservationState {
    /// Pod key -> when it was reserved.
    pods: HashMap<String, Instant>,
    /// Claim uid -> stolen Pod name.
    claims: HashMap<String, (String, Instant)>,
    /// Pod key -> when this process deleted it as a Pod its claim did not
    /// need (the cache may show it stolen for the claim a while longer).
    given_back: HashMap<String, Instant>,
    /// (Claim uid, Pod name) -> when this process's give-back of that Pod
    /// was refused with a conflict and the Pod kept: the claim decides on
    /// it again even while its cache does not show the Pod (see
    /// [`Reservations::record_kept`]).
    kept: HashMap<(String, String), Instant>,
}

/// How long a reservation outlives its steal: long enough for the cache to
/// show the Pod's new labels.
const RESERVATION_TTL: Duration = Duration::from_secs(60);

/// Whether `entries` holds `key`, recorded less than the TTL ago.
fn unexpired(entries: &HashMap<String, Instant>, key: &str) -> bool {
    entries
        .get(key)
        .is_some_and(|at| at.elapsed() < RESERVATION_TTL)
}

impl Reservations {
    /// Reserves a Pod; false when another reconcile holds it.
    pub fn try_reserve(&self, key: &str) -> bool {
        let mut state = self.inner.lock().expect("reservation lock");
        let now = Instant::now();
        state
            .pods
            .retain(|_, at| now.duration_since(*at) < RESERVATION_TTL);
        state
            .claims
            .retain(|_, (_, at)| now.duration_since(*at) < RESERVATION_TTL);
        state
            .given_back
            .retain(|_, at| now.duration_since(*at) < RESERVATION_TTL);
        state
            .kept
            .retain(|_, at| now.duration_since(*at) < RESERVATION_TTL);
        if state.pods.contains_key(key) {
            return false;
        }
        state.pods.insert(key.to_string(), now);
        true
    }

    /// Releases a reservation whose steal failed.
    pub fn release(&self, key: &str) {
        self.inner
            .lock()
            .expect("reservation lock")
            .pods
            .remove(key);
    }

    /// Whether a Pod is reserved.
    pub fn is_reserved(&self, key: &str) -> bool {
        unexpired(&self.inner.lock().expect("reservation lock").pods, key)
    }

    /// Records that `pod_name` now serves the claim `claim_uid`.
    pub fn record_steal(&self, claim_uid: &str, pod_name: &str) {
        self.inner.lock().expect("reservation lock").claims.insert(
            claim_uid.to_string(),
            (pod_name.to_string(), Instant::now()),
        );
    }

    /// Forgets that `pod_name` serves `claim_uid` (it was given back).
    pub fn forget_steal(&self, claim_uid: &str, pod_name: &str) {
        let mut state = self.inner.lock().expect("reservation lock");
        if state
            .claims
            .get(claim_uid)
            .is_some_and(|(name, _)| name == pod_name)
        {
            state.claims.remove(claim_uid);
        }
    }

    /// Records that this process deleted the Pod `key` as one its claim did
    /// not need: until the cache shows the delete, it must not be taken for
    /// the claim's Pod again.
    pub fn record_given_back(&self, key: &str) {
        self.inner
            .lock()
            .expect("reservation lock")
            .given_back
            .insert(key.to_string(), Instant::now());
    }

    /// Whether this process gave the Pod `key` back (see
    /// [`Self::record_given_back`]).
    pub fn was_given_back(&self, key: &str) -> bool {
        unexpired(
            &self.inner.lock().expect("reservation lock").given_back,
            key,
        )
    }

    /// Records that this process's give-back of `pod_name`, stolen for
    /// `claim_uid`, was refused with a conflict and the Pod kept. The
    /// claim's next look at its surplus Pods reads this Pod from the API
    /// server rather than trust its cache: the cached copy may be the one
    /// refused, and a cache that has not seen the steal does not count the
    /// Pod among the claim's at all (no event of the Pod wakes the claim,
    /// so it would keep running until the periodic resync). Expires 60 s
    /// after the last refusal (then the resync is the backstop), never
    /// because the cache lacks the Pod.
    pub fn record_kept(&self, claim_uid: &str, pod_name: &str) {
        self.inner
            .lock()
            .expect("reservation lock")
            .kept
            .insert((claim_uid.to_owned(), pod_name.to_owned()), Instant::now());
    }

    /// Forgets a kept Pod (given back since, or not the claim's any more).
    pub fn forget_kept(&self, claim_uid: &str, pod_name: &str) {
        self.inner
            .lock()
            .expect("reservation lock")
            .kept
            .remove(&(claim_uid.to_owned(), pod_name.to_owned()));
    }

    /// The Pods kept for `claim_uid` (see [`Self::record_kept`]), by name.
    pub fn kept_for(&self, claim_uid: &str) -> Vec<String> {
        let state = self.inner.lock().expect("reservation lock");
        let mut kept: Vec<String> = state
            .kept
            .iter()
            .filter(|((claim, _), at)| claim == claim_uid && at.elapsed() < RESERVATION_TTL)
            .map(|((_, pod), _)| pod.clone())
            .collect();
        kept.sort();
        kept
    }

    /// The Pod this process stole for a claim, if it remembers one.
    pub fn stolen_for(&self, claim_uid: &str) -> Option<String> {
        let state = self.inner.lock().expect("reservation lock");
        state.claims.get(claim_uid).map(|(name, _)| name.clone())
    }

    /// Drops what no longer protects anything: entries past the TTL, Pod
    /// reservations whose Pod (`namespace/name`) `pod_exists` denies, and
    /// steal records whose Pod name `pod_name_exists` denies. Every reserved
    /// or stolen Pod was in the Pod cache when it was chosen, so a Pod the
    /// cache no longer has was deleted. Returns how many entries went.
    pub fn retain_existing(
        &self,
        now: Instant,
        pod_exists: impl Fn(&str) -> bool,
        pod_name_exists: impl Fn(&str) -> bool,
    ) -> usize {
        let mut state = self.inner.lock().expect("reservation lock");
        let before =
            state.pods.len() + state.claims.len() + state.given_back.len() + state.kept.len();
        state.pods.retain(|key, at| {
            now.saturating_duration_since(*at) < RESERVATION_TTL && pod_exists(key)
        });
        state.given_back.retain(|key, at| {
            now.saturating_duration_since(*at) < RESERVATION_TTL && pod_exists(key)
        });
        state.claims.retain(|_, (pod, at)| {
            now.saturating_duration_since(*at) < RESERVATION_TTL && pod_name_exists(pod)
        });
        state
            .kept
            .retain(|_, at| now.saturating_duration_since(*at) < RESERVATION_TTL);
        before - state.pods.len() - state.claims.len() - state.given_back.len() - state.kept.len()
    }

    /// (Pod reservations, steal, give-back and kept records) held.
    pub fn sizes(&self) -> (usize, usize) {
        let state = self.inner.lock().expect("reservation lock");
        (
            state.pods.len(),
            state.claims.len() + state.given_back.len() + state.kept.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_pod_is_forgotten_only_for_its_claim() {
        let r = Reservations::default();
        r.record_steal("claim-a", "p1");
        r.forget_steal("claim-a", "p2");
        assert_eq!(
            r.stolen_for("claim-a").as_deref(),
            Some("p1"),
            "another Pod"
        );
        r.forget_steal("claim-b", "p1");
        assert_eq!(
            r.stolen_for("claim-a").as_deref(),
            Some("p1"),
            "another claim"
        );
        r.forget_steal("claim-a", "p1");
        assert_eq!(r.stolen_for("claim-a"), None);
    }

    #[test]
    fn a_given_back_pod_is_remembered_until_it_is_gone_or_expired() {
        let r = Reservations::default();
        assert!(!r.was_given_back("ns/p1"));
        r.record_given_back("ns/p1");
        r.record_given_back("ns/p2");
        assert!(r.was_given_back("ns/p1"));
        assert!(!r.was_given_back("ns/p3"), "only the Pods given back");
        assert_eq!(r.sizes(), (0, 2));
        let now = Instant::now();
        assert_eq!(r.retain_existing(now, |k| k == "ns/p1", |_| true), 1);
        assert!(r.was_given_back("ns/p1"), "still in the cache: kept");
        assert!(!r.was_given_back("ns/p2"), "gone from the cache: dropped");
        assert_eq!(
            r.retain_existing(now + RESERVATION_TTL, |_| true, |_| true),
            1
        );
        assert_eq!(r.sizes(), (0, 0));
    }

    #[test]
    fn reservations_of_deleted_pods_and_expired_ones_are_dropped() {
        let r = Reservations::default();
        assert!(r.try_reserve("ns/live"));
        assert!(r.try_reserve("ns/deleted"));
        r.record_steal("claim-a", "live");
        r.record_steal("claim-b", "deleted");
        let now = Instant::now();
        let dropped = r.retain_existing(now, |k| k == "ns/live", |n| n == "live");
        assert_eq!(dropped, 2);
        assert_eq!(r.sizes(), (1, 1));
        assert_eq!(r.stolen_for("claim-a").as_deref(), Some("live"));
        assert!(r.is_reserved("ns/live"));
        let later = now + RESERVATION_TTL;
        assert_eq!(r.retain_existing(later, |_| true, |_| true), 2);
        assert_eq!(r.sizes(), (0, 0));
    }

    #[test]
    fn a_kept_pod_is_remembered_per_claim_whatever_the_cache_shows() {
        let r = Reservations::default();
        r.record_kept("claim-a", "p2");
        r.record_kept("claim-a", "p1");
        r.record_kept("claim-b", "p3");
        assert_eq!(r.kept_for("claim-a"), ["p1", "p2"]);
        assert_eq!(r.kept_for("claim-c"), Vec::<String>::new());
        r.forget_kept("claim-b", "p1");
        assert_eq!(r.kept_for("claim-a"), ["p1", "p2"], "another claim's");
        r.forget_kept("claim-a", "p1");
        assert_eq!(r.kept_for("claim-a"), ["p2"]);
        assert_eq!(r.sizes(), (0, 2));
        let now = Instant::now();
        assert_eq!(
            r.retain_existing(now, |_| false, |_| false),
            0,
            "a kept Pod the cache does not show is the case it is kept for"
        );
        assert_eq!(
            r.retain_existing(now + RESERVATION_TTL, |_| true, |_| true),
            2,
            "expired"
        );
        assert_eq!(r.kept_for("claim-a"), Vec::<String>::new());
    }
}
