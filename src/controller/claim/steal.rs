//! Taking over an idle warm Pod for a claim.
//!
//! Expected flow: the candidates come from the Pod cache (only Pods whose
//! controller is the live pool named by their pool label, Ready, of the
//! template's current hash; when none is Ready, the pool's Pods still
//! starting, oldest first), in a per-claim order; the first one is
//! reserved in memory before anything is written, so the Sandbox can name
//! it in the same round trip as the steal. The steal is ONE write
//! conditioned on the resourceVersion read ([`steal`]).
//!
//! Guarantees: of any number of concurrent steals of one Pod (this process
//! or another), at most one wins; a loser never retries the same stale
//! copy; only a failed `test` operation (or a Pod that is gone) counts as a
//! lost race, any other refusal is an error.
//!
//! A failed `test` is followed by one GET of the Pod. When the fresh copy is
//! still the idle pool Pod that was chosen (same controlling pool uid, same
//! pool, template and hash labels, no claim label, Ready, not terminating:
//! [`still_idle`]), only something like its status changed (a kubelet
//! update, a probe) and the steal is tried once more with the fresh
//! resourceVersion; otherwise the claim moves on to the next candidate.
//! Without that, a status update landing between the cache read and the
//! steal sends a claim cold while the Pod is still free. When the fresh
//! copy shows the Pod stolen for this very claim ([`stolen_for`]: another
//! process serving the same claim during a split brain won it), it is the
//! claim's Pod and is used as such ([`Taken::by_this_call`] false: this
//! process never gives it back), so the two processes agree on one Pod
//! instead of one of them moving on to a second Pod or to a cold start.
//! That holds only for the Pod the claim's Sandbox names (or will name):
//! the process that stole any other Pod gives it back when it finds the
//! Sandbox naming another, and using it here would point the Sandbox, and
//! the claim's Ready, at a Pod being deleted. Such a Pod counts as lost.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use tracing::debug;

use super::desired::PoolChoice;
use crate::api::{
    CLAIM_LABEL, CLAIM_UID_LABEL, POOL_LABEL, SandboxClaim, SandboxTemplate, SandboxWarmPool,
    TEMPLATE_HASH_LABEL, TEMPLATE_LABEL,
};
use crate::controller::pod_patch::{Conditioned, patch_if_unchanged};
use crate::controller::takeover::{
    Criteria, is_candidate, is_starting_candidate, pod_key, select_candidates, select_starting,
    start_went_wrong, steal_patch,
};
use crate::controller::warmpool::pool_cap;
use crate::controller::{
    Context, Error, Result, controller_ref, controller_uid, is_terminating, pod_has_ended,
    pod_is_ready,
};

/// How many candidates one reconcile tries before going cold.
pub const MAX_STEAL_ATTEMPTS: usize = 8;

/// Outcome of one takeover attempt.
#[derive(Debug)]
pub enum StealOutcome {
    /// The Pod is now owned by the claim.
    Won(Box<Pod>),
    /// Someone else changed the Pod first (failed `test`, or gone); not an
    /// error. Carries the Pod as re-read after a failed `test`, if it exists.
    Lost(Option<Box<Pod>>),
}

/// Takes over an idle pool Pod for a claim.
///
/// Guarantee: exactly ONE write, a JSON patch whose first operation tests the
/// resourceVersion that was read ([`steal_patch`]). If any other writer
/// touched the Pod since (another claim, another controller process, the
/// pool scaling down), the API server rejects the patch and nothing changes.
pub async fn steal(ctx: &Context, pod: &Pod, claim: &SandboxClaim) -> Result<StealOutcome> {
    let namespace = pod.namespace().ok_or(Error::Incomplete("pod namespace"))?;
    let pool = pod.labels().get(POOL_LABEL).cloned().unwrap_or_default();
    let claim_uid = claim.uid().ok_or(Error::Incomplete("claim uid"))?;
    let patch = steal_patch(pod, &claim.name_any(), &claim_uid, controller_ref(claim)?)
        .ok_or(Error::Incomplete("pod resourceVersion or pool label"))?;
    ctx.metrics
        .steal_attempts
        .with_label_values(&[&namespace, &pool])
        .inc();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    Ok(match patch_if_unchanged(&api, pod, patch, "steal").await? {
        Conditioned::Written(stolen) => StealOutcome::Won(Box::new(stolen)),
        Conditioned::Lost(fresh) => lost(ctx, &namespace, &pool, pod, fresh),
    })
}

