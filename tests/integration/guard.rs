//! The ownership guard (`charts/sandbox-operator/files/ownership-guard.yaml`)
//! against an impersonated namespace user: only the operator may make
//! objects owned by its kinds, change what they control, or give a Pod its
//! labels. Each refusal names the field and the rule; the operator's own
//! writes pass.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;

use crate::common::{TestNs, wait_for};
use crate::fixtures::{claim, claim_ready, create};
use crate::trust::{busybox, namespace_with_a_ready_pool, user_sandbox};
use sandbox_operator::api::{
    CLAIM_LABEL, LaunchType, POOL_LABEL, Sandbox, SandboxClaim, SandboxTemplate,
    TEMPLATE_HASH_LABEL, TEMPLATE_LABEL,
};

/// A client for a namespace user of `ns` whose Role has `rules` (and no
/// right on the finalizers of the operator's kinds, which the operator has:
/// see the chart's RBAC).
pub(crate) async fn tenant(ns: &TestNs, rules: serde_json::Value) -> kube::Client {
    let user = format!("tenant-{}", ns.name);
    let rbac = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "tenant"}, "rules": rules});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "tenant"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]});
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(rbac).unwrap();
    create(ns, &role).await;
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(binding).unwrap();
    create(ns, &binding).await;
    crate::common::client_as(&user).await
}

#[tokio::test]
async fn only_the_operator_may_make_objects_owned_by_its_kinds() {
    // A namespace user who may create and edit Pods and Sandboxes, but not
    // the finalizers of the operator's kinds (which the operator may: see
    // the chart's RBAC).
    let (ns, _op) = namespace_with_a_ready_pool("trust-guard").await;
    let tenant = tenant(
        &ns,
        json!([{"apiGroups": ["", "agents.x-k8s.io"], "resources": ["pods", "sandboxes"],
                "verbs": ["get", "list", "create", "update", "patch", "delete"]}]),
    )
    .await;
    let pods: kube::Api<Pod> = kube::Api::namespaced(tenant.clone(), &ns.name);
    let pool = ns
        .api::<sandbox_operator::api::SandboxWarmPool>()
        .get("pool")
        .await
        .unwrap();
    let pool_ref = json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
        "kind": "SandboxWarmPool", "name": "pool", "uid": pool.uid().unwrap(), "controller": true});
    let forged = |name: &str, owners: serde_json::Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {POOL_LABEL: "pool", TEMPLATE_LABEL: "tmpl",
                "app.kubernetes.io/managed-by": "sandbox-operator"}, "ownerReferences": owners},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap()
    };
    // 1. A Pod forged as an idle pool Pod (the pool's uid is readable) is
    //    refused, naming the field and the owner. The guard is cluster-wide
    //    and may take a moment to load after the first operator applied it:
    //    a forged Pod that got through meanwhile is deleted and tried again.
    let refusal = create_refused_after_reload(&pods, |name| forged(name, json!([pool_ref]))).await;
    assert!(
        refusal.contains("metadata.ownerReferences: only the sandbox operator may make a Pod owned by SandboxWarmPool pool"),
        "{refusal}"
    );
    //    The same reference under another apiVersion is judged by its kind.
    let mut elsewhere = pool_ref.clone();
    elsewhere["apiVersion"] = json!("v1");
    let refusal = create_error(&pods, &forged("forged-v1", json!([elsewhere]))).await;
    assert!(
        refusal.contains("may make a Pod owned by SandboxWarmPool pool"),
        "{refusal}"
    );
    // 2. The same user's Pod without such a reference is refused too while
    //    it carries the pool's labels (only the operator gives a Pod its
    //    labels); without them it is created, and an update that adds the
    //    reference is refused.
    let refusal = create_error(&pods, &forged("own", json!([]))).await;
    assert!(
        refusal.contains("metadata.labels: only the sandbox operator may set ")
            && refusal.contains(POOL_LABEL)
            && refusal.contains(TEMPLATE_LABEL),
        "{refusal}"
    );
    let mut own = forged("own", json!([]));
    own.metadata.labels = None;
    pods.create(&PostParams::default(), &own).await.unwrap();
    let add = json!({"metadata": {"ownerReferences": [pool_ref]}});
    let refusal = patch_error(&pods, "own", &add).await;
    assert!(refusal.contains("metadata.ownerReferences"), "{refusal}");
    // 3. A Sandbox made to look like a claim's is refused too.
    let claim = create(&ns, &crate::fixtures::claim("c1")).await;
    let owner = json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
        "kind": "SandboxClaim", "name": "c1", "uid": claim.uid().unwrap(), "controller": true});
    let sandbox = user_sandbox(
        json!({"name": "decoy", "ownerReferences": [owner]}),
        busybox(),
    );
    let refusal = create_error(
        &kube::Api::<Sandbox>::namespaced(tenant, &ns.name),
        &sandbox,
    )
    .await;
    assert!(
        refusal.contains("may make a Sandbox owned by SandboxClaim c1"),
        "{refusal}"
    );
    // 4. The operator's own references pass: the claim is served warm.
    served_warm(&ns, "c1").await;
}

