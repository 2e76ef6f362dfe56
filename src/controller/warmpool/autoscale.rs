//! The effective size of a pool: `spec.replicas` (capped), or with
//! `spec.autoscaling` the recommendation within bounds. Pure.
//!
//! Autoscaling semantics:
//! - the recommendation is computed with a peak lookback of
//!   `scaleDownDelaySeconds` (at least 10 s; the peak rate is measured over
//!   windows of `min(60 s, delay)`), so a pool grows as soon as a busier
//!   window is seen and shrinks only once that window is older than the
//!   delay;
//! - the result is clamped to `[minReplicas, maxReplicas]` and never exceeds
//!   the operator's pool cap;
//! - right after the operator (re)started, the pool is never shrunk below
//!   its last written size until it has measured for the delay;
//! - the `Autoscaling` condition says what was decided and why.

use crate::api::PoolAutoscaling;

/// Condition type reporting autoscaling decisions.
pub const AUTOSCALING: &str = "Autoscaling";

/// Default `scaleDownDelaySeconds`.
pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i32 = 300;

/// The peak lookback of an autoscaled pool, in seconds.
pub fn lookback_seconds(autoscaling: &PoolAutoscaling) -> f64 {
    f64::from(
        autoscaling
            .scale_down_delay_seconds
            .unwrap_or(DEFAULT_SCALE_DOWN_DELAY_SECONDS)
            .max(10),
    )
}

/// What the autoscaler knows when it decides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// The recommendation (peak within the lookback), if known.
    pub recommended: Option<i32>,
    /// What the current load alone needs, if known.
    pub current_need: Option<i32>,
    /// The size last written to status (`status.desiredReplicas`).
    pub previous: Option<i32>,
    /// Seconds this process has measured the pool.
    pub tracked_seconds: f64,
    /// Human summary of the figures behind the recommendation.
    pub why: String,
}

/// The size decision and the condition that explains it.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Idle Pods to keep.
    pub desired: i32,
    /// (condition status, reason, message) when autoscaling is set.
    pub condition: Option<(bool, &'static str, String)>,
}

/// Decides the pool's effective size.
pub fn decide(
    spec_replicas: i32,
    autoscaling: Option<&PoolAutoscaling>,
    cap: i32,
    inputs: &Inputs,
) -> Decision {
    let fixed = spec_replicas.min(cap).max(0);
    let Some(a) = autoscaling else {
        return Decision {
            desired: fixed,
            condition: None,
        };
    };
    let (min, max) = (a.min_replicas.max(0), a.max_replicas.max(0));
    if min > max {
        return Decision {
            desired: fixed,
            condition: Some((
                false,
                "InvalidBounds",
                format!(
                    "spec.autoscaling.minReplicas {min} exceeds spec.autoscaling.maxReplicas {max}: \
                     minReplicas must not exceed maxReplicas; keeping spec.replicas {fixed}"
                ),
            )),
        };
    }
    let delay = lookback_seconds(a);
    let Some(recommended) = inputs.recommended else {
        let desired = inputs.previous.unwrap_or(min).clamp(min, max).min(cap);
        return Decision {
            desired,
            condition: Some((
                true,
                "AwaitingData",
                format!("no refill time measured yet; keeping {desired} idle Pods"),
            )),
        };
    };
    scaled(recommended, (min, max), cap, delay, inputs)
}

