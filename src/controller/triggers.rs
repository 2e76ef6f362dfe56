//! What each cache event wakes: the reconciles whose decision the event may
//! change. The controllers have no watches of their own (see `run`), so
//! these triggers are how they learn of every change.
//!
//! Guarantee: a trigger runs after its cache applied the event (see
//! `cache`), so the reconcile it wakes never reads an older cache than the
//! event; it decides from ownerReferences, a label only ever wakes.

use std::sync::Arc;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::index::PodIndex;
use super::index::named::NamedPods;
use super::warmpool::Expectations;
use super::warmpool::members::Member;
use crate::api::{SANDBOX_LABEL, Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};

mod policy;
pub(super) use policy::{PolicyOwners, network_policy_trigger};

/// The Pod cache's trigger: keeps the Pod index up to date, then wakes the
/// pools whose decision the event may change (the pool a Pod joined, left or
/// whose member changed: see [`super::warmpool::members`]; later events of a
/// Pod a pool lost concern it no longer), the Sandbox that controls the Pod
/// or that it was stolen for, and every Sandbox that names the Pod with the
/// claim that controls it (see [`NamedPods`]).
///
/// One event wakes no pool: the first sight of a Pod the pool itself
/// created and has on record as a pending create, still not Ready, not
/// terminating, not ended and not reported unschedulable, while the pool's
/// last reconcile decided from its counts alone ([`Expectations::quiet_join`]).
/// Those counts include the pending create, and a Pod's first sight only
/// moves it from pending to member, so the reconcile it would wake decides
/// what the last one did. Whatever can make the pool pick Pods (a smaller
/// size, a new template) wakes it by its own event, and from then on first
/// sights wake it again until it decides from counts alone. The Pod's next
/// change that matters (Ready, or any of those) wakes the pool; its
/// periodic requeue settles the expectation otherwise.
pub(super) fn pod_trigger(
    index: Arc<PodIndex>,
    named: Arc<NamedPods>,
    expectations: Arc<Expectations>,
    pool_tx: mpsc::UnboundedSender<ObjectRef<SandboxWarmPool>>,
    sandbox_tx: mpsc::UnboundedSender<ObjectRef<Sandbox>>,
    claim_tx: mpsc::UnboundedSender<ObjectRef<SandboxClaim>>,
) -> impl Fn(&Pod, bool) {
    move |pod: &Pod, deleted: bool| {
        let namespace = pod.namespace().unwrap_or_default();
        let pools: Vec<String> = if deleted {
            let pool = index.deleted(pod);
            // Its create is no longer pending, seen or not.
            if let Some(pool) = &pool {
                expectations.create_gone(&format!("{namespace}/{pool}"), &pod.name_any());
            }
            pool.into_iter().collect()
        } else {
            index
                .applied_wakes(pod)
                .into_iter()
                .filter(|w| !(w.first_sight && is_quiet_join(&expectations, pod, &w.pool)))
                .map(|w| w.pool)
                .collect()
        };
        let labels = pod.labels();
        for pool in pools {
            let _ = pool_tx.unbounded_send(ObjectRef::new(&pool).within(&namespace));
        }
        for owner in pod
            .owner_references()
            .iter()
            .filter(|o| o.controller == Some(true) && o.kind == "Sandbox")
        {
            let _ = sandbox_tx.unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
        }
        // A stolen Pod, before its Sandbox adopts it: the Sandbox waiting
        // for the steal wakes up (the label is only a trigger; the Sandbox
        // decides from ownerReferences).
        if let Some(sandbox) = labels.get(SANDBOX_LABEL) {
            let _ = sandbox_tx.unbounded_send(ObjectRef::new(sandbox).within(&namespace));
        }
        // Whoever names the Pod and does not hold it decides from it (the
        // claim repairs when the Pod went to someone else), whatever its
        // labels say. A held Pod's events reach them anyway (controller,
        // sandbox label): no second wake on the warm path.
        for namer in named
            .namers(&namespace, &pod.name_any())
            .into_iter()
            .filter(|n| deleted || !n.holds(&pod.metadata))
        {
            let _ = sandbox_tx.unbounded_send(ObjectRef::new(&namer.sandbox).within(&namespace));
            let _ = claim_tx.unbounded_send(ObjectRef::new(&namer.claim).within(&namespace));
        }
    }
}

