//! The record step of a reconcile: refill times, gauges, and the pool
//! status, written at most every [`STATUS_WRITE_INTERVAL`] per pool.

use std::time::Duration;

use crate::controller::Action;
use kube::ResourceExt;

use super::super::{Context, Result};
use super::SIZING_INTERVAL;
use super::autoscale::Decision;
use super::gauges::{record_metrics, record_sizing_metrics};
use super::observe::Members;
use super::size::{pool_cap, target_hit_ratio};
use super::status::{self, SizingFields, pool_status};
use crate::api::SandboxWarmPool;
use crate::sizing::Measurement;

/// Pool status is written at most this often per pool.
const STATUS_WRITE_INTERVAL: Duration = Duration::from_millis(2000);

/// What one reconcile did, for the record step.
pub(super) struct Outcome<'a> {
    /// The pool's key (`namespace/name`).
    pub key: &'a str,
    /// The template hash.
    pub hash: &'a str,
    /// The members as observed.
    pub members: &'a Members,
    /// Sizing inputs and decision.
    pub measurement: &'a Measurement,
    /// The effective size and the Autoscaling condition.
    pub sizing: Decision,
    /// Deletes that went through.
    pub deleted: usize,
    /// Pods created.
    pub created: usize,
    /// Why the pool cannot fill, if something stops it (reason, message).
    pub blocker: Option<(&'static str, String)>,
}

/// Records the reconcile and writes the status when it changed.
pub(super) async fn record(
    ctx: &Context,
    pool: &SandboxWarmPool,
    o: Outcome<'_>,
) -> Result<Action> {
    let namespace = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let desired = usize::try_from(o.sizing.desired).unwrap_or(0);
    record_refills(ctx, pool);
    let counts = &o.members.counts;
    let live = counts.idle - o.deleted.min(counts.idle) + o.members.pending_creates + o.created;
    let ready = counts.ready;
    // The model's slots are the pool's: idle or refilling, `desired`.
    let size = u32::try_from(desired).unwrap_or(u32::MAX);
    let recommendation = crate::sizing::recommend(o.measurement, size, target_hit_ratio(pool));
    record_metrics(ctx, &namespace, &name, desired, ready, live);
    record_sizing_metrics(ctx, pool, o.measurement, &recommendation);
    let cap = pool_cap(ctx);
    let problem = o
        .blocker
        .or_else(|| status::unschedulable(counts))
        .or_else(|| {
            (o.sizing.condition.is_none() && pool.spec.replicas > cap).then(|| {
                (
                    crate::api::reason::REPLICAS_CAPPED,
                    format!(
                        "spec.replicas {} exceeds the cap {cap}; keeping {desired}",
                        pool.spec.replicas
                    ),
                )
            })
        });
    let fields = SizingFields::new(o.sizing.desired, o.measurement, &recommendation);
    let status = pool_status(
        pool,
        i32::try_from(live).unwrap_or(i32::MAX),
        i32::try_from(ready).unwrap_or(i32::MAX),
        Some(o.hash),
        problem,
        &fields,
        o.sizing.condition,
    );
    if pool.status.as_ref() != Some(&status) {
        // Pool status moves with every steal and refill; writing it at most
        // once per interval keeps it off the per-claim write budget (the
        // gauges above are exact at every reconcile).
        if let Some(wait) = ctx
            .expectations
            .status_write_due(o.key, STATUS_WRITE_INTERVAL)
        {
            return Ok(Action::requeue(wait));
        }
        status::write_status(ctx, pool, &status).await?;
    }
    Ok(Action::requeue(SIZING_INTERVAL))
}

/// Pool Pods that turned Ready since the last reconcile (queued by the Pod
/// index on the watch event that showed it): the time since the pool
/// created them (their `created-at` stamp) feeds the replenish metric and
/// the pool's refill times.
fn record_refills(ctx: &Context, pool: &SandboxWarmPool) {
    let (namespace, name) = (pool.namespace().unwrap_or_default(), pool.name_any());
    let now = jiff::Timestamp::now();
    for refill in ctx.caches.index.take_refills(&namespace, &name) {
        let Some(created) = refill.created_at else {
            continue;
        };
        let seconds = now.duration_since(created).as_secs_f64();
        if seconds >= 0.0 {
            ctx.metrics
                .replenish_seconds
                .with_label_values(&[&namespace, &name, "ready"])
                .observe(seconds);
            ctx.sizing.record_refill(&namespace, &name, seconds);
        }
    }
}
