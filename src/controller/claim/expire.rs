//! Claim expiry (`lifecycle.shutdownTime`).

use crate::controller::Action;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::{Resource, ResourceExt};
use tracing::info;

use crate::api::reason;
use crate::api::{
    ClaimShutdownPolicy, ConditionUpdate, Sandbox, SandboxClaim, SandboxClaimStatus, set_condition,
};
use crate::controller::write_status;
use crate::controller::{Context, Result, controller_uid, is_conflict, is_not_found, kube_err};

/// Expiry: `Delete`/`DeleteForeground` mark the claim, then delete it (its
/// children follow by ownerReference); `Retain` deletes the Sandbox and
/// marks the claim. Marked, its status says `Ready=False` `ClaimExpired` and
/// names no Sandbox, Pod or IP. A claim being deleted may stay a while (a
/// finalizer, the garbage collector's foreground pass), and nothing writes
/// its status then: before (found by review) it stayed Ready on a Pod being
/// deleted the whole time. The mark costs expiry one write, not the warm
/// path.
pub(super) async fn expire(
    ctx: &Context,
    claim: &SandboxClaim,
    deadline: jiff::Timestamp,
) -> Result<Action> {
    let namespace = claim.namespace().unwrap_or_default();
    let policy = claim
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.shutdown_policy)
        .unwrap_or_default();
    match policy {
        ClaimShutdownPolicy::Delete | ClaimShutdownPolicy::DeleteForeground => {
            // The mark is best effort: a write computed from a stale copy
            // (409) does not hold the delete up, or a claim whose cache
            // lags would never be deleted (second read). The delete is by
            // uid, so it is this claim's whatever its version.
            let status = expired_status(claim, deadline);
            if claim.status.as_ref() != Some(&status) {
                write_status(ctx, claim, &status).await?;
            }
            let api: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &namespace);
            let params = DeleteParams {
                propagation_policy: Some(if policy == ClaimShutdownPolicy::Delete {
                    PropagationPolicy::Background
                } else {
                    PropagationPolicy::Foreground
                }),
                // This claim (by uid), not a later one of the same name
                // that a stale copy would delete.
                preconditions: Some(Preconditions {
                    uid: claim.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&claim.name_any(), &params).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                Err(e) => return Err(kube_err("delete expired claim")(e)),
            }
        }
        ClaimShutdownPolicy::Retain => {
            delete_own_sandbox(ctx, claim, &namespace).await?;
            let all_gone = delete_pods_it_controls(ctx, claim).await?;
            let status = expired_status(claim, deadline);
            if claim.status.as_ref() != Some(&status) {
                write_status(ctx, claim, &status).await?;
                ctx.metrics.claims.with_label_values(&["expired"]).inc();
            }
            if !all_gone {
                // A Pod changed under the delete (its Sandbox adopting it,
                // say): decided again from what the cache shows then.
                return Ok(Action::requeue(RECHECK));
            }
        }
    }
    Ok(Action::await_change())
}

/// The expired claim's status: `Ready=False` `ClaimExpired`, with no
/// Sandbox or Pod named. They are deleted (or being deleted): a client must
/// not be pointed at a Pod name or IP that a later Pod (another tenant's,
/// say) may get. How it was served (launch type, pool, times) stays.
fn expired_status(claim: &SandboxClaim, deadline: jiff::Timestamp) -> SandboxClaimStatus {
    let previous = claim.status.clone().unwrap_or_default();
    SandboxClaimStatus {
        conditions: set_condition(
            &previous.conditions,
            &ConditionUpdate::ready(
                false,
                reason::CLAIM_EXPIRED,
                format!("shutdownTime {deadline} has passed"),
            ),
            claim.meta().generation,
            jiff::Timestamp::now(),
        ),
        sandbox: None,
        pod_name: None,
        ..previous
    }
}

/// How soon an expired claim looks again at a Pod whose delete was refused
/// (or at itself, when its mark was refused as computed from a stale copy).
const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Deletes the Pods the expired claim still controls itself (by uid): one
/// stolen but not yet adopted by its Sandbox (adoption waits for the claim's
/// Ready, and a Sandbox create refused by a quota never adopts), or a spare
/// never given back. Deleting the Sandbox takes only the Pods it controls,
/// and code in a sandbox must not outlive its shutdownTime. Each delete is
/// conditioned on the Pod's uid and resourceVersion. Whether every such
/// Pod is gone.
async fn delete_pods_it_controls(ctx: &Context, claim: &SandboxClaim) -> Result<bool> {
    let Some(claim_uid) = claim.uid() else {
        return Ok(true);
    };
    let mut all_gone = true;
    for reference in ctx.caches.index.controlled_by(&claim_uid) {
        let Some(pod) = ctx.caches.pods.get(&reference) else {
            continue;
        };
        if controller_uid(&pod.metadata) == Some(claim_uid.as_str()) {
            info!(pod = %pod.name_any(), "deleting a Pod the expired claim still controls");
            all_gone &= super::surplus::delete_pod(ctx, &claim_uid, &pod).await?;
        }
    }
    Ok(all_gone)
}

/// Deletes the claim's Sandbox: the one under the claim's name whose
/// controller is this claim (by uid), with the uid as a precondition. A
/// Sandbox of that name that another owner controls (or none) is left
/// alone: a claim cannot have someone else's Sandbox deleted by naming
/// itself after it.
async fn delete_own_sandbox(ctx: &Context, claim: &SandboxClaim, namespace: &str) -> Result<()> {
    let name = claim.name_any();
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(sandbox) = api
        .get_opt(&name)
        .await
        .map_err(kube_err("get sandbox of expired claim"))?
    else {
        return Ok(());
    };
    let claim_uid = claim.uid();
    if claim_uid.is_none() || controller_uid(&sandbox.metadata) != claim_uid.as_deref() {
        info!(sandbox = %name, "Sandbox under the expired claim's name is not the claim's; left alone");
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: sandbox.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(kube_err("delete sandbox of expired claim")(e)),
    }
}
