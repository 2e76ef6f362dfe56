//! The act phase of a Sandbox reconcile: carries out a [`Plan`]'s steps in
//! order (delete the Sandbox, delete a Pod, adopt, create, publish an Event)
//! and says what it leaves for the record phase.
//!
//! Guarantees: a Pod is deleted only with its uid as precondition; a Pod is
//! adopted only by one write conditioned on the resourceVersion read
//! ([`adopt_patch`]); no Pod is created from a template that fails the
//! current admission policy.

use std::time::Duration;

use crate::controller::Action;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::EventType;
use tracing::info;

use super::{Observed, Plan, Step, desired_pod, desired_pvcs, may_adopt};
use crate::api::reason;
use crate::api::{ConditionUpdate, Sandbox};
use crate::controller::ownership::Created;
use crate::controller::pod_patch::{Conditioned, adopt};
use crate::controller::repoint::point_sandbox_at;
use crate::controller::{
    Context, Error, Result, create_owned, is_conflict, is_not_found, is_terminating, kube_err,
};

/// What the act phase leaves for the record phase.
pub(super) enum Outcome {
    /// Nothing more to do in this reconcile.
    Done(Action),
    /// The Pod as now known, and why it cannot be Ready (if so).
    Continue {
        current: Option<Box<Pod>>,
        blocked: Option<ConditionUpdate>,
    },
}

