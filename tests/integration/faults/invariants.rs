//! The end state every fault scenario must reach: every claim Ready and
//! served by exactly one Pod it owns, no Pod serving two claims, no Pod or
//! Service whose owner is gone, the pool full of Ready idle Pods, and the
//! operator's pool gauges equal to those objects.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::harness::OperatorProc;
use sandbox_operator::api::{
    CLAIM_LABEL, LaunchType, POOL_LABEL, READY, Sandbox, SandboxClaim, SandboxWarmPool, is_true,
};

/// The value of one sample (`name{labels} value`) whose name and labels
/// contain every given fragment; `None` when absent.
pub fn sample(metrics: &str, name: &str, fragments: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .find(|l| fragments.iter().all(|f| l.contains(f)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// What the namespace looks like once every claim is served.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Claims served warm / cold.
    pub warm: usize,
    /// Claims served cold.
    pub cold: usize,
    /// Idle Pods of the pool (all Ready).
    pub idle: usize,
}

/// Checks the end-state invariants once; `Err` says which one fails.
pub async fn check(
    client: &Client,
    ns: &str,
    claims: usize,
    pool: usize,
) -> Result<Outcome, String> {
    let lp = ListParams::default();
    let list_err = |what: &str, e: kube::Error| format!("listing {what}: {e}");
    let claim_list = Api::<SandboxClaim>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| list_err("claims", e))?
        .items;
    let sandboxes = Api::<Sandbox>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| list_err("sandboxes", e))?
        .items;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| list_err("pods", e))?
        .items;
    let services = Api::<Service>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| list_err("services", e))?
        .items;
    let pools = Api::<SandboxWarmPool>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| list_err("pools", e))?
        .items;

    let mut outcome = Outcome::default();
    let not_ready: Vec<String> = claim_list
        .iter()
        .filter(|c| {
            !c.status
                .as_ref()
                .is_some_and(|s| is_true(&s.conditions, READY))
        })
        .map(|c| c.name_any())
        .collect();
    if claim_list.len() != claims || !not_ready.is_empty() {
        return Err(format!(
            "{} of {claims} claims exist; not Ready: {not_ready:?}",
            claim_list.len()
        ));
    }
    // Owners by uid: only what the operator wrote counts.
    let claim_uids: HashMap<String, String> = claim_list
        .iter()
        .map(|c| (c.uid().unwrap_or_default(), c.name_any()))
        .collect();
    let sandbox_claim: HashMap<String, String> = sandboxes
        .iter()
        .filter_map(|s| {
            let owner = controller_uid(s.owner_references())?;
            Some((s.uid()?, claim_uids.get(owner)?.clone()))
        })
        .collect();
    if sandbox_claim.len() != sandboxes.len() || sandboxes.len() != claims {
        return Err(format!(
            "{} Sandboxes, {} of them owned by an existing claim, {claims} claims",
            sandboxes.len(),
            sandbox_claim.len()
        ));
    }
    let pool_uids: HashSet<String> = pools.iter().filter_map(|p| p.uid()).collect();
    let mut pods_of_claim: HashMap<String, Vec<String>> = HashMap::new();
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let owners: Vec<_> = pod
            .owner_references()
            .iter()
            .filter(|o| o.controller == Some(true))
            .collect();
        let [owner] = owners.as_slice() else {
            return Err(format!(
                "Pod {} has {} controllers",
                pod.name_any(),
                owners.len()
            ));
        };
        if pool_uids.contains(&owner.uid) {
            let ready = pod_ready(pod);
            if pod.labels().contains_key(CLAIM_LABEL) || !pod.labels().contains_key(POOL_LABEL) {
                return Err(format!(
                    "pool-owned Pod {} is not plainly idle",
                    pod.name_any()
                ));
            }
            if !ready {
                return Err(format!("idle Pod {} is not Ready yet", pod.name_any()));
            }
            outcome.idle += 1;
            continue;
        }
        let owner_claim = sandbox_claim
            .get(&owner.uid)
            .or_else(|| claim_uids.get(&owner.uid))
            .ok_or_else(|| {
                format!(
                    "orphaned Pod {} (owner {} gone)",
                    pod.name_any(),
                    owner.name
                )
            })?;
        if pod.labels().get(CLAIM_LABEL) != Some(owner_claim) {
            return Err(format!(
                "Pod {} owned for claim {owner_claim} but labelled {:?}",
                pod.name_any(),
                pod.labels().get(CLAIM_LABEL)
            ));
        }
        pods_of_claim
            .entry(owner_claim.clone())
            .or_default()
            .push(pod.name_any());
    }
    if let Some((claim, pods)) = pods_of_claim.iter().find(|(_, p)| p.len() != 1) {
        return Err(format!("claim {claim} has Pods {pods:?}"));
    }
    let mut served_by: HashMap<String, String> = HashMap::new();
    for c in &claim_list {
        let status = c.status.clone().unwrap_or_default();
        let pod = status.pod_name.clone().unwrap_or_default();
        if pods_of_claim.get(&c.name_any()) != Some(&vec![pod.clone()]) {
            return Err(format!(
                "claim {} reports Pod {pod:?}, owns {:?}",
                c.name_any(),
                pods_of_claim.get(&c.name_any())
            ));
        }
        if let Some(other) = served_by.insert(pod.clone(), c.name_any()) {
            return Err(format!(
                "DOUBLE ASSIGNMENT: Pod {pod} serves {other} and {}",
                c.name_any()
            ));
        }
        match status.launch_type {
            Some(LaunchType::Warm) => outcome.warm += 1,
            Some(LaunchType::Cold) => outcome.cold += 1,
            other => return Err(format!("claim {} launch type {other:?}", c.name_any())),
        }
    }
    for svc in services
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
    {
        let owner = controller_uid(svc.owner_references()).unwrap_or_default();
        // Owned by its Sandbox or (warm path) directly by its claim.
        if !sandbox_claim.contains_key(owner) && !claim_uids.contains_key(owner) {
            return Err(format!("orphaned Service {}", svc.name_any()));
        }
    }
    if outcome.idle != pool {
        return Err(format!(
            "pool has {} idle Ready Pods, wants {pool}",
            outcome.idle
        ));
    }
    Ok(outcome)
}

