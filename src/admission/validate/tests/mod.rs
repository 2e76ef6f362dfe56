//! Unit tests of validation, one file per concern, and their shared
//! builders.

mod container;
mod kinds;
mod pod;
mod ratchet;
mod resources;
mod review_gaps;
mod sandbox_rules;

pub(super) use kube::core::admission::Operation;
pub(super) use serde_json::{Value, json};

pub(super) use super::{Verdict, validate};
pub(super) use crate::admission::tests::{aio_sandbox, claim, object_from_yaml, pool};
pub(super) use crate::admission::{Policy, SandboxKind};

pub(super) fn create(kind: SandboxKind, object: &Value) -> Verdict {
    validate(kind, &Operation::Create, object, None, &Policy::default())
}

pub(super) fn update(kind: SandboxKind, new: &Value, old: &Value) -> Verdict {
    validate(kind, &Operation::Update, new, Some(old), &Policy::default())
}

/// A Sandbox whose only container has the given extra fields.
pub(super) fn sandbox_with(container: Value, pod: Value) -> Value {
    let mut base = json!({"name": "c", "image": "busybox:1.36",
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}});
    base.as_object_mut()
        .unwrap()
        .extend(container.as_object().unwrap().clone());
    let mut spec = json!({"containers": [base]});
    spec.as_object_mut()
        .unwrap()
        .extend(pod.as_object().unwrap().clone());
    json!({"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "s"}, "spec": {"podTemplate": {"spec": spec}}})
}

pub(super) fn denials(verdict: &Verdict) -> Vec<String> {
    verdict.denials.iter().map(ToString::to_string).collect()
}

/// The verdict on creating [`sandbox_with`] those fields (default policy).
pub(super) fn create_sandbox_with(container: Value, pod: Value) -> Verdict {
    create(SandboxKind::Sandbox, &sandbox_with(container, pod))
}

pub(super) fn denied_with(container: Value, pod: Value) -> Vec<String> {
    denials(&create_sandbox_with(container, pod))
}

/// The denials of creating [`sandbox_with`] those fields under `policy`.
pub(super) fn denied_under(policy: &Policy, container: Value, pod: Value) -> Vec<String> {
    denials(&validate(
        SandboxKind::Sandbox,
        &Operation::Create,
        &sandbox_with(container, pod),
        None,
        policy,
    ))
}

pub(super) const C0: &str = "spec.podTemplate.spec.containers[0]";
