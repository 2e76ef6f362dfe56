//! A pool's Pod creates when the API server refuses them.

use sandbox_fakeapi::RequestInfo;

use crate::harness::*;

/// A pool of 200 whose every Pod create the API server refuses (a
/// RuntimeClass or quota it lacks, say): the pool's creates come in waves
/// of 1, 2, 4, ... and stop at a wave with a failure, so each reconcile
/// (retried with backoff) sends one create, not 200.
#[tokio::test]
async fn a_pool_whose_pods_are_all_refused_sends_one_create_per_try() {
    let fake = fake_with_pool(200);
    let pod_create = |r: &RequestInfo| r.method == "POST" && r.path.ends_with("/pods");
    fake.fail_next(
        usize::MAX,
        pod_create,
        403,
        "Forbidden",
        "injected: refused",
    );
    let mut operator = Operator::start(&fake, "op").await;
    operator.run();
    let creates = || {
        fake.log()
            .iter()
            .filter(|l| l.method == "POST" && l.path.ends_with("/pods"))
            .count()
    };
    wait_until("the pool tried to create a Pod", || creates() >= 1).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let sent = creates();
    eprintln!("Pod creates sent in about 2 s: {sent}");
    assert!(
        (1..=8).contains(&sent),
        "{sent} Pod creates for a pool whose creates all fail"
    );
}

/// The same pool: its status is still written while its creates fail (a
/// quota reached, say), so `kubectl get swp`, the gauges and the pool
/// alerts follow it. Before, a failed create returned before the pool's
/// record, and the status was never written.
#[tokio::test]
async fn a_pool_whose_creates_fail_still_reports_its_state() {
    let fake = fake_with_pool(3);
    let pod_create = |r: &RequestInfo| r.method == "POST" && r.path.ends_with("/pods");
    fake.fail_next(usize::MAX, pod_create, 403, "Forbidden", "injected: quota");
    let mut operator = Operator::start(&fake, "op").await;
    operator.run();
    wait_until("the pool's status is written", || {
        fake.get(&pool_path())
            .is_some_and(|p| p["status"]["replicas"].as_i64() == Some(0))
    })
    .await;
}
