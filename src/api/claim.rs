//! The `SandboxClaim` kind (`extensions.agents.x-k8s.io/v1alpha1`): a user's
//! request for one sandbox of a template, its lifecycle, and the status the
//! claim controller writes (launch type, the Sandbox and Pod it got).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SandboxTemplateRef;

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

api_object! {
    /// When and how a claim ends.
    pub struct ClaimLifecycle {
        /// When the claim expires (RFC 3339).
        pub shutdown_time: Option<Time>,
        /// What expiry does (default `Retain`).
        pub shutdown_policy: Option<ClaimShutdownPolicy>,
    }
}

agents_kind! {
    kube(
        group = "extensions.agents.x-k8s.io", kind = "SandboxClaim", status = "SandboxClaimStatus", shortname = "sbc",
        doc = "A request for a sandbox, served from a warm pool when one has an idle Pod.",
        printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
        printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
        printcolumn(name = "Sandbox", type_ = "string", json_path = ".status.sandbox.name"),
        printcolumn(name = "LaunchType", type_ = "string", json_path = ".status.launchType"),
    )
    /// A request for one sandbox of a template.
    pub struct SandboxClaimSpec {
        /// The template the sandbox is made from.
        pub sandbox_template_ref: SandboxTemplateRef,
        /// Optional expiry of the claim.
        pub lifecycle: Option<ClaimLifecycle>,
        /// Warm pool policy: `default` (any pool of the template), `none` (always
        /// cold) or the name of one pool.
        #[serde(rename = "warmpool")]
        pub warm_pool: Option<String>,
    }
}

api_object! {
    /// The Sandbox a claim created.
    pub struct ClaimedSandboxStatus {
        /// Name of the Sandbox (same as the claim).
        pub name: Option<String>,
        /// IPs of the sandbox's Pod.
        #[serde(rename = "podIPs")]
        pub pod_ips: Option<Vec<String>>,
        /// Name of the sandbox's headless Service.
        pub service: Option<String>,
        /// `<service>.<namespace>.svc.<cluster domain>`.
        #[serde(rename = "serviceFQDN")]
        pub service_fqdn: Option<String>,
    }
}

/// How a claim got its Pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LaunchType {
    /// An idle, Ready Pod of a warm pool was taken over.
    Warm,
    /// The claim waited for a Pod to start: one started for it, or a warm
    /// pool's Pod taken while still starting (no idle Pod was Ready).
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

api_object! {
    /// The observed state of a [`SandboxClaim`].
    pub struct SandboxClaimStatus {
        /// KEP-1623 conditions; `Ready` mirrors the Sandbox.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub conditions: Vec<Condition>,
        /// The Sandbox serving the claim.
        pub sandbox: Option<ClaimedSandboxStatus>,
        /// Name of the Pod serving the claim.
        pub pod_name: Option<String>,
        /// `warm` when a pool Pod was taken over, `cold` otherwise.
        pub launch_type: Option<LaunchType>,
        /// The warm pool that served the claim.
        pub warm_pool: Option<String>,
        /// When the claim first became Ready.
        pub ready_time: Option<Time>,
        /// Seconds from the API server admitting the claim (the webhook's
        /// `agents.x-k8s.io/admitted-at` stamp, else the creation time) to the
        /// operator writing Ready, measured by the operator.
        pub time_to_ready_seconds: Option<f64>,
    }
}
