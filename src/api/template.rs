//! The `SandboxTemplate` kind (`extensions.agents.x-k8s.io/v1alpha1`): the
//! blueprint sandboxes and warm Pods are made from, its network policy, the
//! reference other kinds use to name it, and the template hash that decides
//! whether a warm Pod is current.

use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};

#[cfg(doc)]
use super::TEMPLATE_HASH_LABEL;
use super::{PersistentVolumeClaimTemplate, PodTemplate};

api_object! {
    /// Ingress/egress rules for sandboxes made from a template. A direction
    /// left out or empty denies all traffic in that direction (as upstream
    /// agent-sandbox since v0.1.1); a template without `networkPolicy` gets
    /// egress everywhere but the policy file's denied ranges.
    pub struct NetworkPolicySpec {
        /// Allowed ingress; absent or empty means deny all ingress.
        pub ingress: Option<Vec<NetworkPolicyIngressRule>>,
        /// Allowed egress; absent or empty means deny all egress.
        pub egress: Option<Vec<NetworkPolicyEgressRule>>,
    }
}

agents_kind! {
    kube(
        group = "extensions.agents.x-k8s.io", kind = "SandboxTemplate", status = "SandboxTemplateStatus", shortname = "sbt",
        doc = "A reusable sandbox blueprint referenced by claims and warm pools.",
    )
    /// The blueprint sandboxes and warm Pods are made from.
    pub struct SandboxTemplateSpec {
        /// The Pod sandboxes of this template run.
        pub pod_template: PodTemplate,
        /// Volume claims for sandboxes made from this template (cold path only:
        /// warm Pods are pre-started without per-claim volumes).
        #[schemars(length(max = 16))]
        pub volume_claim_templates: Option<Vec<PersistentVolumeClaimTemplate>>,
        /// Network policy applied to claimed sandboxes (default: deny all ingress).
        pub network_policy: Option<NetworkPolicySpec>,
    }
}

api_object! {
    /// Status of a [`SandboxTemplate`] (none today; kept for the subresource).
    pub struct SandboxTemplateStatus {}
}

api_object! {
    /// A reference to a [`SandboxTemplate`] in the same namespace.
    pub struct SandboxTemplateRef {
        /// Name of the SandboxTemplate.
        #[schemars(length(min = 1))]
        pub name: String,
    }
}

impl NetworkPolicySpec {
    /// The egress rules a template's `networkPolicy` allows: its own, or
    /// none (deny all) when it leaves egress out. Found by review: absent
    /// egress meant unrestricted here, where upstream agent-sandbox denies
    /// it, so the same manifest was less isolated with us.
    pub fn allowed_egress(
        template_rules: Option<&NetworkPolicySpec>,
    ) -> Option<Vec<NetworkPolicyEgressRule>> {
        template_rules.map(|rules| rules.egress.clone().unwrap_or_default())
    }
}

/// Hash of the part of a template that shapes its Pods (64 bits, hex). Warm
/// Pods carry it in [`TEMPLATE_HASH_LABEL`]; a Pod with another hash is
/// outdated and never served.
pub fn template_hash(spec: &SandboxTemplateSpec) -> String {
    pod_template_hash(&spec.pod_template)
}

/// [`template_hash`] of a template with this pod template (a Sandbox's pod
/// template hashes to its template's hash).
pub fn pod_template_hash(pod_template: &PodTemplate) -> String {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(pod_template).expect("a pod template always serializes");
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
