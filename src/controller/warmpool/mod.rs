//! Warm-pool controller: keeps the pool's idle, pre-started Pods of a
//! template, and sizes the pool from the claim traffic it gets.
//!
//! Flow of one reconcile (observe, decide, guard, act, record), one module
//! per step:
//! 1. Observe ([`observe`]): the template (its hash and the policy's
//!    verdict on it come from [`template_facts`], worked out once per
//!    template version and policy snapshot), the pool's members (Pods whose
//!    controller owner is this pool's uid, see [`plan::is_member`]) as
//!    counts the Pod index keeps per watch event ([`members`], O(1) per
//!    reconcile), the claims the Sandbox cache shows ([`claims`]) and the
//!    pool's measurements.
//! 2. Decide ([`size`], [`plan`]): the effective size ([`autoscale::decide`]:
//!    `spec.replicas` capped, or the recommendation within
//!    `spec.autoscaling` bounds), then creates and deletes (from the counts,
//!    [`plan::plan_from_counts`], unless victims must be picked:
//!    [`plan::plan`] over the member list).
//! 3. Guard ([`guard`], [`network`]): the template passes the current
//!    admission policy, and the NetworkPolicy covering the pool's Pods
//!    exists; otherwise no Pod is created (a condition and an Event say why).
//!    A write the API server refuses in the act step (Pod Security, a quota,
//!    a missing ServiceAccount) is reported the same way ([`guard::refused`]).
//! 4. Act ([`act`]): deletes conditioned on the uid AND resourceVersion each
//!    victim was chosen from (a 409 means a claim stole it meanwhile:
//!    benign), creates ([`pod::desired_pod`]).
//! 5. Record ([`record`]): refill times, gauges, and the status (at most
//!    every 2 s).
//!
//! A reconcile runs on every watch event of a pool and on each Pod event
//! that can change its decision (a member joins, leaves, e.g. the steal, or
//! changes readiness, termination, template hash or schedulability; see
//! [`members`]), so a refill starts as soon as the Pod leaves, not on a
//! timer; every pool is also requeued every [`SIZING_INTERVAL`] so its
//! figures follow the sliding windows. [`Expectations`] remembers creates and
//! deletes whose watch events have not reached the cache yet, so a lagging
//! cache never causes over-creation.

mod act;
pub mod autoscale;
pub mod claims;
pub mod expectations;
pub mod gauges;
mod guard;
pub mod members;
pub mod network;
mod observe;
pub mod plan;
pub mod pod;
mod record;
pub mod size;
pub mod status;
pub mod template_facts;
#[cfg(test)]
mod test_objects;

use std::sync::Arc;
use std::time::Duration;

use crate::controller::Action;
use kube::ResourceExt;
use tracing::instrument;

pub use expectations::Expectations;
pub use network::{desired_pool_network_policy, pool_network_policy_name};
pub use plan::{IdlePod, PoolPlan, Rollout, Victim, is_member, plan, plan_from_counts};
pub use pod::desired_pod;
pub use size::{pool_cap, target_hit_ratio};
pub use status::{SizingFields, pool_status};

use super::{Context, Error, Result, is_terminating};
use crate::api::SandboxWarmPool;
use gauges::remove_sizing_metrics;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "warmpool";

/// Every pool is reconciled at least this often (its sizing windows slide).
pub const SIZING_INTERVAL: Duration = Duration::from_secs(10);

