//! In-process admission of the Sandboxes the operator creates for claims.
//!
//! The claim controller builds each Sandbox from its template and runs the
//! webhook's own pure functions on it before the create: [`mutate`]'s
//! defaults are applied, then [`validate`] must admit the result under the
//! current policy. So the stored Sandbox is exactly what the webhook would
//! have produced, and a policy tightened since the template was admitted
//! refuses the Sandbox here, before anything is written (the claim reports
//! `SandboxRejected` naming the field).
//!
//! Because of this check, the webhook configurations may skip the
//! operator's own Sandbox CREATEs (a `matchConditions` entry on the
//! operator's ServiceAccount username, see [`crate::webhook::config`]),
//! which takes two webhook calls off the warm path. The webhook still
//! checks every other writer, and the operator's updates.

use kube::ResourceExt;
use kube::core::admission::Operation;

use super::{Error, Result};
use crate::admission::{DefaultingError, Policy, SandboxKind, apply_create_defaults, validate};
use crate::api::Sandbox;

/// `sandbox` with the policy's defaults applied, or [`Error::PolicyDenied`]
/// naming every refused field.
pub fn admit_sandbox(policy: &Policy, sandbox: Sandbox) -> Result<Sandbox> {
    let name = sandbox.name_any();
    let denied = |message: String| Error::PolicyDenied {
        kind: "Sandbox",
        name: name.clone(),
        message,
    };
    let mut value = serde_json::to_value(&sandbox)?;
    // Nothing added: already defaulted (the template was admitted under
    // this policy), and the Sandbox is sent as it is.
    let defaulted = apply_create_defaults(SandboxKind::Sandbox, &mut value, policy).map_err(
        |error| match error {
            DefaultingError::Denied(denial) => denied(denial.to_string()),
            DefaultingError::Patch(e) => denied(format!("the policy's defaults do not apply: {e}")),
        },
    )?;
    let verdict = validate(
        SandboxKind::Sandbox,
        &Operation::Create,
        &value,
        None,
        policy,
    );
    if !verdict.allowed() {
        return Err(denied(verdict.message()));
    }
    if defaulted {
        Ok(serde_json::from_value(value)?)
    } else {
        Ok(sandbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::DEFAULT_POLICY_YAML;

    fn sandbox(pod_spec: serde_json::Value) -> Sandbox {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "c1", "namespace": "team"},
            "spec": {"podTemplate": {"spec": pod_spec}}
        }))
        .unwrap()
    }

    fn policy() -> Policy {
        Policy::from_yaml(DEFAULT_POLICY_YAML).unwrap()
    }

    #[test]
    fn defaults_are_applied_as_the_webhook_would() {
        let admitted = admit_sandbox(
            &policy(),
            sandbox(serde_json::json!({"containers": [{"name": "a", "image": "busybox"}]})),
        )
        .unwrap();
        let spec = &admitted.spec.pod_template.spec;
        assert_eq!(spec.automount_service_account_token, Some(false));
        let container = &spec.containers[0];
        assert!(
            container
                .resources
                .as_ref()
                .is_some_and(|r| r.limits.is_some())
        );
        assert_eq!(
            container
                .security_context
                .as_ref()
                .and_then(|s| s.allow_privilege_escalation),
            Some(false)
        );
        // Admitting the admitted object changes nothing (the webhook, if it
        // runs too, answers with an empty patch).
        let again = admit_sandbox(&policy(), admitted.clone()).unwrap();
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&admitted).unwrap()
        );
    }

    #[test]
    fn a_refused_field_is_named_and_nothing_is_returned() {
        let err = admit_sandbox(
            &policy(),
            sandbox(serde_json::json!({
                "hostNetwork": true,
                "containers": [{"name": "a", "image": "busybox"}]
            })),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("Sandbox c1"), "{text}");
        assert!(text.contains("spec.podTemplate.spec.hostNetwork"), "{text}");
        assert_eq!(err.class(), "invalid");
    }
}
