//! Claim controller: the fast path.
//!
//! # The warm path: two rounds of writes, no watch hop
//! 1. **Pick** (no write): the claim's template from the cache, and an idle,
//!    Ready Pod of the template's current hash whose controller is the live
//!    pool its label names, reserved in memory so no other reconcile of this
//!    process picks it.
//! 2. **Round one**, side by side: the steal (ONE write conditioned on the
//!    Pod's resourceVersion: owner becomes the claim, pool label removed,
//!    claim and sandbox labels added), the Sandbox named after the claim with
//!    `agents.x-k8s.io/pod-name: <pod>`, the claim's deny-ingress
//!    NetworkPolicy and the Sandbox's headless Service (both select the
//!    sandbox label that the steal sets).
//! 3. **Round two**: the claim's status, Ready, carrying everything a client
//!    needs to connect (Sandbox, Pod name and IPs, Service and FQDN, launch
//!    type), written only when the steal's own response shows the Pod Ready
//!    and the NetworkPolicy and Service exist.
//!
//! Off the critical path the Sandbox controller takes the Pod over from the
//! claim (claim -> Sandbox -> Pod, again a conditioned write) and reports
//! the Sandbox Ready; the claim's status then already matches and is not
//! written again. A lost steal costs the next candidate and, when the
//! Sandbox already named the lost Pod, one write to point it at the winner
//! (or at none: cold path), never a wrong assignment.
//!
//! # A pool that ran dry
//! No idle Pod is Ready, but the pool has Pods still starting (its refills):
//! the claim takes one of them (on a node first, then the oldest) the same
//! way, in round one, so it
//! waits for a start already under way instead of starting one more from
//! nothing. Round two then writes what the claim got (Sandbox, Pod, pool,
//! Service) with `Ready=False` and launch type `Cold` (it waits for a start,
//! and sizing counts a miss), and the claim mirrors the Sandbox's readiness
//! from there (a claim holding such a Pod that has said nothing yet says it
//! on its next reconcile, see `record`). A starting Pod that restarted,
//! failed, is Unschedulable or waits on an image or configuration error is
//! not taken. Its refill time still counts for the pool when it turns Ready
//! (see `index`).
//!
//! # The cold path
//! No usable Pod: the Sandbox is created without the annotation (with the
//! NetworkPolicy and Service beside it) and the Sandbox controller starts a
//! Pod; the claim mirrors the Sandbox's readiness.
//!
//! # Guarantees
//! - a Pod serves at most one claim: the steal is conditioned on the
//!   resourceVersion read, and only Pods controlled by a live pool are taken;
//! - a claim is served by at most one Pod: before stealing, the controller
//!   looks for a Pod already stolen for this claim's uid (in memory, then in
//!   the cache, which is complete after a restart); if two processes race on
//!   the same claim, the one whose Sandbox create loses deletes the Pod it
//!   stole (owned by the claim, never served);
//! - a claim never uses an object it does not control: a Sandbox, Service or
//!   NetworkPolicy found under its name with another controller gives the
//!   claim `Ready=False` with reason `NameConflict` and an Event;
//! - the NetworkPolicy exists before the claim says Ready.

mod cold_pod;
mod desired;
mod expire;
mod legs;
mod network;
mod repair;
mod serve;
mod status;
mod steal;
mod surplus;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use crate::controller::Action;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::instrument;

pub(crate) use desired::sandbox_network_policy;
pub use desired::{
    PoolChoice, desired_network_policy, desired_sandbox, desired_service,
    desired_template_network_policy, lockdown_network_policy, network_policy_name, pool_choice,
    same_policy_spec, template_network_policy_name,
};
use network::ensure_network_policy;
pub(crate) use network::policy_memo_keys;
pub use serve::ensure_template_policy;
pub(crate) use serve::template_policy_key;
pub(crate) use serve::waits_for_its_template;
pub use status::{
    admitted_at, failed_status, failed_without_sandbox, mirror_status, starting_status,
    warm_ready_status,
};
pub use steal::{MAX_STEAL_ATTEMPTS, StealOutcome, steal};