/// Carries out the plan's steps in order.
pub(super) async fn act(
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
        .or_else(|| observed.owned.first())
        .map(|p| (**p).clone());
    let mut blocked = plan.blocked.clone();
    for step in &plan.steps {
        match step {
            Step::DeleteSandbox => {
                delete_sandbox(ctx, sandbox, namespace).await?;
                return Ok(Outcome::Done(Action::await_change()));
            }
            Step::DeletePod { name, uid } => {
                delete_pod(pods, name, uid).await?;
                current = None;
            }
            Step::Adopt { name } => {
                let pod = observed
                    .named
                    .as_ref()
                    .ok_or(Error::Incomplete("adopt planned without the named Pod"))?;
                if let Some(refusal) = offered_pod_refused(ctx, sandbox, pod).await {
                    current = None;
                    blocked = Some(refusal);
                    continue;
                }
                if yield_to_claim(ctx, sandbox).await && changed_in_cache(ctx, pod) {
                    // Decide again on the copy the wait let in.
                    return Ok(Outcome::Done(Action::requeue(Duration::from_millis(10))));
                }
                let Some(adopted) = adopt_fresh(ctx, pods, pod, sandbox).await? else {
                    // The Pod changed twice since it was read: its newer
                    // version's event (a claim's stolen Pod carries this
                    // Sandbox's label, which wakes it) decides again on
                    // fresh data; the requeue is the net for the rest.
                    return Ok(Outcome::Done(Action::requeue(EVENT_NET)));
                };
                info!(pod = %name, "adopted Pod");
                crate::controller::timeline(sandbox, &sandbox.name_any(), "sandbox: Pod adopted");
                blocked = None;
                current = Some(adopted);
            }
            Step::Unname => return unname(ctx, sandbox).await,
            Step::CreatePod => match create_pod(ctx, sandbox, pods, namespace).await? {
                Ok(pod) => {
                    current = Some(pod);
                    blocked = None;
                }
                Err(violation) => {
                    current = None;
                    blocked = Some(violation);
                }
            },
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

/// A Pod its owner offered (no controller, labelled adoptable) is checked
/// against the policy's Pod Security level before it is adopted, like
/// every Pod the operator creates: as stored, with no defaults (they would
/// not change the running Pod). `Some` refusal (said in the Sandbox's Ready
/// condition, with a Warning Event) when it fails; the Pod is left as it
/// is. Before (found by review), a privileged Pod offered this way was
/// adopted, and the Sandbox reported it as its own and Ready. The operator's
/// own Pods (stolen pool Pods, ones it made) were checked when made.
async fn offered_pod_refused(
    ctx: &Context,
    sandbox: &Sandbox,
    pod: &Pod,
) -> Option<ConditionUpdate> {
    let denials = offered_pod_violations(ctx, pod);
    if denials.is_empty() {
        return None;
    }
    let what = format!(
        "Pod {} was offered for adoption but violates the admission policy, it is not adopted",
        pod.name_any()
    );
    Some(policy_violation(ctx, sandbox, "Adopt", &what, &denials).await)
}

/// A policy violation said in a Warning Event (`action`) and returned as the
/// Sandbox's Ready condition: `what` happened, then every denial.
async fn policy_violation(
    ctx: &Context,
    sandbox: &Sandbox,
    action: &str,
    what: &str,
    denials: &[crate::admission::Denial],
) -> ConditionUpdate {
    let message = format!(
        "{what}: {}",
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
        action,
        message.clone(),
    )
    .await;
    ConditionUpdate::ready(false, reason::POLICY_VIOLATION, message)
}

/// What the policy's Pod Security level finds in `pod` as stored, when it
/// is a Pod offered for adoption (no controller); nothing for the
/// operator's own Pods, which were checked when made.
fn offered_pod_violations(ctx: &Context, pod: &Pod) -> Vec<crate::admission::Denial> {
    if crate::controller::ownership::has_controller(&pod.metadata) {
        return Vec::new();
    }
    let object = serde_json::json!({"metadata": &pod.metadata, "spec": &pod.spec});
    crate::admission::pss::check_pod_object(ctx.config.policy.current().pod_security(), &object)
}

/// After a write lost to a newer version of its object, the requeue that
/// stands in for that version's watch event, should it never come (the
/// event itself reruns the reconcile at once).
const EVENT_NET: Duration = Duration::from_secs(1);

/// Adopts `pod`; if the write loses because the copy was stale (the Pod
/// cache lags behind, say while KWOK or the kubelet updates the status), once
/// more on the fresh copy the lost write read back, if the plan's test still
/// passes on it (not terminating, `may_adopt`). Without that second try a
/// lagging cache would replay the same stale copy. `None` when
/// both lost, or the fresh copy may not be adopted.
async fn adopt_fresh(
    ctx: &Context,
    pods: &Api<Pod>,
    pod: &Pod,
    sandbox: &Sandbox,
) -> Result<Option<Pod>> {
    match adopt(pods, pod, sandbox).await? {
        Conditioned::Written(adopted) => Ok(Some(adopted)),
        // Someone (this Sandbox's other reconcile, another process) adopted
        // it meanwhile: done.
        Conditioned::Lost(Some(fresh))
            if crate::controller::controller_uid(&fresh.metadata) == sandbox.uid().as_deref() =>
        {
            Ok(Some(fresh))
        }
        // The fresh copy is checked again like the first (found by the
        // second read: an offered Pod changed between the check and the
        // adoption, say given a privileged ephemeral container, was adopted
        // unchecked).
        Conditioned::Lost(Some(fresh))
            if !is_terminating(&fresh)
                && may_adopt(sandbox, &fresh)
                && offered_pod_violations(ctx, &fresh).is_empty() =>
        {
            Ok(match adopt(pods, &fresh, sandbox).await? {
                Conditioned::Written(adopted) => Some(adopted),
                Conditioned::Lost(_) => None,
            })
        }
        Conditioned::Lost(_) => Ok(None),
    }
}

/// Waits (bounded) while the claim owning `sandbox` is being served by this
/// process: its Ready write comes before the adoption (see
/// [`crate::controller::critical`]). Whether it waited.
async fn yield_to_claim(ctx: &Context, sandbox: &Sandbox) -> bool {
    let Some(claim_uid) = crate::controller::controller_uid(&sandbox.metadata) else {
        return false;
    };
    if !ctx.in_flight.contains(claim_uid) {
        return false;
    }
    let waited = ctx
        .in_flight
        .yield_to(claim_uid, ctx.config.defer_off_path)
        .await;
    ctx.metrics
        .off_path_wait_seconds
        .with_label_values(&["adopt"])
        .observe(waited.as_secs_f64());
    true
}

/// Whether the Pod cache holds a newer version of `pod` than the one the
/// plan was made from.
fn changed_in_cache(ctx: &Context, pod: &Pod) -> bool {
    let key = kube::runtime::reflector::ObjectRef::from_obj(pod);
    ctx.caches
        .pods
        .get(&key)
        .is_some_and(|cached| cached.resource_version() != pod.resource_version())
}

/// Deletes the expired Sandbox (policy Delete); gone or replaced already is
/// fine.
async fn delete_sandbox(ctx: &Context, sandbox: &Sandbox, namespace: &str) -> Result<()> {
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), namespace);
    info!("shutdownTime passed: deleting the Sandbox");
    // This Sandbox (by uid), not a later one of the same name that a stale
    // copy would delete; replaced is fine too.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: sandbox.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&sandbox.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(kube_err("delete expired sandbox")(e)),
    }
}

