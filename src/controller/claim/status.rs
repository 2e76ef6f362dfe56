//! The claim's status, computed purely: from the Pod it stole (the warm
//! path's single Ready write), from its Sandbox (mirroring afterwards and on
//! the cold path), or from a failure that keeps it from being served.
//!
//! Guarantee: the status the warm path writes is exactly the one mirroring
//! the Ready Sandbox later computes, so the Sandbox catching up costs no
//! second claim write; and a Ready claim is not turned back to not-Ready by
//! the Sandbox's transitional states while it takes its Pod over.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use crate::api::reason;
use crate::api::{
    ClaimedSandboxStatus, ConditionUpdate, LaunchType, ORIGIN_POOL_LABEL, POD_NAME_ANNOTATION,
    READY, Sandbox, SandboxClaim, SandboxClaimStatus, find_condition, is_true, set_condition,
};
use crate::controller::sandbox::service_fqdn;

/// When the claim was admitted: the webhook's high-resolution stamp, else the
/// creation timestamp (second resolution).
pub fn admitted_at(claim: &SandboxClaim) -> Option<jiff::Timestamp> {
    crate::api::admission_stamp(claim.meta())
        .or_else(|| claim.meta().creation_timestamp.as_ref().map(|t| t.0))
}

/// What a client needs to reach the claim's Pod: the Sandbox (named after
/// the claim), the Pod's IP, the headless Service and its FQDN (round one
/// made them).
fn connection(claim: &SandboxClaim, pod: &Pod, cluster_domain: &str) -> ClaimedSandboxStatus {
    let name = claim.name_any();
    ClaimedSandboxStatus {
        name: Some(name.clone()),
        pod_ips: crate::controller::pod_ips(pod),
        service: Some(name),
        service_fqdn: Some(service_fqdn(claim, cluster_domain)),
    }
}

fn ready_message(sandbox: &str) -> String {
    format!("Sandbox {sandbox} is Ready")
}

/// What the claim's single Ready write says on the warm path: everything a
/// client needs to connect, taken from the steal's own response (the Pod
/// was Ready in it) and the names of the objects created beside it.
pub fn warm_ready_status(
    claim: &SandboxClaim,
    pod: &Pod,
    pool: Option<String>,
    cluster_domain: &str,
    now: jiff::Timestamp,
) -> SandboxClaimStatus {
    let name = claim.name_any();
    let previous = claim.status.clone().unwrap_or_default();
    let update = ConditionUpdate::ready(true, reason::SANDBOX_READY, ready_message(&name));
    let (launch_type, warm_pool) = first_served(&previous).unwrap_or((LaunchType::Warm, pool));
    SandboxClaimStatus {
        conditions: set_condition(&previous.conditions, &update, claim.meta().generation, now),
        sandbox: Some(connection(claim, pod, cluster_domain)),
        pod_name: Some(pod.name_any()),
        launch_type: Some(launch_type),
        warm_pool,
        ready_time: previous.ready_time.clone().or(Some(Time(now))),
        time_to_ready_seconds: previous
            .time_to_ready_seconds
            .or_else(|| seconds_since_admission(claim, now)),
    }
}

/// What the claim says when it took a pool Pod that is still starting (no
/// idle Pod was Ready): not Ready yet, which Pod and pool (the Pod's
/// origin-pool label) it got, and how to reach it once Ready (its Sandbox
/// and Service exist: round one made them). The launch type is `Cold`, as for a Pod started for the claim:
/// the claim waits for a start either way, and sizing counts it as a miss.
/// The status is written once, so the launch type outlives a restart
/// ([`mirror_status`] keeps it for this Pod). A claim that was Ready before
/// (served again after its Sandbox was deleted) keeps its launch type and
/// pool (see [`first_served`]).
pub fn starting_status(
    claim: &SandboxClaim,
    pod: &Pod,
    cluster_domain: &str,
    now: jiff::Timestamp,
) -> SandboxClaimStatus {
    let name = claim.name_any();
    let pool = pod.labels().get(ORIGIN_POOL_LABEL).cloned();
    let previous = claim.status.clone().unwrap_or_default();
    let from = pool
        .as_deref()
        .map(|p| format!(" of pool {p}"))
        .unwrap_or_default();
    let update = ConditionUpdate::ready(
        false,
        reason::SANDBOX_NOT_READY,
        format!(
            "Sandbox {name}: Pod {}{from} is still starting (no idle Pod was Ready)",
            pod.name_any()
        ),
    );
    let (launch_type, warm_pool) = first_served(&previous).unwrap_or((LaunchType::Cold, pool));
    SandboxClaimStatus {
        conditions: set_condition(&previous.conditions, &update, claim.meta().generation, now),
        sandbox: Some(connection(claim, pod, cluster_domain)),
        pod_name: Some(pod.name_any()),
        launch_type: Some(launch_type),
        warm_pool,
        ready_time: previous.ready_time,
        time_to_ready_seconds: previous.time_to_ready_seconds,
    }
}

