//! Warm-pool controller: keeps the pool's idle, pre-started Pods of a
//! template, and sizes the pool from the claim traffic it gets.
//!
//! Flow of one reconcile (observe, decide, act, record):
//! 1. Observe: the template, the pool's members (Pods whose controller owner
//!    is this pool's uid, see [`plan::is_member`]), the claims the Sandbox
//!    cache shows ([`claims`]) and the pool's measurements.
//! 2. Decide: the effective size ([`autoscale::decide`]: `spec.replicas`
//!    capped, or the recommendation within `spec.autoscaling` bounds), then
//!    creates and deletes ([`plan::plan`]).
//! 3. Act: deletes conditioned on the uid AND resourceVersion each victim was
//!    chosen from (a 409 means a claim stole it meanwhile: benign), creates.
//! 4. Record: refill times, gauges, and the status (at most every 2 s).
//!
//! A reconcile runs on every watch event of a pool or of one of its Pods
//! (including the steal that takes a Pod out of the pool, through the
//! `origin-pool` label), so a refill starts as soon as the Pod leaves, not
//! on a timer; every pool is also requeued every [`SIZING_INTERVAL`] so its
//! figures follow the sliding windows. [`Expectations`] remembers creates and
//! deletes whose watch events have not reached the cache yet, so a lagging
//! cache never causes over-creation.

pub mod autoscale;
pub mod claims;
pub mod expectations;
pub mod gauges;
pub mod plan;
pub mod status;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

pub use expectations::Expectations;
pub use plan::{IdlePod, PoolPlan, Victim, is_member, plan};
pub use status::{SizingFields, pool_status};

use super::{
    Context, Error, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Result, controller_ref, is_conflict,
    is_not_found, is_terminating, kube_err, pod_has_ended, pod_is_ready,
};
use crate::api::{
    CREATED_AT_ANNOTATION, FIELD_MANAGER, POOL_LABEL, SandboxTemplate, SandboxWarmPool,
    TEMPLATE_HASH_LABEL, TEMPLATE_LABEL, template_hash,
};
use crate::sizing::tracker::HORIZON_SECONDS;
use crate::sizing::{DEFAULT_TARGET_HIT_RATIO, Measurement, epoch_seconds};
use gauges::{record_metrics, record_sizing_metrics, remove_sizing_metrics};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "warmpool";

/// Pool status is written at most this often per pool.
const STATUS_WRITE_INTERVAL: Duration = Duration::from_millis(2000);

/// Every pool is reconciled at least this often (its sizing windows slide).
pub const SIZING_INTERVAL: Duration = Duration::from_secs(10);

/// Sizing state of a pool not reconciled for this long is dropped (the pool
/// was deleted: a live pool is requeued every [`SIZING_INTERVAL`]).
const SIZING_STATE_MAX_AGE: f64 = 300.0;

/// Test-only fault injection: `SANDBOX_TEST_POOL_DELETE_DELAY_MS` widens
/// the window between choosing a victim and deleting it, so tests can show
/// that a steal in between is never undone by the delete. Unset in
/// production.
fn delete_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("SANDBOX_TEST_POOL_DELETE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    })
}

/// A new idle Pod for `pool` from `template`. Pure.
pub fn desired_pod(
    pool: &SandboxWarmPool,
    template: &SandboxTemplate,
    hash: &str,
    now: jiff::Timestamp,
) -> Result<Pod> {
    let meta = template
        .spec
        .pod_template
        .metadata
        .clone()
        .unwrap_or_default();
    // Defense in depth: keys reserved for the operator never come from the
    // user's template (the webhook refuses them too).
    let mut labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    labels.retain(|k, _| !crate::api::is_reserved_key(k));
    labels.insert(POOL_LABEL.into(), pool.name_any());
    labels.insert(TEMPLATE_LABEL.into(), template.name_any());
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.retain(|k, _| !crate::api::is_reserved_key(k));
    annotations.insert(CREATED_AT_ANNOTATION.into(), now.to_string());
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", pool.name_any())),
            namespace: pool.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(pool)?]),
            ..Default::default()
        },
        spec: Some(template.spec.pod_template.spec.clone()),
        status: None,
    })
}

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

