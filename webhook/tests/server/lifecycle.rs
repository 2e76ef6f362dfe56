//! Lifecycle: a key pair rotated under a running server, and shutdown with
//! open connections.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use sandbox_webhook::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::harness::TestServer;

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

    server.assert_serves(true, "/mutate", "rotated").await;
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
