//! The pure status of a Sandbox, computed from its Pod.

use k8s_openapi::api::core::v1::Pod;
use kube::{Resource, ResourceExt};

use super::service_fqdn;
use crate::api::reason;
use crate::api::{
    ConditionUpdate, POD_TEMPLATE_APPLIED, SANDBOX_LABEL, Sandbox, SandboxStatus,
    TEMPLATE_HASH_LABEL, pod_template_hash, set_condition, without_condition,
};
use crate::controller::{is_terminating, pod_has_ended, pod_is_ready};

/// The status a Sandbox should show, given its Pod (if any). Pure.
pub fn compute_status(
    sandbox: &Sandbox,
    pod: Option<&Pod>,
    blocked: Option<&ConditionUpdate>,
    cluster_domain: &str,
    now: jiff::Timestamp,
) -> SandboxStatus {
    let name = sandbox.name_any();
    let previous = sandbox.status.clone().unwrap_or_default();
    // Adopting, a Service name conflict and a refused Service (a quota, a
    // permission) leave the Pod reported: it is this Sandbox's, only not
    // (yet) usable through its Service.
    let keeps_pod = |b: &ConditionUpdate| {
        [
            reason::ADOPTING,
            reason::NAME_CONFLICT,
            reason::QUOTA_EXCEEDED,
            reason::FORBIDDEN,
            reason::POD_REJECTED,
        ]
        .contains(&b.reason)
    };
    let pod = pod.filter(|_| blocked.is_none_or(keeps_pod));
    let ready = match (blocked, pod) {
        (Some(b), _) if b.reason != reason::ADOPTING && keeps_pod(b) => b.clone(),
        (Some(b), None) => b.clone(),
        (_, Some(p)) if is_terminating(p) => ConditionUpdate::ready(
            false,
            reason::POD_TERMINATING,
            format!("Pod {} is terminating", p.name_any()),
        ),
        (_, Some(p)) if pod_is_ready(p) => ConditionUpdate::ready(
            true,
            reason::POD_READY,
            format!("Pod {} is Ready", p.name_any()),
        ),
        (_, Some(p)) if pod_has_ended(p) => {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            let reason = if phase == "Failed" {
                reason::POD_FAILED
            } else {
                reason::POD_SUCCEEDED
            };
            ConditionUpdate::ready(false, reason, format!("Pod {} is {phase}", p.name_any()))
        }
        (_, Some(p)) => ConditionUpdate::ready(
            false,
            reason::POD_PENDING,
            format!("Pod {} is not Ready yet", p.name_any()),
        ),
        (None, None) => ConditionUpdate::ready(false, reason::CREATING, "creating the Pod"),
    };
    let live_pod = pod.filter(|p| !is_terminating(*p) && !pod_has_ended(p));
    // A Pod that has ended (Succeeded or Failed: an exit under restartPolicy
    // Never, activeDeadlineSeconds, an eviction) is still named, for its
    // user to inspect, but not its IPs: the kubelet has released them and
    // another Pod (another tenant's) may be given them. Before (found by
    // review) they stayed in `podIP`/`podIPs`, and so in the claim's copy,
    // and an evicted Pod held by a finalizer put them back as
    // PodTerminating. A Pod that is terminating but still runs holds its IP
    // until it stops: it is still reported.
    let addressed = pod.filter(|p| !pod_has_ended(p));
    let conditions = set_condition(&previous.conditions, &ready, sandbox.meta().generation, now);
    let conditions = match template_applied(sandbox, live_pod) {
        Some(outdated) => set_condition(&conditions, &outdated, sandbox.meta().generation, now),
        None => without_condition(conditions, POD_TEMPLATE_APPLIED),
    };
    SandboxStatus {
        conditions,
        service: Some(name.clone()),
        service_fqdn: Some(service_fqdn(sandbox, cluster_domain)),
        replicas: i32::from(live_pod.is_some()),
        selector: Some(format!("{SANDBOX_LABEL}={name}")),
        pod_name: pod.map(|p| p.name_any()),
        pod_ip: addressed.and_then(|p| p.status.as_ref()?.pod_ip.clone()),
        pod_ips: addressed.and_then(crate::controller::pod_ips),
        node_name: pod.and_then(|p| p.spec.as_ref()?.node_name.clone()),
    }
}

/// `PodTemplateApplied=False` while the live Pod was made from an earlier
/// `spec.podTemplate` than the Sandbox's: a running Pod is never changed (it
/// holds the sandbox's work), so an edit applies to the next Pod, and the
/// status says so instead of nothing. The Pod's template is the hash the
/// operator wrote on it at its creation ([`TEMPLATE_HASH_LABEL`]: a pool
/// Pod's, or a Sandbox Pod's); a Pod without one (made by an older version)
/// is not judged. The hash is computed on every reconcile (one
/// serialization and SHA-256 of the pod template): the stored status is
/// not evidence of the operator's last check. Before (found by review), it
/// was skipped while the status showed no condition for the same Pod at the
/// same generation, so a condition someone removed through the status
/// subresource never came back. Pure.
fn template_applied(sandbox: &Sandbox, live_pod: Option<&Pod>) -> Option<ConditionUpdate> {
    let pod = live_pod?;
    let made_from = pod.labels().get(TEMPLATE_HASH_LABEL)?;
    if *made_from == pod_template_hash(&sandbox.spec.pod_template) {
        return None;
    }
    Some(ConditionUpdate {
        type_: POD_TEMPLATE_APPLIED,
        status: false,
        reason: reason::POD_TEMPLATE_CHANGED,
        message: format!(
            "spec.podTemplate changed after Pod {} was made from it; a running Pod is not \
             changed: the next Pod is made from the current template (to apply it now, set \
             spec.replicas to 0, then back to 1; the Pod's volume claims are kept)",
            pod.name_any()
        ),
    })
}
