//! Repairs of a claim whose Sandbox names a Pod the claim never got.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use sandbox_fakeapi::Moment;
use sandbox_operator::api::reason::{PAUSED, POD_TERMINATING};
use sandbox_operator::api::{
    CLAIM_LABEL, CLAIM_UID_LABEL, ORIGIN_POOL_LABEL, POD_NAME_ANNOTATION, POOL_LABEL, READY,
    SANDBOX_LABEL, is_true,
};
use sandbox_operator::controller::claim;
use serde_json::json;
use tokio::sync::Notify;

use crate::harness::*;

/// Stores the Sandbox of claim `c` (`claim` as [`create_claim`] returned
/// it) naming `pod`, as a round one interrupted before its steal leaves it.
pub(crate) fn warm_sandbox(
    fake: &sandbox_fakeapi::FakeApiServer,
    claim: &serde_json::Value,
    pod: &str,
) {
    fake.insert(
        &sandbox_path("c"),
        json!({
            "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"namespace": NS, "annotations": {POD_NAME_ANNOTATION: pod},
                "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
                    "kind": "SandboxClaim", "name": "c",
                    "uid": claim["metadata"]["uid"], "controller": true}]},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}},
        }),
    );
}

/// The claim's Sandbox names a pool Pod the claim never stole (a crash
/// between the Sandbox create and the steal), and that Pod then lost its
/// controller (its pool deleted with `--cascade=orphan`). The Sandbox will
/// never adopt an ownerless Pod, so the claim must be moved to another Pod;
/// before, nothing repaired it and it stayed not Ready for good.
#[tokio::test]
async fn a_claim_whose_named_pod_lost_its_controller_is_served_by_another() {
    let (fake, mut operator, _kubelet) = filled_by_hand(2).await;
    let claim = create_claim(&fake, "c");
    let orphan = idle_ready_pods(&fake).pop().expect("an idle Pod");
    warm_sandbox(&fake, &claim, &orphan);
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

/// A split brain on one claim, staged: operators `a` and `b` (controllers
/// not running) on a pool of 2, and claim `c`. A's round one has created
/// the Sandbox naming Pod `pod` while A's steal of it is held at `gate`;
/// B's cache shows that Sandbox and the Pod still idle, and the Pod is
/// reserved in B's own memory (by another claim B is serving).
struct StealInFlight {
    fake: sandbox_fakeapi::FakeApiServer,
    a: Operator,
    b: Operator,
    pod: String,
    claim_uid: serde_json::Value,
    gate: Arc<Notify>,
    serving: tokio::task::JoinHandle<
        sandbox_operator::controller::Result<sandbox_operator::controller::Action>,
    >,
    _kubelet: tokio::task::JoinHandle<()>,
}

fn named_pod(fake: &sandbox_fakeapi::FakeApiServer) -> Option<String> {
    fake.get(&sandbox_path("c")).expect("the Sandbox")["metadata"]["annotations"]
        [POD_NAME_ANNOTATION]
        .as_str()
        .map(str::to_owned)
}

async fn a_steal_in_flight() -> StealInFlight {
    let (fake, a, kubelet) = filled_by_hand(2).await;
    let b = Operator::start(&fake, "b").await;
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
    let pod = named_pod(&fake).expect("a warm Sandbox");
    let b_sandboxes = b.ctx.caches.sandboxes.clone();
    wait_until("B's cache shows the Sandbox", || {
        b_sandboxes.get(&ObjectRef::new("c").within(NS)).is_some()
    })
    .await;
    assert!(b.ctx.reservations.try_reserve(&format!("{NS}/{pod}")));
    StealInFlight {
        fake,
        a,
        b,
        pod,
        claim_uid,
        gate,
        serving,
        _kubelet: kubelet,
    }
}

impl StealInFlight {
    /// B reconciles the claim (a repair), then A's steal goes on; the
    /// Sandbox must stay on the Pod, and the claim end Ready on it.
    async fn repair_then_release(mut self) {
        let fake = self.fake.clone();
        claim::reconcile(claim(&fake, "c"), self.b.ctx.clone())
            .await
            .expect("B's reconcile repairs");
        self.gate.notify_one();
        (&mut self.serving)
            .await
            .expect("A's reconcile ran")
            .expect("A's reconcile");
        let pod = self.pod.clone();
        assert_eq!(
            named_pod(&fake).as_deref(),
            Some(pod.as_str()),
            "the Sandbox stays on the Pod"
        );
        let taken = fake.get(&pod_path(&pod)).expect("the Pod exists");
        assert_eq!(taken["metadata"]["labels"][CLAIM_UID_LABEL], self.claim_uid);
        let status = fake.get(&claim_path("c")).expect("the claim")["status"].clone();
        if !status.is_null() {
            assert_eq!(status["podName"], pod.as_str(), "any status names the Pod");
        }
        self.a.run();
        self.b.run();
        wait_until("the claim is Ready", || check_invariants(&fake).len() == 1).await;
        assert_eq!(
            check_invariants(&fake)["c"].1,
            pod,
            "served by that Pod throughout"
        );
    }
}

/// Two processes serve one claim (a split brain), staged as in
/// [`a_steal_in_flight`]. Before, B's repair moved the Sandbox to another
/// Pod; A's steal then landed and A wrote the claim Ready on a Pod the
/// Sandbox no longer named (and a Sandbox reconcile from the older copy
/// could adopt it as well: two Pods, `MultiplePods`, a claim stuck not
/// Ready). Now B's repair races A's steal with one of its own, from the
/// copy it just read: whichever wins, the Pod is the claim's, and the
/// Sandbox stays on it.
#[tokio::test]
async fn a_repair_racing_the_other_process_s_steal_of_the_named_pod_keeps_the_sandbox_on_it() {
    a_steal_in_flight().await.repair_then_release().await;
}

/// The same split brain, with the named Pod no longer one B would take:
/// the template changed in B's view after A decided (a template edit, a
/// pool or policy change reaching one process first). Before (found by
/// review), B moved the Sandbox (no idle Pod of the new template: to none,
/// cold); A's steal then landed and A wrote the claim Ready on a Pod the
/// Sandbox no longer named. Now B leaves the Sandbox on a Pod still its
/// pool's while a steal sent with the Sandbox's create can land.
#[tokio::test]
async fn a_repair_leaves_the_sandbox_on_a_pod_it_would_not_take_while_a_steal_can_land() {
    let stage = a_steal_in_flight().await;
    stage
        .fake
        .merge(
            &template_path(),
            &json!({"spec": {"podTemplate": {"metadata": {"labels": {"edited": "yes"}}}}}),
        )
        .expect("the template exists");
    let templates = stage.b.ctx.caches.templates.clone();
    wait_until("B's cache shows the edited template", || {
        templates
            .get(&ObjectRef::new(TEMPLATE).within(NS))
            .is_some_and(|t| {
                t.spec
                    .pod_template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.as_ref())
                    .is_some_and(|l| l.contains_key("edited"))
            })
    })
    .await;
    stage.repair_then_release().await;
}

