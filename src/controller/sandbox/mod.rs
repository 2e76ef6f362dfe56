//! Sandbox controller: one Sandbox becomes exactly one Pod, its volume claims
//! and a headless Service.
//!
//! Each reconcile observes (the Sandbox, the Pods it owns from the cache, the
//! Pod named in `agents.x-k8s.io/pod-name`), decides with the pure [`plan`],
//! acts (create/adopt/delete, in `act.rs`), and records the status computed by the pure
//! [`compute_status`] from what it now knows of the Pod.
//!
//! Guarantees:
//! - a Pod is adopted only by a write conditioned on the resourceVersion read
//!   ([`super::takeover::adopt_patch`]), and only when it is unowned or owned
//!   by the claim that owns this Sandbox;
//! - the Pod created for a Sandbox has the Sandbox's name, so a reconcile that
//!   runs again before the cache shows the Pod (or after a crash) gets
//!   AlreadyExists instead of a duplicate;
//! - with two Pods owned, nothing more is created and status says so.

use std::sync::Arc;

use crate::controller::Action;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use tracing::instrument;

use self::act::{Outcome, act};
use super::{
    Context, Error, Result, controller_uid, create_owned, is_terminating, kube_err, live_target,
    write_status,
};
use crate::api::{ConditionUpdate, POD_NAME_ANNOTATION, Sandbox};

mod act;
mod desired;
mod network;
mod plan;
mod status;
#[cfg(test)]
mod tests;

pub use desired::{
    desired_pod, desired_pvcs, desired_service, headless_service, pvc_name, service_fqdn,
};
pub(crate) use network::standalone_policy_key;
pub use network::{
    Coverage, coverage, desired_standalone_policy, standalone_policy_name,
    waiting_for_the_claims_policy,
};
pub use plan::{Observed, Plan, Step, may_adopt, plan};
pub use status::compute_status;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "sandbox";

/// Reconciles one Sandbox: observe, decide, act, record.
#[instrument(skip_all, fields(sandbox = %sandbox.name_any(), namespace = sandbox.namespace().unwrap_or_default()))]
pub async fn reconcile(sandbox: Arc<Sandbox>, ctx: Arc<Context>) -> Result<Action> {
    let Some((namespace, uid)) = live_target(sandbox.as_ref())? else {
        return Ok(Action::await_change());
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);

    if sandbox.status.is_none() {
        super::timeline(
            sandbox.as_ref(),
            &sandbox.name_any(),
            "sandbox: reconcile starts",
        );
    }

    let observed = observe(&ctx, &sandbox, &pods, &namespace, &uid).await?;
    let mut plan = plan(&observed);
    // A standalone Sandbox's policy is in place before its Pod starts.
    let ensured = network::ensure(&ctx, &sandbox, &namespace, &uid, &observed.owned).await;
    hold_for_network(&mut plan, ensured);

    // Act. The headless Service does not depend on the Pod steps, so it is
    // created alongside them (one round trip less on the warm path).
    let (outcome, service_conflict) = futures::join!(
        act(&ctx, &sandbox, &observed, &plan, &pods, &namespace),
        ensure_service(&ctx, &sandbox, &namespace, &uid)
    );
    let (outcome, service_conflict) = match (outcome, service_conflict) {
        (Ok(outcome), Ok(conflict)) => (outcome, conflict),
        // Only the Service was refused: the Pod (if any) is still reported.
        (Ok(Outcome::Continue { current, .. }), Err(error)) => {
            let reported = Reported {
                current: current.as_deref(),
                podless: None,
                service_ours: true,
            };
            return report_failure(&ctx, &sandbox, &uid, reported, error).await;
        }
        (Ok(Outcome::Done(_)), Err(error)) => return Err(error),
        (Err(error), service) => {
            let reported = Reported::after_failed_act(&sandbox, &observed, &plan, &service);
            return report_failure(&ctx, &sandbox, &uid, reported, error).await;
        }
    };
    let (current, blocked) = match outcome {
        Outcome::Done(action) => return Ok(action),
        Outcome::Continue { current, blocked } => (current, blocked),
    };
    // What stops the Pod itself (a policy violation, a pause) says so first;
    // else a Service that is not this Sandbox's.
    let service_ours = service_conflict.is_none();
    let blocked = blocked.or_else(|| {
        service_conflict.map(|message| {
            ConditionUpdate::ready(false, crate::api::reason::NAME_CONFLICT, message)
        })
    });

    // A claim's Sandbox that is not Ready is looked at again within
    // `CLAIMED_RECHECK` without any event. Every event of the Pod it names
    // wakes it (see `index::named`); the re-check is the net under what no
    // event announces: two processes serving one claim can leave it waiting
    // for a steal that will not land.
    let recheck = (plan::claimed(&sandbox)
        && !sandbox
            .status
            .as_ref()
            .is_some_and(|s| crate::api::is_true(&s.conditions, crate::api::READY)))
    .then_some(CLAIMED_RECHECK);
    let idle = || {
        recheck
            .map(Action::requeue)
            .unwrap_or_else(Action::await_change)
    };
    // Record, unless the plan says to stay quiet.
    if plan.quiet {
        return Ok(idle());
    }
    // A status write refused because a newer version exists is dropped:
    // the newer version's event reconciles again.
    if !record(
        &ctx,
        &sandbox,
        &uid,
        current.as_deref(),
        blocked.as_ref(),
        service_ours,
    )
    .await?
    {
        return Ok(idle());
    }
    Ok(match (plan.requeue_after, recheck) {
        (Some(after), Some(recheck)) => Action::requeue(after.min(recheck)),
        (Some(after), None) | (None, Some(after)) => Action::requeue(after),
        (None, None) => Action::await_change(),
    })
}

