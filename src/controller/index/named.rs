//! Which claims' Sandboxes name a Pod in their `agents.x-k8s.io/pod-name`
//! annotation. The Sandbox cache keeps it (on every Sandbox event); the Pod
//! cache's trigger reads it.
//!
//! Why: a warm Sandbox and its claim decide from the Pod the Sandbox names
//! (adopt it, wait for its steal, repair the claim when another claim got
//! it). Such a Pod does not always carry a label or an owner that leads
//! back to them: a Pod stolen by another claim carries that claim's labels.
//! With this index every event of a named Pod that the operator watches
//! (those with its `managed-by` label, which every pool Pod has) wakes
//! whoever named it, so no such decision waits for a timer.
//!
//! Guarantee: only a wake-up. Whoever is woken reads the Pod and the
//! Sandbox from the caches and decides from their ownerReferences; an entry
//! that is stale (a Sandbox repointed since) costs one needless reconcile.
//! Only Sandboxes a claim controls are indexed (an ownerReference only the
//! operator may add, see the ownership guard): a namespace user's own
//! Sandbox naming someone else's Pod gains no wake-ups from it.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use kube::ResourceExt;

use crate::api::{POD_NAME_ANNOTATION, Sandbox};
use crate::controller::ownership::{controller_of_kind, held_by_claim};

/// (namespace, name).
type Key = (String, String);

/// A claim's Sandbox that names a Pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Namer {
    /// The Sandbox's name (same namespace as the Pod).
    pub sandbox: String,
    /// The name of the claim that controls the Sandbox.
    pub claim: String,
    claim_uid: String,
    sandbox_uid: Option<String>,
}

impl Namer {
    /// Whether the claim holds the Pod (see [`held_by_claim`]): then the
    /// Pod's events reach them anyway (its controller, its sandbox label)
    /// and they have nothing to repair.
    pub fn holds(&self, pod: &kube::api::ObjectMeta) -> bool {
        let sandbox = kube::api::ObjectMeta {
            uid: self.sandbox_uid.clone(),
            ..Default::default()
        };
        held_by_claim(pod, &self.claim_uid, &sandbox)
    }
}

#[derive(Default)]
struct Tables {
    /// (namespace, Pod name) -> who names it.
    by_pod: HashMap<Key, HashSet<Namer>>,
    /// (namespace, Sandbox name) -> the Pod it names and its entry.
    by_sandbox: HashMap<Key, (String, Namer)>,
}

/// The index (see the module docs).
#[derive(Default)]
pub struct NamedPods {
    tables: RwLock<Tables>,
}

impl NamedPods {
    /// A Sandbox was created or changed: index the Pod it names now (the
    /// one it named before, if another, no longer leads to it).
    pub fn applied(&self, sandbox: &Sandbox) {
        let key = sandbox_key(sandbox);
        let claim = controller_of_kind(sandbox.owner_references(), "SandboxClaim");
        let now = sandbox
            .annotations()
            .get(POD_NAME_ANNOTATION)
            .zip(claim)
            .map(|(pod, claim)| {
                (
                    pod.clone(),
                    Namer {
                        sandbox: key.1.clone(),
                        claim: claim.name.clone(),
                        claim_uid: claim.uid.clone(),
                        sandbox_uid: sandbox.metadata.uid.clone(),
                    },
                )
            });
        let mut tables = self.tables.write().expect("named-pod index lock");
        if tables.by_sandbox.get(&key) == now.as_ref() {
            return;
        }
        tables.forget(&key);
        if let Some((pod, namer)) = now {
            tables
                .by_pod
                .entry((key.0.clone(), pod.clone()))
                .or_default()
                .insert(namer.clone());
            tables.by_sandbox.insert(key, (pod, namer));
        }
    }

    /// A Sandbox went away.
    pub fn deleted(&self, sandbox: &Sandbox) {
        let key = sandbox_key(sandbox);
        self.tables
            .write()
            .expect("named-pod index lock")
            .forget(&key);
    }

