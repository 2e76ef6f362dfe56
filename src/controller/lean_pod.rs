//! The Pod cache's wire type: a Pod decoded straight into the fields the
//! controllers read from the Pod cache, and nothing else.
//!
//! Each Pod watch event carries the whole Pod: `managedFields`, every
//! container, volume and env var, every container status. Decoding all of
//! it into `k8s_openapi` types only to drop it was most of the cost of a Pod
//! event. [`LeanPod`] names only the kept fields; serde skips the rest
//! without building it. What is kept:
//! - metadata: name, namespace, uid, resourceVersion (the steal, adopt and
//!   pool delete preconditions), creationTimestamp, deletionTimestamp,
//!   labels, annotations, ownerReferences (the steal and adopt patches test
//!   only `metadata.resourceVersion` and add to labels/ownerReferences, all
//!   kept), and finalizers (a few names: they tell a Pod held in
//!   Terminating apart, for whoever inspects the cache);
//! - spec: `nodeName` only (Sandbox status); containers, volumes, env are
//!   never read from the cache (a new Pod is built from the template);
//! - status: phase and reason (ended, evicted), the conditions (Ready,
//!   PodScheduled with the scheduler's reason and message) without their
//!   timestamps, `podIP` and `podIPs`, and of the container statuses (init
//!   containers too) only those that restarted or wait, with their name,
//!   restart count and waiting reason (a claim does not take a pool Pod
//!   whose start went wrong: see `takeover::start_went_wrong`); a healthy
//!   running Pod keeps none.
//!
//! Nothing that builds a write (patch, delete precondition) reads a field
//! dropped here. The steal's and the adoption's own answers are decoded the
//! same way (see `pod_patch`): the claim's Ready status reads only kept
//! fields. Used only to read; writes never send it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodSpec,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::Deserialize;

/// A Pod as the cache keeps it; [`LeanPod::into_pod`] gives the Pod.
#[derive(Clone, Debug, Default)]
pub struct LeanPod(Pod);

impl LeanPod {
    /// The trimmed Pod.
    pub fn into_pod(self) -> Pod {
        self.0
    }
}

impl k8s_openapi::Resource for LeanPod {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for LeanPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// Lenient where k8s-openapi is: a null or missing `metadata`, and a
/// condition without `type` or `status`, decode (as empty) rather than fail
/// the watch.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: Option<WireMeta>,
    spec: Option<WireSpec>,
    status: Option<WireStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
    finalizers: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    node_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    phase: Option<String>,
    reason: Option<String>,
    conditions: Option<Vec<WireCondition>>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Vec<PodIP>>,
    container_statuses: Option<Vec<WireContainerStatus>>,
    init_container_statuses: Option<Vec<WireContainerStatus>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireContainerStatus {
    #[serde(default, deserialize_with = "null_as_empty")]
    name: String,
    #[serde(default)]
    restart_count: Option<i32>,
    state: Option<WireContainerState>,
}

#[derive(Deserialize)]
struct WireContainerState {
    waiting: Option<WireWaiting>,
}

#[derive(Deserialize)]
struct WireWaiting {
    reason: Option<String>,
}

/// The container statuses worth keeping: those that restarted or wait (see
/// the module docs), trimmed to name, restart count and waiting reason;
/// `None` when none is.
fn troubled(statuses: Option<Vec<WireContainerStatus>>) -> Option<Vec<ContainerStatus>> {
    let kept: Vec<ContainerStatus> = statuses?
        .into_iter()
        .filter_map(|c| {
            let restarts = c.restart_count.unwrap_or(0);
            let waiting = c.state.and_then(|s| s.waiting);
            (restarts > 0 || waiting.is_some()).then(|| ContainerStatus {
                name: c.name,
                restart_count: restarts,
                state: waiting.map(|w| ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: w.reason,
                        ..ContainerStateWaiting::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            })
        })
        .collect();
    (!kept.is_empty()).then_some(kept)
}

#[derive(Deserialize)]
struct WireCondition {
    #[serde(rename = "type", default, deserialize_with = "null_as_empty")]
    type_: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    status: String,
    reason: Option<String>,
    message: Option<String>,
}

/// A string that may be null: null reads as empty, as k8s-openapi reads it.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

impl<'de> Deserialize<'de> for LeanPod {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let m = wire.metadata.unwrap_or_default();
        Ok(LeanPod(Pod {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                resource_version: m.resource_version,
                creation_timestamp: m.creation_timestamp,
                deletion_timestamp: m.deletion_timestamp,
                labels: m.labels,
                annotations: m.annotations,
                owner_references: m.owner_references,
                finalizers: m.finalizers,
                ..ObjectMeta::default()
            },
            spec: wire.spec.map(|s| PodSpec {
                node_name: s.node_name,
                ..PodSpec::default()
            }),
            status: wire.status.map(|s| PodStatus {
                phase: s.phase,
                reason: s.reason,
                conditions: s.conditions.map(|conditions| {
                    conditions
                        .into_iter()
                        .map(|c| PodCondition {
                            type_: c.type_,
                            status: c.status,
                            reason: c.reason,
                            message: c.message,
                            ..PodCondition::default()
                        })
                        .collect()
                }),
                pod_ip: s.pod_ip,
                pod_ips: s.pod_ips,
                container_statuses: troubled(s.container_statuses),
                init_container_statuses: troubled(s.init_container_statuses),
                ..PodStatus::default()
            }),
        }))
    }
}

