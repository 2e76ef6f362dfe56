//! Who the first leg's time belongs to: from a claim's admission stamp to
//! its first watch event, as the bench's own claim watch sees it (the API
//! server's commit and watch delivery) and as the operator logged it
//! (`claim: watch event applied`). When both see a slow claim equally
//! late, the API server held it, not the operator.

use std::collections::BTreeMap;

use crate::stats::{percentile, sorted};

/// The two watches over the same claims, in milliseconds since admission.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Delivery {
    /// Claims both watches saw.
    pub claims: usize,
    pub bench_p50_ms: f64,
    pub bench_p90_ms: f64,
    pub operator_p50_ms: f64,
    pub operator_p90_ms: f64,
    /// Per claim, the operator's time minus the bench's: its median and
    /// 90th percentile (what the operator adds, up to the two watches'
    /// own spread).
    pub operator_later_p50_ms: f64,
    pub operator_later_p90_ms: f64,
    /// The largest per-claim difference (one claim the operator saw late
    /// shows here even when the p90 hides it).
    pub operator_later_max_ms: f64,
}

impl Delivery {
    /// Over the claims both maps have; `None` when there are none.
    pub fn of(bench: &BTreeMap<String, f64>, operator: &BTreeMap<String, f64>) -> Option<Delivery> {
        let both: Vec<(f64, f64)> = bench
            .iter()
            .filter_map(|(claim, b)| operator.get(claim).map(|o| (*b, *o)))
            .collect();
        if both.is_empty() {
            return None;
        }
        let column = |f: fn(&(f64, f64)) -> f64| sorted(&both.iter().map(f).collect::<Vec<_>>());
        let b = column(|(b, _)| *b);
        let o = column(|(_, o)| *o);
        let later = column(|(b, o)| o - b);
        Some(Delivery {
            claims: both.len(),
            bench_p50_ms: percentile(&b, 50.0),
            bench_p90_ms: percentile(&b, 90.0),
            operator_p50_ms: percentile(&o, 50.0),
            operator_p90_ms: percentile(&o, 90.0),
            operator_later_p50_ms: percentile(&later, 50.0),
            operator_later_p90_ms: percentile(&later, 90.0),
            operator_later_max_ms: later.last().copied().unwrap_or(0.0),
        })
    }

    /// The printed lines.
    pub fn lines(&self) -> String {
        // A difference that rounds to zero prints as 0.0, never -0.0.
        let ms = |v: f64| if v.abs() < 0.05 { 0.0 } else { v };
        let row = |what: &str, p50: f64, p90: f64| {
            format!("  {what:<36} {:>6.1} / {:>6.1}\n", ms(p50), ms(p90))
        };
        format!(
            "admission -> the claim's first watch event, over {} warm-sequential claims (ms; median / p90):\n{}{}{}  {:<36} {:>6.1}\n",
            self.claims,
            row(
                "the bench's own watch",
                self.bench_p50_ms,
                self.bench_p90_ms
            ),
            row(
                "the operator (event applied)",
                self.operator_p50_ms,
                self.operator_p90_ms
            ),
            row(
                "operator minus bench, claim by claim",
                self.operator_later_p50_ms,
                self.operator_later_p90_ms
            ),
            "the largest difference, one claim",
            ms(self.operator_later_max_ms)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_watches_are_compared_claim_by_claim() {
        let map = |v: &[(&str, f64)]| -> BTreeMap<String, f64> {
            v.iter().map(|(k, ms)| (k.to_string(), *ms)).collect()
        };
        // ws-2 was slow for both watches; ws-3 only the bench saw.
        let bench = map(&[("ws-0", 3.0), ("ws-1", 4.0), ("ws-2", 100.0), ("ws-3", 5.0)]);
        let operator = map(&[("ws-0", 3.5), ("ws-1", 4.0), ("ws-2", 101.0)]);
        let d = Delivery::of(&bench, &operator).unwrap();
        assert_eq!(d.claims, 3);
        assert_eq!(d.bench_p50_ms, 4.0);
        assert_eq!(d.operator_p50_ms, 4.0);
        assert_eq!(d.operator_later_p50_ms, 0.5);
        assert!(d.operator_later_p90_ms <= 1.0, "{d:?}");
        assert_eq!(d.operator_later_max_ms, 1.0);
        assert!(d.lines().contains("over 3 warm-sequential claims"));
        assert_eq!(Delivery::of(&bench, &BTreeMap::new()), None);
    }
}
