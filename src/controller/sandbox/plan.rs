//! The pure decision of a Sandbox reconcile: from what was observed (the
//! Sandbox, the Pods it owns, the Pod named for adoption) to the steps to take.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::api::reason;
use crate::api::{
    ADOPTABLE_LABEL, CLAIM_LABEL, CLAIM_UID_LABEL, ConditionUpdate, POD_NAME_ANNOTATION, Sandbox,
    ShutdownPolicy,
};
use crate::controller::ownership::{controller_of_kind, has_controller, held_by_claim};
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
    /// Remove the adoption annotation, which names a Pod that is gone,
    /// conditioned on the Sandbox's resourceVersion; the next reconcile
    /// starts a Pod.
    Unname,
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
///
/// The rules, first match wins: an expired Sandbox is shut down; a paused
/// one loses its Pods; with more than one live Pod nothing more is done; an
/// evicted Pod is replaced; a Pod that exists is followed; with none, the
/// named Pod is adopted or a new Pod is started.
pub fn plan(observed: &Observed<'_>) -> Plan {
    let live: Vec<&Arc<Pod>> = observed
        .owned
        .iter()
        .filter(|p| !is_terminating(p.as_ref()))
        .collect();
    // What an expiry or a pause stops: the live Pods it owns, and a Pod its
    // claim stole for it that it has not adopted yet (a crash between the
    // steal and the adoption, then a pause): before (found by review) that
    // Pod ran on for the whole pause, or past the shutdown time.
    let stopped: Vec<&Arc<Pod>> = live
        .iter()
        .copied()
        .chain(stolen_not_adopted(observed))
        .collect();
    if let Some(plan) = expired(observed, &stopped) {
        return plan;
    }
    let decided = paused(observed.sandbox, &stopped)
        .or_else(|| multiple_pods(&live))
        .or_else(|| evicted(&live))
        .or_else(|| follow_existing(observed))
        .unwrap_or_else(|| start_pod(observed));
    Plan {
        requeue_after: until_deadline(observed),
        ..decided
    }
}

impl Plan {
    /// Steps with nothing blocking Ready.
    fn unblocked(steps: Vec<Step>) -> Self {
        Plan {
            steps,
            blocked: None,
            requeue_after: None,
            quiet: false,
        }
    }

    /// Steps and why the Sandbox cannot be Ready.
    fn blocked(steps: Vec<Step>, reason: &'static str, message: impl Into<String>) -> Self {
        Plan {
            blocked: Some(ConditionUpdate::ready(false, reason, message)),
            ..Plan::unblocked(steps)
        }
    }

    /// Drops the steps that would start a Pod (create or adopt), because
    /// of `why`, which then says what keeps the Sandbox from Ready: in place
    /// of what the plan said about the dropped start (taking over a Pod),
    /// but not of what comes first when nothing was to start (a pause, an
    /// expiry, two Pods). Pure.
    pub fn hold_pod_start(&mut self, why: ConditionUpdate) {
        let before = self.steps.len();
        self.steps
            .retain(|s| !matches!(s, Step::CreatePod | Step::Adopt { .. }));
        if self.steps.len() < before || self.blocked.is_none() {
            self.blocked = Some(why);
        }
        self.quiet = false;
    }

    /// Drops the step that would create a Pod, because of `why`, which
    /// then says what keeps the Sandbox from Ready; an adoption stays.
    /// `true` when there was one to drop. Pure.
    pub fn hold_pod_create(&mut self, why: ConditionUpdate) -> bool {
        let before = self.steps.len();
        self.steps.retain(|s| !matches!(s, Step::CreatePod));
        let held = self.steps.len() < before;
        if held {
            self.blocked = Some(why);
            self.quiet = false;
        }
        held
    }
}

/// A warning Event step.
fn warning(reason: &'static str, note: &str) -> Step {
    Step::Event {
        warning: true,
        reason,
        note: note.to_owned(),
    }
}

