//! A cold claim's Pod made by an older version, as a co-owner of the
//! claim's NetworkPolicy.
//!
//! The claim's policy is controlled by the claim, so the garbage collector
//! deletes it with the claim, while the Pod is still running out its grace
//! period. The policy carries the hold of [`crate::controller::policy_hold`]
//! from its creation, which covers the Pods labelled with the claim's uid:
//! a stolen Pod (the steal writes the label) and, since this version, a
//! cold Pod (the Sandbox controller creates it with the label, from the
//! Sandbox's controller reference to the claim), so neither needs a write
//! of its own and neither is ever uncovered.
//!
//! A cold Pod an older version started has no such label. It is made a
//! co-owner (not controller) of the claim's policy: an object is deleted
//! only when all its owners are gone, and a Pod object stays until its
//! containers have stopped; with the hold, through a foreground deletion
//! too (the same patch puts the hold on a policy made without it).
//!
//! Only in the per-claim mode (a template's policy does not go with a
//! claim), and only for Pods without the origin-pool label (which only the
//! pool writes, and the ownership guard keeps). One strategic merge patch
//! per such Pod, sent when the policy cache shows the claim's policy
//! without it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::network_policy_name;
use crate::api::{CLAIM_UID_LABEL, ORIGIN_POOL_LABEL, Sandbox, SandboxClaim};
use crate::controller::policy_owners::add_pod_owners;
use crate::controller::{Context, NetworkPolicyMode, Result, controller_uid};

/// Makes the Pods the cold Sandbox `sandbox` controls co-owners of the
/// claim's policy, when the policy cache shows it controlled by the claim
/// and without them (see the module docs). A refused patch is logged and
/// tried again at the claim's next reconcile: it never fails the claim,
/// whose policy is in place either way.
pub(super) async fn co_own_policy(
    ctx: &Context,
    claim: &SandboxClaim,
    cold: &[Arc<Pod>],
    namespace: &str,
) {
    if let Err(error) = co_own(ctx, claim, cold, namespace).await {
        tracing::warn!(%error, "the cold Pod could not be made a co-owner of the claim's NetworkPolicy");
    }
}

/// The Pods of the claim's Sandbox that its policy's hold does not cover
/// by their labels ([`needs_co_owning`]), from the cache: those the policy
/// must outlive as their co-owner. None outside the per-claim mode, and
/// none while the policy cache has not listed (nothing could lift the hold
/// of a policy they co-own).
pub(super) fn cold_pods(ctx: &Context, sandbox: &Sandbox) -> Vec<Arc<Pod>> {
    if ctx.config.claim_network_policy != NetworkPolicyMode::PerClaim
        || !ctx.network_policies_listed()
    {
        return Vec::new();
    }
    let Some(sandbox_uid) = sandbox.uid() else {
        return Vec::new();
    };
    ctx.caches
        .index
        .controlled_by(&sandbox_uid)
        .iter()
        .filter_map(|r| ctx.caches.pods.get(r))
        .filter(|p| needs_co_owning(p, &sandbox_uid, controller_uid(&sandbox.metadata)))
        .collect()
}

/// Whether `pod`, which the Sandbox `sandbox_uid` controls, must be a
/// co-owner of its claim's (`claim_uid`) policy: a cold Pod (no origin-pool
/// label, which only the pool writes) without the claim's uid label, which
/// an older version started. Pure.
fn needs_co_owning(pod: &Pod, sandbox_uid: &str, claim_uid: Option<&str>) -> bool {
    controller_uid(&pod.metadata) == Some(sandbox_uid)
        && !pod.labels().contains_key(ORIGIN_POOL_LABEL)
        && pod.labels().get(CLAIM_UID_LABEL).map(String::as_str) != claim_uid
}

async fn co_own(
    ctx: &Context,
    claim: &SandboxClaim,
    pods: &[Arc<Pod>],
    namespace: &str,
) -> Result<()> {
    let Some(claim_uid) = claim.uid() else {
        return Ok(());
    };
    if pods.is_empty() {
        return Ok(());
    }
    let Some(policy) = ctx
        .caches
        .network_policies
        .get(&ObjectRef::new(&network_policy_name(&claim.name_any())).within(namespace))
        .filter(|p| controller_uid(&p.metadata) == Some(claim_uid.as_str()))
    else {
        return Ok(());
    };
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    add_pod_owners(&policies, &policy, pods, true).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_pod;

    fn pod(labels: &[(&str, &str)]) -> Pod {
        let mut pod = test_pod::named("c", "1");
        pod.metadata.owner_references = Some(vec![test_pod::controller("Sandbox", "c", "sbx")]);
        pod.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        pod
    }

    #[test]
    fn only_a_cold_pod_without_the_claims_uid_label_is_made_a_co_owner() {
        let claim = Some("claim-uid");
        // Started by this version: the hold covers it through its label.
        assert!(!needs_co_owning(
            &pod(&[(CLAIM_UID_LABEL, "claim-uid")]),
            "sbx",
            claim
        ));
        // Started by an older version: no label, so a co-owner.
        assert!(needs_co_owning(&pod(&[]), "sbx", claim));
        // Another claim's uid covers nothing of this claim's.
        assert!(needs_co_owning(
            &pod(&[(CLAIM_UID_LABEL, "other")]),
            "sbx",
            claim
        ));
        // A warm Pod: its pool's and its claim's policies cover it.
        assert!(!needs_co_owning(
            &pod(&[(ORIGIN_POOL_LABEL, "pool")]),
            "sbx",
            claim
        ));
        // Not the Sandbox's.
        assert!(!needs_co_owning(&pod(&[]), "other-sbx", claim));
    }
}
