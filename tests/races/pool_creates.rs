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

/// The pool's `Ready` condition, as (reason, message), once written.
fn pool_ready(fake: &sandbox_fakeapi::FakeApiServer) -> Option<(String, String)> {
    let pool = fake.get(&pool_path())?;
    let ready = pool["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    Some((
        ready["reason"].as_str()?.to_string(),
        ready["message"].as_str()?.to_string(),
    ))
}

/// The same pool, its creates refused (Pod Security, a quota, a missing
/// ServiceAccount: here a 403 and a 422): the pool's `Ready` condition
/// says so with the API server's message, instead of "0 of 3 idle Pods are
/// Ready" (`Filling`) forever. Before, the create's error was returned
/// after the status was written from policy and network blockers alone.
#[tokio::test]
async fn a_pool_whose_creates_are_refused_says_why_in_its_status() {
    for (code, reason, message, expected) in [
        (403, "Forbidden", "injected: forbidden", "Forbidden"),
        (
            422,
            "Invalid",
            "injected: violates PodSecurity",
            "PodRejected",
        ),
        (
            403,
            "Forbidden",
            "injected: exceeded quota: pods",
            "QuotaExceeded",
        ),
    ] {
        let fake = fake_with_pool(3);
        let pod_create = |r: &RequestInfo| r.method == "POST" && r.path.ends_with("/pods");
        fake.fail_next(usize::MAX, pod_create, code, reason, message);
        let mut operator = Operator::start(&fake, "op").await;
        operator.run();
        wait_until("the pool's Ready condition names the refusal", || {
            pool_ready(&fake).is_some_and(|(r, m)| r == expected && m.contains(message))
        })
        .await;
        let (_, said) = pool_ready(&fake).unwrap();
        eprintln!("{code} {reason}: the pool says {expected}: {said}");
        drop(operator);
    }
}

/// A transient failure of the creates (a 500, a timeout) is retried with
/// backoff and does not change what the pool's status says.
#[tokio::test]
async fn a_transient_create_failure_does_not_flip_the_pool_status() {
    let fake = fake_with_pool(3);
    let pod_create = |r: &RequestInfo| r.method == "POST" && r.path.ends_with("/pods");
    fake.fail_next(
        usize::MAX,
        pod_create,
        500,
        "InternalError",
        "injected: etcd hiccup",
    );
    let mut operator = Operator::start(&fake, "op").await;
    operator.run();
    // The creates the API server failed: without them the status below
    // would say `Filling` whatever a failure did to it.
    let failed_creates = || {
        fake.log()
            .iter()
            .filter(|l| l.method == "POST" && l.path.ends_with("/pods") && l.code == 500)
            .count()
    };
    wait_until("the pool's status is written", || {
        pool_ready(&fake).is_some()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let failed = failed_creates();
    eprintln!("Pod creates failed with 500 in about 3 s: {failed}");
    assert!(
        failed >= 2,
        "the pool's Pod creates were to fail with a 500 and be retried: {failed} failed"
    );
    let (reason, message) = pool_ready(&fake).unwrap();
    assert_eq!(reason, "Filling", "{message}");
}
