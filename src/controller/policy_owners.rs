//! Pods as co-owners of the NetworkPolicy that covers them.
//!
//! A sandbox's policy is controlled by its Sandbox or claim, so the garbage
//! collector deletes it with that owner, while the Pod may still be running
//! out its grace period. An object is deleted only when all its owners are
//! gone, and a Pod object stays until its containers have stopped, so the
//! Pod is added as a further owner (not controller, no
//! `blockOwnerDeletion`): the policy then lasts as long as the Pod, with
//! background or orphan deletion of the Sandbox or claim. Foreground
//! deletion defeats it: the collector then deletes the Pod in the
//! foreground too, and the policy, whose owners both wait on their
//! dependents, goes at once; the same patch therefore puts the hold of
//! [`super::policy_hold`] on the policy, which keeps it until no Pod it
//! covers exists. Used for standalone Sandboxes (`sandbox::network`) and
//! cold claims (`claim::cold_pod`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::api::FIELD_MANAGER;
use crate::controller::policy_hold::{HOLD_FINALIZER, has_hold};
use crate::controller::{Result, is_not_found, is_terminating, kube_err};

/// The `pods` that `policy` does not name as owners yet, as non-controller
/// owner references. Pure.
pub(crate) fn missing_pod_owners(policy: &NetworkPolicy, pods: &[Arc<Pod>]) -> Vec<OwnerReference> {
    let named = |uid: &str| policy.owner_references().iter().any(|o| o.uid == uid);
    pods.iter()
        .filter_map(|pod| {
            let uid = pod.uid()?;
            (!named(&uid)).then(|| OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.name_any(),
                uid,
                controller: None,
                block_owner_deletion: None,
            })
        })
        .collect()
}

/// The strategic merge patch that makes `pods` co-owners of `policy` and,
/// when `hold`, puts the hold on it ([`HOLD_FINALIZER`], see
/// [`super::policy_hold`]: a claim's policy carries it with no Pod named);
/// `None` when there is nothing to add. Owners merge by uid and finalizers
/// as a set, so the other owners and finalizers stay. A terminating policy
/// gets no hold (the API server refuses a finalizer added to it). Pure.
pub(crate) fn co_owner_patch(
    policy: &NetworkPolicy,
    pods: &[Arc<Pod>],
    hold: bool,
) -> Option<Value> {
    let missing = missing_pod_owners(policy, pods);
    let hold = hold && !has_hold(policy) && !is_terminating(policy);
    match (missing.is_empty(), hold) {
        (true, false) => None,
        (_, false) => Some(json!({"metadata": {"ownerReferences": missing}})),
        (true, true) => Some(json!({"metadata": {"finalizers": [HOLD_FINALIZER]}})),
        (false, true) => Some(json!({"metadata": {
            "ownerReferences": missing, "finalizers": [HOLD_FINALIZER]}})),
    }
}

/// `policy` (about to be made) with `pods` as co-owners and, when there
/// are any, the hold. Pure.
pub(crate) fn with_pod_owners(mut policy: NetworkPolicy, pods: &[Arc<Pod>]) -> NetworkPolicy {
    if pods.is_empty() {
        return policy;
    }
    let missing = missing_pod_owners(&policy, pods);
    policy.owner_references_mut().extend(missing);
    if !has_hold(&policy) {
        policy.finalizers_mut().push(HOLD_FINALIZER.into());
    }
    policy
}

/// Makes `pods` co-owners of `policy` (see the module docs) and, when
/// `hold` (the policy cache has listed: something can lift it), puts the
/// hold on it, with [`co_owner_patch`]; nothing is sent when all is there
/// already.
pub(crate) async fn add_pod_owners(
    policies: &Api<NetworkPolicy>,
    policy: &NetworkPolicy,
    pods: &[Arc<Pod>],
    hold: bool,
) -> Result<()> {
    let Some(patch) = co_owner_patch(policy, pods, hold) else {
        return Ok(());
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match policies
        .patch(&policy.name_any(), &params, &Patch::Strategic(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: its deletion event wakes the Sandbox.
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(kube_err("make the Pod a co-owner of its NetworkPolicy")(
            error,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_pod::named;

    fn pod() -> Arc<Pod> {
        let mut pod = named("p", "1");
        pod.metadata.uid = Some("pod-uid".into());
        Arc::new(pod)
    }

    #[test]
    fn the_pods_become_co_owners_once_each() {
        let mut policy = NetworkPolicy::default();
        let pods = [pod()];
        let missing = missing_pod_owners(&policy, &pods);
        assert_eq!(missing.len(), 1);
        assert_eq!(
            (
                missing[0].kind.as_str(),
                missing[0].uid.as_str(),
                missing[0].controller
            ),
            ("Pod", "pod-uid", None)
        );
        policy.owner_references_mut().extend(missing);
        assert!(missing_pod_owners(&policy, &pods).is_empty());
    }

    #[test]
    fn the_co_owner_patch_adds_the_hold_unless_the_policy_is_terminating() {
        let pods = [pod()];
        let mut policy = NetworkPolicy::default();
        assert_eq!(co_owner_patch(&policy, &[], false), None, "nothing to add");
        assert_eq!(
            co_owner_patch(&policy, &[], true),
            Some(json!({"metadata": {"finalizers": [HOLD_FINALIZER]}})),
            "no Pod: the hold alone"
        );
        let patch = co_owner_patch(&policy, &pods, true).unwrap();
        assert_eq!(patch["metadata"]["finalizers"], json!([HOLD_FINALIZER]));
        assert_eq!(patch["metadata"]["ownerReferences"][0]["uid"], "pod-uid");

        // Made by an older version: co-owned already, the hold alone is added.
        let owners = missing_pod_owners(&policy, &pods);
        policy.owner_references_mut().extend(owners);
        assert_eq!(
            co_owner_patch(&policy, &pods, true),
            Some(json!({"metadata": {"finalizers": [HOLD_FINALIZER]}}))
        );
        policy.finalizers_mut().push(HOLD_FINALIZER.into());
        assert_eq!(co_owner_patch(&policy, &pods, true), None);

        // Terminating without the hold: owners only (a finalizer is refused).
        let mut terminating = NetworkPolicy::default();
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        let patch = co_owner_patch(&terminating, &pods, true).unwrap();
        assert!(patch["metadata"].get("finalizers").is_none());
    }
}
