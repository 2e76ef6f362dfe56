//! Unit tests of the slim Pod the cache keeps: what it drops, and that
//! every reader (status, steal and adopt patches, pool membership) answers
//! the same from it as from the full Pod.
use crate::api::{POOL_LABEL, TEMPLATE_HASH_LABEL};
use crate::controller::lean_pod::slim_pod;
use crate::controller::sandbox::compute_status;
use crate::controller::takeover::{adopt_patch, steal_patch};
use crate::controller::warmpool::members::Member;
use crate::controller::{controller_uid, is_terminating, pod_has_ended, pod_is_ready};
use k8s_openapi::api::core::v1::Pod;

/// A Pod as the API server sends it: managedFields, a spec with a
/// container, env and volumes, a full status with container statuses.
fn full_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "pool-abc", "namespace": "ns", "uid": "pod-uid",
            "resourceVersion": "42", "generateName": "pool-",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-01T00:01:00Z",
            "labels": {POOL_LABEL: "pool", TEMPLATE_HASH_LABEL: "h"},
            "annotations": {"agents.x-k8s.io/created-at": "2026-01-01T00:00:00Z"},
            "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool", "name": "pool",
                                 "uid": "pool-uid", "controller": true}],
            "finalizers": ["example.com/keep"],
            "managedFields": [{"manager": "kubelet", "operation": "Update",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}]
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "c", "image": "busybox",
                            "env": [{"name": "A", "value": "x".repeat(4096)}]}],
            "volumes": [{"name": "v", "emptyDir": {}}]
        },
        "status": {
            "phase": "Running", "reason": "Evicted", "hostIP": "10.0.0.1",
            "podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}],
            "startTime": "2026-01-01T00:00:01Z",
            "conditions": [
                {"type": "Ready", "status": "True",
                 "lastTransitionTime": "2026-01-01T00:00:02Z"},
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available"}
            ],
            "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "",
                                   "ready": true, "restartCount": 0,
                                   "state": {"terminated": {"exitCode": 1}}}]
        }
    }))
    .expect("a valid Pod")
}

#[test]
fn slim_pod_drops_what_no_reader_needs() {
    let mut pod = full_pod();
    let full_size = serde_json::to_vec(&pod).unwrap().len();
    slim_pod(&mut pod);
    assert_eq!(pod.metadata.managed_fields, None);
    assert_eq!(pod.metadata.finalizers.as_ref().unwrap().len(), 1);
    assert_eq!(pod.metadata.generate_name, None);
    let spec = pod.spec.as_ref().unwrap();
    assert!(spec.containers.is_empty() && spec.volumes.is_none());
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.container_statuses, None);
    assert_eq!(status.host_ip, None);
    assert!(
        status.conditions.as_ref().unwrap()[0]
            .last_transition_time
            .is_none()
    );
    let slim_size = serde_json::to_vec(&pod).unwrap().len();
    assert!(
        slim_size * 4 < full_size,
        "{slim_size} bytes of {full_size}"
    );
}

#[test]
fn every_reader_sees_the_same_answers_from_a_slim_pod() {
    let full = full_pod();
    let mut slim = full.clone();
    slim_pod(&mut slim);
    for pod in [&full, &slim] {
        assert!(pod_is_ready(pod));
        assert!(is_terminating(pod));
        assert!(!pod_has_ended(pod));
        assert_eq!(controller_uid(&pod.metadata), Some("pool-uid"));
    }
    assert_eq!(Member::of(&full), Member::of(&slim));
    let owner = crate::controller::test_pod::controller("SandboxClaim", "claim", "claim-uid");
    assert_eq!(
        steal_patch(&full, "claim", "claim-uid", owner.clone()),
        steal_patch(&slim, "claim", "claim-uid", owner.clone())
    );
    assert_eq!(
        adopt_patch(&full, "sandbox", owner.clone()),
        adopt_patch(&slim, "sandbox", owner)
    );
    let sandbox = crate::api::Sandbox::new("s", Default::default());
    let now = jiff::Timestamp::from_second(1_000_000).unwrap();
    let from_full = compute_status(&sandbox, Some(&full), None, "cluster.local", now);
    let from_slim = compute_status(&sandbox, Some(&slim), None, "cluster.local", now);
    assert_eq!(from_full, from_slim);
    assert_eq!(from_slim.pod_ip.as_deref(), Some("10.1.0.7"));
    assert_eq!(from_slim.node_name.as_deref(), Some("node-1"));
    assert_eq!(
        slim.status.as_ref().unwrap().reason.as_deref(),
        Some("Evicted")
    );
    assert_eq!(
        slim.status.unwrap().pod_ips.unwrap()[0].ip,
        "10.1.0.7".to_string()
    );
}
