//! The budget of buffered request bodies: a body reserves its bytes as they
//! arrive, not the length it announces, and holds them until its request is
//! answered. A body whose next bytes do not fit waits for them and, after the
//! request timeout, gets 503; meanwhile an HTTP/2 client sends only one
//! flow-control window ahead, and other requests go on.
//!
//! Every server here has a budget of one body of the largest size. Where a
//! test shows that a request waits, it checks that nothing happens within
//! [`WAIT`]: a server without the budget answers at once, one with it never
//! answers before the test lets the budget go, however loaded the machine.
//! [`waits`] has the requests that wait for room beside other bodies.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::{Body, Frame};
use sandbox_webhook::ServerConfig;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
    time::Instant,
};
use tokio_rustls::client::TlsStream;

use crate::{
    harness::{RecordingPolicy, TestServer, review},
    idle::BOUND,
    limits::impatient,
};

mod waits;

/// The largest body, and the whole budget.
const BODY: usize = 64 * 1024;

/// How long a test watches a waiting request for signs that it goes on.
const WAIT: Duration = Duration::from_millis(500);

/// Room for one body of the largest size.
fn budget_of_one_body(config: ServerConfig) -> ServerConfig {
    ServerConfig {
        max_body_bytes: BODY,
        max_buffered_body_bytes: BODY,
        ..config
    }
}

#[tokio::test]
async fn a_trickled_body_holds_only_the_bytes_it_has_sent() {
    let server = TestServer::start(budget_of_one_body(ServerConfig::default())).await;
    let first = padded_review("trickled", "demo", BODY);
    let mut trickling = post_expecting_continue(&server, BODY).await;
    // hyper asks for the body when the server starts reading it: at once,
    // as announcing a length reserves nothing.
    let head = tokio::time::timeout(BOUND, read_head(&mut trickling))
        .await
        .expect("the server asks for the first body");
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    trickling.write_all(&first[..1]).await.unwrap();

    // All but the byte sent is free: a body of that size is answered at once.
    for http2 in [false, true] {
        let uid = format!("beside-{http2}");
        let beside = padded_review(&uid, "demo", BODY - 1);
        let (status, body) = tokio::time::timeout(BOUND, server.post(http2, "/validate", beside))
            .await
            .expect("a body that fits beside the sent byte is answered");
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }

    trickling.write_all(&first[1..]).await.unwrap();
    let answer = read_to_end(&mut trickling).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""uid":"trickled""#), "{answer}");
    assert!(server.policy.rejections.lock().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn bodies_announced_but_not_sent_do_not_hold_up_other_requests() {
    let server = TestServer::start(budget_of_one_body(ServerConfig {
        request_timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    }))
    .await;
    // Eight clients announce 60 KiB each, 7.5 budgets together. All wait to
    // be asked for their body; every other one sends two bytes anyway.
    let mut announcers = Vec::new();
    for index in 0..8 {
        let mut stream = post_expecting_continue(&server, 60 * 1024).await;
        if index % 2 == 1 {
            stream.write_all(b"{ ").await.unwrap();
        }
        announcers.push(stream);
    }

    // A server that reserved announced lengths would keep a small review
    // waiting until the request timeout, then answer 503.
    for http2 in [false, true] {
        let started = Instant::now();
        let uid = format!("small-{http2}");
        let served = server.assert_serves(http2, "/validate", &uid);
        let answered = tokio::time::timeout(Duration::from_millis(1500), served).await;
        assert!(
            answered.is_ok(),
            "a small review (HTTP/2: {http2}) waits behind bodies only announced, \
             unanswered after {:?}",
            started.elapsed()
        );
    }
    // The server is reading every announced body.
    for announcer in &mut announcers {
        let head = tokio::time::timeout(BOUND, read_head(announcer))
            .await
            .expect("the server asks for every announced body");
        assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    }
    let rejections = server.policy.rejections.lock().unwrap().clone();
    assert!(
        !rejections.contains(&"body_budget_exhausted"),
        "{rejections:?}"
    );
    drop(announcers);
    server.stop().await;
}

// Several worker threads: the slow handler blocks the one it runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_request_that_cannot_reserve_its_body_in_time_gets_503() {
    let server = Arc::new(TestServer::start(budget_of_one_body(impatient())).await);
    // A body that has been read keeps its bytes until its request is answered.
    let holder = hold_budget(
        &server,
        Unannounced::new(padded_review("slow", "slow", BODY)),
    )
    .await;

    for http2 in [false, true] {
        let (status, body) = server
            .post(http2, "/validate", padded_review("refused", "demo", BODY))
            .await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        assert!(
            text.contains("already buffering 65536 bytes of request bodies"),
            "{text}"
        );
    }

    assert_eq!(holder.answer().await, StatusCode::OK);
    let (status, body) = server
        .post(true, "/validate", padded_review("later", "demo", BODY))
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        server.policy.rejections.lock().unwrap().as_slice(),
        ["body_budget_exhausted"; 2]
    );
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn small_requests_are_served_while_the_budget_is_partly_used() {
    let server = Arc::new(TestServer::start(budget_of_one_body(impatient())).await);
    // The body holds the half of the budget it sent.
    let half = BODY / 2;
    let holder = hold_budget(
        &server,
        Unannounced::new(padded_review("slow", "slow", half)),
    )
    .await;

    for http2 in [false, true] {
        server
            .assert_serves(http2, "/validate", &format!("small-{http2}"))
            .await;
    }
    // The other half is in use: a larger body has to wait, here in vain.
    let larger = padded_review("larger", "demo", half + 1);
    let (status, body) = server.post(true, "/validate", larger.clone()).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );

    assert_eq!(holder.answer().await, StatusCode::OK);
    let (status, body) = server.post(true, "/validate", larger).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        server.policy.rejections.lock().unwrap().as_slice(),
        ["body_budget_exhausted"]
    );
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn an_http2_client_waiting_for_the_budget_sends_one_window_ahead_at_most() {
    let server = Arc::new(TestServer::start(budget_of_one_body(ServerConfig::default())).await);
    let holder = hold_budget(
        &server,
        Unannounced::new(padded_review("slow", "slow", BODY)),
    )
    .await;

    let body = Unannounced::new(vec![b' '; 2 * 1024 * 1024]);
    let chunks_taken = body.chunks_taken.clone();
    let request = Request::post("https://127.0.0.1/validate")
        .body(body)
        .unwrap();
    let mut waiting = tokio::spawn({
        let server = server.clone();
        async move { server.send(true, request).await.0 }
    });
    // The client sends what the window allows (65,535 bytes, four chunks)...
    let deadline = Instant::now() + BOUND;
    while chunks_taken.load(Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "the client sends nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...and, while the request waits for the budget with the first frame it
    // read, the chunk that frame made room for and one more it holds until
    // the window opens; hyper's default window would take 64.
    let early = tokio::time::timeout(WAIT, &mut waiting).await;
    assert!(
        early.is_err(),
        "answered while the budget is held: {early:?}"
    );
    let taken = chunks_taken.load(Ordering::SeqCst);
    assert!(taken <= 6, "the client sent {taken} chunks of 16 KiB ahead");

    assert_eq!(holder.answer().await, StatusCode::OK);
    assert_eq!(waiting.await.unwrap(), StatusCode::PAYLOAD_TOO_LARGE);
    stop(server).await;
}

/// A review of a Sandbox named `name`, padded with spaces to `size` bytes.
fn padded_review(uid: &str, name: &str, size: usize) -> Vec<u8> {
    let mut body = review(uid, name);
    assert!(body.len() <= size, "a review takes {} bytes", body.len());
    body.resize(size, b' ');
    body
}

/// A "slow" request whose handler runs: its body keeps its share of the
/// budget until [`Holder::answer`], or until the holder is dropped (so a
/// failing test does not wait for the handler to give up).
struct Holder {
    policy: Arc<RecordingPolicy>,
    answer: JoinHandle<StatusCode>,
}

impl Holder {
    /// Lets the handler answer, and returns the answer's status.
    async fn answer(mut self) -> StatusCode {
        self.policy.release_slow.store(true, Ordering::SeqCst);
        (&mut self.answer).await.unwrap()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.policy.release_slow.store(true, Ordering::SeqCst);
    }
}

/// Sends the "slow" review in `body` to /validate and returns once its
/// handler runs.
async fn hold_budget(server: &Arc<TestServer>, body: Unannounced) -> Holder {
    let request = Request::builder()
        .method(Method::POST)
        .uri("https://127.0.0.1/validate")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let holder = tokio::spawn({
        let server = server.clone();
        async move { server.send(false, request).await.0 }
    });
    let deadline = Instant::now() + BOUND;
    while !server.policy.slow_started.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached its handler"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Holder {
        policy: server.policy.clone(),
        answer: holder,
    }
}