/// How the claim was first served, once it has been Ready (it has a
/// `readyTime`): its launch type and pool, which then stay as they are,
/// like `readyTime` and `timeToReadySeconds`. A Pod its Sandbox starts
/// later (resumed after a pause, replacing an evicted one) is started for
/// the Sandbox, not taken from a pool; before (found by review), the claim
/// then said `cold` next to the pool and the warm time it was served with.
pub(super) fn first_served(previous: &SandboxClaimStatus) -> Option<(LaunchType, Option<String>)> {
    previous.ready_time.as_ref()?;
    previous
        .launch_type
        .map(|launch| (launch, previous.warm_pool.clone()))
}

fn seconds_since_admission(claim: &SandboxClaim, now: jiff::Timestamp) -> Option<f64> {
    admitted_at(claim).map(|start| now.duration_since(start).as_secs_f64().max(0.0))
}

/// Whether the Sandbox is still taking over the Pod the claim was made Ready
/// with (no condition yet, or creating/adopting it): nothing to mirror yet.
fn settling_on(sandbox: &Sandbox, pod: &str) -> bool {
    let status = sandbox.status.clone().unwrap_or_default();
    let transitional = match find_condition(&status.conditions, READY) {
        None => true,
        Some(c) => c.reason == reason::ADOPTING || c.reason == reason::CREATING,
    };
    transitional
        && sandbox
            .annotations()
            .get(POD_NAME_ANNOTATION)
            .map(String::as_str)
            == Some(pod)
        && status.pod_name.as_deref().is_none_or(|p| p == pod)
}

/// The claim status mirroring its Sandbox.
pub fn mirror_status(
    claim: &SandboxClaim,
    sandbox: &Sandbox,
    now: jiff::Timestamp,
) -> SandboxClaimStatus {
    let previous = claim.status.clone().unwrap_or_default();
    if sandbox.meta().deletion_timestamp.is_some() {
        return being_deleted_status(claim, sandbox, previous, now);
    }
    // Made Ready by the steal, or told its Pod is starting: either way the
    // claim already says all the Sandbox could say until it has taken the
    // Pod over.
    // A claim served before and served again keeps its first launch type
    // (`first_served`), so it counts as starting too (second read: it
    // flapped through the Sandbox's take-over).
    let starting = previous.pod_name.is_some()
        && (previous.launch_type == Some(LaunchType::Cold) || first_served(&previous).is_some());
    if (is_true(&previous.conditions, READY) || starting)
        && previous
            .pod_name
            .as_deref()
            .is_some_and(|pod| settling_on(sandbox, pod))
    {
        return previous;
    }
    let sandbox_status = sandbox.status.clone().unwrap_or_default();
    let update = match find_condition(&sandbox_status.conditions, READY) {
        Some(c) if c.status == "True" => ConditionUpdate::ready(
            true,
            reason::SANDBOX_READY,
            ready_message(&sandbox.name_any()),
        ),
        // The Sandbox's Pod will never start under the current policy: a
        // terminal refusal the client should see at once.
        Some(c) if c.reason == reason::POLICY_VIOLATION => ConditionUpdate::ready(
            false,
            reason::SANDBOX_REJECTED,
            format!("Sandbox {}: {}", sandbox.name_any(), c.message),
        ),
        Some(c) => ConditionUpdate::ready(
            false,
            reason::SANDBOX_NOT_READY,
            format!(
                "Sandbox {}: {}: {}",
                sandbox.name_any(),
                c.reason,
                c.message
            ),
        ),
        None => ConditionUpdate::ready(
            false,
            reason::SANDBOX_CREATED,
            format!("Sandbox {} was created", sandbox.name_any()),
        ),
    };
    let annotated = sandbox.annotations().get(POD_NAME_ANNOTATION);
    let pod_name = sandbox_status.pod_name.clone();
    // Once Ready, how the claim was first served (see [`first_served`]).
    let launch_type = match (first_served(&previous), annotated, &pod_name) {
        (Some((launch, _)), _, _) => launch,
        // A pool Pod taken while still starting stays `Cold` (see
        // [`starting_status`]).
        (None, Some(a), Some(p)) if a == p && starting && previous.pod_name.as_ref() == Some(p) => {
            LaunchType::Cold
        }
        (None, Some(a), Some(p)) if a == p => LaunchType::Warm,
        (None, Some(_), None) => previous.launch_type.unwrap_or(LaunchType::Warm),
        (None, _, _) => LaunchType::Cold,
    };
    let is_ready = update.status;
    SandboxClaimStatus {
        conditions: set_condition(&previous.conditions, &update, claim.meta().generation, now),
        sandbox: Some(ClaimedSandboxStatus {
            name: Some(sandbox.name_any()),
            pod_ips: sandbox_status
                .pod_ips
                .clone()
                .or_else(|| sandbox_status.pod_ip.clone().map(|ip| vec![ip])),
            service: sandbox_status.service.clone(),
            service_fqdn: sandbox_status.service_fqdn.clone(),
        }),
        pod_name,
        launch_type: Some(launch_type),
        warm_pool: previous.warm_pool.clone(),
        ready_time: previous
            .ready_time
            .clone()
            .or_else(|| is_ready.then_some(Time(now))),
        time_to_ready_seconds: previous.time_to_ready_seconds.or_else(|| {
            is_ready
                .then(|| seconds_since_admission(claim, now))
                .flatten()
        }),
    }
}