/// Counts a lost steal and returns its outcome.
fn lost(ctx: &Context, namespace: &str, pool: &str, pod: &Pod, fresh: Option<Pod>) -> StealOutcome {
    ctx.metrics
        .steal_conflicts
        .with_label_values(&[namespace, pool])
        .inc();
    debug!(pod = %pod.name_any(), still_idle = fresh.as_ref().is_some_and(|f| still_idle(pod, f)), "lost the race for a warm Pod");
    StealOutcome::Lost(fresh.map(Box::new))
}

/// Whether `pod` was stolen for the claim `claim_uid`: it carries the
/// claim's uid label and its controller is the claim (a steal writes both in
/// one conditioned patch) or the claim's Sandbox `sandbox_uid`, when known
/// (its adoption followed), and it is not terminating. Pure.
pub fn stolen_for(pod: &Pod, claim_uid: &str, sandbox_uid: Option<&str>) -> bool {
    let controller = controller_uid(&pod.metadata);
    !claim_uid.is_empty()
        && controller.is_some()
        && (controller == Some(claim_uid) || controller == sandbox_uid)
        && pod.labels().get(CLAIM_UID_LABEL).map(String::as_str) == Some(claim_uid)
        && !is_terminating(pod)
}

/// Whether `fresh`, a re-read of the candidate `cached` after a failed
/// steal, is still that idle pool Pod: the same object (uid), controlled by
/// the same pool (uid), with the same pool, template and hash labels, no
/// claim label, not terminating, and Ready; or, when `cached` was a Pod
/// still starting ([`crate::controller::takeover::is_starting_candidate`]),
/// Ready or still starting without a sign its start went wrong (a starting
/// Pod's status changes often, and each change fails a steal's
/// precondition). `cached` passed one of the two candidate checks, so this
/// keeps every condition that made it a candidate. Pure.
pub fn still_idle(cached: &Pod, fresh: &Pod) -> bool {
    let controller = |p: &Pod| {
        p.owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| (o.kind.clone(), o.uid.clone()))
    };
    let label = |p: &Pod, key: &str| p.labels().get(key).cloned();
    cached.uid().is_some()
        && cached.uid() == fresh.uid()
        && controller(cached).is_some()
        && controller(cached) == controller(fresh)
        && [POOL_LABEL, TEMPLATE_LABEL, TEMPLATE_HASH_LABEL]
            .iter()
            .all(|key| label(cached, key).is_some() && label(cached, key) == label(fresh, key))
        && !fresh.labels().contains_key(CLAIM_LABEL)
        && !is_terminating(fresh)
        && (pod_is_ready(fresh)
            || (!pod_is_ready(cached) && !pod_has_ended(fresh) && !start_went_wrong(fresh)))
}

/// The uid of each live pool of `namespace` whose template is `template`,
/// by name, from the pool cache: a Pod is a candidate only if its
/// controller is the pool its label names, with this uid. So a Pod is
/// served for the template its pool was made from, whatever its labels say
/// (a relabelled Pod of another template's pool is not a candidate). Pure.
fn pool_uids<'a>(
    pools: impl IntoIterator<Item = &'a SandboxWarmPool>,
    namespace: &str,
    template: &str,
) -> HashMap<String, String> {
    pools
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace)
                && p.meta().deletion_timestamp.is_none()
                && p.spec.sandbox_template_ref.name == template
        })
        .filter_map(|p| Some((p.name_any(), p.uid()?)))
        .collect()
}

