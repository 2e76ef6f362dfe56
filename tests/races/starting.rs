//! A claim on a pool whose only Pod is still starting: the Pod turning
//! Ready between the claim's read and its steal is taken on the retry and
//! serves the claim warm; a Pod whose start went wrong is left alone.

use std::sync::Arc;

use kube::ResourceExt;
use sandbox_operator::api::POD_NAME_ANNOTATION;
use sandbox_operator::controller::{claim, warmpool};
use serde_json::json;

use crate::harness::*;
use sandbox_fakeapi::Moment;

/// One operator (controllers not running) whose pool created its one Pod,
/// which no kubelet starts: the fake, the operator and the Pod's name.
async fn one_starting_pod() -> (sandbox_fakeapi::FakeApiServer, Operator, String) {
    let fake = fake_with_pool(1);
    let operator = Operator::start(&fake, "a").await;
    warmpool::reconcile(pool(&fake), operator.ctx.clone())
        .await
        .expect("pool reconcile");
    let ctx = Arc::clone(&operator.ctx);
    wait_until("the cache shows the starting Pod", || {
        ctx.caches.pods.state().len() == 1
    })
    .await;
    let pod = operator.ctx.caches.pods.state()[0].name_any();
    (fake, operator, pod)
}

fn ready_status() -> serde_json::Value {
    json!({"phase": "Running", "podIP": "10.0.0.9",
           "conditions": [{"type": "Ready", "status": "True"}]})
}

#[tokio::test]
async fn a_starting_pod_turning_ready_before_the_steal_lands_serves_the_claim_warm() {
    let (fake, mut operator, pod) = one_starting_pod().await;
    create_claim(&fake, "c");
    // Between the steal's read and its write, the kubelet reports the Pod
    // Ready: the steal, conditioned on the starting version, fails.
    let (writer, path) = (fake.clone(), pod_path(&pod));
    fake.hook(
        Moment::BetweenReadAndWrite,
        1,
        |r| r.is("PATCH", "pods"),
        move |_| {
            writer.set_status(&path, ready_status());
            async {}
        },
    );
    claim::reconcile(claim(&fake, "c"), operator.ctx.clone())
        .await
        .expect("claim reconciles");

    let patches: Vec<u16> = fake
        .log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/pods/"))
        .map(|r| r.code)
        .collect();
    assert_eq!(
        patches,
        [422, 200],
        "the lost steal is retried on the fresh copy, now Ready"
    );
    let status = &fake.get(&claim_path("c")).unwrap()["status"];
    assert_eq!(status["launchType"], "warm", "{status}");
    assert_eq!(status["podName"], pod.as_str());
    assert_eq!(
        ready(&fake.get(&claim_path("c")).unwrap()).map(|r| r.0),
        Some("True".into())
    );
    operator.run();
    wait_until("the claim is served", || check_invariants(&fake).len() == 1).await;
    assert_eq!(check_invariants(&fake)["c"], ("warm".to_owned(), pod));
}

#[tokio::test]
async fn a_starting_pod_that_restarted_is_not_taken() {
    let (fake, mut operator, pod) = one_starting_pod().await;
    fake.set_status(
        &pod_path(&pod),
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
               "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "",
                                      "ready": false, "restartCount": 2}]}),
    );
    let ctx = Arc::clone(&operator.ctx);
    wait_until("the cache shows the restart", || {
        ctx.caches.pods.state().iter().any(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some()
        })
    })
    .await;
    create_claim(&fake, "c");
    claim::reconcile(claim(&fake, "c"), operator.ctx.clone())
        .await
        .expect("claim reconciles");
    let sandbox = fake.get(&sandbox_path("c")).expect("Sandbox created");
    assert!(
        sandbox["metadata"]["annotations"][POD_NAME_ANNOTATION].is_null(),
        "the claim went cold: {sandbox}"
    );
    assert!(
        fake.get(&pod_path(&pod)).unwrap()["metadata"]["labels"]["agents.x-k8s.io/claim"].is_null(),
        "the restarted Pod was left to its pool"
    );
    let _kubelet = kubelet(&fake, std::time::Duration::from_millis(2));
    operator.run();
    wait_until("the claim is served", || check_invariants(&fake).len() == 1).await;
    assert_eq!(check_invariants(&fake)["c"].0, "cold");
}

#[tokio::test]
async fn a_claim_whose_starting_status_was_refused_still_reads_cold() {
    let (fake, mut operator, pod) = one_starting_pod().await;
    create_claim(&fake, "c");
    // Round two's status write ("still starting", cold) is refused as
    // stale: the claim's next reconcile must say it again, not mirror the
    // Sandbox naming a pool Pod as warm.
    fake.fail_next(
        1,
        |r| r.method == "PATCH" && r.path.ends_with("/sandboxclaims/c/status"),
        409,
        "Conflict",
        "injected: the object has been modified",
    );
    claim::reconcile(claim(&fake, "c"), operator.ctx.clone())
        .await
        .expect("claim reconciles");
    assert!(
        fake.get(&claim_path("c")).unwrap()["status"].is_null(),
        "the first status write was refused"
    );
    reads_cold_until_served(&fake, &mut operator, pod).await;
}

#[tokio::test]
async fn a_claim_retried_after_a_failed_round_one_still_reads_cold() {
    let (fake, mut operator, pod) = one_starting_pod().await;
    create_claim(&fake, "c");
    // Round one's Service create fails: the steal of the starting Pod won,
    // so the retry serves from that earlier steal and never reaches round
    // two's "still starting" write.
    fake.fail_next(
        1,
        |r| r.is("POST", "services"),
        500,
        "InternalError",
        "injected",
    );
    let first = claim::reconcile(claim(&fake, "c"), operator.ctx.clone()).await;
    assert!(first.is_err(), "round one failed");
    assert_eq!(
        fake.get(&pod_path(&pod)).unwrap()["metadata"]["labels"]["agents.x-k8s.io/claim"],
        "c",
        "the steal went through"
    );
    // The retry then finds the steal in the cache (its earlier steal), not
    // an idle Pod to steal again.
    let ctx = Arc::clone(&operator.ctx);
    wait_until("the cache shows the steal", || {
        ctx.caches.pods.state().iter().any(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(sandbox_operator::api::CLAIM_UID_LABEL))
        })
    })
    .await;
    reads_cold_until_served(&fake, &mut operator, pod).await;
}

/// Runs `operator`'s controllers: claim `c` names the starting `pod` and
/// reads `cold`, then, once a kubelet starts the Pod, is served cold on it.
async fn reads_cold_until_served(
    fake: &sandbox_fakeapi::FakeApiServer,
    operator: &mut Operator,
    pod: String,
) {
    operator.run();
    wait_until("the claim says it got the starting Pod", || {
        fake.get(&claim_path("c")).unwrap()["status"]["podName"] == pod.as_str()
    })
    .await;
    let status = &fake.get(&claim_path("c")).unwrap()["status"];
    assert_eq!(status["launchType"], "cold", "{status}");
    let _kubelet = kubelet(fake, std::time::Duration::from_millis(2));
    wait_until("the claim is served", || check_invariants(fake).len() == 1).await;
    assert_eq!(check_invariants(fake)["c"], ("cold".to_owned(), pod));
}
