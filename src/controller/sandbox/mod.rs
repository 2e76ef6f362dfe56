//! Sandbox controller: one Sandbox becomes exactly one Pod, its volume claims
//! and a headless Service.
//!
//! Each reconcile observes (the Sandbox, the Pods it owns from the cache, the
//! Pod named in `agents.x-k8s.io/pod-name`), decides with the pure [`plan`],
//! acts (create/adopt/delete), and records the status computed by the pure
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
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, instrument};

use super::takeover::{adopt_patch, changed_since};
use super::{
    Context, Error, Result, controller_ref, controller_uid, create_owned, is_conflict,
    is_not_found, is_terminating, is_unprocessable, kube_err,
};
use crate::api::{ConditionUpdate, POD_NAME_ANNOTATION, Sandbox, SandboxStatus};

mod desired;
mod plan;
mod status;
#[cfg(test)]
mod tests;

pub use desired::{desired_pod, desired_pvcs, desired_service, headless_service, pvc_name};
pub use plan::{Observed, Plan, Step, may_adopt, plan};
pub use status::compute_status;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "sandbox";

/// Ready-condition reasons.
pub mod reason {
    /// The Pod is Running and Ready.
    pub const POD_READY: &str = "PodReady";
    /// The Pod exists but is not Ready yet.
    pub const POD_PENDING: &str = "PodPending";
    /// A Pod is being created.
    pub const CREATING: &str = "CreatingPod";
    /// The named Pod is being taken over.
    pub const ADOPTING: &str = "AdoptingPod";
    /// The named Pod belongs to another owner; it is left alone.
    pub const POD_OWNED_ELSEWHERE: &str = "PodOwnedElsewhere";
    /// The node evicted the Pod; it is replaced.
    pub const POD_EVICTED: &str = "PodEvicted";
    /// The Pod failed.
    pub const POD_FAILED: &str = "PodFailed";
    /// The Pod ran to completion.
    pub const POD_SUCCEEDED: &str = "PodSucceeded";
    /// The Pod is being deleted.
    pub const POD_TERMINATING: &str = "PodTerminating";
    /// `replicas: 0`.
    pub const PAUSED: &str = "Paused";
    /// `shutdownTime` has passed.
    pub const EXPIRED: &str = "SandboxExpired";
    /// The pod template fails the current admission policy; no Pod is created.
    pub const POLICY_VIOLATION: &str = "PolicyViolation";
    /// More than one Pod is owned; nothing more is created.
    pub const MULTIPLE_PODS: &str = "MultiplePods";
}

