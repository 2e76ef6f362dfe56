//! Hostile input straight at the webhook's HTTPS port (malformed, oversized,
//! slow and wrong requests): each gets a clear error and the server keeps
//! serving with bounded memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::TestNs;

use super::operator_with_webhook;

/// The CA the operator put in the caBundle of its webhook registration: what
/// the API server trusts, so what this client trusts.
async fn registered_ca(ns: &TestNs) -> rustls::RootCertStore {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let configs: kube::Api<ValidatingWebhookConfiguration> = kube::Api::all(ns.client.clone());
    let name = crate::common::webhook_config_name(&ns.name);
    let config = configs
        .get(&name)
        .await
        .expect("the operator registered its webhooks");
    let bundle = config.webhooks.unwrap_or_default()[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("caBundle injected");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bundle.0) {
        roots.add(cert.expect("caBundle is PEM")).unwrap();
    }
    roots
}

/// Sends raw bytes over TLS to the webhook on 127.0.0.1, verified against
/// `roots`, and returns the HTTP status line, or the error.
async fn raw_request(
    roots: &rustls::RootCertStore,
    port: u16,
    request: &[u8],
) -> Result<String, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots.clone())
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
    let roots = registered_ca(&ns).await;
    let pid = op.pid();
    let valid = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "agents.x-k8s.io", "version": "v1alpha1", "kind": "Sandbox"},
        "resource": {"group": "agents.x-k8s.io", "version": "v1alpha1", "resource": "sandboxes"},
        "operation": "CREATE", "userInfo": {}, "namespace": "x", "name": "s",
        "object": {"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox", "metadata": {"name": "s"},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}}});
    let valid_bytes = serde_json::to_vec(&valid).unwrap();

    let status = raw_request(&roots, port, &post("/validate", &valid_bytes))
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
        let status = raw_request(&roots, port, &req)
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
        if let Ok(status) = raw_request(&roots, port, &post(path, &body)).await
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
    let status = raw_request(&roots, port, &post("/validate", &valid_bytes))
        .await
        .unwrap();
    assert!(status.contains("200"), "still serving: {status}");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
}