/// A namespace with a Ready pool and its operator, and a client for a
/// co-tenant there who may edit Pods (ephemeral containers too), Services
/// and NetworkPolicies.
async fn with_co_tenant(prefix: &str) -> (TestNs, crate::common::Operator, kube::Client) {
    let (ns, op) = namespace_with_a_ready_pool(prefix).await;
    let tenant = tenant(
        &ns,
        json!([{"apiGroups": ["", "networking.k8s.io"],
                "resources": ["pods", "pods/ephemeralcontainers", "services", "networkpolicies"],
                "verbs": ["get", "list", "create", "update", "patch"]}]),
    )
    .await;
    (ns, op, tenant)
}

/// Waits until claim `name` of `ns` is Ready, served warm; its status.
async fn served_warm(ns: &TestNs, name: &str) -> sandbox_operator::api::SandboxClaimStatus {
    let served = wait_for(
        &ns.api::<SandboxClaim>(),
        name,
        Duration::from_secs(30),
        claim_ready,
    )
    .await;
    let status = served.status.unwrap();
    assert_eq!(status.launch_type, Some(LaunchType::Warm));
    status
}

#[tokio::test]
async fn only_the_operator_may_rewrite_an_idle_pod() {
    let (ns, _op, tenant) = with_co_tenant("guard-idle").await;
    let pods: kube::Api<Pod> = kube::Api::namespaced(tenant.clone(), &ns.name);
    let idle = ns
        .api::<Pod>()
        .list(&kube::api::ListParams::default().labels(&format!("{POOL_LABEL}=pool")))
        .await
        .unwrap()
        .items
        .remove(0);
    let name = idle.name_any();
    let container = idle.spec.as_ref().unwrap().containers[0].clone();
    let (container, image) = (container.name, container.image);
    // 1. Swapping the image of an idle pool Pod (Kubernetes allows it on a
    //    running Pod) is refused, naming the field and the controller. The
    //    guard is cluster-wide and reloads a moment after an operator
    //    applied it: a patch that got through meanwhile is undone by the
    //    operator's own client and tried again.
    let swap = json!({"spec": {"containers": [{"name": container, "image": "evil:1"}]}});
    let undo = json!({"spec": {"containers": [{"name": container, "image": image}]}});
    let refusal = refused_after_reload(&pods, &ns, &name, &swap, &undo).await;
    assert!(
        refusal.contains("spec: only the sandbox operator may change the spec of a Pod controlled by SandboxWarmPool pool"),
        "{refusal}"
    );
    // 2. So is moving it to another template's pool by its labels.
    let relabel =
        json!({"metadata": {"labels": {TEMPLATE_HASH_LABEL: "other", TEMPLATE_LABEL: "other"}}});
    let refusal = patch_error(&pods, &name, &relabel).await;
    assert!(
        refusal.contains("metadata.labels: only the sandbox operator may change the agents.x-k8s.io/ and managed-by labels of a Pod controlled by SandboxWarmPool pool"),
        "{refusal}"
    );
    //    And so is dropping its controller reference (after which it would
    //    be a Pod nobody controls, free to edit).
    let orphan = json!({"metadata": {"ownerReferences": null}});
    let refusal = patch_error(&pods, &name, &orphan).await;
    assert!(
        refusal.contains("metadata.ownerReferences: only the sandbox operator may change the controller reference of a Pod controlled by SandboxWarmPool pool"),
        "{refusal}"
    );
    //    And so is rewriting the operator's annotations on it.
    let stamp = json!({"metadata": {"annotations": {"agents.x-k8s.io/created-at": "0"}}});
    let refusal = patch_error(&pods, &name, &stamp).await;
    assert!(
        refusal.contains("metadata.annotations: only the sandbox operator may change the agents.x-k8s.io/ annotations of a Pod controlled by SandboxWarmPool pool"),
        "{refusal}"
    );
    //    And adding an ephemeral container to it.
    let debug = json!({"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}});
    let refusal = pods
        .patch_subresource(
            "ephemeralcontainers",
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&debug),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refusal.contains("spec: only the sandbox operator"),
        "{refusal}"
    );
    // 3. Labels of the user's own and annotations stay free to change.
    let own = json!({"metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}}});
    pods.patch(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&own),
    )
    .await
    .expect("a label of the user's own is not the operator's");
    // 4. The operator's own writes pass: the Pod, unchanged, serves a claim.
    create(&ns, &claim("c1")).await;
    served_warm(&ns, "c1").await;
    let pod = ns.api::<Pod>().get(&name).await.unwrap();
    assert_eq!(
        pod.labels().get(CLAIM_LABEL).map(String::as_str),
        Some("c1")
    );
    assert_eq!(pod.spec.unwrap().containers[0].image, image);
}

#[tokio::test]
async fn only_the_operator_may_rewrite_a_claims_service_and_policies_or_join_them() {
    let (ns, _op, tenant) = with_co_tenant("guard-claim").await;
    create(&ns, &claim("c1")).await;
    let status = served_warm(&ns, "c1").await;
    // 1. The claim's Service and NetworkPolicy keep their spec: pointing
    //    the Service at another Pod, or opening the policy, is refused.
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(tenant.clone(), &ns.name);
    let service = status
        .sandbox
        .and_then(|s| s.service)
        .expect("the Ready claim names its Service");
    let repoint = json!({"spec": {"selector": {"app": "mine"}}});
    let refusal = patch_error(&services, &service, &repoint).await;
    assert!(
        refusal.contains("spec: only the sandbox operator may change the spec of a Service controlled by SandboxClaim c1"),
        "{refusal}"
    );
    let policies: kube::Api<NetworkPolicy> = kube::Api::namespaced(tenant.clone(), &ns.name);
    let open = json!({"spec": {"ingress": [{}]}});
    let claim_policy = sandbox_operator::controller::claim::network_policy_name("c1");
    let refusal = patch_error(&policies, &claim_policy, &open).await;
    assert!(
        refusal.contains("spec: only the sandbox operator may change the spec of a NetworkPolicy controlled by SandboxClaim c1"),
        "{refusal}"
    );
    //    A template's NetworkPolicy (`--claim-network-policy per-template`)
    //    is kept the same way.
    let template = ns.api::<SandboxTemplate>().get("tmpl").await.unwrap();
    let template_policy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "tmpl-policy", "ownerReferences": [{
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
            "name": "tmpl", "uid": template.uid().unwrap(), "controller": true}]},
        "spec": {"podSelector": {"matchLabels": {TEMPLATE_LABEL: "tmpl"}}, "policyTypes": ["Ingress"]}
    }))
    .unwrap();
    create(&ns, &template_policy).await;
    let refusal = patch_error(&policies, "tmpl-policy", &open).await;
    assert!(
        refusal.contains("spec: only the sandbox operator may change the spec of a NetworkPolicy controlled by SandboxTemplate tmpl"),
        "{refusal}"
    );
    // 2. Nor may the user's own Pod join the claim's Service by its label;
    //    offering a Pod for adoption stays open.
    let pods: kube::Api<Pod> = kube::Api::namespaced(tenant, &ns.name);
    let own_pod = |name: &str, label: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {label: "c1"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap()
    };
    let refusal = create_error(&pods, &own_pod("intruder", "agents.x-k8s.io/sandbox")).await;
    assert!(
        refusal.contains(
            "metadata.labels: only the sandbox operator may set agents.x-k8s.io/sandbox on a Pod"
        ),
        "{refusal}"
    );
    pods.create(
        &PostParams::default(),
        &own_pod("offered", "agents.x-k8s.io/adoptable"),
    )
    .await
    .expect("a Pod offered for adoption is the user's to make");
}

