//! Warm-pool sizing: the formula against a simulation, then against the real
//! operator on the local control plane (KWOK start delay = refill time).
//!
//! 1. Offline: the sizing model (a miss takes the oldest starting Pod,
//!    `P(Poisson(a) < n)`) and Erlang B (a miss leaves the pool alone) each
//!    against a seeded discrete-event simulation of its behaviour (fixed and
//!    exponential refill) over a grid of sizes and loads.
//! 2. End to end (skipped with `--offline`), Poisson claim arrivals at a
//!    fixed rate. (a) A pool sized by `pool advise` for a 0.95 target, and
//!    one of half that size: observed hit ratio vs predicted. (b) An
//!    autoscaled pool from `minReplicas: 1`: its size over time, the hit
//!    ratio of the last third of the run, and the time it takes to shrink
//!    after the traffic stops.
//!
//! Prints tables, writes `target/bench/pool-sizing.json` and `.svg`.
//! `cargo bench --bench pool-sizing -- [--offline] [--auto-only] [--rate R/s] [--delay-ms D] [--duration S]`

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use sandbox_operator::api::{LaunchType, SandboxClaim, SandboxWarmPool, SandboxWarmPoolStatus};
use sandbox_operator::sizing::advise::advise;
use sandbox_operator::sizing::simulate::{Miss, Refill, Rng, simulate};
use sandbox_operator::sizing::{erlang, model};

#[path = "shared/cluster.rs"]
mod cluster;
use cluster::free_port;

struct Settings {
    offline: bool,
    auto_only: bool,
    rate: f64,
    delay_ms: u64,
    duration: f64,
}

fn settings() -> Settings {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Settings {
        offline: args.iter().any(|a| a == "--offline"),
        auto_only: args.iter().any(|a| a == "--auto-only"),
        rate: value("--rate").unwrap_or(2.0),
        delay_ms: value("--delay-ms").map_or(2000, |v| v as u64),
        duration: value("--duration").unwrap_or(120.0),
    }
}

