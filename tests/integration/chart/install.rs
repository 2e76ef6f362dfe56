//! Installing the chart on the local control plane and uninstalling it
//! without leftovers (namespaced and cluster-scoped objects alike).

use serde_json::Value as Json;

use super::helm::{
    KUBE_VERSION, chart_dir, documents, helm, helm_cluster, helm_install, kind_of, succeed, text,
};
use crate::common::{TestNs, free_port, kubectl, repo};

/// Kinds of the cluster-scoped objects a release creates.
const CLUSTER_SCOPED: &str = "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations";

fn release_objects(release: &str, kinds: &str, namespace: Option<&str>) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={release}");
    let mut args = vec!["get", kinds, "-l", &selector, "-o", "name"];
    if let Some(namespace) = namespace {
        args.extend(["-n", namespace]);
    }
    let out = kubectl(&args);
    assert!(out.status.success(), "kubectl get {kinds}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Uninstalls `release` and checks that nothing of it is left.
pub(super) fn uninstall_and_check(release: &str, namespace: &str) {
    succeed(helm_cluster().args([
        "uninstall",
        release,
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "60s",
    ]));
    let left = release_objects(release, CLUSTER_SCOPED, None);
    assert!(
        left.is_empty(),
        "helm uninstall left cluster-scoped objects: {left:?}"
    );
    let left = release_objects(
        release,
        "deployments,services,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets",
        Some(namespace),
    );
    assert!(
        left.is_empty(),
        "helm uninstall left objects in {namespace}: {left:?}"
    );
}

#[tokio::test]
async fn chart_installs_on_the_control_plane_and_uninstalls_without_leftovers() {
    let ns = TestNs::new("chart").await;
    let chart = chart_dir();

    // The default rendering (cluster-wide RBAC, Service-based webhooks) is
    // accepted by the API server as it is (server-side dry run; registering
    // it for real would send admission calls to a Service IP).
    let manifest = succeed(helm().args([
        "template",
        &ns.name,
        chart.to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--skip-tests",
        "--kube-version",
        KUBE_VERSION,
    ]));
    let file = repo().join(format!(
        "target/test-logs/{}-default-manifest.yaml",
        ns.name
    ));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &manifest).unwrap();
    let out = ns.kubectl(&["apply", "--dry-run=server", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "the API server refuses the default rendering:\n{}",
        text(&out)
    );

    // A real install in URL mode, scoped to this namespace so no other test's
    // objects meet these webhooks; nothing serves them, so Ignore.
    let release = ns.name.clone();
    let port = free_port();
    succeed(helm_install(&release, &ns.name).args([
        "--set",
        &format!("webhook.url=https://127.0.0.1:{port}"),
        "--set",
        "webhook.failurePolicy=Ignore",
        "--set",
        &format!("controller.watchNamespace={}", ns.name),
    ]));
    let status =
        succeed(helm_cluster().args(["status", &release, "--namespace", &ns.name, "-o", "json"]));
    let status: Json = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["info"]["status"].as_str(),
        Some("deployed"),
        "{status}"
    );

    // Every object of the release is there.
    let manifest =
        succeed(helm_cluster().args(["get", "manifest", &release, "--namespace", &ns.name]));
    let docs = documents(&manifest);
    assert!(docs.len() >= 12, "{} objects", docs.len());
    for doc in &docs {
        let name = doc["metadata"]["name"].as_str().unwrap();
        let namespace = doc["metadata"]["namespace"].as_str();
        let resource = format!("{}/{name}", kind_of(doc).to_lowercase());
        let mut args = vec!["get", resource.as_str(), "-o", "name"];
        if let Some(namespace) = namespace {
            args.extend(["-n", namespace]);
        }
        let out = kubectl(&args);
        assert!(
            out.status.success(),
            "{resource} of the release is missing: {}",
            text(&out)
        );
    }
    let cluster_scoped = release_objects(&release, CLUSTER_SCOPED, None);
    assert_eq!(cluster_scoped.len(), 4, "{cluster_scoped:?}");

    uninstall_and_check(&release, &ns.name);
}