/// Past `shutdownTime`: delete the Sandbox (policy Delete) or its live Pods.
fn expired(observed: &Observed<'_>, live: &[&Arc<Pod>]) -> Option<Plan> {
    let sandbox = observed.sandbox;
    let deadline = sandbox.spec.shutdown_time.as_ref().map(|t| t.0)?;
    if deadline > observed.now {
        return None;
    }
    let steps = if sandbox.spec.shutdown_policy.unwrap_or_default() == ShutdownPolicy::Delete {
        // The Pods it owns go with it; one its claim stole for it and it
        // never adopted would not.
        stolen_not_adopted(observed)
            .map(|p| delete_step(p))
            .into_iter()
            .chain([Step::DeleteSandbox])
            .collect()
    } else {
        live.iter().map(|p| delete_step(p)).collect()
    };
    Some(Plan::blocked(
        steps,
        reason::EXPIRED,
        format!("shutdownTime {deadline} has passed"),
    ))
}

/// When to wake up for the shutdown deadline (a little after it).
fn until_deadline(observed: &Observed<'_>) -> Option<Duration> {
    observed
        .sandbox
        .spec
        .shutdown_time
        .as_ref()
        .map(|t| t.0.duration_since(observed.now))
        .and_then(|d| Duration::try_from(d).ok())
        .map(|d| d + Duration::from_millis(50))
}

/// The Pod the Sandbox names that its claim stole for it and it has not
/// adopted yet (controlled by the claim, with the claim's uid label: see
/// [`may_adopt`]), when it still runs. Pure.
fn stolen_not_adopted<'a>(observed: &'a Observed<'_>) -> Option<&'a Arc<Pod>> {
    let sandbox = observed.sandbox;
    observed.named.as_ref().filter(|pod| {
        claimed(sandbox)
            && !is_terminating(pod.as_ref())
            && controller_uid(&pod.metadata) != sandbox.uid().as_deref()
            && may_adopt(sandbox, pod)
    })
}

/// `replicas: 0`: every live Pod is deleted.
fn paused(sandbox: &Sandbox, live: &[&Arc<Pod>]) -> Option<Plan> {
    (sandbox.desired_replicas() == 0).then(|| {
        Plan::blocked(
            live.iter().map(|p| delete_step(p)).collect(),
            reason::PAUSED,
            "replicas is 0: the sandbox is paused",
        )
    })
}

/// More than one live Pod: say so, create nothing more.
fn multiple_pods(live: &[&Arc<Pod>]) -> Option<Plan> {
    if live.len() <= 1 {
        return None;
    }
    let names: Vec<String> = live.iter().map(|p| p.name_any()).collect();
    let note = format!(
        "{} Pods are owned by this Sandbox ({}); creating nothing more",
        live.len(),
        names.join(", ")
    );
    Some(Plan::blocked(
        vec![warning(reason::MULTIPLE_PODS, &note)],
        reason::MULTIPLE_PODS,
        note,
    ))
}

/// The documented rule for Pods that die: one the node evicted (or that
/// the node lost) is replaced, and the Sandbox says so; one whose process
/// exited (Succeeded, or Failed for any other reason) is reported as
/// finished and left for the user to inspect.
fn evicted(live: &[&Arc<Pod>]) -> Option<Plan> {
    let [pod] = live else { return None };
    if !was_evicted(pod) {
        return None;
    }
    let note = format!(
        "Pod {} was evicted by its node; it is deleted and a new Pod is started",
        pod.name_any()
    );
    Some(Plan::blocked(
        vec![warning(reason::POD_EVICTED, &note), delete_step(pod)],
        reason::POD_EVICTED,
        note,
    ))
}

/// A live Pod: status follows it. Only terminating Pods: wait for them to go
/// (the deletion event triggers the next reconcile).
fn follow_existing(observed: &Observed<'_>) -> Option<Plan> {
    (!observed.owned.is_empty()).then(|| Plan::unblocked(Vec::new()))
}

