//! The hold on a NetworkPolicy whose Pod may outlive its owner.
//!
//! A standalone Sandbox's policy and a cold claim's policy are the only
//! ones covering their Pod, and the Pod is a co-owner of them
//! ([`super::policy_owners`]), so background or orphan deletion of the
//! Sandbox or claim leaves the policy in place while the Pod runs out its
//! grace period. Foreground deletion does not: the garbage collector then
//! deletes the Pod in the foreground too, and a policy whose owners all
//! wait on their dependents is deleted at once. The tenant picks the
//! propagation policy and the Pod's `terminationGracePeriodSeconds`, and
//! code that ignores SIGTERM keeps running until the grace period ends, so
//! without a hold a tenant could lift the deny list (the cloud's instance
//! metadata at 169.254.169.254, say) from their own sandbox for as long as
//! they like by deleting it with `--cascade=foreground`. A pool's policy
//! (the default per-claim mode) is the same for its idle Pods: they go
//! with the pool, whatever the propagation, and so did the policy. A warm
//! claim's Pod is covered by its pool's policy too, but only while the
//! pool lives: with the pool gone, deleting the claim (any propagation)
//! took the claim's policy at once while the Pod ran on.
//!
//! So these policies carry the finalizer [`HOLD_FINALIZER`]: a deleted
//! policy stays (terminating, still in the API, so network plugins keep
//! enforcing it) until the operator has seen that no Pod it covers exists.
//!
//! Guarantees:
//! - the hold is put on a standalone Sandbox's, a pool's and a claim's
//!   policy when it is made (the warm path's round one included: it travels
//!   in the create, so no request is added), and on any policy the moment a
//!   Pod is made its co-owner (the same strategic merge patch as before); a
//!   pool's or claim's policy made without it (by an older version, or
//!   before the policy cache had listed) wakes its owner, which adds it with
//!   one patch. Only once the policy cache has listed, since nothing could
//!   lift it otherwise;
//! - a Pod counts as covered while its object exists (grace period
//!   included) and it is named among the policy's owners by uid, or is a
//!   member of the Sandbox, pool or claim that controls the policy
//!   ([`Members`]): controlled by the Sandbox (a standalone Sandbox's Pod
//!   before the co-owner patch) or pool (its idle Pods; a Pod a claim took
//!   is covered by the claim's policy, not the pool's hold), or labelled
//!   with the claim's uid (a Pod stolen for the claim: the steal writes the
//!   label with the claim as controller, in one conditioned write; a cold
//!   Pod of the claim's Sandbox: created with it, from the Sandbox's
//!   controller reference to the claim). These are written only by the operator
//!   (the ownership guard); name labels, which a later object of the same
//!   name shares, do not count, so a new Sandbox or claim of the same name
//!   never keeps an old policy held;
//! - the hold is lifted only after the policy has been seen terminating for
//!   [`SETTLE`], and only when neither the Pod cache nor the API server (a
//!   GET per Pod owner; one LIST of the members' Pods, by the Sandbox or
//!   pool label, or the claim-uid label) shows a covered Pod. The removal
//!   is a JSON patch
//!   conditioned on the resourceVersion read, so a policy that changed
//!   meanwhile is looked at again. When the API server shows a covered Pod
//!   the cache lacks, or fails, it is asked again after [`API_RECHECK`].
//!   The cache is read through the Pod owners' names and the indexes by
//!   controller uid and claim uid, so a held policy costs lookups, not a
//!   scan; the API server is asked about [`ASKED_AT_ONCE`] policies at a
//!   time (a deleted claim costs one LIST and one patch, off any claim's
//!   path);
//! - so a policy someone deletes while its Pod runs stays, terminating and
//!   enforced, until that Pod is gone, whoever deletes what and in which
//!   order; it then goes, and its Sandbox, claim or pool, if it lives,
//!   makes it again (the deletion wakes it). Its spec can still be replaced
//!   meanwhile. The operator's own deletion (a policy file that wants none)
//!   lifts the hold first;
//! - looked at every [`TICK`]; nothing is sent while no policy of the
//!   operator's is terminating;
//! - `sandbox_operator_tracked_entries{table="policy_holds"}` counts the
//!   policies held at scrape time.
//!
//! Limits: with the operator stopped, a held policy stays terminating
//! until someone removes the finalizer (the README's "Uninstall" says
//! how); a cold claim's Pod started by an older version (without the
//! claim-uid label) and made a co-owner only after a deletion started is
//! not covered; a held pool policy goes once no Pod the pool controls
//! is left (all taken by claims, say) and is made again at the pool's next
//! reconcile, which a refill already in flight does not wait for.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::{
    Context, Result, controller_uid, is_conflict, is_not_found, is_terminating, is_unprocessable,
    kube_err,
};
use crate::api::{CLAIM_UID_LABEL, FIELD_MANAGER, POOL_LABEL, SANDBOX_LABEL};

