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
//!   patches sent all at once, **as many as the writes the warm claim burst
//!   needs** (its claims x the operator writes per warm claim, rounded; see
//!   [`burst_patches`]), one per probe Pod: the floor creates that many
//!   probe Pods before its first burst, so no two patches of a burst touch
//!   the same Pod (no conflict, no retry inside the API server), and the
//!   patches are unconditioned (a Pod's resourceVersion would only matter
//!   if two patches shared it). Each burst is timed from the first send to
//!   the last answer, so its fixed latency (one round trip) is paid once
//!   over as many writes as the claim burst makes, as it is by the claims.
//! - `write_throughput_pool_sized`: the same, with one patch per claim of
//!   the burst (pool size) instead of one per write: the figure of earlier
//!   rounds, kept for comparison. It pays the burst's fixed latency over
//!   about eight times fewer writes, so it understates the throughput and
//!   the ratios against it flatter the claims.
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

/// At most this many floor patches in flight: a full run's writes-sized
/// burst (about 800 for a pool of 100) sent all at once would pass the API
/// server's default 200 mutating requests in flight (429s) and open a
/// connection each (found by review). 150 still keeps both cores busy.
const BURST_IN_FLIGHT: usize = 150;

/// Probe Pods and every floor sample taken so far.
pub struct Floor {
    api: Api<Pod>,
    /// Probe Pods: the first `pool_sized` for the pool-sized bursts, all of
    /// them (once [`Floor::size_bursts`] grew them) for the writes-sized ones.
    probes: Vec<String>,
    pool_sized: usize,
    /// Patches of a writes-sized burst; 0 until [`Floor::size_bursts`].
    burst_patches: usize,
    /// resourceVersion of the first probe, from the last answer about it.
    resource_version: String,
    counter: u64,
    patches_sent: u64,
    /// Write round trips, milliseconds, in the order taken.
    pub rtt_ms: Vec<f64>,
    /// Conditioned patches refused (the probe changed under us); not samples.
    pub refused: usize,
    /// writes/s of each timed writes-sized burst (`burst_patches` patches).
    pub throughput_per_s: Vec<f64>,
    /// writes/s of each timed pool-sized burst (one patch per pool Pod).
    pub throughput_pool_sized_per_s: Vec<f64>,
}

/// The floor in numbers, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub rtt_p50_ms: f64,
    pub rtt_p99_ms: f64,
    pub rtt_samples: usize,
    /// Median writes/s of the writes-sized bursts.
    pub throughput_per_s: f64,
    pub throughput_runs: usize,
    /// Patches in each writes-sized burst.
    pub throughput_patches: usize,
    /// Median writes/s of the pool-sized bursts, and their size.
    pub throughput_pool_sized_per_s: f64,
    pub throughput_pool_sized_patches: usize,
}

/// Patches of a writes-sized throughput burst: as many as the writes a
/// burst of `claims` warm claims needs at `writes_per_claim` each, rounded;
/// `claims` (one per claim, the pool-sized burst) when no write count was
/// measured; at least 1.
pub fn burst_patches(claims: usize, writes_per_claim: f64) -> usize {
    let writes = (claims as f64 * writes_per_claim).round();
    if writes.is_finite() && writes >= 1.0 {
        writes as usize
    } else {
        claims.max(1)
    }
}

impl Floor {
    /// Creates `probes` probe Pods (at least one) and waits until KWOK made them Ready.
    pub async fn create(client: &Client, ns: &str, probes: usize) -> Floor {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let names = add_probes(&api, 0, probes.max(1)).await;
        let resource_version = api
            .get(&names[0])
            .await
            .unwrap()
            .resource_version()
            .unwrap();
        Floor {
            api,
            pool_sized: names.len(),
            probes: names,
            burst_patches: 0,
            resource_version,
            counter: 0,
            patches_sent: 0,
            rtt_ms: Vec::new(),
            refused: 0,
            throughput_per_s: Vec::new(),
            throughput_pool_sized_per_s: Vec::new(),
        }
    }

