//! The server as the API server sees it: real TLS connections to 127.0.0.1,
//! HTTP/1.1 and HTTP/2, well-formed and malformed reviews, and a key pair
//! rotated under a running server.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use sandbox_webhook::{
    AdmissionHandler, CertStore, Endpoint, Error, ServerConfig,
    admission::{AdmissionRequest, AdmissionResponse, Operation},
};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_rustls::{TlsConnector, client::TlsStream};

use kube::core::DynamicObject;

/// A test CA that signs serving certificates for 127.0.0.1.
struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl TestPki {
    fn new() -> Self {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "webhook test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { ca }
    }

    /// A fresh serving key pair in PEM.
    fn serving(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A policy that admits everything except objects named `forbidden`, panics
/// on objects named `panic`, dawdles on `slow`, and records what it observed.
#[derive(Default)]
struct RecordingPolicy {
    observed: Mutex<Vec<(String, Operation, bool, Endpoint)>>,
    rejections: Mutex<Vec<&'static str>>,
}

impl AdmissionHandler for RecordingPolicy {
    fn mutate(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        AdmissionResponse::from(request)
    }

    fn validate(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        match request.name.as_str() {
            "panic" => panic!("policy bug"),
            "slow" => {
                std::thread::sleep(Duration::from_millis(600));
                AdmissionResponse::from(request)
            }
            "forbidden" => AdmissionResponse::from(request).deny("spec.name: forbidden by test"),
            _ => AdmissionResponse::from(request),
        }
    }

    fn observe(
        &self,
        kind: &str,
        operation: &Operation,
        allowed: bool,
        endpoint: Endpoint,
        _elapsed: Duration,
    ) {
        let record = (kind.to_owned(), operation.clone(), allowed, endpoint);
        self.observed.lock().unwrap().push(record);
    }

    fn observe_rejection(&self, _endpoint: Endpoint, error: &Error) {
        self.rejections.lock().unwrap().push(error.label());
    }
}

struct TestServer {
    address: std::net::SocketAddr,
    pki: TestPki,
    certs: CertStore,
    policy: Arc<RecordingPolicy>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<sandbox_webhook::Result<()>>,
}

impl TestServer {
    async fn start(config: ServerConfig) -> Self {
        let pki = TestPki::new();
        let (cert, key) = pki.serving();
        let certs = CertStore::from_pem(&cert, &key).unwrap();
        let policy = Arc::new(RecordingPolicy::default());
        let listener = sandbox_webhook::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sandbox_webhook::serve(
            listener,
            config,
            policy.clone(),
            certs.clone(),
            async {
                stopped.await.ok();
            },
        ));
        Self {
            address,
            pki,
            certs,
            policy,
            stop: Some(stop),
            task,
        }
    }

    /// A TLS connection that trusts only the test CA and offers `alpn`.
    async fn connect(&self, alpn: &[u8]) -> TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.pki.ca.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(self.address).await.unwrap();
        let server_name = ServerName::try_from("127.0.0.1").unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .unwrap()
    }

    async fn send<B>(&self, http2: bool, request: Request<B>) -> (StatusCode, Bytes)
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = TokioIo::new(self.connect(if http2 { b"h2" } else { b"http/1.1" }).await);
        let response = if http2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), stream)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(stream).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        };
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    async fn post(&self, http2: bool, path: &str, body: impl Into<Bytes>) -> (StatusCode, Bytes) {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://127.0.0.1{path}"))
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap();
        self.send(http2, request).await
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within the drain timeout")
            .unwrap()
            .unwrap();
    }
}

fn review(uid: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "agents.x-k8s.io", "version": "v1alpha1", "kind": "Sandbox"},
            "resource": {"group": "agents.x-k8s.io", "version": "v1alpha1", "resource": "sandboxes"},
            "name": name,
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {
                "apiVersion": "agents.x-k8s.io/v1alpha1",
                "kind": "Sandbox",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"podTemplate": {"spec": {"containers": []}}}
            }
        }
    }))
    .unwrap()
}

