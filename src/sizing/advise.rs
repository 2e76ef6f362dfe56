//! `sandbox-operator pool advise`: plan a pool size before traffic arrives.
//!
//! Parses the admin's figures (`--rate 120/min --refill 8s --target 0.99`),
//! and prints the recommended size with a small size -> predicted hit ratio
//! table. Every bad input is an [`AdviseError`] naming the flag and the rule.
//! A load that even [`SEARCH_LIMIT`] Pods cannot serve at the target gets no
//! recommendation: the output says that more would be needed and what the
//! limit reaches.

use std::fmt::Write as _;

use super::model::{hit_ratio, size_for};
use super::recommend::SEARCH_LIMIT;

/// A flag value that breaks its rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--{flag} {value:?}: {rule}")]
pub struct AdviseError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// The value given.
    pub value: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

fn bad(flag: &'static str, value: &str, rule: &'static str) -> AdviseError {
    AdviseError {
        flag,
        value: value.to_string(),
        rule,
    }
}

const RATE_RULE: &str =
    "must be COUNT/UNIT with a positive COUNT and UNIT one of s, min, h (e.g. 120/min)";
const REFILL_RULE: &str =
    "must be a positive duration with unit ms, s, m or h (e.g. 8s, 1500ms, 2m)";
const TARGET_RULE: &str = "must be a number strictly between 0 and 1 (e.g. 0.99)";
const RATE_RANGE_RULE: &str = "must be finite and above 0 in claims per second (this one \
                               overflows or rounds to 0)";
const REFILL_RANGE_RULE: &str = "must be finite and above 0 in seconds (this one overflows or \
                                 rounds to 0)";
const LOAD_RULE: &str = "times --refill must give an offered load (rate x refill) above 0 and at \
                         most 1000000 Erlang, ten times the largest pool searched (100000 Pods)";

/// The largest offered load `pool advise` takes: ten times
/// [`SEARCH_LIMIT`], beyond which no pool is recommended anyway (each row
/// of its table costs O(sqrt(load)), see [`super::model`]): before (found by review)
/// `--rate 1e9/s --refill 8s` ran for minutes, `--rate 1e308/s` printed
/// an infinite load, and `--rate 1e-323/h` (0 claims per second) a pool
/// of 0, each with exit code 0.
pub const MAX_LOAD: f64 = 10.0 * SEARCH_LIMIT as f64;

fn positive_number(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
}

/// Parses a claim rate such as `120/min` into claims per second.
pub fn parse_rate(value: &str) -> Result<f64, AdviseError> {
    let err = || bad("rate", value, RATE_RULE);
    let (count, unit) = value.split_once('/').ok_or_else(err)?;
    let count = positive_number(count).ok_or_else(err)?;
    let seconds = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return Err(err()),
    };
    Some(count / seconds)
        .filter(|rate| rate.is_finite() && *rate > 0.0)
        .ok_or_else(|| bad("rate", value, RATE_RANGE_RULE))
}

/// Parses a refill time such as `8s` into seconds.
pub fn parse_refill(value: &str) -> Result<f64, AdviseError> {
    let err = || bad("refill", value, REFILL_RULE);
    let text = value.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(err)?;
    let (number, unit) = text.split_at(split);
    let number = positive_number(number).ok_or_else(err)?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    Some(number * scale)
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
        .ok_or_else(|| bad("refill", value, REFILL_RANGE_RULE))
}

/// Parses the three flags of `pool advise` and checks the offered load
/// they give (rate x refill: above 0 and at most [`MAX_LOAD`]); returns
/// (claims per second, refill seconds, target).
pub fn parse_all(rate: &str, refill: &str, target: &str) -> Result<(f64, f64, f64), AdviseError> {
    let (rate_text, rate) = (rate, parse_rate(rate)?);
    let refill = parse_refill(refill)?;
    let target = parse_target(target)?;
    let load = rate * refill;
    if !(load > 0.0 && load <= MAX_LOAD) {
        return Err(bad("rate", rate_text, LOAD_RULE));
    }
    Ok((rate, refill, target))
}

