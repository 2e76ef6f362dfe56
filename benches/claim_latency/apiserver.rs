//! What the API server itself counted: writes by resource and verb
//! (`apiserver_request_total`), the timing of calls to our webhooks
//! (`apiserver_admission_webhook_admission_duration_seconds`), and the Events
//! the operator published. Writes per claim come from these counters, never
//! from the operator's own view of what it did. One figure is the
//! operator's own: the watch events it decoded and the reconciles they
//! woke (`watch_events`, `reconciles`), which only it can count.

use std::collections::BTreeMap;

use kube::Client;
use kube::api::Api;

/// The API server's `/metrics` text.
pub async fn metrics(client: &Client) -> String {
    client
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .expect("scrape the API server's /metrics")
}

/// Write requests so far, by `"<resource>[/<subresource>] <VERB>"`, all
/// response codes and clients together.
pub fn writes(metrics_text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in metrics_text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let verb = label(labels, "verb");
        if !matches!(verb, "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY") {
            continue;
        }
        let resource = match label(labels, "subresource") {
            "" => label(labels, "resource").to_string(),
            sub => format!("{}/{sub}", label(labels, "resource")),
        };
        *out.entry(format!("{resource} {verb}")).or_insert(0.0) +=
            value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Watch events the operator applied so far, by `"<cache> <event>"`, from
/// its own `/metrics` text (`sandbox_operator_watch_events_total`).
pub fn watch_events(operator_metrics: &str) -> BTreeMap<String, f64> {
    operator_counter(operator_metrics, "watch_events_total", &["cache", "event"])
}

/// Reconciles the operator ran so far, by controller
/// (`sandbox_operator_reconcile_total`).
pub fn reconciles(operator_metrics: &str) -> BTreeMap<String, f64> {
    operator_counter(operator_metrics, "reconcile_total", &["controller"])
}

/// The operator's counter `sandbox_operator_<name>`, by the values of
/// `keys` joined with spaces.
fn operator_counter(text: &str, name: &str, keys: &[&str]) -> BTreeMap<String, f64> {
    let prefix = format!("sandbox_operator_{name}{{");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let key: Vec<&str> = keys.iter().map(|k| label(labels, k)).collect();
        *out.entry(key.join(" ")).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Per-claim deltas of two `watch_events` readings (zero deltas left out).
pub fn per_claim(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    claims: usize,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, delta)| *delta > 0.0)
        .map(|(k, delta)| (k, delta / claims.max(1) as f64))
        .collect()
}

/// The value of label `key` in a series' `{...}` text (empty when absent).
pub fn label<'a>(labels: &'a str, key: &str) -> &'a str {
    labels
        .split(&format!("{key}=\""))
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
}

/// Per-claim write counts between two scrapes: `(after - before) / claims`,
/// with `own_pod_patches` (the bench's floor samples, which the API server
/// counts as `pods PATCH` like the operator's steals) taken out first.
pub fn writes_per_claim(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    own_pod_patches: f64,
    claims: usize,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (key, value) in after {
        let mut delta = value - before.get(key).copied().unwrap_or(0.0);
        if key == "pods PATCH" {
            delta -= own_pod_patches;
        }
        if delta > 0.0 {
            out.insert(key.clone(), delta / claims.max(1) as f64);
        }
    }
    out
}

/// Writes the operator makes for a claim: not the client's own claim
/// create, KWOK's simulated kubelet (pod status, its Events), the
/// scheduler's bindings and Events, endpoints or lease heartbeats. The
/// operator's own Events are counted separately (by reporting controller).
pub fn is_operator_write(key: &str) -> bool {
    let resource = key.split(' ').next().unwrap_or("");
    matches!(
        resource,
        "sandboxclaims/status"
            | "sandboxes"
            | "sandboxes/status"
            | "sandboxwarmpools/status"
            | "pods"
            | "services"
            | "networkpolicies"
            | "persistentvolumeclaims"
    )
}

/// Events published by the operator itself in the namespace (a series counts each occurrence).
pub async fn operator_events(client: &Client, ns: &str) -> usize {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|e| e.reporting_controller.as_deref() == Some("sandbox-operator"))
                .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1) as usize))
                .sum()
        })
        .unwrap_or(0)
}