fn json_body(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn answers_a_valid_review_over_both_protocols() {
    let server = TestServer::start(ServerConfig::default()).await;
    for http2 in [false, true] {
        for (path, name, allowed) in [
            ("/mutate", "demo", true),
            ("/validate", "demo", true),
            ("/validate", "forbidden", false),
        ] {
            let uid = format!("uid-{path}-{name}-{http2}");
            let (status, body) = server.post(http2, path, review(&uid, name)).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            let answer = json_body(&body);
            assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(answer["kind"], "AdmissionReview");
            assert_eq!(answer["response"]["uid"], uid.as_str());
            assert_eq!(answer["response"]["allowed"], allowed);
            if !allowed {
                assert_eq!(
                    answer["response"]["status"]["message"],
                    "spec.name: forbidden by test"
                );
            }
        }
    }
    let observed = server.policy.observed.lock().unwrap().clone();
    assert_eq!(observed.len(), 6);
    assert!(observed.contains(&(
        "Sandbox".into(),
        Operation::Create,
        false,
        Endpoint::Validate
    )));
    server.stop().await;
}

#[tokio::test]
async fn malformed_reviews_get_400_naming_the_problem() {
    let server = TestServer::start(ServerConfig::default()).await;
    let without_request = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
    let old_version =
        br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#;
    let cases: [(&[u8], &str); 4] = [
        (b"{\"apiVersion\": ", "not valid JSON"),
        (b"hello", "not valid JSON"),
        (without_request, "has no request"),
        (old_version, "admission.k8s.io/v1beta1"),
    ];
    for http2 in [false, true] {
        for (body, expected) in cases {
            let (status, answer) = server.post(http2, "/validate", body.to_vec()).await;
            let message = String::from_utf8_lossy(&answer);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
            assert!(
                message.contains(expected),
                "{message:?} should mention {expected:?}"
            );
        }
    }
    assert_eq!(
        server.policy.rejections.lock().unwrap().as_slice(),
        [
            "invalid_json",
            "invalid_json",
            "missing_request",
            "unsupported_review"
        ]
        .repeat(2)
    );
    assert!(server.policy.observed.lock().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let server = TestServer::start(ServerConfig::default()).await;
    let ten_megabytes = vec![b' '; 10 * 1024 * 1024];
    for http2 in [false, true] {
        let (status, body) = server.post(http2, "/mutate", ten_megabytes.clone()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(String::from_utf8_lossy(&body).contains("exceeds the limit of 3145728 bytes"));
    }
    // Without a declared length the limit applies while reading.
    for http2 in [false, true] {
        let request = Request::post("https://127.0.0.1/mutate")
            .body(UnsizedBody { chunks_left: 80 })
            .unwrap();
        let (status, _) = server.send(http2, request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
    // The server still answers normally afterwards.
    let (status, _) = server.post(false, "/mutate", review("after", "demo")).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn plain_text_on_the_tls_port_does_not_stop_the_server() {
    let server = TestServer::start(ServerConfig::default()).await;
    for garbage in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0u8; 4096],
        b"\x16\x03\x01\xff\xff",
    ] {
        let mut tcp = TcpStream::connect(server.address).await.unwrap();
        tcp.write_all(garbage).await.unwrap();
        tcp.shutdown().await.ok();
    }
    // A client that connects and says nothing holds no one else up.
    let _silent = TcpStream::connect(server.address).await.unwrap();

    let (status, body) = server
        .post(true, "/validate", review("still-here", "demo"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_body(&body)["response"]["uid"], "still-here");
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_gets_500_and_the_server_keeps_serving() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (status, body) = server
        .post(false, "/validate", review("boom", "panic"))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(String::from_utf8_lossy(&body).contains("handler failed"));
    let (status, _) = server
        .post(false, "/validate", review("calm", "demo"))
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn routes_health_and_refuses_unknown_paths() {
    let server = TestServer::start(ServerConfig::default()).await;
    let get = |path: &str| {
        Request::get(format!("https://127.0.0.1{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let (status, body) = server.send(false, get("/healthz")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
    assert_eq!(
        server.send(true, get("/mutate")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        server.send(false, get("/metrics")).await.0,
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

#[tokio::test]
async fn new_handshakes_see_a_rotated_certificate() {
    let server = TestServer::start(ServerConfig::default()).await;
    let serial_seen = |stream: &TlsStream<TcpStream>| -> Vec<u8> {
        let chain: &[CertificateDer<'_>] = stream.get_ref().1.peer_certificates().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        cert.raw_serial().to_vec()
    };
    let serial_of = |pem: &str| -> Vec<u8> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        block.parse_x509().unwrap().raw_serial().to_vec()
    };

    let before = server.connect(b"h2").await;
    let old_serial = serial_seen(&before);

    let (cert, key) = server.pki.serving();
    server.certs.update(&cert, &key).unwrap();

    let after = server.connect(b"h2").await;
    assert_eq!(serial_seen(&after), serial_of(&cert));
    assert_ne!(serial_seen(&after), old_serial);
    drop((before, after));

    let (status, _) = server
        .post(true, "/mutate", review("rotated", "demo"))
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_open_connections_finish() {
    let server = TestServer::start(ServerConfig {
        drain_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    })
    .await;
    // An idle keep-alive connection must not hold shutdown for the full drain timeout.
    let idle = TokioIo::new(server.connect(b"http/1.1").await);
    let (_sender, connection) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(idle)
        .await
        .unwrap();
    let idle_connection = tokio::spawn(connection);

    let address = server.address;
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        TcpStream::connect(address).await.is_err(),
        "listener is closed"
    );
    tokio::time::timeout(Duration::from_secs(5), idle_connection)
        .await
        .expect("idle client connection is closed by the server")
        .unwrap()
        .ok();
}

#[tokio::test]
async fn a_client_that_stalls_mid_body_gets_408() {
    let server = TestServer::start(ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    // Announces 100 bytes and sends one.
    let mut stalled = server.connect(b"http/1.1").await;
    stalled
        .write_all(b"POST /validate HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stalled, &mut answer)
        .await
        .ok();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not completed within 300ms"), "{answer}");
    assert_eq!(
        server.policy.rejections.lock().unwrap().as_slice(),
        ["timeout"]
    );
    server.stop().await;
}

// Several worker threads: the slow handler blocks the one it runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn requests_beyond_the_in_flight_limit_are_refused_with_503() {
    let server = Arc::new(
        TestServer::start(ServerConfig {
            request_timeout: Duration::from_millis(300),
            max_requests_in_flight: 1,
            ..ServerConfig::default()
        })
        .await,
    );
    let slow = tokio::spawn({
        let server = server.clone();
        async move {
            server
                .post(false, "/validate", review("slow", "slow"))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = server
        .post(true, "/validate", review("waits", "demo"))
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(String::from_utf8_lossy(&body).contains("too many admission requests"));
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);

    let (status, _) = server
        .post(true, "/validate", review("later", "demo"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.policy.rejections.lock().unwrap().as_slice(),
        ["overloaded"]
    );
}

/// A body of 64 KiB chunks that does not announce its length, so the
/// request goes out chunked (HTTP/1.1) or without content-length (HTTP/2).
struct UnsizedBody {
    chunks_left: usize,
}

impl Body for UnsizedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.chunks_left == 0 {
            return Poll::Ready(None);
        }
        self.chunks_left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b' '; 64 * 1024])))))
    }
}
