//! The claim's NetworkPolicy comes before its Ready, whatever fails in
//! between.

use sandbox_fakeapi::{Moment, RequestInfo};
use sandbox_operator::controller::NetworkPolicyMode;

use crate::harness::*;

/// Round one's NetworkPolicy create fails, and the claim's template is
/// deleted before the retry. The retry must still make the claim's policy
/// (nothing allowed: all ingress and egress denied) before it writes Ready; before, it
/// found no template, skipped the policy and wrote Ready.
#[tokio::test]
async fn a_claim_is_not_ready_without_its_policy_even_when_its_template_went_away() {
    let (fake, _operator, _kubelet) = full_pool(1).await;
    let policy_create =
        |r: &RequestInfo| r.method == "POST" && r.path.ends_with("/networkpolicies");
    let store = fake.clone();
    fake.hook(Moment::OnArrival, 1, policy_create, move |_| {
        let store = store.clone();
        async move {
            store.delete(&template_path()).expect("the template exists");
        }
    });
    fake.fail_next(1, policy_create, 500, "InternalError", "injected");
    create_claim(&fake, "c");
    wait_until("the claim is Ready", || check_invariants(&fake).len() == 1).await;
    let policy = fake
        .get(&policy_path("c-sandbox"))
        .expect("a Ready claim has its NetworkPolicy");
    assert_locked_down(&policy);
}

/// No template, nothing allowed: all ingress and all egress denied.
fn assert_locked_down(policy: &serde_json::Value) {
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"]),
        "{policy:#}"
    );
    for direction in ["ingress", "egress"] {
        let rules = &policy["spec"][direction];
        assert!(
            rules.is_null() || rules.as_array().is_some_and(Vec::is_empty),
            "no template, no allowed {direction}: {policy:#}"
        );
    }
}

/// Per-template mode: a served claim's Pod is covered by its template's
/// NetworkPolicy, which is garbage-collected with the template. When the
/// template is deleted, the claim gets a policy of its own (all ingress
/// and egress denied); before, its Pod was left without any.
#[tokio::test]
async fn a_served_claim_gets_its_own_policy_when_its_template_goes() {
    let (fake, _operator, _kubelet) = full_pool_with(1, |config| {
        config.claim_network_policy = NetworkPolicyMode::PerTemplate;
    })
    .await;
    create_claim(&fake, "c");
    wait_until("the claim is Ready", || check_invariants(&fake).len() == 1).await;
    assert!(
        fake.get(&policy_path("c-sandbox")).is_none(),
        "per-template mode: the template's policy covers the claim"
    );
    fake.delete(&template_path()).expect("the template exists");
    wait_until("the claim has a policy of its own", || {
        fake.get(&policy_path("c-sandbox")).is_some()
    })
    .await;
    assert_locked_down(&fake.get(&policy_path("c-sandbox")).unwrap());
}

/// A cold claim whose NetworkPolicy create is refused (a quota on
/// NetworkPolicies, say): no Pod starts for it until its policy exists. A
/// cold Pod has no pool's policy to fall back on. Before (found by review)
/// the Sandbox was created beside the refused policy and its controller
/// started the Pod with no policy at all.
#[tokio::test]
async fn a_cold_claims_pod_never_starts_before_its_policy() {
    let fake = fake_with_pool(0);
    let _kubelet = kubelet(&fake, std::time::Duration::from_millis(2));
    let _operator = refusing_policies(&fake, 2).await;
    create_claim(&fake, "c");
    wait_until("the claim is Ready", || check_invariants(&fake).len() == 1).await;
    let (policy, pod) = first_creates(&fake);
    eprintln!("first policy create at request {policy:?}, first Pod create at {pod:?}");
    assert!(
        fake.log()
            .iter()
            .filter(|l| l.method == "POST" && l.path.ends_with("/networkpolicies"))
            .count()
            >= 3,
        "the claim's policy was refused twice and then made"
    );
    assert!(
        matches!((policy, pod), (Some(policy), Some(pod)) if policy < pod),
        "the claim's Pod was created before its NetworkPolicy"
    );
}

/// A claim's Sandbox left to start a cold Pod while the claim's policy
/// does not exist (its create refused; a repair or a lost Pod sending the
/// Sandbox cold): the Sandbox controller creates no Pod before the policy.
/// Before (found by review) only a Sandbox already saying it waited for
/// the policy held its Pod.
#[tokio::test]
async fn a_claims_sandbox_creates_no_pod_before_the_claims_policy() {
    let fake = fake_with_pool(0);
    let _kubelet = kubelet(&fake, std::time::Duration::from_millis(2));
    let claim = create_claim(&fake, "c");
    fake.insert(
        &sandbox_path("c"),
        serde_json::json!({
            "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"namespace": NS,
                "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
                    "kind": "SandboxClaim", "name": "c",
                    "uid": claim["metadata"]["uid"], "controller": true}]},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}},
        }),
    );
    let _operator = refusing_policies(&fake, 3).await;
    wait_until("the Sandbox's Pod is created", || {
        fake.get(&pod_path("c")).is_some()
    })
    .await;
    let (policy, pod) = first_creates(&fake);
    assert!(
        matches!((policy, pod), (Some(policy), Some(pod)) if policy < pod),
        "the Sandbox's Pod was created before the claim's NetworkPolicy: {}",
        dump(&fake)
    );
}

/// An operator running on `fake` whose next `refused` NetworkPolicy creates
/// the API server refuses (a quota).
async fn refusing_policies(fake: &sandbox_fakeapi::FakeApiServer, refused: usize) -> Operator {
    let policy_create =
        |r: &RequestInfo| r.method == "POST" && r.path.ends_with("/networkpolicies");
    fake.fail_next(
        refused,
        policy_create,
        403,
        "Forbidden",
        "injected: exceeded quota",
    );
    let mut operator = Operator::start(fake, "op").await;
    operator.run();
    operator
}

/// The positions in `fake`'s log of the first NetworkPolicy and the first
/// Pod create the API server accepted.
fn first_creates(fake: &sandbox_fakeapi::FakeApiServer) -> (Option<usize>, Option<usize>) {
    let log = fake.log();
    let first = |what: &str| {
        log.iter()
            .position(|l| l.method == "POST" && l.path.ends_with(what) && l.code < 300)
    };
    (first("/networkpolicies"), first("/pods"))
}
