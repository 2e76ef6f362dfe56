//! Predicates over a Pod's state.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// Whether a Pod is Running with a `Ready=True` condition.
pub fn pod_is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether a Pod has a deletionTimestamp.
pub fn is_terminating<K: ResourceExt>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

/// Whether a Pod ended (Succeeded or Failed).
pub fn pod_has_ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}
