//! Bounded per-template and per-pool measurements: claim arrivals (warm or
//! cold) and refill times.
//!
//! Times are seconds since the Unix epoch (`f64`), passed in by the caller,
//! so every function is deterministic under test.
//!
//! Guarantees (memory bounds): arrivals are kept as per-second counts for at
//! most [`HORIZON_SECONDS`] (one entry per second that saw a claim, so at most
//! 3600 entries) plus the exact times of the last [`MAX_RECENT`] arrivals
//! for burst detection; refill times keep the last [`MAX_REFILL_SAMPLES`].

use std::collections::VecDeque;

/// How far back arrivals are remembered (the peak rate looks back this far).
pub const HORIZON_SECONDS: f64 = 3600.0;
/// Exact arrival times kept for the burst measure.
pub const MAX_RECENT: usize = 4096;
/// Refill durations kept per pool.
pub const MAX_REFILL_SAMPLES: usize = 256;
/// Rates of a tracker younger than a window divide by the time it has
/// existed, but never by less than this (a single early claim must not read
/// as a huge rate).
pub const MIN_COVER_SECONDS: f64 = 15.0;
/// The peak rate is by default the largest count in any window of this
/// length.
pub const PEAK_WINDOW_SECONDS: f64 = 60.0;

/// Claims and warm claims in a window, and the time it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// All claims in the window.
    pub claims: u64,
    /// Claims served from the pool.
    pub warm: u64,
    /// Seconds the measurement covers (the window, or less for a young
    /// tracker).
    pub covered: f64,
}

impl WindowStats {
    /// Claims per second.
    pub fn rate(&self) -> f64 {
        if self.covered <= 0.0 {
            0.0
        } else {
            self.claims as f64 / self.covered
        }
    }

    /// Warm share, `None` without claims.
    pub fn hit_ratio(&self) -> Option<f64> {
        (self.claims > 0).then(|| self.warm as f64 / self.claims as f64)
    }
}

/// Claim arrivals of one template in one namespace.
#[derive(Clone, Debug)]
pub struct Arrivals {
    started: f64,
    /// (second, claims, warm claims), ascending by second.
    seconds: VecDeque<(i64, u64, u64)>,
    /// Exact arrival times, ascending.
    recent: VecDeque<f64>,
}

impl Arrivals {
    /// A tracker that starts observing at `now`.
    pub fn new(now: f64) -> Self {
        Arrivals {
            started: now,
            seconds: VecDeque::new(),
            recent: VecDeque::new(),
        }
    }

    /// Records one claim that arrived at `at` (`warm`: served from a pool).
    /// Arrivals may come slightly out of order; those older than the
    /// horizon are ignored.
    pub fn record(&mut self, at: f64, warm: bool, now: f64) {
        if at < now - HORIZON_SECONDS {
            return;
        }
        self.started = self.started.min(at);
        let second = at.floor() as i64;
        let index = self.seconds.partition_point(|(s, _, _)| *s < second);
        match self.seconds.get_mut(index) {
            Some(entry) if entry.0 == second => {
                entry.1 += 1;
                entry.2 += u64::from(warm);
            }
            _ => self.seconds.insert(index, (second, 1, u64::from(warm))),
        }
        let index = self.recent.partition_point(|t| *t <= at);
        self.recent.insert(index, at);
        if self.recent.len() > MAX_RECENT {
            self.recent.pop_front();
        }
        self.prune(now);
    }

    /// Forgets what is older than the horizon.
    pub fn prune(&mut self, now: f64) {
        let oldest = (now - HORIZON_SECONDS).floor() as i64;
        while self.seconds.front().is_some_and(|(s, _, _)| *s < oldest) {
            self.seconds.pop_front();
        }
        while self
            .recent
            .front()
            .is_some_and(|t| *t < now - HORIZON_SECONDS)
        {
            self.recent.pop_front();
        }
    }

    /// Time covered by a window of `window` seconds ending at `end`.
    fn covered(&self, end: f64, window: f64) -> f64 {
        window.min((end - self.started).max(MIN_COVER_SECONDS))
    }

    /// Claims in the last `window` seconds before `now`.
    pub fn window(&self, now: f64, window: f64) -> WindowStats {
        let from = (now - window).floor() as i64;
        let (claims, warm) = self
            .seconds
            .iter()
            .rev()
            .take_while(|(s, _, _)| *s >= from)
            .fold((0, 0), |(c, w), (_, sc, sw)| (c + sc, w + sw));
        WindowStats {
            claims,
            warm,
            covered: self.covered(now, window),
        }
    }