/// What a reconcile observed of the pool's members.
struct Members {
    all: Vec<Arc<Pod>>,
    idle: Vec<IdlePod>,
    pending_creates: usize,
}

fn observe_members(ctx: &Context, pool: &SandboxWarmPool, key: &str, hash: &str) -> Members {
    let namespace = pool.namespace().unwrap_or_default();
    let (name, uid) = (pool.name_any(), pool.uid().unwrap_or_default());
    let all: Vec<Arc<Pod>> = ctx
        .index
        .controlled_by(&uid)
        .iter()
        .filter_map(|pod| ctx.pods.get(pod))
        .filter(|p| is_member(p, &namespace, &name, &uid))
        .collect();
    let seen: HashSet<String> = all
        .iter()
        .filter(|p| !is_terminating(p.as_ref()))
        .map(|p| p.name_any())
        .collect();
    let (pending_creates, pending_deletes) = ctx.expectations.settle(key, &seen);
    let idle = all
        .iter()
        .filter(|p| !is_terminating(p.as_ref()) && !pending_deletes.contains(&p.name_any()))
        .map(|p| IdlePod {
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            resource_version: p.resource_version().unwrap_or_default(),
            ready: pod_is_ready(p),
            current: p.labels().get(TEMPLATE_HASH_LABEL).map(String::as_str) == Some(hash)
                && !pod_has_ended(p),
            created: p.meta().creation_timestamp.as_ref().map(|t| t.0),
        })
        .collect();
    Members {
        all,
        idle,
        pending_creates,
    }
}

