//! Repairing a claim whose warm Sandbox names a Pod the claim never got (a
//! crash between the Sandbox create and the steal, or a race lost to
//! another claim): use a Pod stolen earlier or steal again, and point the
//! Sandbox at it, or at none (cold path).
//!
//! Guarantee: a repair never writes the claim's Ready. It points the
//! Sandbox (a write conditioned on the Sandbox's version) at a Pod the
//! claim holds, or at none; the Sandbox adopts that Pod with a write
//! conditioned on the Pod's version before its status, and so the claim's,
//! can say Ready. A Pod that another process serving the same claim gives
//! back first (a delete conditioned on the version it stole) is gone
//! before the adoption, and the Sandbox starts a Pod of its own instead.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use tracing::warn;

use super::desired::pool_choice;
use super::serve::{earlier_pod, repoint};
use super::steal::{candidates, reserve_first, take_over, usable};
use crate::api::{POD_NAME_ANNOTATION, Sandbox, SandboxClaim};
use crate::controller::ownership::{controller_of_kind, held_by_claim};
use crate::controller::takeover::pod_key;
use crate::controller::{Context, Result, is_terminating, kube_err};

/// Whether a claim's warm Sandbox names a Pod the claim never got: the Pod
/// is still its pool's (a crash between the Sandbox create and the steal) or
/// another claim's (a lost race not yet repointed). A Pod that is gone is
/// not repaired here: the Sandbox controller starts a new one.
///
/// Never while the Sandbox has a Pod of its own, is paused or has expired:
/// it takes no named Pod then, and its annotation may be the tenant's edit
/// (a metadata write the webhook admits). Before (found by review), a
/// tenant pointing the annotation at idle pool Pods one after another made
/// the claim steal each, and keep them.
pub(super) fn needs_repair(ctx: &Context, claim_uid: &str, sandbox: &Sandbox) -> bool {
    let Some(named) = sandbox.annotations().get(POD_NAME_ANNOTATION) else {
        return false;
    };
    let expired = sandbox
        .spec
        .shutdown_time
        .as_ref()
        .is_some_and(|t| t.0 <= jiff::Timestamp::now());
    if sandbox.desired_replicas() == 0 || expired || owns_a_pod(ctx, sandbox) {
        return false;
    }
    if ctx.reservations.stolen_for(claim_uid).as_deref() == Some(named.as_str()) {
        return false;
    }
    let namespace = sandbox.namespace().unwrap_or_default();
    let Some(pod) = ctx
        .caches
        .pods
        .get(&kube::runtime::reflector::ObjectRef::new(named).within(&namespace))
    else {
        return false;
    };
    !is_terminating(pod.as_ref()) && !held(&pod, claim_uid, sandbox)
}

/// Whether the Sandbox controls a Pod, terminating ones included (cache):
/// a repair is only ever needed before its first adoption, and a Pod of
/// its own kept terminating (a tenant's finalizer) would otherwise leave
/// the claim not Ready and open to repairs for as long as it lasts (found
/// by a second review).
fn owns_a_pod(ctx: &Context, sandbox: &Sandbox) -> bool {
    let Some(uid) = sandbox.uid() else {
        return false;
    };
    ctx.caches
        .index
        .controlled_by(&uid)
        .iter()
        .any(|r| ctx.caches.pods.get(r).is_some())
}

/// Whether `pod` is the claim's: stolen for it or adopted by its Sandbox.
/// A Pod with no controller (orphaned, say by a pool deleted with
/// `--cascade=orphan`) is not: the Sandbox controller would never adopt it,
/// so a claim left naming it would wait forever.
fn held(pod: &Pod, claim_uid: &str, sandbox: &Sandbox) -> bool {
    held_by_claim(&pod.metadata, claim_uid, &sandbox.metadata)
}

