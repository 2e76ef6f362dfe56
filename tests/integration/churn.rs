//! Issue 18 point 5: the operator's in-memory state and metric series do not
//! grow over churn. Rounds of pools, templates and claims are created, served
//! and deleted (in a different order each round); afterwards every table the
//! operator exports in `sandbox_operator_tracked_entries` is back to its
//! baseline and no series names a pool or template that is gone. RSS per
//! round is printed, not asserted (the table sizes are the proof).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::common::{Operator, TestNs, wait_for, wait_until_ok};
use sandbox_operator::api::{Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};

const ROUNDS: usize = 3;

/// `table -> entries` from the operator's `sandbox_operator_tracked_entries`.
fn tracked(metrics: &str) -> BTreeMap<String, i64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("sandbox_operator_tracked_entries{table=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(table, v)| (table.to_string(), v.trim().parse().unwrap_or(-1)))
        .collect()
}

/// Series that name a pool or template (every one of the test's is deleted).
fn object_series(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && (l.contains("pool=\"") || l.contains("template=\"")))
        .map(String::from)
        .collect()
}

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn create<K>(api: &Api<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

/// Two templates, a pool of each, and claims warm and cold on both.
async fn round_up(ns: &TestNs, round: usize) -> Vec<String> {
    let (templates, pools, claims) = (
        ns.api::<SandboxTemplate>(),
        ns.api::<SandboxWarmPool>(),
        ns.api::<SandboxClaim>(),
    );
    for i in 0..2 {
        create(&templates, json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
            "metadata": {"name": format!("t-{round}-{i}")},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "agent", "image": "busybox"}]}}}
        })).await;
        create(
            &pools,
            json!({
                "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
                "metadata": {"name": format!("p-{round}-{i}")},
                "spec": {"replicas": 2, "sandboxTemplateRef": {"name": format!("t-{round}-{i}")}}
            }),
        )
        .await;
    }
    for i in 0..2 {
        wait_for(
            &pools,
            &format!("p-{round}-{i}"),
            Duration::from_secs(30),
            |p| p.status.as_ref().is_some_and(|s| s.ready_replicas == 2),
        )
        .await;
    }
    let mut names = Vec::new();
    for (i, pool) in ["default", "default", "none"].iter().enumerate() {
        for t in 0..2 {
            let name = format!("c-{round}-{t}-{i}");
            create(&claims, json!({
                "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
                "metadata": {"name": name},
                "spec": {"sandboxTemplateRef": {"name": format!("t-{round}-{t}")}, "warmpool": pool}
            }))
            .await;
            names.push(name);
        }
    }
    for name in &names {
        wait_for(
            &claims,
            name,
            Duration::from_secs(30),
            crate::fixtures::claim_ready,
        )
        .await;
    }
    names
}

/// Deletes every claim, pool and template, in an order that depends on the round.
async fn round_down(ns: &TestNs, round: usize) {
    let all = ListParams::default();
    let delete = DeleteParams::background();
    for step in 0..3 {
        match (round + step) % 3 {
            0 => drop(
                ns.api::<SandboxClaim>()
                    .delete_collection(&delete, &all)
                    .await
                    .unwrap(),
            ),
            1 => drop(
                ns.api::<SandboxWarmPool>()
                    .delete_collection(&delete, &all)
                    .await
                    .unwrap(),
            ),
            _ => drop(
                ns.api::<SandboxTemplate>()
                    .delete_collection(&delete, &all)
                    .await
                    .unwrap(),
            ),
        }
    }
}

/// Pods, Sandboxes, Services and NetworkPolicies left in the namespace.
async fn leftovers(ns: &TestNs) -> usize {
    let all = ListParams::default();
    ns.api::<Pod>()
        .list(&all)
        .await
        .map_or(usize::MAX, |l| l.items.len())
        + ns.api::<Sandbox>()
            .list(&all)
            .await
            .map_or(usize::MAX, |l| l.items.len())
        + ns.api::<Service>()
            .list(&all)
            .await
            .map_or(usize::MAX, |l| l.items.len())
        + ns.api::<NetworkPolicy>()
            .list(&all)
            .await
            .map_or(usize::MAX, |l| l.items.len())
}

#[tokio::test]
async fn state_and_series_return_to_baseline_after_churn() {
    let started = Instant::now();
    let ns = TestNs::new("churn").await;
    let op = Operator::start(&ns.name, &[]).await;
    // /readyz answers before the controllers (and their tables) start.
    let started_tables = wait_until_ok(Duration::from_secs(30), || async {
        tracked(&op.metrics().await).contains_key("expectations")
    })
    .await;
    let baseline = tracked(&op.metrics().await);
    assert!(started_tables, "no tracked-entries gauge: {baseline:?}");
    println!("baseline: {baseline:?}, rss {} KiB", rss_kib(op.pid()));
    // Tables and series while each round's objects exist: the return to
    // baseline below proves nothing unless the state grew meanwhile (a
    // gauge stuck at its baseline, or series never exported, would pass it).
    let mut busy_rounds = Vec::new();
    for round in 0..ROUNDS {
        let claims = round_up(&ns, round).await;
        let text = op.metrics().await;
        let (busy, busy_series) = (tracked(&text), object_series(&text));
        let pool_label = format!("pool=\"p-{round}-");
        assert!(
            busy_series.iter().any(|l| l.contains(&pool_label)),
            "round {round}: no series names this round's pools while they exist \
             ({} per-object series, first: {:?})",
            busy_series.len(),
            &busy_series[..busy_series.len().min(10)]
        );
        busy_rounds.push(busy.clone());
        round_down(&ns, round).await;
        let cleaned = wait_until_ok(Duration::from_secs(30), || async {
            leftovers(&ns).await == 0
        })
        .await;
        assert!(
            cleaned,
            "objects left after round {round}: {}",
            leftovers(&ns).await
        );
        println!(
            "round {round} ({:.1} s): {} claims Ready, then deleted; rss {} KiB; tables while busy: {busy:?}; {} per-object series",
            started.elapsed().as_secs_f64(),
            claims.len(),
            rss_kib(op.pid()),
            busy_series.len()
        );
    }
    assert!(
        busy_rounds.iter().any(|busy| *busy != baseline),
        "the tracked-entry tables never left their baseline {baseline:?} while a round's \
         objects existed: {busy_rounds:?}"
    );
    // Expired write memos go after their TTL (30 s); everything else at
    // the next sweep.
    let last = std::sync::Mutex::new((BTreeMap::new(), Vec::new()));
    let back = wait_until_ok(Duration::from_secs(45), || async {
        let text = op.metrics().await;
        let (now, series) = (tracked(&text), object_series(&text));
        let done = now == baseline && series.is_empty();
        *last.lock().unwrap() = (now, series);
        done
    })
    .await;
    let last = last.into_inner().unwrap();
    println!(
        "after churn ({:.1} s): {:?}, rss {} KiB",
        started.elapsed().as_secs_f64(),
        last.0,
        rss_kib(op.pid())
    );
    assert!(
        back,
        "in-memory state did not return to its baseline {baseline:?}: now {:?}; {} series of deleted objects, first: {:?}",
        last.0,
        last.1.len(),
        &last.1[..last.1.len().min(10)]
    );
}
