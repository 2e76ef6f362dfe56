//! Giving back surplus Pods: Pods stolen for a claim that its Sandbox does
//! not use (two processes serving one claim at once, or a round one that
//! found the claim served elsewhere). Each is deleted guarded by its uid
//! and the version it was decided on, so a Pod written since (adopted by
//! the Sandbox after all) is never lost; a refused give-back is remembered
//! and decided again from a fresh read of the Pod, since the cache may lag.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use tracing::warn;

use crate::api::{READY, Sandbox, is_true};
use crate::controller::takeover::pod_key;
use crate::controller::{
    Context, Result, controller_uid, is_conflict, is_not_found, is_terminating, kube_err,
};

/// Deletes Pods this claim stole that its Sandbox will never use. Two
/// processes serving one claim at once (a split brain around a leader
/// handover) can each steal a Pod; the loser's is normally given back in
/// `serve`, but one repointed by the other process's repair is not.
///
/// Acts only once the Sandbox's own status reports Ready on a Pod, the one
/// its annotation names if it has one, or one it has adopted (nothing
/// repoints a Sandbox after that), and only on other Pods whose controller is this claim: each is
/// surplus, deleted guarded by its uid and the cached version. A Pod whose
/// give-back was refused before (see `Reservations::record_kept`) is read
/// from the API server instead and decided the same way, guarded by the
/// version read: the cache's copy may be the one refused, or the cache may
/// not count the Pod among the claim's yet (its watch behind the steal).
/// `false` when a delete was refused with a conflict (the Pod written since
/// that version, or replaced under its name) and the Pod kept: the caller
/// looks again soon ([`super::SURPLUS_RECHECK`]).
pub(super) async fn give_back_surplus(
    ctx: &Context,
    claim_uid: &str,
    sandbox: &Sandbox,
) -> Result<bool> {
    let Some(status) = &sandbox.status else {
        return Ok(true);
    };
    let named = sandbox.annotations().get(crate::api::POD_NAME_ANNOTATION);
    let Some(serving) = status.pod_name.as_ref() else {
        return Ok(true);
    };
    // The Pod the Sandbox serves on is the one it names, or one it has
    // adopted: then no repoint can move it, whatever the annotation says
    // (a tenant may edit it), and every other Pod of the claim is surplus.
    let adopted = || {
        let at = kube::runtime::reflector::ObjectRef::new(serving)
            .within(&sandbox.namespace().unwrap_or_default());
        ctx.caches.pods.get(&at).is_some_and(|p| {
            sandbox.uid().is_some() && controller_uid(&p.metadata) == sandbox.uid().as_deref()
        })
    };
    if !is_true(&status.conditions, READY) || (named.is_some_and(|n| n != serving) && !adopted()) {
        return Ok(true);
    }
    let mut settled = true;
    let kept = ctx.reservations.kept_for(claim_uid);
    for pod in ctx.caches.index.controlled_by(claim_uid) {
        let Some(pod) = ctx.caches.pods.get(&pod) else {
            continue;
        };
        if !kept.contains(&pod.name_any()) {
            settled &= give_back_if_surplus(ctx, claim_uid, serving, &pod).await?;
        }
    }
    if kept.is_empty() {
        return Ok(settled);
    }
    let namespace = sandbox.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    for name in kept {
        // Refused before: the cache's copy may be the one refused, or may
        // not show the steal yet. Decide from a fresh read.
        match pods
            .get_opt(&name)
            .await
            .map_err(kube_err("read a kept Pod"))?
        {
            Some(pod) => settled &= give_back_if_surplus(ctx, claim_uid, serving, &pod).await?,
            None => ctx.reservations.forget_kept(claim_uid, &name),
        }
    }
    Ok(settled)
}

/// Gives `pod` back (see `delete_pod`) if it is surplus: controlled
/// by this claim, not the Pod its Sandbox serves on, not already going.
/// `true` when settled (given back, or not surplus: then no longer kept).
async fn give_back_if_surplus(
    ctx: &Context,
    claim_uid: &str,
    serving: &str,
    pod: &Pod,
) -> Result<bool> {
    if pod.name_any() == serving
        || controller_uid(&pod.metadata) != Some(claim_uid)
        || is_terminating(pod)
    {
        ctx.reservations.forget_kept(claim_uid, &pod.name_any());
        return Ok(true);
    }
    warn!(pod = %pod.name_any(), "a Pod stolen for this claim is not its Sandbox's: giving it back");
    delete_pod(ctx, claim_uid, pod).await
}

/// Deletes a Pod this claim stole but does not need, guarded by its uid and
/// the version it was decided on: a Pod written since (the claim's Sandbox
/// adopted it, its status moved) is kept, remembered as kept, and
/// `give_back_surplus` decides again once the Sandbox is Ready (for a claim
/// blocked by a foreign Sandbox of its name, only once that conflict
/// clears), from a fresh read of the Pod.
/// `true` when the delete was accepted or the Pod was already gone,
/// `false` when it was kept.
pub(super) async fn delete_pod(ctx: &Context, claim_uid: &str, pod: &Pod) -> Result<bool> {
    // Given back: no later reconcile of the claim may count on it.
    ctx.reservations.forget_steal(claim_uid, &pod.name_any());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: pod.resource_version(),
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        // Written since (its Sandbox may have adopted it): still possibly
        // the claim's.
        Err(e) if is_conflict(&e) => {
            ctx.reservations.record_kept(claim_uid, &pod.name_any());
            Ok(false)
        }
        Err(e) if !is_not_found(&e) => Err(kube_err("delete surplus pod")(e)),
        // Deleted now, or already gone: not the claim's Pod any more,
        // whatever the cache shows.
        _ => {
            ctx.reservations.forget_kept(claim_uid, &pod.name_any());
            ctx.reservations.record_given_back(&pod_key(pod));
            Ok(true)
        }
    }
}