/// What the Sandbox's (or its claim's) NetworkPolicy holds back in `plan`
/// (see `network::ensure`), and the re-check while it does.
fn hold_for_network(plan: &mut Plan, ensured: network::Ensured) {
    let ensured = match ensured {
        // Only when the plan creates a Pod: the warm path's adoption goes on.
        network::Ensured::HoldCreate(why) => {
            if plan.hold_pod_create(why) {
                network::Ensured::Recheck
            } else {
                network::Ensured::Done
            }
        }
        ensured => ensured,
    };
    if !matches!(ensured, network::Ensured::Done) {
        if let network::Ensured::Hold(why) = ensured {
            plan.hold_pod_start(why);
        }
        // A policy that is not the operator's wakes nothing when it goes.
        plan.requeue_after = Some(
            plan.requeue_after
                .map_or(POLICY_RECHECK, |after| after.min(POLICY_RECHECK)),
        );
    }
}

/// A refusal of the API server (a Pod, volume claim or Service the Sandbox
/// makes: a name taken by an object that is not its own, a quota, a
/// missing permission, an invalid object) said in the Sandbox's `Ready`
/// condition and a Warning Event, then returned for the backoff. Before
/// (found by review) it was only logged: a Sandbox whose volume claim name
/// an orphaned one still held, or whose Pod a quota refused, had no status
/// at all. Any other failure is returned as it is, after recording the
/// status without a Pod when the Sandbox owns none (`podless`).
async fn report_failure(
    ctx: &Context,
    sandbox: &Sandbox,
    uid: &str,
    reported: Reported<'_>,
    error: super::Error,
) -> Result<Action> {
    let Reported {
        current,
        podless,
        service_ours,
    } = reported;
    let Some((reason, message)) =
        crate::controller::errors::refusal(&error, crate::api::reason::POD_REJECTED)
    else {
        if let Some(blocked) = podless {
            // A transient failure (a timeout, a 5xx, the webhook down) of a
            // Sandbox that owns no Pod: the status is recorded without one
            // (the status subresource goes through no webhook), then the
            // error goes to the backoff. Before (found by review), nothing
            // was recorded: a claim's Sandbox whose Pod was force-deleted
            // while its Unname failed kept the gone Pod's name, IP and
            // Ready=True until the writes passed.
            if let Err(write) = record(ctx, sandbox, uid, None, blocked, service_ours).await {
                tracing::debug!(%write, "status without a Pod not recorded");
            }
        }
        return Err(error);
    };
    let condition = ConditionUpdate::ready(false, reason, message.clone());
    if sandbox
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == crate::api::READY))
        .is_none_or(|c| c.reason != reason || c.message != message)
    {
        record(ctx, sandbox, uid, current, Some(&condition), service_ours).await?;
        ctx.event(
            sandbox,
            kube::runtime::events::EventType::Warning,
            reason,
            "Reconcile",
            message,
        )
        .await;
    }
    Err(error)
}

/// What [`report_failure`] records along with a refusal: the Pod as now
/// known (`current`), whether the Service under the Sandbox's name is its
/// own, and, when the Sandbox owns no Pod, what keeps it from Ready
/// (`podless`: the plan's reason, if any), which is recorded whatever the
/// failure.
struct Reported<'a> {
    current: Option<&'a Pod>,
    podless: Option<Option<&'a ConditionUpdate>>,
    service_ours: bool,
}

