//! Issue 13, point 7: the network trust boundary. Idle pool Pods are
//! isolated by their pool's NetworkPolicy from the moment they exist; every
//! sandbox NetworkPolicy excepts the policy file's denied ranges from
//! egress; a foreign object under the pool policy's name stops the pool.
//! Standalone Sandboxes' policies and Pods as co-owners: `network_standalone.rs`.
//! (The chart's NetworkPolicy for the operator is tested in
//! `chart/network_policy.rs`.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;

use crate::common::{TestNs, repo, wait_for, wait_until};
use crate::network_standalone::standalone_policy_of;
use sandbox_operator::api::{
    POOL_LABEL, READY, SANDBOX_LABEL, SandboxClaim, SandboxTemplate, SandboxWarmPool,
    TEMPLATE_LABEL, is_true,
};
use sandbox_operator::controller::policy_hold::HOLD_FINALIZER;

/// A template of tiny Pods and a pool of `replicas` of it.
/// Template `tmpl`: one busybox container.
async fn template_only(ns: &TestNs) {
    let template: SandboxTemplate = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
        "metadata": {"name": "tmpl"},
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "agent", "image": "busybox"}]}}}
    }))
    .unwrap();
    ns.api::<SandboxTemplate>()
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
}

async fn template_and_pool(ns: &TestNs, replicas: i32) {
    template_only(ns).await;
    let pool: SandboxWarmPool = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
        "metadata": {"name": "pool"},
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": "tmpl"}}
    }))
    .unwrap();
    ns.api::<SandboxWarmPool>()
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();
}

/// The Pods the pool created (controlled by it), oldest first.
async fn pool_pods(ns: &TestNs, pool_uid: &str) -> Vec<Pod> {
    let mut pods: Vec<Pod> = ns
        .api::<Pod>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.owner_references().iter().any(|o| o.uid == pool_uid))
        .collect();
    pods.sort_by_key(resource_version);
    pods
}

fn resource_version<K: kube::Resource>(obj: &K) -> u64 {
    obj.resource_version()
        .and_then(|v| v.parse().ok())
        .expect("a numeric resourceVersion (etcd revision)")
}

/// The (cidr, except) of each ipBlock of the first egress rule.
pub(super) fn egress_blocks(spec: &NetworkPolicySpec) -> Vec<(String, Vec<String>)> {
    spec.egress.as_ref().expect("an egress section")[0]
        .to
        .as_ref()
        .expect("egress destinations")
        .iter()
        .filter_map(|peer| peer.ip_block.as_ref())
        .map(|b| (b.cidr.clone(), b.except.clone().unwrap_or_default()))
        .collect()
}

pub(super) fn selects(spec: &NetworkPolicySpec, pod: &Pod) -> bool {
    let wanted = spec
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .unwrap_or_default();
    wanted.iter().all(|(k, v)| pod.labels().get(k) == Some(v))
}