/// The finalizer that keeps a deleted policy until no Pod it covers exists.
pub const HOLD_FINALIZER: &str = "agents.x-k8s.io/until-pods-gone";

/// How long a policy is seen terminating before its hold may be lifted: a
/// Pod create already in flight when the deletion started shows up in the
/// cache within it.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Time between two looks at the terminating policies.
pub const TICK: Duration = Duration::from_secs(1);

/// Whether `policy` carries the hold.
pub fn has_hold(policy: &NetworkPolicy) -> bool {
    policy.finalizers().iter().any(|f| f == HOLD_FINALIZER)
}

/// `policy` (about to be made) with the hold, when `listed` (the policy
/// cache has listed, so something can lift it). Pure.
pub fn with_hold(mut policy: NetworkPolicy, listed: bool) -> NetworkPolicy {
    if listed && !has_hold(&policy) {
        policy.finalizers_mut().push(HOLD_FINALIZER.into());
    }
    policy
}

/// Whether `policy` is deleted and waits for the operator to lift its hold.
pub fn is_held(policy: &NetworkPolicy) -> bool {
    is_terminating(policy) && has_hold(policy)
}

/// Whether `pod` is one `policy` protects (see the module docs): named
/// among its owners by uid, or one of the members of the Sandbox, pool or
/// claim that controls the policy ([`Members`]). Owner references and the
/// claim-uid label are written only by the operator (the ownership guard);
/// name labels, which a later object of the same name shares, do not
/// count. Pure.
pub fn covers(policy: &NetworkPolicy, pod: &Pod) -> bool {
    if pod.metadata.namespace != policy.metadata.namespace {
        return false;
    }
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return false;
    };
    let named = policy
        .owner_references()
        .iter()
        .any(|o| is_pod_ref(o) && o.uid == uid);
    named || members(policy).is_some_and(|m| m.include(&pod.metadata))
}

/// Whether `owner` names a Pod (core `v1`; a `Pod` of another group is
/// not one).
pub(crate) fn is_pod_ref(
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> bool {
    owner.kind == "Pod" && owner.api_version == "v1"
}

/// Whether the Pod cache shows a Pod `policy` covers, looked up by its Pod
/// owners' names and through the index by its controller's uid (no scan).
fn cache_covers(ctx: &Context, policy: &NetworkPolicy) -> bool {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    let by_owner = policy
        .owner_references()
        .iter()
        .filter(|o| is_pod_ref(o))
        .filter_map(|o| {
            ctx.caches
                .pods
                .get(&ObjectRef::new(&o.name).within(namespace))
        })
        .any(|pod| covers(policy, &pod));
    by_owner
        || members(policy).is_some_and(|m| {
            let index = &ctx.caches.index;
            match m {
                Members::ControlledBy { uid, .. } => index.controlled_by(uid),
                Members::StolenFor { uid, .. } => index.labelled_for_claim(uid),
            }
            .iter()
            .filter_map(|r| ctx.caches.pods.get(r))
            .any(|pod| covers(policy, &pod))
        })
}

/// The Pods a policy covers through its controller, besides the Pods
/// named among its owners.
#[derive(Debug, PartialEq)]
enum Members<'a> {
    /// The Pods a Sandbox or pool (`uid`) controls: a standalone Sandbox's
    /// Pod before the co-owner patch, a pool's idle Pods. `selector` is the
    /// label its Pods carry with its name (to narrow the API's LIST; the
    /// controller uid decides).
    ControlledBy { selector: String, uid: &'a str },
    /// The Pods stolen for a claim (`uid`): the steal labels the Pod with
    /// the claim's uid in the same conditioned write that makes the claim
    /// its controller, and the label stays when its Sandbox adopts it; a
    /// cold Pod of the claim's Sandbox is created with it.
    StolenFor { selector: String, uid: &'a str },
}

impl Members<'_> {
    /// Whether the Pod of `meta` is one of them.
    fn include(&self, meta: &ObjectMeta) -> bool {
        match self {
            Members::ControlledBy { uid, .. } => controller_uid(meta) == Some(*uid),
            Members::StolenFor { uid, .. } => {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(CLAIM_UID_LABEL))
                    .map(String::as_str)
                    == Some(*uid)
            }
        }
    }

    fn selector(&self) -> &str {
        match self {
            Members::ControlledBy { selector, .. } | Members::StolenFor { selector, .. } => {
                selector
            }
        }
    }
}