impl<'a> Reported<'a> {
    /// What to report when the Pod steps failed (`service`: how the
    /// Service's step went beside them). With no Pod of its own and the Pod
    /// it names known gone (not found by the fresh read), what the status
    /// says is known whatever failed; a Pod merely missing from the cache,
    /// or one not adopted yet, is not reported gone on a transient error.
    fn after_failed_act(
        sandbox: &Sandbox,
        observed: &Observed<'_>,
        plan: &'a Plan,
        service: &Result<Option<String>>,
    ) -> Reported<'a> {
        let named_is_gone =
            observed.named.is_none() && sandbox.annotations().contains_key(POD_NAME_ANNOTATION);
        Reported {
            current: None,
            podless: (observed.owned.is_empty() && named_is_gone).then_some(plan.blocked.as_ref()),
            service_ours: !matches!(service, Ok(Some(_))),
        }
    }
}

/// See `reconcile`: how often a standalone Sandbox whose NetworkPolicy could
/// not be made (its name taken by an object that is not its own, or a
/// refused write) tries again.
const POLICY_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// See `reconcile`: how long a claim's Sandbox that is not Ready waits, at
/// most, before it is looked at again without an event.
const CLAIMED_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Observes the Pods the Sandbox owns (from the cache) and the Pod named in
/// its adoption annotation, while it owns none.
async fn observe<'a>(
    ctx: &Context,
    sandbox: &'a Sandbox,
    pods: &Api<Pod>,
    namespace: &str,
    uid: &str,
) -> Result<Observed<'a>> {
    let owned: Vec<Arc<Pod>> = ctx
        .caches
        .index
        .controlled_by(uid)
        .iter()
        .filter_map(|r| ctx.caches.pods.get(r))
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace) && controller_uid(&p.metadata) == Some(uid)
        })
        .collect();
    let named = match sandbox.annotations().get(POD_NAME_ANNOTATION) {
        Some(name) if owned.is_empty() => named_pod(ctx, sandbox, pods, namespace, name).await?,
        _ => None,
    };
    // The cache may not show our own adoption yet; the fresh read does.
    let (owned, named) = match named {
        Some(pod) if controller_uid(&pod.metadata) == Some(uid) => (vec![pod], None),
        named => (owned, named),
    };
    Ok(Observed {
        sandbox,
        owned,
        named,
        now: jiff::Timestamp::now(),
    })
}

