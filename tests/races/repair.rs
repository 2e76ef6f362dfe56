//! Repairs of a claim whose Sandbox names a Pod the claim never got.

use std::time::Duration;

use sandbox_operator::api::POD_NAME_ANNOTATION;
use sandbox_operator::controller::warmpool;
use serde_json::json;

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
