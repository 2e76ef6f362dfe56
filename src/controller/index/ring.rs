//! The idle Pods of one (namespace, template, template hash) on a hash
//! ring: each Pod sits at the hash of its name, and a claim reads the few
//! Pods that follow the hash of its own uid ([`Ring::near`]), so finding
//! candidates costs O(log n + limit) instead of a pass over the whole pool,
//! and concurrent claims start at different points of the ring (they rarely
//! race for the same Pod, in this process or another: the hash is the same
//! in every process).
//!
//! Guarantee: `near(key, limit)` with `limit >= len()` returns every Pod, so
//! a caller that finds too few usable Pods near its key can always fall back
//! to the whole set ([`Ring::all`]).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;

/// Position on the ring. `DefaultHasher::new()` has fixed keys: the same
/// name has the same rank in every process.
fn rank(value: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Idle Pods ordered by the rank of their name (see the module docs).
#[derive(Debug, Default)]
pub struct Ring {
    by_rank: BTreeMap<(u64, String), ObjectRef<Pod>>,
}

impl Ring {
    /// Adds (or refreshes) a Pod.
    pub fn insert(&mut self, pod: &ObjectRef<Pod>) {
        self.by_rank
            .insert((rank(&pod.name), pod.name.clone()), pod.clone());
    }

    /// Removes a Pod.
    pub fn remove(&mut self, pod: &ObjectRef<Pod>) {
        self.by_rank.remove(&(rank(&pod.name), pod.name.clone()));
    }

    /// Number of Pods.
    pub fn len(&self) -> usize {
        self.by_rank.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.by_rank.is_empty()
    }

    /// Every Pod.
    pub fn all(&self) -> Vec<ObjectRef<Pod>> {
        self.by_rank.values().cloned().collect()
    }

    /// Up to `limit` Pods, starting at the rank of `key` and going round.
    pub fn near(&self, key: &str, limit: usize) -> Vec<ObjectRef<Pod>> {
        let start = (rank(key), String::new());
        self.by_rank
            .range(start.clone()..)
            .chain(self.by_rank.range(..start))
            .take(limit)
            .map(|(_, pod)| pod.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> Ring {
        let mut ring = Ring::default();
        for i in 0..n {
            ring.insert(&ObjectRef::new(&format!("pod-{i}")).within("ns"));
        }
        ring
    }

    #[test]
    fn near_reads_a_few_pods_that_differ_by_key_and_wraps_round() {
        let ring = ring(1000);
        let a = ring.near("claim-a", 8);
        let b = ring.near("claim-b", 8);
        assert_eq!(a.len(), 8);
        assert_ne!(a, b, "two claims start at different points");
        assert_eq!(a, ring.near("claim-a", 8), "stable for one key");
        // A limit over the size returns every Pod exactly once, whatever
        // the start point (the fallback's guarantee).
        let mut every: Vec<String> = ring
            .near("claim-a", 5000)
            .into_iter()
            .map(|r| r.name)
            .collect();
        every.sort();
        every.dedup();
        assert_eq!(every.len(), 1000);
    }

    #[test]
    fn insert_is_idempotent_and_remove_forgets() {
        let mut ring = ring(3);
        ring.insert(&ObjectRef::new("pod-1").within("ns"));
        assert_eq!(ring.len(), 3);
        ring.remove(&ObjectRef::new("pod-1").within("ns"));
        assert_eq!(ring.len(), 2);
        assert!(!ring.all().iter().any(|r| r.name == "pod-1"));
        ring.remove(&ObjectRef::new("pod-0").within("ns"));
        ring.remove(&ObjectRef::new("pod-2").within("ns"));
        assert!(ring.is_empty());
    }
}