/// The same, with the Pod's status written between B's read of it and B's
/// steal: B's steal loses to a write that left it the same idle Pod, and
/// tries once more from the copy it re-reads (A's steal would, and would
/// win after a repoint).
#[tokio::test]
async fn a_repair_whose_steal_loses_to_a_status_update_tries_the_named_pod_again() {
    let stage = a_steal_in_flight().await;
    status_written_at(
        &stage.fake,
        Moment::BetweenReadAndWrite,
        "GET",
        &pod_path(&stage.pod),
        "probed",
    );
    stage.repair_then_release().await;
}

/// The next `method` request on the Pod at `path` finds its status written
/// (`message` set) at `moment`: a status update racing that request.
fn status_written_at(
    fake: &sandbox_fakeapi::FakeApiServer,
    moment: Moment,
    method: &'static str,
    path: &str,
    message: &'static str,
) {
    let (writer, target, probe) = (fake.clone(), path.to_owned(), path.to_owned());
    fake.hook(
        moment,
        1,
        move |r| r.method == method && r.path == probe,
        move |_| {
            let (fake, path) = (writer.clone(), target.clone());
            async move {
                let mut status = fake.get(&path).expect("the Pod")["status"].clone();
                status["message"] = message.into();
                fake.set_status(&path, status);
            }
        },
    );
}

/// Writes what a steal writes: `pod` leaves the pool for `claim` (an object
/// as [`create_claim`] returned it).
pub(crate) fn stolen(fake: &sandbox_fakeapi::FakeApiServer, pod: &str, claim: &serde_json::Value) {
    let name = claim["metadata"]["name"].as_str().expect("a claim name");
    fake.merge(
        &pod_path(pod),
        &json!({"metadata": {
            "labels": {POOL_LABEL: null, ORIGIN_POOL_LABEL: POOL, CLAIM_LABEL: name,
                CLAIM_UID_LABEL: claim["metadata"]["uid"], SANDBOX_LABEL: name},
            "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
                "kind": "SandboxClaim", "name": name, "uid": claim["metadata"]["uid"],
                "controller": true}]}}),
    )
    .expect("the Pod exists");
}