use super::{
    Context, Error, Result, controller_ref, controller_uid, create_owned, kube_err, live_target,
    write_status,
};
use crate::api::{
    CLAIM_UID_LABEL, LaunchType, READY, Sandbox, SandboxClaim, SandboxClaimStatus, is_true, reason,
};
use crate::controller::sandbox::headless_service;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "claim";

/// Reconciles one claim.
#[instrument(skip_all, fields(claim = %claim.name_any(), namespace = claim.namespace().unwrap_or_default()))]
pub async fn reconcile(claim: Arc<SandboxClaim>, ctx: Arc<Context>) -> Result<Action> {
    let Some((namespace, claim_uid)) = live_target(claim.as_ref())? else {
        return Ok(Action::await_change());
    };
    let name = claim.name_any();
    if claim.status.is_none() {
        super::timeline(claim.as_ref(), &name, "claim: reconcile starts");
    }
    let now = jiff::Timestamp::now();

    // Lifecycle.
    let deadline = claim
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.shutdown_time.as_ref())
        .map(|t| t.0);
    if let Some(deadline) = deadline.filter(|d| *d <= now) {
        return expire::expire(&ctx, &claim, deadline).await;
    }
    let requeue = Requeue {
        expiry: deadline
            .and_then(|d| Duration::try_from(d.duration_since(now)).ok())
            .map(|d| d + Duration::from_millis(50)),
    };

    let mut without_sandbox = false;
    let result = observe_and_serve(
        &ctx,
        &claim,
        (&namespace, &claim_uid),
        requeue,
        &mut without_sandbox,
    )
    .await;
    match result {
        Err(error) => report_failure(&ctx, &claim, error, without_sandbox).await,
        Ok(action) => Ok(requeue.by_expiry(action)),
    }
}

/// Sets `without_sandbox` while the claim has no Sandbox of its own (it is
/// being served, or a Sandbox of its name is another's): a failure then
/// names no Sandbox or Pod (see [`report_failure`]).
async fn observe_and_serve(
    ctx: &Arc<Context>,
    claim: &SandboxClaim,
    (namespace, claim_uid): (&str, &str),
    requeue: Requeue,
    without_sandbox: &mut bool,
) -> Result<Action> {
    let name = claim.name_any();
    // Observe. A Sandbox in the cache certainly exists (its status may lag
    // by one event, which the next event fixes). A claim that never had a
    // status goes straight to serving: the cache was complete when this
    // process started and shows what it created since, and if another
    // process created the Sandbox meanwhile, the create answers
    // AlreadyExists (see [`serve`]). A served claim whose Sandbox the cache
    // lacks is read from the API server. Either way a Sandbox controlled by
    // anything but this claim is never used.
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = match ctx
        .caches
        .sandboxes
        .get(&ObjectRef::new(&name).within(namespace))
    {
        Some(sandbox) => {
            ctx.written.forget(&sandbox_key(claim_uid));
            Some((*sandbox).clone())
        }
        // This process created the Sandbox moments ago and the caches have
        // not caught up (another event, its Service's say, woke the claim
        // first):
        // the Sandbox's own event is on its way and wakes the claim. Serving
        // again now would only repeat round one's creates.
        None if ctx
            .written
            .recently_wrote(&sandbox_key(claim_uid), &serde_json::Value::Bool(true)) =>
        {
            return Ok(requeue.until_ready(false));
        }
        None if claim.status.is_some() => sandboxes
            .get_opt(&name)
            .await
            .map_err(kube_err("get sandbox"))?,
        None => None,
    };
    let sandbox = match existing {
        Some(sandbox) if controller_uid(&sandbox.metadata) == Some(claim_uid) => sandbox,
        Some(_) => {
            *without_sandbox = true;
            return Err(Error::NameConflict {
                kind: "Sandbox",
                name,
                owner: format!("SandboxClaim {}", claim.name_any()),
            });
        }
        None => {
            *without_sandbox = true;
            let served = serve::serve(ctx, claim, namespace, claim_uid).await?;
            *without_sandbox = false;
            match served {
                serve::Served::Sandbox(s) => *s,
                serve::Served::Waiting(action) => return Ok(action),
            }
        }
    };

    // A warm Sandbox naming a Pod the claim never got (crash between the
    // Sandbox create and the steal, or a lost race): steal again and repoint.
    let ready = claim
        .status
        .as_ref()
        .is_some_and(|s| is_true(&s.conditions, READY));
    if !ready && repair::needs_repair(ctx, claim_uid, &sandbox) {
        let again = repair::repair(ctx, claim, &sandbox, namespace, claim_uid).await?;
        return Ok(Action::requeue(again));
    }

    let cold = cold_pod::cold_pods(ctx, &sandbox);
    ensure_network_policy(ctx, claim, namespace, ready, &cold).await?;
    cold_pod::co_own_policy(ctx, claim, &cold, namespace).await;
    ensure_service(ctx, claim, &sandbox).await?;

    record(ctx, claim, &sandbox, namespace, claim_uid, requeue).await
}

