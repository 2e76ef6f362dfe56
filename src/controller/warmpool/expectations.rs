//! Creates and deletes a pool issued that its Pod cache has not shown yet.
//!
//! Guarantees: a lagging cache never causes over-creation (pending creates
//! count as members) nor a double delete (pending deletes are not counted);
//! a delete the API server refused (a steal won the race) is forgotten at
//! once, so the Pod is not missing from the count. Entries expire after
//! [`EXPECTATION_TTL`], so a lost watch event costs at most that long.
//! In memory only: safe to lose on restart.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unconfirmed create/delete is remembered.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Creates and deletes a pool issued but the cache has not shown yet.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, PoolExpectations>>,
}

#[derive(Default)]
struct PoolExpectations {
    creates: HashMap<String, Instant>,
    deletes: HashMap<String, Instant>,
    last_status_write: Option<Instant>,
    /// The template hash the last reconcile decided from counts alone for
    /// (it had no Pod to pick): the first sight of a pending create of that
    /// hash changes nothing then. `None` when it picked from the members.
    quiet_joins: Option<String>,
    /// What the pool's NetworkPolicy was last made or checked from (see
    /// [`super::network`]); no expiry, so a resync never writes it again.
    network_policy: Option<serde_json::Value>,
    /// Pods created to replace outdated ones ([`super::plan::Rollout`]),
    /// until they are Ready, claimed or gone.
    replacements: HashSet<String>,
    /// Whether this process has looked at the pool's replacements yet
    /// (see [`Expectations::replacements_starting`]).
    met: bool,
}

impl Expectations {
    /// Runs `f` on the pool's expectations (made empty if it has none) under
    /// the lock.
    fn with_pool<T>(&self, pool: &str, f: impl FnOnce(&mut PoolExpectations) -> T) -> T {
        let mut all = self.inner.lock().expect("expectations lock");
        f(all.entry(pool.to_string()).or_default())
    }

    /// Forgets expectations the cache has confirmed (or that timed out) and
    /// returns (pending creates, names pending deletion).
    pub fn settle(&self, pool: &str, seen: &HashSet<String>) -> (usize, HashSet<String>) {
        self.settle_with(pool, |name| seen.contains(name), |_| false)
    }

    /// [`Self::settle`] with `seen` telling whether a name is a live member
    /// (O(1) per pending entry), where a created Pod also counts as seen when
    /// `in_cache` finds it though it is no longer a member: a claim stole it
    /// before any pool reconcile saw it, and waiting out the TTL would keep
    /// the pool one Pod short.
    pub fn settle_with(
        &self,
        pool: &str,
        seen: impl Fn(&str) -> bool,
        in_cache: impl Fn(&str) -> bool,
    ) -> (usize, HashSet<String>) {
        self.with_pool(pool, |e| {
            e.creates.retain(|name, at| {
                !seen(name) && !in_cache(name) && at.elapsed() < EXPECTATION_TTL
            });
            e.deletes
                .retain(|name, at| seen(name) && at.elapsed() < EXPECTATION_TTL);
            (e.creates.len(), e.deletes.keys().cloned().collect())
        })
    }

    /// Records a create whose Pod is not in the cache yet.
    pub fn created(&self, pool: &str, name: &str) {
        self.with_pool(pool, |e| e.creates.insert(name.into(), Instant::now()));
    }

    /// Records whether the pool's reconcile just decided from its counts
    /// alone, with no Pod to pick (no surplus, no outdated Pod to replace),
    /// and for which template hash: a pending create made from another
    /// (an older template, a policy reload since) is outdated, and its
    /// first sight must wake the pool to replace it.
    pub fn decided_from_counts(&self, pool: &str, hash: &str, from_counts: bool) {
        self.with_pool(pool, |e| {
            e.quiet_joins = from_counts.then(|| hash.to_string());
        });
    }

    /// Whether the first sight of `name`, made from template hash `hash`,
    /// may leave `pool` asleep: it is a create of the pool's that no
    /// reconcile has seen in the cache yet (and that has not timed out), and
    /// the pool's last reconcile decided from counts alone for that same
    /// hash, which count the pending create already. Any change that can
    /// make the pool pick Pods (its size, its template) wakes it by its own
    /// event, and that reconcile clears this until a decision from counts
    /// alone again.
    pub fn quiet_join(&self, pool: &str, name: &str, hash: Option<&str>) -> bool {
        let all = self.inner.lock().expect("expectations lock");
        all.get(pool).is_some_and(|e| {
            e.quiet_joins.is_some()
                && e.quiet_joins.as_deref() == hash
                && e.creates
                    .get(name)
                    .is_some_and(|at| at.elapsed() < EXPECTATION_TTL)
        })
    }

