//! Limits: body size, garbage on the TLS port, stalled clients and the
//! in-flight bound (which a client trickling its body does not hold); the
//! server keeps serving after each.

use std::{sync::Arc, time::Duration};

use http::{Request, StatusCode};
use sandbox_webhook::ServerConfig;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::{TestServer, UnsizedBody, review};

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
    server.assert_serves(false, "/mutate", "after").await;
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

    server.assert_serves(true, "/validate", "still-here").await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stalls_mid_body_gets_408() {
    let server = TestServer::start(impatient()).await;
    // Announces 100 bytes and sends one.
    let mut stalled = server.connect(b"http/1.1").await;
    stalled
        .write_all(b"POST /validate HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = String::new();
    stalled.read_to_string(&mut answer).await.ok();
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
            max_requests_in_flight: 1,
            ..impatient()
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
    // The slow request holds the one slot from the moment its handler runs
    // until it is released below (a fixed pause, then a fixed 1.5 s hold,
    // were both too short on a loaded machine).
    wait_for_the_slow_handler(&server).await;
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
    server
        .policy
        .release_slow
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);

    server.assert_serves(true, "/validate", "later").await;
    assert_eq!(
        server.policy.rejections.lock().unwrap().as_slice(),
        ["overloaded"]
    );
}

/// A caller that gives up (the API server's own timeout) while its review
/// is being worked on: the work goes on, on the blocking pool, holding its
/// in-flight permit until it ends (a second request meanwhile gets 503),
/// and its answer is still observed (counted in the metrics). Before, the
/// permit went with the dropped request and the answer was never counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_review_whose_caller_gave_up_holds_its_permit_and_is_observed() {
    let server = Arc::new(
        TestServer::start(ServerConfig {
            max_requests_in_flight: 1,
            ..impatient()
        })
        .await,
    );
    let slow = tokio::spawn({
        let server = server.clone();
        async move { server.post(true, "/validate", review("slow", "slow")).await }
    });
    wait_for_the_slow_handler(&server).await;
    // The caller gives up: its connection goes.
    slow.abort();
    let _ = slow.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = server
        .post(true, "/validate", review("waits", "demo"))
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the abandoned review still holds the one permit"
    );
    let observed_before = server.policy.observed.lock().unwrap().len();
    server
        .policy
        .release_slow
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.policy.observed.lock().unwrap().len() == observed_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned review's answer was never observed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.assert_serves(true, "/validate", "later").await;
}

#[tokio::test]
async fn a_client_trickling_its_body_holds_no_in_flight_permit() {
    let server = TestServer::start(ServerConfig {
        max_requests_in_flight: 1,
        ..ServerConfig::default()
    })
    .await;
    let body = review("trickled", "demo");
    let mut trickling = server.connect(b"http/1.1").await;
    trickling
        .write_all(
            format!(
                "POST /validate HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\
                 expect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // hyper sends 100 Continue when the server starts reading the body, so
    // the request is past any permit taken before that.
    let mut head = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(trickling.read_u8().await.unwrap());
        }
    })
    .await
    .expect("the server asks for the body");
    assert!(
        head.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    trickling.write_all(&body[..1]).await.unwrap();

    // Answered while the first request is still arriving (it would otherwise
    // wait for the first one to time out, which the policy records).
    server.assert_serves(true, "/validate", "meanwhile").await;
    assert!(server.policy.rejections.lock().unwrap().is_empty());

    trickling.write_all(&body[1..]).await.unwrap();
    let mut answer = String::new();
    trickling.read_to_string(&mut answer).await.ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""uid":"trickled""#), "{answer}");
    server.stop().await;
}

/// A server that gives a request 300 ms.
pub(crate) fn impatient() -> ServerConfig {
    ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    }
}

/// Waits (20 s at most) until the "slow" request is in its handler, holding
/// its slot (a fixed pause was too short on a loaded machine).
async fn wait_for_the_slow_handler(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !server
        .policy
        .slow_started
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow request never reached its handler"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
