//! Warm-pool controller: keeps `spec.replicas` idle, pre-started Pods of a
//! template.
//!
//! A reconcile runs on every watch event of a pool or of one of its Pods
//! (including the steal that takes a Pod out of the pool, through the
//! `origin-pool` label), so a refill starts as soon as the Pod leaves, not
//! on a timer. The pure [`plan`] decides how many Pods to create and which to
//! delete; [`Expectations`] remembers creates and deletes whose watch events
//! have not reached the cache yet, so a lagging cache never causes
//! over-creation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::{
    Context, Error, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Result, controller_ref, controller_uid,
    is_conflict, is_not_found, is_terminating, kube_err, pod_has_ended, pod_is_ready,
};
use crate::api::{
    CREATED_AT_ANNOTATION, ConditionUpdate, EXHAUSTED, FIELD_MANAGER, POOL_LABEL, SandboxTemplate,
    SandboxWarmPool, SandboxWarmPoolStatus, TEMPLATE_HASH_LABEL, TEMPLATE_LABEL, set_condition,
    template_hash,
};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "warmpool";

/// Pool status is written at most this often per pool.
const STATUS_WRITE_INTERVAL: Duration = Duration::from_millis(2000);

/// How long an unconfirmed create/delete is remembered.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// What the plan needs to know about one idle Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct IdlePod {
    /// Pod name.
    pub name: String,
    /// Pod uid (guards the delete).
    pub uid: String,
    /// Ready now.
    pub ready: bool,
    /// Made from the current template.
    pub current: bool,
    /// Creation time, for "newest first" on scale-down.
    pub created: Option<jiff::Timestamp>,
}

/// The decision of one pool reconcile.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PoolPlan {
    /// Pods to create.
    pub create: usize,
    /// Pods to delete (name, uid).
    pub delete: Vec<(String, String)>,
}

/// Decides creates and deletes for a pool. Pure.
///
/// - `idle` are the pool's live idle Pods (not terminating, not being deleted
///   by us), `pending_creates` the creates not yet visible in the cache.
/// - Scale-down removes not-Ready Pods first, then outdated, then newest.
/// - An outdated Pod is replaced (delete + create) at most `rollout_batch`
///   at a time, and only while fewer than `rollout_batch` current Pods are
///   still starting, so the pool never empties during a template change.
pub fn plan(
    desired: usize,
    idle: &[IdlePod],
    pending_creates: usize,
    rollout_batch: usize,
) -> PoolPlan {
    let count = idle.len() + pending_creates;
    let mut plan = PoolPlan::default();
    if count > desired {
        let mut victims: Vec<&IdlePod> = idle.iter().collect();
        // not-Ready first, then outdated, then newest.
        victims.sort_by(|a, b| {
            a.ready
                .cmp(&b.ready)
                .then(a.current.cmp(&b.current))
                .then(b.created.cmp(&a.created))
                // Deterministic tie-break: two controllers that see the same
                // Pods pick the same victims.
                .then(b.name.cmp(&a.name))
        });
        let surplus = (count - desired).min(idle.len());
        plan.delete = victims
            .into_iter()
            .take(surplus)
            .map(|p| (p.name.clone(), p.uid.clone()))
            .collect();
        return plan;
    }
    plan.create = desired - count;
    let starting =
        idle.iter().filter(|p| p.current && !p.ready).count() + pending_creates + plan.create;
    if starting < rollout_batch {
        let budget = rollout_batch - starting;
        let outdated = idle.iter().filter(|p| !p.current).take(budget);
        for p in outdated {
            plan.delete.push((p.name.clone(), p.uid.clone()));
            plan.create += 1;
        }
    }
    plan
}

/// Creates and deletes a pool issued but the cache has not shown yet.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, PoolExpectations>>,
}

#[derive(Default)]
struct PoolExpectations {
    creates: HashMap<String, Instant>,
    deletes: HashMap<String, Instant>,
    last_status_write: Option<Instant>,
    /// Replacement Pods already counted in the replenish-to-Ready metric.
    ready_seen: HashSet<String>,
    /// Whether `ready_seen` was seeded (Pods Ready before this process
    /// started are not replenishments it saw).
    seeded: bool,
}

