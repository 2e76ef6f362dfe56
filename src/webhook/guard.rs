//! The ownership guard: a ValidatingAdmissionPolicy that the API server
//! evaluates itself, so that only the operator (an identity that may update
//! the owner's finalizers) can add an ownerReference to a Sandbox,
//! SandboxClaim, SandboxWarmPool or SandboxTemplate, or change the spec and
//! reserved labels of a Pod, Service or NetworkPolicy one of them controls,
//! or give any other Pod the operator's `agents.x-k8s.io/` labels.
//! The controllers decide from those references (which idle Pods are a
//! pool's, which Sandbox is a claim's) and hand out what they control;
//! without the guard anyone who may create or patch a Pod could forge an
//! idle Pod or swap an idle Pod's image.
//!
//! One definition, `charts/sandbox-operator/files/ownership-guard.yaml`:
//! the chart installs it, and [`register`] applies the same file when the
//! operator runs on a local control plane (`--register-ownership-guard`).

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use crate::api::FIELD_MANAGER;

/// The guard as the chart ships it.
pub const GUARD_YAML: &str =
    include_str!("../../charts/sandbox-operator/files/ownership-guard.yaml");

/// The policy and its binding, read from [`GUARD_YAML`].
pub fn guard_objects()
-> anyhow::Result<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)> {
    let mut docs = serde_yaml::Deserializer::from_str(GUARD_YAML);
    let mut next = || -> anyhow::Result<serde_yaml::Value> {
        let doc = docs
            .next()
            .ok_or_else(|| anyhow::anyhow!("ownership-guard.yaml: a document is missing"))?;
        Ok(serde_yaml::Value::deserialize(doc)?)
    };
    let policy = serde_yaml::from_value(next()?)?;
    let binding = serde_yaml::from_value(next()?)?;
    Ok((policy, binding))
}

/// Applies the guard (server-side apply, idempotent: every replica and
/// restart may do it).
pub async fn register(client: &Client) -> anyhow::Result<()> {
    let (policy, binding) = guard_objects()?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    policies
        .patch(&policy.name_any(), &params, &Patch::Apply(&policy))
        .await?;
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    bindings
        .patch(&binding.name_any(), &params, &Patch::Apply(&binding))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_guard_parses_and_binds_its_own_policy() {
        let (policy, binding) = guard_objects().unwrap();
        assert_eq!(policy.name_any(), "sandbox-operator-ownership-guard");
        let spec = binding.spec;
        assert_eq!(spec.policy_name, "sandbox-operator-ownership-guard");
        assert_eq!(spec.validation_actions, vec!["Deny".to_string()]);
        let spec = policy.spec.unwrap();
        assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
        // Who may add an ownerReference to the operator's kinds, who may
        // change what they control, who may give a Pod their labels, and
        // who may lift a NetworkPolicy's hold.
        assert_eq!(spec.validations.unwrap().len(), 4);
    }
}
