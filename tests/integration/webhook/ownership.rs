//! Registration by URL never takes over a webhook configuration it did not
//! make: a developer running `run --register-webhook-url` against a cluster
//! where the Helm chart installed configurations under the same name must
//! not repoint the cluster's webhooks at 127.0.0.1 (nor delete them on
//! Ctrl-C).

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::Resource;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::common::{TestNs, free_port, kubeconfig, kubectl, operator_command, repo};

/// Metadata of a configuration as the Helm chart labels it.
fn helm_metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(
            [("app.kubernetes.io/managed-by", "Helm")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

/// Deletes both configurations named `name` when dropped (with kubectl:
/// the test's client cannot be driven while its runtime is unwinding).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for kind in [
            "mutatingwebhookconfiguration",
            "validatingwebhookconfiguration",
        ] {
            let _ = kubectl(&["delete", "--ignore-not-found", kind, &self.0]);
        }
    }
}

#[tokio::test]
async fn registration_by_url_refuses_a_configuration_helm_owns() {
    let ns = TestNs::new("wh-owner").await;
    let name = format!("helm-owned-{}", ns.name);
    let _cleanup = Cleanup(name.clone());
    // Without webhooks: harmless to every other test.
    let mutating = Api::<MutatingWebhookConfiguration>::all(ns.client.clone())
        .create(
            &PostParams::default(),
            &MutatingWebhookConfiguration {
                metadata: helm_metadata(&name),
                webhooks: None,
            },
        )
        .await
        .unwrap();
    let validating = Api::<ValidatingWebhookConfiguration>::all(ns.client.clone())
        .create(
            &PostParams::default(),
            &ValidatingWebhookConfiguration {
                metadata: helm_metadata(&name),
                webhooks: None,
            },
        )
        .await
        .unwrap();

    let logs = repo().join("target/test-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join(format!("{}-owner-operator.log", ns.name));
    let file = std::fs::File::create(&log).unwrap();
    let webhook_port = free_port();
    let mut child = operator_command(&kubeconfig(), file)
        .args(["run", "--leader-elect=false", "--namespace", &ns.name])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--operator-namespace", &ns.name])
        .args(["--webhook-addr", &format!("127.0.0.1:{webhook_port}")])
        .args([
            "--register-webhook-url",
            &format!("https://127.0.0.1:{webhook_port}"),
        ])
        .args(["--webhook-config-name", &name])
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status
        .unwrap_or_else(|_| panic!("the operator did not refuse (still running); log:\n{text}"))
        .unwrap();
    assert_eq!(status.code(), Some(2), "exit code; log:\n{text}");
    let expected = format!("MutatingWebhookConfiguration {name} already exists");
    assert!(
        text.contains(&expected),
        "{expected:?} not in the log:\n{text}"
    );
    assert!(
        text.contains("--webhook-config-name"),
        "the flag is named:\n{text}"
    );

    // Untouched: not repointed, no caBundle injected.
    let now_m = Api::<MutatingWebhookConfiguration>::all(ns.client.clone())
        .get(&name)
        .await
        .unwrap();
    let now_v = Api::<ValidatingWebhookConfiguration>::all(ns.client.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(
        now_m.meta().resource_version,
        mutating.meta().resource_version
    );
    assert_eq!(
        now_v.meta().resource_version,
        validating.meta().resource_version
    );
}
