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

/// How fast a template change replaces outdated idle Pods (which no claim
/// takes: a claim takes only Pods of its template's current hash).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rollout {
    /// Replacements at a time (`--rollout-batch`).
    pub batch: usize,
    /// The Pods created to replace outdated ones that are still starting
    /// ([`super::Expectations::replacements_starting`]).
    pub replacements: usize,
}

impl Rollout {
    /// Replacements that may start now: the batch less those under way,
    /// which are the replacements not Ready yet and the creates not
    /// started yet (`unstarted`: pending, or this plan's). Other starting
    /// Pods are
    /// refills of Pods that claims took (a claim that finds no Ready Pod
    /// takes a starting one, replacements included), which under steady
    /// load never drop below the batch: before (found by review) the
    /// rollout counted them and waited for a Pod to turn Ready untaken,
    /// and a pool of 27 at 16 claims per refill time kept 14 outdated
    /// Pods, serving 5% warm, for hours. A replacement that never turns
    /// Ready (its Pods crash, exit or stay Pending) holds its place in the
    /// batch,
    /// so a broken template replaces one batch only, and creates that fail
    /// hold theirs as `unstarted`: the outdated Pods stay, ready to serve
    /// again if the template is changed back.
    pub fn budget(&self, unstarted: usize) -> usize {
        self.batch
            .saturating_sub(self.replacements.saturating_add(unstarted))
    }
}

/// The decision of one pool reconcile.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PoolPlan {
    /// Pods to create.
    pub create: usize,
    /// Pods to delete.
    pub delete: Vec<Victim>,
    /// How many of `delete` are outdated Pods replaced by the rollout (each
    /// with one of `create`); 0 on a scale-down.
    pub rollout: usize,
}

impl PoolPlan {
    /// The deletes that replace no outdated Pod (a scale-down's): all a
    /// pool that cannot create does.
    pub fn scale_down(&self) -> &[Victim] {
        &self.delete[..self.delete.len() - self.rollout]
    }
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
    rollout: Rollout,
) -> Option<PoolPlan> {
    let count = tally.idle + pending_creates;
    if count > desired {
        return None;
    }
    let create = desired - count;
    let outdated = tally.idle - tally.current;
    if rollout.budget(pending_creates + create) > 0 && outdated > 0 {
        return None;
    }
    Some(PoolPlan {
        create,
        ..PoolPlan::default()
    })
}