#[tokio::test]
async fn idle_pool_pods_are_isolated_from_the_moment_they_exist() {
    let started = Instant::now();
    let ns = TestNs::new("net-pool").await;
    let _op = ns.operator(&[]).await;
    template_and_pool(&ns, 2).await;
    let pools = ns.api::<SandboxWarmPool>();
    let pool = pools.get("pool").await.unwrap();
    let pool_uid = pool.uid().unwrap();
    wait_until(Duration::from_secs(30), || async {
        pool_pods(&ns, &pool_uid).await.len() == 2
    })
    .await;
    let policies = ns.api::<NetworkPolicy>();
    let policy = policies.get("sandbox-pool-pool").await.unwrap();
    let owner = &policy.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("SandboxWarmPool", pool_uid.as_str(), Some(true))
    );
    // Made before the first Pod: an earlier etcd revision, and a creation
    // time not after it.
    let pods = pool_pods(&ns, &pool_uid).await;
    let first = &pods[0];
    assert!(
        resource_version(&policy) < resource_version(first),
        "policy revision {} not before the first Pod's {}",
        resource_version(&policy),
        resource_version(first)
    );
    assert!(policy.creation_timestamp().unwrap().0 <= first.creation_timestamp().unwrap().0);
    let spec = policy.spec.clone().unwrap();
    assert!(spec.ingress.as_deref().unwrap_or_default().is_empty());
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_string(), "Egress".to_string()][..])
    );
    for pod in &pods {
        assert!(selects(&spec, pod), "{} is not selected", pod.name_any());
    }
    // The default policy file: the cloud metadata addresses excepted
    // (link-local and Alibaba's in IPv4, EC2's in IPv6).
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
    // Resyncs (a pool change wakes a reconcile, and so does a scale-up that
    // creates a Pod) never rewrite it.
    let before = policy.resource_version();
    pools
        .patch(
            "pool",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), || async {
        pool_pods(&ns, &pool_uid).await.len() == 3
    })
    .await;
    let after = policies.get("sandbox-pool-pool").await.unwrap();
    assert_eq!(
        after.resource_version(),
        before,
        "the pool policy was rewritten"
    );
    for pod in pool_pods(&ns, &pool_uid).await {
        assert!(selects(&spec, &pod), "{} is not selected", pod.name_any());
    }
    // A stolen Pod is still selected (the steal keeps the origin-pool
    // label), so it is never without a policy while the claim's is made.
    crate::fixtures::wait_pool_ready(&ns, 3).await;
    let ready = crate::fixtures::claim_when_ready(&ns, "c1", Duration::from_secs(60)).await;
    assert_eq!(
        ready.status.as_ref().and_then(|s| s.launch_type),
        Some(sandbox_operator::api::LaunchType::Warm)
    );
    let stolen = ns
        .api::<Pod>()
        .get(ready.status.unwrap().pod_name.as_deref().unwrap())
        .await
        .unwrap();
    assert!(!stolen.labels().contains_key(POOL_LABEL), "{stolen:?}");
    assert!(
        selects(&spec, &stolen),
        "the stolen Pod {} left the pool policy",
        stolen.name_any()
    );
    eprintln!("idle_pool_pods_are_isolated: {:?}", started.elapsed());
}

#[tokio::test]
async fn every_sandbox_policy_excepts_the_policy_files_ranges() {
    let started = Instant::now();
    let ns = TestNs::new("net-egress").await;
    let dir = repo().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let policy_file = dir.join(format!("{}-policy.yaml", ns.name));
    std::fs::write(
        &policy_file,
        "network:\n  denyEgressCIDRs: [169.254.0.0/16, 10.96.0.0/12, fd00:ec2::254/128]\n  \
         standalonePolicy: isolated\n",
    )
    .unwrap();
    let _op = ns
        .operator(&["--policy-file", policy_file.to_str().unwrap()])
        .await;
    template_and_pool(&ns, 1).await;
    let claim: SandboxClaim = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
        "metadata": {"name": "c1"}, "spec": {"sandboxTemplateRef": {"name": "tmpl"}}
    }))
    .unwrap();
    ns.api::<SandboxClaim>()
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    wait_for(
        &ns.api::<SandboxClaim>(),
        "c1",
        Duration::from_secs(30),
        |c| {
            c.status
                .as_ref()
                .is_some_and(|s| is_true(&s.conditions, READY))
        },
    )
    .await;
    let expected = vec![
        (
            "0.0.0.0/0".to_string(),
            vec!["169.254.0.0/16".to_string(), "10.96.0.0/12".to_string()],
        ),
        ("::/0".to_string(), vec!["fd00:ec2::254/128".to_string()]),
    ];
    let policies = ns.api::<NetworkPolicy>();
    let claim_policy = policies.get("c1-sandbox").await.unwrap().spec.unwrap();
    assert_eq!(
        claim_policy
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()[SANDBOX_LABEL],
        "c1"
    );
    assert_eq!(egress_blocks(&claim_policy), expected);
    let pool_policy = policies
        .get("sandbox-pool-pool")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(egress_blocks(&pool_policy), expected);
    // A standalone Sandbox's too, and with `standalonePolicy: isolated` its
    // ingress is closed like an idle Pod's.
    let solo_policy = standalone_policy_of(&ns, "solo").await;
    assert_eq!(egress_blocks(&solo_policy), expected);
    assert_eq!(
        solo_policy.policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    assert!(solo_policy.ingress.unwrap_or_default().is_empty());
    eprintln!("every_sandbox_policy_excepts: {:?}", started.elapsed());
}

