//! A standalone Sandbox's own NetworkPolicy (the policy file's denied
//! egress ranges, made before its Pod), Pods as co-owners of their policy,
//! and the hold (`policy_hold`): a policy outlives its Sandbox, claim or
//! pool as long as a Pod it covers, whatever the deletion's propagation.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use kube::ResourceExt;
use kube::api::Patch::Merge;
use kube::api::PostParams;
use serde_json::json;

use crate::common::{TestNs, wait_for, wait_until};
use crate::network::{egress_blocks, selects, wait_until_made_again};
use sandbox_operator::api::{
    CLAIM_LABEL, CLAIM_UID_LABEL, LaunchType, POOL_LABEL, READY, SANDBOX_LABEL, Sandbox,
    SandboxClaim, SandboxWarmPool, is_true,
};
use sandbox_operator::controller::policy_hold::HOLD_FINALIZER;

/// A standalone Sandbox `name` of one tiny container.
fn standalone(name: &str) -> Sandbox {
    serde_json::from_value(json!({
        "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": name},
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap()
}

/// Creates a standalone Sandbox `name` and returns the spec of its policy
/// once it exists (30 s at most).
pub(super) async fn standalone_policy_of(ns: &TestNs, name: &str) -> NetworkPolicySpec {
    ns.api::<Sandbox>()
        .create(&PostParams::default(), &standalone(name))
        .await
        .unwrap();
    let policies = ns.api::<NetworkPolicy>();
    let policy = format!("{name}-sandbox-egress");
    wait_until(Duration::from_secs(30), || async {
        policies.get_opt(&policy).await.unwrap().is_some()
    })
    .await;
    policies.get(&policy).await.unwrap().spec.unwrap()
}

/// A Sandbox made without a claim gets a policy of its own (issue 17's
/// trust leftovers): the policy file's denied egress ranges, ingress left
/// open, in place before its Pod. A foreign policy under that name is never
/// used and no Pod starts until it is gone; deleted, the Sandbox's own is
/// made again at once.
#[tokio::test]
async fn a_standalone_sandbox_gets_the_denied_egress_before_its_pod() {
    let started = Instant::now();
    let ns = TestNs::new("net-standalone").await;
    let policies = ns.api::<NetworkPolicy>();
    // The user's own policy under the name the Sandbox's will have.
    let foreign: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "solo-sandbox-egress"},
        "spec": {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let _op = ns.operator(&[]).await;
    let sandboxes = ns.api::<Sandbox>();
    sandboxes
        .create(&PostParams::default(), &standalone("solo"))
        .await
        .unwrap();
    let held = crate::fixtures::wait_not_ready_for(&sandboxes, "solo", "NameConflict").await;
    assert!(
        held.message.contains("NetworkPolicy solo-sandbox-egress"),
        "{}",
        held.message
    );
    assert!(
        ns.api::<Pod>().get_opt("solo").await.unwrap().is_none(),
        "a Pod was started without the Sandbox's NetworkPolicy"
    );
    // The user removes theirs: the Sandbox's own is made, then its Pod.
    policies
        .delete("solo-sandbox-egress", &Default::default())
        .await
        .unwrap();
    let solo = wait_for(&sandboxes, "solo", Duration::from_secs(30), |s| {
        s.status
            .as_ref()
            .is_some_and(|st| is_true(&st.conditions, READY))
    })
    .await;
    let policy = policies.get("solo-sandbox-egress").await.unwrap();
    let owner = policy
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .expect("a controller");
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid), owner.controller),
        ("Sandbox", solo.uid().as_ref(), Some(true))
    );
    let spec = policy.spec.clone().unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Egress".to_string()]));
    assert_eq!(
        egress_blocks(&spec),
        vec![
            (
                "0.0.0.0/0".to_string(),
                vec![
                    "169.254.0.0/16".to_string(),
                    "100.100.100.200/32".to_string()
                ]
            ),
            ("::/0".to_string(), vec!["fd00:ec2::254/128".to_string()])
        ]
    );
    let pod = ns.api::<Pod>().get("solo").await.unwrap();
    assert!(selects(&spec, &pod), "the policy selects the Sandbox's Pod");
    let made = policy.creation_timestamp().unwrap().0;
    let pod_made = pod.creation_timestamp().unwrap().0;
    assert!(made <= pod_made, "policy {made} after Pod {pod_made}");
    // Deleted while its Pod runs: held (terminating, still there and
    // enforced) as long as the Pod is.
    wait_until(Duration::from_secs(20), || async {
        let p = policies.get("solo-sandbox-egress").await.unwrap();
        p.finalizers().iter().any(|f| f == HOLD_FINALIZER)
    })
    .await;
    policies
        .delete("solo-sandbox-egress", &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = policies.get("solo-sandbox-egress").await.unwrap();
    assert_eq!(
        held.uid(),
        policy.uid(),
        "the deleted policy went while its Pod runs"
    );
    assert!(held.metadata.deletion_timestamp.is_some());
    // Paused, the Sandbox's Pod goes: so does the held policy, and the
    // Sandbox, which lives, makes it again at once, as it was.
    let replicas = |n: i32| {
        let sandboxes = ns.api::<Sandbox>();
        async move {
            sandboxes
                .patch(
                    "solo",
                    &Default::default(),
                    &Merge(json!({"spec": {"replicas": n}})),
                )
                .await
                .unwrap();
        }
    };
    replicas(0).await;
    let again = wait_until_made_again(&policies, "solo-sandbox-egress", &policy).await;
    assert_eq!(again.spec, policy.spec);
    assert!(again.metadata.deletion_timestamp.is_none());
    replicas(1).await;
    let pods = ns.api::<Pod>();
    wait_until(Duration::from_secs(30), || async {
        pods.get_opt("solo").await.unwrap().is_some()
    })
    .await;
    let pod = pods.get("solo").await.unwrap();
    outlives_its_sandbox(&ns, "solo-sandbox-egress", &pod, "solo").await;
    eprintln!(
        "a_standalone_sandbox_gets_the_denied_egress: {:?}",
        started.elapsed()
    );
}

