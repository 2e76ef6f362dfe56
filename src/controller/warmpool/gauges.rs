//! The pool gauges: size (desired, ready, idle) and sizing figures, per
//! namespace and pool; a pool's sizing series are removed with the pool.

use kube::ResourceExt;

use super::super::Context;
use super::target_hit_ratio;
use crate::api::SandboxWarmPool;
use crate::sizing::{Measurement, Recommendation};

/// Pool size gauges.
pub fn record_metrics(
    ctx: &Context,
    namespace: &str,
    name: &str,
    desired: usize,
    ready: usize,
    live: usize,
) {
    let labels = [namespace, name];
    ctx.metrics
        .pool_desired
        .with_label_values(&labels)
        .set(desired as f64);
    ctx.metrics
        .pool_ready
        .with_label_values(&labels)
        .set(ready as f64);
    ctx.metrics
        .pool_idle
        .with_label_values(&labels)
        .set(live as f64);
}

/// Sizing gauges of a pool.
pub fn record_sizing_metrics(
    ctx: &Context,
    pool: &SandboxWarmPool,
    m: &Measurement,
    r: &Recommendation,
) {
    let (namespace, name) = (pool.namespace().unwrap_or_default(), pool.name_any());
    let (namespace, name) = (namespace.as_str(), name.as_str());
    let labels = [namespace, name];
    let metrics = &ctx.metrics;
    metrics
        .pool_target_hit_ratio
        .with_label_values(&labels)
        .set(target_hit_ratio(pool));
    for (window, rate) in [
        ("1m", m.last_1m.rate()),
        ("5m", m.last_5m.rate()),
        ("15m", m.last_15m.rate()),
        ("peak", m.peak_rate),
    ] {
        metrics
            .pool_claim_rate
            .with_label_values(&[namespace, name, window])
            .set(rate);
    }
    metrics
        .pool_burst_claims
        .with_label_values(&labels)
        .set(f64::from(m.burst));
    match m.last_5m.hit_ratio() {
        Some(hit) => metrics
            .pool_observed_hit_ratio
            .with_label_values(&labels)
            .set(hit),
        // No claims in the window: no ratio (a stale one would keep alerting).
        None => {
            let _ = metrics.pool_observed_hit_ratio.remove_label_values(&labels);
        }
    }
    // A value that is gone (its refill times reset when the template
    // changed, say) takes its series with it, as the status drops the
    // field: a stale one showed the old template's numbers (found by
    // review).
    for (gauge, value) in [
        (&metrics.pool_refill_seconds, m.refill_seconds),
        (&metrics.pool_recommended, r.replicas.map(f64::from)),
        (&metrics.pool_predicted_hit_ratio, r.predicted_hit_ratio),
    ] {
        match value {
            Some(value) => gauge.with_label_values(&labels).set(value),
            None => {
                let _ = gauge.remove_label_values(&labels);
            }
        }
    }
}

/// Drops a pool's sizing series (the pool is gone).
pub fn remove_sizing_metrics(ctx: &Context, namespace: &str, name: &str) {
    let labels = [namespace, name];
    let metrics = &ctx.metrics;
    for gauge in [
        &metrics.pool_recommended,
        &metrics.pool_predicted_hit_ratio,
        &metrics.pool_observed_hit_ratio,
        &metrics.pool_target_hit_ratio,
        &metrics.pool_refill_seconds,
        &metrics.pool_burst_claims,
    ] {
        let _ = gauge.remove_label_values(&labels);
    }
    for window in ["1m", "5m", "15m", "peak"] {
        let _ = metrics
            .pool_claim_rate
            .remove_label_values(&[namespace, name, window]);
    }
}
