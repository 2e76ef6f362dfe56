//! What a NetworkPolicy event of the operator's wakes: a deleted one its
//! owner, which makes it again once it may (the claims', pools',
//! templates' and standalone Sandboxes' policies are how sandboxes are
//! isolated; a held one goes only once its Pods are gone, see
//! `policy_hold`); a claim's or pool's seen without the hold its owner; a
//! claim's made while its Sandbox waits for it that Sandbox.

use std::sync::Arc;

use futures::channel::mpsc;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::super::claim;
use super::super::memo::WriteMemo;
use super::super::policy_hold::has_hold;
use super::super::sandbox::{standalone_policy_key, waiting_for_the_claims_policy};
use super::super::warmpool::Expectations;
use crate::api::{Sandbox, SandboxClaim, SandboxWarmPool};

/// What a deleted NetworkPolicy's owner needs to make it again: the memos
/// that would skip the create, and whom to wake.
pub(in crate::controller) struct PolicyOwners {
    pub written: Arc<WriteMemo>,
    pub expectations: Arc<Expectations>,
    pub pools: Store<SandboxWarmPool>,
    pub claims: Store<SandboxClaim>,
    pub sandboxes: Store<Sandbox>,
    pub pool_tx: mpsc::UnboundedSender<ObjectRef<SandboxWarmPool>>,
    pub claim_tx: mpsc::UnboundedSender<ObjectRef<SandboxClaim>>,
    pub sandbox_tx: mpsc::UnboundedSender<ObjectRef<Sandbox>>,
}

/// The NetworkPolicy cache's trigger: a deleted policy the operator made
/// (by its controller ownerReference: a claim's, a pool's, a template's or
/// a standalone Sandbox's)
/// has its memo forgotten and its owner woken, which makes it again at once;
/// for a template's, every pool and claim of that template in its namespace.
/// Besides, a pool's or claim's policy seen without the hold wakes its
/// owner (see [`PolicyOwners::wake_owner_for_its_hold`]). Nothing else wakes anyone:
/// the warm path's own policy create costs one decoded event and no
/// reconcile.
pub(in crate::controller) fn network_policy_trigger(
    owners: PolicyOwners,
) -> impl Fn(&NetworkPolicy, bool) {
    move |policy: &NetworkPolicy, deleted: bool| {
        if !deleted {
            owners.wake_owner_for_its_hold(policy);
            owners.wake_a_waiting_sandbox(policy);
        }
        if !deleted {
            return;
        }
        let namespace = policy.namespace().unwrap_or_default();
        let Some(owner) = policy
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
        else {
            owners.wake_successor(policy, &namespace);
            return;
        };
        match owner.kind.as_str() {
            "SandboxClaim" => {
                for key in claim::policy_memo_keys(&owner.uid) {
                    owners.written.forget(&key);
                }
                let _ = owners
                    .claim_tx
                    .unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
            }
            "SandboxWarmPool" => owners.pool_policy_gone(&namespace, &owner.name),
            "Sandbox" => {
                owners.written.forget(&standalone_policy_key(&owner.uid));
                let _ = owners
                    .sandbox_tx
                    .unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
            }
            "SandboxTemplate" => {
                owners
                    .written
                    .forget(&claim::template_policy_key(&owner.uid));
                for pool in owners.pools.state() {
                    if pool.namespace().as_deref() == Some(namespace.as_str())
                        && pool.spec.sandbox_template_ref.name == owner.name
                    {
                        owners.pool_policy_gone(&namespace, &pool.name_any());
                    }
                }
                for claim in owners.claims.state() {
                    if claim.namespace().as_deref() == Some(namespace.as_str())
                        && claim.spec.sandbox_template_ref.name == owner.name
                    {
                        let _ = owners.claim_tx.unbounded_send(ObjectRef::from_obj(&*claim));
                    }
                }
            }
            _ => {}
        }
    }
}

impl PolicyOwners {
    /// A pool's or claim's policy without the hold (made before the policy
    /// cache had listed, or by a version without it): its owner puts it on
    /// at its next reconcile, which this wakes. Both are made with the hold
    /// once the cache has listed, and a pool's policy changes rarely (made
    /// once, replaced when its template or the deny list changes), so this
    /// costs nothing on the warm path.
    fn wake_owner_for_its_hold(&self, policy: &NetworkPolicy) {
        if has_hold(policy) || policy.metadata.deletion_timestamp.is_some() {
            return;
        }
        let Some(owner) = policy
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
        else {
            return;
        };
        let namespace = policy.namespace().unwrap_or_default();
        match owner.kind.as_str() {
            "SandboxWarmPool" => {
                let _ = self
                    .pool_tx
                    .unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
            }
            "SandboxClaim" => {
                let _ = self
                    .claim_tx
                    .unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
            }
            _ => {}
        }
    }

