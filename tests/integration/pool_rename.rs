//! A pool pointed at another template whose pod template is the same (so
//! the same template hash): its idle Pods carry the old template's label,
//! which no claim of the new template takes, so the pool must replace them.
//! Also what a pool says when the API server refuses its Pods.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::common::{TestNs, wait_for, wait_until_ok};
use crate::fixtures::{
    claim_of, claim_ready, create, is_idle, listening_agent_pod, pool, ready_condition,
    template_of, wait_pool_ready,
};
use sandbox_operator::api::{
    LaunchType, POOL_LABEL, SandboxClaim, SandboxTemplate, SandboxWarmPool, TEMPLATE_LABEL,
};

/// Idle Pods of pool `p`: (name, template label, Ready).
async fn idle_of_p(ns: &TestNs) -> Vec<(String, Option<String>, bool)> {
    ns.list::<Pod>()
        .await
        .iter()
        .filter(|p| is_idle(p) && p.labels().get(POOL_LABEL).map(String::as_str) == Some("p"))
        .map(|p| {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            (p.name_any(), p.labels().get(TEMPLATE_LABEL).cloned(), ready)
        })
        .collect()
}

#[tokio::test]
async fn a_pool_pointed_at_a_copy_of_its_template_replaces_its_pods() {
    let ns = TestNs::new("pool-rename").await;
    // The mode where the stale label also costs the idle Pods their
    // NetworkPolicy (it selects the template label).
    let _op = ns
        .operator(&["--claim-network-policy", "per-template"])
        .await;
    let pod_template = listening_agent_pod(300);
    create(&ns, &template_of("a", pod_template.clone())).await;
    create(&ns, &pool("p", "a", 4)).await;
    wait_pool_ready(&ns, 4).await;

    // The admin copies `a` to `b`, points the pool at `b`, deletes `a`.
    create(&ns, &template_of("b", pod_template)).await;
    ns.api::<SandboxWarmPool>()
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sandboxTemplateRef": {"name": "b"}}})),
        )
        .await
        .expect("point the pool at b");
    ns.api::<SandboxTemplate>()
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete template a");

    let replaced = wait_until_ok(Duration::from_secs(60), || async {
        let idle = idle_of_p(&ns).await;
        idle.len() == 4
            && idle
                .iter()
                .all(|(_, template, ready)| *ready && template.as_deref() == Some("b"))
            && ns
                .api::<SandboxWarmPool>()
                .get("p")
                .await
                .ok()
                .and_then(|p| p.status)
                .is_some_and(|s| s.ready_replicas == 4)
    })
    .await;
    let pool = ns.api::<SandboxWarmPool>().get("p").await.unwrap();
    assert!(
        replaced,
        "within 60 s the idle Pods of p are not 4 Ready Pods labelled with template b: {:?}; pool status: {:#?}",
        idle_of_p(&ns).await,
        pool.status
    );
    wait_pool_ready(&ns, 4).await;

    // A claim of `b` is served warm.
    create(
        &ns,
        &claim_of("c", json!({"sandboxTemplateRef": {"name": "b"}})),
    )
    .await;
    let claim = wait_for(
        &ns.api::<SandboxClaim>(),
        "c",
        Duration::from_secs(30),
        claim_ready,
    )
    .await;
    assert_eq!(
        claim.status.and_then(|s| s.launch_type),
        Some(LaunchType::Warm),
        "a claim of b is served from the pool"
    );
}

/// A pool whose Pods the API server refuses (here the namespace's Pod
/// Security admission at `restricted`, stricter than the operator's
/// baseline policy, which admits the template): the pool's `Ready`
/// condition gives the API server's reason and message, and a Warning
/// Event says it, instead of "0 of 2 idle Pods are Ready" forever.
#[tokio::test]
async fn a_pool_whose_pods_the_api_server_refuses_says_why() {
    let ns = TestNs::new("pool-refused").await;
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .expect("label the namespace restricted");
    let _op = ns.operator(&[]).await;
    // Runs as root as far as the Pod says (no runAsNonRoot): baseline
    // admits it, restricted does not.
    create(&ns, &template_of("t", listening_agent_pod(300))).await;
    create(&ns, &pool("p", "t", 2)).await;
    let pools = ns.api::<SandboxWarmPool>();
    let refused = wait_for(&pools, "p", Duration::from_secs(30), |p| {
        ready_condition(p).is_some_and(|c| c.message.contains("violates PodSecurity"))
    })
    .await;
    let ready = ready_condition(&refused).unwrap();
    println!("the pool says {}: {}", ready.reason, ready.message);
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "Forbidden", "{}", ready.message);
    let warned = wait_until_ok(Duration::from_secs(20), || async {
        ns.list::<k8s_openapi::api::events::v1::Event>()
            .await
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("p")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("violates PodSecurity"))
            })
    })
    .await;
    assert!(warned, "no Warning Event on the pool names the refusal");
}

/// Names no label can carry (longer than 63 characters): a pool and its
/// template stored before the webhook was there create no Pod (every
/// create would be refused, 422) and the pool says which field breaks which
/// rule; with the webhook, such a pool is refused.
#[tokio::test]
async fn pool_and_template_names_too_long_for_a_label() {
    let ns = TestNs::new("pool-long").await;
    // Before the operator (and its webhook) runs in this namespace.
    let long_template = "t".repeat(70);
    create(&ns, &template_of(&long_template, listening_agent_pod(300))).await;
    create(&ns, &pool("p", &long_template, 2)).await;
    let _op = ns.operator(&[]).await;
    let pools = ns.api::<SandboxWarmPool>();
    let blocked = wait_for(&pools, "p", Duration::from_secs(30), |p| {
        ready_condition(p).is_some_and(|c| c.reason == "PolicyViolation")
    })
    .await;
    let ready = ready_condition(&blocked).unwrap();
    assert_eq!(
        ready.message,
        "spec.sandboxTemplateRef.name: 70 characters is longer than 63: the template's name is \
         used as a label value; no Pod is created"
    );
    assert!(ns.list::<Pod>().await.is_empty(), "no Pod is created");

    // The webhook refuses a pool named beyond a label value.
    let refused = pools
        .create(
            &kube::api::PostParams::default(),
            &pool(&"p".repeat(64), "t", 1),
        )
        .await
        .expect_err("a pool named with 64 characters is refused");
    let message = refused.to_string();
    assert!(
        message.contains(
            "metadata.name: 64 characters is longer than 63: the name is used as a label value"
        ),
        "{message}"
    );
}
