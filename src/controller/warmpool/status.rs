//! The status of a pool: counts, conditions and the sizing figures. Pure,
//! except [`write_status`].

use kube::{Resource, ResourceExt};

use super::super::Context;
use crate::api::reason;
use crate::api::{
    ConditionUpdate, EXHAUSTED, POOL_LABEL, PoolSizing, SandboxWarmPool, SandboxWarmPoolStatus,
    set_condition,
};
use crate::sizing::{Measurement, Recommendation};

/// The sizing part of a pool's status: the size it keeps now and the
/// figures behind it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SizingFields {
    /// Effective size (`status.desiredReplicas`).
    pub desired_replicas: i32,
    /// Recommendation and measurements, as written to the status.
    pub figures: PoolSizing,
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

impl SizingFields {
    /// The status figures of a measurement and its recommendation, rounded
    /// so the status does not change with noise in the last digits.
    pub fn new(desired: i32, m: &Measurement, r: &Recommendation) -> Self {
        SizingFields {
            desired_replicas: desired,
            figures: PoolSizing {
                recommended_replicas: r.replicas.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                predicted_hit_ratio: r.predicted_hit_ratio.map(|v| round(v, 4)),
                observed_hit_ratio: m.last_5m.hit_ratio().map(|v| round(v, 4)),
                claim_rate_per_minute: Some(round(m.last_5m.rate() * 60.0, 2)),
                refill_seconds: m.refill_seconds.map(|v| round(v, 3)),
            },
        }
    }
}

