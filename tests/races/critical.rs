//! The critical path first (`controller::critical`): the Sandbox controller
//! adopts a just-stolen Pod only after the claim's Ready write, while that
//! claim is being served by the same process. The claim's status write is
//! held 300 ms by the fake, so the order of the two writes shows whether
//! the adoption waited.

use std::time::Duration;

use sandbox_fakeapi::{FakeApiServer, Logged};
use sandbox_operator::api::SANDBOX_LABEL;

use crate::harness::*;

/// Serves one warm claim `c` with the controllers running and the claim's
/// status write held; returns the stolen Pod's name and the request log.
async fn serve_with_held_status(defer_off_path: Duration) -> (String, Vec<Logged>) {
    let fake: FakeApiServer = fake_with_pool(1);
    let _kubelet = kubelet(&fake, Duration::from_millis(2));
    let mut operator =
        Operator::start_with(&fake, "a", |c| c.defer_off_path = defer_off_path).await;
    operator.run();
    operator.sees_idle(1).await;
    let pod = idle_ready_pods(&fake).pop().expect("one idle Ready Pod");
    fake.delay_next(
        1,
        |r| {
            r.is("PATCH", "sandboxclaims")
                && r.resource
                    .as_ref()
                    .is_some_and(|p| p.subresource.as_deref() == Some("status"))
        },
        Duration::from_millis(300),
    );
    create_claim(&fake, "c");
    let adopted = || {
        fake.get(&pod_path(&pod)).is_some_and(|p| {
            p["metadata"]["labels"][SANDBOX_LABEL] == "c"
                && p["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|r| r["kind"] == "Sandbox"))
        })
    };
    wait_until(
        "the claim is Ready on its Pod, adopted by the Sandbox",
        || ready_in_api(&fake, &claim_path("c")) && adopted(),
    )
    .await;
    (pod, fake.log())
}

/// Positions in the log of the claim's status write and of the adoption
/// (the last of the PATCHes of the Pod: the steal comes first).
fn status_and_adoption(pod: &str, log: &[Logged]) -> (usize, usize) {
    let status = log
        .iter()
        .position(|l| l.method == "PATCH" && l.path.ends_with("/sandboxclaims/c/status"))
        .expect("the claim's status write");
    let pod_patches: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, l)| l.method == "PATCH" && l.path.ends_with(&format!("/pods/{pod}")))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(pod_patches.len(), 2, "the steal and the adoption: {log:#?}");
    (status, pod_patches[1])
}

#[tokio::test]
async fn the_adoption_waits_for_the_claims_ready_write() {
    let (pod, log) = serve_with_held_status(Duration::from_secs(5)).await;
    let (status, adoption) = status_and_adoption(&pod, &log);
    assert!(
        status < adoption,
        "the claim's Ready write (request {status}) comes before the adoption (request {adoption})"
    );
}

/// The same with waiting off: the adoption lands while the status write is
/// held, which is what the test above rules out.
#[tokio::test]
async fn without_the_wait_the_adoption_overtakes_the_held_ready_write() {
    let (pod, log) = serve_with_held_status(Duration::ZERO).await;
    let (status, adoption) = status_and_adoption(&pod, &log);
    assert!(
        adoption < status,
        "adoption (request {adoption}) before the held status write (request {status})"
    );
}