/// A claim whose Sandbox names a Pod another claim got, while this
/// process's cache still shows a Pod it stole for the claim and then gave
/// back (deleted; the cache has not caught up). The repair must not point
/// the Sandbox at the Pod being deleted (the claim would go cold when it
/// goes) but take an idle one. Before, the cache's copy counted as the
/// claim's earlier steal.
#[tokio::test]
async fn a_repair_does_not_reuse_a_pod_this_process_gave_back() {
    let (fake, operator, _kubelet) = filled_by_hand(3).await;
    let (mine, other) = (create_claim(&fake, "c"), create_claim(&fake, "x"));
    let mut idle = idle_ready_pods(&fake);
    let (named, given_back) = (idle.pop().unwrap(), idle.pop().unwrap());
    stolen(&fake, &named, &other);
    stolen(&fake, &given_back, &mine);
    warm_sandbox(&fake, &mine, &named);
    let ctx = operator.ctx.clone();
    wait_until("the cache shows both steals and the Sandbox", || {
        let claimed = |pod: &str| {
            ctx.caches
                .pods
                .get(&ObjectRef::new(pod).within(NS))
                .is_some_and(|p| p.labels().contains_key(CLAIM_UID_LABEL))
        };
        claimed(&named)
            && claimed(&given_back)
            && ctx
                .caches
                .sandboxes
                .get(&ObjectRef::new("c").within(NS))
                .is_some()
    })
    .await;
    operator
        .ctx
        .reservations
        .record_given_back(&format!("{NS}/{given_back}"));
    claim::reconcile(claim(&fake, "c"), operator.ctx.clone())
        .await
        .expect("the claim's reconcile repairs");
    let now_named = named_pod(&fake);
    assert!(now_named.is_some(), "still warm");
    assert_ne!(now_named, Some(given_back), "not the Pod given back");
    assert_ne!(now_named, Some(named), "not the other claim's Pod");
}

/// A Pod stolen for a claim whose Sandbox is Ready on another (a give-back
/// in round one that did not land, say) is given back by the claim's next
/// reconcile (deleted), and this process records it as given back, so that
/// a repair or a retried serve does not take it for the claim's Pod while
/// the cache still shows it stolen for the claim.
#[tokio::test]
async fn a_surplus_pod_given_back_is_remembered_as_given_back() {
    let (fake, operator, _kubelet) = one_warm_claim(2).await;
    let mine = fake.get(&claim_path("c")).expect("the claim");
    wait_until("the pool refilled", || idle_ready_pods(&fake).len() == 2).await;
    let surplus = idle_ready_pods(&fake).pop().expect("an idle Pod");
    stolen(&fake, &surplus, &mine);
    let (ctx, key) = (operator.ctx.clone(), format!("{NS}/{surplus}"));
    // (Or its periodic resync gave it back already.)
    wait_until(
        "the cache shows the surplus Pod stolen for the claim",
        || {
            ctx.reservations.was_given_back(&key)
                || ctx
                    .caches
                    .pods
                    .get(&ObjectRef::new(&surplus).within(NS))
                    .is_some_and(|p| p.labels().contains_key(CLAIM_UID_LABEL))
        },
    )
    .await;
    // The claim is not woken by a Pod it does not name (its Sandbox is):
    // its next reconcile, here by hand, gives the Pod back.
    claim::reconcile(claim(&fake, "c"), operator.ctx.clone())
        .await
        .expect("the claim's reconcile");
    let deleted = fake.get(&pod_path(&surplus)).is_none();
    let recorded = ctx.reservations.was_given_back(&key);
    assert_eq!(
        (deleted, recorded),
        (true, true),
        "the surplus Pod is deleted and recorded as given back"
    );
}

