//! One forced interleaving per test: steal against steal (two operators),
//! steal against the pool's scale-down delete (both orders), a steal from
//! a stale copy, adoption only of the Pod the claim stole, refill after a
//! steal.

use std::sync::Arc;
use std::time::Duration;

use sandbox_operator::api::{CLAIM_UID_LABEL, POD_NAME_ANNOTATION, SANDBOX_LABEL};
use sandbox_operator::controller::{claim, sandbox, warmpool};
use serde_json::json;

use crate::harness::*;
use sandbox_fakeapi::Moment;

/// A pool of `replicas` filled by hand and claim "c" served warm by one
/// claim reconcile: the fake, the operator, its kubelet and the stolen Pod.
async fn one_claim_served_warm(
    replicas: i32,
) -> (
    sandbox_fakeapi::FakeApiServer,
    Operator,
    tokio::task::JoinHandle<()>,
    String,
) {
    let (fake, operator, kubelet) = filled_by_hand(replicas).await;
    create_claim(&fake, "c");
    claim::reconcile(claim(&fake, "c"), operator.ctx.clone())
        .await
        .expect("claim reconciles");
    let stolen = fake.get(&sandbox_path("c")).unwrap()["metadata"]["annotations"]
        [POD_NAME_ANNOTATION]
        .as_str()
        .expect("warm")
        .to_owned();
    (fake, operator, kubelet, stolen)
}

/// For the next `times` Pod PATCHes, someone else writes Pod `pod` between
/// the patch's read and its write (label `touched`, counting 1, 2, ...), so
/// each of them was conditioned on a version that is gone.
fn touch_between_read_and_write(fake: &sandbox_fakeapi::FakeApiServer, pod: &str, times: usize) {
    let writer = fake.clone();
    let path = pod_path(pod);
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    fake.hook(
        Moment::BetweenReadAndWrite,
        times,
        |r| r.is("PATCH", "pods"),
        move |_| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            writer.merge(
                &path,
                &json!({"metadata": {"labels": {"touched": n.to_string()}}}),
            );
            async {}
        },
    );
}

/// Waits until `operator`'s Pod cache shows a stolen Pod (one with a
/// claim's uid label).
async fn cache_shows_a_steal(operator: &Operator) {
    wait_until("the cache shows the steal", || {
        operator.ctx.caches.pods.state().iter().any(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(CLAIM_UID_LABEL))
        })
    })
    .await;
}

/// The pool fills to one idle Ready Pod, through the real pool reconcile.
/// The second reconcile is the one the Pod's events trigger: it sees the
/// Pod it created, which settles its create expectation.
async fn fill_one(fake: &sandbox_fakeapi::FakeApiServer, operators: &[&Operator]) -> String {
    let reconcile = || warmpool::reconcile(pool(fake), operators[0].ctx.clone());
    reconcile().await.expect("pool reconcile");
    for operator in operators {
        operator.sees_idle(1).await;
    }
    reconcile().await.expect("pool reconcile");
    idle_ready_pods(fake).pop().expect("one idle Pod")
}

/// One operator (controllers not running), its pool filled to one idle
/// Ready Pod and then scaled to 0, and a claim `c` not yet reconciled: the
/// stage where the pool's delete and the claim's steal race for that Pod.
async fn one_idle_pod_a_claim_and_no_replicas() -> (
    sandbox_fakeapi::FakeApiServer,
    tokio::task::JoinHandle<()>,
    Operator,
    String,
) {
    let fake = fake_with_pool(1);
    let kubelet = kubelet(&fake, Duration::from_millis(2));
    let operator = Operator::start(&fake, "a").await;
    let pod = fill_one(&fake, &[&operator]).await;
    create_claim(&fake, "c");
    fake.merge(&pool_path(), &json!({"spec": {"replicas": 0}}));
    (fake, kubelet, operator, pod)
}

