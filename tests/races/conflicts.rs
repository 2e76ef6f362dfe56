//! Name conflicts: a foreign Sandbox, Service or NetworkPolicy under a name
//! a claim needs gives the claim `Ready=False, NameConflict`, never Ready,
//! and the foreign object is never taken over.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// Foreign objects (owned by nothing) under the names a claim needs: its
/// Sandbox, its Service, its NetworkPolicy (`<claim>-sandbox`). The Sandbox
/// and the policy carry the operator's managed-by label (anyone can write
/// labels); the Service carries it when `labelled_service`.
async fn name_conflicts(labelled_service: bool) {
    let fake = fake_with_pool(3);
    let _kubelet = kubelet(&fake, Duration::from_millis(2));
    let managed =
        json!({"namespace": NS, "labels": {"app.kubernetes.io/managed-by": "sandbox-operator"}});
    let service_meta = if labelled_service {
        managed.clone()
    } else {
        json!({"namespace": NS})
    };
    let foreign = [
        (
            sandbox_path("has-sandbox"),
            json!({"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": managed, "spec": {"podTemplate": {"spec": {"containers": []}}}}),
        ),
        (
            service_path("has-service"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": service_meta, "spec": {}}),
        ),
        (
            policy_path("has-policy-sandbox"),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": managed, "spec": {"podSelector": {}}}),
        ),
    ];
    for (path, object) in &foreign {
        fake.insert(path, object.clone());
    }
    // What a claim could take over: everything but the status (the Sandbox
    // controller reports on the foreign Sandbox as on any standalone one).
    let versions = || {
        foreign
            .iter()
            .map(|(path, _)| {
                let mut object = fake.get(path).unwrap();
                object["metadata"]["resourceVersion"] = json!(null);
                object["status"] = json!(null);
                object
            })
            .collect::<Vec<_>>()
    };
    let before = versions();
    let mut operator = Operator::start(&fake, "a").await;
    operator.run();
    wait_until("the pool is full", || idle_ready_pods(&fake).len() == 3).await;
    let conflicted = ["has-sandbox", "has-service", "has-policy"];
    for name in conflicted.iter().chain(&["fine"]) {
        create_claim(&fake, name);
    }
    let reason = |name: &str| ready(&fake.get(&claim_path(name)).unwrap());
    wait_until(
        "every conflict is reported and the other claim is Ready",
        || {
            conflicted
                .iter()
                .all(|n| reason(n) == Some(("False".into(), "NameConflict".into())))
                && reason("fine").is_some_and(|r| r.0 == "True")
        },
    )
    .await;
    // Retries (with backoff) must not turn a conflict into Ready.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = check_invariants(&fake);
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        ["fine"],
        "no conflicted claim is Ready"
    );
    for name in conflicted {
        let ever_ready = fake.audit().iter().any(|c| {
            c.key.name == name
                && c.key.resource == "sandboxclaims"
                && ready(&c.after).is_some_and(|r| r.0 == "True")
        });
        assert!(!ever_ready, "{name} was Ready through a foreign object");
    }
    assert_eq!(
        versions(),
        before,
        "the foreign objects were never taken over or changed"
    );
}

#[tokio::test]
async fn a_foreign_object_with_the_claims_name_is_a_name_conflict_never_ready() {
    name_conflicts(false).await;
}

/// Found by this tier: `ensure_service` (src/controller/claim/mod.rs) used
/// to skip the create, and so the ownership check, whenever the Service
/// cache had the name; that cache selects by the managed-by LABEL, so a
/// foreign Service carrying the label made the conflicted claim Ready on
/// its retry. It now decides from the cached Service's controller uid.
#[tokio::test]
async fn a_foreign_service_with_the_managed_by_label_is_still_a_name_conflict() {
    name_conflicts(true).await;
}
