//! A seeded discrete-event simulation of a warm pool, to check the formula
//! (and to plan without a cluster).
//!
//! Model: claims arrive as a Poisson process; a claim that finds an idle Pod
//! is warm and makes that slot busy for one refill time (the replacement
//! starting); a claim that finds none is cold and leaves the pool untouched.
//! Guarantees: the same seed gives the same result on every platform (own
//! SplitMix64 generator, no global state).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// How long a refill takes in the simulation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Refill {
    /// Always this many seconds.
    Fixed(f64),
    /// Exponentially distributed with this mean (seconds).
    Exponential(f64),
}

/// SplitMix64: a tiny, well-mixed, seedable generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1]` (never 0, so `ln` is finite).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.uniform().ln()
    }
}

/// Outcome of one simulated run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimResult {
    /// Claims simulated.
    pub claims: u64,
    /// Claims that found an idle Pod.
    pub warm: u64,
}

impl SimResult {
    /// Observed hit ratio.
    pub fn hit_ratio(&self) -> f64 {
        if self.claims == 0 {
            return 1.0;
        }
        self.warm as f64 / self.claims as f64
    }
}

/// Simulates `claims` Poisson arrivals at `rate` per second on a pool of
/// `size` that starts full. A warm claim starts a refill of the given kind.
pub fn simulate(size: u32, rate: f64, refill: Refill, claims: u64, seed: u64) -> SimResult {
    let mut rng = Rng::new(seed);
    // Completion times of refills in progress (a min-heap of f64 bits: the
    // times are positive, so their bit patterns order like the values).
    let mut busy: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    let mut now = 0.0_f64;
    let mut warm = 0;
    for _ in 0..claims {
        now += rng.exponential(1.0 / rate);
        while busy
            .peek()
            .is_some_and(|Reverse(t)| f64::from_bits(*t) <= now)
        {
            busy.pop();
        }
        if (busy.len() as u64) < u64::from(size) {
            warm += 1;
            let duration = match refill {
                Refill::Fixed(t) => t,
                Refill::Exponential(mean) => rng.exponential(mean),
            };
            busy.push(Reverse((now + duration).to_bits()));
        }
    }
    SimResult { claims, warm }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizing::erlang::hit_ratio;

    #[test]
    fn same_seed_same_result() {
        let a = simulate(5, 2.0, Refill::Exponential(1.5), 10_000, 7);
        let b = simulate(5, 2.0, Refill::Exponential(1.5), 10_000, 7);
        assert_eq!(a, b);
        assert_ne!(a, simulate(5, 2.0, Refill::Exponential(1.5), 10_000, 8));
    }

    #[test]
    fn agrees_with_erlang_b_within_one_point() {
        // Grid of pool sizes and offered loads (a = rate x mean refill), with
        // fixed and with exponential refill times: insensitivity says both
        // follow the same formula.
        let mut worst: f64 = 0.0;
        for &size in &[1u32, 2, 5, 10, 20] {
            for &load in &[0.5, 1.0, 2.0, 5.0, 10.0, 15.0] {
                let refill_mean = 2.0;
                let rate = load / refill_mean;
                let formula = hit_ratio(size, load);
                for refill in [Refill::Fixed(refill_mean), Refill::Exponential(refill_mean)] {
                    let seed = u64::from(size) * 1000 + (load * 10.0) as u64;
                    let sim = simulate(size, rate, refill, 200_000, seed).hit_ratio();
                    let gap = (sim - formula).abs();
                    worst = worst.max(gap);
                    assert!(
                        gap < 0.01,
                        "n={size} a={load} {refill:?}: simulated {sim:.4}, formula {formula:.4}"
                    );
                }
            }
        }
        // The check has teeth: the gaps are far from zero-by-construction.
        assert!(worst > 0.0);
    }

    #[test]
    fn uniform_is_in_the_open_unit_interval() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let u = rng.uniform();
            assert!(u > 0.0 && u <= 1.0);
        }
    }
}
