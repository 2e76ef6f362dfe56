//! Issue 7: the metrics a Prometheus server sees.

use std::time::Duration;

use kube::api::Api;
use serde_json::json;

use crate::common::{TestNs, free_port, http_get, wait_for, wait_until_ok};
use crate::fixtures::{agent_pod, claim_of, claim_ready, create, pool, template_of};
use sandbox_operator::api::{SandboxClaim, SandboxWarmPool};

async fn warm_and_cold_claims(ns: &TestNs) {
    let mut pod = agent_pod(500);
    pod["spec"]["containers"][0]["name"] = json!("c");
    create(ns, &template_of("tmpl", pod)).await;
    create(ns, &pool("pool", "tmpl", 1)).await;
    let pools: Api<SandboxWarmPool> = ns.api();
    wait_for(&pools, "pool", Duration::from_secs(30), |p| {
        p.status.as_ref().is_some_and(|s| s.ready_replicas == 1)
    })
    .await;
    let claims: Api<SandboxClaim> = ns.api();
    for (name, pool) in [("warm", "default"), ("cold", "none")] {
        let spec = json!({"sandboxTemplateRef": {"name": "tmpl"}, "warmpool": pool});
        create(ns, &claim_of(name, spec)).await;
        wait_for(&claims, name, Duration::from_secs(30), claim_ready).await;
    }
}

#[tokio::test]
async fn metrics_pass_promtool_and_have_warm_and_cold_latency() {
    let ns = TestNs::new("metrics").await;
    let op = ns.operator(&[]).await;
    warm_and_cold_claims(&ns).await;
    // The operator counts a claim when the API server has answered its Ready
    // write; a watcher can see that Ready a moment earlier. Scrape until
    // both series are there (as Prometheus would on its next scrape).
    let series = |text: &str, launch: &str| -> Option<String> {
        text.lines()
            .find(|l| {
                l.starts_with("sandbox_operator_claim_ready_duration_seconds_count")
                    && l.contains(&format!("launch_type=\"{launch}\""))
            })
            .map(str::to_string)
    };
    let mut text = op.metrics().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let legs_counted = |text: &str| text.contains("sandbox_operator_warm_claim_leg_seconds_count");
    while (["warm", "cold"].iter().any(|l| series(&text, l).is_none()) || !legs_counted(&text))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = op.metrics().await;
    }
    for launch in ["warm", "cold"] {
        let count = series(&text, launch)
            .unwrap_or_else(|| panic!("no {launch} latency series 5 s after Ready in:\n{text}"));
        assert!(count.ends_with(" 1"), "{count}");
    }
    // The API server's answer times, as the operator saw them: the warm
    // claim's steal, its Sandbox create and its Ready write were timed, by
    // verb, resource (no namespace, no name) and status class.
    for (verb, resource) in [
        ("PATCH", "pods"),
        ("POST", "sandboxes"),
        ("PATCH", "sandboxclaims/status"),
    ] {
        let labels = format!("code=\"2xx\",resource=\"{resource}\",verb=\"{verb}\"");
        let count = text
            .lines()
            .find(|l| {
                l.starts_with("sandbox_operator_api_request_duration_seconds_count{")
                    && l.contains(&labels)
            })
            .unwrap_or_else(|| panic!("no API request series {labels} in:\n{text}"));
        let n: f64 = count.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1.0, "{count}");
    }
    assert_queue_series(&text);
    assert_warm_legs(&text);
    // Every resource label is a resource name, maybe with a subresource:
    // lowercase letters, at most one `/`, never a namespace or object name.
    for line in text
        .lines()
        .filter(|l| l.starts_with("sandbox_operator_api_request_duration_seconds"))
    {
        let resource = line
            .split("resource=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no resource label: {line}"));
        assert!(
            !resource.is_empty()
                && resource.chars().all(|c| c.is_ascii_lowercase() || c == '/')
                && resource.matches('/').count() <= 1
                && !line.contains(&ns.name),
            "a resource label that is not a resource name: {line}"
        );
    }
    assert_promtool_clean(&text);
}

