//! Issue 5: warm pools and claims, the race-free fast path, refill, cold fallback.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{Held, Operator, TestNs, wait_for, wait_until};
use crate::fixtures::{
    SETUP_START_DELAY_MS as START_DELAY_MS, assert_no_double_assignment, claim, claim_ready,
    claim_when_ready, create, idle_ready, is_idle, listening_agent_pod, pool, setup, template_of,
    wait_pool_ready,
};
use sandbox_operator::api::{
    CLAIM_LABEL, LaunchType, ORIGIN_POOL_LABEL, POOL_LABEL, READY, Sandbox, SandboxClaim,
    SandboxTemplate, SandboxWarmPool,
};

#[tokio::test]
async fn warm_claim_is_served_from_the_pool_which_refills() {
    let ns = TestNs::new("claim-warm").await;
    let _op = ns.operator(&[]).await;
    setup(&ns, 5).await;
    wait_pool_ready(&ns, 5).await;
    let pool_pods: HashSet<String> = ns
        .list::<Pod>()
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();

    let start = Instant::now();
    let c = claim_when_ready(&ns, "c1", Duration::from_secs(20)).await;
    println!(
        "warm claim Ready after {:?} (client clock, polling)",
        start.elapsed()
    );
    let status = c.status.unwrap();
    assert_eq!(status.launch_type, Some(LaunchType::Warm));
    let pod_name = status.pod_name.unwrap();
    assert!(pool_pods.contains(&pod_name), "served by a former pool Pod");
    let pod = ns.api::<Pod>().get(&pod_name).await.unwrap();
    assert_eq!(
        pod.labels().get(ORIGIN_POOL_LABEL).map(String::as_str),
        Some("pool")
    );
    // The claim's single Ready write carries the connection facts, and the
    // NetworkPolicy and Service exist by then.
    let sandbox_status = status.sandbox.clone().unwrap();
    assert_eq!(
        sandbox_status.service_fqdn.as_deref(),
        Some(format!("c1.{}.svc.cluster.local", ns.name).as_str())
    );
    assert_eq!(
        sandbox_status.pod_ips,
        pod.status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .map(|ip| vec![ip])
    );
    assert!(status.time_to_ready_seconds.is_some());
    assert!(ns.api::<Service>().get_opt("c1").await.unwrap().is_some());
    assert!(
        ns.api::<k8s_openapi::api::networking::v1::NetworkPolicy>()
            .get_opt("c1-sandbox")
            .await
            .unwrap()
            .is_some()
    );
    // Off the critical path the Sandbox takes the Pod over: claim -> Sandbox -> Pod.
    let pods: Api<Pod> = ns.api();
    let adopted = wait_for(&pods, &pod_name, Duration::from_secs(20), |p| {
        p.owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.kind == "Sandbox")
    })
    .await;
    assert_eq!(adopted.owner_references()[0].name, "c1");
    let out = ns.kubectl(&["wait", "--for=condition=Ready", "sbc/c1", "--timeout=5s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_pool_ready(&ns, 5).await;
    assert_no_double_assignment(&ns).await;
}

#[tokio::test]
async fn empty_pool_serves_cold_after_the_start_delay() {
    let ns = TestNs::new("claim-cold").await;
    let _op = ns.operator(&[]).await;
    setup(&ns, 0).await;
    let start = Instant::now();
    let c = claim_when_ready(&ns, "c1", Duration::from_secs(30)).await;
    let took = start.elapsed();
    println!("cold claim Ready after {took:?} (start delay {START_DELAY_MS} ms)");
    assert_eq!(c.status.unwrap().launch_type, Some(LaunchType::Cold));
    assert!(
        took >= Duration::from_millis(START_DELAY_MS - 100),
        "cold start faster than the simulated delay: {took:?}"
    );
}

#[tokio::test]
async fn a_claim_on_a_dry_pool_takes_the_refill_already_starting() {
    let ns = TestNs::new("claim-starting").await;
    let op = ns.operator(&[]).await;
    // A start long enough that the refill is still starting when the second
    // claim is served, however busy the box.
    create(&ns, &template_of("tmpl", listening_agent_pod(4000))).await;
    create(&ns, &pool("pool", "tmpl", 1)).await;
    wait_pool_ready(&ns, 1).await;
    let first = claim_when_ready(&ns, "c1", Duration::from_secs(20)).await;
    assert_eq!(first.status.unwrap().launch_type, Some(LaunchType::Warm));

    // The steal started a refill; it is not Ready for the simulated start.
    let pods: Api<Pod> = ns.api();
    let refill = wait_until_some(Duration::from_secs(20), || async {
        ns.list::<Pod>()
            .await
            .into_iter()
            .find(is_idle)
            .map(|p| p.name_any())
    })
    .await;
    // Once the operator's cache holds it too (the claim's Pod and the
    // refill): otherwise the claim could come first and go cold, rightly.
    wait_until(Duration::from_secs(20), || async {
        cached_pods(&op.metrics().await) >= 2.0
    })
    .await;
    create(&ns, &claim("c2")).await;
    let claims: Api<SandboxClaim> = ns.api();
    let said = wait_for(&claims, "c2", Duration::from_secs(20), |c| {
        c.status.as_ref().is_some_and(|s| s.pod_name.is_some())
    })
    .await
    .status
    .unwrap();
    assert_eq!(said.pod_name.as_deref(), Some(refill.as_str()), "{said:?}");
    assert_eq!(said.launch_type, Some(LaunchType::Cold), "{said:?}");
    assert_eq!(said.warm_pool.as_deref(), Some("pool"));
    let c2 = wait_for(&claims, "c2", Duration::from_secs(30), claim_ready).await;
    let status = c2.status.unwrap();
    assert_eq!(status.pod_name.as_deref(), Some(refill.as_str()));
    assert_eq!(status.launch_type, Some(LaunchType::Cold));

    // The refill is the claim's, through its Sandbox; no Pod was started
    // for the claim from nothing.
    let pod = pods.get(&refill).await.unwrap();
    assert_eq!(
        pod.labels().get(ORIGIN_POOL_LABEL).map(String::as_str),
        Some("pool")
    );
    let sandbox: Sandbox = ns.api::<Sandbox>().get("c2").await.unwrap();
    let controller = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .cloned()
        .unwrap();
    assert_eq!(
        (controller.kind.as_str(), Some(controller.uid)),
        ("Sandbox", sandbox.uid())
    );
    let started_for_claims = ns
        .list::<Pod>()
        .await
        .iter()
        .filter(|p| !p.labels().contains_key(ORIGIN_POOL_LABEL) && !is_idle(p))
        .map(|p| p.name_any())
        .collect::<Vec<_>>();
    assert!(
        started_for_claims.is_empty(),
        "cold Pods: {started_for_claims:?}"
    );
    // Counted as a pool that ran dry, as a cold start would be.
    let metrics = op.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sandbox_operator_pool_exhausted_total{") && l.ends_with(" 1")),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("pool_exhausted"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    wait_pool_ready(&ns, 1).await;
    assert_no_double_assignment(&ns).await;
}

/// The operator's `tracked_entries{table="pod_cache"}`: the Pods its cache
/// holds.
fn cached_pods(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("sandbox_operator_tracked_entries{table=\"pod_cache\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `probe` until it gives a value (at most `timeout`).
async fn wait_until_some<T, F, Fut>(timeout: Duration, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < timeout, "nothing after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn burst(ns: &TestNs, n: usize) {
    let claims: Api<SandboxClaim> = ns.api();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let claims = claims.clone();
            tokio::spawn(async move {
                claims
                    .create(&PostParams::default(), &claim(&format!("b{i}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn wait_all_ready(ns: &TestNs, n: usize) {
    let claims: Api<SandboxClaim> = ns.api();
    wait_until(Duration::from_secs(120), || async {
        let list = claims.list(&Default::default()).await.unwrap().items;
        list.len() == n && list.iter().all(claim_ready)
    })
    .await;
}

#[tokio::test]
async fn burst_larger_than_the_pool_is_served_without_double_assignment() {
    let ns = TestNs::new("claim-burst").await;
    let op = ns.operator(&[]).await;
    setup(&ns, 10).await;
    wait_pool_ready(&ns, 10).await;
    burst(&ns, 30).await;
    wait_all_ready(&ns, 30).await;
    let (warm, cold) = assert_no_double_assignment(&ns).await;
    println!("burst of 30 on a pool of 10: {warm} warm, {cold} cold");
    assert_eq!(warm + cold, 30);
    assert!(
        (8..=12).contains(&warm),
        "about 10 warm expected, got {warm}"
    );
    let metrics = op.metrics().await;
    assert!(metrics.contains("sandbox_operator_steal_attempts_total"));
}

#[tokio::test]
async fn two_controllers_at_once_never_double_assign() {
    let ns = TestNs::new("claim-split").await;
    let a = ns.operator(&[]).await;
    setup(&ns, 10).await;
    wait_pool_ready(&ns, 10).await;
    // The second process starts on a full pool. Two pool controllers without
    // leader election may overshoot the pool size for a while (each refills);
    // what must hold is that no Pod ever serves two claims.
    let b = ns.operator(&[]).await;
    burst(&ns, 30).await;
    wait_all_ready(&ns, 30).await;
    // Let surplus steals of the losing process settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (warm, cold) = assert_no_double_assignment(&ns).await;
    let conflicts = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("sandbox_operator_steal_conflicts_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    let errors = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("sandbox_operator_reconcile_errors_total"))
            .count()
    };
    println!(
        "two controllers, burst 30 on pool 10: {warm} warm, {cold} cold, conflicts {} + {}, error series {} + {}",
        conflicts(&ma),
        conflicts(&mb),
        errors(&ma),
        errors(&mb)
    );
    assert_eq!(warm + cold, 30);
}

#[tokio::test]
async fn kill_9_mid_burst_loses_no_claim_and_leaks_no_pod() {
    let ns = TestNs::new("claim-crash").await;
    // Controller crash test: no webhook (see the sandbox crash test).
    let op = ns.operator(&["--webhook=false"]).await;
    setup(&ns, 10).await;
    wait_pool_ready(&ns, 10).await;
    let claims: Api<SandboxClaim> = ns.api();
    let creator = {
        let claims = claims.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                claims
                    .create(&PostParams::default(), &claim(&format!("k{i}")))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    op.kill().await;
    creator.await.unwrap();
    let _op: Operator = ns.operator(&["--webhook=false"]).await;
    wait_all_ready(&ns, 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (warm, cold) = assert_no_double_assignment(&ns).await;
    println!("kill -9 mid-burst: {warm} warm, {cold} cold, all 30 Ready");
    // Every claimed Pod belongs to exactly one claim (checked above); every
    // claim has exactly one live Pod.
    let pods: Vec<Pod> = ns.list::<Pod>().await;
    let mut per_claim: HashMap<String, usize> = HashMap::new();
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        if let Some(c) = p.labels().get(CLAIM_LABEL) {
            *per_claim.entry(c.clone()).or_default() += 1;
        }
    }
    let extra: Vec<_> = per_claim.iter().filter(|(_, n)| **n > 1).collect();
    assert!(extra.is_empty(), "claims with more than one Pod: {extra:?}");
}

#[tokio::test]
async fn template_change_replaces_idle_pods_only() {
    let ns = TestNs::new("claim-rollout").await;
    let _op = ns.operator(&[]).await;
    setup(&ns, 4).await;
    wait_pool_ready(&ns, 4).await;
    let c = claim_when_ready(&ns, "keep", Duration::from_secs(20)).await;
    // The Sandbox adopts the Pod after the claim says Ready (off the critical
    // path): take the claimed Pod's version once that write is done.
    let pod_name = c.status.as_ref().unwrap().pod_name.clone().unwrap();
    let adopted = |p: &Pod| {
        p.owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.kind == "Sandbox")
    };
    wait_until(Duration::from_secs(20), || async {
        adopted(&ns.api::<Pod>().get(&pod_name).await.unwrap())
    })
    .await;
    let claimed = ns.api::<Pod>().get(&pod_name).await.unwrap();
    wait_pool_ready(&ns, 4).await;
    let before: HashSet<String> = ns
        .list::<Pod>()
        .await
        .iter()
        .filter(|p| p.labels().contains_key(POOL_LABEL))
        .map(|p| p.name_any())
        .collect();
    ns.api::<SandboxTemplate>()
        .patch(
            "tmpl",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"podTemplate": {"metadata": {"labels": {"version": "2"}}}}}),
            ),
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), || async {
        let pods = ns.list::<Pod>().await;
        let idle: Vec<&Pod> = pods.iter().filter(|p| is_idle(p)).collect();
        idle.len() == 4
            && idle.iter().all(|p| {
                p.labels().get("version").map(String::as_str) == Some("2")
                    && !before.contains(&p.name_any())
            })
    })
    .await;
    let after = ns.api::<Pod>().get(&claimed.name_any()).await.unwrap();
    assert_eq!(after.uid(), claimed.uid(), "claimed Pod still there");
    assert_eq!(
        after.metadata.resource_version, claimed.metadata.resource_version,
        "claimed Pod untouched"
    );
}

/// A template change under steady claims: no current Pod is Ready, so
/// every claim takes a starting one and the pool starts it again; the
/// pool's current Pods are then always starting. Before (found by review)
/// the rollout replaced outdated Pods only while fewer than
/// `--rollout-batch` current Pods were starting, so here it stopped after
/// its first batch and the outdated Pods, which no claim takes, kept their
/// slots for as long as the claims came. The new template's Pods start in
/// 20 s, so a rollout done sooner did not wait for any of them to turn
/// Ready: it went on because claims took its replacements.
#[tokio::test]
async fn a_rollout_goes_on_while_claims_keep_taking_starting_pods() {
    const NEW_START_MS: u64 = 20_000;
    let ns = TestNs::new("claim-rollout-load").await;
    let _op = ns.operator(&["--rollout-batch", "2"]).await;
    create(&ns, &template_of("tmpl", listening_agent_pod(1000))).await;
    create(&ns, &pool("pool", "tmpl", 4)).await;
    wait_pool_ready(&ns, 4).await;
    let outdated = |pods: &[Pod], before: &HashSet<String>| -> Vec<String> {
        pods.iter()
            .filter(|p| is_idle(p) && before.contains(&p.name_any()))
            .map(|p| p.name_any())
            .collect()
    };
    let before: HashSet<String> = ns
        .list::<Pod>()
        .await
        .iter()
        .filter(|p| is_idle(p))
        .map(|p| p.name_any())
        .collect();
    let change = json!({"spec": {"podTemplate": {"metadata": {
        "labels": {"version": "2"},
        "annotations": {"sandbox.test/start-delay-ms": NEW_START_MS.to_string()}}}}});
    ns.api::<SandboxTemplate>()
        .patch("tmpl", &PatchParams::default(), &Patch::Merge(change))
        .await
        .unwrap();
    // A claim every 0.7 s, at most 60 of them (42 s).
    let started = Instant::now();
    for n in 0..60 {
        let left = outdated(&ns.list::<Pod>().await, &before);
        if left.is_empty() {
            let took = started.elapsed();
            println!("every outdated idle Pod replaced after {took:?} and {n} claims");
            assert!(
                took < Duration::from_millis(NEW_START_MS),
                "the rollout ended after {took:?}, when a replacement may have turned Ready"
            );
            assert_no_double_assignment(&ns).await;
            return;
        }
        create(&ns, &claim(&format!("c{n}"))).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let left = outdated(&ns.list::<Pod>().await, &before);
    panic!(
        "{} outdated idle Pods ({left:?}) still hold their slots after {:?} and 60 claims \
         (rollout batch 2, new Pods start in 20 s)",
        left.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn deleting_a_claim_or_pool_cleans_up_exactly_what_they_own() {
    let ns = TestNs::new("claim-gc").await;
    let _op = ns.operator(&[]).await;
    setup(&ns, 3).await;
    wait_pool_ready(&ns, 3).await;
    let claims: Api<SandboxClaim> = ns.api();
    claims
        .create(&PostParams::default(), &claim("gone"))
        .await
        .unwrap();
    claims
        .create(&PostParams::default(), &claim("stays"))
        .await
        .unwrap();
    let c = wait_for(&claims, "gone", Duration::from_secs(20), claim_ready).await;
    let stays = wait_for(&claims, "stays", Duration::from_secs(20), claim_ready).await;
    let pod = c.status.unwrap().pod_name.unwrap();
    assert!(
        ns.api::<NetworkPolicy>()
            .get_opt("gone-sandbox")
            .await
            .unwrap()
            .is_some(),
        "claim has its NetworkPolicy"
    );
    claims.delete("gone", &Default::default()).await.unwrap();
    wait_until(Duration::from_secs(90), || async {
        ns.api::<Sandbox>().get_opt("gone").await.unwrap().is_none()
            && ns.api::<Pod>().get_opt(&pod).await.unwrap().is_none()
            && ns.api::<Service>().get_opt("gone").await.unwrap().is_none()
            && ns
                .api::<NetworkPolicy>()
                .get_opt("gone-sandbox")
                .await
                .unwrap()
                .is_none()
    })
    .await;

    wait_pool_ready(&ns, 3).await;
    ns.api::<SandboxWarmPool>()
        .delete("pool", &Default::default())
        .await
        .unwrap();
    wait_until(Duration::from_secs(90), || async {
        ns.list::<Pod>()
            .await
            .iter()
            .all(|p| !p.labels().contains_key(POOL_LABEL))
    })
    .await;
    let served = stays.status.unwrap().pod_name.unwrap();
    assert!(
        ns.api::<Pod>().get_opt(&served).await.unwrap().is_some(),
        "claimed Pod survives the pool's deletion"
    );
}

#[tokio::test]
async fn kubectl_scale_converges_without_over_creation() {
    let ns = TestNs::new("claim-scale").await;
    let _op = ns.operator(&[]).await;
    setup(&ns, 2).await;
    wait_pool_ready(&ns, 2).await;
    let count = || async { ns.list::<Pod>().await.iter().filter(|p| is_idle(p)).count() };
    for target in [12usize, 3, 8] {
        let out = ns.kubectl(&["scale", "swp/pool", &format!("--replicas={target}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let start = Instant::now();
        let mut max_seen = 0;
        let mut converged = false;
        while start.elapsed() < Duration::from_secs(60) {
            let n = count().await;
            max_seen = max_seen.max(n);
            if n == target && idle_ready(&ns).await == target {
                converged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(converged, "pool did not converge to {target}");
        if target > 3 {
            assert!(
                max_seen <= target,
                "over-creation: saw {max_seen} idle Pods for {target} replicas"
            );
        }
        // Stays at the target.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(count().await, target);
    }
    let pools: Api<SandboxWarmPool> = ns.api();
    wait_for(&pools, "pool", Duration::from_secs(10), |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.replicas == 8 && s.ready_replicas == 8)
    })
    .await;
}

#[tokio::test]
async fn a_pool_whose_pods_cannot_be_scheduled_says_why() {
    let ns = TestNs::new("pool-unsched").await;
    let _op = ns.operator(&[]).await;
    let unschedulable = json!({"spec": {"nodeSelector": {"sandbox.test/no-such-node": "true"},
        "containers": [{"name": "agent", "image": "busybox"}]}});
    create(&ns, &template_of("nowhere", unschedulable)).await;
    create(&ns, &pool("nowhere", "nowhere", 2)).await;
    let pools = ns.api::<SandboxWarmPool>();
    let stuck = wait_for(&pools, "nowhere", Duration::from_secs(60), |p| {
        p.status
            .as_ref()
            .and_then(|s| sandbox_operator::api::find_condition(&s.conditions, READY))
            .is_some_and(|c| c.reason == "PodsUnschedulable")
    })
    .await;
    let status = stuck.status.unwrap();
    let message = &sandbox_operator::api::find_condition(&status.conditions, READY)
        .unwrap()
        .message;
    assert!(
        message.contains("node"),
        "the scheduler's message: {message}"
    );
    // No more Pods than the pool's size are created for the stuck ones.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ns.list::<Pod>().await.len(), 2);
}

/// Waits until the Sandbox `name` is Ready (it has adopted its claim's Pod).
async fn sandbox_ready(ns: &TestNs, name: &str) -> Sandbox {
    wait_for(
        &ns.api::<Sandbox>(),
        name,
        Duration::from_secs(30),
        |s: &Sandbox| {
            s.status
                .as_ref()
                .is_some_and(|st| sandbox_operator::api::is_true(&st.conditions, READY))
        },
    )
    .await
}

/// The claim's Ready condition (reason, status) and whether its status
/// names a Pod or an IP.
fn said(c: &SandboxClaim) -> (String, String, bool) {
    let status = c.status.clone().unwrap_or_default();
    let ready = sandbox_operator::api::find_condition(&status.conditions, READY).cloned();
    let names_a_pod = status.pod_name.is_some()
        || status
            .sandbox
            .as_ref()
            .is_some_and(|s| s.pod_ips.is_some() || s.service_fqdn.is_some());
    (
        ready.as_ref().map(|c| c.status.clone()).unwrap_or_default(),
        ready.map(|c| c.reason).unwrap_or_default(),
        names_a_pod,
    )
}

/// A Ready claim whose Sandbox was deleted (and with it, by the garbage
/// collector, its Pod) and that cannot be served again (its template is
/// gone) says `TemplateNotFound` and names no Sandbox, Pod or IP: the
/// deleted Pod's IP may go to a later Pod. Before (found by review), the
/// failure kept the deleted Sandbox's Pod name and IPs for good. How it was
/// served stays.
#[tokio::test]
async fn a_claim_failing_after_its_sandbox_was_deleted_names_no_pod() {
    let (ns, _op, served) = a_warm_claim_served("claim-fail-gone").await;
    assert!(served.pod_name.is_some(), "{served:?}");
    let pod = served.pod_name.clone().unwrap();
    sandbox_ready(&ns, "c1").await;

    ns.api::<SandboxTemplate>()
        .delete("tmpl", &Default::default())
        .await
        .unwrap();
    ns.api::<Sandbox>()
        .delete("c1", &Default::default())
        .await
        .unwrap();
    let claims: Api<SandboxClaim> = ns.api();
    crate::fixtures::wait_not_ready_for(&claims, "c1", "TemplateNotFound").await;
    let status = claims.get("c1").await.unwrap().status.unwrap();
    assert!(
        status.pod_name.is_none() && status.sandbox.is_none(),
        "a claim whose Sandbox was deleted still names its Pod {pod}: {status:?}"
    );
    assert_eq!(status.launch_type, Some(LaunchType::Warm), "{status:?}");
    assert_eq!(status.ready_time, served.ready_time, "{status:?}");
    wait_until(Duration::from_secs(30), || async {
        ns.api::<Pod>().get_opt(&pod).await.unwrap().is_none()
    })
    .await;
}

/// A warm claim's Sandbox paused and resumed (a Pod of its own, started
/// for it) still says how the claim was served: `warm`, from its pool, in
/// the time it took then. Before (found by review), it said `cold` next to
/// the pool and the warm time.
#[tokio::test]
async fn a_warm_claim_stays_warm_after_its_sandbox_is_paused_and_resumed() {
    let (ns, _op, served) = a_warm_claim_served("claim-resume").await;
    assert_eq!(served.launch_type, Some(LaunchType::Warm));
    assert_eq!(served.warm_pool.as_deref(), Some("pool"));
    let first = served.pod_name.clone().unwrap();
    sandbox_ready(&ns, "c1").await;

    let sandboxes: Api<Sandbox> = ns.api();
    let scale = |replicas: i32| {
        let sandboxes = sandboxes.clone();
        async move {
            sandboxes
                .patch(
                    "c1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": replicas}})),
                )
                .await
                .unwrap();
        }
    };
    let claims: Api<SandboxClaim> = ns.api();
    scale(0).await;
    let paused = wait_for(&claims, "c1", Duration::from_secs(30), |c| !claim_ready(c)).await;
    assert_eq!(
        paused.status.as_ref().and_then(|s| s.launch_type),
        Some(LaunchType::Warm),
        "{paused:?}"
    );
    scale(1).await;
    let resumed = wait_for(&claims, "c1", Duration::from_secs(30), |c| {
        claim_ready(c)
            && c.status
                .as_ref()
                .is_some_and(|s| s.pod_name.as_ref().is_some_and(|p| *p != first))
    })
    .await
    .status
    .unwrap();
    assert_eq!(resumed.launch_type, Some(LaunchType::Warm), "{resumed:?}");
    assert_eq!(resumed.warm_pool.as_deref(), Some("pool"), "{resumed:?}");
    assert_eq!(resumed.time_to_ready_seconds, served.time_to_ready_seconds);
    assert_eq!(resumed.ready_time, served.ready_time);
}

/// A claim expiring with `shutdownPolicy: DeleteForeground` that something
/// keeps (a finalizer, here the test's) says `ClaimExpired` and names no
/// Pod or IP while it waits, from before its deletion on: once it is being
/// deleted, nothing writes its status. Before (found by review), it stayed
/// Ready on the Pod being deleted. (A foreground deletion waits only for
/// dependents with `blockOwnerDeletion`, which the claim's Sandbox and the
/// Sandbox's Pod do not carry: a finalizer on the Pod alone does not keep
/// the claim.)
#[tokio::test]
async fn a_claim_expiring_in_the_foreground_names_no_pod_while_it_waits() {
    let ns = TestNs::new("claim-expire-fg").await;
    let _op = ns.operator(&[]).await;
    setup(&ns, 1).await;
    wait_pool_ready(&ns, 1).await;
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(8);
    let lifecycle = json!({"shutdownTime": at.to_string(), "shutdownPolicy": "DeleteForeground"});
    create(
        &ns,
        &crate::fixtures::claim_of(
            "fg",
            json!({"sandboxTemplateRef": {"name": "tmpl"}, "lifecycle": lifecycle}),
        ),
    )
    .await;
    let _held = Held::on(&ns, "sandboxclaim", "fg");
    let claims: Api<SandboxClaim> = ns.api();
    let ready = wait_for(&claims, "fg", Duration::from_secs(20), claim_ready).await;
    let pod = ready.status.unwrap().pod_name.unwrap();
    sandbox_ready(&ns, "fg").await;

    let deleting = wait_for(&claims, "fg", Duration::from_secs(30), |c| {
        c.metadata.deletion_timestamp.is_some()
    })
    .await;
    // At every look while it waits (and its Pod goes).
    let start = Instant::now();
    let mut c = deleting;
    loop {
        let (status, reason, names_a_pod) = said(&c);
        assert!(
            status == "False" && reason == "ClaimExpired" && !names_a_pod,
            "a claim being deleted on expiry still says {status} {reason}, naming Pod {pod}: {:?}",
            c.status
        );
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        c = claims.get("fg").await.unwrap();
    }
    drop(_held);
    wait_until(Duration::from_secs(30), || async {
        claims.get_opt("fg").await.unwrap().is_none()
    })
    .await;
}

/// A claim whose Sandbox is being deleted (kept here by the test's
/// finalizer) says so: not Ready, no Pod or IP; the Sandbox's controller
/// writes nothing then. Before (found by review), the claim mirrored the
/// Sandbox's last status: Ready, on a Pod being deleted. Once the Sandbox
/// is gone the claim is served again, and still says how it was first.
#[tokio::test]
async fn a_claim_whose_sandbox_is_being_deleted_is_not_ready() {
    let (ns, _op, served) = a_warm_claim_served("claim-sbx-deleting").await;
    let pod = served.pod_name.clone().unwrap();
    sandbox_ready(&ns, "c1").await;

    let held = Held::on(&ns, "sandbox", "c1");
    ns.api::<Sandbox>()
        .delete("c1", &kube::api::DeleteParams::foreground())
        .await
        .unwrap();
    let claims: Api<SandboxClaim> = ns.api();
    let waiting = wait_for(&claims, "c1", Duration::from_secs(30), |c| {
        let (status, reason, _) = said(c);
        status == "False" && reason == "SandboxNotReady"
    })
    .await;
    let (_, _, names_a_pod) = said(&waiting);
    assert!(
        !names_a_pod,
        "a claim whose Sandbox is being deleted names Pod {pod}: {:?}",
        waiting.status
    );
    let message = crate::fixtures::ready_condition(&waiting).unwrap().message;
    assert!(message.contains("being deleted"), "{message}");

    drop(held);
    let again = wait_for(&claims, "c1", Duration::from_secs(60), |c| {
        claim_ready(c)
            && c.status
                .as_ref()
                .is_some_and(|s| s.pod_name.as_ref().is_some_and(|p| *p != pod))
    })
    .await
    .status
    .unwrap();
    assert_eq!(again.launch_type, served.launch_type, "{again:?}");
    assert_eq!(again.ready_time, served.ready_time, "{again:?}");
}

/// A namespace with the operator and a Ready pool of one, and the status
/// of the claim `c1` served from it, Ready.
async fn a_warm_claim_served(
    prefix: &str,
) -> (
    TestNs,
    crate::common::Operator,
    sandbox_operator::api::SandboxClaimStatus,
) {
    let ns = TestNs::new(prefix).await;
    let op = ns.operator(&[]).await;
    setup(&ns, 1).await;
    wait_pool_ready(&ns, 1).await;
    let served = claim_when_ready(&ns, "c1", Duration::from_secs(20))
        .await
        .status
        .unwrap();
    (ns, op, served)
}
