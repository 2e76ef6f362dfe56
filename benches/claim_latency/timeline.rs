//! The operator's own account of each warm claim: its `timeline` log lines
//! (JSON, one per step, with the milliseconds since the API server admitted
//! the claim), reduced to the median of each step.

use std::collections::BTreeMap;

use crate::stats::percentile;

/// Median milliseconds since admission of each warm-path step, from the
/// operator's `timeline` log lines of the claims whose names start with
/// `prefix`, in the order of the steps.
pub fn breakdown(log: &std::path::Path, prefix: &str) -> Vec<(String, f64)> {
    from_text(&std::fs::read_to_string(log).unwrap_or_default(), prefix)
}

/// [`breakdown`] of a log's text.
pub fn from_text(text: &str, prefix: &str) -> Vec<(String, f64)> {
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
    let mut out: Vec<(String, f64)> = by_step
        .into_iter()
        .map(|(step, per_claim)| {
            let mut v: Vec<f64> = per_claim.into_values().collect();
            v.sort_by(f64::total_cmp);
            (step, percentile(&v, 50.0))
        })
        .collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_per_step_in_the_order_of_the_steps() {
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
        assert_eq!(
            steps,
            vec![
                ("Pod stolen".to_string(), 12.0),
                ("claim Ready written".to_string(), 30.0)
            ]
        );
    }
}