/// Mirrors the Sandbox's status into the claim's and gives back surplus
/// Pods. A Sandbox that has not reported anything yet has nothing to
/// mirror: its first status event brings us back (and, as for every claim
/// not Ready, the re-check of [`Requeue`] in case that event never comes).
/// Only a warm Sandbox (one naming a Pod) can wait on a steal; a cold one
/// waits on its own Pod's start, whose events come.
async fn record(
    ctx: &Context,
    claim: &SandboxClaim,
    sandbox: &Sandbox,
    namespace: &str,
    claim_uid: &str,
    requeue: Requeue,
) -> Result<Action> {
    let cold = !sandbox
        .annotations()
        .contains_key(crate::api::POD_NAME_ANNOTATION);
    // A claim that has said nothing yet while holding a pool Pod that is
    // not Ready took it still starting (its round two's status write was
    // refused or never came: a retry after a failed round one, a repair):
    // it says so now, so that it reads `cold`, not `warm`, from then on.
    if claim
        .status
        .as_ref()
        .is_none_or(|s| s.launch_type.is_none())
        && let Some(pod) = held_starting(ctx, claim_uid, sandbox, namespace)
    {
        let now = jiff::Timestamp::now();
        let status = starting_status(claim, &pod, &ctx.config.cluster_domain, now);
        record_status(ctx, claim, &status).await?;
        return Ok(requeue.until_ready(false));
    }
    if sandbox.status.is_none() && claim.status.is_none() {
        return Ok(requeue.until_ready(cold));
    }
    let mut status = mirror_status(claim, sandbox, jiff::Timestamp::now());
    // The pool that served it, unless it had been served (and Ready)
    // before: a claim first served cold keeps saying so (second read).
    if status.warm_pool.is_none()
        && claim
            .status
            .as_ref()
            .and_then(status::first_served)
            .is_none()
    {
        status.warm_pool = ctx.stolen_pool(namespace, status.pod_name.as_deref());
    }
    record_status(ctx, claim, &status).await?;
    if !surplus::give_back_surplus(ctx, claim_uid, sandbox).await? {
        return Ok(requeue.within(SURPLUS_RECHECK));
    }
    Ok(requeue.until_ready(cold || is_true(&status.conditions, READY)))
}

/// The pool Pod the claim's Sandbox names, when the claim holds it (stolen
/// for it, or adopted by its Sandbox) and the cache shows it not Ready yet.
fn held_starting(
    ctx: &Context,
    claim_uid: &str,
    sandbox: &Sandbox,
    namespace: &str,
) -> Option<Arc<k8s_openapi::api::core::v1::Pod>> {
    let named = sandbox.annotations().get(crate::api::POD_NAME_ANNOTATION)?;
    let pod = ctx
        .caches
        .pods
        .get(&ObjectRef::new(named).within(namespace))?;
    let held = steal::stolen_for(&pod, claim_uid, sandbox.uid().as_deref());
    (held && pod.labels().contains_key(crate::api::ORIGIN_POOL_LABEL) && !super::pod_is_ready(&pod))
        .then_some(pod)
}

