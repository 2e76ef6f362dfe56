//! Indexes over the Pod cache, kept up to date on every watch event, so a
//! reconcile looks Pods up by key instead of scanning the whole cache:
//! idle Pods by (namespace, template, template hash), Pods by controller
//! uid, and Pods by the claim uid label a steal writes.
//!
//! Guarantee: updated (by the Pod cache) before the event's triggers are
//! sent, so a reconcile woken by an event finds that event in the index.
//! The index only narrows the search: callers check every Pod they get
//! (ownership, readiness) from the cache copy, never from the index alone.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::controller_uid;
use crate::api::{CLAIM_UID_LABEL, POOL_LABEL, TEMPLATE_HASH_LABEL, TEMPLATE_LABEL};

/// (namespace, template, template hash) of an idle pool Pod.
type PoolKey = (String, String, String);

/// What one Pod is indexed under.
#[derive(Clone, Debug, Default, PartialEq)]
struct Keys {
    controller: Option<String>,
    idle: Option<PoolKey>,
    claim: Option<String>,
}

impl Keys {
    fn of(pod: &Pod) -> Keys {
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
        }
    }
}

#[derive(Default)]
struct State {
    keys: HashMap<ObjectRef<Pod>, Keys>,
    by_controller: HashMap<String, HashSet<ObjectRef<Pod>>>,
    idle: HashMap<PoolKey, HashSet<ObjectRef<Pod>>>,
    by_claim: HashMap<String, HashSet<ObjectRef<Pod>>>,
}

fn insert<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, HashSet<ObjectRef<Pod>>>,
    key: Option<K>,
    pod: &ObjectRef<Pod>,
) {
    if let Some(key) = key {
        map.entry(key).or_default().insert(pod.clone());
    }
}

fn remove<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, HashSet<ObjectRef<Pod>>>,
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

/// The indexes (see the module docs).
#[derive(Default)]
pub struct PodIndex {
    state: RwLock<State>,
}

impl PodIndex {
    /// Indexes the Pod as it is now. Returns true when the Pod was an idle
    /// pool Pod and no longer is (it just left its pool).
    pub fn applied(&self, pod: &Pod) -> bool {
        let reference = ObjectRef::from_obj(pod);
        let keys = Keys::of(pod);
        let mut state = self.state.write().expect("pod index lock");
        let old = state.keys.get(&reference).cloned().unwrap_or_default();
        if old == keys {
            return false;
        }
        let State {
            keys: all,
            by_controller,
            idle,
            by_claim,
        } = &mut *state;
        remove(by_controller, old.controller.as_ref(), &reference);
        remove(idle, old.idle.as_ref(), &reference);
        remove(by_claim, old.claim.as_ref(), &reference);
        insert(by_controller, keys.controller.clone(), &reference);
        insert(idle, keys.idle.clone(), &reference);
        insert(by_claim, keys.claim.clone(), &reference);
        let left_pool = old.idle.is_some() && keys.idle.is_none();
        all.insert(reference, keys);
        left_pool
    }

    /// Forgets a Pod that was deleted.
    pub fn deleted(&self, pod: &Pod) {
        let reference = ObjectRef::from_obj(pod);
        let mut state = self.state.write().expect("pod index lock");
        let Some(old) = state.keys.remove(&reference) else {
            return;
        };
        remove(
            &mut state.by_controller,
            old.controller.as_ref(),
            &reference,
        );
        remove(&mut state.idle, old.idle.as_ref(), &reference);
        remove(&mut state.by_claim, old.claim.as_ref(), &reference);
    }

    /// Pods whose controller ownerReference has this uid.
    pub fn controlled_by(&self, uid: &str) -> Vec<ObjectRef<Pod>> {
        let state = self.state.read().expect("pod index lock");
        state
            .by_controller
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Idle pool Pods (by label) of a template's hash in a namespace.
    pub fn idle(&self, namespace: &str, template: &str, hash: &str) -> Vec<ObjectRef<Pod>> {
        let state = self.state.read().expect("pod index lock");
        state
            .idle
            .get(&(
                namespace.to_string(),
                template.to_string(),
                hash.to_string(),
            ))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Pods labelled with this claim uid (a steal writes it).
    pub fn labelled_for_claim(&self, claim_uid: &str) -> Vec<ObjectRef<Pod>> {
        let state = self.state.read().expect("pod index lock");
        state
            .by_claim
            .get(claim_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
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
            vec![OwnerReference {
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            }]
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
        assert!(!index.applied(&pod("a", &idle, Some("pool-uid"))));
        assert_eq!(index.idle("ns", "t", "h").len(), 1);
        assert_eq!(index.controlled_by("pool-uid").len(), 1);
        assert!(index.idle("ns", "t", "other-hash").is_empty());

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
        assert!(index.applied(&stolen), "it just left its pool");
        assert!(!index.applied(&stolen), "a later event is not a departure");
        assert!(index.idle("ns", "t", "h").is_empty());
        assert!(index.controlled_by("pool-uid").is_empty());
        assert_eq!(index.labelled_for_claim("claim-uid").len(), 1);
        assert_eq!(index.controlled_by("claim-uid").len(), 1);

        index.deleted(&stolen);
        assert!(index.is_empty());
        assert!(index.labelled_for_claim("claim-uid").is_empty());
        assert!(index.controlled_by("claim-uid").is_empty());
    }
}
