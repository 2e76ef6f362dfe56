//! How long the operator's reconciles waited for a free slot in each
//! scenario: its own `sandbox_operator_queue_wait_seconds` histogram (the
//! series an admin sees), read before and after the scenario, per
//! controller. A wait means every slot of that controller (`--concurrency`)
//! was busy.

use std::collections::BTreeMap;

use crate::apiserver::{bucket_summary, label};

/// One controller's waits over a scenario.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Wait {
    /// Reconciles started.
    pub starts: f64,
    /// Share of them that waited at most 10 ms.
    pub within_10ms: f64,
    /// Upper bound of the bucket holding the 99th percentile, in ms
    /// (`None`: beyond the largest bucket).
    pub p99_le_ms: Option<f64>,
}

/// Cumulative bucket counts by controller, then by upper bound (`+Inf`
/// as infinity), from the operator's metrics text.
pub type Buckets = BTreeMap<String, Vec<(f64, f64)>>;

/// The queue-wait histogram's buckets in `metrics_text`.
pub fn buckets(metrics_text: &str) -> Buckets {
    let prefix = "sandbox_operator_queue_wait_seconds_bucket{";
    let mut out: Buckets = BTreeMap::new();
    for line in metrics_text.lines().filter(|l| l.starts_with(prefix)) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (controller, le) = (label(labels, "controller"), label(labels, "le"));
        if controller.is_empty() || le.is_empty() {
            continue;
        }
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        let count = value.parse().unwrap_or(0.0);
        out.entry(controller.to_string())
            .or_default()
            .push((le, count));
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Each controller's waits between two readings (controllers that started
/// no reconcile in between are left out).
pub fn between(before: &Buckets, after: &Buckets) -> BTreeMap<String, Wait> {
    let mut out = BTreeMap::new();
    for (controller, buckets) in after {
        let earlier = before.get(controller);
        let delta: Vec<(f64, f64)> = buckets
            .iter()
            .map(|(le, n)| {
                let was = earlier
                    .and_then(|b| b.iter().find(|(l, _)| l == le))
                    .map_or(0.0, |(_, n)| *n);
                (*le, n - was)
            })
            .collect();
        let Some((starts, within_10ms, p99)) = bucket_summary(&delta, 0.01) else {
            continue;
        };
        out.insert(
            controller.clone(),
            Wait {
                starts,
                within_10ms,
                p99_le_ms: p99.map(|le| le * 1000.0),
            },
        );
    }
    out
}

/// The printed block: per scenario and controller, starts, the share that
/// waited at most 10 ms and the p99's bucket bound.
pub fn lines(waits: &[(String, BTreeMap<String, Wait>)]) -> String {
    if waits.iter().all(|(_, w)| w.is_empty()) {
        return String::new();
    }
    let mut out = String::from(
        "reconciles' wait for a free slot (the operator's sandbox_operator_queue_wait_seconds; a wait means all --concurrency slots were busy):\n",
    );
    out += &format!(
        "  {:<18} {:<10} {:>8} {:>12} {:>14}\n",
        "scenario", "controller", "starts", "<= 10 ms", "p99 <= (ms)"
    );
    for (scenario, by_controller) in waits {
        for (controller, w) in by_controller {
            let p99 = w
                .p99_le_ms
                .map_or_else(|| "beyond".into(), |v| format!("{v}"));
            out += &format!(
                "  {:<18} {:<10} {:>8.0} {:>11.1}% {:>14}\n",
                scenario,
                controller,
                w.starts,
                w.within_10ms * 100.0,
                p99
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(claim: &[(&str, u32)], pool: &[(&str, u32)]) -> String {
        let mut out = String::from(
            "# HELP x\nsandbox_operator_queue_wait_seconds_sum{controller=\"claim\"} 1\n",
        );
        for (controller, buckets) in [("claim", claim), ("warmpool", pool)] {
            for (le, n) in buckets {
                out += &format!(
                    "sandbox_operator_queue_wait_seconds_bucket{{controller=\"{controller}\",le=\"{le}\"}} {n}\n"
                );
            }
        }
        out
    }

    #[test]
    fn waits_are_the_difference_of_two_readings_per_controller() {
        let before = buckets(&text(
            &[("0.001", 10), ("0.01", 10), ("0.25", 10), ("+Inf", 10)],
            &[("0.001", 5), ("0.01", 5), ("0.25", 5), ("+Inf", 5)],
        ));
        // 100 claim starts since: 60 within 1 ms, 20 more within 10 ms, 19
        // more within 250 ms, one beyond; the pool started none.
        let after = buckets(&text(
            &[("0.001", 70), ("0.01", 90), ("0.25", 109), ("+Inf", 110)],
            &[("0.001", 5), ("0.01", 5), ("0.25", 5), ("+Inf", 5)],
        ));
        let waits = between(&before, &after);
        assert_eq!(waits.len(), 1, "the pool started nothing: {waits:?}");
        let claim = &waits["claim"];
        assert_eq!(claim.starts, 100.0);
        assert!((claim.within_10ms - 0.8).abs() < 1e-9);
        assert_eq!(claim.p99_le_ms, Some(250.0));
        let printed = lines(&[("overflow-burst".into(), waits)]);
        assert!(
            printed.contains("overflow-burst") && printed.contains("80.0%"),
            "{printed}"
        );
        // All beyond the largest bucket: no bound to give.
        let late = buckets(&text(&[("0.25", 10), ("+Inf", 20)], &[]));
        let early = buckets(&text(&[("0.25", 10), ("+Inf", 10)], &[]));
        assert_eq!(between(&early, &late)["claim"].p99_le_ms, None);
        assert_eq!(lines(&[]), "");
    }
}