/// How long a claim that is not Ready on a warm Sandbox waits, at most,
/// before it is looked at again without any event. Every step of the claim path is woken by an
/// event, but two processes serving one claim at once (a split brain) can
/// leave each waiting for the other: the Sandbox for a steal that will not
/// land, the claim for a Sandbox status that will not come. The re-check
/// repairs such a claim within seconds instead of at the periodic resync.
pub(super) const NOT_READY_RECHECK: Duration = Duration::from_secs(5);

/// How soon a claim looks again at a surplus Pod whose give-back was
/// refused with a conflict (written since the cache's copy, a status
/// update say). No event of that Pod wakes the claim (it names another
/// Pod), so without this the unused Pod (which its pool already replaced)
/// would keep running until the periodic resync.
const SURPLUS_RECHECK: Duration = Duration::from_secs(1);

/// When a claim is looked at again: at its expiry, if it has one; while it
/// is not Ready, within [`NOT_READY_RECHECK`]; while a surplus Pod's
/// give-back is refused, within [`SURPLUS_RECHECK`] (see `within`).
#[derive(Clone, Copy)]
struct Requeue {
    expiry: Option<Duration>,
}

impl Requeue {
    fn until_ready(self, ready: bool) -> Action {
        let after = match (self.expiry, ready) {
            (expiry, true) => expiry,
            (Some(expiry), false) => Some(expiry.min(NOT_READY_RECHECK)),
            (None, false) => Some(NOT_READY_RECHECK),
        };
        after
            .map(Action::requeue)
            .unwrap_or_else(Action::await_change)
    }

    /// Within `limit`, or at the expiry if that comes first.
    fn within(self, limit: Duration) -> Action {
        Action::requeue(self.expiry.map_or(limit, |expiry| expiry.min(limit)))
    }

    /// `action`, or the expiry if that comes first: every path's requeue
    /// (a missing template's minute, say) ends at the shutdown time. Before
    /// (found by review), some waited past it.
    fn by_expiry(self, action: Action) -> Action {
        match (self.expiry, action.requeue_after()) {
            (Some(expiry), None) => Action::requeue(expiry),
            (Some(expiry), Some(after)) if expiry < after => Action::requeue(expiry),
            _ => action,
        }
    }
}

/// Memo key of the claim's Sandbox created by this process.
fn sandbox_key(claim_uid: &str) -> String {
    format!("sandbox/{claim_uid}")
}

/// Memo key of the claim's Service created by this process.
fn service_key(claim_uid: &str) -> String {
    format!("service/{claim_uid}")
}

