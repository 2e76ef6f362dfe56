//! The four custom resources of the operator and the label/annotation keys
//! that tie their children together.
//!
//! The JSON shape follows the upstream agent-sandbox v0.1 API, so manifests
//! written for it (and the seed's AIO Sandbox YAML) apply unchanged. Every CRD
//! is generated from these types (`sandbox-operator crd`), never written by
//! hand.
//!
//! | kind | group | role |
//! |---|---|---|
//! | [`Sandbox`] | `agents.x-k8s.io` | one sandbox: pod template, volumes, lifecycle |
//! | [`SandboxTemplate`] | `extensions.agents.x-k8s.io` | a reusable pod template |
//! | [`SandboxClaim`] | `extensions.agents.x-k8s.io` | a user's request for a sandbox |
//! | [`SandboxWarmPool`] | `extensions.agents.x-k8s.io` | keeps idle pre-started Pods of a template |

mod conditions;
mod keys;

pub use conditions::*;
pub use keys::*;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, PodSpec};
use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Labels and annotations copied onto the Pod made from a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PodMetadata {
    /// Labels added to the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The Pod a sandbox runs: labels/annotations plus a full `PodSpec`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PodTemplate {
    /// Only labels and annotations are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PodMetadata>,
    /// The Pod's spec.
    pub spec: PodSpec,
}

/// Metadata of a PersistentVolumeClaim template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct EmbeddedObjectMetadata {
    /// Name of the template; the claim is named `<name>-<sandbox>` and the
    /// volume is mounted under this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels added to the PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A PersistentVolumeClaim created for, and owned by, a Sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PersistentVolumeClaimTemplate {
    /// The claim's metadata; `name` is required in practice.
    #[serde(default)]
    pub metadata: EmbeddedObjectMetadata,
    /// The claim's spec.
    pub spec: PersistentVolumeClaimSpec,
}

/// What happens to a Sandbox when its `shutdownTime` passes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ShutdownPolicy {
    /// Delete the Sandbox (and through ownerReferences everything it owns).
    /// The default: a past `shutdownTime` means "delete now".
    #[default]
    Delete,
    /// Keep the Sandbox object, delete its Pod, report `SandboxExpired`.
    Retain,
}

/// The desired state of a [`Sandbox`].
// kube-derive takes one `printcolumn(...)` per column; clippy reads the
// repeated `type_` keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "agents.x-k8s.io",
    version = "v1alpha1",
    kind = "Sandbox",
    namespaced,
    status = "SandboxStatus",
    shortname = "sbx",
    category = "agents",
    derive = "PartialEq",
    derive = "Default",
    doc = "An isolated sandbox: exactly one Pod, its volumes and a headless Service.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Pod", type_ = "string", json_path = ".status.podName"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.volumeClaimTemplates) == has(oldSelf.volumeClaimTemplates)",
    "message": "volumeClaimTemplates is immutable"
}]))]
pub struct SandboxSpec {
    /// The Pod this sandbox runs.
    pub pod_template: PodTemplate,
    /// PersistentVolumeClaims created for the sandbox and mounted into its
    /// Pod. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "volumeClaimTemplates is immutable"
    }]))]
    pub volume_claim_templates: Option<Vec<PersistentVolumeClaimTemplate>>,
    /// When the sandbox expires (RFC 3339). A time in the past expires it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_time: Option<Time>,
    /// What expiry does to the Sandbox object itself (default `Delete`; with
    /// `Retain` only the Pod is removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_policy: Option<ShutdownPolicy>,
    /// 1 runs the Pod, 0 pauses the sandbox (Pod deleted, volumes and Service kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub replicas: Option<i32>,
}

/// The observed state of a [`Sandbox`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// KEP-1623 conditions; `Ready` is always present once reconciled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the headless Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `<service>.<namespace>.svc.<cluster domain>`.
    #[serde(
        default,
        rename = "serviceFQDN",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_fqdn: Option<String>,
    /// Number of Pods currently running for the sandbox (0 or 1).
    #[serde(default)]
    pub replicas: i32,
    /// Label selector of the sandbox's Pod, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Name of the Pod serving the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// IP of that Pod.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Node the Pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

