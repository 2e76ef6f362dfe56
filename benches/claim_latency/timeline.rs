//! The operator's own account of each warm claim: its `timeline` log lines
//! (JSON, one per step, with the milliseconds since the API server admitted
//! the claim), reduced to the median and the 90th percentile of each step
//! (the latter shows which legs the slow claims lose their time in).

use std::collections::BTreeMap;

use crate::stats::percentile;

/// One warm-path step over all claims: milliseconds since admission.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub step: String,
    pub p50_ms: f64,
    pub p90_ms: f64,
}

/// The `timeline` lines of the claims whose names start with `prefix`:
/// step -> claim -> milliseconds since admission (a step's first line per
/// claim counts).
fn per_claim(text: &str, prefix: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut by_step: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["target"] != "timeline" {
            continue;
        }
        let fields = &v["fields"];
        let (Some(claim), Some(step), Some(ms)) = (
            fields["claim"].as_str(),
            fields["step"].as_str(),
            fields["ms"].as_f64(),
        ) else {
            continue;
        };
        if claim.starts_with(prefix) {
            by_step
                .entry(step.to_string())
                .or_default()
                .entry(claim.to_string())
                .or_insert(ms);
        }
    }
    by_step
}

/// Each warm-path step's median and 90th percentile, from the operator's
/// `timeline` log lines (the log's text) of the claims whose names start
/// with `prefix`, in the order of the medians.
pub fn from_text(text: &str, prefix: &str) -> Vec<Step> {
    let mut out: Vec<Step> = per_claim(text, prefix)
        .into_iter()
        .map(|(step, per_claim)| {
            let mut v: Vec<f64> = per_claim.into_values().collect();
            v.sort_by(f64::total_cmp);
            Step {
                step,
                p50_ms: percentile(&v, 50.0),
                p90_ms: percentile(&v, 90.0),
            }
        })
        .collect();
    out.sort_by(|a, b| a.p50_ms.total_cmp(&b.p50_ms));
    out
}

/// How many claims whose names start with `prefix` took a pool Pod (their
/// timeline has `claim: Pod stolen`), Ready or still starting.
pub fn pool_pods_taken(text: &str, prefix: &str) -> usize {
    per_claim(text, prefix)
        .get("claim: Pod stolen")
        .map_or(0, BTreeMap::len)
}

/// Milliseconds since admission at which the operator applied each
/// claim's first watch event (`claim: watch event applied`), by claim.
pub fn first_events(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    per_claim(text, prefix)
        .remove("claim: watch event applied")
        .unwrap_or_default()
}

/// The claim controller's critical path in three legs, each measured
/// claim by claim, then its median and 90th percentile over the claims (so
/// the legs need not add up to the median Ready time).
#[derive(Debug, Clone, PartialEq)]
pub struct Legs {
    /// Claims with all the steps the legs need (warm claims).
    pub claims: usize,
    /// Admission -> the claim's reconcile starts.
    pub start: Leg,
    /// Reconcile start -> the last of round one's writes returned.
    pub round_one: Leg,
    /// Round one's end -> the claim's Ready status written (round two).
    pub round_two: Leg,
}

/// One leg over the claims, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Leg {
    pub p50_ms: f64,
    pub p90_ms: f64,
}

impl Leg {
    fn of(mut v: Vec<f64>) -> Leg {
        v.sort_by(f64::total_cmp);
        Leg {
            p50_ms: percentile(&v, 50.0),
            p90_ms: percentile(&v, 90.0),
        }
    }
}

/// Steps that end round one, when the claim's log has them (the
/// NetworkPolicy is not the claim's own with a per-template policy).
const ROUND_ONE: [&str; 4] = [
    "claim: Pod stolen",
    "claim: Service created",
    "claim: NetworkPolicy created",
    "claim: Sandbox created",
];

