//! The pure decision of a Sandbox reconcile: from what was observed (the
//! Sandbox, the Pods it owns, the Pod named for adoption) to the steps to take.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::reason;
use crate::api::{
    ADOPTABLE_LABEL, CLAIM_UID_LABEL, ConditionUpdate, POD_NAME_ANNOTATION, Sandbox, ShutdownPolicy,
};
use crate::controller::{controller_uid, is_terminating};

/// What the controller knows about a Sandbox's world at one moment.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The Sandbox.
    pub sandbox: &'a Sandbox,
    /// Pods whose controller owner is the Sandbox, terminating ones included.
    pub owned: Vec<Arc<Pod>>,
    /// The Pod named in the adoption annotation, when not already owned.
    pub named: Option<Arc<Pod>>,
    /// Now.
    pub now: jiff::Timestamp,
}

/// One step of a reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Delete the Sandbox itself (expired with policy Delete).
    DeleteSandbox,
    /// Delete a Pod (by name, guarded by its uid).
    DeletePod { name: String, uid: String },
    /// Take over the named Pod with a conditioned write.
    Adopt { name: String },
    /// Create the volume claims and the Pod.
    CreatePod,
    /// Publish an Event.
    Event {
        warning: bool,
        reason: &'static str,
        note: String,
    },
}

/// The decision of one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Why the Sandbox cannot become Ready right now (overrides the Pod view).
    pub blocked: Option<ConditionUpdate>,
    /// Wake up at the shutdown deadline.
    pub requeue_after: Option<Duration>,
    /// Write no status this time: the named Pod is still its pool's while
    /// the claim's steal is in flight, and the steal's event brings the
    /// Sandbox back.
    pub quiet: bool,
}