/// Parses a target hit ratio in `(0, 1)`.
pub fn parse_target(value: &str) -> Result<f64, AdviseError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|t| *t > 0.0 && *t < 1.0)
        .ok_or_else(|| bad("target", value, TARGET_RULE))
}

/// The advice for one rate, refill time and target.
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    /// Offered load in Erlang (rate x refill).
    pub load: f64,
    /// Recommended pool size: the smallest that meets the target, or
    /// [`SEARCH_LIMIT`] when even that many Pods miss it (see
    /// `meets_target`).
    pub recommended: u32,
    /// Whether `recommended` meets the target; `false` when more than
    /// [`SEARCH_LIMIT`] Pods would be needed.
    pub meets_target: bool,
    /// (size, predicted hit ratio) rows around the recommendation.
    pub table: Vec<(u32, f64)>,
}

/// Computes the advice. Pure.
pub fn advise(rate_per_second: f64, refill_seconds: f64, target: f64) -> Advice {
    let load = rate_per_second * refill_seconds;
    let found = size_for(load, target, SEARCH_LIMIT);
    let recommended = found.unwrap_or(SEARCH_LIMIT);
    let rule_of_thumb = load.ceil() as u32;
    let mut sizes = vec![
        rule_of_thumb / 2,
        rule_of_thumb,
        recommended / 2,
        recommended.saturating_sub(2),
        recommended.saturating_sub(1),
        recommended,
    ];
    if found.is_some() {
        // Beyond the search limit the neighbours would only repeat its miss.
        sizes.extend([recommended + 1, recommended + 2]);
    }
    sizes.sort_unstable();
    sizes.dedup();
    Advice {
        load,
        recommended,
        meets_target: found.is_some(),
        table: sizes.into_iter().map(|n| (n, hit_ratio(n, load))).collect(),
    }
}