/// Reconciles one pool.
#[instrument(skip_all, fields(pool = %pool.name_any(), namespace = pool.namespace().unwrap_or_default()))]
pub async fn reconcile(pool: Arc<SandboxWarmPool>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = pool.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = pool.name_any();
    let key = format!("{namespace}/{name}");
    if is_terminating(pool.as_ref()) {
        ctx.expectations.forget(&key);
        ctx.caches.index.take_refills(&namespace, &name);
        ctx.sizing.forget_pool(&namespace, &name);
        remove_sizing_metrics(&ctx, &namespace, &name);
        return Ok(Action::await_change());
    }
    pool.uid().ok_or(Error::Incomplete("uid"))?;

    // Observe.
    let Some(template) = observe::template_of(&ctx, &pool).await? else {
        if let Err(error) = network::lock_down_without_template(&ctx, &pool, &key).await {
            tracing::warn!(%error, "the NetworkPolicy locking down the idle Pods of a pool without its template could not be made");
        }
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    let facts = ctx
        .template_facts
        .facts(&template, ctx.config.policy.current());
    let hash = facts.hash.clone();
    // A member is current when made from this template (its label) AND
    // this hash: a claim takes only Pods labelled with its own template, so
    // Pods of another template with the same pod template are replaced.
    let current = members::current_key(&template.name_any(), &hash);
    let members = observe::observe_members(&ctx, &pool, &key, &current);

    // Decide.
    let (measurement, sizing) = size::size_pool(&ctx, &pool);
    let decision = decide(&ctx, &key, &members, (&hash, &current), sizing.desired);

    // Guard: nothing is created unchecked, nor before its NetworkPolicy,
    // nor under names no label can carry (stored without the webhook).
    let (spec, policy_problem) = match (guard::names(&pool), facts.admitted) {
        (Some(problem), _) | (None, Err(problem)) => (None, Some(problem)),
        (None, Ok(spec)) => (Some(spec), None),
    };
    let network = match policy_problem {
        Some(_) => Ok(()),
        None => network::ensure(&ctx, &pool, &template, &key).await,
    };
    let blocker = policy_problem.or_else(|| network.as_ref().err().map(network::blocker));
    if let Some(problem) = &blocker {
        guard::warn_once(&ctx, &pool, &key, problem).await;
    }
    // A blocked pool creates nothing, so it replaces nothing either: its
    // outdated Pods stay (no claim takes them) until it can create.
    let (creates, deletes) = match blocker {
        Some(_) => (0, decision.scale_down()),
        None => (decision.create, &decision.delete[..]),
    };

    // Act; a failure is returned only after the record (see `act::act`).
    let new = spec.as_deref().map(|spec| act::NewPods {
        template: &template,
        spec,
        hash: &hash,
        count: creates,
        replacements: decision.rollout.min(creates),
    });
    let act::Acted {
        deleted,
        created,
        error: act_error,
    } = act::act(&ctx, &pool, &key, deletes, new).await;
    // A write the API server refused (Pod Security, a quota, a missing
    // ServiceAccount...) blocks the pool too, and says so; a transient
    // failure (a timeout, a 5xx) does not change the status.
    let blocker = match (blocker, act_error.as_ref().and_then(guard::refused)) {
        (None, Some(refused)) => {
            guard::warn_once(&ctx, &pool, &key, &refused).await;
            Some(refused)
        }
        // A transient failure keeps a refusal already shown.
        (None, None) if act_error.is_some() => guard::shown_refusal(&pool),
        (blocker, _) => blocker,
    };

    // Record.
    let outcome = record::Outcome {
        key: &key,
        hash: &hash,
        members: &members,
        measurement: &measurement,
        sizing,
        deleted,
        created,
        blocker,
    };
    let action = record::record(&ctx, &pool, outcome).await?;
    if let Some(error) = act_error {
        return Err(error);
    }
    match network {
        // Reported in the status; retried with backoff (a NameConflict
        // only changes when someone removes the object: the resync will do).
        Err(error) if !matches!(error, Error::NameConflict { .. }) => Err(error),
        _ => Ok(action),
    }
}

/// The creates and deletes: from the member counts when nothing has to be
/// picked (O(1)), else from the member list ([`plan`]). Which of the two it
/// was goes on record for the Pod trigger ([`Expectations::quiet_join`],
/// which reads a Pod's template hash: a pending create made from an older
/// template of the same hash joins quietly, and wakes the pool when it
/// turns Ready). Takes the template hash and the [`members::current_key`]
/// the members are counted by.
fn decide(
    ctx: &Context,
    key: &str,
    members: &observe::Members,
    (hash, current): (&str, &str),
    desired: i32,
) -> PoolPlan {
    let desired = usize::try_from(desired).unwrap_or(0);
    let rollout = Rollout {
        batch: ctx.config.rollout_batch.max(1),
        replacements: ctx.expectations.replacements_starting(
            key,
            |name| {
                ctx.caches
                    .index
                    .is_starting_member(&members.group, name, current)
            },
            || observe::starting_members(ctx, members, current),
        ),
    };
    let from_counts = plan_from_counts(desired, members.tally(), members.pending_creates, rollout);
    ctx.expectations
        .decided_from_counts(key, hash, from_counts.is_some());
    from_counts.unwrap_or_else(|| {
        let idle = observe::idle_pods(ctx, members, current);
        plan(desired, &idle, members.pending_creates, rollout)
    })
}
