//! The operator's identity in the bench: as in production, a ServiceAccount
//! of its namespace (bound to cluster-admin here, removed with the bench),
//! reached through a kubeconfig holding a TokenRequest token. So its own
//! Sandbox creates skip the webhooks exactly as they do under the chart.
//! `--operator-as-admin` keeps the bench's admin identity instead (then
//! every Sandbox create goes through both webhooks), for comparison.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const ACCOUNT: &str = "sandbox-operator";

fn binding_name(ns: &str) -> String {
    format!("{ns}-{ACCOUNT}")
}

/// Creates the ServiceAccount, its binding and a kubeconfig (next to the
/// admin one's cluster entry) that authenticates as it.
pub async fn service_account_kubeconfig(
    client: &Client,
    admin_kubeconfig: &Path,
    ns: &str,
    dir: &Path,
) -> Result<PathBuf, String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": ACCOUNT}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .map_err(|e| format!("create ServiceAccount {ns}/{ACCOUNT}: {e}"))?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": binding_name(ns)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": ns}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .map_err(|e| format!("create ClusterRoleBinding {}: {e}", binding_name(ns)))?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(6 * 3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request(ACCOUNT, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("TokenRequest for {ns}/{ACCOUNT}: {e}"))?
        .status
        .map(|s| s.token)
        .ok_or("TokenRequest answered without a token")?;
    let text = std::fs::read_to_string(admin_kubeconfig)
        .map_err(|e| format!("{}: {e}", admin_kubeconfig.display()))?;
    let mut config: serde_json::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", admin_kubeconfig.display()))?;
    config["users"] = json!([{"name": ACCOUNT, "user": {"token": token}}]);
    if let Some(contexts) = config["contexts"].as_array_mut() {
        for context in contexts {
            context["context"]["user"] = json!(ACCOUNT);
        }
    }
    let path = dir.join(format!("{ns}-operator.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Removes the cluster-wide binding (the namespace takes the rest).
pub async fn remove(client: &Client, ns: &str) {
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&binding_name(ns), &DeleteParams::default())
        .await;
}