fn pod_label(fake: &sandbox_fakeapi::FakeApiServer, pod: &str, key: &str) -> Option<String> {
    fake.get(&pod_path(pod))?["metadata"]["labels"][key]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn two_operators_steal_the_one_idle_pod_exactly_one_wins_the_other_goes_cold() {
    let fake = fake_with_pool(1);
    let _kubelet = kubelet(&fake, Duration::from_millis(2));
    let mut a = Operator::start(&fake, "a").await;
    let b = Operator::start(&fake, "b").await;
    let pod = fill_one(&fake, &[&a, &b]).await;
    let one = create_claim(&fake, "one");
    create_claim(&fake, "two");

    // Both steals are held until both were sent: both read the same version.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    fake.hook(
        Moment::OnArrival,
        2,
        |r| r.is("PATCH", "pods"),
        move |_| {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
            }
        },
    );
    let (ra, rb) = tokio::join!(
        claim::reconcile(claim(&fake, "one"), a.ctx.clone()),
        claim::reconcile(claim(&fake, "two"), b.ctx.clone()),
    );
    // A lost race is not an error. Found by this test: the loser may still
    // fail its reconcile with a 409, because `serve` hands the Sandbox copy
    // from BEFORE its own repoint to the repair check, which repoints again
    // on that stale version. Harmless (the retry reads the cache), and
    // tolerated here only in exactly that form.
    for result in [ra, rb] {
        if let Err(error) = result {
            let text = error.to_string();
            assert!(
                error.class() == "conflict" && text.contains("point the Sandbox"),
                "a lost steal race must not fail the reconcile: {text}"
            );
        }
    }

    let patches: Vec<u16> = fake
        .log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/pods/"))
        .map(|r| r.code)
        .collect();
    assert_eq!(
        patches,
        [200, 422],
        "one steal applied, the other's `test` failed"
    );
    let winner_uid = pod_label(&fake, &pod, CLAIM_UID_LABEL).expect("the Pod was stolen");
    let (winner, loser) = if winner_uid == one["metadata"]["uid"] {
        ("one", "two")
    } else {
        ("two", "one")
    };
    assert_eq!(
        winner_uid,
        fake.get(&claim_path(winner)).unwrap()["metadata"]["uid"]
    );
    assert_eq!(
        a.steal_conflicts() + b.steal_conflicts(),
        1,
        "the lost race is counted once"
    );
    let sandbox_of = |claim: &str| fake.get(&sandbox_path(claim)).expect("Sandbox created");
    assert_eq!(
        sandbox_of(winner)["metadata"]["annotations"][POD_NAME_ANNOTATION],
        pod.as_str()
    );
    assert!(
        sandbox_of(loser)["metadata"]["annotations"][POD_NAME_ANNOTATION].is_null(),
        "the loser went cold"
    );

    // The controllers finish: the winner warm on that Pod, the loser cold.
    drop(b);
    a.run();
    wait_until("both claims are Ready", || {
        check_invariants(&fake).len() == 2
    })
    .await;
    let served = check_invariants(&fake);
    assert_eq!(served[winner], ("warm".to_owned(), pod.clone()));
    assert_eq!(served[loser].0, "cold");
    wait_until("the pool refilled", || idle_ready_pods(&fake).len() == 1).await;
}

#[tokio::test]
async fn a_steal_between_the_pools_choice_and_its_delete_keeps_the_pod() {
    let (fake, _kubelet, mut operator, pod) = one_idle_pod_a_claim_and_no_replicas().await;

    // The pool chose its victim; before its delete lands, the claim steals it.
    let (ctx, steal_fake) = (operator.ctx.clone(), fake.clone());
    fake.hook(
        Moment::OnArrival,
        1,
        |r| r.is("DELETE", "pods"),
        move |_| {
            let (ctx, fake) = (ctx.clone(), steal_fake.clone());
            async move {
                claim::reconcile(claim(&fake, "c"), ctx)
                    .await
                    .expect("claim reconciles");
            }
        },
    );
    warmpool::reconcile(pool(&fake), operator.ctx.clone())
        .await
        .expect("pool reconcile");

    let deletes: Vec<u16> = fake
        .log()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.code)
        .collect();
    assert_eq!(
        deletes,
        [409],
        "the delete was conditioned on the version it chose"
    );
    assert!(
        fake.get(&pod_path(&pod)).is_some(),
        "the stolen Pod was not deleted"
    );
    operator.run();
    wait_until("the claim is Ready", || check_invariants(&fake).len() == 1).await;
    assert_eq!(check_invariants(&fake)["c"], ("warm".to_owned(), pod));
    assert!(idle_ready_pods(&fake).is_empty(), "replicas 0: no idle Pod");
}