    /// The largest claim rate (per second) over any `window`-long window
    /// (whole seconds, at least one) that ends within the last `lookback`
    /// seconds.
    pub fn peak_rate(&self, now: f64, lookback: f64, window: f64) -> f64 {
        let first_end = (now - lookback).floor() as i64;
        let span = (window.round() as i64).max(1);
        let entries: Vec<&(i64, u64, u64)> = self.seconds.iter().collect();
        let mut start = 0;
        let mut sum = 0u64;
        let mut peak: f64 = 0.0;
        for entry in &entries {
            sum += entry.1;
            while entries[start].0 <= entry.0 - span {
                sum -= entries[start].1;
                start += 1;
            }
            if entry.0 >= first_end {
                let covered = self.covered(entry.0 as f64 + 1.0, span as f64);
                peak = peak.max(sum as f64 / covered);
            }
        }
        peak
    }

    /// For each kept claim of the last `lookback` seconds, the claims that
    /// arrived within `span` up to it, itself included (kept claims just
    /// before the lookback count toward those after it: second read, the
    /// first span's needs read low without them). Ascending by arrival.
    fn needs(&self, now: f64, lookback: f64, span: f64) -> Vec<usize> {
        let times = &self.recent;
        let mut start = 0;
        let mut needs = Vec::new();
        for end in 0..times.len() {
            while times[end] - times[start] >= span {
                start += 1;
            }
            if times[end] >= now - lookback {
                needs.push(end + 1 - start);
            }
        }
        needs
    }

    /// The most claims that arrived within any `span` seconds ending
    /// during the last `lookback` seconds (of the exact times kept).
    pub fn largest_burst(&self, now: f64, lookback: f64, span: f64) -> u32 {
        let best = self.needs(now, lookback, span).into_iter().max();
        u32::try_from(best.unwrap_or(0)).unwrap_or(u32::MAX)
    }

    /// The smallest pool that would have served at least `target` of the
    /// claims of the last `lookback` seconds (of the exact times kept)
    /// warm, were each claim taken exactly `span` (the refill time) before
    /// its slot came free again: a claim is warm when at most that many
    /// claims, itself included, arrived within `span` up to it (the model
    /// of `sizing::model`, on the claims seen rather than on Poisson
    /// arrivals, so bursts count as they came). 0 without claims.
    pub fn burst_size_for(&self, now: f64, lookback: f64, span: f64, target: f64) -> u32 {
        let mut needs = self.needs(now, lookback, span);
        if needs.is_empty() {
            return 0;
        }
        // The smallest need that covers ceil(target x claims) of them.
        let covered = (target.clamp(0.0, 1.0) * needs.len() as f64 - 1e-9).ceil() as usize;
        let index = covered.clamp(1, needs.len()) - 1;
        let (_, need, _) = needs.select_nth_unstable(index);
        u32::try_from(*need).unwrap_or(u32::MAX)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }
}

/// Refill durations (replacement created -> Ready) of one pool.
#[derive(Clone, Debug, Default)]
pub struct RefillTimes {
    samples: VecDeque<f64>,
}