/// The claim's give-back of a surplus Pod finds it written since its
/// cache's copy (a status update between the read and the delete): the
/// delete is refused with a conflict and the Pod kept. No event of that
/// Pod wakes the claim (its Sandbox names another Pod), so the claim looks
/// again within a second by itself and gives the Pod back then. Before,
/// the unused Pod kept running until the periodic resync (30 s here).
#[tokio::test]
async fn a_surplus_pod_whose_give_back_conflicts_is_given_back_soon_after() {
    let (fake, operator, _kubelet) = one_warm_claim(2).await;
    let mine = fake.get(&claim_path("c")).expect("the claim");
    wait_until("the pool refilled", || idle_ready_pods(&fake).len() == 2).await;
    // Settled: the operator has seen the Sandbox's own Ready (off the
    // claim's critical path) and the claim's reconcile it woke is over, so
    // nothing but the touch below wakes the claim.
    let ctx = operator.ctx.clone();
    wait_until("the operator's cache shows the Sandbox Ready", || {
        ctx.caches
            .sandboxes
            .get(&ObjectRef::new("c").within(NS))
            .and_then(|s| s.status.clone())
            .is_some_and(|s| is_true(&s.conditions, READY))
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let surplus = idle_ready_pods(&fake).pop().expect("an idle Pod");
    let path = pod_path(&surplus);
    status_written_at(
        &fake,
        Moment::OnArrival,
        "DELETE",
        &path,
        "written before the give-back",
    );
    stolen(&fake, &surplus, &mine);
    wait_until(
        "the cache shows the surplus Pod stolen for the claim",
        || {
            ctx.caches
                .pods
                .get(&ObjectRef::new(&surplus).within(NS))
                .is_some_and(|p| p.labels().contains_key(CLAIM_UID_LABEL))
        },
    )
    .await;
    // Wake the claim through its controller, as any change of it would.
    let before_touch = fake.log().len();
    fake.merge(
        &claim_path("c"),
        &json!({"metadata": {"annotations": {"touched": "yes"}}}),
    )
    .expect("the claim exists");
    wait_until("the surplus Pod is given back", || {
        fake.get(&path).is_none()
    })
    .await;
    let deletes: Vec<(usize, u16)> = fake
        .log()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == "DELETE" && r.path == path)
        .map(|(i, r)| (i, r.code))
        .collect();
    assert!(
        deletes
            .first()
            .is_some_and(|&(at, code)| at >= before_touch && code == 409),
        "the first give-back comes after the touch and loses to the status write \
         (request index, code; the touch at {before_touch}): {deletes:?}"
    );
    assert!(
        ctx.reservations.was_given_back(&format!("{NS}/{surplus}")),
        "the Pod is recorded as given back"
    );
}

/// Whether the Pod `name` is still its pool's (controller kind).
fn pool_controls(fake: &sandbox_fakeapi::FakeApiServer, name: &str) -> bool {
    fake.get(&pod_path(name)).is_some_and(|p| {
        p["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["kind"] == "SandboxWarmPool"))
    })
}

/// A tenant edits its served claim's Sandbox: the adoption annotation now
/// names an idle pool Pod, and `replicas: 0` makes the claim not Ready.
/// Nothing is stolen for it: the annotation is ignored once the Sandbox
/// ran its own Pod. Before (found by review) the claim's repair stole the
/// named Pod, and kept it; repeated, one claim took the whole pool.
#[tokio::test]
async fn a_tenants_edit_of_the_annotation_steals_nothing() {
    let (fake, operator, _kubelet) = served_and_adopted().await;
    let own = check_invariants(&fake)["c"].1.clone();
    names_an_idle_pod_which_stays_idle(
        &fake,
        &operator,
        json!({"replicas": 0}),
        "the Sandbox's own Pod is stopped and the claim is not Ready, saying it is paused",
        |fake| {
            fake.get(&pod_path(&own))
                .is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null())
                && claim_not_ready_saying(fake, PAUSED)
        },
    )
    .await;
}

/// Whether claim `c`'s Ready condition, per the API server, is False and
/// its message contains `words` (the mirrored Sandbox's reason).
fn claim_not_ready_saying(fake: &sandbox_fakeapi::FakeApiServer, words: &str) -> bool {
    fake.get(&claim_path("c"))
        .and_then(|claim| {
            claim["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")
                .cloned()
        })
        .is_some_and(|c| {
            c["status"] == "False" && c["message"].as_str().is_some_and(|m| m.contains(words))
        })
}

/// One warm claim `c`, its Sandbox Ready on the Pod it adopted.
async fn served_and_adopted() -> (
    sandbox_fakeapi::FakeApiServer,
    Operator,
    tokio::task::JoinHandle<()>,
) {
    let served = one_warm_claim(3).await;
    wait_until("the Sandbox is Ready", || {
        ready_in_api(&served.0, &sandbox_path("c"))
    })
    .await;
    served
}

/// Points the Sandbox of claim `c` at an idle pool Pod (with `spec`
/// merged into its spec), as its tenant may, and checks that Pod stays its
/// pool's. Not before the operator has taken the edit in: `reacted` (what
/// its reaction, described by `reaction`, makes of the fake) holds, and
/// its caches show the edited Sandbox and the claim not Ready, the state in
/// which a repair would steal. Then one claim reconcile on those caches,
/// run here so that one surely ran, and 3 s of the running controllers
/// must leave the Pod its pool's. Before (found by review) the check came
/// 3 s after the edit with nothing waited for, and would have passed had
/// the operator ignored Sandbox edits altogether.
async fn names_an_idle_pod_which_stays_idle(
    fake: &sandbox_fakeapi::FakeApiServer,
    operator: &Operator,
    spec: serde_json::Value,
    reaction: &str,
    reacted: impl Fn(&sandbox_fakeapi::FakeApiServer) -> bool,
) {
    let idle = idle_ready_pods(fake).pop().expect("an idle Pod");
    fake.merge(
        &sandbox_path("c"),
        &json!({"metadata": {"annotations": {POD_NAME_ANNOTATION: idle}}, "spec": spec}),
    )
    .expect("the Sandbox exists");
    wait_until(
        &format!("the operator reacts to the edit: {reaction}"),
        || reacted(fake),
    )
    .await;
    let caches = &operator.ctx.caches;
    wait_until(
        "the operator's caches show the edited Sandbox and the claim not Ready",
        || {
            caches
                .sandboxes
                .get(&ObjectRef::new("c").within(NS))
                .is_some_and(|s| s.annotations().get(POD_NAME_ANNOTATION) == Some(&idle))
                && caches
                    .claims
                    .get(&ObjectRef::new("c").within(NS))
                    .is_some_and(|c| {
                        !c.status
                            .as_ref()
                            .is_some_and(|s| is_true(&s.conditions, READY))
                    })
        },
    )
    .await;
    claim::reconcile(claim(fake, "c"), operator.ctx.clone())
        .await
        .expect("claim reconciles");
    assert!(
        pool_controls(fake, &idle),
        "the idle Pod {idle} the tenant named was taken by a claim reconcile on the edit: {}",
        dump(fake)
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        pool_controls(fake, &idle),
        "the idle Pod {idle} the tenant named was taken: {}",
        dump(fake)
    );
}

/// A claim's Sandbox paused between the steal and the adoption (a crash in
/// between, the pause during the outage): the stolen Pod it names is
/// stopped like one it owns. Before (found by review) it ran for the whole
/// pause, while the Sandbox said it had no Pod.
#[tokio::test]
async fn a_paused_sandbox_stops_the_pod_stolen_for_it() {
    let (fake, mut operator, _kubelet) = filled_by_hand(2).await;
    let claim = create_claim(&fake, "c");
    let pod = idle_ready_pods(&fake).pop().expect("an idle Pod");
    let claim_uid = claim["metadata"]["uid"].clone();
    // The steal, as the claim controller writes it.
    fake.merge(
        &pod_path(&pod),
        &json!({"metadata": {
            "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
                "kind": "SandboxClaim", "name": "c", "uid": claim_uid, "controller": true}],
            "labels": {POOL_LABEL: null, ORIGIN_POOL_LABEL: "pool", CLAIM_LABEL: "c",
                CLAIM_UID_LABEL: claim_uid, SANDBOX_LABEL: "c"}}}),
    )
    .expect("the Pod exists");
    warm_sandbox(&fake, &claim, &pod);
    fake.merge(&sandbox_path("c"), &json!({"spec": {"replicas": 0}}))
        .expect("the Sandbox exists");
    operator.run();
    wait_until("the stolen Pod is stopped", || {
        fake.get(&pod_path(&pod))
            .is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null())
    })
    .await;
}

/// The same edit while the Sandbox's own Pod is kept terminating (a
/// finalizer the tenant added, then a delete): the claim is not Ready, yet
/// nothing is stolen for it. Before (found by a second review) a
/// terminating Pod did not count, and each edit stole one more Pod.
#[tokio::test]
async fn a_tenants_edit_while_its_pod_is_terminating_steals_nothing() {
    let (fake, operator, _kubelet) = served_and_adopted().await;
    let own = check_invariants(&fake)["c"].1.clone();
    fake.merge(
        &pod_path(&own),
        &json!({"metadata": {"finalizers": ["tenant.example/keep"]}}),
    )
    .expect("the Pod exists");
    fake.delete(&pod_path(&own)).expect("the Pod exists");
    // The annotation alone changes nothing the Sandbox shows (it follows
    // its own Pod): what the operator does with the edit is seen in its
    // caches and in the claim reconcile run on them.
    names_an_idle_pod_which_stays_idle(
        &fake,
        &operator,
        json!({}),
        "the claim is not Ready, saying its Sandbox's own Pod is terminating",
        |fake| claim_not_ready_saying(fake, POD_TERMINATING),
    )
    .await;
}
