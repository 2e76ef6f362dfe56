//! The operator's Kubernetes API clients: kube-rs's default stack with
//! bounded connects, plus one layer of our own ([`GuardLayer`]) that
//!
//! - bounds every request except a watch: its response must arrive within
//!   `--api-request-timeout-seconds`, so a stalled API server (or a frozen
//!   etcd behind it) turns into an error and a retry instead of a reconcile
//!   or a Lease renewal that hangs forever. Watches are left alone: they are
//!   long polls by design, and kube-runtime's watcher guards them with its
//!   own idle timeout (server `timeoutSeconds` plus a margin), which is why
//!   kube's connection-level `read_timeout` stays off;
//! - refuses every write (any method but GET/HEAD/OPTIONS) once the leader
//!   [`Fence`] is closed, before anything is sent. Only the controllers'
//!   client carries the fence; the Lease itself and the webhook (which every
//!   replica serves) use an unfenced client. The fenced client checks the
//!   fence a second time when hyper pulls the body onto the wire
//!   ([`wire`]), so a write that waited (or was frozen) between the two
//!   checks is abandoned rather than sent late;
//! - times every request it bounds, for the
//!   `sandbox_operator_api_request_duration_seconds` histogram ([`observe`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request};
use kube::Client;
use kube::client::ClientBuilder;
use tracing::warn;

use crate::controller::leader::Fence;

pub mod observe;
pub mod wire;

pub use observe::RequestObserver;

/// Boxed error, as the client stack passes them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Timeouts of the API client (from `run`'s flags).
#[derive(Clone, Copy, Debug)]
pub struct ClientTimeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// Whole response of any request but a watch; also the stall limit of
    /// one socket write.
    pub request: Duration,
}

/// The client configuration from `kubeconfig` when given, else from
/// KUBECONFIG or the in-cluster environment, with `timeouts` applied.
pub async fn infer_config(
    kubeconfig: Option<&std::path::Path>,
    timeouts: ClientTimeouts,
) -> anyhow::Result<kube::Config> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot build a Kubernetes client (KUBECONFIG or in-cluster config): {e}"
            )
        })?,
    };
    config.connect_timeout = Some(timeouts.connect);
    config.write_timeout = Some(timeouts.request);
    // Off on purpose: it would also cut idle watches (see the module doc).
    config.read_timeout = None;
    Ok(config)
}

/// A client on `config` whose requests pass through [`GuardLayer`]; writes
/// are refused whenever `fence` is given and closed; `observe`, if given,
/// hears the duration of every request but a watch.
pub fn build(
    config: kube::Config,
    request_timeout: Duration,
    fence: Option<Fence>,
    observe: Option<RequestObserver>,
) -> anyhow::Result<Client> {
    if let Some(fence) = &fence {
        if config.proxy_url.is_none() {
            return wire::fenced_client(&config, request_timeout, fence.clone(), observe);
        }
        warn!(
            "the kubeconfig names a proxy-url: the controllers' client uses kube's own stack, \
             which checks the leader fence before each write but not again on the wire"
        );
    }
    let builder = ClientBuilder::try_from(config)
        .map_err(|e| anyhow::anyhow!("cannot build the Kubernetes client: {e}"))?;
    Ok(builder
        .with_layer(&GuardLayer {
            request_timeout,
            fence,
            observe,
        })
        .build())
}

/// What the guard does with one request. Pure.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Send it with no time bound (a watch).
    Unbounded,
    /// Send it; fail it if no response arrives within the duration.
    Bounded(Duration),
    /// Do not send it: a write while the fence is closed.
    Refuse,
}

/// Decides for a request from its method, its query string and the fence
/// (`None` when the client carries no fence). Pure.
pub fn plan(
    method: &Method,
    query: Option<&str>,
    fence_open: Option<bool>,
    timeout: Duration,
) -> Plan {
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !read && fence_open == Some(false) {
        return Plan::Refuse;
    }
    let watch = read
        && query
            .unwrap_or_default()
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1");
    if watch {
        Plan::Unbounded
    } else {
        Plan::Bounded(timeout)
    }
}

/// Why the guard failed a request; the message names the flag or rule.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A write while this process does not hold the leader Lease.
    #[error(
        "{method} {path} refused: this process no longer leads (leader Lease not renewed within \
         --lease-renew-deadline-seconds); rule: controllers write only while they hold the Lease"
    )]
    Fenced {
        /// HTTP method.
        method: Method,
        /// Request path.
        path: String,
    },
    /// No response in time.
    #[error("{method} {path}: no response within {timeout:?} (--api-request-timeout-seconds)")]
    Timeout {
        /// HTTP method.
        method: Method,
        /// Request path.
        path: String,
        /// The bound that passed.
        timeout: Duration,
    },
}

