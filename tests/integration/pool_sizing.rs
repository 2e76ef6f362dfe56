//! Issue 14 (warm pool sizing) and issue 13 item 3 (pool deletes never race
//! a steal), against the real API server.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::common::{TestNs, free_port, http_get, kubeconfig, repo, wait_until, wait_until_ok};
use crate::fixtures::{claim, create, is_idle, pool_of, template};
use sandbox_operator::api::{
    CLAIM_LABEL, LaunchType, POD_NAME_ANNOTATION, READY, Sandbox, SandboxClaim, SandboxWarmPool,
    find_condition, is_true,
};

/// Simulated Pod start (KWOK delay annotation): the pool's refill time.
const START_DELAY_MS: u64 = 1000;

async fn create_template(ns: &TestNs) {
    create(ns, &template("tmpl", START_DELAY_MS)).await;
}

async fn create_pool(ns: &TestNs, spec: serde_json::Value) {
    create(ns, &pool_of("pool", spec)).await;
}

async fn create_claim(api: &Api<SandboxClaim>, name: &str) {
    api.create(&PostParams::default(), &claim(name))
        .await
        .unwrap();
}

async fn pool_status(ns: &TestNs) -> sandbox_operator::api::SandboxWarmPoolStatus {
    ns.api::<SandboxWarmPool>()
        .get("pool")
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

async fn live_pool_pods(ns: &TestNs) -> usize {
    ns.list::<Pod>().await.iter().filter(|p| is_idle(p)).count()
}

#[tokio::test]
async fn pool_reports_its_sizing_and_autoscales_up_then_down_after_the_delay() {
    let ns = TestNs::new("sizing").await;
    let operator = ns.operator(&[]).await;
    create_template(&ns).await;
    create_pool(
        &ns,
        json!({"replicas": 1, "sandboxTemplateRef": {"name": "tmpl"},
               "autoscaling": {"minReplicas": 1, "maxReplicas": 8,
                               "targetHitRatio": 0.9, "scaleDownDelaySeconds": 10}}),
    )
    .await;
    // The first Pod's start gives the pool its refill time.
    wait_until(Duration::from_secs(20), || async {
        let s = pool_status(&ns).await;
        s.sizing.refill_seconds.is_some() && s.desired_replicas == Some(1) && s.ready_replicas == 1
    })
    .await;

    // 4 claims per second for 10 seconds: a = 4/s x ~1 s refill.
    let claims = ns.api::<SandboxClaim>();
    let mut grew_to = 1;
    for i in 0..40 {
        create_claim(&claims, &format!("c{i}")).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        grew_to = grew_to.max(pool_status(&ns).await.desired_replicas.unwrap_or(0));
    }
    let status = pool_status(&ns).await;
    grew_to = grew_to.max(status.desired_replicas.unwrap_or(0));
    assert!(grew_to >= 3, "pool did not grow under load: {status:#?}");
    assert!(
        status.sizing.claim_rate_per_minute.unwrap_or(0.0) > 60.0,
        "{status:#?}"
    );
    assert!(status.sizing.observed_hit_ratio.is_some(), "{status:#?}");
    assert!(status.sizing.predicted_hit_ratio.is_some(), "{status:#?}");
    assert!(
        status.sizing.recommended_replicas.unwrap_or(0) >= 3,
        "{status:#?}"
    );
    let condition = find_condition(&status.conditions, "Autoscaling").expect("Autoscaling");
    assert!(
        condition.message.contains("recommended"),
        "{}",
        condition.message
    );

    // The columns and the metrics.
    let out = ns.kubectl(&["get", "swp", "pool"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "REPLICAS", "READY", "DESIRED", "RECOMMENDED", "AGE"],
        "{table}"
    );
    let metrics = operator.metrics().await;
    let series = format!(
        "sandbox_operator_pool_recommended_replicas{{namespace=\"{}\",pool=\"pool\"}}",
        ns.name
    );
    assert!(metrics.contains(&series), "{series} missing");
    assert!(metrics.contains("sandbox_operator_pool_predicted_hit_ratio{"));

    // The rate drops to zero: after the delay the pool shrinks to minReplicas.
    let stopped = Instant::now();
    wait_until(Duration::from_secs(40), || async {
        pool_status(&ns).await.desired_replicas == Some(1) && live_pool_pods(&ns).await == 1
    })
    .await;
    let shrunk_after = stopped.elapsed();
    assert!(
        shrunk_after >= Duration::from_secs(8),
        "shrank before the delay: {shrunk_after:?}"
    );
    let status = pool_status(&ns).await;
    let reason = &find_condition(&status.conditions, "Autoscaling")
        .unwrap()
        .reason;
    assert!(
        reason == "AtMinReplicas" || reason == "ScaledDown",
        "{reason}"
    );
}

/// `sandbox-operator run` for `namespace` without the webhook and with
/// extra environment (the pool delete delay used to widen the race window).
struct DelayedOperator {
    _child: tokio::process::Child,
}

async fn operator_with_delete_delay(namespace: &str, delay_ms: u64) -> DelayedOperator {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let logs = repo().join("target/test-logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let log = std::fs::File::create(logs.join(format!("{namespace}-operator.log"))).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
        .args(["run", "--leader-elect=false", "--webhook=false"])
        .args(["--namespace", namespace, "--metrics-addr", &metrics_addr])
        .env("KUBECONFIG", kubeconfig())
        .env("SANDBOX_TEST_POOL_DELETE_DELAY_MS", delay_ms.to_string())
        .env("RUST_LOG", "info,kube_runtime=warn,kube_client=warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator binary");
    let url = format!("http://{metrics_addr}/readyz");
    assert!(
        wait_until_ok(Duration::from_secs(60), || async {
            http_get(&url).await.is_ok_and(|(code, _)| code == 200)
        })
        .await,
        "operator did not become ready"
    );
    DelayedOperator { _child: child }
}

#[tokio::test]
async fn scaling_a_pool_to_zero_while_claims_stream_in_never_deletes_a_claimed_pod() {
    const POOL: i32 = 20;
    const CLAIMS: usize = 12;
    let ns = TestNs::new("steal-race").await;
    // Victims are deleted 500 ms after they were chosen: claims steal some of
    // them in between, and those deletes must be refused.
    let _operator = operator_with_delete_delay(&ns.name, 500).await;
    create_template(&ns).await;
    create_pool(
        &ns,
        json!({"replicas": POOL, "sandboxTemplateRef": {"name": "tmpl"}}),
    )
    .await;
    wait_until(Duration::from_secs(30), || async {
        pool_status(&ns).await.ready_replicas == POOL
    })
    .await;

    // Record every Pod that a claim holds and that gets a deletion mark.
    let deleted_claimed: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let watch = {
        let seen = deleted_claimed.clone();
        let stream = watcher(ns.api::<Pod>(), watcher::Config::default()).applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(pod)) = stream.next().await {
                if pod.labels().contains_key(CLAIM_LABEL)
                    && pod.metadata.deletion_timestamp.is_some()
                {
                    seen.lock().unwrap().insert(pod.name_any());
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    ns.api::<SandboxWarmPool>()
        .patch(
            "pool",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let claims = ns.api::<SandboxClaim>();
    futures::future::join_all((0..CLAIMS).map(|i| {
        let claims = claims.clone();
        async move { create_claim(&claims, &format!("r{i}")).await }
    }))
    .await;

    // Every claim gets Ready; the pool empties.
    wait_until(Duration::from_secs(30), || async {
        let list = claims.list(&Default::default()).await.unwrap();
        list.items.len() == CLAIMS
            && list.items.iter().all(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| is_true(&s.conditions, READY))
            })
    })
    .await;
    wait_until(Duration::from_secs(30), || async {
        live_pool_pods(&ns).await == 0
    })
    .await;
    watch.abort();
    let deleted = deleted_claimed.lock().unwrap().clone();
    assert!(deleted.is_empty(), "claimed Pods were deleted: {deleted:?}");
    let list = claims.list(&Default::default()).await.unwrap();
    let warm = list
        .items
        .iter()
        .filter(|c| {
            c.status.as_ref().and_then(|s| s.launch_type.as_ref()) == Some(&LaunchType::Warm)
        })
        .count();
    assert!(
        warm > 0,
        "no claim was served warm: the race was not exercised"
    );
    // Every warm claim still runs on the Pod it stole.
    let pods = ns.api::<Pod>();
    for sandbox in ns.api::<Sandbox>().list(&Default::default()).await.unwrap() {
        if let Some(pod) = sandbox.annotations().get(POD_NAME_ANNOTATION) {
            let pod = pods.get(pod).await.unwrap();
            assert!(
                pod.metadata.deletion_timestamp.is_none(),
                "claimed Pod {} is being deleted",
                pod.name_any()
            );
        }
    }
    eprintln!("{warm} of {CLAIMS} claims were served warm while the pool scaled 20 -> 0");
}

/// An autoscaled pool whose template is deleted still reports the size its
/// autoscaler decides (here its `minReplicas`, no claims coming), with its
/// `Autoscaling` condition, and its gauge follows a change of the bounds.
/// Before (found by review), it reported `spec.replicas` (which
/// autoscaling ignores: 0 here), dropped the condition, and the gauge kept
/// its last value.
#[tokio::test]
async fn an_autoscaled_pool_without_its_template_reports_the_autoscaled_size() {
    let ns = TestNs::new("sizing-no-template").await;
    let operator = ns.operator(&[]).await;
    create_template(&ns).await;
    create_pool(
        &ns,
        json!({"replicas": 0, "sandboxTemplateRef": {"name": "tmpl"},
               "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}),
    )
    .await;
    wait_until(Duration::from_secs(30), || async {
        let s = pool_status(&ns).await;
        s.desired_replicas == Some(2) && s.ready_replicas == 2
    })
    .await;
    ns.api::<sandbox_operator::api::SandboxTemplate>()
        .delete("tmpl", &Default::default())
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), || async {
        find_condition(&pool_status(&ns).await.conditions, READY)
            .is_some_and(|c| c.reason == "TemplateNotFound")
    })
    .await;
    let status = pool_status(&ns).await;
    assert_eq!(status.desired_replicas, Some(2), "{status:#?}");
    assert!(
        find_condition(&status.conditions, "Autoscaling").is_some(),
        "{status:#?}"
    );
    assert!(
        !is_true(&status.conditions, "Exhausted"),
        "two idle Pods are Ready: {status:#?}"
    );

    // New bounds while the template is gone: the status and the gauge
    // follow.
    ns.api::<SandboxWarmPool>()
        .patch(
            "pool",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoscaling": {"minReplicas": 3}}})),
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), || async {
        pool_status(&ns).await.desired_replicas == Some(3)
    })
    .await;
    let series = format!(
        "sandbox_operator_pool_desired_replicas{{namespace=\"{}\",pool=\"pool\"}} 3",
        ns.name
    );
    let metrics = operator.metrics().await;
    assert!(
        metrics.lines().any(|l| l == series),
        "{series} missing: {}",
        metrics
            .lines()
            .filter(|l| l.starts_with("sandbox_operator_pool_desired_replicas"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
