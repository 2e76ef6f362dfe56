//! Answers: well-formed reviews over HTTP/1.1 and HTTP/2, malformed ones,
//! a panicking handler, and the routes besides the two endpoints.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use sandbox_webhook::{Endpoint, ServerConfig, admission::Operation};

use crate::harness::{TestServer, json_body, review};

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

/// A review without what its operation needs (here an UPDATE without
/// `oldObject`, and an empty `uid`) never reaches the handler: 400, naming
/// the member.
#[tokio::test]
async fn a_review_missing_a_member_gets_400_naming_it() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut update: serde_json::Value = serde_json::from_slice(&review("u-1", "demo")).unwrap();
    update["request"]["operation"] = "UPDATE".into();
    let no_uid: serde_json::Value = serde_json::from_slice(&review("", "demo")).unwrap();
    for (body, expected) in [
        (update, "request.oldObject: is required for UPDATE"),
        (no_uid, "request.uid: must not be empty"),
    ] {
        let (status, answer) = server
            .post(false, "/validate", serde_json::to_vec(&body).unwrap())
            .await;
        let message = String::from_utf8_lossy(&answer);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        assert!(
            message.contains(&format!("malformed AdmissionReview request: {expected}")),
            "{message:?} should name {expected:?}"
        );
    }
    assert_eq!(
        server.policy.rejections.lock().unwrap().as_slice(),
        ["malformed_request", "malformed_request"]
    );
    assert!(server.policy.observed.lock().unwrap().is_empty());
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
    server.assert_serves(false, "/validate", "calm").await;
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