/// The named Pod: the cache copy when it already shows the steal (the usual
/// case: the steal's event arrives with the Sandbox's), else a fresh read.
/// A stale copy only costs a failed conditioned write.
async fn named_pod(
    ctx: &Context,
    sandbox: &Sandbox,
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<Pod>>> {
    let cached = ctx
        .caches
        .pods
        .get(&ObjectRef::new(name).within(namespace))
        .filter(|p| {
            !is_terminating(p.as_ref())
                && crate::controller::ownership::has_controller(&p.metadata)
                && may_adopt(sandbox, p)
        });
    match cached {
        Some(pod) => Ok(Some(pod)),
        None => Ok(pods
            .get_opt(name)
            .await
            .map_err(kube_err(format!("get pod {name}")))?
            .map(Arc::new)),
    }
}

/// Creates a standalone Sandbox's headless Service when [`needs_service`]
/// says so. A Service under the Sandbox's name that it does not control is
/// never used: `Some(why)` then, and the Sandbox says NameConflict instead
/// of naming it. A claim's Sandbox creates none (its claim does) and is
/// judged by [`claims_service_conflict`].
async fn ensure_service(
    ctx: &Context,
    sandbox: &Sandbox,
    namespace: &str,
    uid: &str,
) -> Result<Option<String>> {
    if plan::claimed(sandbox) {
        return Ok(claims_service_conflict(ctx, sandbox, namespace, uid));
    }
    let service_key = format!("service/{uid}");
    if !needs_service(ctx, sandbox, namespace, uid, &service_key) {
        return Ok(None);
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    match create_owned(&services, &desired_service(sandbox)?, "Service").await {
        Ok(_) => {}
        Err(error @ Error::NameConflict { .. }) => return Ok(Some(error.to_string())),
        Err(error) => return Err(error),
    }
    ctx.written
        .record(&service_key, serde_json::Value::Bool(true));
    Ok(None)
}

/// Why a claim's Sandbox may not name the Service under its name: the
/// Service cache shows one that neither its claim (which makes it) nor the
/// Sandbox controls, ownerless ones included (left by an orphaning
/// deletion, or made by a namespace user after deleting the claim's).
/// `None` when the cache shows the claim's or the Sandbox's, or none at all:
/// the claim is making it (the warm path creates the Sandbox and the
/// Service side by side, and the cache may not show the Service yet), and
/// a foreign one is seen when it lands in the cache, whose event wakes the
/// Sandbox of its name. Before (found by review), a claim's Sandbox always
/// named its Service: one swapped for a foreign Service of the name (which
/// selects someone else's Pods) stayed in its status and its claim's,
/// Ready. Only a Service with the operator's label is in the cache: one
/// without it is refused by the claim's own create (the claim says
/// NameConflict).
fn claims_service_conflict(
    ctx: &Context,
    sandbox: &Sandbox,
    namespace: &str,
    uid: &str,
) -> Option<String> {
    let name = sandbox.name_any();
    let claim = crate::controller::ownership::controller_of_kind(
        sandbox.owner_references(),
        "SandboxClaim",
    )?;
    match ctx.service_controller(namespace, &name)? {
        Some(controller) if controller == uid || controller == claim.uid => None,
        _ => Some(
            Error::NameConflict {
                kind: "Service",
                name,
                owner: format!("SandboxClaim {}", claim.name),
            }
            .to_string(),
        ),
    }
}

/// Whether this reconcile creates the headless Service: a claim creates its
/// Sandbox's Service itself (alongside the Sandbox, owned by the claim), so
/// only a standalone Sandbox gets one from here, when its status names none
/// or the cache does not show it controlled by this Sandbox (`uid`), and not
/// again right after writing it. A Service under the name that is someone
/// else's (the cache selects by a label anyone can write) is tried again
/// too, so that its create answers NameConflict instead of it being used.
fn needs_service(
    ctx: &Context,
    sandbox: &Sandbox,
    namespace: &str,
    uid: &str,
    service_key: &str,
) -> bool {
    let controller = ctx.service_controller(namespace, &sandbox.name_any());
    let ours = matches!(&controller, Some(Some(c)) if c == uid);
    if controller.is_some() {
        // The cache shows one: the memo of its create has done its job.
        ctx.written.forget(service_key);
    }
    !plan::claimed(sandbox)
        && (sandbox
            .status
            .as_ref()
            .and_then(|s| s.service.as_ref())
            .is_none()
            || !ours)
        && !ctx
            .written
            .recently_wrote(service_key, &serde_json::Value::Bool(true))
}

/// Records the status computed from the Pod as now known, unless it is
/// what the Sandbox already shows or what was just written; a Service
/// under its name that is not its own (`service_ours` false) is not named.
/// `false` when the write was dropped because a newer version of the
/// Sandbox exists.
async fn record(
    ctx: &Context,
    sandbox: &Sandbox,
    uid: &str,
    current: Option<&Pod>,
    blocked: Option<&ConditionUpdate>,
    service_ours: bool,
) -> Result<bool> {
    let mut status = compute_status(
        sandbox,
        current,
        blocked,
        &ctx.config.cluster_domain,
        jiff::Timestamp::now(),
    );
    if !service_ours {
        status.service = None;
        status.service_fqdn = None;
    }
    let status_key = format!("status/{uid}");
    let status_value = super::WriteMemo::status_key_value(&status);
    if sandbox.status.as_ref() == Some(&status)
        || ctx.written.recently_wrote_over(
            &status_key,
            &status_value,
            sandbox.resource_version().as_deref(),
        )
    {
        return Ok(true);
    }
    if !write_status(ctx, sandbox, &status).await? {
        return Ok(false);
    }
    ctx.written.record_over(
        &status_key,
        status_value,
        sandbox.resource_version().as_deref(),
    );
    if crate::api::is_true(&status.conditions, crate::api::READY) {
        super::timeline(sandbox, &sandbox.name_any(), "sandbox: Ready written");
    }
    let outdated = |s: Option<&crate::api::SandboxStatus>| {
        s.and_then(|s| crate::api::find_condition(&s.conditions, crate::api::POD_TEMPLATE_APPLIED))
            .map(|c| c.message.clone())
    };
    if let (Some(message), None) = (outdated(Some(&status)), outdated(sandbox.status.as_ref())) {
        ctx.event(
            sandbox,
            kube::runtime::events::EventType::Warning,
            crate::api::reason::POD_TEMPLATE_CHANGED,
            "Reconcile",
            message,
        )
        .await;
    }
    Ok(true)
}
