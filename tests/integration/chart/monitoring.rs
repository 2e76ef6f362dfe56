//! The chart's monitoring: alert rules pass `promtool` (check and unit
//! tests), and every metric the dashboard and the alerts query is one the
//! operator exports (read from `src/metrics.rs`), so no panel or alert can
//! silently watch a series that does not exist.

use std::collections::BTreeSet;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use super::helm::{chart_dir, promtool, run, succeed, text};
use crate::common::repo;

/// The metric names the operator registers, read from `src/metrics.rs`
/// and its definitions (`src/metrics/define.rs`)
/// (`histogram("..."`, `counter("..."`, `gauge("..."`, `name("..."`), with
/// the `_bucket`/`_sum`/`_count` series of histograms.
fn exported_series() -> BTreeSet<String> {
    let source = crate::chart::metrics_source();
    let mut names = BTreeSet::new();
    for constructor in ["histogram(", "counter(", "gauge(", "name("] {
        let mut rest = source.as_str();
        while let Some(at) = rest.find(constructor) {
            rest = &rest[at + constructor.len()..];
            let Some(quoted) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            let short: String = quoted.chars().take_while(|c| *c != '"').collect();
            if short.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !short.is_empty() {
                let name = format!("sandbox_operator_{short}");
                if constructor == "histogram(" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                names.insert(name);
            }
        }
    }
    // The parse above must see every metric the design lists.
    for expected in [
        "claim_ready_duration_seconds_bucket",
        "claims_total",
        "steal_attempts_total",
        "steal_conflicts_total",
        "pool_exhausted_total",
        "pool_desired_replicas",
        "pool_ready_replicas",
        "pool_idle_replicas",
        "pool_replenish_duration_seconds_bucket",
        "reconcile_total",
        "reconcile_errors_total",
        "reconcile_duration_seconds_bucket",
        "admission_requests_total",
        "admission_duration_seconds_bucket",
        "webhook_certificate_expiry_timestamp_seconds",
        "leader",
        "build_info",
    ] {
        assert!(
            names.contains(&format!("sandbox_operator_{expected}")),
            "src/metrics.rs does not register sandbox_operator_{expected}; found {names:?}"
        );
    }
    names
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, keywords, label names, durations, numbers or dashboard
/// variables.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    /// PromQL words that are not metrics, besides the grouping ones below.
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Strings, comments, label matchers, ranges and variables go first.
    let mut cleaned = String::new();
    let mut chars = expr.chars().peekable();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let quote = c;
                while let Some(d) = chars.next() {
                    if d == '\\' && quote != '`' {
                        chars.next();
                    } else if d == quote {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '#' if depth_brace == 0 => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            '$' => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_alphanumeric() || *d == '_')
                {
                    chars.next();
                }
                cleaned.push(' ');
            }
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => cleaned.push(c),
        }
    }
    // Tokens.
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = cleaned.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut word = String::new();
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_' || *d == ':')
            {
                word.push(chars.next().unwrap());
            }
            tokens.push(word);
        } else if c.is_ascii_digit() || c == '.' {
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
            {
                chars.next();
            }
            tokens.push("0".into());
        } else if c.is_whitespace() {
            chars.next();
        } else {
            tokens.push(chars.next().unwrap().to_string());
        }
    }
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let next = tokens.get(i + 1).map(String::as_str);
        if GROUPING.contains(&token.as_str()) && next == Some("(") {
            // Skip the label list of a grouping clause.
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
        } else if token.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && !matches!(next, Some("(" | "by" | "without"))
            && !KEYWORDS.contains(&token.as_str())
            && !GROUPING.contains(&token.as_str())
        {
            names.insert(token.clone());
        }
        i += 1;
    }
    names
}

/// Every PromQL query of the dashboard: panel targets and the metric of each
/// `label_values(metric, label)` variable.
fn dashboard_queries() -> Vec<String> {
    let dashboard: Json = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("files/dashboard.json")).unwrap(),
    )
    .expect("files/dashboard.json is valid JSON");
    let mut queries = Vec::new();
    fn walk(panel: &Json, out: &mut Vec<String>) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(
                target["expr"]
                    .as_str()
                    .expect("every target has an expr")
                    .to_string(),
            );
        }
        for inner in panel["panels"].as_array().into_iter().flatten() {
            walk(inner, out);
        }
    }
    for panel in dashboard["panels"].as_array().expect("panels") {
        walk(panel, &mut queries);
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(definition) = variable["definition"].as_str() {
            let inner = definition
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .expect("label_values(metric, label)");
            let (metric, _label) = inner.split_once(',').expect("label_values(metric, label)");
            queries.push(metric.trim().to_string());
        }
    }
    queries
}

/// `(alert name, expr)` of every rule in a Prometheus rule file.
pub(super) fn alert_rules(file: &Yaml) -> Vec<(String, String)> {
    let mut rules = Vec::new();
    for group in file["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            rules.push((
                rule["alert"]
                    .as_str()
                    .expect("alerting rules only")
                    .to_string(),
                rule["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    rules
}

pub(super) fn alerts_file() -> Yaml {
    serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("files/alerts.yaml")).unwrap())
        .expect("files/alerts.yaml parses")
}

