//! Certificate rotation under load: the webhook's serving certificate is
//! replaced while admissions stream in, and no admission fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::TestNs;
use sandbox_operator::api::SandboxTemplate;

use super::operator_with_webhook;

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