/// Whether the first sight of `pod` may leave `pool` asleep (see
/// [`pod_trigger`]): its summary is still that of a new Pod, and the pool
/// has it on record as a quiet join. Pure but for the expectations it reads.
fn is_quiet_join(expectations: &Expectations, pod: &Pod, pool: &str) -> bool {
    let Some(((namespace, group_pool, _), member)) = Member::of(pod) else {
        return false;
    };
    group_pool == pool
        && !member.ready
        && !member.terminating
        && !member.ended
        && member.unschedulable.is_none()
        && expectations.quiet_join(
            &format!("{namespace}/{pool}"),
            &pod.name_any(),
            member.hash.as_deref(),
        )
}

/// The pool cache's trigger: [`self_trigger`], and a deleted pool's
/// expectations are forgotten at once, so a pool made again under the same
/// name (`kubectl replace --force`) never counts the old one's creates.
pub(super) fn pool_trigger(
    expectations: Arc<Expectations>,
    tx: mpsc::UnboundedSender<ObjectRef<SandboxWarmPool>>,
) -> impl Fn(&SandboxWarmPool, bool) {
    let wake = self_trigger(tx);
    move |pool: &SandboxWarmPool, deleted: bool| {
        if deleted {
            let namespace = pool.namespace().unwrap_or_default();
            expectations.forget(&format!("{namespace}/{}", pool.name_any()));
        }
        wake(pool, deleted);
    }
}

/// The trigger of a cache whose controller reconciles the object itself
/// (pools, claims): wakes it on every event but its deletion (a deleted
/// object has nothing left to reconcile; its children go by GC). The
/// controllers have no watches of their own; this is how they learn of a
/// new or changed object.
pub(super) fn self_trigger<K>(tx: mpsc::UnboundedSender<ObjectRef<K>>) -> impl Fn(&K, bool)
where
    K: kube::Resource,
    K::DynamicType: Default,
{
    move |object: &K, deleted: bool| {
        if !deleted {
            // A step of the bench's breakdown (only a claim carries the
            // admission stamp it needs; off unless `timeline` is on).
            let name = object.meta().name.as_deref().unwrap_or_default();
            super::timeline(object, name, "claim: watch event applied");
            let _ = tx.unbounded_send(ObjectRef::from_obj(object));
        }
    }
}

/// The caches [`template_trigger`] reads.
pub(super) struct TemplateUsers {
    pub(super) pools: Store<SandboxWarmPool>,
    pub(super) claims: Store<SandboxClaim>,
}

/// The template cache's trigger: wakes the pools of the namespace that use
/// the template, read from the pool cache; when the template is made (or
/// changed), the claims of its name that said `TemplateNotFound` (they
/// wait for this event, not by asking the API server again and again);
/// and, when the template is deleted, the claims of that template: in
/// per-template mode the template's
/// NetworkPolicy goes with it, and each such claim then makes a policy of
/// its own.
pub(super) fn template_trigger(
    users: TemplateUsers,
    pool_tx: mpsc::UnboundedSender<ObjectRef<SandboxWarmPool>>,
    claim_tx: mpsc::UnboundedSender<ObjectRef<SandboxClaim>>,
) -> impl Fn(&SandboxTemplate, bool) {
    let TemplateUsers { pools, claims } = users;
    move |template: &SandboxTemplate, deleted: bool| {
        let namespace = template.namespace();
        let name = template.name_any();
        for pool in pools
            .state()
            .iter()
            .filter(|p| p.namespace() == namespace && p.spec.sandbox_template_ref.name == name)
        {
            let _ = pool_tx.unbounded_send(ObjectRef::from_obj(pool.as_ref()));
        }
        if !deleted {
            for claim in claims.state().iter().filter(|c| {
                c.namespace() == namespace
                    && c.spec.sandbox_template_ref.name == name
                    && super::claim::waits_for_its_template(c)
            }) {
                let _ = claim_tx.unbounded_send(ObjectRef::from_obj(claim.as_ref()));
            }
            return;
        }
        // Found by the template their claim names (immutable), never by a
        // Sandbox's template label, which its user may edit (found by
        // review: a tenant who removed it kept its claim from being woken).
        for claim in claims
            .state()
            .iter()
            .filter(|c| c.namespace() == namespace && c.spec.sandbox_template_ref.name == name)
        {
            let _ = claim_tx.unbounded_send(ObjectRef::from_obj(claim.as_ref()));
        }
    }
}