/// The members of the Sandbox, pool or claim controlling `policy`, if one
/// does.
fn members(policy: &NetworkPolicy) -> Option<Members<'_>> {
    let owner = policy
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))?;
    let uid = owner.uid.as_str();
    let controlled_by = |label: &str| Members::ControlledBy {
        selector: format!("{label}={}", owner.name),
        uid,
    };
    match owner.kind.as_str() {
        "Sandbox" => Some(controlled_by(SANDBOX_LABEL)),
        "SandboxWarmPool" => Some(controlled_by(POOL_LABEL)),
        "SandboxClaim" => Some(Members::StolenFor {
            selector: format!("{CLAIM_UID_LABEL}={uid}"),
            uid,
        }),
        _ => None,
    }
}

/// The held policies among `policies`. Pure.
pub fn held(policies: &[Arc<NetworkPolicy>]) -> impl Iterator<Item = &Arc<NetworkPolicy>> {
    policies.iter().filter(|p| is_held(p))
}

/// Starts looking at terminating policies every [`TICK`]; stops when the
/// context is dropped.
pub fn start(ctx: &Arc<Context>) {
    tokio::spawn(hold_forever(Arc::downgrade(ctx)));
}

/// What the loop remembers of a held policy.
struct Watched {
    /// When it was first seen terminating.
    since: Instant,
    /// Not asked about before this: the API server showed a covered Pod
    /// the cache did not have (see [`API_RECHECK`]).
    next_ask: Instant,
}

/// How long after the API server showed a covered Pod that the Pod cache
/// lacks (a Pod stripped of the managed-by label, say), or failed to
/// answer, it is asked again.
pub const API_RECHECK: Duration = Duration::from_secs(10);

async fn hold_forever(ctx: Weak<Context>) {
    let mut watched: HashMap<String, Watched> = HashMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        look(&ctx, &mut watched, Instant::now()).await;
    }
}

/// How many held policies one look asks the API server about at once (a
/// platform deleting claims by the thousand deletes as many policies).
pub const ASKED_AT_ONCE: usize = 8;

/// One look: lifts the hold of every held policy that covers no Pod any
/// more. The cache is read first, one policy after another; those it shows
/// uncovered are asked about and lifted [`ASKED_AT_ONCE`] at a time.
async fn look(ctx: &Context, watched: &mut HashMap<String, Watched>, now: Instant) {
    let policies = ctx.caches.network_policies.state();
    let held: Vec<&Arc<NetworkPolicy>> = held(&policies).collect();
    watched.retain(|uid, _| held.iter().any(|p| p.uid().as_ref() == Some(uid)));
    let mut due = Vec::new();
    for policy in held {
        let Some(uid) = policy.uid() else {
            continue;
        };
        let entry = watched.entry(uid.clone()).or_insert(Watched {
            since: now,
            next_ask: now,
        });
        if now.duration_since(entry.since) >= SETTLE
            && now >= entry.next_ask
            && !cache_covers(ctx, policy)
        {
            due.push((uid, Arc::clone(policy)));
        }
    }
    let asked: Vec<(String, bool)> = futures::stream::iter(due)
        .map(|(uid, policy)| async move { (uid, ask_and_lift(ctx, &policy).await) })
        .buffer_unordered(ASKED_AT_ONCE)
        .collect()
        .await;
    for (uid, ask_again) in asked {
        if ask_again && let Some(entry) = watched.get_mut(&uid) {
            entry.next_ask = now + API_RECHECK;
        }
    }
}