#[tokio::test]
async fn a_delete_between_the_claims_choice_and_its_steal_sends_the_claim_cold() {
    let (fake, _kubelet, mut operator, pod) = one_idle_pod_a_claim_and_no_replicas().await;

    // The claim chose the Pod; before its steal lands, the pool deletes it.
    let (ctx, pool_fake) = (operator.ctx.clone(), fake.clone());
    fake.hook(
        Moment::OnArrival,
        1,
        |r| r.is("PATCH", "pods"),
        move |_| {
            let (ctx, fake) = (ctx.clone(), pool_fake.clone());
            async move {
                warmpool::reconcile(pool(&fake), ctx)
                    .await
                    .expect("pool reconcile");
            }
        },
    );
    claim::reconcile(claim(&fake, "c"), operator.ctx.clone())
        .await
        .expect("claim reconciles");

    assert!(
        fake.get(&pod_path(&pod)).is_none(),
        "the pool's delete went through"
    );
    let sandbox = fake.get(&sandbox_path("c")).expect("Sandbox created");
    assert!(
        sandbox["metadata"]["annotations"][POD_NAME_ANNOTATION].is_null(),
        "the claim went cold"
    );
    operator.run();
    wait_until("the claim is Ready", || check_invariants(&fake).len() == 1).await;
    let served = check_invariants(&fake);
    assert_eq!(served["c"].0, "cold");
    assert_ne!(served["c"].1, pod, "the deleted Pod is never served");
}

#[tokio::test]
async fn a_steal_from_a_stale_copy_never_takes_a_pod_being_deleted() {
    let fake = fake_with_pool(1);
    let _kubelet = kubelet(&fake, Duration::from_millis(2));
    let mut operator = Operator::start(&fake, "a").await;
    let pod = fill_one(&fake, &[&operator]).await;
    // Another controller holds the Pod with a finalizer: a delete leaves it
    // in place, Terminating, still labelled as the pool's.
    fake.merge(
        &pod_path(&pod),
        &json!({"metadata": {"finalizers": ["example.com/hold"]}}),
    );
    let ctx = operator.ctx.clone();
    wait_until("the cache shows the finalizer", || {
        ctx.caches
            .pods
            .state()
            .iter()
            .any(|p| p.metadata.finalizers.is_some())
    })
    .await;
    create_claim(&fake, "c");

    // The claim read the Pod; before its steal is written, the Pod is deleted.
    let (deleter, path) = (fake.clone(), pod_path(&pod));
    fake.hook(
        Moment::BetweenReadAndWrite,
        1,
        |r| r.is("PATCH", "pods"),
        move |_| {
            deleter.delete(&path).expect("delete");
            async {}
        },
    );
    claim::reconcile(claim(&fake, "c"), operator.ctx.clone())
        .await
        .expect("claim reconciles");

    let stored = fake.get(&pod_path(&pod)).expect("held by its finalizer");
    assert!(!stored["metadata"]["deletionTimestamp"].is_null());
    assert!(
        stored["metadata"]["labels"][CLAIM_UID_LABEL].is_null(),
        "a Terminating Pod was stolen from a stale copy"
    );
    operator.run();
    wait_until("the claim is Ready", || check_invariants(&fake).len() == 1).await;
    assert_eq!(check_invariants(&fake)["c"].0, "cold");
}

