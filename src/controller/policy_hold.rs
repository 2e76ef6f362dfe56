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
//! they like by deleting it with `--cascade=foreground`.
//!
//! So these policies carry the finalizer [`HOLD_FINALIZER`]: a deleted
//! policy stays (terminating, still in the API, so network plugins keep
//! enforcing it) until the operator has seen that no Pod it covers exists.
//!
//! Guarantees:
//! - the hold is put on a standalone Sandbox's policy when it is made
//!   (once the policy cache has listed: nothing could lift it otherwise),
//!   and on any policy the moment a Pod is made its co-owner (one strategic
//!   merge patch, the same one as before: no request is added);
//! - a Pod counts as covered when it is named among the policy's owners
//!   (by uid) or carries every label of the policy's `podSelector`; it
//!   counts until its object is gone, grace period included;
//! - the hold is lifted only after the policy has been seen terminating for
//!   [`SETTLE`], and then only when both the Pod cache and the API server
//!   (a GET per Pod owner, one label-selected LIST) show no covered Pod, or
//!   when its controller (the Sandbox or claim, by uid) lives and is not
//!   being deleted: someone deleted the policy alone, and that owner makes
//!   it again once it is gone, as before the hold existed. The removal is
//!   a JSON patch conditioned on the resourceVersion read, so a policy that
//!   changed meanwhile is looked at again;
//! - looked at every [`TICK`]; nothing is sent while no policy of the
//!   operator's is terminating;
//! - `sandbox_operator_tracked_entries{table="policy_holds"}` counts the
//!   policies held at scrape time.
//!
//! Limits: with the operator stopped, a held policy stays terminating
//! until someone removes the finalizer (the README's "Uninstall" says
//! how); a Pod made a co-owner only after a deletion started is not
//! covered by the hold (the Pod is created after its policy, and the
//! co-owner patch follows within one reconcile).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::{
    Context, Result, is_conflict, is_not_found, is_terminating, is_unprocessable, kube_err,
};
use crate::api::FIELD_MANAGER;

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

/// Whether `policy` is deleted and waits for the operator to lift its hold.
pub fn is_held(policy: &NetworkPolicy) -> bool {
    is_terminating(policy) && has_hold(policy)
}

/// Whether `pod` is one `policy` protects (see the module docs). Pure.
pub fn covers(policy: &NetworkPolicy, pod: &Pod) -> bool {
    if pod.namespace() != policy.namespace() {
        return false;
    }
    let uid = pod.uid();
    let named = policy
        .owner_references()
        .iter()
        .any(|o| o.kind == "Pod" && Some(&o.uid) == uid.as_ref());
    named || selected(policy, pod.labels())
}

/// Whether the policy's `podSelector` (its `matchLabels`, the only form the
/// operator writes; a selector with none selects nothing here) picks a Pod
/// with `labels`. Pure.
fn selected(policy: &NetworkPolicy, labels: &BTreeMap<String, String>) -> bool {
    let Some(wanted) = policy
        .spec
        .as_ref()
        .and_then(|s| s.pod_selector.as_ref())
        .and_then(|s| s.match_labels.as_ref())
        .filter(|m| !m.is_empty())
    else {
        return false;
    };
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
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

async fn hold_forever(ctx: Weak<Context>) {
    // When each held policy (by uid) was first seen terminating.
    let mut seen: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        look(&ctx, &mut seen, Instant::now()).await;
    }
}

/// One look: lifts the hold of every held policy that covers no Pod any more.
async fn look(ctx: &Context, seen: &mut HashMap<String, Instant>, now: Instant) {
    let policies = ctx.caches.network_policies.state();
    let held: Vec<&Arc<NetworkPolicy>> = held(&policies).collect();
    seen.retain(|uid, _| held.iter().any(|p| p.uid().as_ref() == Some(uid)));
    if held.is_empty() {
        return;
    }
    let pods = ctx.caches.pods.state();
    for policy in held {
        let Some(uid) = policy.uid() else {
            continue;
        };
        let since = *seen.entry(uid).or_insert(now);
        if now.duration_since(since) < SETTLE {
            continue;
        }
        let name = policy.name_any();
        let lifted = if controller_lives(ctx, policy) {
            // Deleted by someone while its Sandbox or claim lives: that
            // owner makes it again once it is gone (its deletion wakes it).
            lift(ctx, policy).await
        } else if pods.iter().any(|p| covers(policy, p)) {
            continue;
        } else {
            lift_if_uncovered(ctx, policy).await
        };
        match lifted {
            Ok(true) => {
                tracing::info!(policy = %name, "the deleted NetworkPolicy's hold is lifted: no Pod it covers is left, or its owner lives and makes it again")
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(policy = %name, %error, "the hold of a deleted NetworkPolicy could not be lifted; trying again");
            }
        }
    }
}

/// Whether the policy's controller (a Sandbox or a claim, by uid) is in the
/// caches and not being deleted.
fn controller_lives(ctx: &Context, policy: &NetworkPolicy) -> bool {
    let Some(owner) = policy
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
    else {
        return false;
    };
    let namespace = policy.namespace().unwrap_or_default();
    let alive = |uid: Option<String>, terminating: bool| {
        uid.as_deref() == Some(owner.uid.as_str()) && !terminating
    };
    match owner.kind.as_str() {
        "Sandbox" => ctx
            .caches
            .sandboxes
            .get(&ObjectRef::new(&owner.name).within(&namespace))
            .is_some_and(|s| alive(s.uid(), is_terminating(s.as_ref()))),
        "SandboxClaim" => ctx
            .caches
            .claims
            .get(&ObjectRef::new(&owner.name).within(&namespace))
            .is_some_and(|c| alive(c.uid(), is_terminating(c.as_ref()))),
        _ => false,
    }
}