/// No Pod owned: adopt the named Pod, wait for the claim's steal or repair,
/// refuse a Pod owned elsewhere, or create a Pod of our own.
fn start_pod(observed: &Observed<'_>) -> Plan {
    let sandbox = observed.sandbox;
    let named = sandbox.annotations().get(POD_NAME_ANNOTATION);
    let (Some(name), Some(pod)) = (named, &observed.named) else {
        return match named {
            Some(name) => named_gone(sandbox, name),
            None => Plan::unblocked(vec![Step::CreatePod]),
        };
    };
    if is_terminating(pod.as_ref()) {
        named_gone(sandbox, name)
    } else if may_adopt(sandbox, pod) {
        Plan::blocked(
            vec![Step::Adopt { name: name.clone() }],
            reason::ADOPTING,
            format!("taking over Pod {name}"),
        )
    } else if awaits_steal(sandbox, pod) || won_by_another_claim(sandbox, pod) {
        Plan {
            quiet: true,
            ..Plan::unblocked(Vec::new())
        }
    } else {
        owned_elsewhere(sandbox, name, pod)
    }
}

/// Whether a claim controls this Sandbox and the named Pod went to another
/// claim (stolen by it, or adopted by its Sandbox; a pool's Pod is
/// [`awaits_steal`], checked first). That claim's events no
/// longer concern this Sandbox: this one's claim repairs it (points it at a
/// Pod the claim holds, or at none, see `claim::repair`), and the named
/// Pod's events wake that claim. Until then the Sandbox stays quiet: a
/// status write would only change its version under the claim's
/// conditioned repoint, and a Warning on every event of someone else's Pod
/// would tell the user nothing.
fn won_by_another_claim(sandbox: &Sandbox, pod: &Pod) -> bool {
    controller_of_kind(sandbox.owner_references(), "SandboxClaim").is_some_and(|claim| {
        controller_uid(&pod.metadata).is_some()
            && !held_by_claim(&pod.metadata, &claim.uid, &sandbox.metadata)
    })
}

/// The named Pod belongs to someone else: it is left alone, no Pod is created.
fn owned_elsewhere(sandbox: &Sandbox, name: &str, pod: &Pod) -> Plan {
    let note = if !has_controller(&pod.metadata) && claimed(sandbox) {
        format!(
            "Pod {name} has no owner: a claim's Sandbox adopts only the Pod its claim holds; it is left alone and no Pod is created"
        )
    } else if !has_controller(&pod.metadata) {
        format!(
            "Pod {name} has no owner and lacks the label {ADOPTABLE_LABEL}=true; it is left alone and no Pod is created"
        )
    } else {
        format!("Pod {name} is owned by another object; it is left alone and no Pod is created")
    };
    Plan::blocked(
        vec![warning(reason::POD_OWNED_ELSEWHERE, &note)],
        reason::POD_OWNED_ELSEWHERE,
        note,
    )
}

/// The named Pod is gone or terminating: never touch it; start a Pod of our
/// own so the sandbox is still served (warning once, while the status does
/// not already name that Pod).
///
/// A claim's Sandbox first drops the name ([`Step::Unname`], conditioned on
/// the version read) and starts its Pod on the next reconcile: the claim
/// controller may be pointing it at another Pod at this very moment (its
/// first pick went to another claim), and of the two conditioned writes
/// only one lands, so the Sandbox never ends up with a Pod of its own AND
/// a stolen one.
fn named_gone(sandbox: &Sandbox, name: &str) -> Plan {
    let claimed = claimed(sandbox);
    let note = format!(
        "Pod {name} named in {POD_NAME_ANNOTATION} is gone or terminating; creating a new Pod"
    );
    let mut steps = Vec::new();
    if sandbox.status.as_ref().and_then(|s| s.pod_name.as_deref()) != Some(name) {
        steps.push(warning(crate::api::reason::ADOPTION_FAILED, &note));
    }
    if claimed {
        steps.push(Step::Unname);
        // Said only if the Unname fails (it ends the reconcile when it
        // lands): not a reason the claim waits through as settling, so the
        // claim stops saying Ready on the gone Pod (found by the second
        // read: `CreatingPod` kept it Ready for a whole webhook outage).
        return Plan::blocked(steps, crate::api::reason::POD_TERMINATING, note);
    }
    steps.push(Step::CreatePod);
    Plan::unblocked(steps)
}

