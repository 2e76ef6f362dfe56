//! Predicates over a Pod's state, and whether an object is still live.

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

/// The namespace and uid of an object a reconcile acts on, or `None` when
/// it is terminating (nothing to do: its owner references clean up).
pub fn live_target<K: ResourceExt>(obj: &K) -> Result<Option<(String, String)>, super::Error> {
    if is_terminating(obj) {
        return Ok(None);
    }
    let namespace = obj
        .namespace()
        .ok_or(super::Error::Incomplete("namespace"))?;
    let uid = obj.uid().ok_or(super::Error::Incomplete("uid"))?;
    Ok(Some((namespace, uid)))
}

/// Whether a Pod ended (Succeeded or Failed).
pub fn pod_has_ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}
