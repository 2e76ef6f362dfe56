//! The objects a Sandbox owns, as they should be: its Pod, its volume
//! claims and its headless Service. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Service, ServicePort,
    ServiceSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::api::{
    CLAIM_LABEL, CLAIM_UID_LABEL, SANDBOX_LABEL, SANDBOX_UID_LABEL, Sandbox, TEMPLATE_HASH_LABEL,
    TEMPLATE_LABEL, is_reserved_key, pod_template_hash,
};
use crate::controller::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, Result, controller_ref};

/// The Pod created for a Sandbox: `spec` (the Sandbox's pod template spec
/// as the policy admitted it, see `admission::admit_pod_template`) and the
/// template's labels plus the tracking label, the volume claims mounted
/// under their template names, and the Sandbox as controller owner.
/// `claim_template` is, for a claim's Sandbox, the template its claim names
/// (`spec.sandboxTemplateRef`, immutable), read from the claim itself: never
/// from the Sandbox's labels, which its user may edit. Pure.
pub fn desired_pod(
    sandbox: &Sandbox,
    mut spec: PodSpec,
    claim_template: Option<&str>,
) -> Result<Pod> {
    let name = sandbox.name_any();
    let template = &sandbox.spec.pod_template;
    let meta = template.metadata.clone().unwrap_or_default();
    // Defense in depth: keys reserved for the operator never come from the
    // user's template (the webhook refuses them too).
    let mut labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    labels.retain(|k, _| !is_reserved_key(k));
    let annotations = meta.annotations.map(|mut a| {
        a.retain(|k, _| !is_reserved_key(k));
        a
    });
    labels.insert(SANDBOX_LABEL.into(), name.clone());
    if let Some(uid) = sandbox.uid() {
        labels.insert(SANDBOX_UID_LABEL.into(), uid);
    }
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    // The pod template it is made from, so the Sandbox can say when its
    // running Pod is of an earlier one (see `status::template_applied`).
    labels.insert(TEMPLATE_HASH_LABEL.into(), pod_template_hash(template));
    // A cold Pod of a claim carries the claim label like a stolen one, so
    // every Pod serving a claim can be found by it; the claim's uid label
    // like a stolen one too, so the hold on the claim's NetworkPolicy
    // covers it from its creation (`policy_hold`; the uid is the one of
    // the controller reference the claim controller wrote); and the
    // template label of its claim's template, so the template's
    // NetworkPolicy selects it like the template's warm Pods. That label
    // once came from the Sandbox's own labels, which its user may edit: a
    // tenant removing it, then pausing and resuming, got a Pod that no
    // policy selected in per-template mode (found by review).
    if let Some(claim) =
        crate::controller::ownership::controller_of_kind(sandbox.owner_references(), "SandboxClaim")
    {
        labels.insert(CLAIM_LABEL.into(), claim.name.clone());
        labels.insert(CLAIM_UID_LABEL.into(), claim.uid.clone());
        if let Some(template) = claim_template {
            labels.insert(TEMPLATE_LABEL.into(), template.to_owned());
        }
    }
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
            annotations,
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

/// The headless Service selecting the Sandbox's Pod: by the Sandbox's name
/// and its uid (see [`headless_service`]).
pub fn desired_service(sandbox: &Sandbox) -> Result<Service> {
    let owner = controller_ref(sandbox)?;
    let uid = owner.uid.clone();
    headless_service(
        &sandbox.name_any(),
        sandbox.namespace(),
        &sandbox.spec.pod_template.spec,
        owner,
        (SANDBOX_UID_LABEL, uid),
    )
}

/// `<service>.<namespace>.svc.<cluster domain>` of the headless Service
/// named after `object` (a Sandbox, or the claim whose Sandbox it serves),
/// in its namespace.
pub fn service_fqdn(object: &impl ResourceExt, cluster_domain: &str) -> String {
    let (name, namespace) = (object.name_any(), object.namespace().unwrap_or_default());
    format!("{name}.{namespace}.svc.{cluster_domain}")
}

/// A headless Service named `name` that selects the Pod labelled
/// `agents.x-k8s.io/sandbox: <name>` and `uid_label` (the claim's or the
/// Sandbox's uid, which only the operator writes on a Pod it creates, steals
/// or adopts), with the container ports of `pod_spec`.
///
/// The uid is what keeps the Service to its own Pod: a Pod whose Sandbox was
/// deleted with orphan propagation keeps its `agents.x-k8s.io/sandbox`
/// label (the ownership guard stops anyone adding that label, not a label
/// outliving its owner), and a later claim or Sandbox of the same name
/// selecting by name alone would route its clients to that Pod too.
pub fn headless_service(
    name: &str,
    namespace: Option<String>,
    pod_spec: &PodSpec,
    owner: OwnerReference,
    uid_label: (&str, String),
) -> Result<Service> {
    let ports: Vec<ServicePort> = pod_spec
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
            name: Some(name.to_string()),
            namespace,
            labels: Some(BTreeMap::from([
                (SANDBOX_LABEL.to_string(), name.to_string()),
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(BTreeMap::from([
                (SANDBOX_LABEL.to_string(), name.to_string()),
                (uid_label.0.to_string(), uid_label.1),
            ])),
            ports: (!ports.is_empty()).then_some(ports),
            ..Default::default()
        }),
        status: None,
    })
}
