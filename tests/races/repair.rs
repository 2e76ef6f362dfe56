//! Repairs of a claim whose Sandbox names a Pod the claim never got.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use sandbox_fakeapi::Moment;
use sandbox_operator::api::{CLAIM_UID_LABEL, POD_NAME_ANNOTATION};
use sandbox_operator::controller::{claim, warmpool};
use serde_json::json;
use tokio::sync::Notify;

use crate::harness::*;

/// The claim's Sandbox names a pool Pod the claim never stole (a crash
/// between the Sandbox create and the steal), and that Pod then lost its
/// controller (its pool deleted with `--cascade=orphan`). The Sandbox will
/// never adopt an ownerless Pod, so the claim must be moved to another Pod;
/// before, nothing repaired it and it stayed not Ready for good.
#[tokio::test]
async fn a_claim_whose_named_pod_lost_its_controller_is_served_by_another() {
    let fake = fake_with_pool(2);
    let _kubelet = kubelet(&fake, Duration::from_millis(2));
    let mut operator = Operator::start(&fake, "a").await;
    warmpool::reconcile(pool(&fake), operator.ctx.clone())
        .await
        .expect("pool reconcile");
    operator.sees_idle(2).await;
    let claim = create_claim(&fake, "c");
    let orphan = idle_ready_pods(&fake).pop().expect("an idle Pod");
    fake.insert(
        &sandbox_path("c"),
        json!({
            "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"namespace": NS, "annotations": {POD_NAME_ANNOTATION: orphan},
                "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
                    "kind": "SandboxClaim", "name": "c",
                    "uid": claim["metadata"]["uid"], "controller": true}]},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}},
        }),
    );
    fake.merge(
        &pod_path(&orphan),
        &json!({"metadata": {"ownerReferences": null}}),
    )
    .expect("the Pod exists");
    operator.run();
    wait_until("the claim is Ready", || check_invariants(&fake).len() == 1).await;
    let (launch, pod) = check_invariants(&fake)["c"].clone();
    assert_eq!(launch, "warm");
    assert_ne!(pod, orphan, "served by a Pod the Sandbox can adopt");
}

/// Two processes serve one claim (a split brain). A's round one creates the
/// Sandbox naming Pod P while A's steal of P is still in flight; B, whose
/// cache shows that Sandbox and P still idle, repairs the claim while P is
/// reserved in B's own memory (by another claim B is serving). Before, B's
/// repair moved the Sandbox to another Pod; A's steal of P then landed and
/// A wrote the claim Ready on P while the Sandbox named the other Pod (and
/// a Sandbox reconcile from the older copy could adopt P as well: two Pods,
/// `MultiplePods`, a claim stuck not Ready). Now B's repair races A's steal
/// for P with one of its own, from the copy it just read: whichever wins,
/// P is the claim's, and the Sandbox stays on it.
#[tokio::test]
async fn a_repair_racing_the_other_process_s_steal_of_the_named_pod_keeps_the_sandbox_on_it() {
    let fake = fake_with_pool(2);
    let _kubelet = kubelet(&fake, Duration::from_millis(2));
    let mut a = Operator::start(&fake, "a").await;
    let mut b = Operator::start(&fake, "b").await;
    warmpool::reconcile(pool(&fake), a.ctx.clone())
        .await
        .expect("pool reconcile");
    a.sees_idle(2).await;
    b.sees_idle(2).await;
    let claim_uid = create_claim(&fake, "c")["metadata"]["uid"].clone();

    // A's steal arrives, says so, and waits for the gate.
    let (arrived, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let hook = (arrived.clone(), gate.clone());
    fake.hook(
        Moment::OnArrival,
        1,
        |r| r.is("PATCH", "pods"),
        move |_| {
            let (arrived, gate) = hook.clone();
            async move {
                arrived.notify_one();
                gate.notified().await;
            }
        },
    );
    let serving = tokio::spawn(claim::reconcile(claim(&fake, "c"), a.ctx.clone()));
    arrived.notified().await;
    wait_until("A's Sandbox exists", || {
        fake.get(&sandbox_path("c")).is_some()
    })
    .await;
    let named = |fake: &sandbox_fakeapi::FakeApiServer| {
        fake.get(&sandbox_path("c")).expect("the Sandbox")["metadata"]["annotations"]
            [POD_NAME_ANNOTATION]
            .as_str()
            .map(str::to_owned)
    };
    let pod = named(&fake).expect("a warm Sandbox");
    let b_sandboxes = b.ctx.caches.sandboxes.clone();
    wait_until("B's cache shows the Sandbox", || {
        b_sandboxes.get(&ObjectRef::new("c").within(NS)).is_some()
    })
    .await;
    assert!(b.ctx.reservations.try_reserve(&format!("{NS}/{pod}")));
    claim::reconcile(claim(&fake, "c"), b.ctx.clone())
        .await
        .expect("B's reconcile repairs");
    gate.notify_one();
    serving
        .await
        .expect("A's reconcile ran")
        .expect("A's reconcile");

    assert_eq!(
        named(&fake).as_deref(),
        Some(pod.as_str()),
        "the Sandbox stays on P"
    );
    let taken = fake.get(&pod_path(&pod)).expect("P exists");
    assert_eq!(taken["metadata"]["labels"][CLAIM_UID_LABEL], claim_uid);
    let status = fake.get(&claim_path("c")).expect("the claim")["status"].clone();
    if !status.is_null() {
        assert_eq!(status["podName"], pod.as_str(), "any status names P");
    }
    a.run();
    b.run();
    wait_until("the claim is Ready", || check_invariants(&fake).len() == 1).await;
    assert_eq!(
        check_invariants(&fake)["c"].1,
        pod,
        "served by P throughout"
    );
}