/// Decides what to do for a Sandbox. Pure.
pub fn plan(observed: &Observed<'_>) -> Plan {
    let sandbox = observed.sandbox;
    let mut steps = Vec::new();
    let live: Vec<&Arc<Pod>> = observed
        .owned
        .iter()
        .filter(|p| !is_terminating(p.as_ref()))
        .collect();

    if let Some(deadline) = sandbox.spec.shutdown_time.as_ref().map(|t| t.0)
        && deadline <= observed.now
    {
        if sandbox.spec.shutdown_policy.unwrap_or_default() == ShutdownPolicy::Delete {
            steps.push(Step::DeleteSandbox);
        } else {
            steps.extend(live.iter().map(|p| delete_step(p)));
        }
        return Plan {
            steps,
            blocked: Some(ConditionUpdate::ready(
                false,
                reason::EXPIRED,
                format!("shutdownTime {deadline} has passed"),
            )),
            requeue_after: None,
            quiet: false,
        };
    }
    let requeue_after = sandbox
        .spec
        .shutdown_time
        .as_ref()
        .map(|t| t.0.duration_since(observed.now))
        .and_then(|d| Duration::try_from(d).ok())
        .map(|d| d + Duration::from_millis(50));

    if sandbox.desired_replicas() == 0 {
        steps.extend(live.iter().map(|p| delete_step(p)));
        return Plan {
            steps,
            blocked: Some(ConditionUpdate::ready(
                false,
                reason::PAUSED,
                "replicas is 0: the sandbox is paused",
            )),
            requeue_after,
            quiet: false,
        };
    }

    if live.len() > 1 {
        let names: Vec<String> = live.iter().map(|p| p.name_any()).collect();
        let note = format!(
            "{} Pods are owned by this Sandbox ({}); creating nothing more",
            live.len(),
            names.join(", ")
        );
        return Plan {
            steps: vec![Step::Event {
                warning: true,
                reason: reason::MULTIPLE_PODS,
                note: note.clone(),
            }],
            blocked: Some(ConditionUpdate::ready(false, reason::MULTIPLE_PODS, note)),
            requeue_after,
            quiet: false,
        };
    }
    // The documented rule for Pods that die: one the node evicted (or that
    // the node lost) is replaced, and the Sandbox says so; one whose process
    // exited (Succeeded, or Failed for any other reason) is reported as
    // finished and left for the user to inspect.
    if let [pod] = live.as_slice()
        && was_evicted(pod)
    {
        let note = format!(
            "Pod {} was evicted by its node; it is deleted and a new Pod is started",
            pod.name_any()
        );
        return Plan {
            steps: vec![
                Step::Event {
                    warning: true,
                    reason: reason::POD_EVICTED,
                    note: note.clone(),
                },
                delete_step(pod),
            ],
            blocked: Some(ConditionUpdate::ready(false, reason::POD_EVICTED, note)),
            requeue_after,
            quiet: false,
        };
    }
    if !live.is_empty() || !observed.owned.is_empty() {
        // A live Pod: status follows it. Only terminating Pods: wait for them
        // to go (the deletion event triggers the next reconcile).
        return Plan {
            steps,
            blocked: None,
            requeue_after,
            quiet: false,
        };
    }

    let mut blocked = None;
    match (
        sandbox.annotations().get(POD_NAME_ANNOTATION),
        &observed.named,
    ) {
        (Some(name), Some(pod)) if !is_terminating(pod.as_ref()) && may_adopt(sandbox, pod) => {
            steps.push(Step::Adopt { name: name.clone() });
            blocked = Some(ConditionUpdate::ready(
                false,
                reason::ADOPTING,
                format!("taking over Pod {name}"),
            ));
        }
        (Some(_), Some(pod)) if !is_terminating(pod.as_ref()) && awaits_steal(sandbox, pod) => {
            return Plan {
                steps,
                blocked: None,
                requeue_after,
                quiet: true,
            };
        }
        (Some(name), Some(pod)) if !is_terminating(pod.as_ref()) => {
            let note = if controller_uid(&pod.metadata).is_none() {
                format!(
                    "Pod {name} has no owner and lacks the label {ADOPTABLE_LABEL}=true; it is left alone and no Pod is created"
                )
            } else {
                format!(
                    "Pod {name} is owned by another object; it is left alone and no Pod is created"
                )
            };
            steps.push(Step::Event {
                warning: true,
                reason: reason::POD_OWNED_ELSEWHERE,
                note: note.clone(),
            });
            blocked = Some(ConditionUpdate::ready(
                false,
                reason::POD_OWNED_ELSEWHERE,
                note,
            ));
        }
        (Some(name), _) => {
            // Gone or terminating: never touch it; start a Pod of our own so
            // the sandbox is still served.
            let note = format!(
                "Pod {name} named in {POD_NAME_ANNOTATION} is gone or terminating; creating a new Pod"
            );
            if sandbox.status.as_ref().and_then(|s| s.pod_name.as_deref()) != Some(name.as_str()) {
                steps.push(Step::Event {
                    warning: true,
                    reason: "AdoptionFailed",
                    note,
                });
            }
            steps.push(Step::CreatePod);
        }
        (None, _) => steps.push(Step::CreatePod),
    }
    Plan {
        steps,
        blocked,
        requeue_after,
        quiet: false,
    }
}

/// Whether the node evicted the Pod (phase Failed with reason `Evicted`, or
/// the Pod was lost with its node: reason `NodeLost`).
pub fn was_evicted(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Failed")
            && matches!(s.reason.as_deref(), Some("Evicted") | Some("NodeLost"))
    })
}

fn delete_step(pod: &Pod) -> Step {
    Step::DeletePod {
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
    }
}

/// A Pod may be adopted when this Sandbox already controls it; when its
/// controller is the claim that controls this Sandbox AND it carries that
/// claim's uid label (the steal writes both, conditioned on what it read);
/// or when it has no controller and its owner opted in with
/// [`ADOPTABLE_LABEL`]. Labels alone never make a Pod adoptable.
pub fn may_adopt(sandbox: &Sandbox, pod: &Pod) -> bool {
    let sandbox_uid = sandbox.uid();
    match controller_uid(&pod.metadata) {
        Some(uid) if Some(uid) == sandbox_uid.as_deref() => true,
        Some(uid) => {
            let claim = controller_uid(&sandbox.metadata);
            Some(uid) == claim && pod.labels().get(CLAIM_UID_LABEL).map(String::as_str) == claim
        }
        None => pod.labels().get(ADOPTABLE_LABEL).map(String::as_str) == Some("true"),
    }
}

/// Whether the named Pod is still an idle pool Pod while a claim controls
/// this Sandbox: the claim's steal (sent alongside the Sandbox create) has
/// not landed yet.
pub fn awaits_steal(sandbox: &Sandbox, pod: &Pod) -> bool {
    let claimed = sandbox
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "SandboxClaim");
    claimed
        && pod
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.kind == "SandboxWarmPool")
}