    /// A claim's policy made (or changed): the Sandbox of that name, when
    /// the cache shows it waiting for its claim's policy
    /// (`NetworkPolicyReplacing`), may start its Pod now. One cache lookup;
    /// the warm path's Sandbox is not waiting, so it wakes nothing there.
    /// A template's policy made (per-template mode): the waiting Sandboxes
    /// of the claims of that template, whose cold Pods wait for it (before,
    /// found by review, they waited for the 10 s recheck).
    fn wake_a_waiting_sandbox(&self, policy: &NetworkPolicy) {
        if policy.metadata.deletion_timestamp.is_some() {
            return;
        }
        let Some(owner) = policy.owner_references().iter().find(|o| {
            o.controller == Some(true)
                && matches!(o.kind.as_str(), "SandboxClaim" | "SandboxTemplate")
        }) else {
            return;
        };
        let namespace = policy.namespace().unwrap_or_default();
        let wake = |name: &str| {
            let sandbox = ObjectRef::new(name).within(&namespace);
            if self
                .sandboxes
                .get(&sandbox)
                .is_some_and(|s| waiting_for_the_claims_policy(&s))
            {
                let _ = self.sandbox_tx.unbounded_send(sandbox);
            }
        };
        if owner.kind == "SandboxClaim" {
            wake(&owner.name);
            return;
        }
        for claim in self.claims.state() {
            if claim.namespace().as_deref() == Some(namespace.as_str())
                && claim.spec.sandbox_template_ref.name == owner.name
            {
                wake(&claim.name_any());
            }
        }
    }

    /// A claim's policy left without a controller (its claim deleted while
    /// a Pod it covered ran out its grace period) is gone: a later claim of
    /// that name waited for the name (`NetworkPolicyReplacing`), so it is
    /// woken to make its own now (its Sandbox then waits for that policy's
    /// creation, which wakes it). Only the operator's (its managed-by
    /// label); the name says whose.
    fn wake_successor(&self, policy: &NetworkPolicy, namespace: &str) {
        let managed = policy
            .labels()
            .get(crate::controller::MANAGED_BY_LABEL)
            .map(String::as_str)
            == Some(crate::controller::MANAGED_BY_VALUE);
        let name = policy.name_any();
        if let (true, Some(claim)) = (managed, name.strip_suffix("-sandbox")) {
            let _ = self
                .claim_tx
                .unbounded_send(ObjectRef::new(claim).within(namespace));
        }
    }

