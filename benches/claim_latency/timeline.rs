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

/// Each warm-path step's median and 90th percentile, from the operator's
/// `timeline` log lines of the claims whose names start with `prefix`, in
/// the order of the medians.
pub fn breakdown(log: &std::path::Path, prefix: &str) -> Vec<Step> {
    from_text(&std::fs::read_to_string(log).unwrap_or_default(), prefix)
}

/// [`breakdown`] of a log's text.
pub fn from_text(text: &str, prefix: &str) -> Vec<Step> {
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
    let mut out: Vec<Step> = by_step
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
}
