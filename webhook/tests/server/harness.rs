//! The test server: a CA and serving pair for 127.0.0.1, a recording
//! policy, the server on an ephemeral port and a TLS client for it.

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
use kube::core::DynamicObject;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use sandbox_webhook::{
    AdmissionHandler, Answered, CertStore, Endpoint, Error, ServerConfig,
    admission::{AdmissionRequest, AdmissionResponse, Operation},
};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// A test CA that signs serving certificates for 127.0.0.1.
pub struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl TestPki {
    pub fn new() -> Self {
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
    pub fn serving(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A policy that admits everything except objects named `forbidden`, panics
/// on objects named `panic`, dawdles on `slow` (saying when it started, so
/// a test knows the request holds its slot), and records what it observed.
#[derive(Default)]
pub struct RecordingPolicy {
    pub observed: Mutex<Vec<(String, Operation, bool, Endpoint)>>,
    pub rejections: Mutex<Vec<&'static str>>,
    pub slow_started: std::sync::atomic::AtomicBool,
    /// Lets the "slow" request's handler return (it gives up after 30 s).
    pub release_slow: std::sync::atomic::AtomicBool,
}

impl AdmissionHandler for RecordingPolicy {
    fn mutate(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        AdmissionResponse::from(request)
    }

    fn validate(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        match request.name.as_str() {
            "panic" => panic!("policy bug"),
            "slow" => {
                // Holds its slot until the test lets it go, however slowly
                // the test's next request arrives on a loaded machine.
                self.slow_started
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                let give_up = std::time::Instant::now() + Duration::from_secs(30);
                while !self.release_slow.load(std::sync::atomic::Ordering::SeqCst)
                    && std::time::Instant::now() < give_up
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                AdmissionResponse::from(request)
            }
            "forbidden" => AdmissionResponse::from(request).deny("spec.name: forbidden by test"),
            _ => AdmissionResponse::from(request),
        }
    }

    fn observe(&self, answered: Answered<'_>) {
        let record = (
            answered.kind.to_owned(),
            answered.operation.clone(),
            answered.allowed,
            answered.endpoint,
        );
        self.observed.lock().unwrap().push(record);
    }

    fn observe_rejection(&self, _endpoint: Endpoint, error: &Error) {
        self.rejections.lock().unwrap().push(error.label());
    }
}

pub struct TestServer {
    pub address: std::net::SocketAddr,
    pub pki: TestPki,
    pub certs: CertStore,
    pub policy: Arc<RecordingPolicy>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<sandbox_webhook::Result<()>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> Self {
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
    pub async fn connect(&self, alpn: &[u8]) -> TlsStream<TcpStream> {
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

    pub async fn send<B>(&self, http2: bool, request: Request<B>) -> (StatusCode, Bytes)
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

    pub async fn post(
        &self,
        http2: bool,
        path: &str,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Bytes) {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://127.0.0.1{path}"))
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap();
        self.send(http2, request).await
    }

    /// Posts a well-formed review of `demo` and checks it is answered.
    pub async fn assert_serves(&self, http2: bool, path: &str, uid: &str) {
        let (status, body) = self.post(http2, path, review(uid, "demo")).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(json_body(&body)["response"]["uid"], uid);
    }

    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within the drain timeout")
            .unwrap()
            .unwrap();
    }
}
/// An AdmissionReview of a Sandbox named `name`.
pub fn review(uid: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": crate::sandbox_review::sandbox_request(uid, name),
    }))
    .unwrap()
}

pub fn json_body(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", String::from_utf8_lossy(body)))
}

/// A body of 64 KiB chunks that does not announce its length, so the
/// request goes out chunked (HTTP/1.1) or without content-length (HTTP/2).
pub struct UnsizedBody {
    pub chunks_left: usize,
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
