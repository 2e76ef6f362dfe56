//! The watch caches: each applies watch events to a reflector store, then
//! wakes the reconciles that depend on the object.
//!
//! Guarantee: what a cache keeps is trimmed on the way in ([`slim_meta`] for
//! every kind, [`slim_pod`] for Pods) to the fields the controllers read, so
//! memory follows the number of objects, not the size of their specs.

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
use kube::Resource;
use kube::api::{Api, ObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::warn;

/// What a cache can hold: a kind of this API (no dynamic type) that can be
/// decoded, printed and shared across tasks.
pub trait Cached: Resource<DynamicType = ()> + Clone + Send + Sync + 'static + Decoded {}

impl<T: Resource<DynamicType = ()> + Clone + Send + Sync + 'static + Decoded> Cached for T {}

/// Decodable from the API server's JSON and printable in logs.
pub trait Decoded: serde::de::DeserializeOwned + std::fmt::Debug {}

impl<T: serde::de::DeserializeOwned + std::fmt::Debug> Decoded for T {}

/// How a cache gets its objects: the type the watch decodes (`W`), turned
/// into the kept one (`K`), then trimmed.
pub(super) struct Intake<W, K> {
    /// The watch's decoded object into the cached one (the identity, or
    /// [`LeanPod::into_pod`](super::lean_pod::LeanPod::into_pod)).
    pub into: fn(W) -> K,
    /// Trims what the cache keeps ([`slim_meta`], [`slim_pod`]).
    pub slim: fn(&mut K),
}

/// Runs one cache: applies each watch event to the store, then calls
/// `trigger` with the object and whether it was deleted.
pub(super) async fn cache<W, K, F>(
    health: std::sync::Arc<crate::admin::Health>,
    what: &'static str,
    api: Api<W>,
    config: watcher::Config,
    mut writer: Writer<K>,
    intake: Intake<W, K>,
    trigger: F,
) where
    W: Cached,
    K: Cached,
    F: Fn(&K, bool),
{
    use futures::{StreamExt, TryStreamExt};
    let Intake { into, slim } = intake;
    let stream = watcher(api, config)
        .default_backoff()
        .map_ok(move |event| convert(event, into))
        .modify(slim);
    let mut stream = std::pin::pin!(stream);
    let reader = writer.as_reader();
    // Keys present before a re-list, and the objects the re-list brought.
    let mut before_relist: Vec<ObjectRef<K>> = Vec::new();
    let mut relisted: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                health.watch_event(what);
                if matches!(event, watcher::Event::Init) {
                    before_relist = reader
                        .state()
                        .iter()
                        .map(|o| ObjectRef::from_obj(o.as_ref()))
                        .collect();
                    relisted.clear();
                }
                writer.apply_watcher_event(&event);
                match event {
                    watcher::Event::Apply(obj) => trigger(&obj, false),
                    watcher::Event::Delete(obj) => trigger(&obj, true),
                    watcher::Event::InitApply(obj) => relisted.push(obj),
                    watcher::Event::InitDone => {
                        // After a re-list, wake everything it brought and
                        // everything that disappeared in the gap, so no
                        // change made while the watch was down goes unseen.
                        let present: std::collections::HashSet<ObjectRef<K>> =
                            relisted.iter().map(ObjectRef::from_obj).collect();
                        for obj in relisted.drain(..) {
                            trigger(&obj, false);
                        }
                        for gone in before_relist.drain(..).filter(|r| !present.contains(r)) {
                            if let Some(obj) = gone_object(&gone) {
                                trigger(&obj, true);
                            }
                        }
                    }
                    watcher::Event::Init => {}
                }
            }
            Err(error) => {
                health.watch_error(what, &error);
                warn!(%error, what, "watch error (retrying with backoff)");
            }
        }
    }
}

/// A watch event of the decoded type as one of the kept type.
fn convert<W, K>(event: watcher::Event<W>, into: fn(W) -> K) -> watcher::Event<K> {
    match event {
        watcher::Event::Apply(obj) => watcher::Event::Apply(into(obj)),
        watcher::Event::Delete(obj) => watcher::Event::Delete(into(obj)),
        watcher::Event::InitApply(obj) => watcher::Event::InitApply(into(obj)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// A stand-in object carrying only the name and namespace of something that
/// went away during a re-list (the triggers read only metadata).
fn gone_object<K>(reference: &ObjectRef<K>) -> Option<K>
where
    K: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    let value = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": reference.name, "namespace": reference.namespace},
    });
    serde_json::from_value(value).ok()
}

/// Drops `managedFields`, which no controller reads (every cache).
pub(super) fn slim_meta<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// Trims a Pod to what the controllers read from the Pod cache:
/// - metadata: name, namespace, uid, resourceVersion (the steal, adopt and
///   pool delete preconditions), creationTimestamp, deletionTimestamp,
///   labels, annotations, ownerReferences (the steal and adopt patches test
///   only `metadata.resourceVersion` and add to labels/ownerReferences, all
///   kept), and finalizers (a few names: they tell a Pod held in
///   Terminating apart, for whoever inspects the cache);
/// - spec: `nodeName` only (Sandbox status); containers, volumes, env are
///   never read from the cache (a new Pod is built from the template);
/// - status: phase and reason (ended, evicted), the conditions (Ready,
///   PodScheduled with the scheduler's reason and message) without their
///   timestamps, `podIP` and `podIPs`.
///
/// Nothing that builds a write (patch, delete precondition) reads a field
/// dropped here; the claim's Ready status is built from the steal's own
/// response, decoded to the same fields (see `pod_patch`).
pub fn slim_pod(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        creation_timestamp: meta.creation_timestamp,
        deletion_timestamp: meta.deletion_timestamp,
        labels: meta.labels,
        annotations: meta.annotations,
        owner_references: meta.owner_references,
        finalizers: meta.finalizers,
        ..ObjectMeta::default()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        reason: status.reason,
        conditions: status.conditions.map(|conditions| {
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
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        ..PodStatus::default()
    });
}

#[cfg(test)]
mod tests;
