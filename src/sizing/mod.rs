//! Warm-pool sizing: measure the claim traffic a pool gets, predict its hit
//! ratio, recommend a size.
//!
//! - [`model`]: the hit ratio of this operator's pools, where a claim that
//!   finds no idle Pod takes the oldest starting one: `P(Poisson(a) < n)`.
//! - [`erlang`]: Erlang's B formula, the textbook loss system (a miss leaves
//!   the pool alone), kept to compare with.
//! - [`tracker`]: bounded sliding windows of arrivals and refill times.
//! - [`recommend`]: measurements -> recommended size, predicted hit ratio.
//! - [`simulate`]: a seeded discrete-event simulation that checks both.
//! - [`advise`]: the offline `sandbox-operator pool advise` command.
//!
//! [`Sizing`] is the in-memory state shared by the controllers (one field of
//! the controller context). Claims are keyed by namespace and template (every
//! pool of the template sees the same claims); refill times by pool. State
//! exists only for templates that have a pool, and [`Sizing::forget_pool`]
//! drops it with the pool, so memory stays bounded. Claims are deduplicated
//! by uid, so the same claim may be reported from several places (the claim
//! controller, the Sandbox cache) without being counted twice. Losing the
//! state (restart) only makes the figures young again: the Sandbox cache
//! replays the claims that still exist.

pub mod advise;
pub mod erlang;
pub mod model;
pub mod recommend;
pub mod simulate;
pub mod tracker;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

pub use recommend::{DEFAULT_TARGET_HIT_RATIO, Measurement, Recommendation, recommend};
use tracker::{Arrivals, HORIZON_SECONDS, PEAK_WINDOW_SECONDS, RefillTimes};

/// Claim uids remembered per template for deduplication.
const MAX_SEEN_CLAIMS: usize = 20_000;

/// Seconds since the Unix epoch of a timestamp.
pub fn epoch_seconds(at: jiff::Timestamp) -> f64 {
    at.as_nanosecond() as f64 / 1e9
}

/// Sizing state of every pool this process reconciles.
#[derive(Default)]
pub struct Sizing {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    templates: HashMap<String, TemplateState>,
    pools: HashMap<String, PoolState>,
    last_scan: f64,
}