/// What the claim says while its Sandbox is being deleted (a foreground
/// deletion waits there for the Sandbox's Pod to go): not Ready, and no Pod
/// name, IP or Service to connect to, whatever the Sandbox's last status
/// said (its controller writes none while it is deleted). Before (found by
/// review), the claim stayed Ready on the Pod being deleted.
fn being_deleted_status(
    claim: &SandboxClaim,
    sandbox: &Sandbox,
    previous: SandboxClaimStatus,
    now: jiff::Timestamp,
) -> SandboxClaimStatus {
    let name = sandbox.name_any();
    let update = ConditionUpdate::ready(
        false,
        reason::SANDBOX_NOT_READY,
        format!("Sandbox {name} is being deleted"),
    );
    SandboxClaimStatus {
        conditions: set_condition(&previous.conditions, &update, claim.meta().generation, now),
        sandbox: Some(ClaimedSandboxStatus {
            name: Some(name),
            ..Default::default()
        }),
        pod_name: None,
        ..previous
    }
}

/// The claim status saying why it cannot be served (Ready=False with
/// `reason` and `message`), keeping whatever else it already showed: for a
/// failure while its Sandbox exists. Without one, see
/// [`failed_without_sandbox`].
pub fn failed_status(
    claim: &SandboxClaim,
    reason: &'static str,
    message: String,
    now: jiff::Timestamp,
) -> SandboxClaimStatus {
    let previous = claim.status.clone().unwrap_or_default();
    SandboxClaimStatus {
        conditions: set_condition(
            &previous.conditions,
            &ConditionUpdate::ready(false, reason, message),
            claim.meta().generation,
            now,
        ),
        ..previous
    }
}

/// [`failed_status`] for a claim whose own Sandbox does not exist (a failure
/// while serving it: template not found, a name still held, a refused
/// create): no Sandbox, Pod or IP is named, as after a `Retain` expiry. A
/// claim served before (its Sandbox deleted since) otherwise kept naming
/// the deleted Sandbox's Pod and the IP it released, which a later Pod
/// (another tenant's, say) may get (found by review). How it was served
/// (launch type, pool, `readyTime`, `timeToReadySeconds`) is history and
/// stays.
pub fn failed_without_sandbox(
    claim: &SandboxClaim,
    reason: &'static str,
    message: String,
    now: jiff::Timestamp,
) -> SandboxClaimStatus {
    SandboxClaimStatus {
        sandbox: None,
        pod_name: None,
        ..failed_status(claim, reason, message, now)
    }
}
