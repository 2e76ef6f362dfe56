//! The `request` of an AdmissionReview for a Sandbox, shared by the
//! server's tests and the unit tests of `src/review.rs` (included there with
//! `#[path]`).

use serde_json::{Value, json};

/// An AdmissionRequest (as JSON) creating a Sandbox named `name`.
pub fn sandbox_request(uid: &str, name: &str) -> Value {
    json!({
        "uid": uid,
        "kind": {"group": "agents.x-k8s.io", "version": "v1alpha1", "kind": "Sandbox"},
        "resource": {"group": "agents.x-k8s.io", "version": "v1alpha1", "resource": "sandboxes"},
        "name": name,
        "namespace": "default",
        "operation": "CREATE",
        "userInfo": {"username": "alice"},
        "object": {
            "apiVersion": "agents.x-k8s.io/v1alpha1",
            "kind": "Sandbox",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"podTemplate": {"spec": {"containers": []}}}
        }
    })
}
