//! Connections that carry no request: silent after the handshake, stuck in
//! the first request's headers, or idle between requests. The server closes
//! them after its deadlines, so they cannot keep every connection permit.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::{
    body::{Body, Frame},
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sandbox_webhook::ServerConfig;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
    time::{Instant, Sleep},
};
use tokio_rustls::client::TlsStream;

use crate::harness::{TestServer, review};

const DEADLINE: Duration = Duration::from_millis(300);

/// Longest wait for something the server should do after [`DEADLINE`]; under
/// the default request timeout (10 s), so a server that only had that bound
/// fails the tests.
pub(crate) const BOUND: Duration = Duration::from_secs(5);

/// A server whose connections must be used within [`DEADLINE`].
fn strict() -> ServerConfig {
    ServerConfig {
        first_request_timeout: DEADLINE,
        idle_timeout: DEADLINE,
        ..ServerConfig::default()
    }
}

/// Reads and discards what the server sends until it closes `stream`, and
/// says how long after `since` that was; fails after [`BOUND`].
async fn closed_after(stream: &mut TlsStream<TcpStream>, since: Instant) -> Duration {
    let mut buffer = [0; 4096];
    tokio::time::timeout(BOUND, async {
        while let Ok(1..) = stream.read(&mut buffer).await {}
    })
    .await
    .expect("the server closes the connection");
    since.elapsed()
}

#[tokio::test]
async fn connections_without_a_complete_request_are_closed_after_the_deadline() {
    let server = TestServer::start(strict()).await;
    // The HTTP/2 preface and an empty SETTINGS frame, but no request.
    let http2_preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    for (alpn, sent) in [
        (&b"http/1.1"[..], &b""[..]),
        (b"h2", b""),
        (
            b"http/1.1",
            b"POST /validate HTTP/1.1\r\nhost: x\r\ncontent-",
        ),
        (b"h2", http2_preface),
    ] {
        let mut client = server.connect(alpn).await;
        let connected = Instant::now();
        client.write_all(sent).await.unwrap();
        let open_for = closed_after(&mut client, connected).await;
        assert!(open_for >= DEADLINE, "closed too early, after {open_for:?}");
    }
    server.assert_serves(false, "/validate", "after").await;
    server.stop().await;
}

#[tokio::test]
async fn silent_clients_holding_every_connection_give_way_to_a_new_one() {
    let server = TestServer::start(ServerConfig {
        max_connections: 2,
        ..strict()
    })
    .await;
    let mut silent = [
        server.connect(b"h2").await,
        server.connect(b"http/1.1").await,
    ];
    let connected = Instant::now();

    // Before the deadline this client waits in the accept backlog.
    tokio::time::timeout(BOUND, server.assert_serves(true, "/validate", "fresh"))
        .await
        .expect("a new client is served once the silent ones are closed");
    for client in &mut silent {
        closed_after(client, connected).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = TestServer::start(strict()).await;
    for http2 in [false, true] {
        let (mut client, connection) = Client::open(&server, http2).await;
        let status = client.validate("idle", Duration::ZERO).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let answered = Instant::now();
        tokio::time::timeout(BOUND, connection)
            .await
            .expect("the server closes the idle connection")
            .unwrap()
            .ok();
        let idle_for = answered.elapsed();
        assert!(idle_for >= DEADLINE, "closed too early, after {idle_for:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_deadline_does_not_run_while_a_request_is_open() {
    let server = TestServer::start(ServerConfig {
        first_request_timeout: DEADLINE,
        idle_timeout: BOUND,
        ..ServerConfig::default()
    })
    .await;
    for http2 in [false, true] {
        let (mut client, _connection) = Client::open(&server, http2).await;
        // The headers go out at once, the body after the deadline.
        let late = client.validate("late", 2 * DEADLINE).await;
        assert_eq!(late.unwrap(), StatusCode::OK, "http2: {http2}");
        let next = client.validate("next", Duration::ZERO).await;
        assert_eq!(next.unwrap(), StatusCode::OK, "http2: {http2}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_outlives_the_request_timeout() {
    let server = TestServer::start(ServerConfig {
        request_timeout: DEADLINE,
        idle_timeout: BOUND,
        ..ServerConfig::default()
    })
    .await;
    for http2 in [false, true] {
        let (mut client, _connection) = Client::open(&server, http2).await;
        let first = client.validate("first", Duration::ZERO).await;
        assert_eq!(first.unwrap(), StatusCode::OK, "http2: {http2}");
        tokio::time::sleep(2 * DEADLINE).await;
        let second = client.validate("second", Duration::ZERO).await;
        assert_eq!(second.unwrap(), StatusCode::OK, "http2: {http2}");
    }
    server.stop().await;
}

/// A client connection, HTTP/1.1 or HTTP/2; while it is held the client
/// keeps its side open, so only the server can close the connection.
enum Client {
    Http1(http1::SendRequest<LateBody>),
    Http2(http2::SendRequest<LateBody>),
}

impl Client {
    /// Connects, and returns the client with the task driving the connection,
    /// which ends when the connection is closed.
    async fn open(server: &TestServer, http2: bool) -> (Self, JoinHandle<hyper::Result<()>>) {
        let io = TokioIo::new(
            server
                .connect(if http2 { b"h2" } else { b"http/1.1" })
                .await,
        );
        if http2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
            (Self::Http2(sender), tokio::spawn(connection))
        } else {
            let (sender, connection) = http1::handshake(io).await.unwrap();
            (Self::Http1(sender), tokio::spawn(connection))
        }
    }

    /// Posts a review to /validate, its body `body_after` the headers, and
    /// reads the whole answer.
    async fn validate(&mut self, uid: &str, body_after: Duration) -> hyper::Result<StatusCode> {
        let body = LateBody {
            pause: Box::pin(tokio::time::sleep(body_after)),
            data: Some(Bytes::from(review(uid, "demo"))),
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri("https://127.0.0.1/validate")
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let response = match self {
            Self::Http1(sender) => sender.send_request(request).await?,
            Self::Http2(sender) => sender.send_request(request).await?,
        };
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// A body in one piece that is ready only after a pause.
struct LateBody {
    pause: Pin<Box<Sleep>>,
    data: Option<Bytes>,
}

impl Body for LateBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        ready!(self.pause.as_mut().poll(context));
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }
}
