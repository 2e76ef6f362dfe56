//! Issue 6: the admission webhook as the API server calls it (registered by
//! URL on 127.0.0.1 with its caBundle), plus hostile input straight at its
//! HTTPS port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestNs, wait_for};
use sandbox_operator::api::{READY, Sandbox, SandboxTemplate, is_true};

/// Starts an operator with its webhook on a known port.
async fn operator_with_webhook(ns: &TestNs, extra: &[&str]) -> (crate::common::Operator, u16) {
    let op = ns.operator(extra).await;
    let port = op.webhook_port;
    (op, port)
}

fn kubectl_apply(ns: &TestNs, yaml: &str) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("wh-{}-{}.yaml", ns.name, rand::random::<u32>()));
    std::fs::write(&path, yaml).unwrap();
    let out = ns.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
    out
}

#[tokio::test]
async fn seed_sandbox_is_admitted_defaulted_and_idempotent() {
    let ns = TestNs::new("wh-seed").await;
    let (_op, _port) = operator_with_webhook(&ns, &[]).await;
    ns.create_yaml("examples/aio-sandbox.yaml").await;
    let sandboxes: Api<Sandbox> = ns.api();
    let stored = sandboxes.get("aio-sandbox-example").await.unwrap();
    let spec = &stored.spec.pod_template.spec;
    assert_eq!(
        spec.automount_service_account_token,
        Some(false),
        "automountServiceAccountToken defaulted"
    );
    let seccomp = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .expect("seccompProfile defaulted");
    assert_eq!(seccomp.type_, "RuntimeDefault");
    let container = &spec.containers[0];
    let limits = container
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["memory"].0, "8Gi", "the seed's own limits are kept");
    assert_eq!(
        container
            .security_context
            .as_ref()
            .unwrap()
            .allow_privilege_escalation,
        Some(false)
    );

    // Sending the stored object back changes nothing: the mutation is
    // idempotent. (The operator also writes this object's status, so wait
    // until it is Ready and retry if its write slips in between.)
    wait_for(
        &sandboxes,
        "aio-sandbox-example",
        Duration::from_secs(30),
        |s| {
            s.status
                .as_ref()
                .is_some_and(|st| is_true(&st.conditions, READY))
        },
    )
    .await;
    let mut attempts = 0;
    let (current, again) = loop {
        let current = sandboxes.get("aio-sandbox-example").await.unwrap();
        match sandboxes
            .replace("aio-sandbox-example", &PostParams::default(), &current)
            .await
        {
            Ok(again) => break (current, again),
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 5 => attempts += 1,
            Err(e) => panic!("replacing the stored Sandbox: {e}"),
        }
    };
    assert_eq!(
        again.resource_version(),
        current.resource_version(),
        "a no-op update must not write"
    );
    assert_eq!(again.spec, stored.spec);
}