/// The decision once a recommendation is known: within `bounds`, under the
/// cap, a scale-down held back while the data is shorter than `delay` or the
/// peak is younger than it.
fn scaled(
    recommended: i32,
    (min, max): (i32, i32),
    cap: i32,
    delay: f64,
    inputs: &Inputs,
) -> Decision {
    let bounded = recommended.clamp(min, max);
    let mut desired = bounded.min(cap);
    let mut reason = match inputs.previous {
        Some(p) if p < desired => "ScaledUp",
        Some(p) if p > desired => "ScaledDown",
        _ => "AtRecommendation",
    };
    let mut note = String::new();
    if let Some(previous) = inputs.previous
        && previous > desired
        && inputs.tracked_seconds < delay
    {
        desired = previous.min(max).min(cap);
        reason = "ScaleDownDelayed";
        note = format!(
            "; measuring for {:.0}s only, keeping {desired} until {delay:.0}s of data",
            inputs.tracked_seconds
        );
    } else if inputs.current_need.is_some_and(|n| n < recommended)
        && desired > min
        // Growing to a recommendation the current load alone would not
        // need (the peak's) is still scaling up, not a scale-down held back.
        && inputs.previous.is_none_or(|p| p >= desired)
    {
        reason = "ScaleDownDelayed";
        note = format!(
            "; the current load needs {}, kept until the peak is older than {delay:.0}s",
            inputs.current_need.unwrap_or_default()
        );
    }
    if recommended > max && max <= cap {
        reason = "LimitedByMaxReplicas";
    } else if recommended < min {
        reason = "AtMinReplicas";
    }
    if bounded > cap {
        reason = "LimitedByPoolCap";
        note.push_str(&format!("; the operator's pool cap is {cap}"));
    }
    Decision {
        desired,
        condition: Some((
            true,
            reason,
            format!(
                "{desired} idle Pods: recommended {recommended} ({}), bounds {min}..{max}{note}",
                inputs.why
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: i32, max: i32) -> PoolAutoscaling {
        PoolAutoscaling {
            min_replicas: min,
            max_replicas: max,
            target_hit_ratio: None,
            scale_down_delay_seconds: Some(120),
        }
    }

    fn inputs(rec: Option<i32>, need: Option<i32>, previous: Option<i32>) -> Inputs {
        Inputs {
            recommended: rec,
            current_need: need,
            previous,
            tracked_seconds: 1000.0,
            why: "test".into(),
        }
    }

    #[test]
    fn without_autoscaling_spec_replicas_capped() {
        let d = decide(7, None, 5, &Inputs::default());
        assert_eq!(d.desired, 5);
        assert_eq!(d.condition, None);
    }

    #[test]
    fn follows_the_recommendation_within_bounds_and_cap() {
        let a = spec(1, 10);
        let d = decide(0, Some(&a), 100, &inputs(Some(6), Some(6), Some(1)));
        assert_eq!(d.desired, 6);
        assert_eq!(d.condition.as_ref().unwrap().1, "ScaledUp");
        let d = decide(0, Some(&a), 100, &inputs(Some(30), Some(30), Some(6)));
        assert_eq!(d.desired, 10);
        assert_eq!(d.condition.as_ref().unwrap().1, "LimitedByMaxReplicas");
        let d = decide(0, Some(&a), 4, &inputs(Some(8), Some(8), Some(4)));
        assert_eq!(d.desired, 4);
        let (_, reason, message) = d.condition.unwrap();
        assert_eq!(reason, "LimitedByPoolCap");
        assert!(message.contains("pool cap is 4"), "{message}");
        let d = decide(0, Some(&a), 100, &inputs(Some(0), Some(0), Some(3)));
        assert_eq!(d.desired, 1);
        assert_eq!(d.condition.unwrap().1, "AtMinReplicas");
    }

    #[test]
    fn reports_a_delayed_scale_down_and_holds_after_restart() {
        let a = spec(1, 10);
        // The peak still in the lookback keeps 6 while the current load needs 2.
        let d = decide(0, Some(&a), 100, &inputs(Some(6), Some(2), Some(6)));
        assert_eq!(d.desired, 6);
        assert_eq!(d.condition.unwrap().1, "ScaleDownDelayed");
        // Fresh process: no shrink below the last size before the delay.
        let mut young = inputs(Some(2), Some(2), Some(6));
        young.tracked_seconds = 10.0;
        let d = decide(0, Some(&a), 100, &young);
        assert_eq!(d.desired, 6);
        assert_eq!(d.condition.unwrap().1, "ScaleDownDelayed");
        // After the delay it shrinks.
        let d = decide(0, Some(&a), 100, &inputs(Some(2), Some(2), Some(6)));
        assert_eq!(d.desired, 2);
        assert_eq!(d.condition.unwrap().1, "ScaledDown");
    }

    #[test]
    fn growing_to_the_peaks_recommendation_is_scaling_up() {
        let a = spec(0, 10);
        // Was 1, the peak recommends 6, the current load needs 2.
        let d = decide(1, Some(&a), 100, &inputs(Some(6), Some(2), Some(1)));
        assert_eq!(d.desired, 6);
        assert_eq!(d.condition.unwrap().1, "ScaledUp");
    }

    #[test]
    fn invalid_bounds_and_missing_data() {
        let d = decide(3, Some(&spec(5, 2)), 100, &inputs(Some(4), None, None));
        assert_eq!(d.desired, 3);
        let (status, reason, message) = d.condition.unwrap();
        assert!(!status);
        assert_eq!(reason, "InvalidBounds");
        assert!(
            message.contains("spec.autoscaling.minReplicas"),
            "{message}"
        );
        let d = decide(3, Some(&spec(2, 9)), 100, &inputs(None, None, None));
        assert_eq!(d.desired, 2);
        assert_eq!(d.condition.unwrap().1, "AwaitingData");
    }

    #[test]
    fn lookback_is_the_delay_but_at_least_ten_seconds() {
        assert_eq!(lookback_seconds(&spec(0, 1)), 120.0);
        let mut a = spec(0, 1);
        a.scale_down_delay_seconds = Some(5);
        assert_eq!(lookback_seconds(&a), 10.0);
        a.scale_down_delay_seconds = None;
        assert_eq!(lookback_seconds(&a), 300.0);
    }
}