/// Decides creates and deletes for a pool.
///
/// - `idle` are the pool's live idle Pods (not terminating, not being deleted
///   by us), `pending_creates` the creates not yet visible in the cache.
/// - Scale-down removes not-Ready Pods first, then outdated, then newest.
/// - An outdated Pod is replaced (delete + create) at most `rollout.batch`
///   at a time ([`Rollout::budget`]), so a template change does not
///   restart the whole pool at once.
pub fn plan(
    desired: usize,
    idle: &[IdlePod],
    pending_creates: usize,
    rollout: Rollout,
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
    let budget = rollout.budget(pending_creates + plan.create);
    for p in idle.iter().filter(|p| !p.current).take(budget) {
        plan.delete.push(Victim::from(p));
        plan.create += 1;
        plan.rollout += 1;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::warmpool::test_objects::{owner, string_map};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    /// A rollout of `batch` with `replacements` not Ready yet.
    fn rollout(batch: usize, replacements: usize) -> Rollout {
        Rollout {
            batch,
            replacements,
        }
    }

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
        assert_eq!(plan(5, &[], 0, rollout(5, 0)).create, 5);
        assert_eq!(
            plan(5, &[idle("a", true, true, 1)], 2, rollout(5, 0)).create,
            2
        );
        assert_eq!(
            plan(3, &[idle("a", true, true, 1)], 2, rollout(5, 0)),
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
        let p = plan(1, &pods, 0, rollout(5, 0));
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
        let p = plan(4, &pods, 2, rollout(5, 0));
        assert_eq!(p.create, 0);
        assert_eq!(p.delete.len(), 1);
    }

    #[test]
    fn template_change_replaces_outdated_pods_in_bounded_batches() {
        let pods: Vec<_> = (0..10)
            .map(|i| idle(&format!("p{i}"), true, false, i))
            .collect();
        let p = plan(10, &pods, 0, rollout(3, 0));
        assert_eq!(p.delete.len(), 3);
        assert_eq!(p.create, 3);
        // While replacements are still starting, no further batch.
        let mut pods2 = pods[3..].to_vec();
        pods2.extend((0..3).map(|i| idle(&format!("n{i}"), false, true, 20 + i)));
        assert_eq!(plan(10, &pods2, 0, rollout(3, 3)), PoolPlan::default());
    }

    #[test]
    fn a_rollout_goes_on_while_claims_keep_taking_starting_pods() {
        // 8 refills of Pods claims took are starting, 4 outdated Pods wait:
        // none of the rollout's replacements is starting, so a batch of 3
        // goes now.
        let mut pods: Vec<_> = (0..8)
            .map(|i| idle(&format!("refill{i}"), false, true, 20 + i))
            .collect();
        pods.extend((0..4).map(|i| idle(&format!("old{i}"), true, false, i)));
        let busy = Rollout {
            batch: 3,
            replacements: 0,
        };
        let p = plan(12, &pods, 0, busy);
        let names: Vec<_> = p.delete.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["old0", "old1", "old2"]);
        assert_eq!((p.create, p.rollout), (3, 3));
        // While 3 of its replacements are starting, it waits.
        let paced = Rollout {
            batch: 3,
            replacements: 3,
        };
        assert_eq!(plan(12, &pods, 0, paced), PoolPlan::default());
        // Taking every starting Pod for its own (the rule before the fix,
        // and after a restart for the Pods then starting), the starting
        // refills hold it back.
        assert_eq!(plan(12, &pods, 0, rollout(3, 8)), PoolPlan::default());
        let tally = Tally {
            idle: 12,
            current: 8,
            current_ready: 0,
        };
        assert_eq!(plan_from_counts(12, tally, 0, busy), None);
        assert_eq!(
            plan_from_counts(12, tally, 0, paced),
            Some(PoolPlan::default())
        );
    }

    #[test]
    fn a_pool_whose_creates_fail_replaces_one_batch_and_no_more() {
        // A batch of 3 was deleted and its creates were refused: 7 outdated
        // Pods of 10 are left and no replacement exists; the deficit holds
        // the rest back.
        let pods: Vec<_> = (0..7)
            .map(|i| idle(&format!("old{i}"), true, false, i))
            .collect();
        let none_starting = Rollout {
            batch: 3,
            replacements: 0,
        };
        let p = plan(10, &pods, 0, none_starting);
        assert_eq!((p.create, p.rollout), (3, 0));
        assert!(p.delete.is_empty());
        // Replacements that never turn Ready (a broken template) hold
        // theirs: 3 of them starting, 4 outdated left, nothing more goes.
        let mut pods: Vec<_> = (0..4)
            .map(|i| idle(&format!("old{i}"), true, false, i))
            .collect();
        pods.extend((0..3).map(|i| idle(&format!("crashing{i}"), false, true, 10 + i)));
        let stuck = Rollout {
            batch: 3,
            replacements: 3,
        };
        assert_eq!(plan(7, &pods, 0, stuck), PoolPlan::default());
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
            let cases = [(0, 0, 1), (3, 0, 2), (4, 1, 5), (6, 2, 3), (8, 0, 9)];
            for ((desired, pending, batch), known) in cases
                .into_iter()
                .flat_map(|case| [0, 1, 2, 4, 9].map(|known| (case, known)))
            {
                let rollout = Rollout {
                    batch,
                    replacements: known,
                };
                let full = plan(desired, &pods, pending, rollout);
                match plan_from_counts(desired, tally, pending, rollout) {
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
