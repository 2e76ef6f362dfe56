//! Claim controller: the fast path.
//!
//! For a new claim: create its deny-ingress NetworkPolicy, take over an idle
//! warm Pod with one conditioned write ([`steal`]), then create the Sandbox
//! (named after the claim, owned by it) with `agents.x-k8s.io/pod-name`.
//! With no usable Pod, the Sandbox is created without the annotation and the
//! sandbox controller starts a Pod from scratch (cold path). Afterwards the
//! claim's status mirrors its Sandbox.
//!
//! Guarantees:
//! - a Pod serves at most one claim: the steal is conditioned on the
//!   resourceVersion read, and a lost race moves on to another candidate;
//! - a claim is served by at most one Pod: before stealing, the controller
//!   looks for a Pod already stolen for this claim's uid (in memory, then in
//!   the cache, which is complete after a restart); if two processes race on
//!   the same claim, the one whose Sandbox create loses deletes the Pod it
//!   stole (the Pod is owned by the claim and never served);
//! - the NetworkPolicy is created before the Sandbox, so it is in place
//!   before the sandbox can become Ready.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec as K8sNetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::api::{
    Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, instrument, warn};

use super::pod_index::{Criteria, pod_key, select_candidates, steal_patch};
use super::{
    Context, Error, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Result, controller_ref, controller_uid,
    create_idempotent, is_conflict, is_not_found, is_terminating, kube_err,
};
use crate::api::{
    ADMITTED_AT_ANNOTATION, CLAIM_UID_LABEL, ClaimShutdownPolicy, ClaimedSandboxStatus,
    ConditionUpdate, FIELD_MANAGER, LaunchType, POD_NAME_ANNOTATION, POOL_LABEL, READY,
    SANDBOX_LABEL, Sandbox, SandboxClaim, SandboxClaimStatus, SandboxSpec, SandboxTemplate,
    SandboxWarmPool, find_condition, is_true, set_condition, template_hash,
};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "claim";

/// How many candidates one reconcile tries before going cold.
const MAX_STEAL_ATTEMPTS: usize = 8;

/// Outcome of one takeover attempt.
#[derive(Debug)]
pub enum StealOutcome {
    /// The Pod is now owned by the claim.
    Won(Box<Pod>),
    /// Someone else changed the Pod first (409 / failed `test`); not an error.
    Lost,
}

/// Takes over an idle pool Pod for a claim.
///
/// Guarantee: exactly ONE write, a JSON patch whose first operation tests the
/// resourceVersion that was read ([`steal_patch`]). If any other writer
/// touched the Pod since (another claim, another controller process, the
/// pool scaling down), the API server rejects the patch and nothing changes.
pub async fn steal(ctx: &Context, pod: &Pod, claim: &SandboxClaim) -> Result<StealOutcome> {
    let namespace = pod.namespace().ok_or(Error::Incomplete("pod namespace"))?;
    let pool = pod.labels().get(POOL_LABEL).cloned().unwrap_or_default();
    let claim_uid = claim.uid().ok_or(Error::Incomplete("claim uid"))?;
    let patch = steal_patch(pod, &claim.name_any(), &claim_uid, controller_ref(claim)?)
        .ok_or(Error::Incomplete("pod resourceVersion or pool label"))?;
    ctx.metrics.steal_attempts.with_label_values(&[&pool]).inc();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(stolen) => Ok(StealOutcome::Won(Box::new(stolen))),
        Err(e) if is_conflict(&e) || is_not_found(&e) => {
            ctx.metrics
                .steal_conflicts
                .with_label_values(&[&pool])
                .inc();
            debug!(pod = %pod.name_any(), "lost the race for a warm Pod");
            Ok(StealOutcome::Lost)
        }
        Err(e) => Err(kube_err(format!("steal pod {}", pod.name_any()))(e)),
    }
}

/// Which pools a claim may take Pods from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChoice {
    /// Never use a pool.
    None,
    /// Any pool of the template.
    Any,
    /// Only this pool.
    Named(String),
}

/// Reads the claim's `warmpool` field. Pure.
pub fn pool_choice(claim: &SandboxClaim) -> PoolChoice {
    match claim.spec.warm_pool.as_deref() {
        None | Some("") | Some("default") => PoolChoice::Any,
        Some("none") => PoolChoice::None,
        Some(name) => PoolChoice::Named(name.to_string()),
    }
}

