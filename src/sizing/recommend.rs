//! From measurements to a recommended pool size and a predicted hit ratio.
//! Pure.
//!
//! - **Recommended size:** the smallest `n` whose hit ratio
//!   ([`super::model`], `P(Poisson(a) < n)`) is at least the target at the
//!   peak load `a = peak 1-minute claim rate x mean refill time`, and never
//!   below the size that would have served the target share of the
//!   lookback's claims warm as they came (bursts are not Poisson; before,
//!   found by review, the floor was the largest burst, which serves every
//!   claim warm whatever the target).
//! - **Predicted hit ratio:** the model's at the current size and load
//!   (5-minute rate), comparable with the observed hit ratio of the same
//!   window.

use super::model::{hit_ratio, size_for};
use super::tracker::WindowStats;

/// Default target hit ratio.
pub const DEFAULT_TARGET_HIT_RATIO: f64 = 0.99;

/// Largest size the search considers (far above any sane pool cap).
pub const SEARCH_LIMIT: u32 = 100_000;

/// What the operator measured for one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measurement {
    /// Claims of the last minute.
    pub last_1m: WindowStats,
    /// Claims of the last 5 minutes (the "current" load and observed hit ratio).
    pub last_5m: WindowStats,
    /// Claims of the last 15 minutes.
    pub last_15m: WindowStats,
    /// Peak 1-minute claim rate (per second) within the lookback.
    pub peak_rate: f64,
    /// Mean refill time in seconds, if any refill was seen.
    pub refill_seconds: Option<f64>,
    /// Most claims within one refill time during the lookback.
    pub burst: u32,
    /// The smallest pool that would have served the target share of the
    /// lookback's claims warm, as they came
    /// ([`super::tracker::Arrivals::burst_size_for`]).
    pub burst_at_target: u32,
}

/// The sizing advice for one pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recommendation {
    /// Recommended number of idle Pods (`None` until a refill time is known).
    pub replicas: Option<u32>,
    /// Size that the current load alone needs (without the peak memory).
    pub replicas_for_current_load: Option<u32>,
    /// Predicted hit ratio at the current size and load.
    pub predicted_hit_ratio: Option<f64>,
    /// Offered load at the peak rate (claims per refill time, in Erlang).
    pub peak_load: Option<f64>,
}

/// Sizes a pool. Pure.
pub fn recommend(m: &Measurement, current_size: u32, target: f64) -> Recommendation {
    let Some(refill) = m.refill_seconds else {
        return Recommendation {
            replicas: None,
            replicas_for_current_load: None,
            predicted_hit_ratio: None,
            peak_load: None,
        };
    };
    let peak_load = m.peak_rate * refill;
    let current_load = m.last_5m.rate() * refill;
    let size = |load: f64| size_for(load, target, SEARCH_LIMIT).unwrap_or(SEARCH_LIMIT);
    Recommendation {
        replicas: Some(size(peak_load).max(m.burst_at_target)),
        replicas_for_current_load: Some(size(m.last_1m.rate().max(m.last_5m.rate()) * refill)),
        predicted_hit_ratio: Some(hit_ratio(current_size, current_load)),
        peak_load: Some(peak_load),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(claims: u64, covered: f64) -> WindowStats {
        WindowStats {
            claims,
            warm: claims,
            covered,
        }
    }

    #[test]
    fn no_refill_time_no_advice() {
        let r = recommend(&Measurement::default(), 3, 0.99);
        assert_eq!(r.replicas, None);
        assert_eq!(r.predicted_hit_ratio, None);
    }

    #[test]
    fn sizes_for_the_peak_and_predicts_at_the_current_load() {
        // Peak 2.5 claims/s x 2 s = 5 Erlang -> 12 for 0.99
        // (P(Poisson(5) < 11) = 0.9863, P(Poisson(5) < 12) = 0.9945).
        let m = Measurement {
            last_1m: window(60, 60.0),
            last_5m: window(300, 300.0),
            last_15m: window(900, 900.0),
            peak_rate: 2.5,
            refill_seconds: Some(2.0),
            burst: 4,
            burst_at_target: 3,
        };
        let r = recommend(&m, 5, 0.99);
        assert_eq!(r.replicas, Some(12));
        // Current load 1/s x 2 s = 2 Erlang; P(Poisson(2) < 5) = 0.9473.
        let predicted = r.predicted_hit_ratio.unwrap();
        assert!((predicted - 0.947_347).abs() < 1e-4, "{predicted}");
        // Current load alone needs fewer: P(Poisson(2) < 6) = 0.9834,
        // P(Poisson(2) < 7) = 0.9955.
        assert_eq!(r.replicas_for_current_load, Some(7));
    }

    #[test]
    fn never_below_what_the_claims_as_they_came_needed() {
        let m = Measurement {
            peak_rate: 0.1,
            refill_seconds: Some(1.0),
            burst: 12,
            burst_at_target: 9,
            ..Default::default()
        };
        assert_eq!(recommend(&m, 0, 0.99).replicas, Some(9));
    }

    #[test]
    fn idle_template_recommends_the_burst_floor_only() {
        let m = Measurement {
            refill_seconds: Some(8.0),
            ..Default::default()
        };
        let r = recommend(&m, 4, 0.99);
        assert_eq!(r.replicas, Some(0));
        assert_eq!(r.predicted_hit_ratio, Some(1.0));
    }
}