#[tokio::test]
async fn dangerous_specs_are_refused_with_field_path_and_rule() {
    let ns = TestNs::new("wh-deny").await;
    let (_op, _port) = operator_with_webhook(&ns, &[]).await;
    let sandbox = |name: &str, pod_spec: &str| {
        format!(
            "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {{name: {name}}}\nspec:\n  podTemplate:\n    spec:\n{pod_spec}"
        )
    };
    let cases = [
        (
            sandbox("priv", "      containers: [{name: c, image: busybox, securityContext: {privileged: true}}]\n"),
            "spec.podTemplate.spec.containers[0].securityContext.privileged",
        ),
        (
            sandbox("hostpath", "      containers: [{name: c, image: busybox}]\n      volumes: [{name: h, hostPath: {path: /etc}}]\n"),
            "spec.podTemplate.spec.volumes[0].hostPath",
        ),
        (
            sandbox("hostnet", "      hostNetwork: true\n      containers: [{name: c, image: busybox}]\n"),
            "spec.podTemplate.spec.hostNetwork",
        ),
        (
            sandbox("sysadmin", "      containers: [{name: c, image: busybox, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]\n"),
            "spec.podTemplate.spec.containers[0].securityContext.capabilities.add[0]",
        ),
        (
            sandbox("huge", "      containers: [{name: c, image: busybox, resources: {limits: {memory: 128Gi}}}]\n"),
            "spec.podTemplate.spec.containers[0].resources.limits.memory: 128Gi exceeds the maximum 64Gi",
        ),
        (
            "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxWarmPool\nmetadata: {name: big}\nspec: {replicas: 5000, sandboxTemplateRef: {name: t}}\n".to_string(),
            "spec.replicas",
        ),
        // Issue 13: Pod Security baseline checks and the sandbox rules.
        (
            sandbox("procmount", "      containers: [{name: c, image: busybox, securityContext: {procMount: Unmasked}}]\n"),
            "spec.podTemplate.spec.containers[0].securityContext.procMount: \"Unmasked\" is not allowed; only Default (Pod Security baseline: procMount)",
        ),
        (
            sandbox("sysctl", "      securityContext: {sysctls: [{name: net.core.somaxconn, value: \"1024\"}]}\n      containers: [{name: c, image: busybox}]\n"),
            "spec.podTemplate.spec.securityContext.sysctls[0].name: \"net.core.somaxconn\" is not one of the safe sysctls (Pod Security baseline: sysctls)",
        ),
        (
            sandbox("nfs", "      containers: [{name: c, image: busybox}]\n      volumes: [{name: shared, nfs: {server: 10.0.0.1, path: /}}]\n"),
            "spec.podTemplate.spec.volumes[0].nfs: volume type nfs is not in allowedVolumeTypes",
        ),
        (
            sandbox("pinned", "      nodeName: kwok-node-0\n      containers: [{name: c, image: busybox}]\n"),
            "spec.podTemplate.spec.nodeName: is not allowed",
        ),
        (
            sandbox("scratch", "      containers: [{name: c, image: busybox, resources: {limits: {ephemeral-storage: 10Ti}}}]\n"),
            "spec.podTemplate.spec.containers[0].resources.limits[ephemeral-storage]: 10Ti exceeds the maximum 20Gi",
        ),
        (
            sandbox("account", "      serviceAccountName: builder\n      containers: [{name: c, image: busybox}]\n"),
            "spec.podTemplate.spec.serviceAccountName: \"builder\" is not one of the allowed service accounts",
        ),
        (
            sandbox("tolerant", "      tolerations: [{operator: Exists}]\n      containers: [{name: c, image: busybox}]\n"),
            "spec.podTemplate.spec.tolerations[0]: toleration",
        ),
        (
            "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: forged}\nspec:\n  podTemplate:\n    metadata: {labels: {agents.x-k8s.io/sandbox: someone-else}}\n    spec:\n      containers: [{name: c, image: busybox}]\n".to_string(),
            "spec.podTemplate.metadata.labels[agents.x-k8s.io/sandbox]: \"agents.x-k8s.io/sandbox\" is a reserved key",
        ),
        (
            sandbox(&"n".repeat(64), "      containers: [{name: c, image: busybox}]\n"),
            "metadata.name: 64 characters is longer than 63",
        ),
    ];
    for (yaml, expected) in cases {
        let out = kubectl_apply(&ns, &yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "accepted but should be refused:\n{yaml}"
        );
        assert!(
            stderr.contains("denied the request"),
            "not refused by the webhook: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "refusal lacks {expected:?}: {stderr}"
        );
        println!("refused as expected: {}", stderr.trim());
    }
}

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
    let mut after = before.clone();
    while after == before && start.elapsed() < Duration::from_secs(20) {
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
    assert_ne!(
        after, before,
        "new handshakes must present the new certificate"
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

/// Sends raw bytes over TLS (verification off: we attack our own server) and
/// returns the HTTP status line, or the error.
async fn raw_request(port: u16, request: &[u8]) -> Result<String, String> {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // A server that refuses a body early (413) may close while we still
    // write: read its answer anyway.
    let _ = tls.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    Ok(text.lines().next().unwrap_or_default().to_string())
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn hostile_input_gets_clear_errors_and_the_server_keeps_serving() {
    let ns = TestNs::new("wh-fuzz").await;
    let (op, port) = operator_with_webhook(&ns, &[]).await;
    let pid = op.pid();
    let valid = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "agents.x-k8s.io", "version": "v1alpha1", "kind": "Sandbox"},
        "resource": {"group": "agents.x-k8s.io", "version": "v1alpha1", "resource": "sandboxes"},
        "operation": "CREATE", "userInfo": {}, "namespace": "x", "name": "s",
        "object": {"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox", "metadata": {"name": "s"},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}}});
    let valid_bytes = serde_json::to_vec(&valid).unwrap();

    let status = raw_request(port, &post("/validate", &valid_bytes))
        .await
        .unwrap();
    assert!(status.contains("200"), "valid review: {status}");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid JSON", post("/validate", b"{not json"), "400"),
        ("wrong apiVersion", post("/mutate", br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#), "400"),
        ("review without request", post("/validate", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#), "400"),
        ("10 MB body", post("/validate", &vec![b' '; 10 * 1024 * 1024]), "413"),
    ];
    for (what, req, expected) in cases {
        let status = raw_request(port, &req)
            .await
            .unwrap_or_else(|e| format!("connection error: {e}"));
        println!("{what}: {status}");
        assert!(
            status.contains(expected),
            "{what}: expected {expected}, got {status:?}"
        );
    }
    // Plain text on the TLS port: the handshake fails, the server lives on.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut sink)).await;

    let rss_before = rss_kib(pid);
    let mut answered = 0;
    let start = Instant::now();
    for i in 0..2000usize {
        let body: Vec<u8> = match i % 4 {
            0 => valid_bytes[..(i * 7919) % valid_bytes.len()].to_vec(),
            1 => (0..(i % 512))
                .map(|k| ((i * 31 + k * 17) % 256) as u8)
                .collect(),
            2 => {
                let mut v = valid.clone();
                v["request"]["object"]["spec"] = json!(i);
                serde_json::to_vec(&v).unwrap()
            }
            _ => {
                let mut v = valid.clone();
                v["request"]["object"]["spec"]["podTemplate"]["spec"]["containers"] =
                    json!([{"name": i, "resources": {"limits": {"memory": "12Zz"}}}]);
                serde_json::to_vec(&v).unwrap()
            }
        };
        let path = if i % 2 == 0 { "/mutate" } else { "/validate" };
        if let Ok(status) = raw_request(port, &post(path, &body)).await
            && status.starts_with("HTTP/1.1 ")
        {
            answered += 1;
        }
    }
    let rss_after = rss_kib(pid);
    println!(
        "2000 random/truncated bodies in {:?}: {answered} answered; RSS {rss_before} KiB -> {rss_after} KiB",
        start.elapsed()
    );
    assert_eq!(answered, 2000, "every request gets an HTTP answer");
    let status = raw_request(port, &post("/validate", &valid_bytes))
        .await
        .unwrap();
    assert!(status.contains("200"), "still serving: {status}");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
}

#[tokio::test]
async fn stopped_webhook_follows_the_fail_policy_with_a_clear_message() {
    let ns = TestNs::new("wh-down").await;
    let (op, _port) = operator_with_webhook(&ns, &[]).await;
    op.kill().await;
    let yaml = "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: s}\nspec:\n  podTemplate:\n    spec:\n      containers: [{name: c, image: busybox}]\n";
    let out = kubectl_apply(&ns, yaml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("with the webhook down: {}", stderr.trim());
    assert!(
        !out.status.success(),
        "failurePolicy Fail: the create must be refused"
    );
    assert!(
        stderr.contains("failed calling webhook")
            && stderr.contains("mutate.sandboxes.agents.x-k8s.io"),
        "{stderr}"
    );
    // Objects outside the webhook's scope are unaffected.
    let cm = ns.kubectl(&["create", "configmap", "still-works"]);
    assert!(cm.status.success());
}

#[tokio::test]
async fn the_admission_stamp_is_the_webhooks_never_the_users() {
    let ns = TestNs::new("wh-stamp").await;
    let (_op, _port) = operator_with_webhook(&ns, &[]).await;
    let forged = "2000-01-01T00:00:00.000000000Z";
    let claim = format!(
        "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxClaim\nmetadata:\n  name: stamped\n  annotations: {{agents.x-k8s.io/admitted-at: \"{forged}\"}}\nspec: {{sandboxTemplateRef: {{name: none}}}}\n"
    );
    let before = jiff::Timestamp::now();
    let out = kubectl_apply(&ns, &claim);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: Api<sandbox_operator::api::SandboxClaim> = ns.api();
    let stored = claims.get("stamped").await.unwrap();
    let stamp: jiff::Timestamp = stored.annotations()
        [sandbox_operator::api::ADMITTED_AT_ANNOTATION]
        .parse()
        .unwrap();
    assert!(
        stamp >= before - jiff::SignedDuration::from_secs(5),
        "stamp {stamp} was taken from the user"
    );

    // An update may not change it.
    let patch = json!({"metadata": {"annotations": {sandbox_operator::api::ADMITTED_AT_ANNOTATION: forged}}});
    let error = claims
        .patch("stamped", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains(
            "metadata.annotations[agents.x-k8s.io/admitted-at]: is set by the admission webhook"
        ),
        "{error}"
    );
}