/// The text `pool advise` prints.
pub fn render(advice: &Advice, rate_per_second: f64, refill_seconds: f64, target: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "claim rate {:.2}/min x refill {:.2}s = offered load {:.2} Erlang",
        rate_per_second * 60.0,
        refill_seconds,
        advice.load
    );
    let reached = hit_ratio(advice.recommended, advice.load);
    if advice.meets_target {
        let _ = writeln!(
            out,
            "recommended replicas: {} (predicted hit ratio {reached:.4} >= target {target})",
            advice.recommended
        );
    } else {
        let _ = writeln!(
            out,
            "recommended replicas: none, more than {SEARCH_LIMIT} would be needed \
             (predicted hit ratio at {SEARCH_LIMIT}: {reached:.4} < target {target})"
        );
    }
    let _ = writeln!(
        out,
        "\n{:>8}  {:>18}  note",
        "replicas", "predicted hit ratio"
    );
    let rule_of_thumb = advice.load.ceil() as u32;
    for (n, hit) in &advice.table {
        let note = if *n == advice.recommended && advice.meets_target {
            "recommended"
        } else if *n == advice.recommended {
            "search limit"
        } else if *n == rule_of_thumb {
            "rate x refill"
        } else {
            ""
        };
        let _ = writeln!(out, "{n:>8}  {hit:>18.4}  {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_durations_and_targets() {
        assert_eq!(parse_rate("120/min").unwrap(), 2.0);
        assert_eq!(parse_rate("3/s").unwrap(), 3.0);
        assert_eq!(parse_rate("7200/h").unwrap(), 2.0);
        assert_eq!(parse_refill("8s").unwrap(), 8.0);
        assert_eq!(parse_refill("1500ms").unwrap(), 1.5);
        assert_eq!(parse_refill("2m").unwrap(), 120.0);
        assert_eq!(parse_target("0.99").unwrap(), 0.99);
    }

    #[test]
    fn bad_input_names_the_flag_and_the_rule() {
        for (result, flag) in [
            (parse_rate("120").unwrap_err(), "rate"),
            (parse_rate("-1/min").unwrap_err(), "rate"),
            (parse_rate("5/week").unwrap_err(), "rate"),
            (parse_refill("8").unwrap_err(), "refill"),
            (parse_refill("0s").unwrap_err(), "refill"),
            (parse_refill("8 parsecs").unwrap_err(), "refill"),
            (parse_target("1").unwrap_err(), "target"),
            (parse_target("high").unwrap_err(), "target"),
        ] {
            assert_eq!(result.flag, flag);
            let text = result.to_string();
            assert!(text.starts_with(&format!("--{flag} ")), "{text}");
            assert!(text.contains("must be"), "{text}");
        }
    }

    #[test]
    fn rates_and_refills_out_of_range_are_refused() {
        let tiny_refill = format!("0.{}1ms", "0".repeat(322));
        let huge_refill = format!("1{}h", "0".repeat(306));
        for (result, flag) in [
            (parse_rate("1e-323/h").unwrap_err(), "rate"),
            (parse_refill(&tiny_refill).unwrap_err(), "refill"),
            (parse_refill(&huge_refill).unwrap_err(), "refill"),
        ] {
            assert_eq!(result.flag, flag);
            let text = result.to_string();
            assert!(text.starts_with(&format!("--{flag} ")), "{text}");
            assert!(text.contains("must be finite and above 0"), "{text}");
        }
        for (rate, refill) in [("1e308/s", "8s"), ("1e9/s", "8s"), ("1e-320/s", "0.001ms")] {
            let error = parse_all(rate, refill, "0.99").unwrap_err();
            assert_eq!(error.flag, "rate");
            let text = error.to_string();
            assert!(
                text.starts_with(&format!(
                    "--rate {rate:?}: times --refill must give an offered load"
                )),
                "{text}"
            );
        }
        assert_eq!(parse_all("120/min", "8s", "0.99"), Ok((2.0, 8.0, 0.99)));
        // The largest load taken still gets its answer.
        assert_eq!(
            parse_all("125000/s", "8s", "0.99"),
            Ok((125_000.0, 8.0, 0.99))
        );
        assert!(parse_all("125001/s", "8s", "0.99").is_err());
    }

    #[test]
    fn advice_for_the_issue_example() {
        // 120/min x 8 s = 16 Erlang; 0.99 needs 27
        // (P(Poisson(16) < 26) = 0.9869, P(Poisson(16) < 27) = 0.9925).
        let a = advise(2.0, 8.0, 0.99);
        assert_eq!(a.load, 16.0);
        assert_eq!(a.recommended, 27);
        assert!(a.table.iter().any(|(n, _)| *n == 16));
        let at = |n: u32| a.table.iter().find(|(k, _)| *k == n).unwrap().1;
        assert!(at(27) >= 0.99 && at(26) < 0.99);
        // The rule of thumb (rate x refill) serves fewer than half warm.
        assert!(at(16) < 0.5);
        let text = render(&a, 2.0, 8.0, 0.99);
        assert!(text.contains("recommended replicas: 27"), "{text}");
    }

    #[test]
    fn a_load_beyond_the_search_limit_gets_no_recommendation() {
        // 100/s x 30 min = 180,000 Erlang: with 100,000 Pods nearly every
        // claim has more than 100,000 others within its refill time.
        let a = advise(100.0, 1800.0, 0.99);
        let text = render(&a, 100.0, 1800.0, 0.99);
        let headline = text.lines().nth(1).unwrap();
        assert_eq!(
            headline,
            "recommended replicas: none, more than 100000 would be needed \
             (predicted hit ratio at 100000: 0.0000 < target 0.99)"
        );
        assert!(!text.contains(">= target"), "{text}");
        assert!(!text.contains("recommended\n"), "{text}");
        assert!(
            text.contains("  100000              0.0000  search limit\n"),
            "{text}"
        );
        assert!(!a.meets_target);
        assert!(
            a.table
                .iter()
                .all(|(n, _)| *n <= SEARCH_LIMIT || *n == 180_000)
        );
    }
}
