use super::*;
use crate::sizing::erlang;

/// `P(Poisson(a) < n)` summed term by term (small `a` only).
fn direct(n: u32, a: f64) -> f64 {
    let mut term = (-a).exp();
    let mut sum = 0.0;
    for k in 0..n {
        sum += term;
        term *= a / f64::from(k + 1);
    }
    sum
}

#[test]
fn matches_the_poisson_distribution() {
    // P(Poisson(1) < 1) = e^-1; P(Poisson(2) < 3) = 5 e^-2.
    assert!((hit_ratio(1, 1.0) - (-1.0_f64).exp()).abs() < 1e-12);
    assert!((hit_ratio(3, 2.0) - 5.0 * (-2.0_f64).exp()).abs() < 1e-12);
    // The README's example: a pool of rate x refill (16 at 16) serves
    // fewer than half warm.
    assert!((hit_ratio(16, 16.0) - 0.466_745).abs() < 1e-6);
    let mut worst: f64 = 0.0;
    for a in [0.01, 0.3, 1.0, 2.5, 7.0, 16.0, 33.3, 60.0] {
        for n in 0..=120 {
            worst = worst.max((hit_ratio(n, a) - direct(n, a)).abs());
        }
    }
    assert!(worst < 1e-12, "largest difference {worst}");
}

#[test]
fn no_traffic_is_all_warm_and_no_pool_all_cold() {
    assert_eq!(hit_ratio(0, 0.0), 1.0);
    assert_eq!(hit_ratio(3, -1.0), 1.0);
    assert_eq!(hit_ratio(3, f64::NAN), 1.0);
    assert_eq!(hit_ratio(0, 2.0), 0.0);
    assert_eq!(hit_ratio(10, f64::INFINITY), 0.0);
    assert_eq!(size_for(0.0, 0.99, 10), Some(0));
    assert_eq!(size_for(f64::INFINITY, 0.99, 10), None);
    assert_eq!(size_for(16.0, 1.5, 100), None);
    assert_eq!(size_for(16.0, f64::NAN, 100), None);
}

#[test]
fn stable_and_monotone_at_a_million() {
    let a = 1e6;
    // Normal approximation: mean a, deviation 1000; the 0.99 quantile is
    // about 2.326 deviations above the mean.
    let half = hit_ratio(1_000_000, a);
    assert!((half - 0.5).abs() < 0.001, "{half}");
    let upper = hit_ratio(1_002_327, a);
    assert!((upper - 0.99).abs() < 0.001, "{upper}");
    assert_eq!(hit_ratio(100_000, a), 0.0);
    let mut last = 0.0;
    for n in (990_000..=1_010_000).step_by(500) {
        let h = hit_ratio(n, a);
        assert!(
            h.is_finite() && h >= last && h <= 1.0,
            "n={n}: {h} after {last}"
        );
        last = h;
    }
    // Above exp's underflow (745) too.
    assert!((hit_ratio(800, 800.0) - 0.5).abs() < 0.02);
}

#[test]
fn size_for_is_the_smallest_meeting_the_target() {
    for a in [0.05, 0.5, 2.0, 4.18, 16.0, 120.0, 5_000.0] {
        for target in [0.5, 0.9, 0.95, 0.99, 0.999] {
            let n = size_for(a, target, 100_000).unwrap();
            assert!(hit_ratio(n, a) >= target - 1e-12, "a={a} t={target} n={n}");
            assert!(
                n == 0 || hit_ratio(n - 1, a) < target,
                "a={a} t={target} n={n}"
            );
        }
    }
    // 120 claims/min x 8 s: 27 Pods for 0.99 (Erlang B would say 25).
    assert_eq!(size_for(16.0, 0.99, 100), Some(27));
    assert_eq!(erlang::size_for(16.0, 0.99, 100), Some(25));
    assert_eq!(size_for(16.0, 0.99, 26), None);
    assert_eq!(size_for(180_000.0, 0.99, 100_000), None);
}

#[test]
fn never_above_erlang_b() {
    // A miss that takes a starting Pod can only cost the claims after it.
    for a in [0.2, 1.0, 4.0, 16.0, 40.0] {
        for n in 1..=60 {
            let ours = hit_ratio(n, a);
            let erlang = erlang::hit_ratio(n, a);
            assert!(ours <= erlang + 1e-12, "n={n} a={a}: {ours} > {erlang}");
        }
    }
}