/// Cumulative bucket counts (by upper bound in seconds) of the API server's
/// own timing of calls to our webhooks (mutate + validate, CREATE).
pub fn webhook_buckets(metrics_text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in metrics_text.lines().filter(|l| {
        l.starts_with("apiserver_admission_webhook_admission_duration_seconds_bucket{")
            && l.contains(".sandboxes.agents.x-k8s.io\"")
    }) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let le = label(labels, "le");
        if le.is_empty() {
            continue;
        }
        *out.entry(le.to_string()).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// What a Prometheus histogram counted between two readings, from its
/// cumulative bucket deltas `(upper bound, count)` in ascending bounds (the
/// last one `+Inf`): the observations, the share at most `within`, and the
/// upper bound of the bucket holding the 99th percentile (`None` when that
/// is `+Inf`). `None` when nothing was observed.
pub fn bucket_summary(delta: &[(f64, f64)], within: f64) -> Option<(f64, f64, Option<f64>)> {
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    if total <= 0.0 {
        return None;
    }
    let at_most = delta
        .iter()
        .take_while(|(le, _)| *le <= within + 1e-12)
        .last()
        .map_or(0.0, |(_, n)| *n);
    let p99 = delta
        .iter()
        .find(|(_, n)| *n >= 0.99 * total)
        .map(|(le, _)| *le)
        .filter(|le| le.is_finite());
    Some((total, at_most / total, p99))
}

/// (share of calls within 5 ms, upper bound of the bucket holding p99) of
/// the webhook calls between two scrapes.
pub fn webhook_latency(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> (f64, String) {
    let mut delta: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(le, n)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, n - before.get(le).copied().unwrap_or(0.0)))
        })
        .collect();
    delta.sort_by(|a, b| a.0.total_cmp(&b.0));
    match bucket_summary(&delta, 0.005) {
        None => (0.0, "n/a".into()),
        Some((_, within, p99)) => (
            within,
            p99.map_or_else(
                || "> largest bucket".into(),
                |le| format!("{} ms", le * 1000.0),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="PATCH",version="v1"} 130
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="PATCH",version="v1"} 2
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 999
"#;

    #[test]
    fn writes_are_summed_over_codes_and_split_by_subresource() {
        let w = writes(SCRAPE);
        assert_eq!(w["pods PATCH"], 132.0);
        assert_eq!(w["pods/binding POST"], 10.0);
        assert!(!w.contains_key("pods GET"));
    }

    #[test]
    fn the_bench_own_floor_patches_are_not_counted_as_the_operator_s() {
        let before = BTreeMap::from([("pods PATCH".to_string(), 100.0)]);
        let after = BTreeMap::from([
            ("pods PATCH".to_string(), 420.0),
            ("pods POST".to_string(), 20.0),
        ]);
        // 10 claims: 20 steals, 300 floor samples by the bench.
        let per_claim = writes_per_claim(&before, &after, 300.0, 10);
        assert_eq!(per_claim["pods PATCH"], 2.0);
        assert_eq!(per_claim["pods POST"], 2.0);
    }

    #[test]
    fn watch_events_per_claim_by_cache_and_event() {
        let scrape = |pods: u32, claims: u32| {
            format!(
                "# TYPE sandbox_operator_watch_events_total counter\n\
                 sandbox_operator_watch_events_total{{cache=\"pods\",event=\"applied\"}} {pods}\n\
                 sandbox_operator_watch_events_total{{cache=\"claims\",event=\"applied\"}} {claims}\n\
                 sandbox_operator_watch_events_total{{cache=\"claims\",event=\"listed\"}} 3\n\
                 sandbox_operator_reconcile_total{{controller=\"claim\"}} 77\n"
            )
        };
        let before = watch_events(&scrape(100, 10));
        assert_eq!(before["pods applied"], 100.0);
        assert_eq!(before.len(), 3, "only the watch event counter: {before:?}");
        let per = per_claim(&before, &watch_events(&scrape(160, 30)), 10);
        assert_eq!(per["pods applied"], 6.0);
        assert_eq!(per["claims applied"], 2.0);
        // Unchanged counters are left out.
        assert!(!per.contains_key("claims listed"));
        assert_eq!(reconciles(&scrape(1, 1))["claim"], 77.0);
    }

    #[test]
    fn operator_writes_exclude_other_clients() {
        assert!(is_operator_write("pods PATCH"));
        assert!(is_operator_write("sandboxclaims/status PATCH"));
        assert!(!is_operator_write("pods/binding POST"));
        assert!(!is_operator_write("pods/status PATCH"));
        assert!(!is_operator_write("sandboxclaims POST"));
    }

    #[test]
    fn webhook_share_within_5ms_and_p99_bucket() {
        let before = BTreeMap::from([
            ("0.005".into(), 0.0),
            ("0.025".into(), 0.0),
            ("+Inf".into(), 0.0),
        ]);
        let after = BTreeMap::from([
            ("0.005".into(), 90.0),
            ("0.025".into(), 100.0),
            ("+Inf".into(), 100.0),
        ]);
        let (within, p99) = webhook_latency(&before, &after);
        assert_eq!(within, 0.9);
        assert_eq!(p99, "25 ms");
    }
}
