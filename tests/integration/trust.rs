//! Issue 13: the trust boundary. Nothing a namespace user writes (labels,
//! names, objects under an expected name) steers the operator; it decides
//! from the ownerReferences it wrote.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;

use crate::common::{Operator, TestNs, wait_for, wait_until};
use crate::fixtures::{
    claim, claim_of, claim_ready, create, pool, ready_condition, setup, template_of,
    wait_not_ready_for, wait_pool_ready,
};
use sandbox_operator::api::{
    CLAIM_LABEL, LaunchType, POOL_LABEL, READY, Sandbox, SandboxClaim, SandboxTemplate,
    TEMPLATE_HASH_LABEL, TEMPLATE_LABEL, find_condition, is_true, template_hash,
};

fn ready_reason(c: &SandboxClaim) -> String {
    ready_condition(c).map(|c| c.reason).unwrap_or_default()
}

#[tokio::test]
async fn a_pod_forged_with_idle_pool_labels_is_never_handed_to_a_claim() {
    let (ns, _op) = namespace_with_a_ready_pool("trust-forged").await;
    let template = ns.api::<SandboxTemplate>().get("tmpl").await.unwrap();
    let hash = template_hash(&template.spec);
    // A namespace user's own Pod, with every label of an idle pool Pod (the
    // hash is public in the pool status) and no ownerReference, Ready at once.
    let forged: Pod = serde_json::from_value(json!({
        "metadata": {"name": "forged", "labels": {
            POOL_LABEL: "pool", TEMPLATE_LABEL: "tmpl", TEMPLATE_HASH_LABEL: hash,
            "app.kubernetes.io/managed-by": "sandbox-operator"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    ns.api::<Pod>()
        .create(&PostParams::default(), &forged)
        .await
        .unwrap();
    wait_for(&ns.api::<Pod>(), "forged", Duration::from_secs(30), |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
    // Two claims: one takes the pool's own Pod, the other must go cold.
    for name in ["c1", "c2"] {
        ns.api::<SandboxClaim>()
            .create(&PostParams::default(), &claim(name))
            .await
            .unwrap();
    }
    let claims = ns.api::<SandboxClaim>();
    let mut served = Vec::new();
    for name in ["c1", "c2"] {
        let c = wait_for(&claims, name, Duration::from_secs(60), claim_ready).await;
        served.push(c.status.unwrap().pod_name.unwrap());
    }
    assert!(
        !served.contains(&"forged".to_string()),
        "the forged Pod served a claim: {served:?}"
    );
    let forged = ns.api::<Pod>().get("forged").await.unwrap();
    assert!(forged.owner_references().is_empty(), "forged Pod untouched");
    assert!(!forged.labels().contains_key(CLAIM_LABEL));
}

/// A test namespace with its operator (default flags) and the claim tests'
/// template and a pool of one Ready Pod.
pub(crate) async fn namespace_with_a_ready_pool(prefix: &str) -> (TestNs, Operator) {
    let ns = TestNs::new(prefix).await;
    let op = ns.operator(&[]).await;
    setup(&ns, 1).await;
    wait_pool_ready(&ns, 1).await;
    (ns, op)
}

/// A Sandbox as a namespace user writes it: `metadata` (name, owners) and
/// `pod_spec`, nothing the webhook or the operator adds.
pub(crate) fn user_sandbox(metadata: serde_json::Value, pod_spec: serde_json::Value) -> Sandbox {
    serde_json::from_value(json!({
        "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": metadata, "spec": {"podTemplate": {"spec": pod_spec}}
    }))
    .unwrap()
}

/// One busybox container.
pub(crate) fn busybox() -> serde_json::Value {
    json!({"containers": [{"name": "c", "image": "busybox"}]})
}

#[tokio::test]
async fn a_claim_never_uses_a_sandbox_it_does_not_control() {
    let (ns, _op) = namespace_with_a_ready_pool("trust-conflict").await;
    // A user's own, unrelated Sandbox under the name the claim will use.
    let sandbox = user_sandbox(json!({"name": "taken"}), busybox());
    ns.api::<Sandbox>()
        .create(&PostParams::default(), &sandbox)
        .await
        .unwrap();
    ns.api::<SandboxClaim>()
        .create(&PostParams::default(), &claim("taken"))
        .await
        .unwrap();
    let c = wait_for(
        &ns.api::<SandboxClaim>(),
        "taken",
        Duration::from_secs(30),
        |c| ready_reason(c) == "NameConflict",
    )
    .await;
    let status = c.status.unwrap();
    let ready = find_condition(&status.conditions, READY).unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("Sandbox taken"), "{}", ready.message);
    assert!(
        status.pod_name.is_none(),
        "no Pod reported through a foreign Sandbox"
    );
    // The user's Sandbox is left alone, and the pool keeps its Pod.
    let theirs = ns.api::<Sandbox>().get("taken").await.unwrap();
    assert!(theirs.owner_references().is_empty());
    wait_pool_ready(&ns, 1).await;
    wait_until(Duration::from_secs(20), || async {
        ns.list::<Event>()
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("NameConflict"))
    })
    .await;
}

#[tokio::test]
async fn one_network_policy_per_template_covers_warm_and_cold_pods() {
    let ns = TestNs::new("trust-netpol").await;
    let _op = ns
        .operator(&["--claim-network-policy", "per-template"])
        .await;
    setup(&ns, 1).await;
    wait_pool_ready(&ns, 1).await;
    let claims = ns.api::<SandboxClaim>();
    claims
        .create(&PostParams::default(), &claim("warm"))
        .await
        .unwrap();
    let mut cold = claim("cold");
    cold.spec.warm_pool = Some("none".into());
    claims.create(&PostParams::default(), &cold).await.unwrap();
    let warm = wait_for(&claims, "warm", Duration::from_secs(30), claim_ready).await;
    let cold = wait_for(&claims, "cold", Duration::from_secs(60), claim_ready).await;
    assert_eq!(
        warm.status.as_ref().unwrap().launch_type,
        Some(LaunchType::Warm)
    );
    assert_eq!(
        cold.status.as_ref().unwrap().launch_type,
        Some(LaunchType::Cold)
    );

    let policies = ns.api::<NetworkPolicy>();
    let policy = policies.get("sandbox-template-tmpl").await.unwrap();
    assert_eq!(policy.owner_references()[0].kind, "SandboxTemplate");
    let spec = policy.spec.unwrap();
    assert!(
        spec.ingress.as_deref().unwrap_or_default().is_empty()
            && spec
                .policy_types
                .as_deref()
                .unwrap_or_default()
                .contains(&"Ingress".to_string()),
        "deny all ingress: {:?} {:?}",
        spec.policy_types,
        spec.ingress
    );
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()[TEMPLATE_LABEL],
        "tmpl"
    );
    assert!(policies.get_opt("warm-sandbox").await.unwrap().is_none());
    // Every Pod of the template carries the label the policy selects.
    for c in [&warm, &cold] {
        let pod = ns
            .api::<Pod>()
            .get(c.status.as_ref().unwrap().pod_name.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(
            pod.labels().get(TEMPLATE_LABEL).map(String::as_str),
            Some("tmpl"),
            "{}",
            pod.name_any()
        );
    }
}

#[tokio::test]
async fn the_policy_is_applied_again_before_any_pod_is_created() {
    // The webhook is off here (as in a namespace admission does not see):
    // the Sandbox is stored unchecked, and the controller still refuses to
    // start its Pod.
    let ns = TestNs::new("trust-policy").await;
    let _op = ns.operator(&["--webhook=false"]).await;
    let mut escape = busybox();
    escape["hostNetwork"] = json!(true);
    create(&ns, &user_sandbox(json!({"name": "escape"}), escape)).await;
    let refused = wait_not_ready_for(&ns.api::<Sandbox>(), "escape", "PolicyViolation").await;
    let message = &refused.message;
    assert!(
        message.contains("spec.podTemplate.spec.hostNetwork"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        ns.api::<Pod>().get_opt("escape").await.unwrap().is_none(),
        "no Pod for a template that fails the policy"
    );
}

#[tokio::test]
async fn pods_carry_the_policy_defaults_their_check_counted_on() {
    // The webhook is off: the Sandbox and the template are stored without
    // the restricted policy's defaults. The check before each Pod create
    // passes only with those defaults applied, so both Pods (the Sandbox's
    // and the pool's) must be created with them, not from the bare template.
    let ns = TestNs::new("trust-defaults").await;
    let dir = crate::common::repo().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let policy_file = dir.join(format!("{}-policy.yaml", ns.name));
    std::fs::write(&policy_file, "profile: restricted\n").unwrap();
    let _op = ns
        .operator(&[
            "--webhook=false",
            "--policy-file",
            policy_file.to_str().unwrap(),
        ])
        .await;
    create(&ns, &user_sandbox(json!({"name": "bare"}), busybox())).await;
    create(&ns, &template_of("bare", json!({"spec": busybox()}))).await;
    create(&ns, &pool("bare", "bare", 1)).await;
    // The Sandbox's Pod and one pool Pod.
    let both = || async {
        let pods = ns.list::<Pod>().await;
        let from_pool = pods.iter().any(|p| p.labels().contains_key(POOL_LABEL));
        let own = pods.iter().any(|p| p.name_any() == "bare");
        from_pool && own
    };
    wait_until(Duration::from_secs(30), both).await;
    for pod in ns.list::<Pod>().await {
        let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
        let name = pod.name_any();
        assert_eq!(
            spec["securityContext"]["runAsNonRoot"], true,
            "{name}: {spec:#}"
        );
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}: {spec:#}"
        );
        let container = &spec["containers"][0];
        let context = &container["securityContext"];
        assert_eq!(
            context["allowPrivilegeEscalation"], false,
            "{name}: {spec:#}"
        );
        assert_eq!(
            context["capabilities"]["drop"],
            json!(["ALL"]),
            "{name}: {spec:#}"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{name}: {spec:#}"
        );
        assert_eq!(
            spec["automountServiceAccountToken"], false,
            "{name}: {spec:#}"
        );
    }
}

#[tokio::test]
async fn a_template_too_lax_for_the_policy_fills_no_pool_and_says_why() {
    let ns = TestNs::new("trust-pool-policy").await;
    let _op = ns.operator(&["--webhook=false"]).await;
    let lax = json!({"spec": {"hostPID": true,
        "containers": [{"name": "c", "image": "busybox"}]}});
    create(&ns, &template_of("lax", lax)).await;
    create(&ns, &pool("lax", "lax", 2)).await;
    let pools = ns.api::<sandbox_operator::api::SandboxWarmPool>();
    let refused = wait_not_ready_for(&pools, "lax", "PolicyViolation").await;
    let message = &refused.message;
    assert!(message.contains("hostPID"), "{message}");
    assert!(
        ns.list::<Pod>().await.is_empty(),
        "no Pod for a template that fails the policy"
    );
}

#[tokio::test]
async fn an_expired_claim_deletes_its_own_sandbox_and_no_one_elses() {
    let (ns, _op) = namespace_with_a_ready_pool("trust-expire").await;
    // Someone else's Sandbox; then a claim of the same name that expired
    // before it was made (shutdownPolicy Retain deletes "the claim's
    // Sandbox").
    let theirs = create(&ns, &user_sandbox(json!({"name": "theirs"}), busybox())).await;
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let expiring = |name: &str, at: jiff::Timestamp| {
        let lifecycle = json!({"shutdownTime": at.to_string(), "shutdownPolicy": "Retain"});
        claim_of(
            name,
            json!({"sandboxTemplateRef": {"name": "tmpl"}, "lifecycle": lifecycle}),
        )
    };
    create(&ns, &expiring("theirs", past)).await;
    let claims = ns.api::<SandboxClaim>();
    wait_not_ready_for(&claims, "theirs", "ClaimExpired").await;
    // And a claim that is served, then expires: its own Sandbox goes.
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(8);
    create(&ns, &expiring("mine", soon)).await;
    wait_for(&claims, "mine", Duration::from_secs(30), claim_ready).await;
    wait_not_ready_for(&claims, "mine", "ClaimExpired").await;
    // Its status no longer points at the Pod it had (a later Pod may get
    // that IP).
    let status = claims.get("mine").await.unwrap().status.unwrap_or_default();
    assert!(
        status.pod_name.is_none() && status.sandbox.is_none(),
        "an expired claim still names its old Pod: {status:?}"
    );
    let sandboxes = ns.api::<Sandbox>();
    wait_until(Duration::from_secs(30), || async {
        sandboxes.get_opt("mine").await.unwrap().is_none()
    })
    .await;
    let still = sandboxes.get_opt("theirs").await.unwrap();
    assert_eq!(
        still.and_then(|s| s.uid()),
        theirs.uid(),
        "another owner's Sandbox under an expired claim's name is left alone"
    );
}

/// A Pod the claim stole and still controls itself when it expires (here:
/// a quota refuses its Sandbox, so no Sandbox ever adopts the Pod) is
/// deleted with it under `Retain`: deleting the Sandbox alone would leave
/// the sandbox's code running past its shutdownTime.
#[tokio::test]
async fn an_expired_claim_deletes_the_pod_it_still_controls() {
    let (ns, _op) = namespace_with_a_ready_pool("trust-expire-pod").await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-sandboxes"},
        "spec": {"hard": {"count/sandboxes.agents.x-k8s.io": "0"}}
    }))
    .unwrap();
    create(&ns, &quota).await;
    // The quota admission counts from the quota's status: wait until the
    // quota controller has filled it in, or the first create may pass.
    wait_until(Duration::from_secs(30), || async {
        ns.api::<k8s_openapi::api::core::v1::ResourceQuota>()
            .get("no-sandboxes")
            .await
            .unwrap()
            .status
            .and_then(|s| s.hard)
            .is_some()
    })
    .await;
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(12);
    let lifecycle = json!({"shutdownTime": at.to_string(), "shutdownPolicy": "Retain"});
    let c = create(
        &ns,
        &claim_of(
            "q",
            json!({"sandboxTemplateRef": {"name": "tmpl"}, "lifecycle": lifecycle}),
        ),
    )
    .await;
    let claim_uid = c.uid().unwrap();
    let controlled_by_claim = || async {
        ns.list::<Pod>()
            .await
            .into_iter()
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == claim_uid)
            })
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect::<Vec<_>>()
    };
    // Before the deadline: the Pod is the claim's, the Sandbox refused.
    wait_until(Duration::from_secs(10), || async {
        !controlled_by_claim().await.is_empty()
    })
    .await;
    assert!(
        jiff::Timestamp::now() < at,
        "the steal came after the deadline: the test proves nothing"
    );
    assert!(ns.api::<Sandbox>().get_opt("q").await.unwrap().is_none());
    let claims = ns.api::<SandboxClaim>();
    wait_not_ready_for(&claims, "q", "ClaimExpired").await;
    wait_until(Duration::from_secs(30), || async {
        controlled_by_claim().await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_standalone_sandbox_never_names_a_service_it_does_not_control() {
    let ns = TestNs::new("trust-svc").await;
    let _op = ns.operator(&[]).await;
    let sandboxes = ns.api::<Sandbox>();
    create(&ns, &user_sandbox(json!({"name": "s1"}), busybox())).await;
    let ready = wait_for(&sandboxes, "s1", Duration::from_secs(30), |s: &Sandbox| {
        s.status
            .as_ref()
            .is_some_and(|st| sandbox_operator::api::is_true(&st.conditions, READY))
    })
    .await;
    assert_eq!(ready.status.unwrap().service.as_deref(), Some("s1"));
    // Its Service is swapped for one of the same name, with the operator's
    // label (so the operator's cache holds it) but no owner, that selects
    // someone else's Pods. The operator may put its own back first: then
    // the swap is tried again.
    let services = ns.api::<k8s_openapi::api::core::v1::Service>();
    // The Sandbox stops naming it and says why.
    let status = swap_the_service_and_see_the_conflict(&ns, &sandboxes, "s1").await;
    let ready = find_condition(&status.conditions, READY).unwrap();
    assert!(ready.message.contains("Service s1"), "{}", ready.message);
    // Once the foreign Service is gone, the Sandbox (woken by that Service's
    // event) makes its own again and is Ready, naming it.
    services.delete("s1", &Default::default()).await.unwrap();
    let healed = wait_for(&sandboxes, "s1", Duration::from_secs(30), |s: &Sandbox| {
        s.status.as_ref().is_some_and(|st| {
            sandbox_operator::api::is_true(&st.conditions, READY) && st.service.is_some()
        })
    })
    .await;
    assert_eq!(healed.status.unwrap().service.as_deref(), Some("s1"));
    let own = services.get("s1").await.unwrap();
    assert_eq!(
        own.owner_references().first().map(|o| o.kind.as_str()),
        Some("Sandbox")
    );
}

/// A Pod whose claim and Sandbox were deleted with orphan propagation keeps
/// the `agents.x-k8s.io/sandbox` label (the ownership guard stops anyone
/// adding the label, not a label outliving its owner). A later claim of the
/// same name must not route its clients to it: its Service selects the
/// claim's uid too. Before (found by review), the Service selected the name
/// alone and its DNS name answered with both Pods. Per-template policies:
/// per claim, the earlier claim's held policy keeps the name taken.
#[tokio::test]
async fn a_pod_left_by_an_orphaning_delete_joins_no_later_claims_service() {
    let ns = TestNs::new("trust-orphan").await;
    let _op = ns
        .operator(&["--claim-network-policy", "per-template"])
        .await;
    setup(&ns, 1).await;
    wait_pool_ready(&ns, 1).await;
    let claims = ns.api::<SandboxClaim>();
    let first = crate::fixtures::claim_when_ready(&ns, "v", Duration::from_secs(60)).await;
    let left = first
        .status
        .unwrap()
        .pod_name
        .expect("the first claim's Pod");
    let orphan = kube::api::DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..Default::default()
    };
    claims.delete("v", &orphan).await.unwrap();
    wait_until(Duration::from_secs(30), || async {
        claims.get_opt("v").await.unwrap().is_none()
    })
    .await;
    ns.api::<Sandbox>().delete("v", &orphan).await.unwrap();
    let pods = ns.api::<Pod>();
    wait_until(Duration::from_secs(30), || async {
        pods.get(&left).await.unwrap().owner_references().is_empty()
    })
    .await;
    let services = ns.api::<k8s_openapi::api::core::v1::Service>();
    let _ = services.delete("v", &Default::default()).await;
    wait_until(Duration::from_secs(30), || async {
        services.get_opt("v").await.unwrap().is_none()
    })
    .await;
    let orphaned = pods.get(&left).await.unwrap();
    assert_eq!(
        orphaned
            .labels()
            .get(sandbox_operator::api::SANDBOX_LABEL)
            .map(String::as_str),
        Some("v"),
        "the orphaned Pod keeps the name label"
    );

    wait_pool_ready(&ns, 1).await;
    let second = crate::fixtures::claim_when_ready(&ns, "v", Duration::from_secs(60)).await;
    let serving = second
        .status
        .unwrap()
        .pod_name
        .expect("the second claim's Pod");
    assert_ne!(serving, left);
    let selector = services
        .get("v")
        .await
        .unwrap()
        .spec
        .unwrap()
        .selector
        .unwrap();
    let query = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let selected: Vec<String> = pods
        .list(&kube::api::ListParams::default().labels(&query))
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(
        selected,
        [serving],
        "the second claim's Service ({query}) selects its own Pod only, not the orphaned {left}"
    );
}

/// A claim's Sandbox names the claim's Service only while the claim (or
/// the Sandbox) controls the Service under that name. Here a namespace user
/// deletes the claim's Service and makes one of the same name, with the
/// operator's label (so the operator's cache holds it) but no owner, that
/// selects someone else's Pods: the Sandbox stops naming it and is not
/// Ready, saying why; once it is gone, the claim makes its Service again
/// and the Sandbox is Ready, naming it. Before (found by review), a claim's
/// Sandbox always named its Service, and stayed Ready, whoever's it was.
#[tokio::test]
async fn a_claims_sandbox_never_names_a_service_it_does_not_control() {
    let (ns, _op) = namespace_with_a_ready_pool("trust-claim-svc").await;
    let claim = crate::fixtures::claim_when_ready(&ns, "c", Duration::from_secs(60)).await;
    let sandboxes = ns.api::<Sandbox>();
    let ready_naming = |s: &Sandbox| {
        s.status.as_ref().is_some_and(|st| {
            sandbox_operator::api::is_true(&st.conditions, READY)
                && st.service.as_deref() == Some("c")
        })
    };
    wait_for(&sandboxes, "c", Duration::from_secs(30), ready_naming).await;
    let services = ns.api::<k8s_openapi::api::core::v1::Service>();
    let own = services.get("c").await.unwrap();
    assert_eq!(
        own.owner_references().first().map(|o| o.uid.as_str()),
        claim.uid().as_deref(),
        "the claim's Service"
    );
    let status = swap_the_service_and_see_the_conflict(&ns, &sandboxes, "c").await;
    let ready = find_condition(&status.conditions, READY).unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("Service c"), "{}", ready.message);
    // Nor does the claim name it (second read: it kept the FQDN).
    let claim = wait_for(
        &ns.api::<SandboxClaim>(),
        "c",
        Duration::from_secs(30),
        |c: &SandboxClaim| {
            let status = c.status.clone().unwrap_or_default();
            !is_true(&status.conditions, READY)
                && status
                    .sandbox
                    .as_ref()
                    .is_some_and(|s| s.service.is_none() && s.service_fqdn.is_none())
        },
    )
    .await;
    assert!(claim.status.is_some());
    // The foreign Service goes: the claim makes its own again (woken by
    // that Service's deletion), and the Sandbox is Ready, naming it.
    services.delete("c", &Default::default()).await.unwrap();
    wait_for(&sandboxes, "c", Duration::from_secs(30), ready_naming).await;
    let remade = wait_for(&services, "c", Duration::from_secs(30), |s| {
        s.owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == claim.uid().as_ref())
    })
    .await;
    assert_eq!(remade.owner_references()[0].kind, "SandboxClaim");
}