impl Expectations {
    /// Forgets expectations the cache has confirmed (or that timed out) and
    /// returns (pending creates, names pending deletion).
    pub fn settle(&self, pool: &str, seen: &HashSet<String>) -> (usize, HashSet<String>) {
        let mut all = self.inner.lock().expect("expectations lock");
        let e = all.entry(pool.to_string()).or_default();
        e.creates
            .retain(|name, at| !seen.contains(name) && at.elapsed() < EXPECTATION_TTL);
        e.deletes
            .retain(|name, at| seen.contains(name) && at.elapsed() < EXPECTATION_TTL);
        (e.creates.len(), e.deletes.keys().cloned().collect())
    }

    /// Records a create whose Pod is not in the cache yet.
    pub fn created(&self, pool: &str, name: &str) {
        let mut all = self.inner.lock().expect("expectations lock");
        all.entry(pool.to_string())
            .or_default()
            .creates
            .insert(name.into(), Instant::now());
    }

    /// Records a delete the cache has not shown yet.
    pub fn deleted(&self, pool: &str, name: &str) {
        let mut all = self.inner.lock().expect("expectations lock");
        all.entry(pool.to_string())
            .or_default()
            .deletes
            .insert(name.into(), Instant::now());
    }

    /// `None` when a status write is allowed now (and records it), else how
    /// long to wait before the next one.
    pub fn status_write_due(&self, pool: &str, interval: Duration) -> Option<Duration> {
        let mut all = self.inner.lock().expect("expectations lock");
        let e = all.entry(pool.to_string()).or_default();
        match e.last_status_write {
            Some(at) if at.elapsed() < interval => Some(interval - at.elapsed()),
            _ => {
                e.last_status_write = Some(Instant::now());
                None
            }
        }
    }

    /// Of the given Ready Pods (uid), those not reported before; forgets
    /// Pods that are no longer listed.
    pub fn newly_ready(&self, pool: &str, ready_uids: &[String]) -> Vec<String> {
        let mut all = self.inner.lock().expect("expectations lock");
        let e = all.entry(pool.to_string()).or_default();
        e.ready_seen.retain(|uid| ready_uids.contains(uid));
        let fresh: Vec<String> = ready_uids
            .iter()
            .filter(|uid| e.ready_seen.insert((*uid).clone()))
            .cloned()
            .collect();
        if !e.seeded {
            // Pods Ready before this process looked are not replenishments
            // it saw happen.
            e.seeded = true;
            return Vec::new();
        }
        fresh
    }

