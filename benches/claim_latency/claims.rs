//! The bench as a user of the operator: it creates claims, records when a
//! watch first shows each one Ready (client clock) and every claim state the
//! watch delivers (claim uid, its Pod, Ready or not), waits for the pool to
//! refill, and checks at the end, from that record and the end state, that
//! no Pod ever served two claims (`assignments`).
//!
//! Idle Pods are counted from a watch of the pool's Pods (a local store),
//! not by listing them: a LIST every few milliseconds would load the API
//! server the bench measures, and cannot scale to a pool of 5,000.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use sandbox_operator::api::{
    CLAIM_LABEL, CLAIM_UID_LABEL, LaunchType, POOL_LABEL, READY, SandboxClaim, is_true,
};

use crate::assignments::{EndPod, History, Sighting};
use crate::floor::is_ready;
use crate::report::{Observation, Scenario};

/// First moment each claim was seen Ready, with its launch type.
type Seen = Arc<Mutex<HashMap<String, (Instant, Option<LaunchType>)>>>;

/// Milliseconds from each claim's admission stamp (the webhook's clock) to
/// its first watch event here: the API server's commit and watch delivery,
/// as a watcher other than the operator sees them.
type Delivered = Arc<Mutex<HashMap<String, f64>>>;

/// Name of the SandboxTemplate (and pool) every bench claim uses.
pub const TEMPLATE: &str = "bench";

pub struct Claims {
    client: Client,
    ns: String,
    seen: Seen,
    delivered: Delivered,
    starts: Mutex<HashMap<String, Instant>>,
    pool_pods: Store<Pod>,
    /// Every claim state the watch delivered, for the end check.
    history: Arc<Mutex<History>>,
}