/// The NetworkPolicy of a claim: deny all ingress to its Pod unless the
/// template allows some. Pure.
pub fn desired_network_policy(
    claim: &SandboxClaim,
    template: &SandboxTemplate,
) -> Result<NetworkPolicy> {
    let name = claim.name_any();
    let rules = template.spec.network_policy.clone().unwrap_or_default();
    let mut policy_types = vec!["Ingress".to_string()];
    if rules.egress.is_some() {
        policy_types.push("Egress".into());
    }
    Ok(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(format!("{name}-sandbox")),
            namespace: claim.namespace(),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            owner_references: Some(vec![controller_ref(claim)?]),
            ..Default::default()
        },
        spec: Some(K8sNetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(SANDBOX_LABEL.to_string(), name)])),
                ..Default::default()
            }),
            policy_types: Some(policy_types),
            ingress: Some(rules.ingress.unwrap_or_default()),
            egress: rules.egress,
        }),
    })
}

/// The Sandbox of a claim, served by `pod` (warm) or by a new Pod (cold). Pure.
pub fn desired_sandbox(
    claim: &SandboxClaim,
    template: &SandboxTemplate,
    pod: Option<&str>,
) -> Result<Sandbox> {
    let mut annotations = BTreeMap::new();
    if let Some(pod) = pod {
        annotations.insert(POD_NAME_ANNOTATION.to_string(), pod.to_string());
    }
    // Carried over so each step of the claim's way to Ready can be timed.
    if let Some(admitted) = claim.annotations().get(ADMITTED_AT_ANNOTATION) {
        annotations.insert(ADMITTED_AT_ANNOTATION.to_string(), admitted.clone());
    }
    Ok(Sandbox {
        metadata: ObjectMeta {
            name: Some(claim.name_any()),
            namespace: claim.namespace(),
            annotations: (!annotations.is_empty()).then_some(annotations),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            owner_references: Some(vec![controller_ref(claim)?]),
            ..Default::default()
        },
        spec: SandboxSpec {
            pod_template: template.spec.pod_template.clone(),
            // Warm Pods were started without per-claim volumes.
            volume_claim_templates: if pod.is_some() {
                None
            } else {
                template.spec.volume_claim_templates.clone()
            },
            ..Default::default()
        },
        status: None,
    })
}

/// The claim status mirroring its Sandbox. Pure.
pub fn mirror_status(
    claim: &SandboxClaim,
    sandbox: &Sandbox,
    now: jiff::Timestamp,
) -> SandboxClaimStatus {
    let previous = claim.status.clone().unwrap_or_default();
    let sandbox_status = sandbox.status.clone().unwrap_or_default();
    let ready = find_condition(&sandbox_status.conditions, READY);
    let update = match ready {
        Some(c) if c.status == "True" => ConditionUpdate::ready(
            true,
            "SandboxReady",
            format!("Sandbox {} is Ready", sandbox.name_any()),
        ),
        Some(c) => ConditionUpdate::ready(
            false,
            "SandboxNotReady",
            format!(
                "Sandbox {}: {}: {}",
                sandbox.name_any(),
                c.reason,
                c.message
            ),
        ),
        None => ConditionUpdate::ready(
            false,
            "SandboxCreated",
            format!("Sandbox {} was created", sandbox.name_any()),
        ),
    };
    let annotated = sandbox.annotations().get(POD_NAME_ANNOTATION);
    let pod_name = sandbox_status.pod_name.clone();
    let launch_type = match (annotated, &pod_name) {
        (Some(a), Some(p)) if a == p => LaunchType::Warm,
        (Some(_), None) => previous.launch_type.unwrap_or(LaunchType::Warm),
        _ => LaunchType::Cold,
    };
    let is_ready = update.status;
    SandboxClaimStatus {
        conditions: set_condition(&previous.conditions, &update, claim.meta().generation, now),
        sandbox: Some(ClaimedSandboxStatus {
            name: Some(sandbox.name_any()),
            pod_ips: sandbox_status.pod_ip.clone().map(|ip| vec![ip]),
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
                .then(|| admitted_at(claim))
                .flatten()
                .map(|start| now.duration_since(start).as_secs_f64().max(0.0))
        }),
    }
}