fn offline_grid() -> serde_json::Value {
    println!(
        "\n== Sizing model vs simulation (200,000 Poisson claims per cell, refill mean 2 s) =="
    );
    println!(
        "ours: a miss takes the oldest starting Pod, P(Poisson(a) < n); \
         Erlang B: a miss leaves the pool alone"
    );
    println!(
        "{:>5} {:>6} {:>9} {:>10} {:>9} | {:>9} {:>10} {:>9}",
        "size", "load", "ours", "sim fixed", "sim exp", "Erlang B", "sim fixed", "sim exp"
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    // Fixed refill times: both formulas are exact, the gap is sampling
    // noise. Exponential ones: Erlang B is still exact, ours pessimistic.
    let (mut worst_fixed, mut worst_erlang): (f64, f64) = (0.0, 0.0);
    for size in [2u32, 5, 10, 20, 50] {
        for load in [1.0, 4.0, 8.0, 16.0, 32.0] {
            let seed = u64::from(size) * 7919 + load as u64;
            let rate = load / 2.0;
            let sim = |refill, miss| simulate(size, rate, refill, miss, 200_000, seed).hit_ratio();
            let ours = model::hit_ratio(size, load);
            let textbook = erlang::hit_ratio(size, load);
            let takes = Miss::TakesOldestStarting;
            let alone = Miss::LeavesPoolAlone;
            let (ours_fixed, ours_exp) = (
                sim(Refill::Fixed(2.0), takes),
                sim(Refill::Exponential(2.0), takes),
            );
            let (erlang_fixed, erlang_exp) = (
                sim(Refill::Fixed(2.0), alone),
                sim(Refill::Exponential(2.0), alone),
            );
            worst_fixed = worst_fixed.max((ours_fixed - ours).abs());
            worst_erlang = worst_erlang
                .max((erlang_fixed - textbook).abs())
                .max((erlang_exp - textbook).abs());
            println!(
                "{size:>5} {load:>6.1} {ours:>9.4} {ours_fixed:>10.4} {ours_exp:>9.4} | \
                 {textbook:>9.4} {erlang_fixed:>10.4} {erlang_exp:>9.4}"
            );
            rows.push(json!({"size": size, "load": load,
                             "model": ours, "model_sim_fixed": ours_fixed, "model_sim_exponential": ours_exp,
                             "erlang_b": textbook, "erlang_sim_fixed": erlang_fixed,
                             "erlang_sim_exponential": erlang_exp}));
        }
    }
    println!(
        "largest gap, ours vs its simulation with fixed refill {:.4}; Erlang B vs its simulation {:.4}; in {:.1} s",
        worst_fixed,
        worst_erlang,
        started.elapsed().as_secs_f64()
    );
    json!({"rows": rows, "max_gap_model_fixed": worst_fixed, "max_gap_erlang": worst_erlang})
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Cluster {
    client: Client,
    ns: String,
}

impl Cluster {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn template(&self, name: &str, delay_ms: u64) {
        let t = json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
            "metadata": {"name": name},
            "spec": {"podTemplate": {
                "metadata": {"annotations": {"sandbox.test/start-delay-ms": delay_ms.to_string()},
                             "labels": {"bench-scenario": name}},
                "spec": {"containers": [{"name": "agent", "image": "busybox"}]}}}});
        let api: Api<sandbox_operator::api::SandboxTemplate> = self.api();
        api.create(&PostParams::default(), &serde_json::from_value(t).unwrap())
            .await
            .unwrap();
    }

    async fn pool(&self, name: &str, spec: serde_json::Value) {
        let p = json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
            "metadata": {"name": name}, "spec": spec});
        self.api::<SandboxWarmPool>()
            .create(&PostParams::default(), &serde_json::from_value(p).unwrap())
            .await
            .unwrap();
    }

    async fn status(&self, pool: &str) -> SandboxWarmPoolStatus {
        self.api::<SandboxWarmPool>()
            .get(pool)
            .await
            .ok()
            .and_then(|p| p.status)
            .unwrap_or_default()
    }

    async fn wait_ready(&self, pool: &str, n: i32) {
        let start = Instant::now();
        while self.status(pool).await.ready_replicas < n {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "pool {pool} not filled"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Poisson arrivals of claims on `template` for `seconds`; returns the
    /// claim names with their offsets from the start.
    async fn traffic(
        &self,
        template: &str,
        rate: f64,
        seconds: f64,
        seed: u64,
    ) -> Vec<(String, f64)> {
        let mut rng = Rng::new(seed);
        let start = Instant::now();
        let mut at = 0.0;
        let mut names = Vec::new();
        let mut i = 0;
        loop {
            at += rng.exponential(1.0 / rate);
            if at > seconds {
                break;
            }
            let due = Duration::from_secs_f64(at);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            let name = format!("{template}-{i}");
            i += 1;
            let claim = json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
                "metadata": {"name": name}, "spec": {"sandboxTemplateRef": {"name": template}}});
            let api = self.api::<SandboxClaim>();
            tokio::spawn(async move {
                let claim: SandboxClaim = serde_json::from_value(claim).unwrap();
                let _ = api.create(&PostParams::default(), &claim).await;
            });
            names.push((name, at));
        }
        names
    }

    /// Launch types of the claims (waits until each has one).
    async fn launch_types(&self, names: &[(String, f64)]) -> Vec<(f64, bool)> {
        let start = Instant::now();
        loop {
            let list = self
                .api::<SandboxClaim>()
                .list(&ListParams::default())
                .await
                .unwrap();
            let out: Vec<(f64, bool)> = names
                .iter()
                .filter_map(|(name, at)| {
                    let c = list.items.iter().find(|c| c.name_any() == *name)?;
                    let launch = c.status.as_ref()?.launch_type.as_ref()?;
                    Some((*at, *launch == LaunchType::Warm))
                })
                .collect();
            if out.len() == names.len() || start.elapsed() > Duration::from_secs(60) {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn delete_claims(&self) {
        let _ = self
            .api::<SandboxClaim>()
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
    }
}

fn ratio(outcomes: &[(f64, bool)]) -> f64 {
    outcomes.iter().filter(|(_, warm)| *warm).count() as f64 / outcomes.len().max(1) as f64
}

/// Scenario (a): a fixed pool of `size`; returns (observed, predicted, status).
async fn fixed_pool(c: &Cluster, s: &Settings, name: &str, size: u32) -> serde_json::Value {
    c.template(name, s.delay_ms).await;
    c.pool(
        name,
        json!({"replicas": size, "sandboxTemplateRef": {"name": name}, "targetHitRatio": 0.95}),
    )
    .await;
    c.wait_ready(name, size as i32).await;
    let names = c.traffic(name, s.rate, s.duration, u64::from(size)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcomes = c.launch_types(&names).await;
    let status = c.status(name).await;
    let refill = status
        .sizing
        .refill_seconds
        .unwrap_or(s.delay_ms as f64 / 1000.0);
    let observed = ratio(&outcomes);
    let predicted = model::hit_ratio(size, s.rate * refill);
    println!(
        "{name:>12} size {size:>3}: {} claims, observed hit ratio {observed:.4}, predicted {predicted:.4} \
         (rate {:.2}/s x measured refill {refill:.3}s), operator status: observed {:?} predicted {:?} recommended {:?}",
        outcomes.len(),
        s.rate,
        status.sizing.observed_hit_ratio,
        status.sizing.predicted_hit_ratio,
        status.sizing.recommended_replicas
    );
    c.delete_claims().await;
    let _ = c
        .api::<SandboxWarmPool>()
        .delete(name, &DeleteParams::default())
        .await;
    json!({"pool": name, "size": size, "claims": outcomes.len(), "observed": observed,
           "predicted": predicted, "refill_seconds": refill,
           "status_observed": status.sizing.observed_hit_ratio, "status_predicted": status.sizing.predicted_hit_ratio,
           "status_recommended": status.sizing.recommended_replicas})
}

/// Scenario (b): autoscaling from 1 under traffic, then the shrink.
async fn autoscaled_pool(c: &Cluster, s: &Settings, max: u32) -> serde_json::Value {
    let name = "auto";
    let delay = 60;
    c.template(name, s.delay_ms).await;
    c.pool(
        name,
        json!({"replicas": 1, "sandboxTemplateRef": {"name": name},
        "autoscaling": {"minReplicas": 1, "maxReplicas": max, "targetHitRatio": 0.95,
                        "scaleDownDelaySeconds": delay}}),
    )
    .await;
    c.wait_ready(name, 1).await;
    let samples: Arc<Mutex<Vec<(f64, i32, i32)>>> = Arc::default();
    let start = Instant::now();
    let sampler = {
        let (samples, api) = (samples.clone(), c.api::<SandboxWarmPool>());
        tokio::spawn(async move {
            loop {
                if let Ok(p) = api.get(name).await {
                    let st = p.status.unwrap_or_default();
                    samples.lock().unwrap().push((
                        start.elapsed().as_secs_f64(),
                        st.desired_replicas.unwrap_or(0),
                        st.sizing.recommended_replicas.unwrap_or(0),
                    ));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let names = c.traffic(name, s.rate, s.duration, 99).await;
    let stopped = start.elapsed().as_secs_f64();
    let outcomes = c.launch_types(&names).await;
    let last_third: Vec<(f64, bool)> = outcomes
        .iter()
        .copied()
        .filter(|(at, _)| *at >= s.duration * 2.0 / 3.0)
        .collect();
    let peak = samples
        .lock()
        .unwrap()
        .iter()
        .map(|x| x.1)
        .max()
        .unwrap_or(0);
    let mut shrunk_after = None;
    while start.elapsed().as_secs_f64() < stopped + f64::from(delay) + 120.0 {
        if c.status(name).await.desired_replicas == Some(1) {
            shrunk_after = Some(start.elapsed().as_secs_f64() - stopped);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sampler.abort();
    let status = c.status(name).await;
    println!(
        "{name:>12}: grew to {peak} (recommended now {:?}), hit ratio overall {:.4}, last third {:.4} \
         ({} claims), shrank to 1 {:?} s after the traffic stopped (delay {delay} s)",
        status.sizing.recommended_replicas,
        ratio(&outcomes),
        ratio(&last_third),
        last_third.len(),
        shrunk_after.map(|v| (v * 10.0).round() / 10.0)
    );
    c.delete_claims().await;
    let samples = samples.lock().unwrap().clone();
    json!({"peak_desired": peak, "hit_ratio": ratio(&outcomes), "hit_ratio_last_third": ratio(&last_third),
           "claims": outcomes.len(), "stopped_at": stopped, "shrunk_after_seconds": shrunk_after,
           "scale_down_delay_seconds": delay, "samples": samples})
}

fn svg(auto: &serde_json::Value) -> String {
    let samples = auto["samples"].as_array().cloned().unwrap_or_default();
    let points = |index: usize| -> Vec<(f64, f64)> {
        samples
            .iter()
            .map(|s| {
                (
                    s[0].as_f64().unwrap_or(0.0),
                    s[index].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    };
    let (desired, recommended) = (points(1), points(2));
    let t_max = desired.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_max = desired
        .iter()
        .chain(&recommended)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        + 1.0;
    let (w, h, m) = (720.0, 320.0, 40.0);
    let path = |pts: &[(f64, f64)]| {
        pts.iter()
            .map(|(t, y)| {
                format!(
                    "{:.1},{:.1}",
                    m + t / t_max * (w - 2.0 * m),
                    h - m - y / y_max * (h - 2.0 * m)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let stop = m + auto["stopped_at"].as_f64().unwrap_or(0.0) / t_max * (w - 2.0 * m);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{m}" y="20">Autoscaled pool: desired (blue) and recommended (orange) replicas over time (s); traffic stops at the dashed line</text>
<line x1="{m}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{y0}" stroke="black"/>
<text x="{x1}" y="{yl}" text-anchor="end">{t_max:.0} s</text><text x="5" y="{m}">{y_max:.0}</text>
<line x1="{stop:.1}" y1="{m}" x2="{stop:.1}" y2="{y0}" stroke="gray" stroke-dasharray="4"/>
<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{d}"/>
<polyline fill="none" stroke="#ff7f0e" stroke-width="1.5" points="{r}"/>
</svg>
"##,
        y0 = h - m,
        x1 = w - m,
        yl = h - m + 15.0,
        d = path(&desired),
        r = path(&recommended),
    )
}

async fn start(path: &std::path::Path) -> (Cluster, tokio::process::Child) {
    let client = cluster::client_with_crds(path).await;
    let ns = cluster::fresh_namespace(&client, "sizing-bench").await;
    std::fs::create_dir_all(repo().join("target/bench")).unwrap();
    let log =
        std::fs::File::create(repo().join(format!("target/bench/{ns}-operator.log"))).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
        .args([
            "run",
            "--leader-elect=false",
            "--webhook=false",
            "--events=false",
        ])
        .args(["--namespace", &ns, "--metrics-addr", &metrics])
        .env("KUBECONFIG", path)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator");
    tokio::time::sleep(Duration::from_secs(3)).await;
    (Cluster { client, ns }, child)
}

#[tokio::main]
async fn main() {
    let s = settings();
    let grid = offline_grid();
    let mut report = json!({"simulation": grid});
    if !s.offline {
        let path = PathBuf::from(
            std::env::var("SANDBOX_KUBECONFIG")
                .expect("SANDBOX_KUBECONFIG (make bench-pool sets it)"),
        );
        let (cluster, mut operator) = start(&path).await;
        let refill = s.delay_ms as f64 / 1000.0;
        let advice = advise(s.rate, refill, 0.95);
        println!(
            "\n== End to end: Poisson claims at {:.2}/s for {:.0} s, KWOK start delay {} ms ==\n\
             pool advise --rate {:.0}/min --refill {}ms --target 0.95 -> {} replicas",
            s.rate,
            s.duration,
            s.delay_ms,
            s.rate * 60.0,
            s.delay_ms,
            advice.recommended
        );
        let (sized, half) = if s.auto_only {
            (json!(null), json!(null))
        } else {
            (
                fixed_pool(&cluster, &s, "advised", advice.recommended).await,
                fixed_pool(&cluster, &s, "half", advice.recommended / 2).await,
            )
        };
        let auto = autoscaled_pool(&cluster, &s, advice.recommended * 3).await;
        std::fs::write(repo().join("target/bench/pool-sizing.svg"), svg(&auto)).unwrap();
        report["end_to_end"] = json!({"rate_per_second": s.rate, "duration_seconds": s.duration,
            "start_delay_ms": s.delay_ms, "advised": advice.recommended,
            "advised_pool": sized, "half_pool": half, "autoscaled": auto});
        // Stopped first: a cold claim's policy holds until its Pods are gone,
        // which a stopped operator never sees, so the holds are lifted here
        // (or the namespace would stay terminating).
        let _ = operator.kill().await;
        if let Err(error) =
            sandbox_operator::controller::policy_hold::lift_all(&cluster.client, &cluster.ns).await
        {
            eprintln!("warning: the NetworkPolicies' holds were not lifted: {error}");
        }
        let _ = Api::<Namespace>::all(cluster.client.clone())
            .delete(&cluster.ns, &DeleteParams::default())
            .await;
    }
    let out = repo().join("target/bench/pool-sizing.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nwrote {}", out.display());
}