/// Ingress/egress rules for sandboxes made from a template. An empty list
/// denies all traffic in that direction.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NetworkPolicySpec {
    /// Allowed ingress; empty means deny all ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<NetworkPolicyIngressRule>>,
    /// Allowed egress; absent means egress is not restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<NetworkPolicyEgressRule>>,
}

/// The blueprint sandboxes and warm Pods are made from.
// kube-derive takes one `printcolumn(...)` per column; clippy reads the
// repeated `type_` keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "extensions.agents.x-k8s.io",
    version = "v1alpha1",
    kind = "SandboxTemplate",
    namespaced,
    status = "SandboxTemplateStatus",
    shortname = "sbt",
    category = "agents",
    derive = "PartialEq",
    derive = "Default",
    doc = "A reusable sandbox blueprint referenced by claims and warm pools.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTemplateSpec {
    /// The Pod sandboxes of this template run.
    pub pod_template: PodTemplate,
    /// Volume claims for sandboxes made from this template (cold path only:
    /// warm Pods are pre-started without per-claim volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub volume_claim_templates: Option<Vec<PersistentVolumeClaimTemplate>>,
    /// Network policy applied to claimed sandboxes (default: deny all ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
}

/// Status of a [`SandboxTemplate`] (none today; kept for the subresource).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SandboxTemplateStatus {}

/// A reference to a [`SandboxTemplate`] in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SandboxTemplateRef {
    /// Name of the SandboxTemplate.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// What a claim's expiry does to the claim.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClaimShutdownPolicy {
    /// Delete the claim, and with it everything it owns.
    Delete,
    /// Delete the claim in the foreground (it stays until its children are gone).
    DeleteForeground,
    /// Keep the claim, delete its Sandbox, report `Expired`.
    #[default]
    Retain,
}

/// When and how a claim ends.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimLifecycle {
    /// When the claim expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_time: Option<Time>,
    /// What expiry does (default `Retain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_policy: Option<ClaimShutdownPolicy>,
}

/// A request for one sandbox of a template.
// kube-derive takes one `printcolumn(...)` per column; clippy reads the
// repeated `type_` keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "extensions.agents.x-k8s.io",
    version = "v1alpha1",
    kind = "SandboxClaim",
    namespaced,
    status = "SandboxClaimStatus",
    shortname = "sbc",
    category = "agents",
    derive = "PartialEq",
    derive = "Default",
    doc = "A request for a sandbox, served from a warm pool when one has an idle Pod.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Sandbox", type_ = "string", json_path = ".status.sandbox.name"),
    printcolumn(
        name = "LaunchType",
        type_ = "string",
        json_path = ".status.launchType"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClaimSpec {
    /// The template the sandbox is made from.
    pub sandbox_template_ref: SandboxTemplateRef,
    /// Optional expiry of the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<ClaimLifecycle>,
    /// Warm pool policy: `default` (any pool of the template), `none` (always
    /// cold) or the name of one pool.
    #[serde(default, rename = "warmpool", skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<String>,
}

/// The Sandbox a claim created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedSandboxStatus {
    /// Name of the Sandbox (same as the claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// IPs of the sandbox's Pod.
    #[serde(default, rename = "podIPs", skip_serializing_if = "Option::is_none")]
    pub pod_ips: Option<Vec<String>>,
    /// Name of the sandbox's headless Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `<service>.<namespace>.svc.<cluster domain>`.
    #[serde(
        default,
        rename = "serviceFQDN",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_fqdn: Option<String>,
}

/// How a claim got its Pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LaunchType {
    /// An idle Pod of a warm pool was taken over.
    Warm,
    /// A new Pod was started for the claim.
    Cold,
}

impl LaunchType {
    /// The label value used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchType::Warm => "warm",
            LaunchType::Cold => "cold",
        }
    }
}

/// The observed state of a [`SandboxClaim`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClaimStatus {
    /// KEP-1623 conditions; `Ready` mirrors the Sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Sandbox serving the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<ClaimedSandboxStatus>,
    /// Name of the Pod serving the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// `warm` when a pool Pod was taken over, `cold` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<LaunchType>,
    /// The warm pool that served the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<String>,
    /// When the claim first became Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_time: Option<Time>,
    /// Seconds from the API server admitting the claim (the webhook's
    /// `agents.x-k8s.io/admitted-at` stamp, else the creation time) to the
    /// operator writing Ready, measured by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_ready_seconds: Option<f64>,
}