#[tokio::test]
async fn per_template_mode_makes_the_template_policy_before_idle_pods() {
    let started = Instant::now();
    let ns = TestNs::new("net-tmpl").await;
    let _op = ns
        .operator(&["--claim-network-policy", "per-template"])
        .await;
    template_and_pool(&ns, 1).await;
    let pool_uid = ns
        .api::<SandboxWarmPool>()
        .get("pool")
        .await
        .unwrap()
        .uid()
        .unwrap();
    wait_until(Duration::from_secs(30), || async {
        pool_pods(&ns, &pool_uid).await.len() == 1
    })
    .await;
    let policies = ns.api::<NetworkPolicy>();
    let policy = policies.get("sandbox-template-tmpl").await.unwrap();
    let pod = &pool_pods(&ns, &pool_uid).await[0];
    assert!(resource_version(&policy) < resource_version(pod));
    let spec = policy.spec.unwrap();
    assert_eq!(
        spec.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()[TEMPLATE_LABEL],
        "tmpl"
    );
    assert!(selects(&spec, pod));
    assert_eq!(
        egress_blocks(&spec)[0],
        (
            "0.0.0.0/0".to_string(),
            vec![
                "169.254.0.0/16".to_string(),
                "100.100.100.200/32".to_string()
            ]
        )
    );
    // The template's policy covers idle Pods: no pool policy in this mode.
    assert!(
        policies
            .get_opt("sandbox-pool-pool")
            .await
            .unwrap()
            .is_none()
    );
    // The template deleted: its policy goes with it, and the pool's idle
    // Pod gets a policy of its pool's denying all ingress and egress.
    ns.api::<SandboxTemplate>()
        .delete("tmpl", &Default::default())
        .await
        .unwrap();
    wait_until(Duration::from_secs(20), || async {
        policies
            .get_opt("sandbox-template-tmpl")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let lockdown = wait_for(
        &policies,
        "sandbox-pool-pool",
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    let spec = lockdown.spec.unwrap();
    assert!(selects(&spec, pod), "the lockdown selects the idle Pod");
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    assert!(
        spec.ingress.unwrap_or_default().is_empty() && spec.egress.unwrap_or_default().is_empty()
    );
    // The template made again: its policy is back, and the lockdown goes
    // (an Egress-type policy with no rule would cut what the template opens).
    template_only(&ns).await;
    wait_until(Duration::from_secs(30), || async {
        policies
            .get_opt("sandbox-template-tmpl")
            .await
            .unwrap()
            .is_some()
            && policies
                .get_opt("sandbox-pool-pool")
                .await
                .unwrap()
                .is_none()
    })
    .await;
    eprintln!("per_template_mode: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_bad_cidr_in_the_policy_file_stops_the_start() {
    let dir = repo().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let policy_file = dir.join(format!("bad-cidr-{}.yaml", std::process::id()));
    std::fs::write(
        &policy_file,
        "network:\n  denyEgressCIDRs: [169.254.0.0/16, 169.254.169.254/16]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
        .args([
            "run",
            "--leader-elect=false",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--policy-file")
        .arg(&policy_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a bad CIDR: {stderr}");
    assert!(
        stderr.contains("network.denyEgressCIDRs[1]: \"169.254.169.254/16\" has host bits set"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_foreign_policy_under_the_pool_policys_name_stops_the_pool() {
    let started = Instant::now();
    let ns = TestNs::new("net-conflict").await;
    // A user's own policy (no owner) under the name the pool will use,
    // allowing all ingress.
    let foreign: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "sandbox-pool-pool"},
        "spec": {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]}
    }))
    .unwrap();
    let policies = ns.api::<NetworkPolicy>();
    let foreign = policies
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let _op = ns.operator(&[]).await;
    template_and_pool(&ns, 2).await;
    let ready =
        crate::fixtures::wait_not_ready_for(&ns.api::<SandboxWarmPool>(), "pool", "NameConflict")
            .await;
    assert!(
        ready.message.contains("NetworkPolicy sandbox-pool-pool"),
        "{}",
        ready.message
    );
    wait_until(Duration::from_secs(20), || async {
        ns.api::<Event>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("NameConflict"))
    })
    .await;
    // No Pod, and the user's policy is untouched.
    let pods = ns
        .api::<Pod>()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert!(
        pods.iter().all(|p| !p.labels().contains_key(POOL_LABEL)),
        "a pool Pod was created without its NetworkPolicy"
    );
    let theirs = policies.get("sandbox-pool-pool").await.unwrap();
    assert!(theirs.owner_references().is_empty());
    assert_eq!(theirs.resource_version(), foreign.resource_version());
    eprintln!("a_foreign_policy: {:?}", started.elapsed());
}

/// A NetworkPolicy the operator made and someone deleted is made again at
/// once (a pool's once its idle Pods are gone): its deletion wakes its
/// owner. 20 s is below the pool's remembered policy (never expires by
/// itself), so only the deletion's event can do it. A Ready claim's policy
/// deleted by hand stays held (terminating, enforced) while its Pod runs.
#[tokio::test]
async fn a_deleted_sandbox_policy_is_made_again_at_once() {
    let started = Instant::now();
    let ns = TestNs::new("net-restore").await;
    let _op = ns.operator(&[]).await;
    crate::fixtures::setup(&ns, 1).await;
    crate::fixtures::wait_pool_ready(&ns, 1).await;
    crate::fixtures::claim_when_ready(&ns, "c", Duration::from_secs(60)).await;
    let policies = ns.api::<NetworkPolicy>();
    // A claim's Sandbox is covered by the claim's policy, not one of its own.
    assert!(
        policies
            .get_opt("c-sandbox-egress")
            .await
            .unwrap()
            .is_none()
    );
    // The pool's and the warm claim's hold while their Pods run (see
    // `policy_hold`); the pool's is made again once the pool has none.
    for name in ["sandbox-pool-pool", "c-sandbox"] {
        wait_until(Duration::from_secs(20), || async {
            let p = policies.get(name).await.unwrap();
            p.finalizers().iter().any(|f| f == HOLD_FINALIZER)
        })
        .await;
    }
    let before = policies.get("c-sandbox").await.unwrap();
    policies
        .delete("c-sandbox", &Default::default())
        .await
        .unwrap();
    let before_pool = policies.get("sandbox-pool-pool").await.unwrap();
    policies
        .delete("sandbox-pool-pool", &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for before in [&before, &before_pool] {
        let name = before.name_any();
        let held = policies.get_opt(&name).await.unwrap();
        assert!(
            held.as_ref()
                .is_some_and(|h| h.uid() == before.uid() && h.metadata.deletion_timestamp.is_some()),
            "{name} went while a Pod it covers runs"
        );
    }
    ns.api::<SandboxWarmPool>()
        .patch(
            "pool",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let again = wait_until_made_again(&policies, "sandbox-pool-pool", &before_pool).await;
    assert_eq!(again.spec, before_pool.spec, "made again as it was");
    assert_eq!(again.owner_references(), before_pool.owner_references());
    // A claim deleted with `--cascade=orphan` (a cold one: the pool has
    // none left): its Sandbox and the claim's policy are nobody's, and the
    // Sandbox is a standalone one from then on, with the standalone policy
    // (the deny list) of its own.
    crate::fixtures::claim_when_ready(&ns, "d", Duration::from_secs(60)).await;
    let orphan = kube::api::DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..Default::default()
    };
    ns.api::<SandboxClaim>().delete("d", &orphan).await.unwrap();
    wait_until(Duration::from_secs(30), || async {
        policies
            .get_opt("d-sandbox-egress")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    wait_until(Duration::from_secs(10), || async {
        !policies
            .get("d-sandbox")
            .await
            .unwrap()
            .owner_references()
            .iter()
            .any(|o| o.kind == "SandboxClaim")
    })
    .await;
    eprintln!("a_deleted_sandbox_policy: {:?}", started.elapsed());
}

/// Waits (20 s at most) for `name` to exist again with another uid than
/// `before`'s.
pub(super) async fn wait_until_made_again(
    policies: &kube::Api<NetworkPolicy>,
    name: &str,
    before: &NetworkPolicy,
) -> NetworkPolicy {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(p) = policies.get_opt(name).await.unwrap()
            && p.uid() != before.uid()
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "NetworkPolicy {name} was not made again within 20 s of its deletion"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per template, a claim's cold Pod is covered by its template's policy
/// alone, which selects the template label. A tenant may edit its Sandbox's
/// labels (a metadata write): removing the template label, then pausing
/// and resuming, once gave a new Pod without it, which no policy selected
/// (found by review). The label now comes from the claim's template.
#[tokio::test]
async fn per_template_a_tenants_edit_of_the_sandbox_label_leaves_its_pod_covered() {
    let ns = TestNs::new("net-tmpl-edit").await;
    let _op = ns
        .operator(&["--claim-network-policy", "per-template"])
        .await;
    template_and_pool(&ns, 1).await;
    crate::fixtures::claim_when_ready(&ns, "c", Duration::from_secs(60)).await;
    let sandboxes = ns.api::<sandbox_operator::api::Sandbox>();
    let edit = |body: serde_json::Value| {
        let sandboxes = sandboxes.clone();
        async move {
            sandboxes
                .patch(
                    "c",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(body),
                )
                .await
                .unwrap();
        }
    };
    let claim_pods = || async {
        ns.api::<Pod>()
            .list(&kube::api::ListParams::default().labels(&format!("{SANDBOX_LABEL}=c")))
            .await
            .unwrap()
            .items
    };
    // Paused until its Pod is gone, then resumed until it has one again.
    let pause_and_resume = || async {
        edit(json!({"spec": {"replicas": 0}})).await;
        wait_until(Duration::from_secs(30), || async {
            claim_pods().await.is_empty()
        })
        .await;
        edit(json!({"spec": {"replicas": 1}})).await;
        wait_until(Duration::from_secs(30), || async {
            claim_pods().await.len() == 1
        })
        .await;
    };
    edit(json!({"metadata": {"labels": {TEMPLATE_LABEL: null}}})).await;
    pause_and_resume().await;
    let pod = claim_pods().await.remove(0);
    let policy = ns
        .api::<NetworkPolicy>()
        .get("sandbox-template-tmpl")
        .await
        .unwrap();
    assert!(
        selects(&policy.spec.unwrap(), &pod),
        "the resumed Pod is selected by its template's policy: labels {:?}",
        pod.labels()
    );
    assert_eq!(
        pod.labels().get(TEMPLATE_LABEL).map(String::as_str),
        Some("tmpl")
    );
    // The template deleted, the claim covers its Pod with a deny-all policy
    // of its own; paused and resumed, the Sandbox starts its Pod under it
    // (the second read found it held for the template's policy forever).
    ns.api::<SandboxTemplate>()
        .delete("tmpl", &Default::default())
        .await
        .unwrap();
    wait_for(
        &ns.api::<NetworkPolicy>(),
        "c-sandbox",
        Duration::from_secs(30),
        |_| true,
    )
    .await;
    pause_and_resume().await;
}