/// Reconciles one Sandbox.
#[instrument(skip_all, fields(sandbox = %sandbox.name_any(), namespace = sandbox.namespace().unwrap_or_default()))]
pub async fn reconcile(sandbox: Arc<Sandbox>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    if is_terminating(sandbox.as_ref()) {
        return Ok(Action::await_change());
    }
    let namespace = sandbox.namespace().ok_or(Error::Incomplete("namespace"))?;
    let uid = sandbox.uid().ok_or(Error::Incomplete("uid"))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);

    if sandbox.status.is_none() {
        super::timeline(
            sandbox.as_ref(),
            &sandbox.name_any(),
            "sandbox: reconcile starts",
        );
    }

    // Observe.
    let owned: Vec<Arc<Pod>> = ctx
        .index
        .controlled_by(&uid)
        .iter()
        .filter_map(|r| ctx.pods.get(r))
        .filter(|p| {
            p.namespace().as_deref() == Some(&namespace)
                && controller_uid(&p.metadata) == Some(uid.as_str())
        })
        .collect();
    // The named Pod: the cache copy when it already shows the steal (the
    // usual case: the steal's event arrives with the Sandbox's), else a
    // fresh read. A stale copy only costs a failed conditioned write.
    let named = match sandbox.annotations().get(POD_NAME_ANNOTATION) {
        Some(name) if owned.is_empty() => {
            let cached = ctx
                .pods
                .get(&ObjectRef::new(name).within(&namespace))
                .filter(|p| {
                    !is_terminating(p.as_ref())
                        && controller_uid(&p.metadata).is_some()
                        && may_adopt(&sandbox, p)
                });
            match cached {
                Some(pod) => Some(pod),
                None => pods
                    .get_opt(name)
                    .await
                    .map_err(kube_err(format!("get pod {name}")))?
                    .map(Arc::new),
            }
        }
        _ => None,
    };
    // The cache may not show our own adoption yet; the fresh read does.
    let (owned, named) = match named {
        Some(pod) if controller_uid(&pod.metadata) == Some(uid.as_str()) => (vec![pod], None),
        named => (owned, named),
    };
    let observed = Observed {
        sandbox: &sandbox,
        owned,
        named,
        now: jiff::Timestamp::now(),
    };

    // Decide.
    let plan = plan(&observed);

    // Act. The headless Service does not depend on the Pod steps, so it is
    // created alongside them (one round trip less on the warm path).
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let service_key = format!("service/{uid}");
    // A claim creates its Sandbox's Service itself (alongside the Sandbox,
    // owned by the claim); only a standalone Sandbox gets one from here.
    let claimed = sandbox
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "SandboxClaim");
    let needs_service = !claimed
        && (sandbox
            .status
            .as_ref()
            .and_then(|s| s.service.as_ref())
            .is_none()
            || ctx.services_missing(&namespace, &sandbox.name_any()))
        && !ctx
            .written
            .recently_wrote(&service_key, &serde_json::Value::Bool(true));
    let service = async {
        if needs_service {
            create_owned(&services, &desired_service(&sandbox)?, "Service").await?;
            ctx.written
                .record(&service_key, serde_json::Value::Bool(true));
        }
        Ok::<_, Error>(())
    };
    let (outcome, service_created) = futures::join!(
        act(&ctx, &sandbox, &observed, &plan, &pods, &namespace),
        service
    );
    service_created?;
    let (current, blocked) = match outcome? {
        Outcome::Done(action) => return Ok(action),
        Outcome::Continue { current, blocked } => (current, blocked),
    };

    // Record.
    if plan.quiet {
        return Ok(Action::await_change());
    }
    let status = compute_status(
        &sandbox,
        current.as_deref(),
        blocked.as_ref(),
        &ctx.config.cluster_domain,
        jiff::Timestamp::now(),
    );
    let status_key = format!("status/{uid}");
    let status_value = super::WriteMemo::status_key_value(&status);
    if sandbox.status.as_ref() != Some(&status)
        && !ctx.written.recently_wrote(&status_key, &status_value)
    {
        if !write_status(&ctx, &sandbox, &status).await? {
            return Ok(Action::await_change());
        }
        ctx.written.record(&status_key, status_value);
        if crate::api::is_true(&status.conditions, crate::api::READY) {
            super::timeline(
                sandbox.as_ref(),
                &sandbox.name_any(),
                "sandbox: Ready written",
            );
        }
    }
    Ok(plan
        .requeue_after
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// What the act phase leaves for the record phase.
enum Outcome {
    /// Nothing more to do in this reconcile.
    Done(Action),
    /// The Pod as now known, and why it cannot be Ready (if so).
    Continue {
        current: Option<Box<Pod>>,
        blocked: Option<ConditionUpdate>,
    },
}

/// Carries out the plan's steps in order.
async fn act(
    ctx: &Context,
    sandbox: &Sandbox,
    observed: &Observed<'_>,
    plan: &Plan,
    pods: &Api<Pod>,
    namespace: &str,
) -> Result<Outcome> {
    let mut current: Option<Pod> = observed
        .owned
        .iter()
        .find(|p| !is_terminating(p.as_ref()))
        .map(|p| (**p).clone());
    if current.is_none() {
        current = observed.owned.first().map(|p| (**p).clone());
    }
    let mut blocked = plan.blocked.clone();
    for step in &plan.steps {
        match step {
            Step::DeleteSandbox => {
                let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), namespace);
                info!("shutdownTime passed: deleting the Sandbox");
                match api
                    .delete(&sandbox.name_any(), &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(kube_err("delete expired sandbox")(e)),
                }
                return Ok(Outcome::Done(Action::await_change()));
            }
            Step::DeletePod { name, uid } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match pods.delete(name, &params).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                    Err(e) => return Err(kube_err(format!("delete pod {name}"))(e)),
                }
                current = None;
            }
            Step::Adopt { name } => {
                let pod = observed
                    .named
                    .as_ref()
                    .ok_or(Error::Incomplete("adopt planned without the named Pod"))?;
                match adopt(pods, pod, sandbox).await? {
                    Some(adopted) => {
                        info!(pod = %name, "adopted Pod");
                        super::timeline(sandbox, &sandbox.name_any(), "sandbox: Pod adopted");
                        blocked = None;
                        current = Some(adopted);
                    }
                    None => {
                        // The Pod changed since it was read: decide again
                        // on fresh data.
                        return Ok(Outcome::Done(Action::requeue(Duration::from_millis(10))));
                    }
                }
            }
            Step::CreatePod => {
                // The policy holds at creation time too: a template admitted
                // under an older or laxer policy starts no Pod.
                let denials = crate::admission::check_pod_template(
                    &ctx.config.policy.current(),
                    &sandbox.spec.pod_template,
                );
                if !denials.is_empty() {
                    let message = format!(
                        "the pod template violates the admission policy, no Pod is created: {}",
                        denials
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                    ctx.event(
                        sandbox,
                        EventType::Warning,
                        reason::POLICY_VIOLATION,
                        "CreatePod",
                        message.clone(),
                    )
                    .await;
                    blocked = Some(ConditionUpdate::ready(
                        false,
                        reason::POLICY_VIOLATION,
                        message,
                    ));
                    current = None;
                    continue;
                }
                let pvcs: Api<PersistentVolumeClaim> =
                    Api::namespaced(ctx.client.clone(), namespace);
                for pvc in desired_pvcs(sandbox)? {
                    create_owned(&pvcs, &pvc, "PersistentVolumeClaim").await?;
                }
                let pod = desired_pod(sandbox)?;
                create_owned(pods, &pod, "Pod").await?;
                current = Some(pod);
                blocked = None;
            }
            Step::Event {
                warning,
                reason,
                note,
            } => {
                let type_ = if *warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                ctx.event(sandbox, type_, reason, "Reconcile", note.clone())
                    .await;
            }
        }
    }

    Ok(Outcome::Continue {
        current: current.map(Box::new),
        blocked,
    })
}