fn controller_uid(
    owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
) -> Option<&str> {
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Whether a Pod is Running and Ready.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Polls [`check`] until it holds; `Err` with the last reason after
/// `timeout` (at once on a double assignment).
pub async fn try_settle(
    client: &Client,
    ns: &str,
    claims: usize,
    pool: usize,
    timeout: Duration,
) -> Result<Outcome, String> {
    let start = Instant::now();
    loop {
        match check(client, ns, claims, pool).await {
            Ok(outcome) => return Ok(outcome),
            Err(reason) if reason.starts_with("DOUBLE ASSIGNMENT") => return Err(reason),
            Err(reason) if start.elapsed() > timeout => {
                return Err(format!("not settled after {timeout:?}: {reason}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// [`try_settle`], panicking on failure.
pub async fn settle(
    client: &Client,
    ns: &str,
    claims: usize,
    pool: usize,
    timeout: Duration,
) -> Outcome {
    try_settle(client, ns, claims, pool, timeout)
        .await
        .unwrap_or_else(|reason| panic!("{ns}: {reason}"))
}

/// Polls until the operator's pool gauges equal the objects (`pool` idle,
/// all Ready, `pool` desired); returns the last scrape, or `Err` with the
/// pool samples after 15 s.
pub async fn metrics_agree(op: &OperatorProc, ns: &str, pool: usize) -> Result<String, String> {
    let labels = [format!("namespace=\"{ns}\""), "pool=\"pool\"".to_string()];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let agree = |text: &str| {
        ["desired", "ready", "idle"].iter().all(|g| {
            let name = format!("sandbox_operator_pool_{g}_replicas");
            sample(text, &name, &labels) == Some(pool as f64)
        })
    };
    let start = Instant::now();
    loop {
        let text = op.metrics().await;
        if agree(&text) {
            return Ok(text);
        }
        if start.elapsed() > Duration::from_secs(15) {
            let gauges: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("_pool_") && l.contains(ns))
                .collect();
            return Err(format!(
                "pool gauges never matched {pool} idle Ready Pods: {gauges:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