/// Asks the API server whether `policy` covers a Pod still, and lifts its
/// hold if not. Returns whether to wait [`API_RECHECK`] before asking
/// again (a covered Pod the cache lacks, or an error).
async fn ask_and_lift(ctx: &Context, policy: &NetworkPolicy) -> bool {
    let name = policy.name_any();
    let api: Api<NetworkPolicy> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let (outcome, ask_again) = match uncovered(ctx, policy).await {
        Ok(true) => (lift_with(&api, policy).await, false),
        Ok(false) => (Ok(false), true),
        Err(error) => (Err(error), true),
    };
    match outcome {
        Ok(true) => {
            tracing::info!(policy = %name, "no Pod the deleted NetworkPolicy covers is left: its hold is lifted");
        }
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(policy = %name, %error, "the hold of a deleted NetworkPolicy could not be lifted; trying again");
        }
    }
    ask_again
}

/// Whether the API server, asked directly, shows no Pod `policy` covers: a
/// GET per Pod owner, and for a Sandbox's or pool's policy one LIST of the
/// Pods with its Sandbox or pool label.
async fn uncovered(ctx: &Context, policy: &NetworkPolicy) -> Result<bool> {
    let namespace = policy.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    for owner in policy.owner_references().iter().filter(|o| is_pod_ref(o)) {
        let found = pods
            .get_metadata_opt(&owner.name)
            .await
            .map_err(kube_err("read a Pod a deleted NetworkPolicy covers"))?;
        if found.is_some_and(|p| p.metadata.uid.as_deref() == Some(owner.uid.as_str())) {
            return Ok(false);
        }
    }
    if let Some(members) = members(policy) {
        let listed = pods
            .list_metadata(&ListParams::default().labels(members.selector()))
            .await
            .map_err(kube_err("list the Pods a deleted NetworkPolicy covers"))?;
        if listed.items.iter().any(|p| members.include(&p.metadata)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The JSON patch that removes the hold from `policy`, conditioned on the
/// resourceVersion read. Pure.
pub fn lift_patch(policy: &NetworkPolicy) -> json_patch::Patch {
    let rest: Vec<&String> = policy
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != HOLD_FINALIZER)
        .collect();
    serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": policy.resource_version()},
        {"op": "replace", "path": "/metadata/finalizers", "value": rest},
    ]))
    .expect("a JSON patch of two operations")
}

/// Removes the hold from `policy` (the copy read) through `api`. `Ok(true)`
/// when it is gone or the policy is; `Ok(false)` when the policy changed
/// since it was read (to be read again).
pub async fn lift_with(api: &Api<NetworkPolicy>, policy: &NetworkPolicy) -> Result<bool> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api
        .patch(
            &policy.name_any(),
            &params,
            &Patch::<()>::Json(lift_patch(policy)),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(error) if is_not_found(&error) => Ok(true),
        Err(error) if is_conflict(&error) || is_unprocessable(&error) => Ok(false),
        Err(error) => Err(kube_err("lift the hold of a NetworkPolicy")(error)),
    }
}

/// Deletes `policy` (the copy read), one the operator no longer wants while
/// its Pods may still run (a standalone Sandbox's when the policy file
/// wants none, a template-less pool's lockdown once its template is back):
/// its hold is lifted first, and the delete is conditioned on its uid.
/// `Ok(false)` when the policy changed since it was read (it keeps its
/// hold; to be read again), `Ok(true)` when it is deleted or gone.
pub async fn lift_and_delete(api: &Api<NetworkPolicy>, policy: &NetworkPolicy) -> Result<bool> {
    if has_hold(policy) && !lift_with(api, policy).await? {
        return Ok(false);
    }
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: policy.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&policy.name_any(), &params).await {
        Ok(_) => Ok(true),
        Err(error) if is_not_found(&error) || is_conflict(&error) => Ok(true),
        Err(error) => Err(kube_err("delete a NetworkPolicy no longer wanted")(error)),
    }
}