    /// Drops everything about a pool (it was deleted).
    pub fn forget(&self, pool: &str) {
        self.inner.lock().expect("expectations lock").remove(pool);
    }
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
    let mut labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    labels.insert(POOL_LABEL.into(), pool.name_any());
    labels.insert(TEMPLATE_LABEL.into(), template.name_any());
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    let mut annotations = meta.annotations.unwrap_or_default();
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

/// Reconciles one pool.
#[instrument(skip_all, fields(pool = %pool.name_any(), namespace = pool.namespace().unwrap_or_default()))]
pub async fn reconcile(pool: Arc<SandboxWarmPool>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let namespace = pool.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = pool.name_any();
    let key = format!("{namespace}/{name}");
    if is_terminating(pool.as_ref()) {
        ctx.expectations.forget(&key);
        return Ok(Action::await_change());
    }
    let uid = pool.uid().ok_or(Error::Incomplete("uid"))?;

    // Observe.
    let template_name = &pool.spec.sandbox_template_ref.name;
    let template = match ctx.template(&namespace, template_name) {
        Some(t) => (*t).clone(),
        None => {
            let api: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &namespace);
            match api
                .get_opt(template_name)
                .await
                .map_err(kube_err("get template"))?
            {
                Some(t) => t,
                None => {
                    let status = pool_status(
                        &pool,
                        0,
                        0,
                        None,
                        Some((
                            "TemplateNotFound",
                            format!("SandboxTemplate {template_name} does not exist"),
                        )),
                    );
                    write_status(&ctx, &pool, &status).await?;
                    return Ok(Action::requeue(Duration::from_secs(10)));
                }
            }
        }
    };
    let hash = template_hash(&template.spec);
    let mine: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(&namespace)
                && p.labels().get(POOL_LABEL) == Some(&name)
                && controller_uid(&p.metadata) == Some(uid.as_str())
        })
        .collect();
    let seen: HashSet<String> = mine
        .iter()
        .filter(|p| !is_terminating(p.as_ref()))
        .map(|p| p.name_any())
        .collect();
    let (pending_creates, pending_deletes) = ctx.expectations.settle(&key, &seen);
    let idle: Vec<IdlePod> = mine
        .iter()
        .filter(|p| !is_terminating(p.as_ref()) && !pending_deletes.contains(&p.name_any()))
        .map(|p| IdlePod {
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            ready: pod_is_ready(p),
            current: p.labels().get(TEMPLATE_HASH_LABEL) == Some(&hash) && !pod_has_ended(p),
            created: p.meta().creation_timestamp.as_ref().map(|t| t.0),
        })
        .collect();
    let cap = usize::try_from(ctx.config.max_pool_replicas).unwrap_or(0);
    let desired = usize::try_from(pool.spec.replicas).unwrap_or(0).min(cap);

    // Decide.
    let decision = plan(
        desired,
        &idle,
        pending_creates,
        ctx.config.rollout_batch.max(1),
    );

    // Act.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    for (pod_name, pod_uid) in &decision.delete {
        ctx.expectations.deleted(&key, pod_name);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod_uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods.delete(pod_name, &params).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(kube_err(format!("delete pod {pod_name}"))(e)),
        }
    }
    if decision.create > 0 {
        let now = jiff::Timestamp::now();
        let started = Instant::now();
        let pod = desired_pod(&pool, &template, &hash, now)?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(0..decision.create)
            .map(|_| pods.create(&params, &pod))
            .buffer_unordered(ctx.config.pool_create_parallelism.max(1))
            .collect()
            .await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(created) => {
                    ctx.expectations.created(&key, &created.name_any());
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
        info!(count = decision.create, "created warm Pods");
        if let Some(e) = first_error {
            return Err(kube_err("create warm pod")(e));
        }
    }

    // Record. Replacement Pods that turned Ready: the time since the pool
    // noticed the departure and created them (their `created-at` stamp).
    let ready_pods: Vec<&Arc<Pod>> = mine
        .iter()
        .filter(|p| !is_terminating(p.as_ref()) && pod_is_ready(p))
        .collect();
    let ready_uids: Vec<String> = ready_pods.iter().filter_map(|p| p.uid()).collect();
    let newly_ready = ctx.expectations.newly_ready(&key, &ready_uids);
    let now = jiff::Timestamp::now();
    for pod in ready_pods
        .iter()
        .filter(|p| p.uid().is_some_and(|u| newly_ready.contains(&u)))
    {
        if let Some(created) = pod
            .annotations()
            .get(CREATED_AT_ANNOTATION)
            .and_then(|v| v.parse::<jiff::Timestamp>().ok())
        {
            let seconds = now.duration_since(created).as_secs_f64();
            if seconds >= 0.0 {
                ctx.metrics
                    .replenish_seconds
                    .with_label_values(&["ready"])
                    .observe(seconds);
            }
        }
    }
    let live =
        idle.len() - decision.delete.len().min(idle.len()) + pending_creates + decision.create;
    let ready = idle.iter().filter(|p| p.ready && p.current).count();
    ctx.metrics
        .pool_desired
        .with_label_values(&[&namespace, &name])
        .set(desired as f64);
    ctx.metrics
        .pool_ready
        .with_label_values(&[&namespace, &name])
        .set(ready as f64);
    ctx.metrics
        .pool_idle
        .with_label_values(&[&namespace, &name])
        .set(live as f64);
    let problem = (pool.spec.replicas > ctx.config.max_pool_replicas).then(|| {
        (
            "ReplicasCapped",
            format!(
                "spec.replicas {} exceeds the cap {}; keeping {}",
                pool.spec.replicas, ctx.config.max_pool_replicas, desired
            ),
        )
    });
    let status = pool_status(
        &pool,
        i32::try_from(live).unwrap_or(i32::MAX),
        i32::try_from(ready).unwrap_or(i32::MAX),
        Some(&hash),
        problem,
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
        write_status(&ctx, &pool, &status).await?;
    }
    Ok(Action::await_change())
}