/// Steals a Pod for a claim whose Sandbox names one it never got, and
/// points the Sandbox at it, or at none (cold path).
///
/// The named Pod is read again from the API server first, and then tried
/// first: the cache that called for the repair may be behind a steal of it
/// (this process's retry, or another process serving the same claim) or
/// its adoption by the Sandbox. Finding it the claim's keeps the Sandbox as
/// it is. Finding it still its pool's, the repair steals that fresh copy
/// itself, whatever this process's cache and reservations say: a steal of
/// it for this claim may be in flight from another process (a split
/// brain), and moving the Sandbox away from it now would let that steal
/// land on a Pod the Sandbox no longer names, after which that process
/// writes the claim Ready on it. Racing it instead settles it: whichever
/// steal wins, the Pod is the claim's. Only a Pod that went to someone
/// else (or has no controller at all) moves the Sandbox.
pub(super) async fn repair(
    ctx: &Arc<Context>,
    claim: &SandboxClaim,
    sandbox: &Sandbox,
    namespace: &str,
    claim_uid: &str,
) -> Result<Duration> {
    let template_name = &claim.spec.sandbox_template_ref.name;
    let named = sandbox.annotations().get(POD_NAME_ANNOTATION);
    let template = ctx.template_or_get(namespace, template_name).await?;
    let choice = pool_choice(claim);
    // The cache that called for the repair may be behind: another process
    // serving this claim may have stolen the named Pod, or its Sandbox
    // adopted it, and neither write changes the Sandbox's version that the
    // repoint below is conditioned on. So the named Pod is read again first.
    if let Some(named) = named {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        let fresh = pods
            .get_opt(named)
            .await
            .map_err(kube_err(format!("get pod {named}")))?;
        let Some(fresh) =
            fresh.filter(|pod| !is_terminating(pod) && !held(pod, claim_uid, sandbox))
        else {
            return Ok(REPAIRED);
        };
        let idle = template
            .as_ref()
            .is_some_and(|t| usable(ctx, claim, namespace, t, &choice, &fresh));
        if idle && steal_named(ctx, claim, &fresh, sandbox).await? {
            return Ok(REPAIRED);
        }
        if !idle && let Some(wait) = settling(sandbox, &fresh, jiff::Timestamp::now()) {
            // Still its pool's, and not a Pod this process would take (its
            // template or pool changed in this process's view, or it is not
            // Ready): the process that created the Sandbox may have its
            // steal in flight, decided on what it saw. Moving the Sandbox
            // now would let that steal land on a Pod the Sandbox no longer
            // names, and the claim say Ready on it (found by review).
            return Ok(wait);
        }
    }
    let earlier = match earlier_pod(ctx, namespace, claim_uid) {
        Some(pod) if Some(&pod) == named => return Ok(REPAIRED),
        earlier => earlier,
    };
    let serving = match (earlier, template) {
        (Some(pod), _) => Some(pod),
        (None, Some(template)) => {
            let mut found = candidates(ctx, claim, namespace, &template, &choice);
            if let Some(at) = found.iter().position(|p| Some(&p.name_any()) == named) {
                let named = found.remove(at);
                found.insert(0, named);
            }
            let (first, rest) = reserve_first(ctx, found);
            match first {
                Some(first) => take_over(
                    ctx,
                    claim,
                    first,
                    rest,
                    sandbox.uid().as_deref(),
                    named.map(String::as_str),
                )
                .await?
                .map(|t| t.pod.name_any()),
                None => None,
            }
        }
        (None, None) => None,
    };
    if serving.as_ref() == named {
        return Ok(REPAIRED);
    }
    warn!(pod = ?serving, "the Sandbox named a Pod this claim never got; pointing it at the Pod now serving");
    repoint(ctx, sandbox, serving.as_deref())
        .await
        .map(|_| REPAIRED)
}

/// When the claim looks again after a repair that did its part.
const REPAIRED: Duration = Duration::from_millis(200);

/// How long after its Sandbox's creation a named Pod that is still its
/// pool's is left to a steal that may be in flight: the round that created
/// the Sandbox sent its steal alongside, and the API server answers (or
/// gives up on) a write within its request timeout, 60 s by default.
pub(super) const STEAL_SETTLE: Duration = Duration::from_secs(60);

/// `Some(wait)` while `pod`, the named Pod as just read, is still controlled
/// by a pool and `sandbox` is younger than [`STEAL_SETTLE`] at `now`: the
/// Sandbox stays on it, and the claim looks again after `wait` (at least a
/// second, at most what is left of the settle time; the steal's Pod event
/// wakes it sooner). `None` once the steal can no longer land, or when the
/// Pod is not a pool's: then the repair goes on. Pure.
pub(super) fn settling(sandbox: &Sandbox, pod: &Pod, now: jiff::Timestamp) -> Option<Duration> {
    controller_of_kind(pod.owner_references(), "SandboxWarmPool")?;
    // Only a Pod a steal could still land on: Ready, or starting cleanly.
    // One that ended, is unschedulable or whose start went wrong refuses
    // the other process's steal (it re-checks on its retry), so there is
    // nothing to wait for (found by the second read).
    let takeable = crate::controller::pod_is_ready(pod)
        || (!crate::controller::pod_has_ended(pod)
            && crate::controller::warmpool::members::unschedulable_message(pod).is_none()
            && !crate::controller::takeover::start_went_wrong(pod));
    if !takeable {
        return None;
    }
    let created = sandbox.metadata.creation_timestamp.as_ref()?.0;
    let age = now.duration_since(created);
    let left = jiff::SignedDuration::try_from(STEAL_SETTLE).ok()? - age;
    (left > jiff::SignedDuration::ZERO).then(|| {
        Duration::try_from(left)
            .unwrap_or(STEAL_SETTLE)
            .max(Duration::from_secs(1))
    })
}

/// Steals `fresh`, the named Pod as just read and still its pool's, for
/// the claim, through [`take_over`] with no other candidate: true when the
/// claim now holds it (this steal won, or lost to one that took it for this
/// same claim, or won on its one retry after a loss to a write that left it
/// the same idle Pod, which the other process's steal would retry too).
/// Reserved first where this process has not reserved it for another
/// claim, so that a won Pod stays reserved like any other; a lost one is
/// released, whoever reserved it (it went elsewhere, or stayed idle through
/// two tries, and either way no claim here is owed it).
async fn steal_named(
    ctx: &Context,
    claim: &SandboxClaim,
    fresh: &Pod,
    sandbox: &Sandbox,
) -> Result<bool> {
    ctx.reservations.try_reserve(&pod_key(fresh));
    let named = fresh.name_any();
    let taken = take_over(
        ctx,
        claim,
        Arc::new(fresh.clone()),
        Vec::new(),
        sandbox.uid().as_deref(),
        Some(&named),
    )
    .await?;
    Ok(taken.is_some())
}