/// The Service cache's trigger: wakes the Sandbox or claim that owns the
/// Service (the claim creates it on the warm path, the Sandbox on the cold
/// one); either puts a deleted Service back. A Service none of them owns
/// wakes the Sandbox of its name instead, which may be waiting for that
/// foreign Service to go (its status says NameConflict meanwhile), and,
/// when deleted, the claim of its name, which waits for it before taking
/// anything (see `claim::serve`); the Services the operator made (every one
/// on the warm path) wake nothing more.
pub(super) fn service_trigger(
    sandbox_tx: mpsc::UnboundedSender<ObjectRef<Sandbox>>,
    claim_tx: mpsc::UnboundedSender<ObjectRef<SandboxClaim>>,
) -> impl Fn(&Service, bool) {
    move |service: &Service, deleted: bool| {
        let namespace = service.namespace().unwrap_or_default();
        let ours = |kind: &str| kind == "Sandbox" || kind == "SandboxClaim";
        if !service.owner_references().iter().any(|o| ours(&o.kind)) {
            let _ =
                sandbox_tx.unbounded_send(ObjectRef::new(&service.name_any()).within(&namespace));
            if deleted {
                let _ =
                    claim_tx.unbounded_send(ObjectRef::new(&service.name_any()).within(&namespace));
            }
        }
        for owner in service.owner_references() {
            match owner.kind.as_str() {
                "Sandbox" => {
                    let _ =
                        sandbox_tx.unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
                }
                "SandboxClaim" => {
                    let _ = claim_tx.unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
                }
                _ => {}
            }
        }
    }
}

