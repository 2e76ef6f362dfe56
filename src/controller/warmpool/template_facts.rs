//! What a pool reconcile needs to know of its template, worked out once per
//! template version and policy snapshot: the pod spec the current admission
//! policy admits (its defaults applied), or why it refuses it, and the hash
//! of the template as its Pods are made, which labels the pool's Pods.
//! The claim path (which idle Pods have the current hash) and the sizing
//! scan (which Sandboxes were made from a pooled template) read the hash
//! from here too.
//!
//! A pool reconciles on several Pod events per claim (the steal, the refill
//! create, its binding and start); its template and the policy change
//! rarely, and both answers cost a serialization of the whole pod template.
//!
//! Guarantee: an answer is reused only for the same template uid and
//! resourceVersion and the very same policy snapshot (the `Arc` the policy
//! store handed out, compared by pointer: a reload is a new snapshot). A
//! template without uid or resourceVersion is never remembered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;

use k8s_openapi::api::core::v1::PodSpec;

use super::guard::{Blocker, admit};
use crate::admission::Policy;
use crate::api::{SandboxTemplate, template_hash};

/// At most this many templates are remembered; past it a new one takes
/// the place of one picked at random, so templates deleted long ago do not
/// pile up. Not of the least recently used, nor all of them at once (as
/// before): the sizing scan reads every pooled template in turn each
/// second, and with more templates than places either of those would make
/// every lookup a miss (a namespace with 1,100 templates could keep every
/// other tenant's claims working out their template's facts again); a
/// random one keeps most of them.
const MAX_ENTRIES: usize = 1024;

/// The facts of one template version under one policy snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateFacts {
    /// [`template_hash`] of the template.
    pub hash: String,
    /// The pod spec the pool's Pods are made from: the template's, with the
    /// policy's defaults applied; or the policy's verdict when it refuses
    /// the template.
    pub admitted: Result<Arc<PodSpec>, Blocker>,
}

impl TemplateFacts {
    /// The policy's verdict, when it refuses the pod template.
    pub fn policy_problem(&self) -> Option<&Blocker> {
        self.admitted.as_ref().err()
    }
}

struct Entry {
    resource_version: String,
    policy: Arc<Policy>,
    facts: TemplateFacts,
}

/// Facts per template uid.
#[derive(Default)]
pub struct TemplateMemo {
    entries: Mutex<HashMap<String, Entry>>,
}

impl TemplateMemo {
    /// The facts of `template` under `policy`: remembered, or worked out now.
    pub fn facts(&self, template: &SandboxTemplate, policy: Arc<Policy>) -> TemplateFacts {
        let work_out = |policy: &Policy| {
            let admitted = admit(policy, template);
            TemplateFacts {
                hash: admitted_hash(template, admitted.as_ref().ok()),
                admitted: admitted.map(Arc::new),
            }
        };
        let (Some(uid), Some(resource_version)) = (template.uid(), template.resource_version())
        else {
            return work_out(&policy);
        };
        let lock = || self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = lock().get(&uid)
            && entry.resource_version == resource_version
            && Arc::ptr_eq(&entry.policy, &policy)
        {
            return entry.facts.clone();
        }
        // Worked out without the lock: other pools' reconciles do not wait.
        let facts = work_out(&policy);
        let mut entries = lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&uid) {
            let victim = rand::random_range(0..entries.len());
            if let Some(key) = entries.keys().nth(victim).cloned() {
                entries.remove(&key);
            }
        }
        entries.insert(
            uid,
            Entry {
                resource_version,
                policy,
                facts: facts.clone(),
            },
        );
        facts
    }
}

