//! Indexes over the Pod cache, kept up to date on every watch event, so a
//! reconcile looks Pods up by key instead of scanning the whole cache:
//! idle Pods by (namespace, template, template hash) on a hash ring
//! ([`ring`]: a claim reads the few nearest its uid), Pods by controller
//! uid, Pods by the claim uid label a steal writes, and each pool's members
//! with their running counts ([`Groups`]).
//!
//! Guarantee: updated (by the Pod cache) before the event's triggers are
//! sent, so a reconcile woken by an event finds that event in the index.
//! The index only narrows the search: callers check every Pod they get
//! (ownership, readiness) from the cache copy, never from the index alone.

pub mod named;
mod ring;

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::warmpool::members::{GroupKey, Groups, Member, PoolCounts, Refill, created_at};
use super::{controller_uid, pod_is_ready};
use crate::api::{
    CLAIM_UID_LABEL, ORIGIN_POOL_LABEL, POOL_LABEL, TEMPLATE_HASH_LABEL, TEMPLATE_LABEL,
};

/// (namespace, template, template hash) of an idle pool Pod.
type PoolKey = (String, String, String);

/// What one Pod is indexed under, and whether it was ever seen Ready.
#[derive(Clone, Debug, Default, PartialEq)]
struct Keys {
    controller: Option<String>,
    idle: Option<PoolKey>,
    claim: Option<String>,
    group: Option<GroupKey>,
    ever_ready: bool,
}

impl Keys {
    fn of(pod: &Pod, group: Option<GroupKey>) -> Keys {
        let labels = pod.labels();
        let idle = match (
            labels.get(POOL_LABEL),
            labels.get(TEMPLATE_LABEL),
            labels.get(TEMPLATE_HASH_LABEL),
        ) {
            (Some(_), Some(template), Some(hash)) => Some((
                pod.namespace().unwrap_or_default(),
                template.clone(),
                hash.clone(),
            )),
            _ => None,
        };
        Keys {
            controller: controller_uid(&pod.metadata).map(str::to_string),
            idle,
            claim: labels.get(CLAIM_UID_LABEL).cloned(),
            group,
            ever_ready: pod_is_ready(pod),
        }
    }
}

#[derive(Default)]
struct State {
    keys: HashMap<ObjectRef<Pod>, Keys>,
    by_controller: HashMap<String, HashSet<ObjectRef<Pod>>>,
    idle: HashMap<PoolKey, ring::Ring>,
    by_claim: HashMap<String, HashSet<ObjectRef<Pod>>>,
    members: Groups,
}

/// The Pods filed under one key: a plain set, or the idle [`ring::Ring`].
trait PodSet: Default {
    fn insert(&mut self, pod: &ObjectRef<Pod>);
    fn remove(&mut self, pod: &ObjectRef<Pod>);
    fn is_empty(&self) -> bool;
}

impl PodSet for HashSet<ObjectRef<Pod>> {
    fn insert(&mut self, pod: &ObjectRef<Pod>) {
        HashSet::insert(self, pod.clone());
    }
    fn remove(&mut self, pod: &ObjectRef<Pod>) {
        HashSet::remove(self, pod);
    }
    fn is_empty(&self) -> bool {
        HashSet::is_empty(self)
    }
}

impl PodSet for ring::Ring {
    fn insert(&mut self, pod: &ObjectRef<Pod>) {
        ring::Ring::insert(self, pod);
    }
    fn remove(&mut self, pod: &ObjectRef<Pod>) {
        ring::Ring::remove(self, pod);
    }
    fn is_empty(&self) -> bool {
        ring::Ring::is_empty(self)
    }
}

/// Files the Pod under `key`, if it has one.
fn insert<K: std::hash::Hash + Eq, S: PodSet>(
    map: &mut HashMap<K, S>,
    key: Option<K>,
    pod: &ObjectRef<Pod>,
) {
    if let Some(key) = key {
        map.entry(key).or_default().insert(pod);
    }
}

