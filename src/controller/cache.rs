//! The watch caches: each applies watch events to a reflector store, then
//! wakes the reconciles that depend on the object.

use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::warn;

/// Runs one cache: applies each watch event to the store, then calls
/// `trigger` with the object and whether it was deleted.
pub(super) async fn cache<K, F>(
    health: std::sync::Arc<crate::admin::Health>,
    what: &'static str,
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    trigger: F,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(&K, bool),
{
    use futures::StreamExt;
    // managedFields are never read by the controllers: dropping them keeps
    // the caches small.
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|obj| obj.meta_mut().managed_fields = None);
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