#[tokio::test]
async fn a_sandbox_adopts_only_the_pod_its_claim_stole_and_only_the_version_it_read() {
    let (fake, operator, _kubelet, stolen) = one_claim_served_warm(2).await;
    let idle = idle_ready_pods(&fake).pop().expect("the other Pod is idle");

    // Sandboxes a user made, naming the stolen Pod and the idle pool Pod.
    for (name, pod) in [("grab-stolen", &stolen), ("grab-idle", &idle)] {
        fake.insert(&sandbox_path(name), json!({
            "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"namespace": NS, "annotations": {POD_NAME_ANNOTATION: pod}},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}},
        }));
    }
    let as_sandbox = |name: &str| {
        Arc::new(serde_json::from_value(fake.get(&sandbox_path(name)).unwrap()).unwrap())
    };
    cache_shows_a_steal(&operator).await;
    for name in ["grab-stolen", "grab-idle"] {
        sandbox::reconcile(as_sandbox(name), operator.ctx.clone())
            .await
            .expect("sandbox reconciles");
        let status = ready(&fake.get(&sandbox_path(name)).unwrap());
        assert_eq!(
            status.map(|s| s.1).as_deref(),
            Some("PodOwnedElsewhere"),
            "{name}"
        );
    }

    // The claim's own Sandbox: someone writes the Pod between the adopt's
    // read and write, so the adopt (tested on the version read) fails and
    // takes nothing; the same reconcile then adopts the fresh version the
    // lost write read back, keeping the other writer's change.
    touch_between_read_and_write(&fake, &stolen, 1);
    let before = fake.log().len();
    sandbox::reconcile(as_sandbox("c"), operator.ctx.clone())
        .await
        .expect("sandbox reconciles");
    assert!(
        fake.log()
            .iter()
            .any(|r| r.method == "PATCH" && r.code == 422),
        "the stale adopt was refused"
    );
    assert_eq!(
        pod_label(&fake, &stolen, SANDBOX_LABEL).as_deref(),
        Some("c")
    );
    let sandbox_uid = fake.get(&sandbox_path("c")).unwrap()["metadata"]["uid"].clone();
    let controller = |fake: &sandbox_fakeapi::FakeApiServer| {
        fake.get(&pod_path(&stolen)).unwrap()["metadata"]["ownerReferences"][0]["uid"].clone()
    };
    assert_eq!(
        controller(&fake),
        sandbox_uid,
        "adopted from the fresh copy, in the same reconcile"
    );
    assert_eq!(
        pod_label(&fake, &stolen, "touched").as_deref(),
        Some("1"),
        "the other writer's change is kept"
    );
    let adopts = fake.log()[before..]
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with(&pod_path(&stolen)))
        .count();
    assert_eq!(adopts, 2, "one refused adopt, one on the fresh copy");
    for name in ["grab-stolen", "grab-idle"] {
        let uid = fake.get(&sandbox_path(name)).unwrap()["metadata"]["uid"].clone();
        assert!(
            fake.audit().iter().all(|c| c.key.resource != "pods"
                || c.after["metadata"]["ownerReferences"][0]["uid"] != uid),
            "{name} never owned a Pod"
        );
    }
}

#[tokio::test]
async fn an_adoption_lost_twice_waits_for_the_pods_event_not_a_tight_timer() {
    let (fake, operator, _kubelet, stolen) = one_claim_served_warm(1).await;
    let sandbox_json = fake.get(&sandbox_path("c")).unwrap();
    cache_shows_a_steal(&operator).await;
    // Someone writes the Pod between each adopt's read and write: the
    // stale copy's adopt and the fresh copy's both lose.
    touch_between_read_and_write(&fake, &stolen, 2);
    let before = fake.log().len();
    let action = sandbox::reconcile(
        Arc::new(serde_json::from_value(sandbox_json).unwrap()),
        operator.ctx.clone(),
    )
    .await
    .expect("sandbox reconciles");
    let refused = fake.log()[before..]
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with(&pod_path(&stolen)))
        .map(|r| r.code)
        .collect::<Vec<_>>();
    assert_eq!(
        refused,
        vec![422, 422],
        "two conditioned adopts, both refused"
    );
    // Not a 10 ms loop on the stale cache: the Pod's own event (it changed)
    // reruns the reconcile; the requeue is only the net under it.
    assert_eq!(action.requeue_after(), Some(Duration::from_secs(1)));
    assert_eq!(
        pod_label(&fake, &stolen, SANDBOX_LABEL).as_deref(),
        Some("c"),
        "still the claim's Pod"
    );
}