/// Calls `decide` with what makes an idle Pod usable for `claim`: its
/// template's current hash (worked out once per template version) and the
/// namespace's live pools.
fn with_criteria<T>(
    ctx: &Context,
    claim: &SandboxClaim,
    namespace: &str,
    template: &SandboxTemplate,
    choice: &PoolChoice,
    decide: impl FnOnce(&Criteria<'_>) -> T,
) -> T {
    let hash = ctx
        .template_facts
        .facts(template, ctx.config.policy.current())
        .hash;
    let claim_uid = claim.uid().unwrap_or_default();
    let pools = ctx.caches.pools.state();
    let template_name = &claim.spec.sandbox_template_ref.name;
    let pool_uids = pool_uids(pools.iter().map(|p| p.as_ref()), namespace, template_name);
    decide(&Criteria {
        namespace,
        template: &claim.spec.sandbox_template_ref.name,
        template_hash: &hash,
        pool: match choice {
            PoolChoice::Named(n) => Some(n.as_str()),
            _ => None,
        },
        pool_uids: &pool_uids,
        spread_key: &claim_uid,
    })
}

/// Whether `pod` (a fresh read, say) is an idle Pod `claim` may steal,
/// Ready or still starting, reserved in this process or not.
pub fn usable(
    ctx: &Context,
    claim: &SandboxClaim,
    namespace: &str,
    template: &SandboxTemplate,
    choice: &PoolChoice,
    pod: &Pod,
) -> bool {
    with_criteria(ctx, claim, namespace, template, choice, |criteria| {
        is_candidate(pod, criteria) || is_starting_candidate(pod, criteria)
    })
}

/// The usable idle Pods for a claim, best first (nothing is written).
pub fn candidates(
    ctx: &Context,
    claim: &SandboxClaim,
    namespace: &str,
    template: &SandboxTemplate,
    choice: &PoolChoice,
) -> Vec<Arc<Pod>> {
    with_criteria(ctx, claim, namespace, template, choice, |criteria| {
        near_first(ctx, claim, namespace, criteria)
    })
}

/// The usable Pods near the claim on the index's ring (O(limit), not
/// O(pool)); the whole pool only when too few of those are usable.
fn near_first(
    ctx: &Context,
    claim: &SandboxClaim,
    namespace: &str,
    criteria: &Criteria<'_>,
) -> Vec<Arc<Pod>> {
    let (hash, claim_uid) = (criteria.template_hash, criteria.spread_key);
    let template = &claim.spec.sandbox_template_ref.name;
    let select = |refs: Vec<kube::runtime::reflector::ObjectRef<Pod>>| {
        let pods: Vec<Arc<Pod>> = refs.iter().filter_map(|r| ctx.caches.pods.get(r)).collect();
        select_candidates(&pods, criteria, &ctx.reservations)
    };
    let (near, total) =
        ctx.caches
            .index
            .idle_near(namespace, template, hash, claim_uid, NEAR_CANDIDATES);
    let found = select(near);
    if found.len() >= MAX_STEAL_ATTEMPTS || total <= NEAR_CANDIDATES {
        return found_or_starting(ctx, namespace, template, criteria, found);
    }
    let found = select(ctx.caches.index.idle(namespace, template, hash));
    found_or_starting(ctx, namespace, template, criteria, found)
}

/// `found` (the Ready candidates) when there is one; else the pool's Pods
/// still starting, oldest first (see [`select_starting`]): a claim that
/// finds no Ready idle Pod takes the one a refill started before it came,
/// rather than starting one more from nothing. Reads the whole pool, but
/// only when it has run dry.
fn found_or_starting(
    ctx: &Context,
    namespace: &str,
    template: &str,
    criteria: &Criteria<'_>,
    found: Vec<Arc<Pod>>,
) -> Vec<Arc<Pod>> {
    if !found.is_empty() {
        return found;
    }
    let refs = ctx
        .caches
        .index
        .idle(namespace, template, criteria.template_hash);
    let pods: Vec<Arc<Pod>> = refs.iter().filter_map(|r| ctx.caches.pods.get(r)).collect();
    select_starting(&pods, criteria, &ctx.reservations)
}

/// Idle Pods read around a claim's point on the index's ring before the
/// whole pool is read.
const NEAR_CANDIDATES: usize = 64;

/// Reserves the first free candidate in memory; returns it and the rest.
pub fn reserve_first(
    ctx: &Context,
    candidates: Vec<Arc<Pod>>,
) -> (Option<Arc<Pod>>, Vec<Arc<Pod>>) {
    let mut rest = candidates.into_iter();
    for candidate in rest.by_ref() {
        if ctx.reservations.try_reserve(&pod_key(&candidate)) {
            return (Some(candidate), rest.collect());
        }
    }
    (None, Vec::new())
}

/// A Pod the claim now controls, as the API server last showed it.
#[derive(Debug)]
pub struct Taken {
    /// The Pod.
    pub pod: Pod,
    /// Whether this call's own patch took it (false: another process
    /// serving the same claim did, and only it may give the Pod back).
    pub by_this_call: bool,
}

/// Steals `first` (already reserved) or, when that race is lost, the next
/// free candidate, up to [`MAX_STEAL_ATTEMPTS`]. Returns the Pod the claim
/// now controls, as the API server answered. `sandbox_uid`: the claim's
/// Sandbox, when it exists already (a Pod it adopted is the claim's too).
/// `named`: the Pod the Sandbox names or is being created naming, the only
/// one another process's steal for this claim may hand over (see the
/// module docs).
pub async fn take_over(
    ctx: &Context,
    claim: &SandboxClaim,
    first: Arc<Pod>,
    rest: Vec<Arc<Pod>>,
    sandbox_uid: Option<&str>,
    named: Option<&str>,
) -> Result<Option<Taken>> {
    let claim_uid = claim.uid().unwrap_or_default();
    let mut next = Some(first);
    let mut rest = rest.into_iter();
    // Each candidate gets one more try with its fresh copy (see the module
    // docs); every try counts against the bound.
    let mut retried = false;
    for _ in 0..MAX_STEAL_ATTEMPTS {
        let Some(candidate) = next.take() else { break };
        let key = pod_key(&candidate);
        match steal(ctx, &candidate, claim).await {
            Ok(StealOutcome::Won(pod)) => {
                ctx.reservations.record_steal(&claim_uid, &pod.name_any());
                crate::controller::timeline(claim, &claim.name_any(), "claim: Pod stolen");
                return Ok(Some(Taken {
                    pod: *pod,
                    by_this_call: true,
                }));
            }
            Ok(StealOutcome::Lost(Some(fresh)))
                if stolen_for(&fresh, &claim_uid, sandbox_uid)
                    && (named == Some(fresh.name_any().as_str())
                        || (sandbox_uid.is_some()
                            && controller_uid(&fresh.metadata) == sandbox_uid)) =>
            {
                // Another process serving the same claim (split brain) won
                // the Pod the Sandbox names for it (or the Sandbox already
                // adopted it): it is this claim's Pod, not a lost race.
                ctx.reservations.record_steal(&claim_uid, &fresh.name_any());
                return Ok(Some(Taken {
                    pod: *fresh,
                    by_this_call: false,
                }));
            }
            Ok(StealOutcome::Lost(Some(fresh))) if !retried && still_idle(&candidate, &fresh) => {
                // Still reserved by this claim: try the same Pod once more.
                retried = true;
                next = Some(Arc::new(*fresh));
                continue;
            }
            Ok(StealOutcome::Lost(_)) => ctx.reservations.release(&key),
            Err(e) => {
                ctx.reservations.release(&key);
                return Err(e);
            }
        }
        retried = false;
        next = rest.find(|c| ctx.reservations.try_reserve(&pod_key(c)));
    }
    if let Some(unused) = next {
        ctx.reservations.release(&pod_key(&unused));
    }
    Ok(None)
}

/// Whether the namespace has a pool that this claim could have used and
/// that keeps idle Pods, so that a claim finding none Ready there is a miss
/// of the pool (counted in `pool_exhausted_total`, told by the
/// PoolExhausted Event). See [`a_pool_keeps_pods`].
pub fn has_pool(ctx: &Context, namespace: &str, template: &str, choice: &PoolChoice) -> bool {
    let pools = ctx.caches.pools.state();
    a_pool_keeps_pods(
        pools.iter().map(|p| p.as_ref()),
        namespace,
        template,
        choice,
        pool_cap(ctx),
    )
}

/// Whether one of `pools` is a live pool of `template` in `namespace` that
/// `choice` allows and whose size ([`pool_size`], under the operator's cap
/// `cap`) is above zero. A pool scaled to zero, or being deleted, keeps no
/// idle Pod by design: its template's claims are cold as if it had no
/// pool, and counting them raised SandboxWarmPoolExhausted for a pool
/// doing what it was told (found by review). Pure.
fn a_pool_keeps_pods<'a>(
    pools: impl IntoIterator<Item = &'a SandboxWarmPool>,
    namespace: &str,
    template: &str,
    choice: &PoolChoice,
    cap: i32,
) -> bool {
    pools.into_iter().any(|p| {
        p.namespace().as_deref() == Some(namespace)
            && p.meta().deletion_timestamp.is_none()
            && p.spec.sandbox_template_ref.name == template
            && match choice {
                PoolChoice::Named(n) => p.name_any() == *n,
                _ => true,
            }
            && pool_size(p, cap) > 0
    })
}