/// When the claim was admitted: the webhook's high-resolution stamp, else the
/// creation timestamp (second resolution).
pub fn admitted_at(claim: &SandboxClaim) -> Option<jiff::Timestamp> {
    claim
        .annotations()
        .get(ADMITTED_AT_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .or_else(|| claim.meta().creation_timestamp.as_ref().map(|t| t.0))
}

/// Reconciles one claim.
#[instrument(skip_all, fields(claim = %claim.name_any(), namespace = claim.namespace().unwrap_or_default()))]
pub async fn reconcile(claim: Arc<SandboxClaim>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    if is_terminating(claim.as_ref()) {
        return Ok(Action::await_change());
    }
    let namespace = claim.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = claim.name_any();
    if claim.status.is_none() {
        super::timeline(claim.as_ref(), &name, "claim: reconcile starts");
    }
    let claim_uid = claim.uid().ok_or(Error::Incomplete("uid"))?;
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = jiff::Timestamp::now();

    // Lifecycle.
    let deadline = claim
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.shutdown_time.as_ref())
        .map(|t| t.0);
    if let Some(deadline) = deadline.filter(|d| *d <= now) {
        return expire(&ctx, &claim, deadline).await;
    }
    let requeue = deadline
        .and_then(|d| Duration::try_from(d.duration_since(now)).ok())
        .map(|d| Action::requeue(d + Duration::from_millis(50)))
        .unwrap_or_else(Action::await_change);

    // Observe. A Sandbox in the cache certainly exists (its status may lag
    // by one event, which the next event fixes). A claim that never had a
    // status goes straight to serving: the cache was complete when this
    // process started and shows what it created since, and if another
    // process created the Sandbox meanwhile, the create answers
    // AlreadyExists and any Pod stolen for nothing is given back (see
    // [`serve`]), so a claim is never served twice. A served claim whose
    // Sandbox the cache lacks is read from the API server.
    let cached = ctx
        .sandboxes
        .get(&ObjectRef::new(&name).within(&namespace))
        .filter(|s| controller_uid(&s.metadata) == Some(claim_uid.as_str()));
    let existing = match cached {
        Some(sandbox) => Some((*sandbox).clone()),
        None if claim.status.is_some() => sandboxes
            .get_opt(&name)
            .await
            .map_err(kube_err("get sandbox"))?,
        None => None,
    };
    let sandbox = match existing {
        Some(sandbox) => sandbox,
        None => match serve(&ctx, &claim, &namespace, &claim_uid).await? {
            Served::Sandbox(s) => *s,
            Served::Waiting(action) => return Ok(action),
        },
    };

    // Record. A Sandbox that has not reported anything yet has nothing to
    // mirror: its first status event brings us back (one write per claim on
    // the warm path instead of two).
    if sandbox.status.is_none() && claim.status.is_none() {
        return Ok(requeue);
    }
    let mut status = mirror_status(&claim, &sandbox, jiff::Timestamp::now());
    if status.warm_pool.is_none() {
        status.warm_pool = ctx.stolen_pool(&namespace, status.pod_name.as_deref());
    }
    let was_ready = claim
        .status
        .as_ref()
        .is_some_and(|s| is_true(&s.conditions, READY));
    let now_ready = is_true(&status.conditions, READY);
    let status_key = format!("status/{claim_uid}");
    let status_value = super::WriteMemo::status_key_value(&status);
    if claim.status.as_ref() != Some(&status)
        && !ctx.written.recently_wrote(&status_key, &status_value)
    {
        write_status(&ctx, &claim, &status).await?;
        ctx.written.record(&status_key, status_value);
        if now_ready && !was_ready {
            super::timeline(claim.as_ref(), &name, "claim: Ready written");
        }
        if now_ready
            && !was_ready
            && claim
                .status
                .as_ref()
                .and_then(|s| s.ready_time.as_ref())
                .is_none()
        {
            let launch = status.launch_type.unwrap_or(LaunchType::Cold);
            if let Some(start) = admitted_at(&claim) {
                let seconds = jiff::Timestamp::now()
                    .duration_since(start)
                    .as_secs_f64()
                    .max(0.0);
                ctx.metrics
                    .claim_ready_seconds
                    .with_label_values(&[launch.as_str(), &claim.spec.sandbox_template_ref.name])
                    .observe(seconds);
            }
            ctx.metrics
                .claims
                .with_label_values(&[launch.as_str()])
                .inc();
        }
    }
    Ok(requeue)
}

enum Served {
    Sandbox(Box<Sandbox>),
    Waiting(Action),
}

