//! A cold claim's Pod as a co-owner of the claim's NetworkPolicy.
//!
//! The claim's policy is controlled by the claim, so the garbage collector
//! deletes it with the claim, while the Pod is still running out its grace
//! period. The policy carries the hold of [`crate::controller::policy_hold`]
//! from its creation, which covers the Pods stolen for the claim (their
//! claim-uid label); a cold Pod, started by the Sandbox, has no such label.
//! So once the Pod exists, it is made a co-owner (not controller) of the
//! claim's policy: an object is deleted only when all its owners are gone,
//! and a Pod object stays until its containers have stopped; with the hold,
//! through a foreground deletion too (the same patch puts the hold on a
//! policy made without it).
//!
//! Only in the per-claim mode (a template's policy does not go with a
//! claim), and only for Pods without the origin-pool label (which only the
//! pool writes, and the ownership guard keeps): a warm Pod is covered by the
//! hold through its claim-uid label, so the warm path sends nothing. One
//! strategic merge patch per cold Pod, sent when the policy cache shows the
//! claim's policy without it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::network_policy_name;
use crate::api::{ORIGIN_POOL_LABEL, Sandbox, SandboxClaim};
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

/// The Pods of the claim's Sandbox that no pool's policy covers (no
/// origin-pool label), from the cache: those its own policy must outlive.
/// None outside the per-claim mode, and none while the policy cache has not
/// listed (nothing could lift the hold of a policy they co-own).
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
        .filter(|p| {
            controller_uid(&p.metadata) == Some(sandbox_uid.as_str())
                && !p.labels().contains_key(ORIGIN_POOL_LABEL)
        })
        .collect()
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
