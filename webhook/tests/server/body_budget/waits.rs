//! Bodies that do not fit beside others: one waits for the bytes another
//! request holds, bodies sent together beyond the budget each hold a part
//! until one of them gives up at its deadline, and only as many requests as
//! the server has connections may wait at once.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sandbox_webhook::ServerConfig;
use tokio::{io::AsyncWriteExt, task::JoinSet};

use super::{
    BODY, Unannounced, WAIT, budget_of_one_body, hold_budget, padded_review,
    post_expecting_continue, read_to_end, stop,
};
use crate::{harness::TestServer, idle::BOUND};

/// Larger than half the budget: two such bodies do not fit at once.
const OVER_HALF: usize = BODY / 2 + 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_body_that_does_not_fit_beside_one_being_answered_waits_for_its_bytes() {
    let server = Arc::new(TestServer::start(budget_of_one_body(ServerConfig::default())).await);
    let holder = hold_budget(
        &server,
        Unannounced::new(padded_review("slow", "slow", OVER_HALF)),
    )
    .await;

    let mut waiting = tokio::spawn({
        let server = server.clone();
        let body = padded_review("waiting", "demo", OVER_HALF);
        async move { server.post(true, "/validate", body).await }
    });
    let early = tokio::time::timeout(WAIT, &mut waiting).await;
    assert!(
        early.is_err(),
        "answered while its body does not fit beside the first: {early:?}"
    );

    assert_eq!(holder.answer().await, StatusCode::OK);
    let (status, body) = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("the body is read once the first request gives its bytes back")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(server.policy.rejections.lock().unwrap().is_empty());
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn bodies_sent_together_beyond_the_budget_are_answered_or_refused_at_the_deadline() {
    let server = Arc::new(
        TestServer::start(budget_of_one_body(ServerConfig {
            request_timeout: Duration::from_secs(3),
            ..ServerConfig::default()
        }))
        .await,
    );
    let first = padded_review("first", "demo", OVER_HALF);
    let mut sending = post_expecting_continue(&server, OVER_HALF).await;
    sending.write_all(&first[..BODY / 2]).await.unwrap();
    tokio::time::sleep(WAIT).await;
    // The second body fits only in part beside the first's half budget...
    let second = tokio::spawn({
        let server = server.clone();
        let body = padded_review("second", "demo", OVER_HALF);
        async move { server.post(false, "/validate", body).await }
    });
    tokio::time::sleep(WAIT).await;
    // ...and the rest of the first may not fit either: then each holds a part
    // and waits, until the first reaches its deadline (half a second before
    // the second does) and gets 503. Either way the second body is read.
    sending.write_all(&first[BODY / 2..]).await.unwrap();

    let answer = read_to_end(&mut sending).await;
    let answer = answer.trim_start_matches("HTTP/1.1 100 Continue\r\n\r\n");
    let (status, body) = tokio::time::timeout(BOUND, second)
        .await
        .expect("the second request is answered")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let rejections = server.policy.rejections.lock().unwrap().clone();
    if answer.starts_with("HTTP/1.1 200") {
        assert!(answer.contains(r#""uid":"first""#), "{answer}");
        assert!(rejections.is_empty(), "{rejections:?}");
    } else {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("already buffering 65536 bytes"), "{answer}");
        assert_eq!(rejections, ["body_budget_exhausted"]);
    }
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn requests_beyond_those_that_may_wait_for_room_get_503_at_once() {
    // As many requests as connections may wait for room, each holding the
    // frame it could not reserve; here, two.
    let server = Arc::new(
        TestServer::start(budget_of_one_body(ServerConfig {
            max_connections: 2,
            ..ServerConfig::default()
        }))
        .await,
    );
    let holder = hold_budget(
        &server,
        Unannounced::new(padded_review("slow", "slow", BODY)),
    )
    .await;

    // Three requests on one HTTP/2 connection: two wait, one is refused.
    let stream = TokioIo::new(server.connect(b"h2").await);
    let (sender, connection) = http2::handshake(TokioExecutor::new(), stream)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut requests = JoinSet::new();
    for index in 0..3 {
        let mut sender = sender.clone();
        let body = padded_review(&format!("waiting-{index}"), "demo", 4096);
        let request = Request::post("https://127.0.0.1/validate")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        requests.spawn(async move {
            let response = sender.send_request(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        });
    }
    let (status, text) = tokio::time::timeout(BOUND, requests.join_next())
        .await
        .expect("the third request is refused at once")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("already buffering 65536 bytes"), "{text}");
    let early = tokio::time::timeout(WAIT, requests.join_next()).await;
    assert!(
        early.is_err(),
        "answered while the budget is held: {early:?}"
    );

    assert_eq!(holder.answer().await, StatusCode::OK);
    while let Some(answer) = tokio::time::timeout(BOUND, requests.join_next())
        .await
        .expect("the waiting requests are answered once the budget is free")
    {
        let (status, text) = answer.unwrap();
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    assert_eq!(
        server.policy.rejections.lock().unwrap().as_slice(),
        ["body_budget_exhausted"]
    );
    drop(sender);
    stop(server).await;
}
