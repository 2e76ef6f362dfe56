//! The `Sandbox` kind (`agents.x-k8s.io/v1alpha1`): one sandbox, its Pod
//! template, volumes and lifecycle, and the status the sandbox controller
//! writes. Guarantees the wire shape of the upstream v0.1 API.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PersistentVolumeClaimTemplate, PodTemplate};

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

agents_kind! {
    kube(
        group = "agents.x-k8s.io", kind = "Sandbox", status = "SandboxStatus", shortname = "sbx",
        doc = "An isolated sandbox: exactly one Pod, its volumes and a headless Service.",
        printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
        printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
        printcolumn(name = "Pod", type_ = "string", json_path = ".status.podName"),
        scale(spec_replicas_path = ".spec.replicas", status_replicas_path = ".status.replicas", label_selector_path = ".status.selector"),
    )
    /// The desired state of a [`Sandbox`].
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "has(self.volumeClaimTemplates) == has(oldSelf.volumeClaimTemplates)",
        "message": "volumeClaimTemplates is immutable"
    }]))]
    pub struct SandboxSpec {
        /// The Pod this sandbox runs.
        pub pod_template: PodTemplate,
        /// PersistentVolumeClaims created for the sandbox and mounted into its
        /// Pod. Immutable once set.
        #[schemars(length(max = 16))]
        #[schemars(extend("x-kubernetes-validations" = [{
            "rule": "self == oldSelf",
            "message": "volumeClaimTemplates is immutable"
        }]))]
        pub volume_claim_templates: Option<Vec<PersistentVolumeClaimTemplate>>,
        /// When the sandbox expires (RFC 3339). A time in the past expires it at once.
        pub shutdown_time: Option<Time>,
        /// What expiry does to the Sandbox object itself (default `Delete`; with
        /// `Retain` only the Pod is removed).
        pub shutdown_policy: Option<ShutdownPolicy>,
        /// 1 runs the Pod, 0 pauses the sandbox (Pod deleted, volumes and Service kept).
        #[schemars(range(min = 0, max = 1))]
        pub replicas: Option<i32>,
    }
}

api_object! {
    /// The observed state of a [`Sandbox`].
    pub struct SandboxStatus {
        /// KEP-1623 conditions; `Ready` is always present once reconciled.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub conditions: Vec<Condition>,
        /// Name of the headless Service.
        pub service: Option<String>,
        /// `<service>.<namespace>.svc.<cluster domain>`.
        #[serde(rename = "serviceFQDN")]
        pub service_fqdn: Option<String>,
        /// Number of Pods currently running for the sandbox (0 or 1).
        #[serde(default)]
        pub replicas: i32,
        /// Label selector of the sandbox's Pod, for the scale subresource.
        pub selector: Option<String>,
        /// Name of the Pod serving the sandbox.
        pub pod_name: Option<String>,
        /// IP of that Pod.
        #[serde(rename = "podIP")]
        pub pod_ip: Option<String>,
        /// Every IP of that Pod (both families on a dual-stack cluster), as
        /// upstream agent-sandbox's status names them; clients of upstream
        /// read this list.
        #[serde(rename = "podIPs")]
        pub pod_ips: Option<Vec<String>>,
        /// Node the Pod runs on.
        pub node_name: Option<String>,
    }
}

impl Sandbox {
    /// Desired replicas after defaulting (`1` when unset).
    pub fn desired_replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
}