/// The policy `name` stays while its controller, the Sandbox `sandbox`, is
/// gone and the Pod `pod` is not, and goes with the Pod: the Pod is a
/// co-owner. In a cluster a Pod outlives its Sandbox
/// by its grace period; here a second owner keeps it (KWOK removes a
/// deleted Pod's finalizers at once).
async fn outlives_its_sandbox(ns: &TestNs, name: &str, pod: &Pod, sandbox: &str) {
    let policies = ns.api::<NetworkPolicy>();
    let pod_uid = pod.uid().unwrap();
    wait_until(Duration::from_secs(20), || async {
        policies
            .get(name)
            .await
            .unwrap()
            .owner_references()
            .iter()
            .any(|o| o.uid == pod_uid && o.kind == "Pod" && o.controller != Some(true))
    })
    .await;
    let policy = policies.get(name).await.unwrap();
    assert!(
        policy.finalizers().iter().any(|f| f == HOLD_FINALIZER),
        "{name} is co-owned by its Pod without the hold: {:?}",
        policy.finalizers()
    );
    let keeper: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "keeper"}})).unwrap();
    let keeper = ns
        .api::<ConfigMap>()
        .create(&PostParams::default(), &keeper)
        .await
        .unwrap();
    let pods = ns.api::<Pod>();
    let second_owner = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": keeper.uid().unwrap()
    }]}});
    pods.patch(
        &pod.name_any(),
        &Default::default(),
        &kube::api::Patch::Strategic(second_owner),
    )
    .await
    .unwrap();
    ns.api::<Sandbox>()
        .delete(sandbox, &Default::default())
        .await
        .unwrap();
    // The garbage collector has dealt with the policy once it no longer
    // names its controller: it drops a gone owner from an object that has
    // others, and deletes one that has none.
    let deadline = Instant::now() + Duration::from_secs(30);
    let kept = loop {
        match policies.get_opt(name).await.unwrap() {
            None => break None,
            Some(p) if p.owner_references().iter().all(|o| o.kind != "Sandbox") => break Some(p),
            Some(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{name} still names its deleted Sandbox after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        kept.is_some(),
        "{name} went with its Sandbox while its Pod stayed"
    );
    assert!(pods.get_opt(&pod.name_any()).await.unwrap().is_some());
    ns.api::<ConfigMap>()
        .delete("keeper", &Default::default())
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), || async {
        policies.get_opt(name).await.unwrap().is_none()
    })
    .await;
}

