//! Giving back surplus Pods (stolen for a claim that its Sandbox does not
//! use) when this process's watches lag.

use kube::runtime::reflector::ObjectRef;
use sandbox_fakeapi::Moment;
use sandbox_operator::api::READY;
use serde_json::json;

use crate::harness::*;
use crate::repair::{stolen, warm_sandbox};

/// Round one finds the claim served by another process (its Sandbox create
/// answers with that process's Sandbox, Ready on another Pod) and gives
/// back the Pod it stole; the give-back loses to a status write (409) and
/// the Pod is kept. Meanwhile this process's Pod watch lags (held), so its
/// cache never shows the steal: the claim's look at its surplus Pods must
/// read the kept Pod from the API server. Before, it only looked in the
/// cache, and no event wakes the claim for that Pod, so the unused Pod
/// kept running until the periodic resync (30 s here).
#[tokio::test]
async fn a_kept_give_back_is_decided_again_while_the_cache_lags() {
    let (fake, mut operator, _kubelet) = filled_by_hand(3).await;
    let claim = create_claim(&fake, "c");
    let other = served_elsewhere(&fake, &claim);
    operator.run();
    wait_until("this process gives back the Pod it stole", || {
        fake.log()
            .iter()
            .any(|r| r.method == "DELETE" && r.path.contains("/pods/"))
    })
    .await;
    let mine = fake
        .log()
        .iter()
        .find(|r| r.method == "DELETE" && r.path.contains("/pods/"))
        .map(|r| r.path.clone())
        .expect("a give-back");
    assert_ne!(mine, pod_path(&other), "the other process's Pod is kept");
    wait_until("the kept Pod is given back", || fake.get(&mine).is_none()).await;
    let requests: Vec<(String, u16)> = fake
        .log()
        .iter()
        .filter(|r| r.path == mine && r.query.is_empty())
        .map(|r| (r.method.clone(), r.code))
        .collect();
    let expected = [
        ("PATCH", 200),
        ("DELETE", 409),
        ("GET", 200),
        ("DELETE", 200),
    ];
    assert_eq!(
        requests
            .iter()
            .map(|(m, c)| (m.as_str(), *c))
            .collect::<Vec<_>>(),
        expected,
        "the steal, the give-back lost to the status write, the kept Pod read \
         from the API server and given back at the version read"
    );
    let claim_uid = claim["metadata"]["uid"].as_str().expect("a uid");
    let ctx = operator.ctx.clone();
    assert!(
        ctx.caches.index.controlled_by(claim_uid).is_empty(),
        "the cache never showed the steal (the lag was real)"
    );
    let name = mine.rsplit('/').next().expect("a Pod name");
    assert!(
        ctx.reservations.was_given_back(&format!("{NS}/{name}")),
        "recorded as given back"
    );
    assert!(ctx.reservations.kept_for(claim_uid).is_empty(), "settled");
    assert!(
        fake.get(&pod_path(&other)).is_some(),
        "the Pod the claim's Sandbox serves on stays"
    );
    // Once the watches catch up, the claim's state is consistent.
    fake.release_watches("pods");
    fake.release_watches("sandboxes");
    wait_until("the cache shows the claim's Pod", || {
        ctx.caches
            .pods
            .get(&ObjectRef::new(&other).within(NS))
            .is_some()
    })
    .await;
    assert_eq!(check_invariants(&fake)["c"].1, other);
}

/// Stages the other process of a split brain on claim `c` (`claim` as
/// [`create_claim`] returned it), unseen here because the Pod and Sandbox
/// watches are held from now on: it stole a Pod of its own for the claim
/// (`elsewhere`, never in this process's cache) and its Sandbox is Ready
/// on it. The next Pod delete loses to a status write of that Pod (409).
/// Returns the other process's Pod name.
fn served_elsewhere(fake: &sandbox_fakeapi::FakeApiServer, claim: &serde_json::Value) -> String {
    fake.hold_watches("sandboxes");
    fake.hold_watches("pods");
    let other = "elsewhere".to_owned();
    let mut pod = fake
        .get(&pod_path(&idle_ready_pods(fake)[0]))
        .expect("an idle Pod");
    pod["metadata"]["name"] = other.clone().into();
    for field in ["uid", "resourceVersion"] {
        pod["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove(field);
    }
    fake.insert(&pod_path(&other), pod);
    stolen(fake, &other, claim);
    warm_sandbox(fake, claim, &other);
    fake.set_status(
        &sandbox_path("c"),
        json!({"podName": other, "replicas": 1, "conditions": [{"type": READY,
            "status": "True", "reason": "DependenciesReady", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
    );
    // This process's give-back loses to a status write of the Pod.
    let writer = fake.clone();
    fake.hook(
        Moment::OnArrival,
        1,
        |r| r.is("DELETE", "pods"),
        move |r| {
            let (fake, path) = (writer.clone(), r.path.clone());
            async move {
                let mut status = fake.get(&path).expect("the Pod")["status"].clone();
                status["message"] = "written before the give-back".into();
                fake.set_status(&path, status);
            }
        },
    );
    other
}