struct TemplateState {
    arrivals: Arrivals,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

struct PoolState {
    template: String,
    refill: RefillTimes,
    since: f64,
    last_seen: f64,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Sizing {
    /// Records a claim for `template` in `namespace` that arrived `at`
    /// (its admission time), served `warm` from a pool or cold. The claim
    /// controller calls this once it knows the launch type; duplicates (same
    /// `claim_uid`) are ignored. Returns whether it was counted (claims of a
    /// template without a pool are not).
    pub fn record_claim(
        &self,
        namespace: &str,
        template: &str,
        claim_uid: &str,
        warm: bool,
        at: jiff::Timestamp,
    ) -> bool {
        self.record_claim_at(
            namespace,
            template,
            claim_uid,
            warm,
            epoch_seconds(at),
            epoch_seconds(jiff::Timestamp::now()),
        )
    }

    /// [`Sizing::record_claim`] with explicit times (seconds since the epoch).
    pub fn record_claim_at(
        &self,
        namespace: &str,
        template: &str,
        claim_uid: &str,
        warm: bool,
        at: f64,
        now: f64,
    ) -> bool {
        let mut state = self.inner.lock().expect("sizing lock");
        let Some(t) = state.templates.get_mut(&key(namespace, template)) else {
            return false;
        };
        if !t.seen.insert(claim_uid.to_string()) {
            return false;
        }
        t.seen_order.push_back(claim_uid.to_string());
        if t.seen_order.len() > MAX_SEEN_CLAIMS
            && let Some(old) = t.seen_order.pop_front()
        {
            t.seen.remove(&old);
        }
        t.arrivals.record(at, warm, now);
        true
    }

    /// Whether a claim of `namespace` was already counted, for any template
    /// (a scan need not look at its Sandbox again).
    pub fn has_counted(&self, namespace: &str, claim_uid: &str) -> bool {
        let state = self.inner.lock().expect("sizing lock");
        let prefix = key(namespace, "");
        state
            .templates
            .iter()
            .any(|(k, t)| k.starts_with(&prefix) && t.seen.contains(claim_uid))
    }

    /// Records one refill (replacement created -> Ready) of a pool.
    pub fn record_refill(&self, namespace: &str, pool: &str, seconds: f64) {
        let mut state = self.inner.lock().expect("sizing lock");
        if let Some(p) = state.pools.get_mut(&key(namespace, pool)) {
            p.refill.record(seconds);
        }
    }

    /// Registers a pool of `template` (idempotent; a changed template starts
    /// its refill times afresh) and measures it. `lookback` bounds the peak
    /// rate and the bursts (seconds); the peak rate is taken over windows of
    /// `min(60 s, lookback)`; `target` is the pool's target hit ratio, for
    /// the size its claims needed as they came.
    pub fn measure(
        &self,
        namespace: &str,
        pool: &str,
        template: &str,
        (lookback, target): (f64, f64),
        now: f64,
    ) -> Measurement {
        let mut state = self.inner.lock().expect("sizing lock");
        let template_key = key(namespace, template);
        let pool_state = state
            .pools
            .entry(key(namespace, pool))
            .or_insert_with(|| PoolState {
                template: template_key.clone(),
                refill: RefillTimes::default(),
                since: now,
                last_seen: now,
            });
        let mut replaced = None;
        if pool_state.template != template_key {
            replaced = Some(std::mem::replace(
                &mut pool_state.template,
                template_key.clone(),
            ));
            pool_state.refill = RefillTimes::default();
        }
        let refill_seconds = pool_state.refill.mean();
        if let Some(old) = replaced
            && !state.pools.values().any(|p| p.template == old)
        {
            state.templates.remove(&old);
        }
        let t = state
            .templates
            .entry(template_key)
            .or_insert_with(|| TemplateState {
                arrivals: Arrivals::new(now),
                seen: HashSet::new(),
                seen_order: VecDeque::new(),
            });
        t.arrivals.prune(now);
        let lookback = lookback.min(HORIZON_SECONDS);
        Measurement {
            last_1m: t.arrivals.window(now, 60.0),
            last_5m: t.arrivals.window(now, 300.0),
            last_15m: t.arrivals.window(now, 900.0),
            peak_rate: t
                .arrivals
                .peak_rate(now, lookback, lookback.min(PEAK_WINDOW_SECONDS)),
            refill_seconds,
            burst: refill_seconds
                .map(|span| t.arrivals.largest_burst(now, lookback, span))
                .unwrap_or(0),
            burst_at_target: refill_seconds
                .map(|span| t.arrivals.burst_size_for(now, lookback, span, target))
                .unwrap_or(0),
        }
    }

    /// Seconds this process has been measuring the pool (0 if unknown).
    pub fn tracked_for(&self, namespace: &str, pool: &str, now: f64) -> f64 {
        let state = self.inner.lock().expect("sizing lock");
        state
            .pools
            .get(&key(namespace, pool))
            .map(|p| now - p.since)
            .unwrap_or(0.0)
    }

    /// Drops a pool's state, and its template's claims when no other pool
    /// uses the template.
    pub fn forget_pool(&self, namespace: &str, pool: &str) {
        let mut state = self.inner.lock().expect("sizing lock");
        if let Some(gone) = state.pools.remove(&key(namespace, pool))
            && !state.pools.values().any(|p| p.template == gone.template)
        {
            state.templates.remove(&gone.template);
        }
    }

    /// Starts a scan for new claims when one is due (at most one per
    /// `interval` seconds per process): returns the time of the previous
    /// scan (0 for the first), and records this one.
    pub fn begin_scan(&self, now: f64, interval: f64) -> Option<f64> {
        let mut state = self.inner.lock().expect("sizing lock");
        if now - state.last_scan < interval {
            return None;
        }
        Some(std::mem::replace(&mut state.last_scan, now))
    }

    /// (namespace, template) of every template that has a pool.
    pub fn tracked_templates(&self) -> Vec<(String, String)> {
        let state = self.inner.lock().expect("sizing lock");
        split_keys(state.templates.keys())
    }

    /// Marks a pool as reconciled now; pools not reconciled for `max_age`
    /// seconds are forgotten (a deleted pool is never reconciled again) and
    /// returned as (namespace, pool).
    pub fn sweep(
        &self,
        namespace: &str,
        pool: &str,
        now: f64,
        max_age: f64,
    ) -> Vec<(String, String)> {
        let gone: Vec<String> = {
            let mut state = self.inner.lock().expect("sizing lock");
            if let Some(p) = state.pools.get_mut(&key(namespace, pool)) {
                p.last_seen = now;
            }
            state
                .pools
                .iter()
                .filter(|(_, p)| now - p.last_seen > max_age)
                .map(|(k, _)| k.clone())
                .collect()
        };
        gone.iter()
            .filter_map(|k| k.split_once('/'))
            .map(|(ns, p)| {
                self.forget_pool(ns, p);
                (ns.to_string(), p.to_string())
            })
            .collect()
    }

    /// (namespace, pool) of every pool with sizing state.
    pub fn tracked_pools(&self) -> Vec<(String, String)> {
        let state = self.inner.lock().expect("sizing lock");
        split_keys(state.pools.keys())
    }

    /// Pools and templates held (for tests of the bounds).
    pub fn sizes(&self) -> (usize, usize) {
        let state = self.inner.lock().expect("sizing lock");
        (state.pools.len(), state.templates.len())
    }
}

/// `namespace/name` keys as (namespace, name) pairs.
fn split_keys<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<(String, String)> {
    keys.filter_map(|k| k.split_once('/'))
        .map(|(namespace, name)| (namespace.to_string(), name.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_count_once_and_only_for_templates_with_a_pool() {
        let s = Sizing::default();
        assert!(!s.record_claim_at("ns", "t", "c0", true, 1.0, 1.0));
        s.measure("ns", "p", "t", (3600.0, 0.99), 0.0);
        assert!(s.record_claim_at("ns", "t", "c1", true, 1.0, 1.0));
        assert!(!s.record_claim_at("ns", "t", "c1", true, 1.0, 1.0));
        assert!(s.record_claim_at("ns", "t", "c2", false, 2.0, 2.0));
        assert!(!s.record_claim_at("other", "t", "c3", false, 2.0, 2.0));
        let m = s.measure("ns", "p", "t", (3600.0, 0.99), 10.0);
        assert_eq!(m.last_1m.claims, 2);
        assert_eq!(m.last_1m.hit_ratio(), Some(0.5));
    }

    #[test]
    fn a_counted_claim_is_known_in_its_namespace_only() {
        let s = Sizing::default();
        s.measure("ns", "p", "t", (3600.0, 0.99), 0.0);
        s.measure("ns2", "p", "t", (3600.0, 0.99), 0.0);
        assert!(!s.has_counted("ns", "c1"));
        assert!(s.record_claim_at("ns", "t", "c1", true, 1.0, 1.0));
        assert!(s.has_counted("ns", "c1"));
        assert!(!s.has_counted("ns2", "c1"));
        // A namespace that is a prefix of another is not confused with it.
        assert!(!s.has_counted("n", "c1"));
    }

    #[test]
    fn refill_times_feed_the_measurement_and_bursts() {
        let s = Sizing::default();
        assert_eq!(
            s.measure("ns", "p", "t", (3600.0, 0.99), 0.0)
                .refill_seconds,
            None
        );
        s.record_refill("ns", "p", 2.0);
        s.record_refill("ns", "p", 4.0);
        for (i, at) in [10.0, 10.5, 11.0, 30.0].iter().enumerate() {
            s.record_claim_at("ns", "t", &format!("c{i}"), true, *at, *at);
        }
        let m = s.measure("ns", "p", "t", (3600.0, 0.99), 31.0);
        assert_eq!(m.refill_seconds, Some(3.0));
        assert_eq!(m.burst, 3);
    }

    #[test]
    fn state_is_dropped_with_the_last_pool_of_a_template() {
        let s = Sizing::default();
        s.measure("ns", "a", "t", (3600.0, 0.99), 0.0);
        s.measure("ns", "b", "t", (3600.0, 0.99), 0.0);
        assert_eq!(s.sizes(), (2, 1));
        s.forget_pool("ns", "a");
        assert_eq!(s.sizes(), (1, 1));
        s.forget_pool("ns", "b");
        assert_eq!(s.sizes(), (0, 0));
        // A template change restarts the pool's refill times.
        s.measure("ns", "a", "t", (3600.0, 0.99), 0.0);
        s.record_refill("ns", "a", 5.0);
        assert_eq!(
            s.measure("ns", "a", "t2", (3600.0, 0.99), 1.0)
                .refill_seconds,
            None
        );
        assert_eq!(s.sizes(), (1, 1));
    }

    #[test]
    fn pools_not_reconciled_for_a_while_are_swept() {
        let s = Sizing::default();
        s.measure("ns", "a", "t", (3600.0, 0.99), 0.0);
        s.measure("ns", "b", "u", (3600.0, 0.99), 0.0);
        assert!(s.sweep("ns", "a", 100.0, 300.0).is_empty());
        assert_eq!(
            s.sweep("ns", "a", 350.0, 300.0),
            [("ns".into(), "b".into())]
        );
        assert_eq!(s.sizes(), (1, 1));
        assert_eq!(s.tracked_templates(), [("ns".into(), "t".into())]);
    }

    #[test]
    fn scans_are_throttled() {
        let s = Sizing::default();
        assert_eq!(s.begin_scan(100.0, 1.0), Some(0.0));
        assert_eq!(s.begin_scan(100.5, 1.0), None);
        assert_eq!(s.begin_scan(101.5, 1.0), Some(100.0));
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let s = Sizing::default();
        s.measure("ns", "p", "t", (3600.0, 0.99), 0.0);
        for i in 0..(MAX_SEEN_CLAIMS + 100) {
            s.record_claim_at("ns", "t", &format!("c{i}"), true, 1.0, 1.0);
        }
        let state = s.inner.lock().unwrap();
        let t = state.templates.values().next().unwrap();
        assert_eq!(t.seen.len(), MAX_SEEN_CLAIMS);
        assert_eq!(t.seen_order.len(), MAX_SEEN_CLAIMS);
    }
}