/// Takes over `pod` for the Sandbox. Returns the Pod as written, or `None`
/// when the Pod changed since it was read (someone else wrote first).
///
/// Guarantee: ONE write, conditioned on the resourceVersion read
/// ([`adopt_patch`]); a Pod owned by anything other than this Sandbox's
/// claim is never passed here ([`may_adopt`]).
async fn adopt(pods: &Api<Pod>, pod: &Pod, sandbox: &Sandbox) -> Result<Option<Pod>> {
    let patch = adopt_patch(pod, &sandbox.name_any(), controller_ref(sandbox)?)
        .ok_or(Error::Incomplete("pod resourceVersion"))?;
    match pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(p) => Ok(Some(p)),
        Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(None),
        Err(e)
            if is_unprocessable(&e)
                && changed_since(pods, &pod.name_any(), pod.resource_version().as_deref())
                    .await
                    .map_err(kube_err(format!("re-read pod {}", pod.name_any())))? =>
        {
            Ok(None)
        }
        Err(e) => Err(kube_err(format!("adopt pod {}", pod.name_any()))(e)),
    }
}

/// Writes the Sandbox status (see [`super::write_status`]).
pub(crate) async fn write_status(
    ctx: &Context,
    sandbox: &Sandbox,
    status: &SandboxStatus,
) -> Result<bool> {
    let api: Api<Sandbox> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    super::write_status(
        &api,
        sandbox,
        status,
        &[
            "conditions",
            "service",
            "serviceFQDN",
            "replicas",
            "selector",
            "podName",
            "podIP",
            "nodeName",
        ],
        "sandbox",
    )
    .await
}