impl RefillTimes {
    /// Records one refill duration in seconds (negative values are dropped).
    pub fn record(&mut self, seconds: f64) {
        if !(seconds >= 0.0 && seconds.is_finite()) {
            return;
        }
        self.samples.push_back(seconds);
        if self.samples.len() > MAX_REFILL_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// Mean of the kept samples, the refill time the sizing model takes
    /// (exact for near-constant refill times, a little pessimistic for
    /// varying ones, see `sizing::model`).
    pub fn mean(&self) -> Option<f64> {
        (!self.samples.is_empty())
            .then(|| self.samples.iter().sum::<f64>() / self.samples.len() as f64)
    }

    /// The `q` quantile (nearest rank) of the kept samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }

    /// Samples kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_claims_and_warm_share() {
        let mut a = Arrivals::new(0.0);
        for i in 0..120 {
            a.record(f64::from(i), i % 4 != 0, f64::from(i));
        }
        let now = 120.0;
        let w = a.window(now, 60.0);
        assert_eq!(w.claims, 60); // seconds 60..=119
        assert_eq!(w.covered, 60.0);
        assert!((w.hit_ratio().unwrap() - 0.75).abs() < 0.02);
        // A young tracker divides by the time it has existed.
        let w15 = a.window(now, 900.0);
        assert_eq!(w15.claims, 120);
        assert_eq!(w15.covered, 120.0);
        assert!((w15.rate() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn peak_rate_finds_the_busiest_minute_within_the_lookback() {
        let mut a = Arrivals::new(0.0);
        // 1/s for 10 minutes, with a burst of 10/s during 60 s at 300..360.
        for s in 0..600 {
            let per_second = if (300..360).contains(&s) { 10 } else { 1 };
            for k in 0..per_second {
                a.record(f64::from(s) + f64::from(k) / 20.0, true, f64::from(s));
            }
        }
        let peak = a.peak_rate(600.0, 3600.0, PEAK_WINDOW_SECONDS);
        assert!((peak - 10.0).abs() < 0.2, "{peak}");
        // A lookback that ends after the burst no longer sees it.
        let recent = a.peak_rate(600.0, 120.0, PEAK_WINDOW_SECONDS);
        assert!((recent - 1.0).abs() < 0.1, "{recent}");
    }

    #[test]
    fn largest_burst_within_a_span() {
        let mut a = Arrivals::new(0.0);
        for t in [1.0, 1.1, 1.2, 5.0, 9.0, 9.5, 9.9, 10.2, 20.0] {
            a.record(t, true, t);
        }
        assert_eq!(a.largest_burst(20.0, 3600.0, 1.0), 3);
        assert_eq!(a.largest_burst(20.0, 3600.0, 1.5), 4);
        assert_eq!(a.largest_burst(20.0, 5.0, 1.5), 1);
    }

    #[test]
    fn the_size_the_claims_needed_as_they_came_meets_the_target_only() {
        let mut a = Arrivals::new(0.0);
        // Needs with a 1.5 s span, claim by claim: 1, 2, 3, 1, 1, 2, 3, 4, 1.
        for t in [1.0, 1.1, 1.2, 5.0, 9.0, 9.5, 9.9, 10.2, 20.0] {
            a.record(t, true, t);
        }
        // Every claim warm needs the largest burst; 8 of 9 need at most 3,
        // 6 of 9 at most 2, 4 of 9 at most 1 (the model: warm when the
        // claims within the span up to it, itself included, are at most
        // the pool's size).
        assert_eq!(a.burst_size_for(20.0, 3600.0, 1.5, 1.0), 4);
        assert_eq!(a.burst_size_for(20.0, 3600.0, 1.5, 0.99), 4);
        assert_eq!(a.burst_size_for(20.0, 3600.0, 1.5, 8.0 / 9.0), 3);
        assert_eq!(a.burst_size_for(20.0, 3600.0, 1.5, 7.0 / 9.0), 3);
        assert_eq!(a.burst_size_for(20.0, 3600.0, 1.5, 0.7), 3);
        assert_eq!(a.burst_size_for(20.0, 3600.0, 1.5, 6.0 / 9.0), 2);
        assert_eq!(a.burst_size_for(20.0, 3600.0, 1.5, 0.5), 2);
        assert_eq!(a.burst_size_for(20.0, 3600.0, 1.5, 4.0 / 9.0), 1);
        assert_eq!(a.burst_size_for(20.0, 5.0, 1.5, 0.99), 1);
        assert_eq!(
            Arrivals::new(0.0).burst_size_for(20.0, 3600.0, 1.5, 0.99),
            0
        );
        // A claim early in the lookback counts the claims just before it.
        let mut edge = Arrivals::new(0.0);
        for t in [10.0, 10.4, 10.8] {
            edge.record(t, true, t);
        }
        assert_eq!(edge.burst_size_for(20.0, 9.5, 1.5, 0.99), 3);
    }

    #[test]
    fn state_is_bounded_and_old_data_dropped() {
        let mut a = Arrivals::new(0.0);
        for i in 0..20_000 {
            let t = f64::from(i) * 0.5;
            a.record(t, true, t);
        }
        assert!(a.seconds.len() <= HORIZON_SECONDS as usize + 1);
        assert!(a.recent.len() <= MAX_RECENT);
        a.prune(100_000.0);
        assert!(a.is_empty());
        // Out-of-order and too-old arrivals.
        let mut b = Arrivals::new(5000.0);
        b.record(10.0, true, 5000.0);
        assert!(b.is_empty());
        b.record(4999.0, false, 5000.0);
        b.record(4998.5, true, 5000.0);
        assert_eq!(b.window(5000.0, 60.0).claims, 2);
    }

    #[test]
    fn refill_mean_and_quantiles() {
        let mut r = RefillTimes::default();
        assert_eq!(r.mean(), None);
        for s in 1..=10 {
            r.record(f64::from(s));
        }
        r.record(-1.0);
        assert_eq!(r.len(), 10);
        assert_eq!(r.mean(), Some(5.5));
        assert_eq!(r.quantile(0.9), Some(9.0));
        for _ in 0..1000 {
            r.record(2.0);
        }
        assert_eq!(r.len(), MAX_REFILL_SAMPLES);
        assert_eq!(r.mean(), Some(2.0));
    }
}