/// Measures the pool and decides its effective size.
fn size_pool(ctx: &Context, pool: &SandboxWarmPool) -> (Measurement, autoscale::Decision) {
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
    let measurement = ctx
        .sizing
        .measure(&namespace, &name, template, lookback, now);
    let target = target_hit_ratio(pool);
    let recommendation = crate::sizing::recommend(&measurement, 0, target);
    let as_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let inputs = autoscale::Inputs {
        recommended: recommendation.replicas.map(as_i32),
        current_need: recommendation.replicas_for_current_load.map(as_i32),
        previous: pool.status.as_ref().and_then(|s| s.desired_replicas),
        tracked_seconds: ctx.sizing.tracked_for(&namespace, &name, now),
        why: format!(
            "target {target} at peak {:.1} claims/min x refill {:.2}s, burst {}",
            measurement.peak_rate * 60.0,
            measurement.refill_seconds.unwrap_or_default(),
            measurement.burst
        ),
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

/// Reconciles one pool.
#[instrument(skip_all, fields(pool = %pool.name_any(), namespace = pool.namespace().unwrap_or_default()))]
pub async fn reconcile(pool: Arc<SandboxWarmPool>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let namespace = pool.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = pool.name_any();
    let key = format!("{namespace}/{name}");
    if is_terminating(pool.as_ref()) {
        ctx.expectations.forget(&key);
        ctx.sizing.forget_pool(&namespace, &name);
        remove_sizing_metrics(&ctx, &namespace, &name);
        return Ok(Action::await_change());
    }
    pool.uid().ok_or(Error::Incomplete("uid"))?;

    // Observe.
    let Some(template) = template_of(&ctx, &pool).await? else {
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    let hash = template_hash(&template.spec);
    let members = observe_members(&ctx, &pool, &key, &hash);

    // Decide.
    let (measurement, sizing) = size_pool(&ctx, &pool);
    let desired = usize::try_from(sizing.desired).unwrap_or(0);
    let decision = plan(
        desired,
        &members.idle,
        members.pending_creates,
        ctx.config.rollout_batch.max(1),
    );

    // The policy holds at creation time too: a template admitted under an
    // older or laxer policy fills no pool (a condition and an Event say why).
    let denials = crate::admission::check_pod_template(
        &ctx.config.policy.current(),
        &template.spec.pod_template,
    );
    let policy_problem = (!denials.is_empty()).then(|| {
        (
            "PolicyViolation",
            format!(
                "template {} violates the admission policy, no Pod is created: {}",
                template.name_any(),
                denials
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    });
    let creates = if policy_problem.is_some() {
        0
    } else {
        decision.create
    };
    if let Some((reason, message)) = &policy_problem {
        let memo = serde_json::Value::String(message.clone());
        let event_key = format!("policy-event/{key}");
        if !ctx.written.recently_wrote(&event_key, &memo) {
            ctx.event(
                pool.as_ref(),
                kube::runtime::events::EventType::Warning,
                reason,
                "CreatePod",
                message.clone(),
            )
            .await;
            ctx.written.record(&event_key, memo);
        }
    }

    // Act.
    let deleted = delete_victims(&ctx, &key, &namespace, &decision.delete).await?;
    create_pods(&ctx, &pool, &template, &hash, &key, creates).await?;

    // Record.
    record_refills(&ctx, &pool, &key, &members.all);
    let idle = &members.idle;
    let live = idle.len() - deleted.min(idle.len()) + members.pending_creates + creates;
    let ready = idle.iter().filter(|p| p.ready && p.current).count();
    // Erlang's servers are the pool's slots: idle or refilling, `desired`.
    let size = u32::try_from(desired).unwrap_or(u32::MAX);
    let recommendation = crate::sizing::recommend(&measurement, size, target_hit_ratio(&pool));
    record_metrics(&ctx, &namespace, &name, desired, ready, live);
    record_sizing_metrics(&ctx, &pool, &measurement, &recommendation);
    let cap = pool_cap(&ctx);
    let problem = policy_problem
        .or_else(|| status::unschedulable(&members.all))
        .or_else(|| {
            (sizing.condition.is_none() && pool.spec.replicas > cap).then(|| {
                (
                    "ReplicasCapped",
                    format!(
                        "spec.replicas {} exceeds the cap {cap}; keeping {desired}",
                        pool.spec.replicas
                    ),
                )
            })
        });
    let fields = SizingFields::new(sizing.desired, &measurement, &recommendation);
    let status = pool_status(
        &pool,
        i32::try_from(live).unwrap_or(i32::MAX),
        i32::try_from(ready).unwrap_or(i32::MAX),
        Some(&hash),
        problem,
        &fields,
        sizing.condition,
    );
    if pool.status.as_ref() != Some(&status) {
        // Pool status moves with every steal and refill; writing it at most
        // once per interval keeps it off the per-claim write budget (the
        // gauges above are exact at every reconcile).
        if let Some(wait) = ctx
            .expectations
            .status_write_due(&key, STATUS_WRITE_INTERVAL)
        {
            return Ok(Action::requeue(wait));
        }
        status::write_status(&ctx, &pool, &status).await?;
    }
    Ok(Action::requeue(SIZING_INTERVAL))
}

/// The pool's template from the cache (or the API); `None` after reporting
/// `TemplateNotFound` in the status.
async fn template_of(ctx: &Context, pool: &SandboxWarmPool) -> Result<Option<SandboxTemplate>> {
    let namespace = pool.namespace().unwrap_or_default();
    let template_name = &pool.spec.sandbox_template_ref.name;
    if let Some(t) = ctx.template(&namespace, template_name) {
        return Ok(Some((*t).clone()));
    }
    let api: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(t) = api
        .get_opt(template_name)
        .await
        .map_err(kube_err("get template"))?
    {
        return Ok(Some(t));
    }
    let fields = SizingFields {
        desired_replicas: pool.spec.replicas.min(pool_cap(ctx)),
        ..Default::default()
    };
    let status = pool_status(
        pool,
        0,
        0,
        None,
        Some((
            "TemplateNotFound",
            format!("SandboxTemplate {template_name} does not exist"),
        )),
        &fields,
        None,
    );
    status::write_status(ctx, pool, &status).await?;
    Ok(None)
}

/// Deletes the victims, each conditioned on the uid and resourceVersion it
/// was chosen from: a Pod that changed since (a claim stole it, its status
/// moved) answers 409 and is left alone; the next reconcile decides again
/// from the fresh copy. Returns how many deletes went through.
async fn delete_victims(
    ctx: &Context,
    key: &str,
    namespace: &str,
    victims: &[Victim],
) -> Result<usize> {
    if victims.is_empty() {
        return Ok(0);
    }
    if let Some(delay) = delete_delay() {
        tokio::time::sleep(delay).await;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut deleted = 0;
    for victim in victims {
        ctx.expectations.deleted(key, &victim.name);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(victim.uid.clone()),
                resource_version: Some(victim.resource_version.clone()),
            }),
            ..Default::default()
        };
        match pods.delete(&victim.name, &params).await {
            Ok(_) => deleted += 1,
            Err(e) if is_not_found(&e) => deleted += 1,
            Err(e) if is_conflict(&e) => {
                info!(pod = %victim.name, "Pod changed since it was chosen for deletion; kept");
                ctx.expectations.delete_refused(key, &victim.name);
            }
            Err(e) => return Err(kube_err(format!("delete pod {}", victim.name))(e)),
        }
    }
    Ok(deleted)
}

/// Creates `count` idle Pods.
async fn create_pods(
    ctx: &Context,
    pool: &SandboxWarmPool,
    template: &SandboxTemplate,
    hash: &str,
    key: &str,
    count: usize,
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let started = Instant::now();
    let pod = desired_pod(pool, template, hash, jiff::Timestamp::now())?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(0..count)
        .map(|_| pods.create(&params, &pod))
        .buffer_unordered(ctx.config.pool_create_parallelism.max(1))
        .collect()
        .await;
    let mut first_error = None;
    for result in results {
        match result {
            Ok(created) => {
                ctx.expectations.created(key, &created.name_any());
                ctx.metrics
                    .replenish_seconds
                    .with_label_values(&["created"])
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                warn!(error = %e, "creating a warm Pod failed");
                first_error.get_or_insert(e);
            }
        }
    }
    info!(count, "created warm Pods");
    match first_error {
        Some(e) => Err(kube_err("create warm pod")(e)),
        None => Ok(()),
    }
}

/// Pool Pods that turned Ready: the time since the pool created them (their
/// `created-at` stamp) feeds the replenish metric and the pool's refill
/// times.
fn record_refills(ctx: &Context, pool: &SandboxWarmPool, key: &str, members: &[Arc<Pod>]) {
    let ready_pods: Vec<&Arc<Pod>> = members
        .iter()
        .filter(|p| !is_terminating(p.as_ref()) && pod_is_ready(p))
        .collect();
    let ready_uids: Vec<String> = ready_pods.iter().filter_map(|p| p.uid()).collect();
    let newly_ready = ctx.expectations.newly_ready(key, &ready_uids);
    let now = jiff::Timestamp::now();
    let namespace = pool.namespace().unwrap_or_default();
    for pod in ready_pods
        .iter()
        .filter(|p| p.uid().is_some_and(|u| newly_ready.contains(&u)))
    {
        let Some(created) = pod
            .annotations()
            .get(CREATED_AT_ANNOTATION)
            .and_then(|v| v.parse::<jiff::Timestamp>().ok())
        else {
            continue;
        };
        let seconds = now.duration_since(created).as_secs_f64();
        if seconds >= 0.0 {
            ctx.metrics
                .replenish_seconds
                .with_label_values(&["ready"])
                .observe(seconds);
            ctx.sizing
                .record_refill(&namespace, &pool.name_any(), seconds);
        }
    }
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