    /// Forgets the pending create of a Pod that was deleted: a Pod deleted
    /// before any reconcile saw it (its first sight may have woken none)
    /// would otherwise count as pending until the TTL, the pool one short.
    pub fn create_gone(&self, pool: &str, name: &str) {
        let mut all = self.inner.lock().expect("expectations lock");
        if let Some(e) = all.get_mut(pool) {
            e.creates.remove(name);
        }
    }

    /// Forgets what the pool's NetworkPolicy was made from: it was deleted,
    /// and the next reconcile makes it again.
    pub fn network_policy_gone(&self, pool: &str) {
        let mut all = self.inner.lock().expect("expectations lock");
        if let Some(e) = all.get_mut(pool) {
            e.network_policy = None;
        }
    }

    /// Records a delete the cache has not shown yet.
    pub fn deleted(&self, pool: &str, name: &str) {
        self.with_pool(pool, |e| e.deletes.insert(name.into(), Instant::now()));
    }

    /// Forgets a delete the API server refused (the Pod changed since it
    /// was chosen, e.g. a claim stole it): the Pod is counted again by what
    /// the cache shows next.
    pub fn delete_refused(&self, pool: &str, name: &str) {
        let mut all = self.inner.lock().expect("expectations lock");
        if let Some(e) = all.get_mut(pool) {
            e.deletes.remove(name);
        }
    }

    /// `None` when a status write is allowed now (and records it), else how
    /// long to wait before the next one.
    pub fn status_write_due(&self, pool: &str, interval: Duration) -> Option<Duration> {
        self.with_pool(pool, |e| match e.last_status_write {
            Some(at) if at.elapsed() < interval => Some(interval - at.elapsed()),
            _ => {
                e.last_status_write = Some(Instant::now());
                None
            }
        })
    }

    /// Whether the pool's NetworkPolicy was made (or found right) from
    /// exactly `fingerprint` by this process.
    pub fn network_policy_done(&self, pool: &str, fingerprint: &serde_json::Value) -> bool {
        let all = self.inner.lock().expect("expectations lock");
        all.get(pool)
            .and_then(|e| e.network_policy.as_ref())
            .is_some_and(|done| done == fingerprint)
    }

    /// Records that the pool's NetworkPolicy is in place for `fingerprint`.
    pub fn network_policy_made(&self, pool: &str, fingerprint: serde_json::Value) {
        self.with_pool(pool, |e| e.network_policy = Some(fingerprint));
    }

    /// How many of the pool's replacements are still starting (`starting`
    /// says whether a name is a live member of the current template, not
    /// Ready yet). The first time this process looks at the pool, every
    /// Pod `starting_now` lists is taken for one: an earlier process may
    /// have made them (a restart, a new leader), and counting none would
    /// let a batch through while they start. Replacements whose create
    /// the cache has not shown yet are left for the pending creates to
    /// count; those that no longer start (Ready, claimed, deleted) are
    /// forgotten.
    pub fn replacements_starting(
        &self,
        pool: &str,
        starting: impl Fn(&str) -> bool,
        starting_now: impl FnOnce() -> Vec<String>,
    ) -> usize {
        self.with_pool(pool, |e| {
            if !e.met {
                e.met = true;
                e.replacements.extend(starting_now());
            }
            let creates = &e.creates;
            e.replacements
                .retain(|name| creates.contains_key(name) || starting(name));
            e.replacements
                .iter()
                .filter(|name| !creates.contains_key(*name))
                .count()
        })
    }

    /// Records a Pod created to replace an outdated one.
    pub fn replacement_created(&self, pool: &str, name: &str) {
        self.with_pool(pool, |e| e.replacements.insert(name.to_string()));
    }

    /// Drops everything about a pool (it was deleted).
    pub fn forget(&self, pool: &str) {
        self.inner.lock().expect("expectations lock").remove(pool);
    }