/// Asks the API server whether a Pod `policy` covers still exists; lifts
/// the hold when none does. `Ok(true)` when lifted (or the policy is gone).
async fn lift_if_uncovered(ctx: &Context, policy: &NetworkPolicy) -> Result<bool> {
    let namespace = policy.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    for owner in policy.owner_references().iter().filter(|o| o.kind == "Pod") {
        let found = pods
            .get_opt(&owner.name)
            .await
            .map_err(kube_err("read a Pod a deleted NetworkPolicy covers"))?;
        if found.is_some_and(|p| p.uid().as_deref() == Some(owner.uid.as_str())) {
            return Ok(false);
        }
    }
    if let Some(selector) = selector_string(policy) {
        let listed = pods
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("list the Pods a deleted NetworkPolicy covers"))?;
        if !listed.items.is_empty() {
            return Ok(false);
        }
    }
    lift(ctx, policy).await
}

/// The policy's `matchLabels` as a label selector, if it has any.
fn selector_string(policy: &NetworkPolicy) -> Option<String> {
    let labels = policy
        .spec
        .as_ref()?
        .pod_selector
        .as_ref()?
        .match_labels
        .as_ref()
        .filter(|m| !m.is_empty())?;
    Some(
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
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

async fn lift(ctx: &Context, policy: &NetworkPolicy) -> Result<bool> {
    let namespace = policy.namespace().unwrap_or_default();
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match policies
        .patch(
            &policy.name_any(),
            &params,
            &Patch::<()>::Json(lift_patch(policy)),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(error) if is_not_found(&error) => Ok(true),
        // Changed since the cache read it: looked at again at the next tick.
        Err(error) if is_conflict(&error) || is_unprocessable(&error) => Ok(false),
        Err(error) => Err(kube_err("lift the hold of a deleted NetworkPolicy")(error)),
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
            let params = PatchParams::default();
            match policies
                .patch(
                    &policy.name_any(),
                    &params,
                    &Patch::<()>::Json(lift_patch(policy)),
                )
                .await
            {
                Ok(_) => lifted += 1,
                Err(error) if is_not_found(&error) => {}
                Err(error) if is_conflict(&error) || is_unprocessable(&error) => changed = true,
                Err(error) => return Err(kube_err("lift the hold of a NetworkPolicy")(error)),
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
    use crate::controller::test_pod::named;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn policy(select: &[(&str, &str)], pod_owner: Option<&str>) -> NetworkPolicy {
        let mut p: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "np", "namespace": "ns", "resourceVersion": "7",
                "finalizers": ["other/keep", HOLD_FINALIZER]},
            "spec": {"podSelector": {"matchLabels":
                select.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()}}
        }))
        .unwrap();
        if let Some(uid) = pod_owner {
            p.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "p".into(),
                uid: uid.into(),
                ..Default::default()
            }]);
        }
        p
    }

    fn pod(uid: &str, labels: &[(&str, &str)]) -> Pod {
        let mut pod = named("p", "1");
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.uid = Some(uid.into());
        pod.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        pod
    }

    #[test]
    fn a_pod_is_covered_when_named_as_owner_or_selected_in_the_namespace() {
        let by_label = policy(&[("agents.x-k8s.io/sandbox", "s")], None);
        assert!(covers(
            &by_label,
            &pod("u1", &[("agents.x-k8s.io/sandbox", "s"), ("x", "y")])
        ));
        assert!(!covers(
            &by_label,
            &pod("u1", &[("agents.x-k8s.io/sandbox", "t")])
        ));
        assert!(!covers(&by_label, &pod("u1", &[])));
        let mut elsewhere = pod("u1", &[("agents.x-k8s.io/sandbox", "s")]);
        elsewhere.metadata.namespace = Some("other".into());
        assert!(!covers(&by_label, &elsewhere));

        let by_owner = policy(&[], Some("u2"));
        assert!(covers(&by_owner, &pod("u2", &[])));
        assert!(
            !covers(&by_owner, &pod("u3", &[])),
            "an empty selector selects nothing here"
        );
    }

    #[test]
    fn only_a_terminating_policy_with_the_hold_is_held() {
        let mut p = policy(&[("a", "b")], None);
        assert!(has_hold(&p) && !is_held(&p));
        p.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(is_held(&p));
        p.metadata.finalizers = Some(vec!["other/keep".into()]);
        assert!(!is_held(&p));
    }

    #[test]
    fn lifting_keeps_other_finalizers_and_is_conditioned_on_the_version_read() {
        let p = policy(&[("a", "b")], None);
        let patch = serde_json::to_value(lift_patch(&p)).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "replace", "path": "/metadata/finalizers", "value": ["other/keep"]},
            ])
        );
        assert_eq!(selector_string(&p).as_deref(), Some("a=b"));
        assert_eq!(selector_string(&policy(&[], None)), None);
    }
}
