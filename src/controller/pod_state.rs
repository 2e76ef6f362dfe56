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

/// Every IP of `pod`, as its status lists them (`podIPs`, both families on a
/// dual-stack cluster), or its one `podIP` where the list is absent; `None`
/// before it has one. Pure.
pub fn pod_ips(pod: &Pod) -> Option<Vec<String>> {
    let status = pod.status.as_ref()?;
    let listed: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if listed.is_empty() {
        status.pod_ip.clone().map(|ip| vec![ip])
    } else {
        Some(listed)
    }
}

#[cfg(test)]
mod pod_ips_tests {
    use super::*;

    #[test]
    fn every_ip_of_a_dual_stack_pod_is_listed_and_a_lone_pod_ip_kept() {
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status}))
                .unwrap()
        };
        assert_eq!(
            pod_ips(&pod(serde_json::json!({"podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}))),
            Some(vec!["10.0.0.5".to_string(), "fd00::5".to_string()])
        );
        assert_eq!(
            pod_ips(&pod(serde_json::json!({"podIP": "10.0.0.5"}))),
            Some(vec!["10.0.0.5".to_string()])
        );
        assert_eq!(pod_ips(&pod(serde_json::json!({}))), None);
    }
}