/// Creates what a new claim needs: NetworkPolicy, then the warm steal or the
/// cold fallback, then the Sandbox.
async fn serve(
    ctx: &Arc<Context>,
    claim: &SandboxClaim,
    namespace: &str,
    claim_uid: &str,
) -> Result<Served> {
    let template_name = &claim.spec.sandbox_template_ref.name;
    let template = match ctx.template(namespace, template_name) {
        Some(t) => (*t).clone(),
        None => {
            let api: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), namespace);
            match api
                .get_opt(template_name)
                .await
                .map_err(kube_err("get template"))?
            {
                Some(t) => t,
                None => {
                    let status = SandboxClaimStatus {
                        conditions: set_condition(
                            &claim.status.clone().unwrap_or_default().conditions,
                            &ConditionUpdate::ready(
                                false,
                                "TemplateNotFound",
                                format!("SandboxTemplate {template_name} does not exist"),
                            ),
                            claim.meta().generation,
                            jiff::Timestamp::now(),
                        ),
                        ..claim.status.clone().unwrap_or_default()
                    };
                    if claim.status.as_ref() != Some(&status) {
                        write_status(ctx, claim, &status).await?;
                    }
                    return Ok(Served::Waiting(Action::requeue(Duration::from_secs(5))));
                }
            }
        }
    };

    // The NetworkPolicy and the steal run side by side: both are done before
    // the Sandbox exists, so the policy is in place before the sandbox can be
    // Ready (an idle pool Pod is no less reachable than a stolen one, so
    // ordering them would only add latency).
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let policy = desired_network_policy(claim, &template)?;
    let (policy_created, taken) = futures::join!(
        create_idempotent(&policies, &policy, "networkpolicy"),
        take_pod(ctx, claim, namespace, claim_uid, &template)
    );
    let (pod_name, stolen_now) = taken?;
    policy_created?;

    let sandbox = desired_sandbox(claim, &template, pod_name.as_deref())?;
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), namespace);
    match sandboxes
        .create(
            &kube::api::PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &sandbox,
        )
        .await
    {
        Ok(created) => {
            info!(pod = ?pod_name, launch = if pod_name.is_some() { "warm" } else { "cold" }, "created Sandbox");
            super::timeline(claim, &claim.name_any(), "claim: Sandbox created");
            if pod_name.is_some() {
                // Warm: the Sandbox is Ready within milliseconds and its
                // status event brings us back; an interim claim status
                // would only be an extra write on the fast path.
                return Ok(Served::Waiting(Action::await_change()));
            }
            Ok(Served::Sandbox(Box::new(created)))
        }
        Err(e) if super::is_already_exists(&e) => {
            // Another process served this claim first. A Pod we stole in
            // this reconcile is not the one its Sandbox uses: give it back
            // by deleting it (it is owned by the claim and never served).
            let existing = sandboxes
                .get(&claim.name_any())
                .await
                .map_err(kube_err("get sandbox"))?;
            if let Some(pod) = stolen_now
                && existing.annotations().get(POD_NAME_ANNOTATION) != Some(&pod.name_any())
            {
                warn!(pod = %pod.name_any(), "claim was served by another process; deleting the Pod stolen for it");
                delete_pod(ctx, &pod).await?;
            }
            Ok(Served::Sandbox(Box::new(existing)))
        }
        Err(e) => Err(kube_err("create sandbox")(e)),
    }
}

/// The Pod serving a new claim: one stolen earlier for it (a retried
/// reconcile, or a crash between the steal and the Sandbox create), never a
/// second one; else a fresh steal. Returns (name, Pod stolen by this call).
async fn take_pod(
    ctx: &Arc<Context>,
    claim: &SandboxClaim,
    namespace: &str,
    claim_uid: &str,
    template: &SandboxTemplate,
) -> Result<(Option<String>, Option<Pod>)> {
    let earlier = ctx.reservations.stolen_for(claim_uid).or_else(|| {
        ctx.pods
            .state()
            .into_iter()
            .find(|p| {
                p.labels().get(CLAIM_UID_LABEL).map(String::as_str) == Some(claim_uid)
                    && controller_uid(&p.metadata) == Some(claim_uid)
                    && !is_terminating(p.as_ref())
            })
            .map(|p| p.name_any())
    });
    if earlier.is_some() {
        return Ok((earlier, None));
    }
    let choice = pool_choice(claim);
    if choice == PoolChoice::None || template.spec.volume_claim_templates.is_some() {
        return Ok((None, None));
    }
    let stolen = try_steal(ctx, claim, namespace, template, &choice).await?;
    if stolen.is_none() {
        let template_name = &claim.spec.sandbox_template_ref.name;
        ctx.metrics
            .pool_exhausted
            .with_label_values(&[template_name])
            .inc();
        // The Event needs a pool lookup: keep it off the cold path.
        if ctx.config.events {
            let (ctx, claim, namespace, template_name) = (
                Arc::clone(ctx),
                claim.clone(),
                namespace.to_string(),
                template_name.clone(),
            );
            tokio::spawn(async move {
                if has_pool(&ctx, &namespace, &template_name, &choice).await {
                    ctx.event(
                        &claim,
                        EventType::Normal,
                        "PoolExhausted",
                        "Claim",
                        format!(
                            "no idle Ready Pod of template {template_name}: starting a cold sandbox"
                        ),
                    )
                    .await;
                }
            });
        }
    }
    Ok((stolen.as_ref().map(|p| p.name_any()), stolen))
}