/// Deletes the Pod `name` only while it is still the one with `uid`; gone or
/// replaced is fine.
async fn delete_pod(pods: &Api<Pod>, name: &str, uid: &str) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(kube_err(format!("delete pod {name}"))(e)),
    }
}

/// Creates the volume claims and the Pod, after checking the claim templates
/// and admitting the pod template under the current policy: the policy
/// holds at creation time too, so a template admitted under an older or
/// laxer policy starts no Pod, and the Pod is built from the admitted
/// template (the policy's defaults applied, whether or not the stored
/// template went through the webhook). Returns the Pod sent, or the Ready
/// condition that says why none was created (after a warning Event).
async fn create_pod(
    ctx: &Context,
    sandbox: &Sandbox,
    pods: &Api<Pod>,
    namespace: &str,
) -> Result<std::result::Result<Pod, ConditionUpdate>> {
    let policy = ctx.config.policy.current();
    let mut denials = crate::admission::check_volume_claim_templates(
        &policy,
        sandbox
            .spec
            .volume_claim_templates
            .as_deref()
            .unwrap_or_default(),
    );
    let admitted = crate::admission::admit_pod_template(&policy, &sandbox.spec.pod_template);
    let denials = match admitted {
        Ok(template) if denials.is_empty() => {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
            for pvc in desired_pvcs(sandbox)? {
                create_owned(&pvcs, &pvc, "PersistentVolumeClaim").await?;
            }
            // Built from the template as admitted, defaults included.
            let claim_template = super::network::claim_template(ctx, sandbox);
            let pod = desired_pod(sandbox, template.spec, claim_template.as_deref())?;
            let created = create_owned(pods, &pod, "Pod").await?;
            return created_pod(sandbox, created).map(Ok);
        }
        Ok(_) => denials,
        Err(more) => {
            denials.extend(more);
            denials
        }
    };
    let what = "the pod template violates the admission policy, no Pod is created";
    Ok(Err(policy_violation(
        ctx,
        sandbox,
        "CreatePod",
        what,
        &denials,
    )
    .await))
}

/// The Pod a create left, for the status: the API server's answer, or the
/// Pod found under the name (an earlier reconcile's, or another
/// process's: after a restart, before the cache shows it), with its status
/// (phase, IPs, Ready), when this Sandbox controls it. Before (found by
/// review) the desired Pod was returned, which has no status: the Sandbox
/// said PodPending with no IP for a Pod that was Ready, until its next
/// event. [`create_owned`] returns only a Pod of the same controller; it is
/// checked again here, as everything found is before it is used. Pure.
pub(super) fn created_pod(sandbox: &Sandbox, created: Created<Pod>) -> Result<Pod> {
    let pod = created.into_inner();
    if crate::controller::controller_uid(&pod.metadata) != sandbox.uid().as_deref() {
        return Err(Error::NameConflict {
            kind: "Pod",
            name: pod.name_any(),
            owner: format!("Sandbox {}", sandbox.name_any()),
        });
    }
    Ok(pod)
}

/// Removes the Sandbox's pod-name annotation, conditioned on the version
/// read. A 409 means the claim controller pointed the Sandbox elsewhere
/// first; either way the new version's event brings the Sandbox back.
async fn unname(ctx: &Context, sandbox: &Sandbox) -> Result<Outcome> {
    match point_sandbox_at(&ctx.client, sandbox, None).await {
        Ok(_) => Ok(Outcome::Done(Action::await_change())),
        // The Sandbox changed since the copy this reconcile read: the newer
        // version's event reconciles again (replaying the stale copy every
        // few milliseconds would only repeat the conflict until the cache
        // catches up).
        Err(Error::Kube { source, .. }) if is_conflict(&source) => {
            Ok(Outcome::Done(Action::requeue(EVENT_NET)))
        }
        Err(e) => Err(e),
    }
}
