//! Bounded in-memory state: `sandbox_operator_tracked_entries{table}`
//! exports the size of every in-memory table at scrape time, so "memory does
//! not grow over churn" is observable.

use std::sync::Arc;

use tracing::warn;

use super::Context;

/// Registers the tracked-entries gauge (it reads nothing once the context
/// is dropped).
pub fn start(ctx: &Arc<Context>) {
    let sampled = Arc::downgrade(ctx);
    if let Err(error) = ctx.metrics.register_tracked_entries(Box::new(move || {
        sampled
            .upgrade()
            .map(|ctx| table_sizes(&ctx))
            .unwrap_or_default()
    })) {
        warn!(%error, "tracked-entries gauge not registered");
    }
}

/// The size of every in-memory table, by table name.
pub fn table_sizes(ctx: &Context) -> Vec<(&'static str, i64)> {
    let (reserved, steals) = ctx.reservations.sizes();
    let (sizing_pools, sizing_templates) = ctx.sizing.sizes();
    let n = |len: usize| i64::try_from(len).unwrap_or(i64::MAX);
    vec![
        ("pod_cache", n(ctx.pods.state().len())),
        ("sandbox_cache", n(ctx.sandboxes.state().len())),
        ("service_cache", n(ctx.services.state().len())),
        ("pool_cache", n(ctx.pools.state().len())),
        ("template_cache", n(ctx.templates.state().len())),
        ("pod_index", n(ctx.index.len())),
        ("reservations", n(reserved)),
        ("steals", n(steals)),
        ("expectations", n(ctx.expectations.pools().len())),
        ("backoff", n(ctx.backoff.len())),
        ("write_memo", n(ctx.written.len())),
        ("sizing_pools", n(sizing_pools)),
        ("sizing_templates", n(sizing_templates)),
        ("object_series", n(ctx.metrics.object_series())),
    ]
}