/// [`Legs`] from the operator's log text; `None` when no claim has the
/// steps. A claim counts when it has the reconcile start, the steal and the
/// Ready write (a cold claim has no steal).
pub fn legs_from_text(text: &str, prefix: &str) -> Option<Legs> {
    let steps = per_claim(text, prefix);
    let at = |step: &str, claim: &str| steps.get(step).and_then(|c| c.get(claim)).copied();
    let (mut start, mut one, mut two) = (Vec::new(), Vec::new(), Vec::new());
    for claim in steps.get("claim: Pod stolen")?.keys() {
        let (Some(begin), Some(ready)) = (
            at("claim: reconcile starts", claim),
            at("claim: Ready written", claim),
        ) else {
            continue;
        };
        let end = ROUND_ONE
            .iter()
            .filter_map(|step| at(step, claim))
            .fold(f64::MIN, f64::max);
        start.push(begin);
        one.push(end - begin);
        two.push(ready - end);
    }
    if start.is_empty() {
        return None;
    }
    Some(Legs {
        claims: start.len(),
        start: Leg::of(start),
        round_one: Leg::of(one),
        round_two: Leg::of(two),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90_per_step_in_the_order_of_the_medians() {
        let line = |claim: &str, step: &str, ms: f64| {
            format!(
                r#"{{"target":"timeline","fields":{{"claim":"{claim}","step":"{step}","ms":{ms}}}}}"#
            )
        };
        let text = [
            line("ws-0", "claim Ready written", 30.0),
            line("ws-0", "Pod stolen", 10.0),
            line("ws-1", "Pod stolen", 12.0),
            line("ws-1", "claim Ready written", 34.0),
            line("ws-2", "Pod stolen", 50.0),
            line("wb-0", "Pod stolen", 900.0),
            "not json".to_string(),
        ]
        .join("\n");
        let steps = from_text(&text, "ws-");
        let step = |step: &str, p50_ms: f64, p90_ms: f64| Step {
            step: step.to_string(),
            p50_ms,
            p90_ms,
        };
        assert_eq!(
            steps,
            vec![
                step("Pod stolen", 12.0, 50.0),
                step("claim Ready written", 30.0, 34.0)
            ]
        );
    }

    #[test]
    fn pool_pods_taken_counts_each_claim_with_a_steal_once() {
        let line = |claim: &str, step: &str| {
            format!(
                r#"{{"target":"timeline","fields":{{"claim":"{claim}","step":"claim: {step}","ms":1.0}}}}"#
            )
        };
        let text = [
            line("po-0", "Pod stolen"),
            line("po-0", "Pod stolen"),
            line("po-1", "Sandbox created"),
            line("po-2", "Pod stolen"),
            line("ob-0", "Pod stolen"),
        ]
        .join("\n");
        assert_eq!(pool_pods_taken(&text, "po-"), 2);
        assert_eq!(pool_pods_taken(&text, "wb-"), 0);
    }

    #[test]
    fn legs_are_measured_claim_by_claim_and_skip_claims_without_a_steal() {
        let line = |claim: &str, step: &str, ms: f64| {
            format!(
                r#"{{"target":"timeline","fields":{{"claim":"{claim}","step":"claim: {step}","ms":{ms}}}}}"#
            )
        };
        let mut lines = Vec::new();
        // Round one ends with its last write: the Sandbox for ws-0, the
        // steal for ws-1 (no NetworkPolicy step: a per-template policy).
        for (claim, start, stolen, sandbox, service, ready) in [
            ("ws-0", 2.0, 10.0, 14.0, 11.0, 20.0),
            ("ws-1", 4.0, 16.0, 12.0, 13.0, 22.0),
        ] {
            lines.push(line(claim, "reconcile starts", start));
            lines.push(line(claim, "Pod stolen", stolen));
            lines.push(line(claim, "Sandbox created", sandbox));
            lines.push(line(claim, "Service created", service));
            lines.push(line(claim, "Ready written", ready));
        }
        lines.push(line("ws-0", "NetworkPolicy created", 13.0));
        // A cold claim: no steal, not counted.
        lines.push(line("ws-2", "reconcile starts", 3.0));
        lines.push(line("ws-2", "Ready written", 2000.0));
        let legs = legs_from_text(&lines.join("\n"), "ws-").unwrap();
        // Per claim: start 2 / 4, round one 12 / 12, round two 6 / 6.
        assert_eq!(legs.claims, 2);
        assert_eq!(legs.round_one.p50_ms, 12.0);
        assert_eq!(legs.round_two.p50_ms, 6.0);
        assert!((2.0..=4.0).contains(&legs.start.p50_ms));
        assert_eq!(legs.start.p90_ms, 4.0);
        assert_eq!(legs_from_text("", "ws-"), None);
    }
}
