//! Bounded in-memory state: a periodic sweep drops what the operator holds
//! about objects that are gone, and `sandbox_operator_tracked_entries{table}`
//! exports the size of every table at scrape time, so "memory does not grow
//! over churn" is observable.
//!
//! Guarantees: every [`SWEEP_INTERVAL`], the series of deleted pools and
//! templates, the expectations, sizing state and queued refills of deleted
//! pools, the reservations of deleted Pods, the backoff entries of objects
//! that were never retried (deleted while failing) and the expired write
//! memos are dropped. A pool is "deleted" when the pool cache no longer has it: pools
//! carry no finalizer, so their reconcile never sees the deletion. Dropping
//! state only ever costs a repeated write or a fresh measurement, never a
//! wrong decision: each table's own docs say why it is safe to lose.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, warn};

use super::Context;
use crate::metrics::LiveObjects;

/// Time between two sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Registers the tracked-entries gauge and starts the sweep; both stop when
/// the context is dropped.
pub fn start(ctx: &Arc<Context>) {
    let weak = Arc::downgrade(ctx);
    let sampled = weak.clone();
    if let Err(error) = ctx.metrics.register_tracked_entries(Box::new(move || {
        sampled
            .upgrade()
            .map(|ctx| table_sizes(&ctx))
            .unwrap_or_default()
    })) {
        warn!(%error, "tracked-entries gauge not registered");
    }
    tokio::spawn(sweep_forever(weak));
}

async fn sweep_forever(ctx: Weak<Context>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        sweep(&ctx, Instant::now());
    }
}

/// The size of every in-memory table, by table name.
pub fn table_sizes(ctx: &Context) -> Vec<(&'static str, i64)> {
    let (reserved, steals) = ctx.reservations.sizes();
    let (sizing_pools, sizing_templates) = ctx.sizing.sizes();
    let n = |len: usize| i64::try_from(len).unwrap_or(i64::MAX);
    vec![
        ("pod_cache", n(ctx.caches.pods.state().len())),
        ("sandbox_cache", n(ctx.caches.sandboxes.state().len())),
        ("service_cache", n(ctx.caches.services.state().len())),
        ("pool_cache", n(ctx.caches.pools.state().len())),
        ("template_cache", n(ctx.caches.templates.state().len())),
        ("claim_cache", n(ctx.caches.claims.state().len())),
        ("pod_index", n(ctx.caches.index.len())),
        ("named_pod_index", n(ctx.caches.named.len())),
        ("reservations", n(reserved)),
        ("steals", n(steals)),
        ("expectations", n(ctx.expectations.pools().len())),
        ("backoff", n(ctx.backoff.len())),
        ("write_memo", n(ctx.written.len())),
        ("sizing_pools", n(sizing_pools)),
        ("sizing_templates", n(sizing_templates)),
        ("object_series", n(ctx.metrics.object_series())),
        (
            "policy_holds",
            n(super::policy_hold::held(&ctx.caches.network_policies.state()).count()),
        ),
    ]
}

/// The pools and templates in the caches.
fn live_objects(ctx: &Context) -> LiveObjects {
    LiveObjects {
        pools: ctx
            .caches
            .pools
            .state()
            .iter()
            .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
            .collect(),
        templates: ctx
            .caches
            .templates
            .state()
            .iter()
            .map(|t| (t.namespace().unwrap_or_default(), t.name_any()))
            .collect(),
    }
}

/// One sweep (see the module docs); `now` is the time the expiries are
/// judged against.
pub fn sweep(ctx: &Context, now: Instant) {
    let live = live_objects(ctx);
    let series = ctx.metrics.drop_series_of_gone(&live);
    let pool_exists = |key: &str| {
        key.split_once('/').is_some_and(|(ns, name)| {
            live.pools.contains(&(ns.to_string(), name.to_string()))
                // Re-read: a pool created since the snapshot keeps its state.
                || ctx.caches.pools.get(&ObjectRef::new(name).within(ns)).is_some()
        })
    };
    let mut expectations = 0;
    for pool in ctx.expectations.pools() {
        if !pool_exists(&pool) {
            ctx.expectations.forget(&pool);
            expectations += 1;
        }
    }
    let mut sizing = 0;
    for (ns, pool) in ctx.sizing.tracked_pools() {
        if !pool_exists(&format!("{ns}/{pool}")) {
            ctx.sizing.forget_pool(&ns, &pool);
            sizing += 1;
        }
    }
    let refills = ctx.caches.index.retain_refills(|ns, name| {
        live.pools.contains(&(ns.to_string(), name.to_string()))
            || ctx
                .caches
                .pools
                .get(&ObjectRef::new(name).within(ns))
                .is_some()
    });
    let pod_names: HashSet<String> = if ctx.reservations.sizes().1 > 0 {
        ctx.caches
            .pods
            .state()
            .iter()
            .map(|p| p.name_any())
            .collect()
    } else {
        HashSet::new()
    };
    let reservations = ctx.reservations.retain_existing(
        now,
        |key| {
            key.split_once('/').is_some_and(|(ns, name)| {
                ctx.caches
                    .pods
                    .get(&ObjectRef::new(name).within(ns))
                    .is_some()
            })
        },
        |name| pod_names.contains(name),
    );
    let backoff = ctx.backoff.prune_overdue(now);
    let memo = ctx.written.prune_expired(now);
    if series + expectations + sizing + refills + reservations + backoff + memo > 0 {
        debug!(
            series,
            expectations,
            sizing,
            refills,
            reservations,
            backoff,
            memo,
            "dropped state of gone objects"
        );
    }
}