    /// Keys (`namespace/name`) of the pools with expectations on record.
    pub fn pools(&self) -> Vec<String> {
        let all = self.inner.lock().expect("expectations lock");
        all.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_delete_is_counted_again_at_once() {
        let e = Expectations::default();
        let seen: HashSet<String> = ["a".to_string()].into();
        e.deleted("p", "a");
        assert!(e.settle("p", &seen).1.contains("a"));
        e.delete_refused("p", "a");
        assert!(e.settle("p", &seen).1.is_empty());
    }

    #[test]
    fn the_network_policy_memo_matches_only_its_fingerprint() {
        let e = Expectations::default();
        let v1 = serde_json::json!({"uid": "u", "deny": ["169.254.0.0/16"]});
        assert!(!e.network_policy_done("p", &v1));
        e.network_policy_made("p", v1.clone());
        assert!(e.network_policy_done("p", &v1));
        assert!(!e.network_policy_done("p", &serde_json::json!({"uid": "u", "deny": []})));
        e.forget("p");
        assert!(!e.network_policy_done("p", &v1));
    }

    #[test]
    fn creates_are_pending_until_seen() {
        let e = Expectations::default();
        e.created("p", "x");
        assert_eq!(e.settle("p", &HashSet::new()).0, 1);
        assert_eq!(e.settle("p", &["x".to_string()].into()).0, 0);
        // A created Pod stolen before the pool saw it as a member is seen
        // through the cache, not after the TTL.
        e.created("p", "y");
        let h = Some("h1");
        assert!(!e.quiet_join("p", "y", h), "no decision from counts yet");
        e.decided_from_counts("p", "h1", true);
        assert!(e.quiet_join("p", "y", h));
        assert!(!e.quiet_join("p", "x", h));
        assert!(!e.quiet_join("q", "y", h));
        // A create made from another template (or none) is outdated.
        assert!(!e.quiet_join("p", "y", Some("h0")));
        assert!(!e.quiet_join("p", "y", None));
        e.decided_from_counts("p", "h1", false);
        assert!(!e.quiet_join("p", "y", h), "the pool may pick Pods");
        e.decided_from_counts("p", "h1", true);
        assert_eq!(e.settle("p", &HashSet::new()).0, 1);
        assert_eq!(e.settle_with("p", |_| false, |n| n == "y").0, 0);
        assert!(!e.quiet_join("p", "y", h));
    }

    #[test]
    fn a_create_deleted_before_it_was_seen_is_not_pending() {
        let e = Expectations::default();
        e.created("p", "x");
        e.created("p", "y");
        e.create_gone("p", "x");
        e.create_gone("q", "y");
        assert_eq!(e.settle("p", &HashSet::new()).0, 1);
    }

    #[test]
    fn a_deleted_network_policy_is_made_again() {
        let e = Expectations::default();
        let v = serde_json::json!({"uid": "u"});
        e.network_policy_made("p", v.clone());
        e.network_policy_gone("p");
        assert!(!e.network_policy_done("p", &v));
    }

    #[test]
    fn replacements_count_while_they_start_inherited_ones_too() {
        let e = Expectations::default();
        let starting = |set: &'static [&'static str]| move |n: &str| set.contains(&n);
        // Met after a restart: the Pods starting then count, once.
        let first =
            e.replacements_starting("p", starting(&["a", "b"]), || vec!["a".into(), "b".into()]);
        assert_eq!(first, 2);
        let again = e.replacements_starting("p", starting(&["a", "b"]), || {
            panic!("listed once per pool")
        });
        assert_eq!(again, 2);
        // A replacement still pending its create is the pending creates'
        // to count; once seen starting it counts here.
        e.created("p", "r1");
        e.replacement_created("p", "r1");
        assert_eq!(
            e.replacements_starting("p", starting(&["a", "b"]), Vec::new),
            2
        );
        e.settle("p", &HashSet::from(["r1".to_string()]));
        assert_eq!(
            e.replacements_starting("p", starting(&["a", "b", "r1"]), Vec::new),
            3
        );
        // Ready, claimed or gone: forgotten, and not counted if it starts
        // again under another name's slot.
        assert_eq!(e.replacements_starting("p", starting(&["b"]), Vec::new), 1);
        assert_eq!(
            e.replacements_starting("p", starting(&["a", "b", "r1"]), Vec::new),
            1
        );
        // Another pool is met on its own.
        assert_eq!(
            e.replacements_starting("q", starting(&["x"]), || vec!["x".into()]),
            1
        );
    }
}