/// Creates claim `name` (on a template without a pool: it goes cold), waits
/// until it is Ready and returns its Pod.
async fn cold_claims_pod(ns: &TestNs, name: &str) -> Pod {
    crate::fixtures::claim_when_ready(ns, name, Duration::from_secs(60)).await;
    ns.list::<Pod>()
        .await
        .into_iter()
        .find(|p| p.labels().get(SANDBOX_LABEL).map(String::as_str) == Some(name))
        .expect("the claim's cold Pod")
}

/// A cold claim's Pod has no pool policy to fall back on. It is created
/// with the claim's uid label, so the hold the claim's policy carries from
/// its creation covers it: no co-owner patch is sent, and deleting the
/// claim (in the background, the default) leaves the policy in place,
/// terminating, until the Pod has run out its grace period.
#[tokio::test]
async fn a_cold_claims_policy_stays_while_its_pod_does() {
    let started = Instant::now();
    let (ns, _op) = with_slow_stopping_template("net-cold").await;
    let pod = cold_claims_pod(&ns, "c").await;
    let claim_uid = ns.api::<SandboxClaim>().get("c").await.unwrap().uid();
    assert_eq!(
        pod.labels().get(CLAIM_UID_LABEL),
        claim_uid.as_ref(),
        "the cold Pod carries its claim's uid"
    );
    let policies = ns.api::<NetworkPolicy>();
    wait_for_the_hold(&policies, "c-sandbox", None).await;
    let policy = policies.get("c-sandbox").await.unwrap();
    assert!(
        policy.owner_references().iter().all(|o| o.kind != "Pod"),
        "no co-owner patch is needed: {:?}",
        policy.owner_references()
    );
    ns.api::<SandboxClaim>()
        .delete("c", &Default::default())
        .await
        .unwrap();
    held_until_the_pod_is_gone(&ns, "c-sandbox", &pod.name_any()).await;
    eprintln!("a_cold_claims_policy_stays: {:?}", started.elapsed());
}

