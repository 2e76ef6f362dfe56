//! KEP-1623 conditions: construction and update with stable
//! `lastTransitionTime` (it only moves when the status flips).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition every kind reports.
pub const READY: &str = "Ready";
/// Warm pool: claims are waiting because the pool has no idle Pod.
pub const EXHAUSTED: &str = "Exhausted";
/// Sandbox: present (`False`) only while its running Pod was made from an
/// earlier `spec.podTemplate` than the Sandbox's (a running Pod is never
/// changed; the next Pod is made from the current template).
pub const POD_TEMPLATE_APPLIED: &str = "PodTemplateApplied";

/// A condition to be merged into a status with [`set_condition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// Condition type, e.g. [`READY`].
    pub type_: &'static str,
    /// `true` / `false`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl ConditionUpdate {
    /// A `Ready` condition.
    pub fn ready(status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        ConditionUpdate {
            type_: READY,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Merges `update` into `conditions`, keeping `lastTransitionTime` when the
/// status did not change. Returns the merged list.
pub fn set_condition(
    conditions: &[Condition],
    update: &ConditionUpdate,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let status = if update.status { "True" } else { "False" };
    let mut out: Vec<Condition> = conditions.to_vec();
    match out.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(now);
            }
            existing.status = status.to_string();
            existing.reason = update.reason.to_string();
            existing.message = update.message.clone();
            existing.observed_generation = generation;
        }
        None => out.push(Condition {
            type_: update.type_.to_string(),
            status: status.to_string(),
            reason: update.reason.to_string(),
            message: update.message.clone(),
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
    out
}

/// `conditions` without the condition of the given type.
pub fn without_condition(conditions: Vec<Condition>, type_: &str) -> Vec<Condition> {
    conditions
        .into_iter()
        .filter(|c| c.type_ != type_)
        .collect()
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let t0 = jiff::Timestamp::from_second(1_000).unwrap();
        let t1 = jiff::Timestamp::from_second(2_000).unwrap();
        let c = set_condition(
            &[],
            &ConditionUpdate::ready(false, "Pending", "x"),
            Some(1),
            t0,
        );
        let c = set_condition(
            &c,
            &ConditionUpdate::ready(false, "Adopting", "y"),
            Some(2),
            t1,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time.0, t0);
        assert_eq!(c[0].reason, "Adopting");
        assert_eq!(c[0].observed_generation, Some(2));
        let c = set_condition(
            &c,
            &ConditionUpdate::ready(true, "PodReady", ""),
            Some(2),
            t1,
        );
        assert_eq!(c[0].last_transition_time.0, t1);
        assert!(is_true(&c, READY));
    }
}