/// A Pod trimmed to what the cache keeps, as if the watch had sent it
/// (tests compare what readers see in both).
#[cfg(test)]
pub(crate) fn slim_pod(pod: &mut Pod) {
    let wire = serde_json::to_value(&*pod).expect("a Pod serializes");
    *pod = serde_json::from_value::<LeanPod>(wire)
        .expect("what serializes decodes")
        .into_pod();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Pod as a watch sends it: managedFields, containers, volumes,
    /// tolerations, container statuses and every kept field.
    fn full_pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "p-1", "namespace": "ns", "uid": "u-1", "resourceVersion": "42",
                "generateName": "p-", "generation": 3,
                "creationTimestamp": "2026-12-05T10:00:00Z",
                "deletionTimestamp": "2026-12-05T10:05:00Z",
                "deletionGracePeriodSeconds": 30,
                "labels": {"app": "x", "agents.x-k8s.io/pool": "pool"},
                "annotations": {"agents.x-k8s.io/created-at": "2026-12-05T10:00:00Z"},
                "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
                    "kind": "SandboxWarmPool", "name": "pool", "uid": "pool-uid",
                    "controller": true, "blockOwnerDeletion": true}],
                "finalizers": ["example.com/hold"],
                "managedFields": [{"manager": "sandbox-operator", "operation": "Update",
                    "apiVersion": "v1", "time": "2026-12-05T10:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]
            },
            "spec": {
                "nodeName": "node-0",
                "containers": [{"name": "c", "image": "busybox",
                    "env": [{"name": "A", "value": "1"}],
                    "resources": {"limits": {"cpu": "1"}},
                    "securityContext": {"runAsNonRoot": true}}],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "restartPolicy": "Never"
            },
            "status": {
                "phase": "Running", "reason": "Started", "hostIP": "127.0.0.1",
                "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
                "startTime": "2026-12-05T10:00:01Z", "qosClass": "Burstable",
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "r", "message": "m",
                     "lastTransitionTime": "2026-12-05T10:00:02Z", "lastProbeTime": null},
                    {"type": "PodScheduled", "status": "True"}
                ],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                    "image": "busybox", "imageID": "", "started": true,
                    "state": {"running": {"startedAt": "2026-12-05T10:00:02Z"}}}]
            }
        })
    }

    #[test]
    fn lean_decoding_keeps_exactly_the_listed_fields() {
        let lean: LeanPod = serde_json::from_value(full_pod()).unwrap();
        let expected: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "p-1", "namespace": "ns", "uid": "u-1", "resourceVersion": "42",
                "creationTimestamp": "2026-12-05T10:00:00Z",
                "deletionTimestamp": "2026-12-05T10:05:00Z",
                "labels": {"app": "x", "agents.x-k8s.io/pool": "pool"},
                "annotations": {"agents.x-k8s.io/created-at": "2026-12-05T10:00:00Z"},
                "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
                    "kind": "SandboxWarmPool", "name": "pool", "uid": "pool-uid",
                    "controller": true, "blockOwnerDeletion": true}],
                "finalizers": ["example.com/hold"]
            },
            "spec": {"nodeName": "node-0", "containers": []},
            "status": {
                "phase": "Running", "reason": "Started",
                "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "r", "message": "m"},
                    {"type": "PodScheduled", "status": "True"}
                ]
            }
        }))
        .unwrap();
        assert_eq!(lean.into_pod(), expected);
    }

    #[test]
    fn only_container_statuses_that_restarted_or_wait_are_kept_trimmed() {
        let mut pod = full_pod();
        pod["status"]["containerStatuses"] = json!([
            {"name": "ok", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
             "state": {"running": {"startedAt": "2026-12-05T10:00:02Z"}}},
            {"name": "again", "ready": false, "restartCount": 3, "image": "i", "imageID": "x",
             "lastState": {"terminated": {"exitCode": 1}},
             "state": {"running": {"startedAt": "2026-12-05T10:00:02Z"}}},
        ]);
        pod["status"]["initContainerStatuses"] = json!([
            {"name": "pull", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
             "state": {"waiting": {"reason": "ImagePullBackOff", "message": "long text"}}},
        ]);
        let status = serde_json::from_value::<LeanPod>(pod)
            .unwrap()
            .into_pod()
            .status
            .unwrap();
        let expected: PodStatus = serde_json::from_value(json!({
            "containerStatuses": [
                {"name": "again", "ready": false, "restartCount": 3, "image": "", "imageID": ""}
            ],
            "initContainerStatuses": [
                {"name": "pull", "ready": false, "restartCount": 0, "image": "", "imageID": "",
                 "state": {"waiting": {"reason": "ImagePullBackOff"}}}
            ]
        }))
        .unwrap();
        assert_eq!(status.container_statuses, expected.container_statuses);
        assert_eq!(
            status.init_container_statuses,
            expected.init_container_statuses
        );
    }

    #[test]
    fn a_pod_with_nothing_but_a_name_decodes() {
        let lean: LeanPod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(lean.into_pod().metadata.name.as_deref(), Some("p"));
    }

    /// Shapes k8s-openapi decodes leniently decode here too, with the same
    /// result: a watch never fails on a Pod the full type would take.
    #[test]
    fn null_metadata_and_conditions_without_type_or_status_decode_as_before() {
        for odd in [
            json!({"metadata": null}),
            json!({"metadata": {"name": "p"}, "status": {"conditions": [{"type": "Ready"}]}}),
            json!({"metadata": {"name": "p"}, "status": {"conditions": [{"type": "Ready", "status": null}]}}),
            json!({"metadata": {"name": "p"}, "status": {"conditions": [{"status": "True"}]}}),
        ] {
            let mut full: Pod = serde_json::from_value(odd.clone()).expect("k8s-openapi takes it");
            slim_pod(&mut full);
            let lean: LeanPod =
                serde_json::from_value(odd.clone()).unwrap_or_else(|e| panic!("{odd}: {e}"));
            assert_eq!(lean.into_pod(), full, "{odd}");
        }
    }

    #[test]
    fn it_is_watched_as_pods() {
        use kube::Resource;
        assert_eq!(LeanPod::kind(&()), "Pod");
        assert_eq!(LeanPod::plural(&()), "pods");
        assert_eq!(LeanPod::api_version(&()), "v1");
        assert_eq!(
            LeanPod::url_path(&(), Some("ns")),
            Pod::url_path(&(), Some("ns"))
        );
    }

    #[test]
    fn a_wrongly_typed_kept_field_is_still_an_error() {
        let bad = json!({"metadata": {"name": "p", "labels": {"a": 1}}});
        assert!(serde_json::from_value::<LeanPod>(bad).is_err());
    }
}