/// Foreground deletion (`--cascade=foreground`): the garbage collector
/// deletes the Pod in the foreground too and, without the hold, the policy
/// at once, while the Pod runs out its grace period (a container that
/// ignores SIGTERM keeps running until it ends; the tenant chose its
/// length). The hold keeps the policy as long as the Pod object exists, and
/// a namespace user may not lift it. KWOK honours the grace period of a Pod
/// with the annotation `sandbox.test/honour-grace-period`.
#[tokio::test]
async fn a_foreground_deletion_keeps_the_policy_until_the_pod_is_gone() {
    let started = Instant::now();
    let ns = TestNs::new("net-hold").await;
    let _op = ns.operator(&[]).await;
    let sandbox: Sandbox = serde_json::from_value(json!({
        "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "held"},
        "spec": {"podTemplate": {
            "metadata": {"annotations": {"sandbox.test/honour-grace-period": "true"}},
            "spec": {"terminationGracePeriodSeconds": 6,
                "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    let sandboxes = ns.api::<Sandbox>();
    sandboxes
        .create(&PostParams::default(), &sandbox)
        .await
        .unwrap();
    wait_for(&sandboxes, "held", Duration::from_secs(30), |s| {
        s.status
            .as_ref()
            .is_some_and(|st| is_true(&st.conditions, READY))
    })
    .await;
    let policies = ns.api::<NetworkPolicy>();
    let name = "held-sandbox-egress";
    let pod = ns.api::<Pod>().get("held").await.unwrap();
    let pod_uid = pod.uid().unwrap();
    wait_until(Duration::from_secs(20), || async {
        let p = policies.get(name).await.unwrap();
        p.owner_references().iter().any(|o| o.uid == pod_uid)
            && p.finalizers().iter().any(|f| f == HOLD_FINALIZER)
    })
    .await;
    // A namespace user who may edit NetworkPolicies may not lift the hold.
    let tenant = crate::guard::tenant(
        &ns,
        json!([{"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                "verbs": ["get", "list", "update", "patch"]}]),
    )
    .await;
    let tenant_policies: kube::Api<NetworkPolicy> = kube::Api::namespaced(tenant, &ns.name);
    let refusal = crate::guard::patch_refused_after_reload(
        &tenant_policies,
        &policies,
        name,
        &Merge(&json!({"metadata": {"finalizers": null}})),
        &Merge(&json!({"metadata": {"finalizers": [HOLD_FINALIZER]}})),
    )
    .await;
    assert!(
        refusal.contains(&format!(
            "metadata.finalizers: only the sandbox operator may remove {HOLD_FINALIZER} from a NetworkPolicy"
        )),
        "{refusal}"
    );
    // Nor change its owners, which say which Pods it covers: drop the Pod
    // (the hold would lift while it runs), rewrite its reference in place
    // (same uid, another name: the Pod would no longer be found), or add a
    // Pod (it would keep the policy held while that Pod lives).
    let before = policies.get(name).await.unwrap();
    let owners = before.owner_references().to_vec();
    let dropped: Vec<_> = owners
        .iter()
        .filter(|o| o.controller == Some(true))
        .cloned()
        .collect();
    let renamed: Vec<_> = owners
        .iter()
        .cloned()
        .map(|mut o| {
            if o.kind == "Pod" {
                o.name = "renamed".into();
            }
            o
        })
        .collect();
    let mut added = owners.clone();
    added.push(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "elsewhere".into(),
            uid: "00000000-0000-0000-0000-000000000001".into(),
            ..Default::default()
        },
    );
    for changed in [dropped, renamed, added] {
        let refusal = crate::guard::patch_refused_after_reload(
            &tenant_policies,
            &policies,
            name,
            &Merge(&json!({"metadata": {"ownerReferences": changed}})),
            &Merge(&json!({"metadata": {"ownerReferences": owners}})),
        )
        .await;
        assert!(
            refusal.contains(
                "metadata.ownerReferences: only the sandbox operator may add, remove or change an owner reference of a NetworkPolicy that holds"
            ),
            "{refusal}"
        );
    }
    sandboxes
        .delete("held", &kube::api::DeleteParams::foreground())
        .await
        .unwrap();
    held_until_the_pod_is_gone(&ns, name, "held").await;
    eprintln!(
        "a_foreground_deletion_keeps_the_policy: {:?}",
        started.elapsed()
    );
}

/// After a foreground deletion: while Pod `pod` exists (terminating, for
/// its grace period), so does the policy `name`; then the policy goes. The
/// Pod must be seen terminating at least 10 times (1 s): its grace period
/// was honoured, so the check was not empty.
async fn held_until_the_pod_is_gone(ns: &TestNs, name: &str, pod: &str) {
    let (pods, policies) = (ns.api::<Pod>(), ns.api::<NetworkPolicy>());
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut terminating_seen = 0;
    loop {
        match (
            pods.get_opt(pod).await.unwrap(),
            policies.get_opt(name).await.unwrap(),
        ) {
            (None, _) => break,
            (Some(pod), None) => panic!(
                "{name} is gone while its Pod is not (terminating: {})",
                pod.metadata.deletion_timestamp.is_some()
            ),
            (Some(pod), Some(_)) => {
                terminating_seen += usize::from(pod.metadata.deletion_timestamp.is_some());
            }
        }
        assert!(
            Instant::now() < deadline,
            "Pod {pod} is still there after 40 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        terminating_seen >= 10,
        "Pod {pod} was seen terminating {terminating_seen} times: its grace period was not honoured"
    );
    wait_until(Duration::from_secs(20), || async {
        policies.get_opt(name).await.unwrap().is_none()
    })
    .await;
}

/// A Pod template whose Pods KWOK removes only at the end of their 6 s
/// grace period (as a kubelet would for a container that ignores SIGTERM).
fn stops_after_its_grace_period() -> serde_json::Value {
    let mut pod = crate::fixtures::agent_pod(0);
    pod["metadata"]["annotations"]["sandbox.test/honour-grace-period"] = json!("true");
    pod["spec"]["terminationGracePeriodSeconds"] = json!(6);
    pod
}

/// A namespace `prefix-*` with the operator and template `tmpl` of
/// [`stops_after_its_grace_period`].
async fn with_slow_stopping_template(prefix: &str) -> (TestNs, crate::common::Operator) {
    let ns = TestNs::new(prefix).await;
    let op = ns.operator(&[]).await;
    crate::fixtures::create(
        &ns,
        &crate::fixtures::template_of("tmpl", stops_after_its_grace_period()),
    )
    .await;
    (ns, op)
}

/// Waits (20 s at most) until policy `name` carries the hold and, if
/// given, names Pod `pod_uid` among its owners.
async fn wait_for_the_hold(policies: &kube::Api<NetworkPolicy>, name: &str, pod_uid: Option<&str>) {
    wait_until(Duration::from_secs(20), || async {
        let p = policies.get(name).await.unwrap();
        pod_uid.is_none_or(|uid| p.owner_references().iter().any(|o| o.uid == uid))
            && p.finalizers().iter().any(|f| f == HOLD_FINALIZER)
    })
    .await;
}

/// The same for a cold claim deleted in the foreground (as its
/// `DeleteForeground` shutdown does): the claim's policy holds until the
/// Pod, labelled with the claim's uid, is gone.
#[tokio::test]
async fn a_cold_claim_deleted_in_the_foreground_keeps_its_policy_until_its_pod_is_gone() {
    let started = Instant::now();
    let (ns, _op) = with_slow_stopping_template("net-hold-cold").await;
    let pod = cold_claims_pod(&ns, "c").await;
    let pod_name = pod.name_any();
    let policies = ns.api::<NetworkPolicy>();
    wait_for_the_hold(&policies, "c-sandbox", None).await;
    ns.api::<SandboxClaim>()
        .delete("c", &kube::api::DeleteParams::foreground())
        .await
        .unwrap();
    held_until_the_pod_is_gone(&ns, "c-sandbox", &pod_name).await;
    eprintln!(
        "a_cold_claim_deleted_in_the_foreground_keeps_its_policy: {:?}",
        started.elapsed()
    );
}

/// A pool deleted (in the background, the default): its idle Pods go with
/// it but run out their grace period, and the pool's policy holds until
/// they are gone.
#[tokio::test]
async fn a_deleted_pools_policy_holds_until_its_idle_pods_are_gone() {
    let started = Instant::now();
    let (ns, _op) = with_slow_stopping_template("net-hold-pool").await;
    crate::fixtures::create(&ns, &crate::fixtures::pool("pool", "tmpl", 1)).await;
    crate::fixtures::wait_pool_ready(&ns, 1).await;
    let idle = ns
        .list::<Pod>()
        .await
        .into_iter()
        .find(|p| p.labels().get(POOL_LABEL).map(String::as_str) == Some("pool"))
        .expect("the pool's idle Pod")
        .name_any();
    let policies = ns.api::<NetworkPolicy>();
    wait_for_the_hold(&policies, "sandbox-pool-pool", None).await;
    ns.api::<SandboxWarmPool>()
        .delete("pool", &Default::default())
        .await
        .unwrap();
    held_until_the_pod_is_gone(&ns, "sandbox-pool-pool", &idle).await;
    eprintln!("a_deleted_pools_policy_holds: {:?}", started.elapsed());
}

/// A warm claim's Pod keeps its pool's origin label, and its pool's policy
/// covers it while the pool lives. Once the pool is gone (its policy with
/// it, when its idle Pods are), the claim's policy is the Pod's only one:
/// deleting the claim must not lift it while the Pod, stolen for the claim
/// (its uid label), runs out its grace period.
#[tokio::test]
async fn a_warm_claims_policy_holds_after_its_pool_is_gone() {
    let started = Instant::now();
    let (ns, _op) = with_slow_stopping_template("net-hold-warm").await;
    let pod = warm_claims_pod(&ns, 1).await.name_any();
    let policies = ns.api::<NetworkPolicy>();
    wait_for_the_hold(&policies, "c-sandbox", None).await;
    ns.api::<SandboxWarmPool>()
        .delete("pool", &Default::default())
        .await
        .unwrap();
    // The pool's refill goes with it, then its policy.
    wait_until(Duration::from_secs(40), || async {
        policies
            .get_opt("sandbox-pool-pool")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    assert!(
        ns.api::<Pod>().get_opt(&pod).await.unwrap().is_some(),
        "the claim's Pod outlived its pool"
    );
    ns.api::<SandboxClaim>()
        .delete("c", &Default::default())
        .await
        .unwrap();
    held_until_the_pod_is_gone(&ns, "c-sandbox", &pod).await;
    eprintln!("a_warm_claims_policy_holds: {:?}", started.elapsed());
}

/// Makes pool `pool` of `replicas` on template `tmpl`, waits until it is
/// Ready, claims `c` from it and returns the claim's (warm) Pod.
async fn warm_claims_pod(ns: &TestNs, replicas: i32) -> Pod {
    crate::fixtures::create(ns, &crate::fixtures::pool("pool", "tmpl", replicas)).await;
    crate::fixtures::wait_pool_ready(ns, replicas as usize).await;
    let claim = crate::fixtures::claim_when_ready(ns, "c", Duration::from_secs(60)).await;
    let status = claim.status.expect("a Ready claim's status");
    assert_eq!(
        status.launch_type,
        Some(LaunchType::Warm),
        "the claim took the pool's Pod"
    );
    ns.api::<Pod>()
        .get(&status.pod_name.expect("the claim's Pod"))
        .await
        .unwrap()
}

/// A claim made again under its name while the old claim's Pod runs out
/// its grace period: the old policy, kept by that Pod, would select the new
/// claim's Pods too (same labels) under the old claim's rules, so the new
/// claim takes and starts nothing (`NetworkPolicyReplacing`) until it is
/// gone; then it makes its own (the deletion wakes it) and is served. Cold
/// and warm (the old policy kept by the hold, which covers both Pods by
/// their claim-uid label).
#[tokio::test]
async fn a_cold_claim_made_again_under_its_name_waits_for_the_old_policy() {
    let started = Instant::now();
    let (ns, _op) = with_slow_stopping_template("net-again-cold").await;
    let old = cold_claims_pod(&ns, "c").await;
    made_again_waits_for_the_old_policy(&ns, &old).await;
    eprintln!("a_cold_claim_made_again: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_warm_claim_made_again_under_its_name_waits_for_the_old_policy() {
    let started = Instant::now();
    let (ns, _op) = with_slow_stopping_template("net-again-warm").await;
    let old = warm_claims_pod(&ns, 2).await;
    made_again_waits_for_the_old_policy(&ns, &old).await;
    eprintln!("a_warm_claim_made_again: {:?}", started.elapsed());
}

/// Deletes claim `c`, whose Pod is `old`, makes it again at once, and
/// checks that no other Pod carries its name while `old` exists, that the
/// new claim says why it waits, and that it is then served under a policy
/// of its own.
async fn made_again_waits_for_the_old_policy(ns: &TestNs, old: &Pod) {
    let policies = ns.api::<NetworkPolicy>();
    wait_for_the_hold(&policies, "c-sandbox", None).await;
    let claims = ns.api::<SandboxClaim>();
    claims.delete("c", &Default::default()).await.unwrap();
    wait_until(Duration::from_secs(10), || async {
        claims.get_opt("c").await.unwrap().is_none()
    })
    .await;
    crate::fixtures::create(ns, &crate::fixtures::claim("c")).await;
    let new_uid = claims.get("c").await.unwrap().uid();
    let pods = ns.api::<Pod>();
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut looks, mut said_why) = (0, false);
    while pods.get_opt(&old.name_any()).await.unwrap().is_some() {
        let others: Vec<String> = ns
            .list::<Pod>()
            .await
            .into_iter()
            .filter(|p| {
                p.uid() != old.uid()
                    && [SANDBOX_LABEL, CLAIM_LABEL]
                        .iter()
                        .any(|l| p.labels().get(*l).map(String::as_str) == Some("c"))
            })
            .map(|p| p.name_any())
            .collect();
        assert!(
            others.is_empty(),
            "Pods {others:?} were taken or started for the new claim under the old claim's policy"
        );
        said_why |= claims
            .get("c")
            .await
            .unwrap()
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.reason == "NetworkPolicyReplacing");
        looks += 1;
        assert!(
            Instant::now() < deadline,
            "the old Pod is still there after 40 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        looks >= 10,
        "the old Pod went after {looks} looks: nothing was checked"
    );
    assert!(said_why, "the new claim never said why it waits");
    wait_for(
        &claims,
        "c",
        Duration::from_secs(40),
        crate::fixtures::claim_ready,
    )
    .await;
    let policy = policies.get("c-sandbox").await.unwrap();
    assert_eq!(
        sandbox_operator::controller::controller_uid(&policy.metadata),
        new_uid.as_deref(),
        "the new claim's own policy"
    );
}

/// A policy under a claim's policy name that is not going away (here: left
/// by a claim deleted with `--cascade=orphan`, whose Sandbox was deleted
/// after it) is not the new claim's: a claim of that name takes no Pod and
/// says `NameConflict`; once the policy is deleted, it is served.
#[tokio::test]
async fn a_lasting_policy_under_a_claims_name_keeps_it_from_taking_a_pod() {
    let started = Instant::now();
    let ns = TestNs::new("net-left").await;
    let _op = ns.operator(&[]).await;
    crate::fixtures::setup(&ns, 1).await;
    crate::fixtures::wait_pool_ready(&ns, 1).await;
    crate::fixtures::claim_when_ready(&ns, "c", Duration::from_secs(60)).await;
    let claims = ns.api::<SandboxClaim>();
    let orphan = kube::api::DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..Default::default()
    };
    claims.delete("c", &orphan).await.unwrap();
    let policies = ns.api::<NetworkPolicy>();
    wait_until(Duration::from_secs(20), || async {
        claims.get_opt("c").await.unwrap().is_none()
            && policies
                .get("c-sandbox")
                .await
                .unwrap()
                .owner_references()
                .is_empty()
    })
    .await;
    match ns.api::<Sandbox>().delete("c", &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => panic!("deleting the orphaned Sandbox c: {e}"),
    }
    let labelled_c = || async {
        ns.list::<Pod>()
            .await
            .into_iter()
            .filter(|p| p.labels().get(SANDBOX_LABEL).map(String::as_str) == Some("c"))
            .map(|p| p.name_any())
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(30), || async {
        labelled_c().await.is_empty()
    })
    .await;
    crate::fixtures::wait_pool_ready(&ns, 1).await;
    crate::fixtures::create(&ns, &crate::fixtures::claim("c")).await;
    let condition = crate::fixtures::wait_not_ready_for(&claims, "c", "NameConflict").await;
    assert!(
        condition.message.contains("c-sandbox"),
        "{}",
        condition.message
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        labelled_c().await,
        Vec::<String>::new(),
        "a Pod was taken or started under a policy not the claim's"
    );
    policies
        .delete("c-sandbox", &Default::default())
        .await
        .unwrap();
    // The orphaned claim left its Service too: the same, before any steal.
    wait_until(Duration::from_secs(40), || async {
        claims
            .get("c")
            .await
            .unwrap()
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.reason == "NameConflict" && c.message.contains("Service c "))
    })
    .await;
    assert_eq!(labelled_c().await, Vec::<String>::new(), "a Pod was taken");
    ns.api::<k8s_openapi::api::core::v1::Service>()
        .delete("c", &Default::default())
        .await
        .unwrap();
    wait_for(
        &claims,
        "c",
        Duration::from_secs(45),
        crate::fixtures::claim_ready,
    )
    .await;
    eprintln!(
        "a_lasting_policy_under_a_claims_name: {:?}",
        started.elapsed()
    );
}
