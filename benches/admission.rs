//! Admission throughput and latency, single-threaded and self-timed.
//!
//! Each iteration does what the webhook does for one review, minus TLS and
//! HTTP: decode an AdmissionReview carrying a typical Sandbox (the seed's AIO
//! Sandbox as `kubectl apply` sends it), run the policy, encode the answer.
//! It is measured separately for `/mutate` (answer carries a JSON patch) and
//! `/validate`, and once more with no policy at all (decode, admit, encode)
//! as the baseline the policy adds to. Reported: reviews per second over the whole run, and the 50th
//! and 99th percentile of the per-review times.
//!
//! ```text
//! cargo bench --bench admission
//! ADMISSION_BENCH_ITERS=1000000 cargo bench --bench admission
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use sandbox_operator::admission::{PolicyStore, SandboxAdmission};
use sandbox_webhook::{AdmissionHandler, Endpoint};
use serde_json::{Value, json};

const DEFAULT_ITERATIONS: usize = 200_000;

/// The seed's AIO Sandbox wrapped in a CREATE review, as the API server
/// sends it (with kubectl's last-applied annotation, which is most of the
/// metadata of a real request).
fn review_body() -> Vec<u8> {
    let sandbox: Value = serde_yaml::from_str(include_str!("../examples/aio-sandbox.yaml"))
        .expect("the example parses");
    let mut object = sandbox.clone();
    object["metadata"] = json!({
        "name": "aio-sandbox-example",
        "namespace": "agents",
        "uid": "5f0e3c52-7a55-4b3a-9c0e-2d1f3b9e8a41",
        "creationTimestamp": null,
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": sandbox.to_string(),
        },
    });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b6c6f7e-1d2c-4b7e-9f1a-3c5d7e9f1a2b",
            "kind": {"group": "agents.x-k8s.io", "version": "v1alpha1", "kind": "Sandbox"},
            "resource": {"group": "agents.x-k8s.io", "version": "v1alpha1", "resource": "sandboxes"},
            "requestKind": {"group": "agents.x-k8s.io", "version": "v1alpha1", "kind": "Sandbox"},
            "requestResource": {"group": "agents.x-k8s.io", "version": "v1alpha1", "resource": "sandboxes"},
            "name": "aio-sandbox-example",
            "namespace": "agents",
            "operation": "CREATE",
            "userInfo": {"username": "agent-gateway", "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }))
    .expect("the review encodes")
}

/// What runs between decoding and encoding.
#[derive(Clone, Copy)]
enum Stage {
    /// The policy behind one endpoint.
    Policy(Endpoint),
    /// Nothing: admit unchanged. The baseline cost of decoding and encoding.
    Codec,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Policy(endpoint) => endpoint.as_str(),
            Stage::Codec => "codec only",
        }
    }
}

/// One full review: bytes in, bytes out.
fn handle(handler: &SandboxAdmission, stage: Stage, body: &[u8]) -> Vec<u8> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).expect("the review decodes");
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().expect("the review has a request");
    let response = match stage {
        Stage::Policy(Endpoint::Mutate) => handler.mutate(&request),
        Stage::Policy(Endpoint::Validate) => handler.validate(&request),
        Stage::Codec => AdmissionResponse::from(&request),
    };
    serde_json::to_vec(&response.into_review()).expect("the answer encodes")
}

struct Summary {
    reviews_per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn measure(handler: &SandboxAdmission, stage: Stage, body: &[u8], iterations: usize) -> Summary {
    for _ in 0..iterations.div_ceil(100).max(1_000) {
        black_box(handle(handler, stage, black_box(body)));
    }
    let mut samples = Vec::with_capacity(iterations);
    let started = Instant::now();
    for _ in 0..iterations {
        let begin = Instant::now();
        black_box(handle(handler, stage, black_box(body)));
        samples.push(begin.elapsed());
    }
    let total = started.elapsed();
    samples.sort_unstable();
    let percentile = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    Summary {
        reviews_per_second: iterations as f64 / total.as_secs_f64(),
        p50: percentile(50),
        p99: percentile(99),
    }
}

fn main() {
    let iterations = std::env::var("ADMISSION_BENCH_ITERS")
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_ITERATIONS);
    let handler = SandboxAdmission::new(PolicyStore::default());
    let body = review_body();

    // What is timed must be what the webhook answers: a patch, and an admit.
    let mutated: Value =
        serde_json::from_slice(&handle(&handler, Stage::Policy(Endpoint::Mutate), &body)).unwrap();
    assert_eq!(mutated["response"]["allowed"], true);
    assert_eq!(mutated["response"]["patchType"], "JSONPatch");
    let validated: Value =
        serde_json::from_slice(&handle(&handler, Stage::Policy(Endpoint::Validate), &body))
            .unwrap();
    assert_eq!(validated["response"]["allowed"], true);

    println!(
        "admission: {iterations} reviews per endpoint, {} byte Sandbox review, one thread",
        body.len()
    );
    for stage in [
        Stage::Policy(Endpoint::Mutate),
        Stage::Policy(Endpoint::Validate),
        Stage::Codec,
    ] {
        let summary = measure(&handler, stage, &body, iterations);
        println!(
            "{:<10} {:>10.0} reviews/s   p50 {:>7.1} µs   p99 {:>7.1} µs",
            stage.name(),
            summary.reviews_per_second,
            summary.p50.as_secs_f64() * 1e6,
            summary.p99.as_secs_f64() * 1e6,
        );
    }
}