    /// Who names the Pod `name` in `namespace`.
    pub fn namers(&self, namespace: &str, name: &str) -> Vec<Namer> {
        let tables = self.tables.read().expect("named-pod index lock");
        tables
            .by_pod
            .get(&(namespace.to_string(), name.to_string()))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Sandboxes indexed.
    pub fn len(&self) -> usize {
        self.tables
            .read()
            .expect("named-pod index lock")
            .by_sandbox
            .len()
    }

    /// Whether no Sandbox is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Tables {
    /// Removes the Sandbox `key` and its Pod's entry for it.
    fn forget(&mut self, key: &Key) {
        let Some((pod, namer)) = self.by_sandbox.remove(key) else {
            return;
        };
        let pod_key = (key.0.clone(), pod);
        if let Some(set) = self.by_pod.get_mut(&pod_key) {
            set.remove(&namer);
            if set.is_empty() {
                self.by_pod.remove(&pod_key);
            }
        }
    }
}

fn sandbox_key(sandbox: &Sandbox) -> Key {
    (sandbox.namespace().unwrap_or_default(), sandbox.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_pod::controller;

    fn sandbox(name: &str, pod: Option<&str>, claim: Option<&str>) -> Sandbox {
        let mut sandbox: Sandbox = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap();
        if let Some(pod) = pod {
            sandbox
                .annotations_mut()
                .insert(POD_NAME_ANNOTATION.into(), pod.into());
        }
        if let Some(claim) = claim {
            sandbox.metadata.owner_references =
                Some(vec![controller("SandboxClaim", claim, "claim-uid")]);
        }
        sandbox
    }

    fn namer(sandbox: &str, claim: &str) -> Namer {
        Namer {
            sandbox: sandbox.into(),
            claim: claim.into(),
            claim_uid: "claim-uid".into(),
            sandbox_uid: None,
        }
    }

    fn controlled_by(uid: &str) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            owner_references: Some(vec![controller("SandboxClaim", "x", uid)]),
            ..Default::default()
        }
    }

    #[test]
    fn a_named_pod_leads_to_its_sandbox_and_claim() {
        let index = NamedPods::default();
        index.applied(&sandbox("s1", Some("p1"), Some("c1")));
        index.applied(&sandbox("s2", Some("p1"), Some("c2")));
        index.applied(&sandbox("cold", None, Some("c3")));
        // A user's own Sandbox (no claim controls it) gains no wake-ups.
        index.applied(&sandbox("users", Some("p1"), None));
        let mut found = index.namers("ns", "p1");
        found.sort_by(|a, b| a.sandbox.cmp(&b.sandbox));
        assert_eq!(found, vec![namer("s1", "c1"), namer("s2", "c2")]);
        assert!(index.namers("other-ns", "p1").is_empty());
        assert_eq!(index.len(), 2, "only claims' Sandboxes naming a Pod");
        // A Pod its claim controls is held; another claim's, or none, is not.
        let s1 = namer("s1", "c1");
        assert!(s1.holds(&controlled_by("claim-uid")));
        assert!(!s1.holds(&controlled_by("other-uid")));
        assert!(!s1.holds(&kube::api::ObjectMeta::default()));
    }

    #[test]
    fn a_repointed_sandbox_leaves_its_old_pod_and_a_deleted_one_leaves_all() {
        let index = NamedPods::default();
        index.applied(&sandbox("s1", Some("p1"), Some("c1")));
        index.applied(&sandbox("s1", Some("p2"), Some("c1")));
        assert!(index.namers("ns", "p1").is_empty());
        assert_eq!(index.namers("ns", "p2"), vec![namer("s1", "c1")]);
        // Pointed at no Pod (the cold path): nothing left.
        index.applied(&sandbox("s1", None, Some("c1")));
        assert!(index.namers("ns", "p2").is_empty());
        assert!(index.is_empty());
        index.applied(&sandbox("s1", Some("p3"), Some("c1")));
        index.deleted(&sandbox("s1", Some("p3"), Some("c1")));
        assert!(index.namers("ns", "p3").is_empty());
        assert!(index.is_empty());
    }
}