/// The Sandbox cache's trigger: keeps the named-Pod index up to date, then
/// wakes the Sandbox itself (unless deleted) and the claim that controls it.
pub(super) fn sandbox_trigger(
    named: Arc<NamedPods>,
    sandbox_tx: mpsc::UnboundedSender<ObjectRef<Sandbox>>,
    claim_tx: mpsc::UnboundedSender<ObjectRef<SandboxClaim>>,
) -> impl Fn(&Sandbox, bool) {
    move |sandbox: &Sandbox, deleted: bool| {
        if deleted {
            named.deleted(sandbox);
        } else {
            named.applied(sandbox);
        }
        if !deleted {
            let _ = sandbox_tx.unbounded_send(ObjectRef::from_obj(sandbox));
        }
        let namespace = sandbox.namespace().unwrap_or_default();
        for owner in sandbox
            .owner_references()
            .iter()
            .filter(|o| o.controller == Some(true) && o.kind == "SandboxClaim")
        {
            let _ = claim_tx.unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::POD_NAME_ANNOTATION;
    use crate::controller::test_pod::{controller, named};

    /// What a channel has received so far, by name.
    pub(super) fn received<K>(rx: &mut mpsc::UnboundedReceiver<ObjectRef<K>>) -> Vec<String>
    where
        K: kube::Resource,
        K::DynamicType: Default,
    {
        let mut out = Vec::new();
        while let Ok(r) = rx.try_recv() {
            out.push(r.name);
        }
        out
    }

    /// A Service the operator's kinds do not own wakes the Sandbox of its
    /// name; deleted, the claim of its name too (it waited for the name).
    /// One a claim owns wakes that claim only.
    #[test]
    fn a_services_event_wakes_its_owner_or_the_objects_of_its_name() {
        let (sandbox_tx, mut sandboxes) = mpsc::unbounded();
        let (claim_tx, mut claims) = mpsc::unbounded();
        let trigger = service_trigger(sandbox_tx, claim_tx);
        let mut ownerless: Service = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "c", "namespace": "ns"}}),
        )
        .unwrap();
        trigger(&ownerless, false);
        assert_eq!(received(&mut sandboxes), ["c"]);
        assert!(received(&mut claims).is_empty());
        trigger(&ownerless, true);
        assert_eq!(received(&mut sandboxes), ["c"]);
        assert_eq!(received(&mut claims), ["c"]);
        ownerless.metadata.owner_references = Some(vec![controller("SandboxClaim", "d", "uid-d")]);
        trigger(&ownerless, true);
        assert!(received(&mut sandboxes).is_empty());
        assert_eq!(received(&mut claims), ["d"]);
    }

    #[test]
    fn a_named_pod_s_event_wakes_the_sandbox_and_the_claim_that_named_it() {
        let (index, named_pods) = (
            Arc::new(PodIndex::default()),
            Arc::new(NamedPods::default()),
        );
        let (pool_tx, _pools) = mpsc::unbounded();
        let (sandbox_tx, mut sandboxes) = mpsc::unbounded();
        let (claim_tx, mut claims) = mpsc::unbounded();
        // The claim's Sandbox names p1 (its create is seen first).
        let mut sandbox: Sandbox = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s1", "namespace": "ns",
                "annotations": {POD_NAME_ANNOTATION: "p1"}},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap();
        sandbox.metadata.owner_references = Some(vec![controller("SandboxClaim", "c1", "uid-c1")]);
        sandbox_trigger(
            Arc::clone(&named_pods),
            sandbox_tx.clone(),
            claim_tx.clone(),
        )(&sandbox, false);
        assert_eq!(received(&mut sandboxes), ["s1"]);
        assert_eq!(received(&mut claims), ["c1"]);
        // p1 now carries nothing that leads back to them (say, another
        // claim's labels and owner): its event still wakes both.
        let mut pod = named("p1", "7");
        pod.metadata.owner_references = Some(vec![controller("SandboxClaim", "other", "uid-o")]);
        let on_pod = pod_trigger(
            index,
            Arc::clone(&named_pods),
            Arc::default(),
            pool_tx,
            sandbox_tx,
            claim_tx,
        );
        on_pod(&pod, false);
        assert_eq!(received(&mut sandboxes), ["s1"]);
        assert_eq!(received(&mut claims), ["c1"]);
        // Once the claim holds it (its steal), the Pod's own labels and
        // controller lead to them: no second wake from the index.
        let mut held = named("p1", "8");
        held.metadata.owner_references = Some(vec![controller("SandboxClaim", "c1", "uid-c1")]);
        on_pod(&held, false);
        assert!(received(&mut claims).is_empty());
        // Another Pod wakes neither.
        on_pod(&named("p2", "1"), false);
        assert!(received(&mut sandboxes).is_empty());
        assert!(received(&mut claims).is_empty());
        // Once the Sandbox is gone, p1's events lead nowhere.
        sandbox_trigger(named_pods, mpsc::unbounded().0, mpsc::unbounded().0)(&sandbox, true);
        on_pod(&pod, true);
        assert!(received(&mut sandboxes).is_empty());
        assert!(received(&mut claims).is_empty());
    }

    /// A member of pool `pl` (uid `uid-pl`) in `ns`, Ready or not.
    fn pool_member(name: &str, version: &str, ready: bool) -> Pod {
        let mut pod = named(name, version);
        pod.metadata.labels = Some(
            [
                (crate::api::POOL_LABEL.to_string(), "pl".to_string()),
                (
                    crate::api::TEMPLATE_HASH_LABEL.to_string(),
                    "h1".to_string(),
                ),
            ]
            .into(),
        );
        pod.metadata.owner_references = Some(vec![controller("SandboxWarmPool", "pl", "uid-pl")]);
        if ready {
            pod.status = Some(crate::controller::test_pod::ready_status());
        }
        pod
    }

    /// A Pod trigger with fresh indexes, its expectations and the pools it
    /// wakes.
    struct PoolWakes<F> {
        expectations: Arc<Expectations>,
        on_pod: F,
        pools: mpsc::UnboundedReceiver<ObjectRef<SandboxWarmPool>>,
    }

    fn pool_wakes() -> PoolWakes<impl Fn(&Pod, bool)> {
        let expectations = Arc::new(Expectations::default());
        let (pool_tx, pools) = mpsc::unbounded();
        let on_pod = pod_trigger(
            Arc::new(PodIndex::default()),
            Arc::new(NamedPods::default()),
            Arc::clone(&expectations),
            pool_tx,
            mpsc::unbounded().0,
            mpsc::unbounded().0,
        );
        PoolWakes {
            expectations,
            on_pod,
            pools,
        }
    }

    #[test]
    fn the_first_sight_of_a_pending_create_does_not_wake_its_pool() {
        let PoolWakes {
            expectations,
            on_pod,
            mut pools,
        } = pool_wakes();
        // A Pod the pool made and has on record: its first sight wakes the
        // pool while the pool may pick Pods, not once it decided from counts.
        expectations.created("ns/pl", "picky");
        on_pod(&pool_member("picky", "0", false), false);
        assert_eq!(received(&mut pools), ["pl"]);
        expectations.decided_from_counts("ns/pl", "h1", true);
        expectations.created("ns/pl", "made");
        on_pod(&pool_member("made", "1", false), false);
        assert!(received(&mut pools).is_empty());
        // Its readiness is news: the pool wakes.
        on_pod(&pool_member("made", "2", true), false);
        assert_eq!(received(&mut pools), ["pl"]);
        // A member the pool has no create on record for wakes it at once,
        // and so does a recorded one that is already Ready when first seen.
        on_pod(&pool_member("stranger", "3", false), false);
        assert_eq!(received(&mut pools), ["pl"]);
        expectations.created("ns/pl", "quick");
        on_pod(&pool_member("quick", "4", true), false);
        assert_eq!(received(&mut pools), ["pl"]);
        // A recorded create of another pool of the same name elsewhere, a
        // later event that is not the first sight, or a deletion, is never
        // skipped.
        expectations.created("other/pl", "gone");
        on_pod(&pool_member("gone", "5", false), false);
        assert_eq!(received(&mut pools), ["pl"]);
        expectations.created("ns/pl", "gone");
        let mut terminating = pool_member("gone", "6", false);
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        on_pod(&terminating, false);
        assert_eq!(received(&mut pools), ["pl"]);
        on_pod(&pool_member("gone", "7", false), true);
        assert_eq!(received(&mut pools), ["pl"]);
        // A create made from an older template is outdated: its first
        // sight wakes the pool, which replaces it.
        expectations.created("ns/pl", "old");
        let mut old = pool_member("old", "9", false);
        old.labels_mut()
            .insert(crate::api::TEMPLATE_HASH_LABEL.into(), "h0".into());
        on_pod(&old, false);
        assert_eq!(received(&mut pools), ["pl"]);
        // Once the pool may pick Pods again, even a quiet create wakes it.
        expectations.decided_from_counts("ns/pl", "h1", false);
        expectations.created("ns/pl", "late");
        on_pod(&pool_member("late", "8", false), false);
        assert_eq!(received(&mut pools), ["pl"]);
    }

    #[test]
    fn a_quiet_create_deleted_unseen_by_any_reconcile_is_no_longer_pending() {
        let PoolWakes {
            expectations,
            on_pod,
            mut pools,
        } = pool_wakes();
        expectations.decided_from_counts("ns/pl", "h1", true);
        expectations.created("ns/pl", "made");
        on_pod(&pool_member("made", "1", false), false);
        assert!(received(&mut pools).is_empty());
        assert_eq!(expectations.settle("ns/pl", &Default::default()).0, 1);
        // Deleted at once (never scheduled): the pool wakes and no longer
        // counts it as a create on its way.
        on_pod(&pool_member("made", "2", false), true);
        assert_eq!(received(&mut pools), ["pl"]);
        assert_eq!(expectations.settle("ns/pl", &Default::default()).0, 0);
    }
}
