//! Issue 17: the operator's own Sandbox creates skip the webhooks (a
//! `matchConditions` entry on its ServiceAccount) because the claim
//! controller admits each of them in-process with the same policy.
//!
//! Shown against the real API server: with the operator running as a
//! ServiceAccount, a warm claim's Sandbox costs no admission review yet is
//! stored defaulted; anyone else's Sandbox is still reviewed and refused;
//! and a Sandbox the policy refuses is never created for a claim.

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::common::{Operator, TestNs};
use crate::fixtures::{setup, wait_pool_ready};
use sandbox_operator::admission::{DEFAULT_POLICY_YAML, Policy};
use sandbox_operator::api::{LaunchType, Sandbox, SandboxClaim, SandboxTemplate};
use sandbox_operator::controller::admit::admit_sandbox;

/// Admission reviews of Sandboxes the webhook answered so far.
async fn sandbox_reviews(op: &Operator) -> f64 {
    op.metrics()
        .await
        .lines()
        .filter(|l| {
            l.starts_with("sandbox_operator_admission_requests_total{")
                && l.contains("kind=\"Sandbox\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A ServiceAccount of the test namespace bound to cluster-admin (the
/// binding is removed when dropped), as a kubeconfig with a token of it.
struct OperatorAccount {
    kubeconfig: std::path::PathBuf,
    binding: String,
    bindings: Api<ClusterRoleBinding>,
}

impl OperatorAccount {
    async fn create(ns: &TestNs) -> OperatorAccount {
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "operator"}})).unwrap();
        ns.api::<ServiceAccount>()
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
        let binding = format!("{}-operator", ns.name);
        let bindings: Api<ClusterRoleBinding> = Api::all(ns.client.clone());
        let body: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns.name}]
        }))
        .unwrap();
        bindings
            .create(&PostParams::default(), &body)
            .await
            .unwrap();
        let path = crate::fixtures::service_account_kubeconfig(ns, "operator");
        OperatorAccount {
            kubeconfig: path,
            binding,
            bindings,
        }
    }

    async fn remove(self) {
        let _ = self
            .bindings
            .delete(&self.binding, &DeleteParams::default())
            .await;
    }
}

#[tokio::test]
async fn the_operators_own_sandbox_creates_skip_the_webhook_and_are_admitted_in_process() {
    let ns = TestNs::new("own-admission").await;
    let account = OperatorAccount::create(&ns).await;
    let kubeconfig = account.kubeconfig.to_string_lossy().to_string();
    let op = ns.operator(&["--kubeconfig", &kubeconfig]).await;
    let log = std::fs::read_to_string(&op.log).unwrap_or_default();
    assert!(
        log.contains("own Sandbox creates skip the webhooks"),
        "the operator did not register the match condition; log:\n{log}"
    );
    setup(&ns, 1).await;
    wait_pool_ready(&ns, 1).await;

    // A warm claim: its Sandbox is created without any admission review...
    let before = sandbox_reviews(&op).await;
    let ready = crate::fixtures::claim_when_ready(&ns, "c1", Duration::from_secs(60)).await;
    assert_eq!(
        ready.status.as_ref().and_then(|s| s.launch_type),
        Some(LaunchType::Warm)
    );
    let sandbox = ns.api::<Sandbox>().get("c1").await.unwrap();
    assert_eq!(
        sandbox_reviews(&op).await,
        before,
        "the operator's own Sandbox create went through the webhook"
    );
    // ...and is stored exactly as defaulted by the policy (done in-process):
    // defaulted (the service account token is one of the defaults), and a
    // fixed point of the built-in policy the operator runs with, so the
    // webhook would have had nothing left to add (what the defaults are is
    // `controller::admit`'s unit test).
    assert_eq!(
        sandbox
            .spec
            .pod_template
            .spec
            .automount_service_account_token,
        Some(false)
    );
    let policy = Policy::from_yaml(DEFAULT_POLICY_YAML).unwrap();
    let admitted = admit_sandbox(&policy, sandbox.clone()).unwrap();
    assert_eq!(
        serde_json::to_value(&admitted.spec).unwrap(),
        serde_json::to_value(&sandbox.spec).unwrap(),
        "the stored Sandbox is missing defaults of the policy"
    );

    // Anyone else's Sandbox is still reviewed, and refused with the field.
    let escape: Sandbox = serde_json::from_value(json!({
        "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "escape"},
        "spec": {"podTemplate": {"spec": {"hostNetwork": true,
            "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    let refused = ns
        .api::<Sandbox>()
        .create(&PostParams::default(), &escape)
        .await
        .expect_err("a hostNetwork Sandbox from a user is refused");
    assert!(
        refused
            .to_string()
            .contains("spec.podTemplate.spec.hostNetwork"),
        "{refused}"
    );
    assert!(sandbox_reviews(&op).await > before);
    drop(op);
    account.remove().await;
}

#[tokio::test]
async fn a_claims_sandbox_the_policy_refuses_is_never_created() {
    // The webhook is off, so a template that breaks the policy is stored
    // (as in a namespace admission does not see); the claim controller's
    // own admission still refuses its Sandbox, before any write.
    let ns = TestNs::new("own-admission-deny").await;
    let _op = ns.operator(&["--webhook=false"]).await;
    let template: SandboxTemplate = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
        "metadata": {"name": "lax"},
        "spec": {"podTemplate": {"spec": {"hostPID": true,
            "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    ns.api::<SandboxTemplate>()
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    let claim = crate::fixtures::claim_of("c1", json!({"sandboxTemplateRef": {"name": "lax"}}));
    ns.api::<SandboxClaim>()
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    let refused =
        crate::fixtures::wait_not_ready_for(&ns.api::<SandboxClaim>(), "c1", "SandboxRejected")
            .await;
    let message = &refused.message;
    assert!(
        message.contains("spec.podTemplate.spec.hostPID"),
        "{message}"
    );
    assert!(
        ns.api::<Sandbox>().get_opt("c1").await.unwrap().is_none(),
        "a Sandbox the policy refuses was created"
    );
}