    /// Sizes the writes-sized bursts at `patches` and creates the probe
    /// Pods they need (one per patch), waiting until KWOK made them Ready,
    /// so that its status writes are over before the first timed burst.
    pub async fn size_bursts(&mut self, patches: usize) {
        let patches = patches.max(1);
        if patches > self.probes.len() {
            let more = add_probes(&self.api, self.probes.len(), patches).await;
            self.probes.extend(more);
        }
        self.burst_patches = patches;
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

    /// Times one pool-sized burst, then (once [`Floor::size_bursts`] ran)
    /// one writes-sized burst, of bare patches sent at once, one per probe
    /// Pod; keeps their writes/s unless `warm_up` (a warm-up burst opens the
    /// client's connections, one per request in flight).
    pub async fn throughput_run(&mut self, warm_up: bool) {
        let pool_sized = self.burst(self.pool_sized).await;
        let sized = match self.burst_patches {
            0 => None,
            n => Some(self.burst(n).await),
        };
        // The conditioned probe's resourceVersion moved with the bursts.
        self.resource_version = self
            .api
            .get(&self.probes[0])
            .await
            .unwrap()
            .resource_version()
            .unwrap_or_default();
        if !warm_up {
            self.throughput_pool_sized_per_s.push(pool_sized);
            self.throughput_per_s.extend(sized);
        }
    }

    /// Sends one bare label patch to each of the first `n` probe Pods, at
    /// most [`BURST_IN_FLIGHT`] at a time; writes/s from the first send to
    /// the last answer.
    async fn burst(&mut self, n: usize) -> f64 {
        use futures::StreamExt;
        self.counter += 1;
        let patch = json!({"metadata": {"labels": {SAMPLE_LABEL: self.counter.to_string()}}});
        let params = PatchParams::default();
        let merge = Patch::Merge(&patch);
        let start = Instant::now();
        let answers: Vec<_> = futures::stream::iter(
            self.probes[..n]
                .iter()
                .map(|name| self.api.patch(name, &params, &merge)),
        )
        .buffer_unordered(BURST_IN_FLIGHT)
        .collect()
        .await;
        let elapsed = start.elapsed().as_secs_f64();
        self.patches_sent += n as u64;
        for answer in answers {
            answer.expect("bare label patch of a floor probe");
        }
        n as f64 / elapsed
    }

    pub fn summary(&self) -> Summary {
        let sorted = stats::sorted(&self.rtt_ms);
        Summary {
            rtt_p50_ms: stats::percentile(&sorted, 50.0),
            rtt_p99_ms: stats::percentile(&sorted, 99.0),
            rtt_samples: sorted.len(),
            throughput_per_s: stats::median(&self.throughput_per_s),
            throughput_runs: self.throughput_per_s.len(),
            throughput_patches: self.burst_patches,
            throughput_pool_sized_per_s: stats::median(&self.throughput_pool_sized_per_s),
            throughput_pool_sized_patches: self.pool_sized,
        }
    }
}

/// Creates probe Pods `floor-probe-<from>` .. `floor-probe-<to - 1>` (20
/// at a time) and waits (120 s, plus 1 s per 10 Pods) until every probe
/// Pod is Ready; returns the new names.
async fn add_probes(api: &Api<Pod>, from: usize, to: usize) -> Vec<String> {
    use futures::StreamExt;
    let names: Vec<String> = (from..to).map(|i| format!("floor-probe-{i}")).collect();
    futures::stream::iter(&names)
        .map(|name| async move {
            api.create(&PostParams::default(), &probe_pod(name))
                .await
                .expect("create a floor probe Pod")
        })
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await;
    let start = Instant::now();
    let limit = Duration::from_secs(120 + to as u64 / 10);
    let selector = ListParams::default().labels(PROBE_LABEL);
    while api
        .list(&selector)
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| is_ready(p))
        .count()
        < to
    {
        assert!(
            start.elapsed() < limit,
            "floor probe Pods not Ready within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(if to > 100 { 250 } else { 50 })).await;
    }
    names
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writes_sized_burst_has_one_patch_per_write_of_the_claim_burst() {
        // 20 claims at 8.08 writes each: 161.6, rounded.
        assert_eq!(burst_patches(20, 8.08), 162);
        assert_eq!(burst_patches(100, 8.07), 807);
        assert_eq!(burst_patches(20, 8.0), 160);
        // No write count measured: one patch per claim, as before.
        assert_eq!(burst_patches(20, 0.0), 20);
        assert_eq!(burst_patches(20, f64::NAN), 20);
        assert_eq!(burst_patches(0, 0.0), 1);
    }
}