/// Lifts the hold from every NetworkPolicy of the operator's in `namespace`
/// (its managed-by label), whatever Pods they cover: for tearing a
/// namespace down once the operator is stopped (the tests and benches do;
/// an admin who uninstalled the operator can use the README's `kubectl`
/// line). Returns how many were changed.
pub async fn lift_all(client: &kube::Client, namespace: &str) -> Result<usize> {
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={}", super::MANAGED_BY_LABEL, super::MANAGED_BY_VALUE);
    let mut lifted = 0;
    // A policy that changed between the list and the patch is listed again.
    for _ in 0..3 {
        let listed = policies
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("list the operator's NetworkPolicies"))?;
        let mut changed = false;
        for policy in listed.items.iter().filter(|p| has_hold(p)) {
            match lift_with(&policies, policy).await? {
                true => lifted += 1,
                false => changed = true,
            }
        }
        if !changed {
            break;
        }
    }
    Ok(lifted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_pod::{controller, named, pod_owner};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    /// A held-to-be policy selecting `sandbox=s`, owned by `owners`.
    fn policy(owners: Vec<OwnerReference>) -> NetworkPolicy {
        let mut p: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "s-sandbox-egress", "namespace": "ns", "resourceVersion": "7",
                "finalizers": ["other/keep", HOLD_FINALIZER]},
            "spec": {"podSelector": {"matchLabels": {SANDBOX_LABEL: "s"}}}
        }))
        .unwrap();
        p.metadata.owner_references = Some(owners);
        p
    }

    /// A Pod `uid` labelled `sandbox=s`, controlled by `controlled_by` (a
    /// Sandbox's uid).
    fn pod(uid: &str, controlled_by: Option<&str>) -> Pod {
        let mut pod = named("p", "1");
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.uid = Some(uid.into());
        pod.metadata.labels = Some([(SANDBOX_LABEL.to_string(), "s".to_string())].into());
        pod.metadata.owner_references =
            controlled_by.map(|uid| vec![controller("Sandbox", "s", uid)]);
        pod
    }

    #[test]
    fn a_pod_is_covered_by_the_references_the_operator_wrote_not_by_its_labels() {
        let standalone = policy(vec![controller("Sandbox", "s", "sandbox-1")]);
        assert!(covers(&standalone, &pod("u1", Some("sandbox-1"))));
        // A later Sandbox (or claim) of the same name: same labels, not covered.
        assert!(!covers(&standalone, &pod("u2", Some("sandbox-2"))));
        assert!(!covers(&standalone, &pod("u2", None)));
        let mut elsewhere = pod("u1", Some("sandbox-1"));
        elsewhere.metadata.namespace = Some("other".into());
        assert!(!covers(&standalone, &elsewhere));

        // A pool's policy covers the Pods the pool controls.
        let pools = policy(vec![controller("SandboxWarmPool", "pool", "pool-1")]);
        let mut idle = pod("u4", None);
        idle.metadata.owner_references =
            Some(vec![controller("SandboxWarmPool", "pool", "pool-1")]);
        assert!(covers(&pools, &idle));
        assert!(
            !covers(&pools, &pod("u4", Some("sandbox-1"))),
            "a Pod a claim took"
        );
        assert_eq!(
            members(&pools).as_ref().map(Members::selector),
            Some("agents.x-k8s.io/warm-pool=pool")
        );

        // A claim's policy covers its co-owners (cold Pods of an older
        // version) and the Pods labelled with its uid (stolen or started
        // cold for it, whoever controls them now).
        let claims = policy(vec![
            controller("SandboxClaim", "s", "claim-1"),
            pod_owner("u3"),
        ]);
        assert!(covers(&claims, &pod("u3", Some("sandbox-1"))));
        assert!(!covers(&claims, &pod("u1", Some("sandbox-1"))));
        assert!(!covers(&claims, &pod("u1", Some("claim-1"))));
        let stolen = |claim_uid: &str| {
            let mut p = pod("u5", Some("sandbox-1"));
            p.labels_mut()
                .insert(CLAIM_UID_LABEL.into(), claim_uid.into());
            p
        };
        assert!(covers(&claims, &stolen("claim-1")));
        // Stolen for a later claim of the same name: not this one's.
        assert!(!covers(&claims, &stolen("claim-2")));
        assert_eq!(
            members(&claims).as_ref().map(Members::selector),
            Some("agents.x-k8s.io/claim-uid=claim-1")
        );
    }

    #[test]
    fn only_a_terminating_policy_with_the_hold_is_held() {
        let mut p = policy(Vec::new());
        assert!(has_hold(&p) && !is_held(&p));
        p.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(is_held(&p));
        p.metadata.finalizers = Some(vec!["other/keep".into()]);
        assert!(!is_held(&p));
    }

    #[test]
    fn lifting_keeps_other_finalizers_and_is_conditioned_on_the_version_read() {
        let p = policy(Vec::new());
        let patch = serde_json::to_value(lift_patch(&p)).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "replace", "path": "/metadata/finalizers", "value": ["other/keep"]},
            ])
        );
    }
}