/// Whether the Pod failed for its node, not for its own process: evicted
/// (`Evicted`), lost with its node (`NodeLost`), or stopped by a node
/// shutting down (`NodeShutdown`, `Shutdown`, or `Terminated` with the
/// kubelet's `DisruptionTarget` condition, reason `TerminationByKubelet`).
/// Such a Pod is replaced; before, only the first two were (found by
/// review), and a node's reboot left the Sandbox `PodFailed` for good. A
/// Pod the kubelet refused at start (`OutOfcpu`, `UnexpectedAdmissionError`)
/// is not: its replacement may land on the same node and be refused again
/// at once, a create/delete loop no backoff would slow.
pub fn was_evicted(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        let stopped_by_kubelet = s.conditions.iter().flatten().any(|c| {
            c.type_ == "DisruptionTarget"
                && c.status == "True"
                && c.reason.as_deref() == Some("TerminationByKubelet")
        });
        let for_its_node = match s.reason.as_deref() {
            Some("Evicted" | "NodeLost" | "NodeShutdown" | "Shutdown") => true,
            Some("Terminated") => stopped_by_kubelet,
            _ => false,
        };
        s.phase.as_deref() == Some("Failed") && for_its_node
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
/// or, for a Sandbox no claim controls, when it has no controller and its
/// owner opted in with [`ADOPTABLE_LABEL`]. A claim's Sandbox names only
/// the Pod its claim stole, so an unowned Pod it names has lost its owner
/// on the way (someone removed it) and is not taken. Labels alone never
/// make a Pod adoptable.
pub fn may_adopt(sandbox: &Sandbox, pod: &Pod) -> bool {
    let sandbox_uid = sandbox.uid();
    if !has_controller(&pod.metadata) {
        return !claimed(sandbox)
            && pod.labels().get(ADOPTABLE_LABEL).map(String::as_str) == Some("true");
    }
    match controller_uid(&pod.metadata) {
        Some(uid) if Some(uid) == sandbox_uid.as_deref() => true,
        Some(uid) => {
            // The claim's own Sandbox only: named after the claim (its
            // controller reference's name) like the Pod's claim label says.
            // Without the ownership guard, a Sandbox of another name could
            // carry a controller reference to someone else's claim.
            let claim = controller_of_kind(sandbox.owner_references(), "SandboxClaim");
            let name = sandbox.name_any();
            claim.is_some_and(|c| c.uid == uid && c.name == name)
                && pod.labels().get(CLAIM_UID_LABEL).map(String::as_str) == Some(uid)
                && pod.labels().get(CLAIM_LABEL) == Some(&name)
        }
        // A controller of another kind: owned elsewhere.
        None => false,
    }
}

/// Whether a claim controls this Sandbox (by the controller reference the
/// claim controller wrote).
pub(super) fn claimed(sandbox: &Sandbox) -> bool {
    controller_of_kind(sandbox.owner_references(), "SandboxClaim").is_some()
}

/// Whether the named Pod is still an idle pool Pod while a claim controls
/// this Sandbox: the claim's steal (sent alongside the Sandbox create) has
/// not landed yet.
pub fn awaits_steal(sandbox: &Sandbox, pod: &Pod) -> bool {
    claimed(sandbox) && controller_of_kind(pod.owner_references(), "SandboxWarmPool").is_some()
}
