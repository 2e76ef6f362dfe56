//! What a reconcile sees of a pool: its template (cache first, then the
//! API) and its members, i.e. Pods whose controller owner is this pool's uid
//! (see [`super::plan::is_member`]), with pending creates and deletes
//! settled against [`super::Expectations`].
//!
//! Cost: the members are read from the counts the Pod index keeps on every
//! watch event ([`super::members`]), so observing is O(1 + pending creates
//! and deletes); the member list (O(members)) is only materialized when the
//! decision has to pick Pods ([`idle_pods`]: scale-down, rollout).

use std::collections::HashSet;
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;

use super::super::{Context, Result, kube_err};
use super::gauges::{record_metrics, record_sizing_metrics};
use super::members::{GroupKey, PoolCounts};
use super::plan::{IdlePod, Tally};
use super::size::{size_pool, target_hit_ratio};
use super::status::{self, SizingFields, pool_status};
use crate::api::{SandboxTemplate, SandboxWarmPool, reason};

/// What a reconcile observed of the pool's members.
pub(super) struct Members {
    /// The pool's member group (namespace, name, uid).
    pub group: GroupKey,
    /// Counts over the live members, pending deletes left out.
    pub counts: PoolCounts,
    /// Members whose delete is pending (not counted as idle).
    pub pending_deletes: HashSet<String>,
    /// Creates the cache has not shown yet.
    pub pending_creates: usize,
}

impl Members {
    /// The counts the plan reads.
    pub fn tally(&self) -> Tally {
        Tally {
            idle: self.counts.idle,
            current: self.counts.current,
            current_ready: self.counts.ready,
        }
    }
}

/// The pool's members as the Pod index shows them, counted as current when
/// made from `current` (a [`super::members::current_key`]: the template's
/// name and hash).
pub(super) fn observe_members(
    ctx: &Context,
    pool: &SandboxWarmPool,
    key: &str,
    current: &str,
) -> Members {
    let namespace = pool.namespace().unwrap_or_default();
    let group = (
        namespace.clone(),
        pool.name_any(),
        pool.uid().unwrap_or_default(),
    );
    // Both from the index, the view the counts come from: the Pod store
    // applies an event a moment before the index does, and a create seen in
    // the store but not yet counted would be settled while uncounted (one
    // Pod over-created).
    let (pending_creates, pending_deletes) = ctx.expectations.settle_with(
        key,
        |name| ctx.caches.index.is_live_member(&group, name),
        |name| ctx.caches.index.contains(&namespace, name),
    );
    let counts = ctx
        .caches
        .index
        .pool_counts(&group, current, &pending_deletes);
    Members {
        group,
        counts,
        pending_deletes,
        pending_creates,
    }
}

/// The live members not pending deletion, as the plan reads them, current
/// when made from `current` (see [`observe_members`]). O(members).
pub(super) fn idle_pods(ctx: &Context, members: &Members, current: &str) -> Vec<IdlePod> {
    ctx.caches
        .index
        .pool_members(&members.group, &members.pending_deletes)
        .into_iter()
        .map(|(name, m)| IdlePod {
            current: m.is_current(current),
            name,
            uid: m.uid,
            resource_version: m.resource_version,
            ready: m.ready,
            created: m.created,
        })
        .collect()
}

/// The names of the pool's members that [`super::members::Member::never_served`]
/// (the same test as for a marked replacement). O(members): once per pool
/// and process (see [`super::Expectations::replacements_starting`]).
pub(super) fn starting_members(ctx: &Context, members: &Members, current: &str) -> Vec<String> {
    ctx.caches
        .index
        .pool_members(&members.group, &members.pending_deletes)
        .into_iter()
        .filter(|(_, m)| m.never_served(current))
        .map(|(name, _)| name)
        .collect()
}

/// The pool's template from the cache (or the API); `None` after reporting
/// `TemplateNotFound` in the status.
pub(super) async fn template_of(
    ctx: &Context,
    pool: &SandboxWarmPool,
) -> Result<Option<Arc<SandboxTemplate>>> {
    let namespace = pool.namespace().unwrap_or_default();
    let template_name = &pool.spec.sandbox_template_ref.name;
    if let Some(t) = ctx.template(&namespace, template_name) {
        return Ok(Some(t));
    }
    let api: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(t) = api
        .get_opt(template_name)
        .await
        .map_err(kube_err("get template"))?
    {
        return Ok(Some(Arc::new(t)));
    }
    // The size it would keep, decided as every reconcile decides it
    // ([`size_pool`]: `spec.replicas` capped, or under `spec.autoscaling`
    // the recommendation within bounds), with its figures, its
    // `Autoscaling` condition and its gauges. Before (found by review) an
    // autoscaled pool said `spec.replicas` (which autoscaling ignores),
    // judged `Exhausted` by it, lost its condition and figures, and left
    // its gauges at their last values; the autoscaler then took that size
    // as the last it decided once the template was back.
    let (measurement, sizing) = size_pool(ctx, pool);
    let desired = usize::try_from(sizing.desired).unwrap_or(0);
    let recommendation = crate::sizing::recommend(
        &measurement,
        u32::try_from(desired).unwrap_or(u32::MAX),
        target_hit_ratio(pool),
    );
    let fields = SizingFields::new(sizing.desired, &measurement, &recommendation);
    // The members it still has (their template gone, they are kept until
    // it comes back or the pool is deleted), not zero: an `Exhausted` pool
    // and `replicas: 0` next to live idle Pods misled autoscalers and alerts.
    let (replicas, ready) = member_counts(ctx, pool);
    let count = |n: i32| usize::try_from(n).unwrap_or(0);
    record_metrics(
        ctx,
        &namespace,
        &pool.name_any(),
        desired,
        count(ready),
        count(replicas),
    );
    record_sizing_metrics(ctx, pool, &measurement, &recommendation);
    let status = pool_status(
        pool,
        replicas,
        ready,
        None,
        Some((
            reason::TEMPLATE_NOT_FOUND,
            format!("SandboxTemplate {template_name} does not exist"),
        )),
        &fields,
        sizing.condition,
    );
    status::write_status(ctx, pool, &status).await?;
    Ok(None)
}

/// The pool's live members and, of those, the Ready ones that have not
/// ended, whatever template they were made from. O(members): only for a
/// pool without its template.
fn member_counts(ctx: &Context, pool: &SandboxWarmPool) -> (i32, i32) {
    let group = (
        pool.namespace().unwrap_or_default(),
        pool.name_any(),
        pool.uid().unwrap_or_default(),
    );
    let members = ctx.caches.index.pool_members(&group, &HashSet::new());
    let ready = members.iter().filter(|(_, m)| m.ready && !m.ended).count();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    (count(members.len()), count(ready))
}