/// Keeps `replicas` idle, pre-started Pods of a template.
// kube-derive takes one `printcolumn(...)` per column; clippy reads the
// repeated `type_` keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "extensions.agents.x-k8s.io",
    version = "v1alpha1",
    kind = "SandboxWarmPool",
    namespaced,
    status = "SandboxWarmPoolStatus",
    shortname = "swp",
    category = "agents",
    derive = "PartialEq",
    derive = "Default",
    doc = "A pool of idle, pre-started Pods of one template, taken over by claims.",
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(
        name = "Recommended",
        type_ = "integer",
        json_path = ".status.recommendedReplicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolSpec {
    /// Number of idle Pods to keep.
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// The template the Pods are made from.
    pub sandbox_template_ref: SandboxTemplateRef,
    /// Hit ratio (warm share of claims) that `status.recommendedReplicas`
    /// aims at; default 0.99. `autoscaling.targetHitRatio` wins when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 0.9999))]
    pub target_hit_ratio: Option<f64>,
    /// Opt-in: keep the pool at the recommended size within bounds. Absent:
    /// the pool keeps `spec.replicas` (and the scale subresource, HPA or KEDA
    /// drive it as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<PoolAutoscaling>,
}

/// Autoscaling of a warm pool from its measured claim traffic.
///
/// While set, `spec.replicas` is not used (the effective size is
/// `status.desiredReplicas`); do not point an HPA at the same pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolAutoscaling {
    /// Fewest idle Pods to keep.
    #[schemars(range(min = 0))]
    pub min_replicas: i32,
    /// Most idle Pods to keep (the operator's pool cap applies on top).
    #[schemars(range(min = 0))]
    pub max_replicas: i32,
    /// Target hit ratio; default 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 0.9999))]
    pub target_hit_ratio: Option<f64>,
    /// The pool shrinks only when the peak that sized it is older than this;
    /// default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_delay_seconds: Option<i32>,
}

/// The observed state of a [`SandboxWarmPool`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolStatus {
    /// Idle Pods that belong to the pool.
    #[serde(default)]
    pub replicas: i32,
    /// Idle Pods that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pool's Pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Hash of the template the pool's Pods are made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,
    /// Idle Pods the pool keeps now: `spec.replicas` (capped), or the
    /// autoscaled size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Size for the target hit ratio at the peak claim rate (Erlang B), never
    /// below the largest burst within one refill time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_replicas: Option<i32>,
    /// Hit ratio predicted for the current size at the 5-minute claim rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_hit_ratio: Option<f64>,
    /// Warm share of the template's claims over the last 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_hit_ratio: Option<f64>,
    /// Claims of the template per minute (5-minute window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_rate_per_minute: Option<f64>,
    /// Mean refill time (replacement created -> Ready) of the last 256
    /// refills, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill_seconds: Option<f64>,
    /// `Ready`, `Exhausted` and (with autoscaling) `Autoscaling` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// All CRDs of the operator, in install order.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        Sandbox::crd(),
        SandboxTemplate::crd(),
        SandboxClaim::crd(),
        SandboxWarmPool::crd(),
    ]
}

/// All CRDs as one multi-document YAML stream (what `sandbox-operator crd` prints).
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| {
            format!(
                "---\n{}",
                serde_yaml::to_string(crd).expect("a CRD always serializes to YAML")
            )
        })
        .collect()
}

impl Sandbox {
    /// Desired replicas after defaulting (`1` when unset).
    pub fn desired_replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
}

/// Hash of the part of a template that shapes its Pods (64 bits, hex). Warm
/// Pods carry it in [`TEMPLATE_HASH_LABEL`]; a Pod with another hash is
/// outdated and never served.
pub fn template_hash(spec: &SandboxTemplateSpec) -> String {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(&spec.pod_template).expect("a pod template always serializes");
    hex::encode(&Sha256::digest(&bytes)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_is_64_bits_and_tracks_the_pod_template() {
        let mut spec = SandboxTemplateSpec::default();
        let a = template_hash(&spec);
        assert_eq!(a.len(), 16);
        assert_eq!(a, template_hash(&spec.clone()));
        spec.pod_template.spec.hostname = Some("x".into());
        assert_ne!(a, template_hash(&spec));
    }
}
