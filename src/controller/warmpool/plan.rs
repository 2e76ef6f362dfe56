//! Which Pods a pool owns and what to create or delete. Pure.
//!
//! Membership is decided by ownership the operator wrote: a Pod is a member
//! only when its controller ownerReference carries this pool's uid (the pool
//! label alone, which anyone in the namespace can set, is not enough).
//! Each chosen victim carries the resourceVersion it was chosen from, so the
//! delete is conditioned on it and can never remove a Pod a claim stole in
//! the meantime.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::api::POOL_LABEL;
use crate::controller::controller_uid;

/// What the plan needs to know about one idle Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct IdlePod {
    /// Pod name.
    pub name: String,
    /// Pod uid (guards the delete).
    pub uid: String,
    /// The resourceVersion the decision is based on (guards the delete).
    pub resource_version: String,
    /// Ready now.
    pub ready: bool,
    /// Made from the current template.
    pub current: bool,
    /// Creation time, for "newest first" on scale-down.
    pub created: Option<jiff::Timestamp>,
}

/// A Pod chosen for deletion, with the preconditions of its delete.
#[derive(Clone, Debug, PartialEq)]
pub struct Victim {
    /// Pod name.
    pub name: String,
    /// Pod uid.
    pub uid: String,
    /// resourceVersion the choice was made from.
    pub resource_version: String,
}

impl From<&IdlePod> for Victim {
    fn from(p: &IdlePod) -> Self {
        Victim {
            name: p.name.clone(),
            uid: p.uid.clone(),
            resource_version: p.resource_version.clone(),
        }
    }
}

/// The decision of one pool reconcile.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PoolPlan {
    /// Pods to create.
    pub create: usize,
    /// Pods to delete.
    pub delete: Vec<Victim>,
}

/// Whether `pod` is an idle member of the pool `pool_name` (uid `pool_uid`)
/// in `namespace`: it carries the pool label AND its controller owner is
/// that pool. A Pod someone labelled to look like a pool Pod is not one.
pub fn is_member(pod: &Pod, namespace: &str, pool_name: &str, pool_uid: &str) -> bool {
    pod.namespace().as_deref() == Some(namespace)
        && pod.labels().get(POOL_LABEL).map(String::as_str) == Some(pool_name)
        && controller_uid(&pod.metadata) == Some(pool_uid)
}

/// The counts [`plan`] reads when it picks no Pod.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    /// Live idle Pods (the `idle` list's length).
    pub idle: usize,
    /// Of those, made from the current template (and not ended).
    pub current: usize,
    /// Of those current ones, Ready.
    pub current_ready: usize,
}

/// [`plan`] from counts alone: `Some` with exactly what [`plan`] decides
/// whenever that decision deletes nothing (the usual refill), `None` when it
/// would pick victims (scale-down, rollout) and needs the Pod list.
pub fn plan_from_counts(
    desired: usize,
    tally: Tally,
    pending_creates: usize,
    rollout_batch: usize,
) -> Option<PoolPlan> {
    let count = tally.idle + pending_creates;
    if count > desired {
        return None;
    }
    let create = desired - count;
    let starting = tally.current - tally.current_ready + pending_creates + create;
    let outdated = tally.idle - tally.current;
    if starting < rollout_batch && outdated > 0 {
        return None;
    }
    Some(PoolPlan {
        create,
        delete: Vec::new(),
    })
}

/// Decides creates and deletes for a pool.
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
            .map(Victim::from)
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
            plan.delete.push(Victim::from(p));
            plan.create += 1;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::warmpool::test_objects::{owner, string_map};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    fn idle(name: &str, ready: bool, current: bool, created: i64) -> IdlePod {
        IdlePod {
            name: name.into(),
            uid: format!("{name}-uid"),
            resource_version: format!("{created}"),
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
    fn scale_down_removes_not_ready_then_newest_with_preconditions() {
        let pods = [
            idle("old", true, true, 1),
            idle("new", true, true, 9),
            idle("starting", false, true, 5),
        ];
        let p = plan(1, &pods, 0, 5);
        let names: Vec<_> = p.delete.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["starting", "new"]);
        assert_eq!(p.create, 0);
        // Each victim carries the uid and resourceVersion it was chosen from.
        assert_eq!(p.delete[1].uid, "new-uid");
        assert_eq!(p.delete[1].resource_version, "9");
    }

    #[test]
    fn never_over_creates_while_creates_are_pending() {
        // 2 pending creates and 3 seen: a 4-replica pool must delete 1, not create.
        let pods = [("a", 1), ("b", 2), ("c", 3)].map(|(name, at)| idle(name, true, true, at));
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

    #[test]
    fn the_plan_from_counts_agrees_with_the_plan_whenever_it_answers() {
        let mut answered = 0;
        for mask in 0u32..4096 {
            let pods: Vec<IdlePod> = (0..4)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| {
                    idle(
                        &format!("p{i}"),
                        mask & (16 << i) != 0,
                        mask & (256 << i) != 0,
                        i,
                    )
                })
                .collect();
            let tally = Tally {
                idle: pods.len(),
                current: pods.iter().filter(|p| p.current).count(),
                current_ready: pods.iter().filter(|p| p.current && p.ready).count(),
            };
            for (desired, pending, batch) in [(0, 0, 1), (3, 0, 2), (4, 1, 5), (6, 2, 3), (8, 0, 9)]
            {
                let full = plan(desired, &pods, pending, batch);
                match plan_from_counts(desired, tally, pending, batch) {
                    Some(quick) => {
                        assert_eq!(quick, full, "mask {mask:b}");
                        answered += 1;
                    }
                    None => assert!(
                        !full.delete.is_empty(),
                        "mask {mask:b}: None only when Pods are picked"
                    ),
                }
            }
        }
        assert!(
            answered > 1000,
            "the quick path covers the usual cases ({answered})"
        );
    }

    fn pod(labels: &[(&str, &str)], owner_uid: Option<&str>, controller: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                labels: Some(string_map(labels)),
                owner_references: owner_uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "extensions.agents.x-k8s.io/v1alpha1".into(),
                        ..owner("SandboxWarmPool", "pool", uid, controller)
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn membership_needs_the_pool_as_controller_owner_not_just_the_label() {
        let label = [(POOL_LABEL, "pool")];
        assert!(is_member(
            &pod(&label, Some("u1"), true),
            "ns",
            "pool",
            "u1"
        ));
        // Labelled by someone else: no owner, another owner, or not controller.
        assert!(!is_member(&pod(&label, None, false), "ns", "pool", "u1"));
        assert!(!is_member(
            &pod(&label, Some("u2"), true),
            "ns",
            "pool",
            "u1"
        ));
        assert!(!is_member(
            &pod(&label, Some("u1"), false),
            "ns",
            "pool",
            "u1"
        ));
        // Owned but stolen (pool label gone), or another namespace.
        assert!(!is_member(&pod(&[], Some("u1"), true), "ns", "pool", "u1"));
        assert!(!is_member(
            &pod(&label, Some("u1"), true),
            "other",
            "pool",
            "u1"
        ));
    }
}
