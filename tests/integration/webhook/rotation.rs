//! Certificate rotation under load: the webhook's serving certificate is
//! replaced while admissions stream in, and no admission fails. And the
//! published CA: a `caBundle` something else resets is put back at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::common::{TestNs, wait_until_ok, webhook_config_name};
use sandbox_operator::api::{Sandbox, SandboxTemplate};

use super::{kubectl_apply, operator_with_webhook};

/// The serial of the certificate a fresh TLS handshake presents.
fn presented_serial(port: u16) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername 127.0.0.1 </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn certificate_rotation_under_load_fails_no_admission() {
    let ns = TestNs::new("wh-rotate").await;
    let (_op, port) = operator_with_webhook(&ns, &["--cert-check-seconds", "1"]).await;
    let before = presented_serial(port);
    assert!(
        before.starts_with("serial="),
        "no certificate presented: {before:?}"
    );

    let templates: Api<SandboxTemplate> = ns.api();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (templates, stop) = (templates.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let t: SandboxTemplate = serde_json::from_value(json!({
                    "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
                    "metadata": {"name": format!("t{i}")},
                    "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
                }))
                .unwrap();
                match templates.create(&PostParams::default(), &t).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                i += 1;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Make the serving certificate unreadable: the operator reissues it (same
    // CA, so the registered caBundle stays valid) and reloads it live.
    let secrets: Api<Secret> = ns.api();
    secrets
        .patch(
            "sandbox-operator-webhook-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"tls.crt": "bm90IGEgY2VydGlmaWNhdGU="}})),
        )
        .await
        .unwrap();
    let start = Instant::now();
    // A failed handshake reads as "" and is not a new certificate: only a
    // served serial other than the first counts.
    let rotated = |serial: &str| serial.starts_with("serial=") && serial != before;
    let mut after = before.clone();
    while !rotated(&after) && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = presented_serial(port);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = writer.await.unwrap();
    println!(
        "rotation: serial {before} -> {after} after {:?}; {ok} creates admitted, {} failed",
        start.elapsed(),
        failed.len()
    );
    assert!(
        rotated(&after),
        "new handshakes must present a new certificate: before {before:?}, after {after:?}"
    );
    assert!(
        failed.is_empty(),
        "admissions failed during rotation: {failed:?}"
    );
    assert!(
        ok > 20,
        "the stream of creates was too short to mean anything: {ok}"
    );
}

/// The `caBundle` of each entry of configuration `name` (base64 text, or
/// null where there is none).
async fn ca_bundles<K>(api: &Api<K>, name: &str) -> Vec<Value>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let configuration = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
    configuration["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|webhook| webhook["clientConfig"]["caBundle"].clone())
        .collect()
}

/// Removes `caBundle` from every entry of configuration `kind`/`name`, as
/// re-applying the chart's configurations (which render none) or `helm
/// upgrade --force` (which replaces them) does.
fn reset_ca_bundle(kind: &str, name: &str, entries: usize) {
    let patch: Vec<Value> = (0..entries)
        .map(|i| json!({"op": "remove", "path": format!("/webhooks/{i}/clientConfig/caBundle")}))
        .collect();
    let out = crate::common::kubectl(&[
        "patch",
        kind,
        name,
        "--type=json",
        "-p",
        &serde_json::to_string(&patch).unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes of the operator into its webhook configurations so far.
fn injections(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("injected caBundle")
        .count()
}

/// A `caBundle` something else resets is put back within a second or so by
/// the certificate manager's watch of its configurations, not at its next
/// check (an hour away here), and Sandbox writes go through the webhook
/// again. The operator's own repair does not trigger another: exactly one
/// write per configuration.
#[tokio::test]
async fn a_reset_ca_bundle_is_put_back_at_once() {
    let ns = TestNs::new("wh-cabundle").await;
    let (op, _port) = operator_with_webhook(&ns, &["--cert-check-seconds", "3600"]).await;
    let name = webhook_config_name(&ns.name);
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(ns.client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(ns.client.clone());
    let published = ca_bundles(&validating, &name).await[0].clone();
    assert!(published.is_string(), "no caBundle registered: {published}");
    let carries_it = |bundles: &[Value]| bundles.iter().all(|b| *b == published);
    let entries = (
        ca_bundles(&mutating, &name).await.len(),
        ca_bundles(&validating, &name).await.len(),
    );
    assert!(carries_it(&ca_bundles(&mutating, &name).await));
    // The operator is up and has seen its configurations; then nothing
    // writes them until the reset.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let written_before = injections(&op.log);

    let start = Instant::now();
    reset_ca_bundle("validatingwebhookconfiguration", &name, entries.1);
    reset_ca_bundle("mutatingwebhookconfiguration", &name, entries.0);
    let repaired = wait_until_ok(Duration::from_secs(10), || async {
        carries_it(&ca_bundles(&mutating, &name).await)
            && carries_it(&ca_bundles(&validating, &name).await)
    })
    .await;
    let took = start.elapsed();
    assert!(
        repaired,
        "caBundle not put back within 10 s of the reset (the next certificate check is an \
         hour away): mutating {:?}, validating {:?}",
        ca_bundles(&mutating, &name).await,
        ca_bundles(&validating, &name).await,
    );
    println!("caBundle put back {took:?} after the reset");

    // The API server applies the repaired configurations once its own watch
    // delivers them: a Sandbox write goes through both webhooks again.
    let sandbox = "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: after-reset}\nspec:\n  podTemplate:\n    spec:\n      containers: [{name: c, image: busybox}]\n";
    let refusals = std::cell::RefCell::new(Vec::new());
    let admitted = wait_until_ok(Duration::from_secs(10), || {
        let out = kubectl_apply(&ns, sandbox);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            refusals.borrow_mut().push(stderr);
        }
        std::future::ready(out.status.success())
    })
    .await;
    let refusals = refusals.into_inner();
    assert!(admitted, "Sandbox writes still refused: {refusals:?}");
    println!(
        "Sandbox admitted {:?} after the reset, {} refusal(s) before: {refusals:?}",
        start.elapsed(),
        refusals.len()
    );
    let stored = ns.api::<Sandbox>().get("after-reset").await.unwrap();
    assert_eq!(
        stored
            .spec
            .pod_template
            .spec
            .automount_service_account_token,
        Some(false),
        "defaulted: the mutating webhook was called"
    );

    // No loop: the repair's own write is seen by the watch and left alone.
    let versions = || async {
        let mutating = mutating.get(&name).await.unwrap();
        let validating = validating.get(&name).await.unwrap();
        (
            mutating.metadata.resource_version,
            validating.metadata.resource_version,
        )
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = versions().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        versions().await,
        settled,
        "the configurations keep being written"
    );
    assert_eq!(
        injections(&op.log) - written_before,
        2,
        "one write per configuration reset"
    );
}
