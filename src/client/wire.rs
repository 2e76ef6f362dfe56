//! The fenced client's own HTTP stack, so the leader fence is checked a
//! second time at the last moment: when hyper pulls the request body to
//! write it to the socket ([`FencedBody`]).
//!
//! Why: [`super::Guard`] checks the fence when a request enters the stack,
//! but a request can then wait (for a pooled connection, a TLS handshake, a
//! busy runtime) and the process can be frozen (SIGSTOP, a suspended VM) in
//! between. Without this second check such a write would reach the API
//! server after the process resumes, long after another replica took the
//! Lease. With it, a write whose body was not handed to the kernel before
//! the fence closed is abandoned: hyper closes the connection mid-request
//! and the API server never runs it (it needs the whole body to decode the
//! object). What remains is the few instructions between the check and the
//! socket write.
//!
//! Guarantee: the stack is kube's default one in the same order (base URI,
//! authentication, extra headers, then hyper over rustls with the configured
//! connect and write timeouts); only the request body type differs. Bodies
//! of reads are empty and never polled, so reads and watches are unaffected.
//! Not covered: a kubeconfig `proxy-url` (then [`super::build`] keeps kube's
//! own stack with the first check only, and says so) and the rebuild kube
//! does when an exec plugin's client certificate expires (the operator runs
//! on a ServiceAccount token, which the auth layer re-reads).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use kube::Client;
use kube::client::{Body, ConfigExt};
use tower::ServiceBuilder;

use super::{BoxError, GuardError, GuardLayer};
use crate::controller::leader::Fence;

/// A request body that refuses to yield its bytes once `fence` is closed.
pub struct FencedBody {
    inner: Body,
    fence: Fence,
    method: http::Method,
    path: String,
}

impl FencedBody {
    /// Wraps the body of `req` in a check of `fence`.
    pub fn wrap(req: Request<Body>, fence: Fence) -> Request<FencedBody> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        req.map(|inner| FencedBody {
            inner,
            fence,
            method,
            path,
        })
    }
}

impl HttpBody for FencedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.inner.is_end_stream() && !self.fence.is_open() {
            tracing::warn!(method = %self.method, path = self.path, "write abandoned on the wire: not leading");
            return Poll::Ready(Some(Err(GuardError::Fenced {
                method: self.method.clone(),
                path: self.path.clone(),
            }
            .into())));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client on `config` with [`GuardLayer`] and the body-level fence check.
pub fn fenced_client(
    config: &kube::Config,
    request_timeout: Duration,
    fence: Fence,
    observe: Option<super::RequestObserver>,
) -> anyhow::Result<Client> {
    let https = config
        .rustls_https_connector()
        .map_err(|e| anyhow::anyhow!("cannot build the TLS connector: {e}"))?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http: HyperClient<_, FencedBody> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);
    let auth = config
        .auth_layer()
        .map_err(|e| anyhow::anyhow!("cannot set up API authentication: {e}"))?;
    let headers = config
        .extra_headers_layer()
        .map_err(|e| anyhow::anyhow!("cannot set up API request headers: {e}"))?;
    let wire_fence = fence.clone();
    let service = ServiceBuilder::new()
        .layer(GuardLayer {
            request_timeout,
            fence: Some(fence),
            observe,
        })
        .layer(config.base_uri_layer())
        .option_layer(auth)
        .layer(headers)
        .map_request(move |req: Request<Body>| FencedBody::wrap(req, wire_fence.clone()))
        .map_err(BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace.clone()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    use super::*;

    fn post(body: &'static str) -> Request<Body> {
        Request::post("/api/v1/namespaces/a/configmaps")
            .body(Body::from(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    #[tokio::test]
    async fn a_closed_fence_keeps_the_body_and_an_open_one_yields_it() {
        let fence = Fence::default();
        let mut closed = FencedBody::wrap(post("{}"), fence.clone()).into_body();
        let error = closed.frame().await.expect("a frame").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("POST /api/v1/namespaces/a/configmaps refused"),
            "{error}"
        );
        fence.extend_to(tokio::time::Instant::now() + Duration::from_secs(60));
        let open = FencedBody::wrap(post("{}"), fence).into_body();
        let bytes = open.collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"{}");
    }

    /// A write that got past the first check and reached hyper after the
    /// fence closed never arrives whole at the server: hyper gives up on the
    /// request when the body refuses, and the handler never runs.
    #[tokio::test]
    async fn hyper_abandons_a_request_whose_body_is_fenced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let handled = Arc::new(AtomicUsize::new(0));
        let counter = handled.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let counter = counter.clone();
                        async move {
                            let _ = BodyExt::collect(req.into_body()).await?;
                            counter.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, hyper::Error>(http::Response::new(String::new()))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        let client: HyperClient<_, FencedBody> =
            hyper_util::client::legacy::Builder::new(TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let fence = Fence::default();
        let send = |fence: Fence| {
            let mut req = post(r#"{"kind":"ConfigMap"}"#);
            *req.uri_mut() = format!("http://{address}/api/v1/namespaces/a/configmaps")
                .parse()
                .unwrap();
            client.request(FencedBody::wrap(req, fence))
        };
        let refused = send(fence.clone()).await;
        assert!(refused.is_err(), "a fenced body is not sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(handled.load(Ordering::SeqCst), 0, "the server ran nothing");
        fence.extend_to(tokio::time::Instant::now() + Duration::from_secs(60));
        send(fence).await.expect("an open fence sends");
        assert_eq!(handled.load(Ordering::SeqCst), 1);
    }
}