/// The hash of the template as its Pods are made: with the admitted pod
/// spec (the policy's defaults applied) when there is one. A template the
/// webhook stored already carries those defaults (defaulting twice changes
/// nothing), so its hash is the stored template's; one stored without them,
/// or a policy reload that changes a default, gives a new hash, and the
/// pool replaces its idle Pods instead of handing out Pods made under the
/// old defaults.
fn admitted_hash(template: &SandboxTemplate, admitted: Option<&PodSpec>) -> String {
    match admitted {
        Some(spec) if *spec != template.spec.pod_template.spec => {
            let mut made = template.spec.clone();
            made.pod_template.spec = spec.clone();
            template_hash(&made)
        }
        _ => template_hash(&template.spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(rv: &str, privileged: bool) -> SandboxTemplate {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "agents.x-k8s.io/v1alpha1",
            "kind": "SandboxTemplate",
            "metadata": {"name": "t", "namespace": "ns", "uid": "uid-1", "resourceVersion": rv},
            "spec": {"podTemplate": {"spec": {"containers": [{
                "name": "main", "image": "busybox",
                "securityContext": {"privileged": privileged}
            }]}}}
        }))
        .unwrap()
    }

    #[test]
    fn an_answer_is_reused_only_for_the_same_version_and_policy_snapshot() {
        let memo = TemplateMemo::default();
        let policy = Arc::new(Policy::default());
        let first = memo.facts(&template("1", false), Arc::clone(&policy));
        assert_eq!(first.policy_problem(), None);

        // Same uid and resourceVersion, same snapshot: the remembered answer,
        // even for content that would now be refused (shows it is reused).
        let reused = memo.facts(&template("1", true), Arc::clone(&policy));
        assert_eq!(reused, first);

        // A new resourceVersion is worked out again.
        let changed = memo.facts(&template("2", true), Arc::clone(&policy));
        assert_ne!(changed.hash, first.hash);
        let (reason, message) = changed
            .policy_problem()
            .cloned()
            .expect("privileged is refused");
        assert_eq!(reason, "PolicyViolation");
        assert!(message.contains("privileged"), "{message}");

        // The same version under a new, equal snapshot (a reload) is worked
        // out again: the content given now (not privileged) decides.
        let reloaded = memo.facts(&template("2", false), Arc::new(Policy::default()));
        assert_eq!(reloaded.policy_problem(), None);
    }

    #[test]
    fn more_templates_than_places_keep_most_of_their_answers() {
        let memo = TemplateMemo::default();
        let policy = Arc::new(Policy::default());
        let numbered = |i: usize, privileged: bool| {
            let mut t = template("1", privileged);
            t.metadata.uid = Some(format!("uid-{i}"));
            t
        };
        let templates = MAX_ENTRIES + MAX_ENTRIES / 10;
        for i in 0..templates {
            memo.facts(&numbered(i, false), Arc::clone(&policy));
        }
        // A second pass in the same order, as the sizing scan reads them:
        // a remembered answer (not refused) shows a hit.
        let hits = (0..templates)
            .filter(|&i| {
                memo.facts(&numbered(i, true), Arc::clone(&policy))
                    .policy_problem()
                    .is_none()
            })
            .count();
        eprintln!("{hits} hits of {templates}");
        assert!(
            hits > MAX_ENTRIES * 3 / 4,
            "{hits} of {templates} answers kept"
        );
    }

    #[test]
    fn a_template_without_uid_is_never_remembered() {
        let memo = TemplateMemo::default();
        let policy = Arc::new(Policy::default());
        let mut t = template("1", false);
        t.metadata.uid = None;
        assert_eq!(memo.facts(&t, Arc::clone(&policy)).policy_problem(), None);
        t.spec = template("1", true).spec;
        assert!(memo.facts(&t, policy).policy_problem().is_some());
    }

    #[test]
    fn the_hash_follows_the_pods_as_made_not_only_the_stored_template() {
        let memo = TemplateMemo::default();
        let bare = template("1", false);
        let policy = Arc::new(Policy::default());
        let facts = memo.facts(&bare, Arc::clone(&policy));
        let spec = facts.admitted.clone().expect("admitted");
        // Stored without the policy's defaults: the Pods get them, and the
        // hash is that of the template as its Pods are made.
        assert_ne!(*spec, bare.spec.pod_template.spec);
        assert_ne!(facts.hash, template_hash(&bare.spec));
        // The same template as the webhook would have stored it (defaults
        // applied) hashes the same: no rollout for templates that went
        // through the webhook.
        let mut stored = template("2", false);
        stored.spec.pod_template.spec = (*spec).clone();
        let again = memo.facts(&stored, Arc::clone(&policy));
        assert_eq!(again.hash, template_hash(&stored.spec));
        assert_eq!(again.hash, facts.hash);
        // A reload that changes a default gives a new hash.
        let tighter = Arc::new(Policy::from_yaml("defaults: {limits: {memory: 1Gi}}").unwrap());
        assert_ne!(memo.facts(&bare, tighter).hash, facts.hash);
    }
}
