//! Claim expiry (`lifecycle.shutdownTime`).

use kube::api::{Api, DeleteParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::status::reason;
use crate::api::{
    ClaimShutdownPolicy, ConditionUpdate, Sandbox, SandboxClaim, SandboxClaimStatus, set_condition,
};
use crate::controller::write_status;
use crate::controller::{Context, Result, is_not_found, kube_err};

/// Expiry: `Delete`/`DeleteForeground` delete the claim (its children follow
/// by ownerReference); `Retain` deletes the Sandbox and marks the claim.
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
            let api: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &namespace);
            let params = DeleteParams {
                propagation_policy: Some(if policy == ClaimShutdownPolicy::Delete {
                    PropagationPolicy::Background
                } else {
                    PropagationPolicy::Foreground
                }),
                ..Default::default()
            };
            match api.delete(&claim.name_any(), &params).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(kube_err("delete expired claim")(e)),
            }
        }
        ClaimShutdownPolicy::Retain => {
            let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &namespace);
            match api
                .delete(&claim.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(kube_err("delete sandbox of expired claim")(e)),
            }
            let previous = claim.status.clone().unwrap_or_default();
            let status = SandboxClaimStatus {
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
                ..previous
            };
            if claim.status.as_ref() != Some(&status) {
                write_status(ctx, claim, &status).await?;
                ctx.metrics.claims.with_label_values(&["expired"]).inc();
            }
        }
    }
    Ok(Action::await_change())
}