impl Claims {
    /// Starts the watches: Ready claims in `ns`, and the pool's Pods.
    pub async fn watch(client: &Client, ns: &str) -> Claims {
        let (pool_pods, writer) = reflector::store();
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pod_events = reflector::reflector(
            writer,
            watcher(pods, watcher::Config::default().labels(POOL_LABEL)).default_backoff(),
        );
        tokio::spawn(pod_events.for_each(|_| futures::future::ready(())));
        pool_pods
            .wait_until_ready()
            .await
            .expect("watch the pool's Pods");
        let (seen, delivered): (Seen, Delivered) = Default::default();
        let (recorder, deliveries) = (seen.clone(), delivered.clone());
        let history: Arc<Mutex<History>> = Arc::default();
        let sightings = history.clone();
        let api: Api<SandboxClaim> = Api::namespaced(client.clone(), ns);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(
                watcher(api, watcher::Config::default())
                    .default_backoff()
                    .applied_objects()
            );
            while let Some(event) = stream.next().await {
                // A watch error (the stream resumes after it) must not end the recording.
                let Ok(claim) = event else { continue };
                if let Some(ms) = since_admission(&claim) {
                    deliveries
                        .lock()
                        .unwrap()
                        .entry(claim.name_any())
                        .or_insert(ms);
                }
                let sighting = sighting(&claim);
                sightings.lock().unwrap().observe(&sighting);
                let status = claim.status.clone().unwrap_or_default();
                if sighting.ready {
                    recorder
                        .lock()
                        .unwrap()
                        .entry(claim.name_any())
                        .or_insert((Instant::now(), status.launch_type));
                }
            }
        });
        Claims {
            client: client.clone(),
            ns: ns.to_string(),
            seen,
            delivered,
            starts: Mutex::default(),
            pool_pods,
            history,
        }
    }

    /// Creates one claim of the bench template (`cold`: `warmpool: none`).
    pub async fn create(&self, name: String, cold: bool) {
        let mut spec = json!({"sandboxTemplateRef": {"name": TEMPLATE}});
        if cold {
            spec["warmpool"] = json!("none");
        }
        let claim: SandboxClaim = serde_json::from_value(json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
            "metadata": {"name": name}, "spec": spec}))
        .unwrap();
        let api: Api<SandboxClaim> = Api::namespaced(self.client.clone(), &self.ns);
        self.starts.lock().unwrap().insert(name, Instant::now());
        api.create(&PostParams::default(), &claim)
            .await
            .expect("create claim");
    }

    /// Creates all claims at once.
    pub async fn create_all(&self, names: &[String]) {
        futures::future::join_all(names.iter().map(|n| self.create(n.clone(), false))).await;
    }

    /// Waits until every named claim was seen Ready; panics after `timeout`.
    pub async fn wait_ready(&self, names: &[String], timeout: Duration) {
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

    /// Idle pool Pods that are Ready and not terminating, as the watch shows them now.
    pub fn idle_ready(&self) -> usize {
        self.pool_pods
            .state()
            .iter()
            .filter(|p| {
                p.labels().contains_key(POOL_LABEL) && p.metadata.deletion_timestamp.is_none()
            })
            .filter(|p| is_ready(p))
            .count()
    }

    /// Waits until at least `at_least` idle Pods are Ready; false after `timeout`.
    pub async fn wait_idle_within(&self, at_least: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while self.idle_ready() < at_least {
            if start.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Waits (300 s at most) until at least `at_least` idle Pods are Ready.
    pub async fn wait_idle(&self, at_least: usize) {
        assert!(
            self.wait_idle_within(at_least, Duration::from_secs(300))
                .await,
            "pool did not refill to {at_least} Ready idle Pods within 300 s"
        );
    }

    /// Start and Ready moments of the named claims.
    pub fn observations(&self, names: &[String]) -> Vec<Observation> {
        let seen = self.seen.lock().unwrap();
        let starts = self.starts.lock().unwrap();
        names
            .iter()
            .map(|n| {
                let (ready, launch) = seen[n];
                Observation {
                    name: n.clone(),
                    start: starts[n],
                    ready,
                    warm: launch == Some(LaunchType::Warm),
                    launch,
                }
            })
            .collect()
    }

    /// Milliseconds from admission to this watch's first event of each
    /// named claim that has both.
    pub fn delivered(&self, names: &[String]) -> std::collections::BTreeMap<String, f64> {
        let delivered = self.delivered.lock().unwrap();
        names
            .iter()
            .filter_map(|n| delivered.get(n).map(|ms| (n.clone(), *ms)))
            .collect()
    }

    /// Summary of the named claims as one scenario.
    pub fn scenario(&self, name: &str, names: &[String]) -> Scenario {
        Scenario::from_observations(name, &self.observations(names))
    }

    /// Violations of "one Pod, one claim" over the whole run (see
    /// `assignments`), each printed to stderr; their number.
    pub async fn double_assignments(&self) -> usize {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items;
        let claims = Api::<SandboxClaim>::namespaced(self.client.clone(), &self.ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items;
        let claims: Vec<Sighting> = claims.iter().map(sighting).collect();
        let pods: Vec<EndPod> = pods
            .iter()
            .map(|p| EndPod {
                name: p.name_any(),
                labels: p.labels().clone(),
                terminating: p.metadata.deletion_timestamp.is_some(),
            })
            .collect();
        let violations = self.history.lock().unwrap().violations(
            &claims,
            &pods,
            (POOL_LABEL, CLAIM_LABEL, CLAIM_UID_LABEL),
        );
        for v in &violations {
            eprintln!("double assignment: {v}");
        }
        violations.len()
    }
}

/// A claim's uid, name, the Pod its status names and whether it is Ready.
fn sighting(claim: &SandboxClaim) -> Sighting {
    let status = claim.status.as_ref();
    Sighting {
        claim_uid: claim.uid().unwrap_or_default(),
        claim: claim.name_any(),
        pod: status.and_then(|s| s.pod_name.clone()),
        ready: status.is_some_and(|s| is_true(&s.conditions, READY)),
    }
}

/// Milliseconds since the claim's admission stamp, now.
fn since_admission(claim: &SandboxClaim) -> Option<f64> {
    let admitted: jiff::Timestamp = claim
        .annotations()
        .get(sandbox_operator::api::ADMITTED_AT_ANNOTATION)?
        .parse()
        .ok()?;
    Some(
        jiff::Timestamp::now()
            .duration_since(admitted)
            .as_secs_f64()
            * 1000.0,
    )
}