/// The error of a create of `object` that must be refused.
async fn create_error<K>(api: &kube::Api<K>, object: &K) -> String
where
    K: Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.create(&PostParams::default(), object)
        .await
        .expect_err("the create is refused")
        .to_string()
}

/// The refusal of a Pod create once the guard's latest version is loaded;
/// until then a Pod that got through is deleted and `pod(name)` is tried
/// again under a new name (the deleted one may still be terminating).
async fn create_refused_after_reload(pods: &kube::Api<Pod>, pod: impl Fn(&str) -> Pod) -> String {
    for attempt in 0..100 {
        let name = format!("forged-{attempt}");
        match pods.create(&PostParams::default(), &pod(&name)).await {
            Ok(_) => {
                pods.delete(&name, &Default::default()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return error.to_string(),
        }
    }
    panic!("the guard never refused the forged Pod")
}

/// The error of a merge patch of `name` that must be refused.
async fn patch_error<K>(api: &kube::Api<K>, name: &str, patch: &serde_json::Value) -> String
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await
    .expect_err("the patch is refused")
    .to_string()
}

/// The refusal of the strategic merge `patch` on Pod `name` once the
/// guard's latest version is loaded (see [`patch_refused_after_reload`]).
async fn refused_after_reload(
    pods: &kube::Api<Pod>,
    ns: &TestNs,
    name: &str,
    patch: &serde_json::Value,
    undo: &serde_json::Value,
) -> String {
    use kube::api::Patch::Strategic;
    patch_refused_after_reload(
        pods,
        &ns.api::<Pod>(),
        name,
        &Strategic(patch),
        &Strategic(undo),
    )
    .await
}

/// The refusal of `patch` on `name` through `api` once the guard's latest
/// version is loaded; until then a patch that passes is reverted by `undo`
/// through `admin` and tried again.
pub(crate) async fn patch_refused_after_reload<K>(
    api: &kube::Api<K>,
    admin: &kube::Api<K>,
    name: &str,
    patch: &kube::api::Patch<&serde_json::Value>,
    undo: &kube::api::Patch<&serde_json::Value>,
) -> String
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for _ in 0..100 {
        let params = kube::api::PatchParams::default();
        match api.patch(name, &params, patch).await {
            Ok(_) => {
                admin.patch(name, &params, undo).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return error.to_string(),
        }
    }
    panic!("the guard never refused {patch:?} on {name}")
}