/// `promtool check rules` on queries turned into recording rules (dashboard
/// variables replaced by plain values), so every query is known to parse.
fn assert_queries_parse(what: &str, queries: &[String]) {
    let rules: Vec<Json> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let expr = q
                .replace("$__rate_interval", "5m")
                .replace("$template", ".*")
                .replace("$pool", ".*");
            serde_json::json!({"record": format!("query:{i}"), "expr": expr})
        })
        .collect();
    let file = repo().join(format!("target/test-logs/{what}-queries.rules.yaml"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        serde_yaml::to_string(&serde_json::json!({"groups": [{"name": what, "rules": rules}]}))
            .unwrap(),
    )
    .unwrap();
    succeed(promtool().args(["check", "rules"]).arg(&file));
}

#[tokio::test]
async fn alert_rules_pass_promtool_check_and_unit_tests() {
    let chart = chart_dir();
    let out = run(promtool()
        .args(["check", "rules"])
        .arg(chart.join("files/alerts.yaml")));
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );
    let out = run(promtool()
        .args(["test", "rules"])
        .arg(chart.join("ci/alerts-test.yaml")));
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
}

#[tokio::test]
async fn dashboard_and_alerts_query_only_metrics_the_operator_exports() {
    let exported = exported_series();

    let queries = dashboard_queries();
    assert!(
        queries.len() >= 20,
        "only {} dashboard queries",
        queries.len()
    );
    let mut used = BTreeSet::new();
    for query in &queries {
        let names = metrics_in(query);
        assert!(!names.is_empty(), "no metric found in {query:?}");
        for name in names {
            assert!(
                exported.contains(&name),
                "dashboard query uses {name}, which the operator does not export: {query}"
            );
            used.insert(name);
        }
    }
    // The panels the design asks for.
    for needed in [
        "claim_ready_duration_seconds_bucket",
        "claims_total",
        "pool_desired_replicas",
        "pool_ready_replicas",
        "pool_idle_replicas",
        "steal_attempts_total",
        "steal_conflicts_total",
        "admission_requests_total",
        "admission_duration_seconds_bucket",
        "reconcile_errors_total",
        "webhook_certificate_expiry_timestamp_seconds",
        "api_request_duration_seconds_bucket",
        "queue_wait_seconds_bucket",
        "queue_depth",
        "reconciles_running",
        "warm_claim_leg_seconds_bucket",
    ] {
        assert!(
            used.contains(&format!("sandbox_operator_{needed}")),
            "the dashboard has no panel on sandbox_operator_{needed}"
        );
    }
    assert_queries_parse("dashboard", &queries);

    // Alerts: the operator's metrics, plus the API server's own webhook
    // metrics (the only view of calls that never reached the operator).
    let rules = alert_rules(&alerts_file());
    for (alert, expr) in &rules {
        for name in metrics_in(expr) {
            assert!(
                exported.contains(&name) || name.starts_with("apiserver_admission_webhook_"),
                "alert {alert} uses {name}, which neither the operator nor the API server exports"
            );
        }
    }

    // The extractor itself.
    assert_eq!(
        metrics_in(
            "sum by (le, pool) (rate(a_total{x=\"y\"}[5m])) / on (pool) group_left () b > 0 # c\n and vector(1) or max(c) without (d)"
        ),
        ["a_total", "b", "c"].map(String::from).into()
    );
}

/// Every panel sits on Grafana's 24-column grid: whole-number positions and
/// sizes (a threshold block once landed in three stat panels' `gridPos.h`,
/// which Grafana cannot lay out), within the width, and no two panels of
/// one layout overlap: the top level, and each collapsed row's own panels
/// (kept at their places for when the row opens, so they are compared only
/// with each other).
#[test]
fn dashboard_panels_sit_on_the_grid_without_overlapping() {
    let dashboard: Json = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("files/dashboard.json")).unwrap(),
    )
    .expect("files/dashboard.json is valid JSON");
    let top = dashboard["panels"].as_array().expect("panels");
    let mut layouts = vec![top.iter().collect::<Vec<_>>()];
    for row in top {
        let inner: Vec<&Json> = row["panels"].as_array().into_iter().flatten().collect();
        if !inner.is_empty() {
            layouts.push(inner);
        }
    }
    assert!(layouts[0].len() >= 20, "only {} panels", layouts[0].len());
    for layout in layouts {
        assert_apart(&layout.into_iter().map(grid_box).collect::<Vec<_>>());
    }
}

/// A panel's title and place (x, y, w, h), checked to be on the grid.
fn grid_box(panel: &Json) -> (String, u64, u64, u64, u64) {
    let title = panel["title"].as_str().unwrap_or("?").to_string();
    let at = |key: &str| {
        panel["gridPos"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?}: gridPos.{key} is not a whole number"))
    };
    let (h, w, x, y) = (at("h"), at("w"), at("x"), at("y"));
    assert!(
        h >= 1 && w >= 1 && x + w <= 24,
        "panel {title:?} is off the grid: {h}x{w} at ({x}, {y})"
    );
    (title, x, y, w, h)
}

/// No two of `boxes` overlap.
fn assert_apart(boxes: &[(String, u64, u64, u64, u64)]) {
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let apart =
                a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1 || a.2 + a.4 <= b.2 || b.2 + b.4 <= a.2;
            assert!(apart, "panels {:?} and {:?} overlap", a.0, b.0);
        }
    }
}