/// Swaps the headless Service `name` for a foreign one of that name
/// (selecting `app: mine`; the operator may put its own back first: then
/// the swap is tried again), waits for the Sandbox `name` to say
/// `NameConflict`, and checks it names no Service but still its running
/// Pod. Returns the Sandbox's status.
async fn swap_the_service_and_see_the_conflict(
    ns: &TestNs,
    sandboxes: &kube::Api<Sandbox>,
    name: &str,
) -> sandbox_operator::api::SandboxStatus {
    let services = ns.api::<k8s_openapi::api::core::v1::Service>();
    let foreign: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "sandbox-operator"}},
        "spec": {"clusterIP": "None", "selector": {"app": "mine"}}
    }))
    .unwrap();
    let mut swapped = false;
    for _ in 0..50 {
        let _ = services.delete(name, &Default::default()).await;
        if services
            .create(&PostParams::default(), &foreign)
            .await
            .is_ok()
        {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "the foreign Service was never created");
    let conflicted = wait_for(sandboxes, name, Duration::from_secs(30), |s: &Sandbox| {
        s.status.as_ref().is_some_and(|st| {
            find_condition(&st.conditions, READY).is_some_and(|c| c.reason == "NameConflict")
        })
    })
    .await;
    let status = conflicted.status.unwrap();
    assert_eq!(
        (status.service.clone(), status.service_fqdn.clone()),
        (None, None)
    );
    assert!(
        status.pod_name.is_some(),
        "its own running Pod is still reported"
    );
    status
}