/// Tries candidates until one steal wins. Returns the stolen Pod.
async fn try_steal(
    ctx: &Context,
    claim: &SandboxClaim,
    namespace: &str,
    template: &SandboxTemplate,
    choice: &PoolChoice,
) -> Result<Option<Pod>> {
    let hash = template_hash(&template.spec);
    let claim_uid = claim.uid().unwrap_or_default();
    let criteria = Criteria {
        namespace,
        template: &claim.spec.sandbox_template_ref.name,
        template_hash: &hash,
        pool: match choice {
            PoolChoice::Named(n) => Some(n.as_str()),
            _ => None,
        },
        spread_key: &claim_uid,
    };
    let pods = ctx.pods.state();
    let candidates = select_candidates(&pods, &criteria, &ctx.reservations);
    for candidate in candidates.into_iter().take(MAX_STEAL_ATTEMPTS) {
        let key = pod_key(&candidate);
        if !ctx.reservations.try_reserve(&key) {
            continue;
        }
        match steal(ctx, &candidate, claim).await {
            Ok(StealOutcome::Won(pod)) => {
                ctx.reservations.record_steal(&claim_uid, &pod.name_any());
                super::timeline(claim, &claim.name_any(), "claim: Pod stolen");
                return Ok(Some(*pod));
            }
            Ok(StealOutcome::Lost) => ctx.reservations.release(&key),
            Err(e) => {
                ctx.reservations.release(&key);
                return Err(e);
            }
        }
    }
    Ok(None)
}

async fn has_pool(ctx: &Context, namespace: &str, template: &str, choice: &PoolChoice) -> bool {
    let api: Api<SandboxWarmPool> = Api::namespaced(ctx.client.clone(), namespace);
    match api.list(&Default::default()).await {
        Ok(list) => list.items.iter().any(|p| {
            p.spec.sandbox_template_ref.name == template
                && match choice {
                    PoolChoice::Named(n) => p.name_any() == *n,
                    _ => true,
                }
        }),
        Err(_) => false,
    }
}

async fn delete_pod(ctx: &Context, pod: &Pod) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(kube_err("delete surplus pod")(e)),
    }
}

/// Expiry: `Delete`/`DeleteForeground` delete the claim (its children follow
/// by ownerReference); `Retain` deletes the Sandbox and marks the claim.
async fn expire(ctx: &Context, claim: &SandboxClaim, deadline: jiff::Timestamp) -> Result<Action> {
    let namespace = claim.namespace().unwrap_or_default();
    let policy = claim
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.shutdown_policy)
        .unwrap_or_default();
    match policy {
        ClaimShutdownPolicy::Delete | ClaimShutdownPolicy::DeleteForeground => {
            let api: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &namespace);
            let params = DeleteParams {
                propagation_policy: Some(if policy == ClaimShutdownPolicy::Delete {
                    PropagationPolicy::Background
                } else {
                    PropagationPolicy::Foreground
                }),
                ..Default::default()
            };
            match api.delete(&claim.name_any(), &params).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(kube_err("delete expired claim")(e)),
            }
        }
        ClaimShutdownPolicy::Retain => {
            let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &namespace);
            match api
                .delete(&claim.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(kube_err("delete sandbox of expired claim")(e)),
            }
            let previous = claim.status.clone().unwrap_or_default();
            let status = SandboxClaimStatus {
                conditions: set_condition(
                    &previous.conditions,
                    &ConditionUpdate::ready(
                        false,
                        "ClaimExpired",
                        format!("shutdownTime {deadline} has passed"),
                    ),
                    claim.meta().generation,
                    jiff::Timestamp::now(),
                ),
                ..previous
            };
            if claim.status.as_ref() != Some(&status) {
                write_status(ctx, claim, &status).await?;
                ctx.metrics.claims.with_label_values(&["expired"]).inc();
            }
        }
    }
    Ok(Action::await_change())
}

