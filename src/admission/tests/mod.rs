//! Unit tests of the admission module as a whole (the handler, robustness
//! against malformed objects, the kinds), and the fixtures the per-concern
//! tests share.

mod export;
mod handler;
mod robustness;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use serde_json::{Value, json};

use super::SandboxKind;

/// Parses a YAML manifest into JSON, as the API server would send it.
pub(crate) fn object_from_yaml(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("test YAML parses")
}

/// The seed's AIO Sandbox, verbatim.
pub(crate) fn aio_sandbox() -> Value {
    object_from_yaml(include_str!("../../../examples/aio-sandbox.yaml"))
}

pub(crate) fn claim() -> Value {
    json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
        "metadata": {"name": "c", "namespace": "default"},
        "spec": {"sandboxTemplateRef": {"name": "aio"}}})
}

pub(crate) fn pool(replicas: i64) -> Value {
    json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": "aio"}}})
}

pub(crate) fn request(
    kind: SandboxKind,
    operation: &str,
    object: Option<Value>,
    old_object: Option<Value>,
) -> AdmissionRequest<DynamicObject> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b6c6f7e-0000-4000-8000-000000000001",
            "kind": {"group": kind.group(), "version": "v1alpha1", "kind": kind.as_str()},
            "resource": {"group": kind.group(), "version": "v1alpha1", "resource": "things"},
            "name": "x",
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object,
            "oldObject": old_object,
        }
    });
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review).unwrap();
    review.try_into().unwrap()
}