/// Tower layer adding [`Guard`] to a client stack.
#[derive(Clone)]
pub struct GuardLayer {
    /// Bound on every request but a watch.
    pub request_timeout: Duration,
    /// Fence checked before every write, if any.
    pub fence: Option<Fence>,
    /// Hears how long each bounded request took, if set.
    pub observe: Option<RequestObserver>,
}

impl std::fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardLayer")
            .field("request_timeout", &self.request_timeout)
            .field("fence", &self.fence)
            .field("observe", &self.observe.is_some())
            .finish()
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            request_timeout: self.request_timeout,
            fence: self.fence.clone(),
            observe: self.observe.clone(),
        }
    }
}

/// The service [`GuardLayer`] builds.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    request_timeout: Duration,
    fence: Option<Fence>,
    observe: Option<RequestObserver>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Guard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("inner", &self.inner)
            .field("request_timeout", &self.request_timeout)
            .field("fence", &self.fence)
            .field("observe", &self.observe.is_some())
            .finish()
    }
}

type GuardFuture<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

impl<S, B, RB> tower::Service<Request<B>> for Guard<S>
where
    S: tower::Service<Request<B>, Response = http::Response<RB>>,
    RB: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GuardFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let fence_open = self.fence.as_ref().map(Fence::is_open);
        match plan(&method, req.uri().query(), fence_open, self.request_timeout) {
            Plan::Refuse => {
                warn!(%method, path, "write refused: not leading");
                Box::pin(std::future::ready(Err(
                    GuardError::Fenced { method, path }.into()
                )))
            }
            Plan::Unbounded => {
                let response = self.inner.call(req);
                Box::pin(async move { response.await.map_err(Into::into) })
            }
            Plan::Bounded(timeout) => {
                let response = self.inner.call(req);
                // Outside the future, so a future dropped unpolled is
                // recorded too.
                let timing = self.observe.clone().map(|observe| observe::Timing {
                    observe,
                    method: method.clone(),
                    path: path.clone(),
                    start: tokio::time::Instant::now(),
                    outcome: observe::Outcome::Cancelled,
                });
                Box::pin(async move {
                    let result = tokio::time::timeout(timeout, response).await;
                    if let Some(mut timing) = timing {
                        timing.outcome = match &result {
                            Ok(Ok(response)) => {
                                observe::Outcome::Status(response.status().as_u16())
                            }
                            _ => observe::Outcome::NoAnswer,
                        };
                    }
                    match result {
                        Ok(result) => result.map_err(Into::into),
                        Err(_) => Err(GuardError::Timeout {
                            method,
                            path,
                            timeout,
                        }
                        .into()),
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn watches_are_unbounded_everything_else_is_bounded() {
        let q = Some("labelSelector=a%3Db&watch=true&timeoutSeconds=290");
        assert_eq!(plan(&Method::GET, q, None, T), Plan::Unbounded);
        assert_eq!(
            plan(&Method::GET, Some("watch=1"), None, T),
            Plan::Unbounded
        );
        assert_eq!(
            plan(&Method::GET, Some("limit=500"), None, T),
            Plan::Bounded(T)
        );
        assert_eq!(plan(&Method::GET, None, None, T), Plan::Bounded(T));
        assert_eq!(
            plan(&Method::GET, Some("nowatch=true"), None, T),
            Plan::Bounded(T)
        );
        assert_eq!(plan(&Method::PATCH, None, None, T), Plan::Bounded(T));
    }

    #[test]
    fn a_closed_fence_refuses_writes_only() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(
                plan(&method, None, Some(false), T),
                Plan::Refuse,
                "{method}"
            );
            assert_eq!(
                plan(&method, None, Some(true), T),
                Plan::Bounded(T),
                "{method}"
            );
        }
        assert_eq!(plan(&Method::GET, None, Some(false), T), Plan::Bounded(T));
        assert_eq!(
            plan(&Method::GET, Some("watch=true"), Some(false), T),
            Plan::Unbounded
        );
    }

    #[tokio::test]
    async fn the_guard_refuses_a_fenced_write_without_calling_the_server() {
        use tower::{Layer, Service};
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let inner = tower::service_fn(move |_req: Request<()>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(())))
        });
        let fence = Fence::default();
        let mut guard = GuardLayer {
            request_timeout: T,
            fence: Some(fence.clone()),
            observe: None,
        }
        .layer(inner);
        let write = || {
            Request::patch("/api/v1/namespaces/a/pods/p")
                .body(())
                .unwrap()
        };
        let error = guard.call(write()).await.unwrap_err().to_string();
        assert!(
            error.contains("PATCH /api/v1/namespaces/a/pods/p refused"),
            "{error}"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        fence.extend_to(tokio::time::Instant::now() + Duration::from_secs(60));
        guard.call(write()).await.expect("open fence: sent");
        guard
            .call(Request::get("/api/v1/pods").body(()).unwrap())
            .await
            .expect("reads always go");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn bounded_requests_are_timed_with_their_labels_and_watches_and_refusals_are_not() {
        use std::sync::{Arc, Mutex};
        use tower::{Layer, Service};
        let heard: Arc<Mutex<Vec<observe::Labels>>> = Arc::default();
        let sink = heard.clone();
        let observe: RequestObserver = Arc::new(move |labels, _elapsed| {
            sink.lock().unwrap().push(labels.clone());
        });
        let inner = tower::service_fn(|req: Request<()>| {
            let status = if req.method() == Method::PATCH {
                409
            } else {
                200
            };
            let mut response = http::Response::new(());
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        });
        let fence = Fence::default();
        let mut guard = GuardLayer {
            request_timeout: T,
            fence: Some(fence.clone()),
            observe: Some(observe),
        }
        .layer(inner);
        let get = |uri: &str| Request::get(uri).body(()).unwrap();
        guard.call(get("/api/v1/namespaces/a/pods")).await.unwrap();
        guard
            .call(get("/api/v1/namespaces/a/pods?watch=true"))
            .await
            .unwrap();
        let patch = || {
            Request::patch("/api/v1/namespaces/a/pods/p")
                .body(())
                .unwrap()
        };
        guard
            .call(patch())
            .await
            .expect_err("fence closed: refused");
        fence.extend_to(tokio::time::Instant::now() + Duration::from_secs(60));
        guard.call(patch()).await.unwrap();
        let heard = heard.lock().unwrap();
        let got: Vec<(&str, &str, &str)> = heard
            .iter()
            .map(|l| (l.verb.as_str(), l.resource.as_str(), l.code))
            .collect();
        assert_eq!(got, [("LIST", "pods", "2xx"), ("PATCH", "pods", "4xx")]);
    }

    /// What an observer heard: each request's labels and duration.
    type Heard = std::sync::Arc<std::sync::Mutex<Vec<(observe::Labels, Duration)>>>;

    /// A guard on `inner` whose observer collects (labels, duration).
    fn observed<S>(inner: S, timeout: Duration) -> (Guard<S>, Heard) {
        use tower::Layer;
        let heard: Heard = Default::default();
        let sink = heard.clone();
        let observe: RequestObserver = std::sync::Arc::new(move |labels, elapsed| {
            sink.lock().unwrap().push((labels.clone(), elapsed));
        });
        let guard = GuardLayer {
            request_timeout: timeout,
            fence: None,
            observe: Some(observe),
        }
        .layer(inner);
        (guard, heard)
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_is_recorded_as_an_error_after_the_bound() {
        use tower::Service;
        let inner = tower::service_fn(|_req: Request<()>| {
            std::future::pending::<Result<http::Response<()>, std::convert::Infallible>>()
        });
        let (mut guard, heard) = observed(inner, Duration::from_millis(20));
        let error = guard
            .call(Request::get("/api/v1/pods").body(()).unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("no response within 20ms"), "{error}");
        let heard = heard.lock().unwrap();
        assert_eq!(heard.len(), 1);
        let (labels, elapsed) = &heard[0];
        assert_eq!((labels.verb.as_str(), labels.code), ("LIST", "error"));
        assert!(*elapsed >= Duration::from_millis(20), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_request_its_caller_stops_waiting_for_is_recorded_as_cancelled() {
        use tower::Service;
        let inner = tower::service_fn(|_req: Request<()>| {
            std::future::pending::<Result<http::Response<()>, std::convert::Infallible>>()
        });
        let (mut guard, heard) = observed(inner, T);
        let lease = || {
            Request::put("/apis/coordination.k8s.io/v1/namespaces/o/leases/l")
                .body(())
                .unwrap()
        };
        // An outer timeout shorter than the guard's, as the Lease renewal has.
        let outer = tokio::time::timeout(Duration::from_millis(10), guard.call(lease())).await;
        assert!(outer.is_err(), "the outer timeout fired first");
        // Dropped before it was ever polled.
        drop(guard.call(lease()));
        let heard = heard.lock().unwrap();
        let got: Vec<(&str, &str, &str)> = heard
            .iter()
            .map(|(l, _)| (l.verb.as_str(), l.resource.as_str(), l.code))
            .collect();
        assert_eq!(got, [("PUT", "leases", "cancelled"); 2]);
        assert!(heard[0].1 >= Duration::from_millis(10), "{:?}", heard[0].1);
    }
}