/// Creates the Service when the cache lacks it (and this process did not
/// just create it).
async fn ensure_service(ctx: &Context, claim: &SandboxClaim, sandbox: &Sandbox) -> Result<()> {
    let namespace = claim.namespace().unwrap_or_default();
    let claim_uid = claim.uid().unwrap_or_default();
    let key = service_key(&claim_uid);
    match ctx.service_controller(&namespace, &claim.name_any()) {
        // Ours (the claim's, or its Sandbox's on the cold path).
        Some(Some(uid)) if uid == claim_uid || sandbox.uid().as_deref() == Some(uid.as_str()) => {
            ctx.written.forget(&key);
            return Ok(());
        }
        // A Service of that name controlled by anything else (it may carry
        // our labels: the cache selects by them) is never used.
        Some(_) => {
            return Err(Error::NameConflict {
                kind: "Service",
                name: claim.name_any(),
                owner: format!("SandboxClaim {}", claim.name_any()),
            });
        }
        None => {}
    }
    if ctx
        .written
        .recently_wrote(&key, &serde_json::Value::Bool(true))
    {
        return Ok(());
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let owner = controller_ref(claim)?;
    let uid = owner.uid.clone();
    let service = headless_service(
        &claim.name_any(),
        claim.namespace(),
        &sandbox.spec.pod_template.spec,
        owner,
        (CLAIM_UID_LABEL, uid),
    )?;
    create_owned(&services, &service, "Service").await?;
    ctx.written.record(&key, serde_json::Value::Bool(true));
    Ok(())
}

/// Writes `status` unless the claim already shows it (or this process just
/// wrote it); on the first Ready, records the claim-to-Ready latency.
/// Returns whether this call wrote the claim's first Ready (false when the
/// write was skipped or refused as stale).
pub(crate) async fn record_status(
    ctx: &Context,
    claim: &SandboxClaim,
    status: &SandboxClaimStatus,
) -> Result<bool> {
    let claim_uid = claim.uid().unwrap_or_default();
    let status_key = format!("status/{claim_uid}");
    let status_value = super::WriteMemo::status_key_value(status);
    if claim.status.as_ref() == Some(status)
        || ctx.written.recently_wrote_over(
            &status_key,
            &status_value,
            claim.resource_version().as_deref(),
        )
    {
        return Ok(false);
    }
    if !write_status(ctx, claim, status).await? {
        return Ok(false);
    }
    ctx.written.record_over(
        &status_key,
        status_value,
        claim.resource_version().as_deref(),
    );
    let was_ready = claim
        .status
        .as_ref()
        .is_some_and(|s| is_true(&s.conditions, READY));
    let first_ready = is_true(&status.conditions, READY) && !was_ready;
    if first_ready {
        super::timeline(claim, &claim.name_any(), "claim: Ready written");
        // Counted once per claim: two reconciles working from the same
        // stale copy would otherwise both see "never Ready before".
        let counted_key = format!("ready-counted/{claim_uid}");
        if claim
            .status
            .as_ref()
            .and_then(|s| s.ready_time.as_ref())
            .is_none()
            && !ctx
                .written
                .recently_wrote(&counted_key, &serde_json::Value::Bool(true))
        {
            ctx.written
                .record(&counted_key, serde_json::Value::Bool(true));
            let launch = status.launch_type.unwrap_or(LaunchType::Cold);
            if let Some(seconds) = status.time_to_ready_seconds {
                ctx.metrics
                    .claim_ready_seconds
                    .with_label_values(&[
                        &claim.namespace().unwrap_or_default(),
                        launch.as_str(),
                        &claim.spec.sandbox_template_ref.name,
                    ])
                    .observe(seconds);
            }
            ctx.metrics
                .claims
                .with_label_values(&[launch.as_str()])
                .inc();
        }
    }
    Ok(first_ready)
}

/// Makes a failure visible where the user looks: `Ready=False` with a reason
/// and the API server's (or webhook's) message, and a Warning Event; then
/// hands the error back for the retry with backoff. `without_sandbox`: the
/// claim has no Sandbox of its own (the failure came while serving it), so
/// the status names no Sandbox or Pod ([`failed_without_sandbox`]).
async fn report_failure(
    ctx: &Context,
    claim: &SandboxClaim,
    error: Error,
    without_sandbox: bool,
) -> Result<Action> {
    let Some((reason, message)) =
        crate::controller::errors::refusal(&error, reason::SANDBOX_REJECTED)
    else {
        return Err(error);
    };
    let now = jiff::Timestamp::now();
    let mut status = if without_sandbox {
        failed_without_sandbox(claim, reason, message.clone(), now)
    } else {
        failed_status(claim, reason, message.clone(), now)
    };
    // A Service of the claim's name that is someone else's is never named
    // (found by the second read: the claim kept its FQDN while its Sandbox
    // had dropped it).
    if let (
        Error::NameConflict {
            kind: "Service", ..
        },
        Some(sandbox),
    ) = (&error, status.sandbox.as_mut())
    {
        sandbox.service = None;
        sandbox.service_fqdn = None;
    }
    if claim.status.as_ref() != Some(&status) {
        record_status(ctx, claim, &status).await?;
        ctx.event(claim, EventType::Warning, reason, "Serve", message)
            .await;
    }
    Err(error)
}