#[tokio::test]
async fn prometheus_computes_claim_latency_quantiles_by_launch_type() {
    let ns = TestNs::new("prom").await;
    let op = ns.operator(&[]).await;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("prom-{}", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: sandbox-operator\n    static_configs: [{{targets: ['{}']}}]\n", op.metrics_addr),
    )
    .unwrap();
    let _prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus from Debian's package (tests/controlplane/setup-host.sh)");
    warm_and_cold_claims(&ns).await;
    let query = "histogram_quantile(0.99,sum%20by%20(le,launch_type)(sandbox_operator_claim_ready_duration_seconds_bucket))";
    let url = format!("http://127.0.0.1:{port}/api/v1/query?query={query}");
    let ok = wait_until_ok(Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let Ok((200, body)) = http_get(&url).await else {
                return false;
            };
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let results = v["data"]["result"].as_array().cloned().unwrap_or_default();
            let types: Vec<String> = results
                .iter()
                .filter_map(|r| r["metric"]["launch_type"].as_str().map(String::from))
                .collect();
            types.contains(&"warm".to_string()) && types.contains(&"cold".to_string())
        }
    })
    .await;
    assert!(
        ok,
        "Prometheus never returned p99 latency for both launch types"
    );
    let (_, body) = http_get(&url).await.unwrap();
    println!("p99 claim latency by launch type, from Prometheus: {body}");
    // The dashboard's "warm claim p50 over the operator's Pod patch p50",
    // without the rate window (two claims are too few for one): one finite
    // positive value.
    let ratio = "histogram_quantile(0.5, sum by (le) (sandbox_operator_claim_ready_duration_seconds_bucket{launch_type=\"warm\"})) / histogram_quantile(0.5, sum by (le) (sandbox_operator_api_request_duration_seconds_bucket{verb=\"PATCH\", resource=\"pods\", code=\"2xx\"}))";
    let encoded: String = ratio
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    let (status, body) = http_get(&format!(
        "http://127.0.0.1:{port}/api/v1/query?query={encoded}"
    ))
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let value: Option<f64> = v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok());
    assert!(
        status == 200 && value.is_some_and(|x| x.is_finite() && x > 0.0),
        "warm p50 over API write p50 from Prometheus: {status} {body}"
    );
    println!("warm claim p50 over the operator's Pod patch p50: {value:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each controller's work queue in the exposition: every one ran
/// reconciles (each start timed from when it was due), and its gauges are
/// there.
fn assert_queue_series(text: &str) {
    let value = |prefix: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(prefix))?;
        line.rsplit(' ').next()?.parse().ok()
    };
    for controller in ["claim", "sandbox", "warmpool"] {
        let label = format!("{{controller=\"{controller}\"}}");
        let starts = value(&format!("sandbox_operator_queue_wait_seconds_count{label}"))
            .unwrap_or_else(|| panic!("no queue wait series for {controller} in:\n{text}"));
        assert!(starts >= 1.0, "{controller}: {starts} timed starts");
        for gauge in ["queue_depth", "reconciles_running"] {
            assert!(
                value(&format!("sandbox_operator_{gauge}{label}")).is_some(),
                "no {gauge} series for {controller} in:\n{text}"
            );
        }
    }
}

/// The one warm claim's critical path, leg by leg (the cold claim has
/// none).
fn assert_warm_legs(text: &str) {
    for leg in ["reconcile_start", "round_one", "round_two"] {
        let line = format!("sandbox_operator_warm_claim_leg_seconds_count{{leg=\"{leg}\"}} 1");
        assert!(
            text.lines().any(|l| l == line),
            "no {line:?} (one warm claim) in:\n{text}"
        );
    }
}

/// `promtool check metrics` finds nothing to say about the exposition.
fn assert_promtool_clean(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (tests/controlplane/setup-host.sh)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}