/// Takes the Pod out from under `key`, and the key out once it files none.
fn remove<K: std::hash::Hash + Eq, S: PodSet>(
    map: &mut HashMap<K, S>,
    key: Option<&K>,
    pod: &ObjectRef<Pod>,
) {
    if let Some(key) = key
        && let Some(set) = map.get_mut(key)
    {
        set.remove(pod);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// The Pods filed under `key` of a set-valued index.
fn filed_under(map: &HashMap<String, HashSet<ObjectRef<Pod>>>, key: &str) -> Vec<ObjectRef<Pod>> {
    map.get(key)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default()
}

fn pool_key(namespace: &str, template: &str, hash: &str) -> PoolKey {
    (namespace.into(), template.into(), hash.into())
}

/// The pool whose refill this Pod was, when it is Ready for the first time
/// after a claim took it while it was still starting (no longer a member:
/// the pool's own count of refills, see [`Groups::put`], never sees it turn
/// Ready). Its refill time still counts for the pool's sizing. A Pod seen
/// first already Ready (a restart) is not counted: when it turned Ready is
/// unknown. Pure.
fn taken_starting_turned_ready(
    pod: &Pod,
    old: &Keys,
    new: &Keys,
    first_sight: bool,
) -> Option<String> {
    (!first_sight && !old.ever_ready && new.ever_ready && new.group.is_none())
        .then(|| pod.labels().get(ORIGIN_POOL_LABEL).cloned())
        .flatten()
        .filter(|_| created_at(pod).is_some())
}

/// A pool a Pod event wakes (see [`PodIndex::applied_wakes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolWake {
    /// The pool's name, in the Pod's namespace.
    pub pool: String,
    /// The event is the index's first sight of the Pod, which joined the
    /// pool with it.
    pub first_sight: bool,
}

/// The indexes (see the module docs).
#[derive(Default)]
pub struct PodIndex {
    state: RwLock<State>,
}

impl PodIndex {
    /// Indexes the Pod as it is now. Returns the pools (by name, in the
    /// Pod's namespace) whose decision the event may change: the pool it
    /// joined, left, or whose member changed in a way the pool reads; each
    /// with whether this is the index's first sight of the Pod (its first
    /// event, as that pool's member).
    pub fn applied_wakes(&self, pod: &Pod) -> Vec<PoolWake> {
        let reference = ObjectRef::from_obj(pod);
        let member = Member::of(pod);
        let mut keys = Keys::of(pod, member.as_ref().map(|(k, _)| k.clone()));
        let mut state = self.state.write().expect("pod index lock");
        let seen = state.keys.get(&reference).cloned();
        let first_sight = seen.is_none();
        let old = seen.unwrap_or_default();
        let mut wake = Vec::new();
        if let Some(pool) = taken_starting_turned_ready(pod, &old, &keys, first_sight) {
            state.members.queue_refill(
                &reference.namespace.clone().unwrap_or_default(),
                &pool,
                Refill {
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                    created_at: created_at(pod),
                },
            );
            wake.push(PoolWake {
                pool,
                first_sight: false,
            });
        }
        keys.ever_ready |= old.ever_ready;
        if let Some(left) = old
            .group
            .as_ref()
            .filter(|g| Some(*g) != keys.group.as_ref())
            && state.members.take(left, &reference.name)
        {
            wake.push(PoolWake {
                pool: left.1.clone(),
                first_sight: false,
            });
        }
        if let Some((group, member)) = member
            && state.members.put(&group, &reference.name, member)
        {
            wake.push(PoolWake {
                pool: group.1,
                first_sight,
            });
        }
        if old == keys {
            return wake;
        }
        let State {
            keys: all,
            by_controller,
            idle,
            by_claim,
            members: _,
        } = &mut *state;
        remove(by_controller, old.controller.as_ref(), &reference);
        remove(idle, old.idle.as_ref(), &reference);
        remove(by_claim, old.claim.as_ref(), &reference);
        insert(by_controller, keys.controller.clone(), &reference);
        insert(idle, keys.idle.clone(), &reference);
        insert(by_claim, keys.claim.clone(), &reference);
        all.insert(reference, keys);
        wake
    }

    /// Forgets a Pod that was deleted. Returns the pool it was a member of.
    pub fn deleted(&self, pod: &Pod) -> Option<String> {
        let reference = ObjectRef::from_obj(pod);
        let mut state = self.state.write().expect("pod index lock");
        let old = state.keys.remove(&reference)?;
        remove(
            &mut state.by_controller,
            old.controller.as_ref(),
            &reference,
        );
        remove(&mut state.idle, old.idle.as_ref(), &reference);
        remove(&mut state.by_claim, old.claim.as_ref(), &reference);
        let group = old.group?;
        state
            .members
            .take(&group, &reference.name)
            .then_some(group.1)
    }

    /// The pool's counts over its live members, current being
    /// `warmpool::members::current_key(template, hash)` (the template label
    /// and the hash), leaving out `excluded` (deletes pending).
    /// O(1 + excluded).
    pub fn pool_counts(
        &self,
        pool: &GroupKey,
        current: &str,
        excluded: &HashSet<String>,
    ) -> PoolCounts {
        let state = self.state.read().expect("pod index lock");
        state.members.counts(pool, current, excluded)
    }

    /// The pool's live members not in `excluded`. O(members).
    pub fn pool_members(
        &self,
        pool: &GroupKey,
        excluded: &HashSet<String>,
    ) -> Vec<(String, Member)> {
        let state = self.state.read().expect("pod index lock");
        state.members.live_members(pool, excluded)
    }

    /// Whether `name` is a live member of `pool` made from `current` that
    /// has never been Ready.
    pub fn is_starting_member(&self, pool: &GroupKey, name: &str, current: &str) -> bool {
        let state = self.state.read().expect("pod index lock");
        state.members.is_starting(pool, name, current)
    }

    /// Whether `name` is a live member of `pool`.
    pub fn is_live_member(&self, pool: &GroupKey, name: &str) -> bool {
        let state = self.state.read().expect("pod index lock");
        state.members.is_live(pool, name)
    }

    /// Drains the refills (members turned Ready) queued for a pool.
    pub fn take_refills(&self, namespace: &str, name: &str) -> Vec<Refill> {
        let mut state = self.state.write().expect("pod index lock");
        state.members.take_refills(namespace, name)
    }

    /// Drops the refills queued for pools `keep` rejects; returns how many.
    pub fn retain_refills(&self, keep: impl Fn(&str, &str) -> bool) -> usize {
        let mut state = self.state.write().expect("pod index lock");
        state.members.retain_refills(keep)
    }

    /// Pods whose controller ownerReference has this uid.
    pub fn controlled_by(&self, uid: &str) -> Vec<ObjectRef<Pod>> {
        let state = self.state.read().expect("pod index lock");
        filed_under(&state.by_controller, uid)
    }

    /// Idle pool Pods (by label) of a template's hash in a namespace.
    pub fn idle(&self, namespace: &str, template: &str, hash: &str) -> Vec<ObjectRef<Pod>> {
        let state = self.state.read().expect("pod index lock");
        state
            .idle
            .get(&pool_key(namespace, template, hash))
            .map(ring::Ring::all)
            .unwrap_or_default()
    }

    /// Up to `limit` of those idle Pods, the ones nearest to `key` on the
    /// ring (see [`ring`]), and how many idle Pods there are in all. O(log n
    /// + limit).
    pub fn idle_near(
        &self,
        namespace: &str,
        template: &str,
        hash: &str,
        key: &str,
        limit: usize,
    ) -> (Vec<ObjectRef<Pod>>, usize) {
        let state = self.state.read().expect("pod index lock");
        state
            .idle
            .get(&pool_key(namespace, template, hash))
            .map(|r| (r.near(key, limit), r.len()))
            .unwrap_or_default()
    }

    /// Pods labelled with this claim uid (a steal writes it).
    pub fn labelled_for_claim(&self, claim_uid: &str) -> Vec<ObjectRef<Pod>> {
        let state = self.state.read().expect("pod index lock");
        filed_under(&state.by_claim, claim_uid)
    }

    /// Whether the Pod `namespace/name` is indexed (the same view as the
    /// member counts, which the Pod store may be a moment ahead of).
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        let state = self.state.read().expect("pod index lock");
        state
            .keys
            .contains_key(&ObjectRef::new(name).within(namespace))
    }

    /// Number of Pods indexed.
    pub fn len(&self) -> usize {
        self.state.read().expect("pod index lock").keys.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str, labels: &[(&str, &str)], controller: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        p.metadata.owner_references = controller.map(|uid| {
            vec![crate::controller::test_pod::controller(
                "SandboxWarmPool",
                "pool",
                uid,
            )]
        });
        p
    }

    #[test]
    fn follows_a_pod_from_its_pool_to_its_claim_and_away() {
        let index = PodIndex::default();
        let idle = [
            (POOL_LABEL, "pool"),
            (TEMPLATE_LABEL, "t"),
            (TEMPLATE_HASH_LABEL, "h"),
        ];
        let first = index.applied_wakes(&pod("a", &idle, Some("pool-uid")));
        assert_eq!(
            first,
            [PoolWake {
                pool: "pool".into(),
                first_sight: true
            }]
        );
        assert_eq!(index.idle("ns", "t", "h").len(), 1);
        assert_eq!(index.controlled_by("pool-uid").len(), 1);
        assert!(index.idle("ns", "t", "other-hash").is_empty());
        assert_eq!(index.idle_near("ns", "t", "h", "claim", 8).1, 1);
        assert!(index.contains("ns", "a") && !index.contains("other", "a"));

        // The steal: pool label gone, claim uid label and owner added.
        let stolen = pod(
            "a",
            &[
                (TEMPLATE_LABEL, "t"),
                (TEMPLATE_HASH_LABEL, "h"),
                (CLAIM_UID_LABEL, "claim-uid"),
            ],
            Some("claim-uid"),
        );
        assert_eq!(
            index.applied_wakes(&stolen),
            [PoolWake {
                pool: "pool".into(),
                first_sight: false
            }],
            "it just left its pool"
        );
        assert!(
            index.applied_wakes(&stolen).is_empty(),
            "a later event concerns no pool"
        );
        assert!(index.idle("ns", "t", "h").is_empty());
        assert!(index.controlled_by("pool-uid").is_empty());
        assert_eq!(index.labelled_for_claim("claim-uid").len(), 1);
        assert_eq!(index.controlled_by("claim-uid").len(), 1);

        assert_eq!(
            index.deleted(&stolen),
            None,
            "its deletion concerns no pool"
        );
        assert!(index.is_empty());
        assert!(index.labelled_for_claim("claim-uid").is_empty());
        assert!(index.controlled_by("claim-uid").is_empty());
    }

    #[test]
    fn a_refill_taken_while_starting_counts_for_its_pool_when_it_turns_ready() {
        let ready = |mut p: Pod| {
            p.status = Some(crate::controller::test_pod::ready_status());
            p
        };
        let stamped = |mut p: Pod| {
            p.metadata.annotations = Some(
                [(
                    crate::api::CREATED_AT_ANNOTATION.to_string(),
                    "2026-01-01T00:00:00Z".to_string(),
                )]
                .into(),
            );
            p
        };
        let member = [
            (POOL_LABEL, "pool"),
            (ORIGIN_POOL_LABEL, "pool"),
            (TEMPLATE_LABEL, "t"),
            (TEMPLATE_HASH_LABEL, "h"),
        ];
        let taken = [
            (ORIGIN_POOL_LABEL, "pool"),
            (TEMPLATE_LABEL, "t"),
            (CLAIM_UID_LABEL, "claim-uid"),
        ];
        let index = PodIndex::default();
        // Taken while starting, then Ready: one refill, and its pool woken.
        index.applied_wakes(&stamped(pod("a", &member, Some("pool-uid"))));
        index.applied_wakes(&stamped(pod("a", &taken, Some("claim-uid"))));
        let wakes = index.applied_wakes(&ready(stamped(pod("a", &taken, Some("claim-uid")))));
        assert_eq!(
            wakes,
            [PoolWake {
                pool: "pool".into(),
                first_sight: false
            }]
        );
        let refills = index.take_refills("ns", "pool");
        assert_eq!(refills.len(), 1);
        assert!(refills[0].created_at.is_some());
        // Ready again later (after a restart of its container, say): no more.
        index.applied_wakes(&stamped(pod("a", &taken, Some("claim-uid"))));
        assert!(
            index
                .applied_wakes(&ready(stamped(pod("a", &taken, Some("claim-uid")))))
                .is_empty()
        );

        // Ready in its pool, then taken: counted once, by the pool's members.
        index.applied_wakes(&stamped(pod("b", &member, Some("pool-uid"))));
        index.applied_wakes(&ready(stamped(pod("b", &member, Some("pool-uid")))));
        index.applied_wakes(&ready(stamped(pod("b", &taken, Some("claim-uid")))));
        assert_eq!(index.take_refills("ns", "pool").len(), 1);

        // First seen already Ready (a restart of the operator): unknown when.
        index.applied_wakes(&ready(stamped(pod("c", &taken, Some("claim-uid")))));
        assert!(index.take_refills("ns", "pool").is_empty());
    }
}
