//! End-to-end claim latency: warm path vs cold path, on the real local
//! control plane with KWOK simulating a cold start, and the operator running
//! as in production (its own process, webhook registered by URL).
//!
//! Measures claim create -> Ready from this client's clock through a watch,
//! for four scenarios (warm-sequential, cold-sequential, warm-burst,
//! overflow-burst), counts API writes per warm claim from the API server's
//! own `apiserver_request_total`, checks that no Pod ever served two claims,
//! prints a table and writes `target/bench/claim-latency.json` and `.svg`.
//!
//! `cargo bench --bench claim-latency -- [--quick|--demo] [--pool N] [--delay-ms D]`

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use sandbox_operator::api::{
    CLAIM_LABEL, LaunchType, POOL_LABEL, READY, SandboxClaim, SandboxTemplate, SandboxWarmPool,
    is_true,
};

struct Settings {
    pool: usize,
    delay_ms: u64,
    warm_sequential: usize,
    cold_sequential: usize,
    demo: bool,
}

fn settings() -> Settings {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let demo = args.iter().any(|a| a == "--demo");
    let (pool, delay, warm, cold) = match (demo, quick) {
        (true, _) => (3, 2000, 3, 2),
        (false, true) => (20, 2000, 200, 20),
        (false, false) => (100, 2000, 300, 30),
    };
    Settings {
        pool: value("--pool").map_or(pool, |v| v as usize),
        delay_ms: value("--delay-ms").unwrap_or(delay),
        warm_sequential: value("--warm").map_or(warm, |v| v as usize),
        cold_sequential: value("--cold").map_or(cold, |v| v as usize),
        demo,
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubeconfig() -> PathBuf {
    if let Ok(p) = std::env::var("SANDBOX_KUBECONFIG") {
        return p.into();
    }
    let out = std::process::Command::new("bash")
        .arg(repo().join("tests/controlplane/cluster.sh"))
        .arg("up")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run cluster.sh up");
    assert!(out.status.success(), "cluster.sh up failed");
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("kubeconfig path")
            .trim(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ready times observed by the watch, by claim name.
type Seen = Arc<Mutex<HashMap<String, (Instant, Option<LaunchType>, Option<String>)>>>;

struct Run {
    client: Client,
    ns: String,
    seen: Seen,
    starts: Arc<Mutex<HashMap<String, Instant>>>,
}

#[derive(serde::Serialize, Clone)]
struct Scenario {
    name: String,
    claims: usize,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    all_ready_ms: f64,
    warm: usize,
    cold: usize,
    #[serde(skip)]
    samples: Vec<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Run {
    fn claim(&self, name: &str, cold: bool) -> SandboxClaim {
        let mut spec = json!({"sandboxTemplateRef": {"name": "bench"}});
        if cold {
            spec["warmpool"] = json!("none");
        }
        serde_json::from_value(
            json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
            "metadata": {"name": name}, "spec": spec}),
        )
        .unwrap()
    }

    async fn create(&self, name: String, cold: bool) {
        let api: Api<SandboxClaim> = Api::namespaced(self.client.clone(), &self.ns);
        let claim = self.claim(&name, cold);
        self.starts
            .lock()
            .unwrap()
            .insert(name.clone(), Instant::now());
        api.create(&PostParams::default(), &claim)
            .await
            .expect("create claim");
    }

    async fn wait_ready(&self, names: &[String], timeout: Duration) {
        let start = Instant::now();
        loop {
            let done = {
                let seen = self.seen.lock().unwrap();
                names.iter().all(|n| seen.contains_key(n))
            };
            if done {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "claims not Ready within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn idle_ready(&self) -> usize {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| {
                p.labels().contains_key(POOL_LABEL) && p.metadata.deletion_timestamp.is_none()
            })
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count()
    }

    async fn wait_idle(&self, at_least: usize) {
        let start = Instant::now();
        while self.idle_ready().await < at_least {
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "pool did not refill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn scenario(&self, name: &str, names: &[String]) -> Scenario {
        let seen = self.seen.lock().unwrap();
        let starts = self.starts.lock().unwrap();
        let mut samples = Vec::new();
        let (mut warm, mut cold) = (0, 0);
        let mut first = None::<Instant>;
        let mut last = None::<Instant>;
        for n in names {
            let (ready, launch, _) = seen[n];
            let start = starts[n];
            samples.push(ready.duration_since(start).as_secs_f64() * 1000.0);
            match launch {
                Some(LaunchType::Warm) => warm += 1,
                _ => cold += 1,
            }
            first = Some(first.map_or(start, |f: Instant| f.min(start)));
            last = Some(last.map_or(ready, |l: Instant| l.max(ready)));
        }
        let mut sorted = samples.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Scenario {
            name: name.into(),
            claims: names.len(),
            p50_ms: percentile(&sorted, 50.0),
            p95_ms: percentile(&sorted, 95.0),
            p99_ms: percentile(&sorted, 99.0),
            max_ms: sorted.last().copied().unwrap_or(0.0),
            all_ready_ms: match (first, last) {
                (Some(f), Some(l)) => l.duration_since(f).as_secs_f64() * 1000.0,
                _ => 0.0,
            },
            warm,
            cold,
            samples,
        }
    }
}

async fn apiserver_metrics(client: &Client) -> String {
    client
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .expect("scrape the API server's /metrics")
}

/// Cumulative bucket counts (by upper bound in seconds) of the API server's
/// own timing of calls to our webhooks (mutate + validate, CREATE).
fn webhook_buckets(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| {
        l.starts_with("apiserver_admission_webhook_admission_duration_seconds_bucket{")
            && l.contains(".sandboxes.agents.x-k8s.io\"")
    }) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(le) = labels
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        *out.entry(le.to_string()).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// (share of calls within 5 ms, upper bound of the bucket holding p99) of
/// the webhook calls between two scrapes.
fn webhook_latency(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> (f64, String) {
    let delta =
        |le: &str| after.get(le).copied().unwrap_or(0.0) - before.get(le).copied().unwrap_or(0.0);
    let total = delta("+Inf");
    if total <= 0.0 {
        return (0.0, "n/a".into());
    }
    let mut bounds: Vec<(f64, String)> = after
        .keys()
        .filter_map(|le| le.parse::<f64>().ok().map(|v| (v, le.clone())))
        .collect();
    bounds.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let p99 = bounds
        .iter()
        .find(|(_, le)| delta(le) >= 0.99 * total)
        .map(|(v, _)| format!("{} ms", v * 1000.0))
        .unwrap_or_else(|| "> largest bucket".into());
    (delta("0.005") / total, p99)
}

async fn apiserver_writes(client: &Client) -> BTreeMap<String, f64> {
    let text = apiserver_metrics(client).await;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let get = |key: &str| {
            labels
                .split(&format!("{key}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let verb = get("verb");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY") {
            continue;
        }
        let mut resource = get("resource");
        let sub = get("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        *out.entry(format!("{resource} {verb}")).or_insert(0.0) +=
            value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Writes the operator makes for a claim: not the client's own claim
/// create, KWOK's simulated kubelet (pod status, its Events), the
/// scheduler's bindings and Events, endpoints or lease heartbeats. The
/// operator's own Events are counted separately (by reporting controller).
fn is_operator_write(key: &str) -> bool {
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

/// Events published by the operator itself in the namespace.
async fn operator_events(client: &Client, ns: &str) -> usize {
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

async fn double_assignments(client: &Client, ns: &str) -> usize {
    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let claims: Vec<SandboxClaim> = Api::<SandboxClaim>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let mut violations = 0;
    let mut used = HashSet::new();
    for c in &claims {
        if let Some(pod) = c.status.as_ref().and_then(|s| s.pod_name.clone())
            && !used.insert(pod)
        {
            violations += 1;
        }
    }
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let controllers = p
            .owner_references()
            .iter()
            .filter(|o| o.controller == Some(true))
            .count();
        if controllers > 1
            || (p.labels().contains_key(POOL_LABEL) && p.labels().contains_key(CLAIM_LABEL))
        {
            violations += 1;
        }
    }
    violations
}

/// Median milliseconds since admission of each warm-path step, from the
/// operator's `timeline` log lines of the claims whose names start with
/// `prefix`, in the order of the steps.
fn timeline_breakdown(log: &std::path::Path, prefix: &str) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
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
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (step, percentile(&v, 50.0))
        })
        .collect();
    out.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap());
    out
}

fn svg(scenarios: &[Scenario]) -> String {
    // Empirical CDF of claim latency per scenario, log-scale x axis (1 ms .. 60 s).
    let (w, h, left, bottom) = (900.0, 500.0, 70.0, 50.0);
    let x = |ms: f64| left + (ms.max(1.0).log10() / 60_000f64.log10()) * (w - left - 20.0);
    let y = |q: f64| (h - bottom) - q * (h - bottom - 30.0);
    let colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a"];
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    out += r#"<text x="450" y="18" text-anchor="middle" font-size="14">Claim create -> Ready: cumulative distribution (warm vs cold)</text>"#;
    for ms in [1.0, 10.0, 100.0, 1000.0, 10_000.0, 60_000.0] {
        out += &format!(
            r##"<line x1="{0}" y1="30" x2="{0}" y2="{1}" stroke="#ddd"/><text x="{0}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(ms),
            h - bottom,
            h - bottom + 16.0,
            if ms >= 1000.0 {
                format!("{} s", ms / 1000.0)
            } else {
                format!("{ms} ms")
            }
        );
    }
    for q in [0.0, 0.5, 0.95, 1.0] {
        out += &format!(
            r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/><text x="{2}" y="{3}" text-anchor="end">{4}</text>"##,
            y(q),
            w - 20.0,
            left - 6.0,
            y(q) + 4.0,
            q
        );
    }
    for (i, s) in scenarios.iter().enumerate() {
        let mut sorted = s.samples.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = sorted.len().max(1) as f64;
        let points: Vec<String> = sorted
            .iter()
            .enumerate()
            .map(|(k, ms)| format!("{:.1},{:.1}", x(*ms), y((k + 1) as f64 / n)))
            .collect();
        let color = colors[i % colors.len()];
        out += &format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        out += &format!(
            r#"<text x="{}" y="{}" fill="{color}">{} (p50 {:.0} ms, p99 {:.0} ms)</text>"#,
            left + 10.0,
            40.0 + 16.0 * i as f64,
            s.name,
            s.p50_ms,
            s.p99_ms
        );
    }
    out += &format!(
        r#"<text x="{}" y="{}" text-anchor="middle">latency (log scale)</text></svg>"#,
        (w + left) / 2.0,
        h - 12.0
    );
    out
}

#[tokio::main]
async fn main() {
    let s = settings();
    let path = kubeconfig();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();

    // CRDs (idempotent).
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in sandbox_operator::api::crds() {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("sandbox-operator-bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let ns = format!("bench-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();

    // The operator, as in production: its own process, webhook by URL.
    let (mport, wport) = (free_port(), free_port());
    let log_path = repo().join(format!("target/bench/{ns}-operator.log"));
    std::fs::create_dir_all(repo().join("target/bench")).unwrap();
    let log = std::fs::File::create(&log_path).unwrap();
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
        .args([
            "run",
            "--leader-elect=false",
            "--namespace",
            &ns,
            "--operator-namespace",
            &ns,
        ])
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{mport}"),
            "--webhook-addr",
            &format!("127.0.0.1:{wport}"),
        ])
        .args([
            "--register-webhook-url",
            &format!("https://127.0.0.1:{wport}"),
            "--webhook-config-name",
            &format!("sandbox-operator-{ns}"),
        ])
        .env("KUBECONFIG", &path)
        .env("RUST_LOG", "warn,timeline=info")
        .args(["--log-format", "json"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator");
    let ready_url = format!("127.0.0.1:{mport}");
    let start = Instant::now();
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(&ready_url).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut buf = String::new();
            let _ = stream.read_to_string(&mut buf).await;
            if buf.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "operator not ready; see {}",
            log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Watch claims: record the first moment each is seen Ready.
    let seen: Seen = Arc::default();
    {
        let seen = seen.clone();
        let api: Api<SandboxClaim> = Api::namespaced(client.clone(), &ns);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(
                watcher(api, watcher::Config::default())
                    .default_backoff()
                    .applied_objects()
            );
            while let Some(Ok(claim)) = stream.next().await {
                let status = claim.status.clone().unwrap_or_default();
                if is_true(&status.conditions, READY) {
                    seen.lock().unwrap().entry(claim.name_any()).or_insert((
                        Instant::now(),
                        status.launch_type,
                        status.pod_name.clone(),
                    ));
                }
            }
        });
    }
    let run = Run {
        client: client.clone(),
        ns: ns.clone(),
        seen,
        starts: Arc::default(),
    };

    let template: SandboxTemplate = serde_json::from_value(json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
        "metadata": {"name": "bench"},
        "spec": {"podTemplate": {"metadata": {"annotations": {"sandbox.test/start-delay-ms": s.delay_ms.to_string()}},
            "spec": {"containers": [{"name": "agent", "image": "busybox", "ports": [{"containerPort": 8080}],
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}}}))
    .unwrap();
    Api::<SandboxTemplate>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &template)
        .await
        .expect("create template (webhook admitted)");
    let pool: SandboxWarmPool = serde_json::from_value(json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
        "metadata": {"name": "bench"}, "spec": {"replicas": s.pool, "sandboxTemplateRef": {"name": "bench"}}}))
    .unwrap();
    Api::<SandboxWarmPool>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();
    run.wait_idle(s.pool).await;

    let mut scenarios = Vec::new();

    // warm-sequential: one claim at a time, each with an idle Ready Pod waiting.
    let before = apiserver_writes(&client).await;
    let webhook_before = webhook_buckets(&apiserver_metrics(&client).await);
    let mut names = Vec::new();
    for i in 0..s.warm_sequential {
        run.wait_idle(1).await;
        let name = format!("ws-{i}");
        run.create(name.clone(), false).await;
        run.wait_ready(std::slice::from_ref(&name), Duration::from_secs(60))
            .await;
        names.push(name);
    }
    // Let the refills and their status updates land before reading the counters.
    run.wait_idle(s.pool).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = apiserver_writes(&client).await;
    let (webhook_within_5ms, webhook_p99) = webhook_latency(
        &webhook_before,
        &webhook_buckets(&apiserver_metrics(&client).await),
    );
    scenarios.push(run.scenario("warm-sequential", &names));
    let mut by_resource: BTreeMap<String, f64> = BTreeMap::new();
    for (k, v) in &after {
        let d = v - before.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            by_resource.insert(k.clone(), d / s.warm_sequential as f64);
        }
    }
    let events_by_operator = operator_events(&client, &ns).await as f64 / s.warm_sequential as f64;
    let operator_writes: f64 = by_resource
        .iter()
        .filter(|(k, _)| is_operator_write(k))
        .map(|(_, v)| v)
        .sum::<f64>()
        + events_by_operator;
    let all_writes: f64 = by_resource.values().sum();

    // cold-sequential: `warmpool: none` forces a fresh Pod.
    let mut names = Vec::new();
    for i in 0..s.cold_sequential {
        let name = format!("cs-{i}");
        run.create(name.clone(), true).await;
        run.wait_ready(std::slice::from_ref(&name), Duration::from_secs(120))
            .await;
        names.push(name);
    }
    scenarios.push(run.scenario("cold-sequential", &names));

    if !s.demo {
        // warm-burst: N claims at once on a full pool of N.
        run.wait_idle(s.pool).await;
        let names: Vec<String> = (0..s.pool).map(|i| format!("wb-{i}")).collect();
        futures::future::join_all(names.iter().map(|n| run.create(n.clone(), false))).await;
        run.wait_ready(&names, Duration::from_secs(300)).await;
        scenarios.push(run.scenario("warm-burst", &names));

        // overflow-burst: 3N claims at once on a full pool of N.
        run.wait_idle(s.pool).await;
        let names: Vec<String> = (0..3 * s.pool).map(|i| format!("ob-{i}")).collect();
        futures::future::join_all(names.iter().map(|n| run.create(n.clone(), false))).await;
        run.wait_ready(&names, Duration::from_secs(300)).await;
        scenarios.push(run.scenario("overflow-burst", &names));
    }

    let doubles = double_assignments(&client, &ns).await;
    let breakdown = timeline_breakdown(&log_path, "ws-");
    let warm_p50 = scenarios[0].p50_ms;
    let cold_p50 = scenarios[1].p50_ms;

    if s.demo {
        println!(
            "\n{:<10} {:<12} {:>12}",
            "claim", "launch type", "ready (ms)"
        );
        for sc in &scenarios {
            let seen = run.seen.lock().unwrap();
            let starts = run.starts.lock().unwrap();
            let mut rows: Vec<_> = starts
                .iter()
                .filter(|(n, _)| {
                    n.starts_with(if sc.name.starts_with("warm") {
                        "ws-"
                    } else {
                        "cs-"
                    })
                })
                .collect();
            rows.sort_by_key(|(n, _)| (*n).clone());
            for (name, start) in rows {
                let (ready, launch, _) = seen[name];
                println!(
                    "{:<10} {:<12} {:>12.1}",
                    name,
                    launch.map_or("?", |l| l.as_str()),
                    ready.duration_since(*start).as_secs_f64() * 1000.0
                );
            }
        }
        println!(
            "\nwarm p50 {warm_p50:.1} ms vs cold p50 {cold_p50:.1} ms (simulated cold start {} ms); double assignments: {doubles}",
            s.delay_ms
        );
    } else {
        println!(
            "\nclaim create -> Ready (client clock, watch), pool {} Pods, simulated cold start {} ms",
            s.pool, s.delay_ms
        );
        println!(
            "{:<16} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>12}",
            "scenario",
            "claims",
            "warm",
            "cold",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "all ready ms"
        );
        for sc in &scenarios {
            println!(
                "{:<16} {:>6} {:>6} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>12.1}",
                sc.name,
                sc.claims,
                sc.warm,
                sc.cold,
                sc.p50_ms,
                sc.p95_ms,
                sc.p99_ms,
                sc.max_ms,
                sc.all_ready_ms
            );
        }
        println!(
            "warm/cold p50 ratio: {:.3} ({:.1}x faster)",
            warm_p50 / cold_p50,
            cold_p50 / warm_p50.max(0.001)
        );
        println!(
            "API writes per warm claim: {operator_writes:.2} by the operator, its Events included ({events_by_operator:.2}); {all_writes:.2} by every client (the claim create, KWOK, scheduler, controller-manager)"
        );
        for (k, v) in &by_resource {
            println!(
                "  {k:<40} {v:>6.2}{}",
                if is_operator_write(k) {
                    ""
                } else {
                    "   (not the operator)"
                }
            );
        }
        println!("double assignments: {doubles}");
        println!(
            "webhook calls as timed by the API server (warm-sequential): {:.1}% within 5 ms, p99 <= {webhook_p99} (bucket bound)",
            webhook_within_5ms * 100.0
        );
        println!(
            "\nwarm path, step by step (median ms since the API server admitted the claim, warm-sequential):"
        );
        for (step, ms) in &breakdown {
            println!("  {step:<32} {ms:>8.1}");
        }
    }

    let report = json!({
        "pool_size": s.pool,
        "cold_start_delay_ms": s.delay_ms,
        "writes_per_warm_claim": (operator_writes * 100.0).round() / 100.0,
        "writes_per_warm_claim_all_actors": (all_writes * 100.0).round() / 100.0,
        "operator_events_per_warm_claim": events_by_operator,
        "writes_by_resource": by_resource,
        "double_assignments": doubles,
        "webhook_calls_within_5ms": webhook_within_5ms,
        "webhook_p99_bucket": webhook_p99,
        "warm_path_breakdown_ms": breakdown.iter().map(|(k, v)| json!({"step": k, "median_ms_since_admission": v})).collect::<Vec<_>>(),
        "scenarios": scenarios,
    });
    let name = if s.demo { "demo" } else { "claim-latency" };
    std::fs::write(
        repo().join(format!("target/bench/{name}.json")),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    std::fs::write(
        repo().join(format!("target/bench/{name}.svg")),
        svg(&scenarios),
    )
    .unwrap();
    println!("wrote target/bench/{name}.json and target/bench/{name}.svg");

    // Clean up: stop the operator gracefully (it unregisters its webhook), drop the namespace.
    if let Some(pid) = operator.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), operator.wait()).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    if doubles > 0 {
        eprintln!("FAILED: {doubles} double assignments");
        std::process::exit(1);
    }
}