/// The idle Pods `pool` keeps now, as its controller decides it
/// (`status.desiredReplicas`, see
/// [`crate::controller::warmpool::autoscale::decide`]): `spec.replicas`
/// under `cap`; with `spec.autoscaling`, the size the controller last
/// decided within the bounds (`minReplicas` before its first decision),
/// unless the bounds are inverted, when the controller keeps
/// `spec.replicas`. A fixed size is read from the spec, so a pool scaled to
/// zero counts as such at once, not after its next status write. Pure.
fn pool_size(pool: &SandboxWarmPool, cap: i32) -> i32 {
    let fixed = pool.spec.replicas.min(cap).max(0);
    let Some(autoscaling) = &pool.spec.autoscaling else {
        return fixed;
    };
    let (min, max) = (
        autoscaling.min_replicas.max(0),
        autoscaling.max_replicas.max(0),
    );
    if min > max {
        return fixed;
    }
    pool.status
        .as_ref()
        .and_then(|s| s.desired_replicas)
        .unwrap_or(min)
        .clamp(min, max)
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::{PoolChoice, SandboxWarmPool, a_pool_keeps_pods, pool_uids, still_idle};
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn warm_pool(namespace: &str, name: &str, template: &str, deleted: bool) -> SandboxWarmPool {
        let mut pool = json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("{name}-uid")},
            "spec": {"replicas": 1, "sandboxTemplateRef": {"name": template}}
        });
        if deleted {
            pool["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(pool).unwrap()
    }

    /// Pool `name` of template `tmpl` in `ns`, with `spec` merged over
    /// one replica and `status` as given.
    fn sized_pool(
        name: &str,
        spec: serde_json::Value,
        status: serde_json::Value,
    ) -> SandboxWarmPool {
        let mut pool = serde_json::to_value(warm_pool("ns", name, "tmpl", false)).unwrap();
        for (key, value) in spec.as_object().unwrap() {
            pool["spec"][key] = value.clone();
        }
        pool["status"] = status;
        serde_json::from_value(pool).unwrap()
    }

    /// Whether a claim of template `tmpl` in `ns` that found no Ready idle
    /// Pod counts as a miss of `pools` (the operator's cap 1000).
    fn exhausts(pools: &[SandboxWarmPool], choice: &PoolChoice) -> bool {
        a_pool_keeps_pods(pools.iter(), "ns", "tmpl", choice, 1000)
    }

    #[test]
    fn a_pool_scaled_to_zero_is_not_exhausted_by_its_templates_claims() {
        let zero = sized_pool("zero", json!({"replicas": 0}), json!(null));
        let two = sized_pool("two", json!({"replicas": 2}), json!(null));
        assert!(!exhausts(std::slice::from_ref(&zero), &PoolChoice::Any));
        assert!(exhausts(&[zero.clone(), two.clone()], &PoolChoice::Any));
        // A claim that names the empty pool may use only that one.
        assert!(!exhausts(
            &[zero.clone(), two.clone()],
            &PoolChoice::Named("zero".into())
        ));
        assert!(exhausts(&[zero, two], &PoolChoice::Named("two".into())));
        // Capped to zero by the operator: keeps none either.
        let capped = sized_pool("capped", json!({"replicas": 5}), json!(null));
        assert!(!a_pool_keeps_pods(
            [&capped],
            "ns",
            "tmpl",
            &PoolChoice::Any,
            0
        ));
    }

    #[test]
    fn an_autoscaled_pool_keeps_the_size_its_controller_decided() {
        let autoscaled = |min: i32, max: i32, status: serde_json::Value| {
            let autoscaling = json!({"minReplicas": min, "maxReplicas": max});
            // spec.replicas is not used while autoscaling is set.
            sized_pool(
                "auto",
                json!({"replicas": 0, "autoscaling": autoscaling}),
                status,
            )
        };
        let decided = |n: i32| json!({"desiredReplicas": n});
        assert!(!exhausts(
            &[autoscaled(0, 10, decided(0))],
            &PoolChoice::Any
        ));
        assert!(exhausts(&[autoscaled(0, 10, decided(3))], &PoolChoice::Any));
        // Nothing decided yet: minReplicas, as the controller starts.
        assert!(!exhausts(
            &[autoscaled(0, 10, json!(null))],
            &PoolChoice::Any
        ));
        assert!(exhausts(
            &[autoscaled(1, 10, json!(null))],
            &PoolChoice::Any
        ));
        // Bounds changed since: the decision within the new ones.
        assert!(!exhausts(&[autoscaled(0, 0, decided(3))], &PoolChoice::Any));
        // minReplicas above maxReplicas: spec.replicas, as the controller does.
        assert!(!exhausts(&[autoscaled(5, 1, decided(3))], &PoolChoice::Any));
    }

    #[test]
    fn only_a_live_pool_of_the_claims_template_and_namespace_is_exhausted() {
        assert!(!exhausts(
            &[warm_pool("ns", "d", "tmpl", true)],
            &PoolChoice::Any
        ));
        assert!(!exhausts(
            &[warm_pool("ns", "o", "other", false)],
            &PoolChoice::Any
        ));
        assert!(!exhausts(
            &[warm_pool("elsewhere", "e", "tmpl", false)],
            &PoolChoice::Any
        ));
        assert!(exhausts(
            &[warm_pool("ns", "a", "tmpl", false)],
            &PoolChoice::Any
        ));
    }

    #[test]
    fn only_live_pools_of_the_claims_template_and_namespace_vouch_for_pods() {
        let pools = [
            warm_pool("ns", "a", "tmpl", false),
            warm_pool("ns", "b", "other", false),
            warm_pool("ns", "c", "tmpl", true),
            warm_pool("elsewhere", "d", "tmpl", false),
        ];
        let uids = pool_uids(pools.iter(), "ns", "tmpl");
        assert_eq!(
            uids,
            [("a".to_string(), "a-uid".to_string())]
                .into_iter()
                .collect()
        );
    }

    /// An idle pool Pod as the pool controller creates it, Ready.
    fn idle() -> serde_json::Value {
        json!({
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "pod-uid", "resourceVersion": "1",
                "labels": {
                    "agents.x-k8s.io/warm-pool": "pool",
                    "agents.x-k8s.io/sandbox-template": "tmpl",
                    "agents.x-k8s.io/template-hash": "h1"
                },
                "ownerReferences": [{
                    "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
                    "name": "pool", "uid": "pool-uid", "controller": true
                }]
            },
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        })
    }

    /// One edit of an idle Pod's JSON.
    type Change = fn(&mut serde_json::Value);

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_status_only_change_keeps_the_pod_a_candidate() {
        let cached = pod(idle());
        let mut fresh = idle();
        fresh["metadata"]["resourceVersion"] = json!("2");
        fresh["status"]["podIP"] = json!("10.0.0.7");
        assert!(still_idle(&cached, &pod(fresh)));
    }

    #[test]
    fn a_starting_pod_stays_a_candidate_until_its_start_goes_wrong() {
        let mut starting = idle();
        starting["status"] =
            json!({"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]});
        let cached = pod(starting.clone());
        let again = |change: Change| {
            let mut fresh = starting.clone();
            fresh["metadata"]["resourceVersion"] = json!("2");
            change(&mut fresh);
            still_idle(&cached, &pod(fresh))
        };
        assert!(again(|_| {}), "still starting");
        assert!(
            again(|v| v["status"] = idle()["status"].clone()),
            "Ready now"
        );
        assert!(!again(|v| v["status"]["phase"] = json!("Failed")), "failed");
        assert!(
            !again(|v| v["status"]["containerStatuses"] = json!([{
                "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 1
            }])),
            "restarted"
        );
        assert!(
            !again(|v| v["metadata"]["labels"]["agents.x-k8s.io/claim"] = json!("other")),
            "taken"
        );
    }

    #[test]
    fn any_change_that_unmakes_a_candidate_moves_on() {
        let cached = pod(idle());
        let changes: [(&str, Change); 8] = [
            ("stolen by a claim", |v| {
                v["metadata"]["labels"]["agents.x-k8s.io/claim"] = json!("other")
            }),
            ("another controller", |v| {
                v["metadata"]["ownerReferences"][0]["uid"] = json!("claim-uid");
                v["metadata"]["ownerReferences"][0]["kind"] = json!("SandboxClaim");
            }),
            ("left the pool", |v| {
                v["metadata"]["labels"]
                    .as_object_mut()
                    .unwrap()
                    .remove("agents.x-k8s.io/warm-pool");
            }),
            ("new template hash", |v| {
                v["metadata"]["labels"]["agents.x-k8s.io/template-hash"] = json!("h2")
            }),
            ("not Ready", |v| {
                v["status"]["conditions"][0]["status"] = json!("False")
            }),
            ("terminating", |v| {
                v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z")
            }),
            ("recreated under the same name", |v| {
                v["metadata"]["uid"] = json!("other-uid")
            }),
            ("no controller", |v| {
                v["metadata"]["ownerReferences"] = json!([])
            }),
        ];
        for (what, change) in changes {
            let mut fresh = idle();
            change(&mut fresh);
            assert!(!still_idle(&cached, &pod(fresh)), "{what}");
        }
    }
}
