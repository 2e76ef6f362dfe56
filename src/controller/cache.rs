//! The watch caches: each applies watch events to a reflector store, then
//! wakes the reconciles that depend on the object.
//!
//! Guarantee: a cache keeps only what the controllers read (Pods are decoded
//! straight into those fields, see [`super::lean_pod`]; every kind drops
//! `managedFields`, [`slim_meta`]), so memory follows the number of
//! objects, not the size of their specs.

use kube::Resource;
use kube::api::Api;
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
    /// Trims what the cache keeps ([`slim_meta`]).
    pub slim: fn(&mut K),
}

/// Caches no decision waits for: the NetworkPolicies' (a deletion's
/// trigger, and a check that falls back to the API server until it has
/// listed). Their watch failing (say its RBAC rule is missing, as in
/// clusters whose RBAC predates it) is logged, never reported to
/// `/healthz`, so it cannot get the operator restarted.
pub(super) const OPTIONAL_CACHES: &[&str] = &["networkpolicies"];

/// Where one cache reports: its name, `/healthz` (a failing watch, unless
/// the cache is one of [`OPTIONAL_CACHES`]) and the counters of its events
/// (`sandbox_operator_watch_events_total`).
pub(super) struct Reporting {
    what: &'static str,
    optional: bool,
    health: std::sync::Arc<crate::admin::Health>,
    applied: prometheus::IntCounter,
    deleted: prometheus::IntCounter,
    listed: prometheus::IntCounter,
}

impl Reporting {
    /// How the cache `what` reports.
    pub(super) fn new(
        what: &'static str,
        health: std::sync::Arc<crate::admin::Health>,
        metrics: &crate::metrics::Metrics,
    ) -> Self {
        let counter = |event| metrics.watch_events.with_label_values(&[what, event]);
        Reporting {
            what,
            optional: OPTIONAL_CACHES.contains(&what),
            health,
            applied: counter("applied"),
            deleted: counter("deleted"),
            listed: counter("listed"),
        }
    }
}

/// Runs one cache: applies each watch event to the store, counts it, then
/// calls `trigger` with the object and whether it was deleted.
pub(super) async fn cache<W, K, F>(
    reporting: Reporting,
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
    // Objects present before a re-list (whole, so a trigger can still read
    // the owners and labels of one that went away), and those it brought.
    let mut before_relist: Vec<std::sync::Arc<K>> = Vec::new();
    let mut relisted: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                // `Init` comes before the list request is even sent (and
                // again before each retry of a list that failed), so only
                // what the API server answered shows the watch works: a
                // list that keeps failing stays broken from its first error.
                if !matches!(event, watcher::Event::Init) {
                    reporting.health.watch_event(reporting.what);
                }
                if matches!(event, watcher::Event::Init) {
                    before_relist = reader.state();
                    relisted.clear();
                }
                writer.apply_watcher_event(&event);
                match event {
                    watcher::Event::Apply(obj) => {
                        reporting.applied.inc();
                        trigger(&obj, false)
                    }
                    watcher::Event::Delete(obj) => {
                        reporting.deleted.inc();
                        trigger(&obj, true)
                    }
                    watcher::Event::InitApply(obj) => {
                        reporting.listed.inc();
                        relisted.push(obj)
                    }
                    watcher::Event::InitDone => {
                        // After a re-list, wake everything it brought and
                        // everything that disappeared in the gap, so no
                        // change made while the watch was down goes unseen.
                        let present: std::collections::HashSet<ObjectRef<K>> =
                            relisted.iter().map(ObjectRef::from_obj).collect();
                        for obj in relisted.drain(..) {
                            trigger(&obj, false);
                        }
                        for gone in before_relist
                            .drain(..)
                            .filter(|o| !present.contains(&ObjectRef::from_obj(o.as_ref())))
                        {
                            trigger(gone.as_ref(), true);
                        }
                    }
                    watcher::Event::Init => {}
                }
            }
            Err(error) => {
                if !reporting.optional {
                    reporting.health.watch_error(reporting.what, &error);
                }
                warn!(%error, what = reporting.what, "watch error (retrying with backoff)");
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

/// Drops `managedFields`, which no controller reads (every cache).
pub(super) fn slim_meta<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

#[cfg(test)]
mod tests;
