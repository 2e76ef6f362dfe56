//! The floor: what one API write costs on this control plane, measured in
//! the same run as the claims so that noise hits both.
//!
//! - `write_rtt`: the round trip of ONE resourceVersion-conditioned JSON
//!   patch of a label on a dedicated probe Pod (first op
//!   `test /metadata/resourceVersion`, the shape of the operator's steal).
//!   The resourceVersion comes from the previous response, so a sample is a
//!   single request, as a steal from a cache is. The probe Pods carry no
//!   managed-by label: the operator never sees them, and KWOK has finished
//!   with them (they are Ready) before the first sample.
//! - `write_throughput`: writes/s of a burst of bare (unconditioned) label
//!   patches sent all at once, one per probe Pod, as many as the claim burst
//!   has claims; each burst is timed from the first send to the last answer.
//!
//! The API server counts these patches as `pods PATCH`, like the operator's
//! steals: [`Floor::patches_sent`] lets the write count take them out.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::stats;

const PROBE_LABEL: &str = "bench.sandbox.test/floor-probe";
const SAMPLE_LABEL: &str = "bench.sandbox.test/floor-sample";

/// Probe Pods and every floor sample taken so far.
pub struct Floor {
    api: Api<Pod>,
    probes: Vec<String>,
    /// resourceVersion of the first probe, from the last answer about it.
    resource_version: String,
    counter: u64,
    patches_sent: u64,
    /// Write round trips, milliseconds, in the order taken.
    pub rtt_ms: Vec<f64>,
    /// Conditioned patches refused (the probe changed under us); not samples.
    pub refused: usize,
    /// writes/s of each timed parallel burst.
    pub throughput_per_s: Vec<f64>,
}

/// The floor in numbers, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub rtt_p50_ms: f64,
    pub rtt_p99_ms: f64,
    pub rtt_samples: usize,
    pub throughput_per_s: f64,
    pub throughput_runs: usize,
}

impl Floor {
    /// Creates `probes` probe Pods (at least one) and waits until KWOK made them Ready.
    pub async fn create(client: &Client, ns: &str, probes: usize) -> Floor {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let names: Vec<String> = (0..probes.max(1))
            .map(|i| format!("floor-probe-{i}"))
            .collect();
        for name in &names {
            api.create(&PostParams::default(), &probe_pod(name))
                .await
                .expect("create a floor probe Pod");
        }
        let start = Instant::now();
        let selector = ListParams::default().labels(PROBE_LABEL);
        while api
            .list(&selector)
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| is_ready(p))
            .count()
            < names.len()
        {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "floor probe Pods not Ready within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let resource_version = api
            .get(&names[0])
            .await
            .unwrap()
            .resource_version()
            .unwrap();
        Floor {
            api,
            probes: names,
            resource_version,
            counter: 0,
            patches_sent: 0,
            rtt_ms: Vec::new(),
            refused: 0,
            throughput_per_s: Vec::new(),
        }
    }

    /// Patches the API server has counted from the floor so far.
    pub fn patches_sent(&self) -> u64 {
        self.patches_sent
    }

    /// Takes `n` write round-trip samples, one after the other.
    pub async fn sample(&mut self, n: usize) {
        for _ in 0..n {
            self.counter += 1;
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": self.resource_version},
                {"op": "add", "path": format!("/metadata/labels/{}", SAMPLE_LABEL.replace('/', "~1")),
                 "value": self.counter.to_string()},
            ]))
            .unwrap();
            let start = Instant::now();
            let answer = self
                .api
                .patch(
                    &self.probes[0],
                    &PatchParams::default(),
                    &Patch::Json::<()>(patch),
                )
                .await;
            let elapsed = start.elapsed().as_secs_f64() * 1000.0;
            self.patches_sent += 1;
            match answer {
                Ok(pod) => {
                    self.rtt_ms.push(elapsed);
                    self.resource_version = pod.resource_version().unwrap_or_default();
                }
                Err(kube::Error::Api(refusal)) => {
                    // Someone wrote the probe: not a sample; read it again.
                    self.refused += 1;
                    assert!(
                        self.refused <= 20,
                        "floor probe keeps changing under the bench: {refusal}"
                    );
                    let pod = self.api.get(&self.probes[0]).await.unwrap();
                    self.resource_version = pod.resource_version().unwrap_or_default();
                }
                Err(other) => panic!("floor sample failed: {other}"),
            }
        }
    }

    /// Times one burst of bare patches sent at once, one per probe Pod; keeps
    /// its writes/s unless `warm_up` (the first burst opens connections).
    pub async fn throughput_run(&mut self, warm_up: bool) {
        self.counter += 1;
        let patch = json!({"metadata": {"labels": {SAMPLE_LABEL: self.counter.to_string()}}});
        let params = PatchParams::default();
        let merge = Patch::Merge(&patch);
        let start = Instant::now();
        let answers = futures::future::join_all(
            self.probes
                .iter()
                .map(|name| self.api.patch(name, &params, &merge)),
        )
        .await;
        let elapsed = start.elapsed().as_secs_f64();
        self.patches_sent += self.probes.len() as u64;
        for answer in answers {
            answer.expect("bare label patch of a floor probe");
        }
        // The conditioned probe's resourceVersion moved with the burst.
        self.resource_version = self
            .api
            .get(&self.probes[0])
            .await
            .unwrap()
            .resource_version()
            .unwrap_or_default();
        if !warm_up {
            self.throughput_per_s
                .push(self.probes.len() as f64 / elapsed);
        }
    }

    pub fn summary(&self) -> Summary {
        let sorted = stats::sorted(&self.rtt_ms);
        Summary {
            rtt_p50_ms: stats::percentile(&sorted, 50.0),
            rtt_p99_ms: stats::percentile(&sorted, 99.0),
            rtt_samples: sorted.len(),
            throughput_per_s: stats::median(&self.throughput_per_s),
            throughput_runs: self.throughput_per_s.len(),
        }
    }
}

fn probe_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {PROBE_LABEL: "true"},
                     "annotations": {"sandbox.test/start-delay-ms": "0"}},
        "spec": {"terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
                 "containers": [{"name": "probe", "image": "busybox",
                                 "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]}
    }))
    .unwrap()
}

/// Whether the Pod reports the Ready condition True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
