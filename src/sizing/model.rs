//! The hit ratio of this operator's warm pools: what a pool of `n` serves
//! warm at offered load `a` (claim rate x mean refill time).
//!
//! A claim that finds no idle Ready Pod takes the pool's oldest Pod still
//! starting, when there is one (see `controller::claim`), and the pool
//! starts that slot's refill again. So every claim, warm or not, takes the
//! slot whose refill ends first and restarts it: with a constant refill
//! time `T` the pool's `n` slots come free exactly `T` after the last `n`
//! claims, and a claim is warm if and only if fewer than `n` other claims
//! arrived in the `T` before it. With Poisson arrivals that count is
//! Poisson with mean `a`, so the hit ratio is `P(Poisson(a) < n)`.
//!
//! This is lower than Erlang's B formula ([`super::erlang`]), which assumes
//! a miss leaves the pool alone (the claim starts a Pod of its own): at
//! `n = a = 16` Erlang B says 0.82 and this pool serves 0.47 warm. Taking
//! the starting Pod shortens the missed claim's wait (it waits for the rest
//! of a start under way, not a whole one) at the price of the claims after
//! it. With refill times that vary, the formula is pessimistic (the oldest
//! starting Pod is not always the one closest to Ready, and the pool
//! serves more warm than it says): simulated at the sizes it picks for a
//! 0.95 or 0.99 target, refill times with a 30% spread serve up to 1.5
//! points more and exponential ones, the extreme, up to 3; pools far too
//! small for their load serve tens of points more (still far below any
//! target). The seeded simulation ([`super::simulate`]) checks both.
//!
//! Guarantees: stable for any `n` and any load up to the limits `pool
//! advise` takes (10^6): the Poisson weights are computed relative to the
//! mode with ratios of consecutive terms (no factorials, no `exp(-a)`,
//! which underflows above 745), and terms below 10^-20 of the mode's are
//! dropped; `O(sqrt(a))` time and memory past the mode's neighbourhood.

/// Terms smaller than this share of the mode's weight are dropped.
const NEGLIGIBLE: f64 = 1e-20;

/// Poisson weights `w(k)` proportional to `P(Poisson(a) = k)` for `k` in
/// `first..first + weights.len()`, with their sum.
struct Weights {
    first: u64,
    weights: Vec<f64>,
    total: f64,
}

impl Weights {
    /// The non-negligible weights of `Poisson(a)`, `a > 0` and finite.
    fn new(a: f64) -> Self {
        let mode = a.floor() as u64;
        // Down from the mode: w(k-1) = w(k) k / a.
        let mut below = Vec::new();
        let mut w = 1.0_f64;
        let mut k = mode;
        while k > 0 {
            w *= k as f64 / a;
            if w < NEGLIGIBLE {
                break;
            }
            below.push(w);
            k -= 1;
        }
        let first = mode - below.len() as u64;
        below.reverse();
        let mut weights = below;
        weights.push(1.0);
        // Up from the mode: w(k+1) = w(k) a / (k+1).
        let mut w = 1.0_f64;
        let mut k = mode;
        loop {
            w *= a / (k + 1) as f64;
            if w < NEGLIGIBLE {
                break;
            }
            weights.push(w);
            k += 1;
        }
        let total = weights.iter().sum();
        Weights {
            first,
            weights,
            total,
        }
    }

    /// `P(Poisson(a) < n)`.
    fn below(&self, n: u64) -> f64 {
        let count = n.saturating_sub(self.first).min(self.weights.len() as u64) as usize;
        // Summed from +0.0: an empty `sum()` is -0.0, printed "-0.0000".
        let below = self.weights[..count].iter().fold(0.0, |sum, w| sum + w);
        (below / self.total).min(1.0)
    }
}

/// Predicted hit ratio (warm share) of a pool of `n` at load `a`:
/// `P(Poisson(a) < n)`. No traffic (`a <= 0`) is all warm; `n = 0` with
/// traffic is all cold.
pub fn hit_ratio(n: u32, a: f64) -> f64 {
    if a.is_nan() || a <= 0.0 {
        return 1.0;
    }
    if n == 0 || !a.is_finite() {
        return 0.0;
    }
    Weights::new(a).below(u64::from(n))
}

/// The smallest pool whose predicted hit ratio is at least `target`, or
/// `None` when even `limit` Pods are not enough (or `target` is above 1
/// or not a number).
pub fn size_for(a: f64, target: f64, limit: u32) -> Option<u32> {
    if target.is_nan() || target > 1.0 {
        return None;
    }
    if a.is_nan() || a <= 0.0 {
        return Some(0);
    }
    if !a.is_finite() {
        return None;
    }
    let weights = Weights::new(a);
    // A tiny tolerance so a target written as 0.99 is met by a ratio that
    // prints as 0.9900.
    let needed = (target - 1e-12) * weights.total;
    if needed <= 0.0 {
        return Some(0);
    }
    let mut sum = 0.0_f64;
    for (i, w) in weights.weights.iter().enumerate() {
        // The pool of `n` serves the claims that saw fewer than `n`
        // others: before adding w(first + i), `sum` is P(< first + i).
        let n = weights.first + i as u64;
        if sum >= needed {
            return u32::try_from(n).ok().filter(|n| *n <= limit);
        }
        sum += w;
    }
    let n = weights.first + weights.weights.len() as u64;
    u32::try_from(n).ok().filter(|n| *n <= limit)
}

#[cfg(test)]
mod tests;