/// Writes the claim status (see [`super::write_status`]).
async fn write_status(
    ctx: &Context,
    claim: &SandboxClaim,
    status: &SandboxClaimStatus,
) -> Result<()> {
    let api: Api<SandboxClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    super::write_status(
        &api,
        &claim.name_any(),
        status,
        &[
            "conditions",
            "sandbox",
            "podName",
            "launchType",
            "warmPool",
            "readyTime",
            "timeToReadySeconds",
        ],
        "claim",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SandboxClaimSpec, SandboxStatus, SandboxTemplateRef, SandboxTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn claim(warm_pool: Option<&str>) -> SandboxClaim {
        let mut c = SandboxClaim::new(
            "c1",
            SandboxClaimSpec {
                sandbox_template_ref: SandboxTemplateRef { name: "t".into() },
                lifecycle: None,
                warm_pool: warm_pool.map(Into::into),
            },
        );
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("claim-uid".into());
        c
    }

    #[test]
    fn pool_choice_follows_the_v01_field() {
        assert_eq!(pool_choice(&claim(None)), PoolChoice::Any);
        assert_eq!(pool_choice(&claim(Some("default"))), PoolChoice::Any);
        assert_eq!(pool_choice(&claim(Some("none"))), PoolChoice::None);
        assert_eq!(
            pool_choice(&claim(Some("fast"))),
            PoolChoice::Named("fast".into())
        );
    }

    #[test]
    fn sandbox_is_owned_by_the_claim_and_annotated_only_when_warm() {
        let template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
        let warm = desired_sandbox(&claim(None), &template, Some("pod-1")).unwrap();
        assert_eq!(
            warm.annotations()
                .get(POD_NAME_ANNOTATION)
                .map(String::as_str),
            Some("pod-1")
        );
        assert_eq!(
            warm.metadata.owner_references.as_ref().unwrap()[0].uid,
            "claim-uid"
        );
        assert_eq!(warm.name_any(), "c1");
        let cold = desired_sandbox(&claim(None), &template, None).unwrap();
        assert!(cold.annotations().get(POD_NAME_ANNOTATION).is_none());
    }

    #[test]
    fn network_policy_denies_all_ingress_by_default() {
        let template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
        let np = desired_network_policy(&claim(None), &template).unwrap();
        let spec = np.spec.unwrap();
        assert_eq!(spec.ingress, Some(vec![]));
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[SANDBOX_LABEL],
            "c1"
        );
    }

    #[test]
    fn status_mirrors_sandbox_and_records_launch_type_once() {
        let c = claim(None);
        let mut s = Sandbox::new("c1", SandboxSpec::default());
        s.annotations_mut()
            .insert(POD_NAME_ANNOTATION.into(), "warm-1".into());
        s.status = Some(SandboxStatus {
            pod_name: Some("warm-1".into()),
            conditions: vec![Condition {
                type_: READY.into(),
                status: "True".into(),
                reason: "PodReady".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        });
        let now = jiff::Timestamp::from_second(100).unwrap();
        let st = mirror_status(&c, &s, now);
        assert_eq!(st.launch_type, Some(LaunchType::Warm));
        assert!(is_true(&st.conditions, READY));
        assert_eq!(st.ready_time, Some(Time(now)));
        let mut c2 = c.clone();
        c2.status = Some(st.clone());
        let later = mirror_status(&c2, &s, jiff::Timestamp::from_second(200).unwrap());
        assert_eq!(later, st, "a second reconcile changes nothing");
    }

    #[test]
    fn admitted_at_prefers_the_webhook_stamp() {
        let mut c = claim(None);
        c.annotations_mut().insert(
            ADMITTED_AT_ANNOTATION.into(),
            "2026-01-01T00:00:00.123456789Z".into(),
        );
        assert_eq!(admitted_at(&c).unwrap().subsec_nanosecond(), 123_456_789);
    }
}