    /// The pool's policy (its own, or its template's) is gone: made again
    /// by the reconcile this wakes.
    fn pool_policy_gone(&self, namespace: &str, pool: &str) {
        self.expectations
            .network_policy_gone(&format!("{namespace}/{pool}"));
        let _ = self
            .pool_tx
            .unbounded_send(ObjectRef::new(pool).within(namespace));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_pod::controller;
    use crate::controller::triggers::tests::received;
    use kube::runtime::reflector::{self, store::Writer};
    use kube::runtime::watcher::Event;
    use serde_json::json;

    /// A policy with the hold, controlled by `owner`.
    fn policy(owner_kind: &str, owner: &str) -> NetworkPolicy {
        let mut p: NetworkPolicy = serde_json::from_value(json!({"metadata": {
            "name": "np", "namespace": "ns",
            "finalizers": [crate::controller::policy_hold::HOLD_FINALIZER]}}))
        .unwrap();
        p.metadata.owner_references =
            Some(vec![controller(owner_kind, owner, &format!("uid-{owner}"))]);
        p
    }

    /// A pool or claim of template `template`, named `name`, in `ns`.
    fn of_template<K: serde::de::DeserializeOwned>(kind: &str, name: &str, template: &str) -> K {
        serde_json::from_value(json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"sandboxTemplateRef": {"name": template}, "replicas": 1}
        }))
        .unwrap()
    }

    /// A Sandbox `name` whose Ready condition says it waits for its
    /// claim's policy.
    fn waiting_sandbox(name: &str) -> Sandbox {
        serde_json::from_value(json!({
            "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"podTemplate": {"spec": {"containers": []}}},
            "status": {"conditions": [{"type": "Ready", "status": "False",
                "reason": "NetworkPolicyReplacing", "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    fn store_of<K>(objects: Vec<K>) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        let (store, mut writer): (Store<K>, Writer<K>) = reflector::store();
        for o in objects {
            writer.apply_watcher_event(&Event::Apply(o));
        }
        store
    }

    #[test]
    fn a_deleted_policy_wakes_its_owner_with_its_memo_forgotten() {
        let written = Arc::new(WriteMemo::default());
        let expectations = Arc::new(Expectations::default());
        let (pool_tx, mut pools) = mpsc::unbounded();
        let (claim_tx, mut claims) = mpsc::unbounded();
        let (sandbox_tx, mut sandboxes) = mpsc::unbounded();
        let on_policy = network_policy_trigger(PolicyOwners {
            written: Arc::clone(&written),
            expectations: Arc::clone(&expectations),
            pools: store_of(vec![
                of_template::<SandboxWarmPool>("SandboxWarmPool", "p1", "t"),
                of_template::<SandboxWarmPool>("SandboxWarmPool", "p2", "other"),
            ]),
            claims: store_of(vec![
                of_template::<SandboxClaim>("SandboxClaim", "c1", "t"),
                of_template::<SandboxClaim>("SandboxClaim", "c2", "other"),
            ]),
            sandboxes: store_of(vec![waiting_sandbox("c4")]),
            pool_tx,
            claim_tx,
            sandbox_tx,
        });
        let yes = serde_json::Value::Bool(true);
        let [made, lockdown] = claim::policy_memo_keys("uid-c1");
        written.record(&made, yes.clone());
        written.record(&lockdown, yes.clone());
        // Made or changed: nothing wakes, nothing is forgotten.
        on_policy(&policy("SandboxClaim", "c1"), false);
        assert!(received(&mut claims).is_empty());
        assert!(written.recently_wrote(&made, &yes));
        // Seen without the hold: its claim or pool wakes to put it on.
        let mut unheld = policy("SandboxClaim", "c1");
        unheld.metadata.finalizers = None;
        on_policy(&unheld, false);
        assert_eq!(received(&mut claims), ["c1"]);
        assert!(written.recently_wrote(&made, &yes));
        let mut unheld = policy("SandboxWarmPool", "p2");
        unheld.metadata.finalizers = None;
        on_policy(&unheld, false);
        assert_eq!(received(&mut pools), ["p2"]);
        let mut unheld = policy("Sandbox", "s1");
        unheld.metadata.finalizers = None;
        on_policy(&unheld, false);
        assert!(received(&mut sandboxes).is_empty());
        // A claim's, deleted: both memos go, the claim wakes.
        on_policy(&policy("SandboxClaim", "c1"), true);
        assert_eq!(received(&mut claims), ["c1"]);
        assert!(!written.recently_wrote(&made, &yes));
        assert!(!written.recently_wrote(&lockdown, &yes));
        // A pool's: its memo goes, it wakes.
        let fingerprint = json!({"pool": "uid-p1"});
        expectations.network_policy_made("ns/p1", fingerprint.clone());
        on_policy(&policy("SandboxWarmPool", "p1"), true);
        assert_eq!(received(&mut pools), ["p1"]);
        assert!(!expectations.network_policy_done("ns/p1", &fingerprint));
        // A template's: every pool and claim of that template wakes.
        expectations.network_policy_made("ns/p1", fingerprint.clone());
        let template_key = claim::template_policy_key("uid-t");
        written.record(&template_key, json!(1));
        on_policy(&policy("SandboxTemplate", "t"), true);
        assert_eq!(received(&mut pools), ["p1"]);
        assert_eq!(received(&mut claims), ["c1"]);
        assert!(!expectations.network_policy_done("ns/p1", &fingerprint));
        assert!(!written.recently_wrote(&template_key, &json!(1)));
        // A standalone Sandbox's: its memo goes, it wakes.
        let sandbox_key = standalone_policy_key("uid-s1");
        written.record(&sandbox_key, json!(["169.254.0.0/16"]));
        on_policy(&policy("Sandbox", "s1"), false);
        assert!(received(&mut sandboxes).is_empty());
        on_policy(&policy("Sandbox", "s1"), true);
        assert_eq!(received(&mut sandboxes), ["s1"]);
        assert!(!written.recently_wrote(&sandbox_key, &json!(["169.254.0.0/16"])));
        // One without a controller of ours wakes no one.
        let mut foreign = policy("Deployment", "d");
        on_policy(&foreign, true);
        foreign.metadata.owner_references = None;
        on_policy(&foreign, true);
        assert!(received(&mut pools).is_empty() && received(&mut claims).is_empty());
        assert!(received(&mut sandboxes).is_empty());
        // A claim's policy its claim left (no controller any more), gone:
        // the claim and Sandbox of its name wake (a successor waits for it).
        let mut left = policy("SandboxClaim", "c3");
        left.metadata.owner_references = None;
        left.metadata.name = Some("c3-sandbox".into());
        on_policy(&left, true);
        assert!(received(&mut claims).is_empty(), "not the operator's");
        left.metadata.labels = Some(
            [(
                crate::controller::MANAGED_BY_LABEL.to_string(),
                crate::controller::MANAGED_BY_VALUE.to_string(),
            )]
            .into(),
        );
        on_policy(&left, true);
        assert_eq!(received(&mut claims), ["c3"]);
        assert!(received(&mut sandboxes).is_empty());
        // A claim's policy made while its Sandbox waits for it: the Sandbox
        // wakes; one of a Sandbox not waiting (c1 has none) wakes nothing.
        on_policy(&policy("SandboxClaim", "c4"), false);
        assert_eq!(received(&mut sandboxes), ["c4"]);
        on_policy(&policy("SandboxClaim", "c1"), false);
        assert!(received(&mut sandboxes).is_empty());
    }
}