#[tokio::test]
async fn a_steal_is_refilled_once_without_over_creating() {
    let (fake, _operator, _kubelet) = one_warm_claim(2).await;
    wait_until("the pool refilled", || idle_ready_pods(&fake).len() == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let created = fake
        .log()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/pods") && r.code == 201)
        .count();
    assert_eq!(created, 3, "two to fill, one to refill");
}

#[tokio::test]
async fn a_claim_status_another_process_overwrote_is_written_again_at_once() {
    let (fake, operator, _kubelet) = filled_by_hand(1).await;
    create_claim(&fake, "c");
    let reconcile_claim = || claim::reconcile(claim(&fake, "c"), operator.ctx.clone());
    reconcile_claim().await.expect("claim reconciles");
    // The Sandbox adopts the Pod and says Ready; the claim settles on the
    // status it mirrors from it (written now, or already by round two).
    let sandbox_ready =
        || ready(&fake.get(&sandbox_path("c")).unwrap()).is_some_and(|r| r.0 == "True");
    for _ in 0..100 {
        if sandbox_ready() {
            break;
        }
        let sandbox = serde_json::from_value(fake.get(&sandbox_path("c")).unwrap()).unwrap();
        let _ = sandbox::reconcile(Arc::new(sandbox), operator.ctx.clone()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sandbox_ready(), "the Sandbox adopted its Pod and is Ready");
    reconcile_claim().await.expect("claim reconciles");
    assert_eq!(
        ready(&fake.get(&claim_path("c")).unwrap()).unwrap().0,
        "True"
    );
    // Another process, mirroring from a Sandbox cache that lags, writes the
    // claim not Ready on top of that.
    fake.merge(
        &claim_path("c"),
        &json!({"status": {"conditions": [{"type": "Ready", "status": "False",
            "reason": "SandboxNotReady", "message": "from a stale cache",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
    );
    // This process, whose inputs are current, writes Ready again at once:
    // the status it remembers writing was over an older version.
    reconcile_claim().await.expect("claim reconciles");
    assert_eq!(
        ready(&fake.get(&claim_path("c")).unwrap()).unwrap().0,
        "True",
        "not held back by the memo of its own earlier write"
    );
}

/// A claim that asks for no pool (`warmpool: none`) is cold by design: the
/// pool's sizing does not count it as a miss (it capped the hit ratio and
/// grew an autoscaled pool for claims it can never serve).
#[tokio::test]
async fn a_claim_that_wants_no_pool_is_no_miss() {
    let (fake, operator, _kubelet) = full_pool(1).await;
    let claim = fake.insert(
        &claim_path("cold"),
        serde_json::json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
            "metadata": {"namespace": NS},
            "spec": {"sandboxTemplateRef": {"name": TEMPLATE}, "warmpool": "none"},
        }),
    );
    let uid = claim["metadata"]["uid"].as_str().unwrap().to_string();
    wait_until("the claim is Ready", || {
        ready_in_api(&fake, &claim_path("cold"))
    })
    .await;
    assert!(!operator.ctx.sizing.has_counted(NS, &uid));
    // A claim that may use the pool is counted.
    let warm = create_claim(&fake, "warm");
    let warm_uid = warm["metadata"]["uid"].as_str().unwrap().to_string();
    wait_until("the warm claim is Ready", || {
        ready_in_api(&fake, &claim_path("warm"))
    })
    .await;
    assert!(operator.ctx.sizing.has_counted(NS, &warm_uid));
}
