//! How many idle Pods a pool keeps: its hit-ratio target, the cap, and the
//! measurement and decision of one reconcile ([`size_pool`]).

use kube::ResourceExt;

use super::super::Context;
use super::autoscale;
use super::claims;
use super::gauges::remove_sizing_metrics;
use crate::api::SandboxWarmPool;
use crate::sizing::tracker::HORIZON_SECONDS;
use crate::sizing::{DEFAULT_TARGET_HIT_RATIO, Measurement, epoch_seconds};

/// Sizing state of a pool not reconciled for this long is dropped (the pool
/// was deleted: a live pool is requeued every [`super::SIZING_INTERVAL`]).
const SIZING_STATE_MAX_AGE: f64 = 300.0;

/// The target hit ratio of a pool: `autoscaling.targetHitRatio`, else
/// `targetHitRatio`, else 0.99.
pub fn target_hit_ratio(pool: &SandboxWarmPool) -> f64 {
    pool.spec
        .autoscaling
        .as_ref()
        .and_then(|a| a.target_hit_ratio)
        .or(pool.spec.target_hit_ratio)
        .unwrap_or(DEFAULT_TARGET_HIT_RATIO)
}

/// The most idle Pods any pool keeps: the `--max-pool-replicas` flag and the
/// admission policy's `maxPoolReplicas`, whichever is lower.
pub fn pool_cap(ctx: &Context) -> i32 {
    ctx.config
        .max_pool_replicas
        .min(ctx.config.policy.current().max_pool_replicas)
}

/// Measures the pool and decides its effective size.
pub(super) fn size_pool(
    ctx: &Context,
    pool: &SandboxWarmPool,
) -> (Measurement, autoscale::Decision) {
    let namespace = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let template = &pool.spec.sandbox_template_ref.name;
    let now = epoch_seconds(jiff::Timestamp::now());
    claims::scan(ctx, now);
    let lookback = pool
        .spec
        .autoscaling
        .as_ref()
        .map(autoscale::lookback_seconds)
        .unwrap_or(HORIZON_SECONDS);
    let target = target_hit_ratio(pool);
    let measurement = ctx
        .sizing
        .measure(&namespace, &name, template, (lookback, target), now);
    let recommendation = crate::sizing::recommend(&measurement, 0, target);
    let as_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let inputs = autoscale::Inputs {
        recommended: recommendation.replicas.map(as_i32),
        current_need: recommendation.replicas_for_current_load.map(as_i32),
        previous: pool.status.as_ref().and_then(|s| s.desired_replicas),
        tracked_seconds: ctx.sizing.tracked_for(&namespace, &name, now),
        // Only the autoscaler's condition quotes it: a fixed-size pool does
        // not format floats on every reconcile.
        why: if pool.spec.autoscaling.is_some() {
            format!(
                "target {target} at peak {:.1} claims/min x refill {:.2}s, bursts need {} \
                 (largest {})",
                measurement.peak_rate * 60.0,
                measurement.refill_seconds.unwrap_or_default(),
                measurement.burst_at_target,
                measurement.burst
            )
        } else {
            String::new()
        },
    };
    let decision = autoscale::decide(
        pool.spec.replicas,
        pool.spec.autoscaling.as_ref(),
        pool_cap(ctx),
        &inputs,
    );
    for (namespace, pool) in ctx
        .sizing
        .sweep(&namespace, &name, now, SIZING_STATE_MAX_AGE)
    {
        remove_sizing_metrics(ctx, &namespace, &pool);
    }
    (measurement, decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PoolAutoscaling;

    #[test]
    fn target_hit_ratio_prefers_autoscaling_then_spec_then_default() {
        let mut pool = SandboxWarmPool::new("p", Default::default());
        assert_eq!(target_hit_ratio(&pool), 0.99);
        pool.spec.target_hit_ratio = Some(0.9);
        assert_eq!(target_hit_ratio(&pool), 0.9);
        pool.spec.autoscaling = Some(PoolAutoscaling {
            target_hit_ratio: Some(0.95),
            ..Default::default()
        });
        assert_eq!(target_hit_ratio(&pool), 0.95);
    }
}