/// Stops the server once every task sharing it has ended.
async fn stop(server: Arc<TestServer>) {
    Arc::into_inner(server)
        .expect("no other task holds the server")
        .stop()
        .await;
}

/// Sends the headers of an HTTP/1.1 POST to /validate with a body of `length`
/// bytes, asking to be told when to send it (`expect: 100-continue`).
async fn post_expecting_continue(server: &TestServer, length: usize) -> TlsStream<TcpStream> {
    let mut stream = server.connect(b"http/1.1").await;
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\
         expect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads a response head, up to and including its empty line.
async fn read_head(stream: &mut TlsStream<TcpStream>) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads until the server closes the connection; fails after [`BOUND`].
async fn read_to_end(stream: &mut TlsStream<TcpStream>) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A body that does not announce its length (chunked over HTTP/1.1, no
/// content-length over HTTP/2), handed to the client in chunks of 16 KiB
/// that it counts.
struct Unannounced {
    data: Bytes,
    chunks_taken: Arc<AtomicUsize>,
}

impl Unannounced {
    fn new(data: Vec<u8>) -> Self {
        Self {
            data: data.into(),
            chunks_taken: Arc::default(),
        }
    }
}

impl Body for Unannounced {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let size = self.data.len().min(16 * 1024);
        let chunk = self.data.split_to(size);
        self.chunks_taken.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}