/// The status of a pool. Pure.
///
/// `autoscaling` is the `Autoscaling` condition (status, reason, message)
/// when the pool has `spec.autoscaling`; without it the condition is removed.
pub fn pool_status(
    pool: &SandboxWarmPool,
    replicas: i32,
    ready: i32,
    hash: Option<&str>,
    problem: Option<(&'static str, String)>,
    sizing: &SizingFields,
    autoscaling: Option<(bool, &'static str, String)>,
) -> SandboxWarmPoolStatus {
    let previous = pool.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let desired = sizing.desired_replicas;
    let update = match problem {
        Some((reason, message)) => ConditionUpdate::ready(false, reason, message),
        None if ready >= desired => ConditionUpdate::ready(
            true,
            reason::POOL_FULL,
            format!("{ready} idle Pods are Ready"),
        ),
        None => ConditionUpdate::ready(
            false,
            reason::FILLING,
            format!("{ready} of {desired} idle Pods are Ready"),
        ),
    };
    let exhausted = ConditionUpdate {
        type_: EXHAUSTED,
        status: ready == 0 && desired > 0,
        reason: if ready == 0 {
            reason::NO_IDLE_POD
        } else {
            reason::IDLE_PODS_AVAILABLE
        },
        message: format!("{ready} idle Ready Pods"),
    };
    let generation = pool.meta().generation;
    let conditions = set_condition(&previous.conditions, &update, generation, now);
    let mut conditions = set_condition(&conditions, &exhausted, generation, now);
    match autoscaling {
        Some((status, reason, message)) => {
            let update = ConditionUpdate {
                type_: super::autoscale::AUTOSCALING,
                status,
                reason,
                message,
            };
            conditions = set_condition(&conditions, &update, generation, now);
        }
        None => conditions.retain(|c| c.type_ != super::autoscale::AUTOSCALING),
    }
    SandboxWarmPoolStatus {
        replicas,
        ready_replicas: ready,
        selector: Some(format!("{POOL_LABEL}={}", pool.name_any())),
        template_hash: hash.map(str::to_string).or(previous.template_hash),
        desired_replicas: Some(desired),
        sizing: sizing.figures.clone(),
        conditions,
    }
}

/// Writes the pool status (see [`super::super::write_status`]).
pub async fn write_status(
    ctx: &Context,
    pool: &SandboxWarmPool,
    status: &SandboxWarmPoolStatus,
) -> super::super::Result<bool> {
    if pool.status.as_ref() == Some(status) {
        return Ok(true);
    }
    super::super::write_status(ctx, pool, status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{find_condition, is_true};
    use crate::sizing::tracker::WindowStats;

    fn pool() -> SandboxWarmPool {
        let mut p = SandboxWarmPool::new("p", Default::default());
        p.spec.replicas = 3;
        p
    }

    #[test]
    fn ready_compares_with_the_effective_size() {
        let sizing = SizingFields {
            desired_replicas: 5,
            ..Default::default()
        };
        let s = pool_status(&pool(), 5, 3, Some("h"), None, &sizing, None);
        assert!(!is_true(&s.conditions, crate::api::READY));
        assert_eq!(s.desired_replicas, Some(5));
        assert_eq!(s.selector.as_deref(), Some("agents.x-k8s.io/warm-pool=p"));
    }

    #[test]
    fn autoscaling_condition_is_set_and_removed() {
        let sizing = SizingFields::default();
        let with = pool_status(
            &pool(),
            0,
            0,
            None,
            None,
            &sizing,
            Some((true, "ScaledUp", "grew".into())),
        );
        let c = find_condition(&with.conditions, "Autoscaling").unwrap();
        assert_eq!(c.reason, "ScaledUp");
        let mut p = pool();
        p.status = Some(with);
        let without = pool_status(&p, 0, 0, None, None, &sizing, None);
        assert!(find_condition(&without.conditions, "Autoscaling").is_none());
    }

    #[test]
    fn sizing_fields_are_rounded() {
        let m = Measurement {
            last_5m: WindowStats {
                claims: 3,
                warm: 2,
                covered: 300.0,
            },
            refill_seconds: Some(2.123_456),
            ..Default::default()
        };
        let r = crate::sizing::recommend(&m, 2, 0.99);
        let f = SizingFields::new(2, &m, &r).figures;
        assert_eq!(f.observed_hit_ratio, Some(0.6667));
        assert_eq!(f.claim_rate_per_minute, Some(0.6));
        assert_eq!(f.refill_seconds, Some(2.123));
        assert!(f.recommended_replicas.is_some());
    }
}

/// `PodsUnschedulable` when the scheduler reports members Unschedulable
/// (counted by [`super::members`]), with one of them as the example. Pure.
pub fn unschedulable(counts: &super::members::PoolCounts) -> Option<(&'static str, String)> {
    let (first, message) = counts.unschedulable_example.as_ref()?;
    Some((
        crate::api::reason::PODS_UNSCHEDULABLE,
        format!(
            "{} of the pool's {} Pods cannot be scheduled (e.g. {first}: {message}); no more are created for them",
            counts.unschedulable, counts.members
        ),
    ))
}

#[cfg(test)]
mod unschedulable_tests {
    use super::super::members::{PoolCounts, unschedulable_message};
    use super::unschedulable;
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};

    fn pod(name: &str, scheduled: Option<(&str, &str)>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.status = Some(PodStatus {
            conditions: scheduled.map(|(status, reason)| {
                vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    message: Some("0/1 nodes are available: 1 Insufficient cpu.".into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn the_schedulers_message_is_reported() {
        assert!(unschedulable_message(&pod("a", Some(("True", "")))).is_none());
        assert!(unschedulable_message(&pod("c", None)).is_none());
        assert!(unschedulable_message(&pod("d", Some(("False", "SchedulingGated")))).is_none());
        let message = unschedulable_message(&pod("b", Some(("False", "Unschedulable")))).unwrap();
        let counts = PoolCounts {
            members: 3,
            unschedulable: 1,
            unschedulable_example: Some(("b".into(), message)),
            ..Default::default()
        };
        let (reason, message) = unschedulable(&counts).unwrap();
        assert_eq!(reason, "PodsUnschedulable");
        assert!(message.starts_with("1 of the pool's 3 Pods"), "{message}");
        assert!(
            message.contains("e.g. b: 0/1 nodes are available: 1 Insufficient cpu."),
            "{message}"
        );
        assert!(unschedulable(&PoolCounts::default()).is_none());
    }
}
