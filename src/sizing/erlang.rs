//! Erlang's B formula: the share of claims that find no idle Pod.
//!
//! A warm pool with a cold fallback is a loss system: a claim takes an idle
//! Pod, the replacement is busy (starting) for the refill time `T`, and a
//! claim that finds no idle Pod goes cold. With Poisson arrivals at rate
//! `lambda` and offered load `a = lambda * E[T]`, the cold share of a pool of
//! `n` Pods is `B(n, a)`, whatever the distribution of `T` (the formula is
//! insensitive to it; only the mean matters).
//!
//! Guarantees: computed with the recurrence `B(0) = 1`,
//! `B(k) = a B(k-1) / (k + a B(k-1))`, whose terms stay in `[0, 1]`, so it is
//! numerically stable for any `n` (no factorials, no powers); `O(n)`.

/// Share of claims that go cold for a pool of `n` with offered load `a`
/// (Erlang B). `a <= 0` (no traffic) loses nothing; `n = 0` loses all.
pub fn erlang_b(n: u32, a: f64) -> f64 {
    if a <= 0.0 || !a.is_finite() {
        return if n == 0 && a > 0.0 { 1.0 } else { 0.0 };
    }
    let mut b = 1.0_f64;
    for k in 1..=n {
        b = a * b / (f64::from(k) + a * b);
    }
    b
}

/// Predicted hit ratio (warm share) of a pool of `n` at load `a`.
pub fn hit_ratio(n: u32, a: f64) -> f64 {
    1.0 - erlang_b(n, a)
}

/// The smallest pool whose predicted hit ratio is at least `target`, or
/// `None` when even `limit` Pods are not enough. `O(result)`.
pub fn size_for(a: f64, target: f64, limit: u32) -> Option<u32> {
    let allowed_loss = 1.0 - target;
    if a <= 0.0 || !a.is_finite() {
        return Some(0);
    }
    let mut b = 1.0_f64;
    if b <= allowed_loss {
        return Some(0);
    }
    for k in 1..=limit {
        b = a * b / (f64::from(k) + a * b);
        // A tiny tolerance so a target written as 0.99 is met by a loss that
        // prints as 0.0100.
        if b <= allowed_loss + 1e-12 {
            return Some(k);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_values() {
        // Erlang B tables (e.g. ITU-T E.800 series): B(10, 5) = 0.01838.
        assert!((erlang_b(10, 5.0) - 0.018_38).abs() < 0.000_05);
        assert!(erlang_b(64, 50.0) < 0.01);
        // B(1, a) = a / (1 + a); B(2, 1) = 1/5.
        assert!((erlang_b(1, 3.0) - 0.75).abs() < 1e-12);
        assert!((erlang_b(2, 1.0) - 0.2).abs() < 1e-12);
        // Classic table row: 1% loss at 10 servers carries 4.46 Erlang.
        assert!((erlang_b(10, 4.46) - 0.01).abs() < 0.000_2);
    }

    #[test]
    fn stable_up_to_ten_thousand() {
        // Heavy load: more than a 1000 Erlang above capacity still in (0, 1).
        let b = erlang_b(10_000, 11_000.0);
        assert!(b.is_finite() && b > 0.09 && b < 0.1, "{b}");
        // Around capacity the loss is small but not zero.
        let b = erlang_b(10_000, 9_800.0);
        assert!(b.is_finite() && b > 0.0 && b < 0.01, "{b}");
        // Monotone in n.
        let mut last = 1.0;
        for n in (0..=10_000).step_by(500) {
            let b = erlang_b(n, 5_000.0);
            assert!(b <= last && b >= 0.0);
            last = b;
        }
    }

    #[test]
    fn size_for_is_the_smallest_meeting_the_target() {
        assert_eq!(size_for(0.0, 0.99, 100), Some(0));
        let n = size_for(5.0, 0.99, 100).unwrap();
        assert_eq!(n, 11);
        assert!(hit_ratio(n, 5.0) >= 0.99);
        assert!(hit_ratio(n - 1, 5.0) < 0.99);
        assert_eq!(size_for(50.0, 0.99, 64), Some(64));
        assert_eq!(size_for(50.0, 0.99, 10), None);
        // The rate x refill rule of thumb misses a lot at small loads.
        assert!(hit_ratio(2, 2.0) < 0.7);
    }
}
