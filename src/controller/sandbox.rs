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
//!   ([`super::pod_index::adopt_patch`]), and only when it is unowned or owned
//!   by the claim that owns this Sandbox;
//! - the Pod created for a Sandbox has the Sandbox's name, so a reconcile that
//!   runs again before the cache shows the Pod (or after a crash) gets
//!   AlreadyExists instead of a duplicate;
//! - with two Pods owned, nothing more is created and status says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Service, ServicePort,
    ServiceSpec, Volume,
};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::pod_index::adopt_patch;
use super::{
    Context, Error, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Result, controller_ref, controller_uid,
    create_idempotent, is_conflict, is_not_found, is_terminating, kube_err, pod_has_ended,
    pod_is_ready,
};
use crate::api::{
    CLAIM_LABEL, ConditionUpdate, POD_NAME_ANNOTATION, SANDBOX_LABEL, Sandbox, SandboxStatus,
    ShutdownPolicy, set_condition,
};

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
    /// More than one Pod is owned; nothing more is created.
    pub const MULTIPLE_PODS: &str = "MultiplePods";
}

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
        };
    }
    if !live.is_empty() || !observed.owned.is_empty() {
        // A live Pod: status follows it. Only terminating Pods: wait for them
        // to go (the deletion event triggers the next reconcile).
        return Plan {
            steps,
            blocked: None,
            requeue_after,
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
        (Some(name), Some(pod)) if !is_terminating(pod.as_ref()) => {
            let note = format!(
                "Pod {name} is owned by another object; it is left alone and no Pod is created"
            );
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
    }
}

fn delete_step(pod: &Pod) -> Step {
    Step::DeletePod {
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
    }
}

/// A Pod may be adopted when it has no controller, or when its controller is
/// the claim that controls this Sandbox (the claim stole it for us).
pub fn may_adopt(sandbox: &Sandbox, pod: &Pod) -> bool {
    match controller_uid(&pod.metadata) {
        None => true,
        Some(uid) => {
            Some(uid) == controller_uid(&sandbox.metadata) || Some(uid) == sandbox.uid().as_deref()
        }
    }
}

/// The status a Sandbox should show, given its Pod (if any). Pure.
pub fn compute_status(
    sandbox: &Sandbox,
    pod: Option<&Pod>,
    blocked: Option<&ConditionUpdate>,
    cluster_domain: &str,
    now: jiff::Timestamp,
) -> SandboxStatus {
    let name = sandbox.name_any();
    let namespace = sandbox.namespace().unwrap_or_default();
    let previous = sandbox.status.clone().unwrap_or_default();
    let pod = pod.filter(|_| blocked.is_none_or(|b| b.reason == reason::ADOPTING));
    let ready = match (blocked, pod) {
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
    SandboxStatus {
        conditions: set_condition(&previous.conditions, &ready, sandbox.meta().generation, now),
        service: Some(name.clone()),
        service_fqdn: Some(format!("{name}.{namespace}.svc.{cluster_domain}")),
        replicas: i32::from(live_pod.is_some()),
        selector: Some(format!("{SANDBOX_LABEL}={name}")),
        pod_name: pod.map(|p| p.name_any()),
        pod_ip: pod.and_then(|p| p.status.as_ref()?.pod_ip.clone()),
        node_name: pod.and_then(|p| p.spec.as_ref()?.node_name.clone()),
    }
}

/// The Pod created for a Sandbox: the template plus the tracking label, the
/// volume claims mounted under their template names, and the Sandbox as
/// controller owner. Pure.
pub fn desired_pod(sandbox: &Sandbox) -> Result<Pod> {
    let name = sandbox.name_any();
    let template = &sandbox.spec.pod_template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    labels.insert(SANDBOX_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    // A cold Pod of a claim carries the claim label like a stolen one, so
    // every Pod serving a claim can be found by it.
    if let Some(claim) = sandbox
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "SandboxClaim")
    {
        labels.insert(CLAIM_LABEL.into(), claim.name.clone());
    }
    let mut spec = template.spec.clone();
    for claim_template in sandbox.spec.volume_claim_templates.iter().flatten() {
        let Some(volume_name) = claim_template.metadata.name.clone() else {
            continue;
        };
        let source = PersistentVolumeClaimVolumeSource {
            claim_name: pvc_name(&volume_name, &name),
            read_only: None,
        };
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        match volumes.iter_mut().find(|v| v.name == volume_name) {
            Some(v) => {
                *v = Volume {
                    name: volume_name,
                    persistent_volume_claim: Some(source),
                    ..Default::default()
                }
            }
            None => volumes.push(Volume {
                name: volume_name,
                persistent_volume_claim: Some(source),
                ..Default::default()
            }),
        }
    }
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sandbox.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(sandbox)?]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// Name of the PVC made from template `template` for sandbox `sandbox`.
pub fn pvc_name(template: &str, sandbox: &str) -> String {
    format!("{template}-{sandbox}")
}

/// The volume claims of a Sandbox. Pure.
pub fn desired_pvcs(sandbox: &Sandbox) -> Result<Vec<PersistentVolumeClaim>> {
    let owner = controller_ref(sandbox)?;
    Ok(sandbox
        .spec
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|t| {
            let template_name = t.metadata.name.clone()?;
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.insert(SANDBOX_LABEL.into(), sandbox.name_any());
            Some(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(pvc_name(&template_name, &sandbox.name_any())),
                    namespace: sandbox.namespace(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                spec: Some(t.spec.clone()),
                status: None,
            })
        })
        .collect())
}

/// The headless Service selecting the Sandbox's Pod. Pure.
pub fn desired_service(sandbox: &Sandbox) -> Result<Service> {
    let name = sandbox.name_any();
    let ports: Vec<ServicePort> = sandbox
        .spec
        .pod_template
        .spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .enumerate()
        .map(|(i, p)| ServicePort {
            name: Some(p.name.clone().unwrap_or_else(|| format!("port-{i}"))),
            port: p.container_port,
            protocol: p.protocol.clone(),
            ..Default::default()
        })
        .collect();
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: sandbox.namespace(),
            labels: Some(BTreeMap::from([
                (SANDBOX_LABEL.to_string(), name.clone()),
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
            ])),
            owner_references: Some(vec![controller_ref(sandbox)?]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(BTreeMap::from([(SANDBOX_LABEL.to_string(), name)])),
            ports: (!ports.is_empty()).then_some(ports),
            ..Default::default()
        }),
        status: None,
    })
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
        .pods
        .state()
        .into_iter()
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
    let needs_service = (sandbox
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
            create_idempotent(&services, &desired_service(&sandbox)?, "service").await?;
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
        write_status(&ctx, &sandbox, &status).await?;
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
                let pvcs: Api<PersistentVolumeClaim> =
                    Api::namespaced(ctx.client.clone(), namespace);
                for pvc in desired_pvcs(sandbox)? {
                    create_idempotent(&pvcs, &pvc, "pvc").await?;
                }
                let pod = desired_pod(sandbox)?;
                create_idempotent(pods, &pod, "pod").await?;
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
        Err(e) => Err(kube_err(format!("adopt pod {}", pod.name_any()))(e)),
    }
}