/// The status of a pool. Pure.
pub fn pool_status(
    pool: &SandboxWarmPool,
    replicas: i32,
    ready: i32,
    hash: Option<&str>,
    problem: Option<(&'static str, String)>,
) -> SandboxWarmPoolStatus {
    let previous = pool.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let update = match problem {
        Some((reason, message)) => ConditionUpdate::ready(false, reason, message),
        None if ready >= pool.spec.replicas => {
            ConditionUpdate::ready(true, "PoolFull", format!("{ready} idle Pods are Ready"))
        }
        None => ConditionUpdate::ready(
            false,
            "Filling",
            format!("{ready} of {} idle Pods are Ready", pool.spec.replicas),
        ),
    };
    let exhausted = ConditionUpdate {
        type_: EXHAUSTED,
        status: ready == 0 && pool.spec.replicas > 0,
        reason: if ready == 0 {
            "NoIdlePod"
        } else {
            "IdlePodsAvailable"
        },
        message: format!("{ready} idle Ready Pods"),
    };
    let conditions = set_condition(&previous.conditions, &update, pool.meta().generation, now);
    let conditions = set_condition(&conditions, &exhausted, pool.meta().generation, now);
    // Keep transition times stable when nothing but the clock changed.
    SandboxWarmPoolStatus {
        replicas,
        ready_replicas: ready,
        selector: Some(format!("{POOL_LABEL}={}", pool.name_any())),
        template_hash: hash.map(str::to_string).or(previous.template_hash),
        conditions,
    }
}

/// Writes the pool status (see [`super::write_status`]).
async fn write_status(
    ctx: &Context,
    pool: &SandboxWarmPool,
    status: &SandboxWarmPoolStatus,
) -> Result<()> {
    if pool.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<SandboxWarmPool> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    super::write_status(
        &api,
        &pool.name_any(),
        status,
        &[
            "replicas",
            "readyReplicas",
            "selector",
            "templateHash",
            "conditions",
        ],
        "pool",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(name: &str, ready: bool, current: bool, created: i64) -> IdlePod {
        IdlePod {
            name: name.into(),
            uid: format!("{name}-uid"),
            ready,
            current,
            created: Some(jiff::Timestamp::from_second(created).unwrap()),
        }
    }

    #[test]
    fn fills_up_to_desired_counting_pending_creates() {
        assert_eq!(plan(5, &[], 0, 5).create, 5);
        assert_eq!(plan(5, &[idle("a", true, true, 1)], 2, 5).create, 2);
        assert_eq!(
            plan(3, &[idle("a", true, true, 1)], 2, 5),
            PoolPlan::default()
        );
    }

    #[test]
    fn scale_down_removes_not_ready_then_newest() {
        let pods = [
            idle("old", true, true, 1),
            idle("new", true, true, 9),
            idle("starting", false, true, 5),
        ];
        let p = plan(1, &pods, 0, 5);
        let names: Vec<_> = p.delete.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["starting", "new"]);
        assert_eq!(p.create, 0);
    }

    #[test]
    fn never_over_creates_while_creates_are_pending() {
        // 2 pending creates and 3 seen: a 4-replica pool must delete 1, not create.
        let pods = [
            idle("a", true, true, 1),
            idle("b", true, true, 2),
            idle("c", true, true, 3),
        ];
        let p = plan(4, &pods, 2, 5);
        assert_eq!(p.create, 0);
        assert_eq!(p.delete.len(), 1);
    }

    #[test]
    fn template_change_replaces_outdated_pods_in_bounded_batches() {
        let pods: Vec<_> = (0..10)
            .map(|i| idle(&format!("p{i}"), true, false, i))
            .collect();
        let p = plan(10, &pods, 0, 3);
        assert_eq!(p.delete.len(), 3);
        assert_eq!(p.create, 3);
        // While replacements are still starting, no further batch.
        let mut pods2 = pods[3..].to_vec();
        pods2.extend((0..3).map(|i| idle(&format!("n{i}"), false, true, 20 + i)));
        assert_eq!(plan(10, &pods2, 0, 3), PoolPlan::default());
    }
}