/// Writes the Sandbox status (see [`super::write_status`]).
pub(crate) async fn write_status(
    ctx: &Context,
    sandbox: &Sandbox,
    status: &SandboxStatus,
) -> Result<()> {
    let api: Api<Sandbox> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    super::write_status(
        &api,
        &sandbox.name_any(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PodTemplate, SandboxSpec};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn sandbox() -> Sandbox {
        let mut s = Sandbox::new(
            "sbx",
            SandboxSpec {
                pod_template: PodTemplate {
                    metadata: None,
                    spec: PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some("i".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                },
                ..Default::default()
            },
        );
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some("sbx-uid".into());
        s
    }

    fn owned_by(uid: &str) -> Option<Vec<OwnerReference>> {
        Some(vec![OwnerReference {
            uid: uid.into(),
            controller: Some(true),
            ..Default::default()
        }])
    }

    fn pod(name: &str, owner: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("{name}-uid")),
                resource_version: Some("1".into()),
                owner_references: owner.and_then(owned_by),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_000_000).unwrap()
    }

    #[test]
    fn fresh_sandbox_creates_a_pod() {
        let s = sandbox();
        let p = plan(&Observed {
            sandbox: &s,
            owned: vec![],
            named: None,
            now: now(),
        });
        assert_eq!(p.steps, vec![Step::CreatePod]);
    }

    #[test]
    fn owned_pod_means_nothing_to_do() {
        let s = sandbox();
        let p = plan(&Observed {
            sandbox: &s,
            owned: vec![pod("sbx", Some("sbx-uid"))],
            named: None,
            now: now(),
        });
        assert!(p.steps.is_empty());
    }

    #[test]
    fn two_owned_pods_create_nothing_and_report() {
        let s = sandbox();
        let p = plan(&Observed {
            sandbox: &s,
            owned: vec![pod("a", Some("sbx-uid")), pod("b", Some("sbx-uid"))],
            named: None,
            now: now(),
        });
        assert!(!p.steps.contains(&Step::CreatePod));
        assert_eq!(p.blocked.unwrap().reason, reason::MULTIPLE_PODS);
    }

    #[test]
    fn adopts_unowned_or_claim_owned_pod_only() {
        let mut s = sandbox();
        s.annotations_mut()
            .insert(POD_NAME_ANNOTATION.into(), "warm-1".into());
        s.metadata.owner_references = owned_by("claim-uid");
        let p = plan(&Observed {
            sandbox: &s,
            owned: vec![],
            named: Some(pod("warm-1", None)),
            now: now(),
        });
        assert_eq!(
            p.steps,
            vec![Step::Adopt {
                name: "warm-1".into()
            }]
        );
        let p = plan(&Observed {
            sandbox: &s,
            owned: vec![],
            named: Some(pod("warm-1", Some("claim-uid"))),
            now: now(),
        });
        assert_eq!(
            p.steps,
            vec![Step::Adopt {
                name: "warm-1".into()
            }]
        );
        let p = plan(&Observed {
            sandbox: &s,
            owned: vec![],
            named: Some(pod("warm-1", Some("other"))),
            now: now(),
        });
        assert!(
            !p.steps
                .iter()
                .any(|s| matches!(s, Step::Adopt { .. } | Step::CreatePod))
        );
        assert_eq!(p.blocked.unwrap().reason, reason::POD_OWNED_ELSEWHERE);
    }

    #[test]
    fn missing_named_pod_falls_back_to_a_new_pod() {
        let mut s = sandbox();
        s.annotations_mut()
            .insert(POD_NAME_ANNOTATION.into(), "gone".into());
        let p = plan(&Observed {
            sandbox: &s,
            owned: vec![],
            named: None,
            now: now(),
        });
        assert!(p.steps.contains(&Step::CreatePod));
    }

    #[test]
    fn paused_deletes_the_pod_and_expired_deletes_per_policy() {
        let mut s = sandbox();
        s.spec.replicas = Some(0);
        let p = plan(&Observed {
            sandbox: &s,
            owned: vec![pod("sbx", Some("sbx-uid"))],
            named: None,
            now: now(),
        });
        assert_eq!(
            p.steps,
            vec![Step::DeletePod {
                name: "sbx".into(),
                uid: "sbx-uid".into()
            }]
        );
        assert_eq!(p.blocked.unwrap().reason, reason::PAUSED);

        let mut s = sandbox();
        s.spec.shutdown_time = Some(Time(jiff::Timestamp::from_second(999_000).unwrap()));
        s.spec.shutdown_policy = Some(ShutdownPolicy::Delete);
        let p = plan(&Observed {
            sandbox: &s,
            owned: vec![],
            named: None,
            now: now(),
        });
        assert_eq!(p.steps, vec![Step::DeleteSandbox]);
    }

    #[test]
    fn future_shutdown_schedules_one_wake_up() {
        let mut s = sandbox();
        s.spec.shutdown_time = Some(Time(jiff::Timestamp::from_second(1_000_010).unwrap()));
        let p = plan(&Observed {
            sandbox: &s,
            owned: vec![],
            named: None,
            now: now(),
        });
        let wake = p.requeue_after.unwrap();
        assert!(
            wake >= Duration::from_secs(10) && wake < Duration::from_secs(11),
            "{wake:?}"
        );
    }

    #[test]
    fn status_reports_fqdn_selector_and_ready() {
        let s = sandbox();
        let mut p = (*pod("sbx", Some("sbx-uid"))).clone();
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.0.0.9".into()),
            conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let st = compute_status(&s, Some(&p), None, "cluster.local", now());
        assert_eq!(st.service_fqdn.as_deref(), Some("sbx.ns.svc.cluster.local"));
        assert_eq!(st.selector.as_deref(), Some("agents.x-k8s.io/sandbox=sbx"));
        assert_eq!(st.replicas, 1);
        assert!(crate::api::is_true(&st.conditions, "Ready"));
        assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.9"));
    }

    #[test]
    fn desired_pod_mounts_volume_claims_and_is_owned() {
        let mut s = sandbox();
        s.spec.volume_claim_templates = Some(vec![crate::api::PersistentVolumeClaimTemplate {
            metadata: crate::api::EmbeddedObjectMetadata {
                name: Some("data".into()),
                ..Default::default()
            },
            spec: Default::default(),
        }]);
        let p = desired_pod(&s).unwrap();
        let vols = p.spec.unwrap().volumes.unwrap();
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-sbx"
        );
        assert_eq!(p.metadata.owner_references.unwrap()[0].uid, "sbx-uid");
        assert_eq!(
            desired_pvcs(&s).unwrap()[0].metadata.name.as_deref(),
            Some("data-sbx")
        );
    }
}
