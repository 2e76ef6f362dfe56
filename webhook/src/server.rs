//! The HTTPS server: accept, handshake, route, answer, drain.
//!
//! One task accepts TCP connections while a connection permit is free, and
//! spawns a task per connection. That task performs the TLS handshake under
//! a timeout (garbage or a stalled client only costs its own task) and then
//! serves HTTP/1.1 or HTTP/2, whichever the client speaks. A connection must
//! be used: the headers of its first request must arrive within
//! [`ServerConfig::first_request_timeout`], and whenever it has no request
//! open it is closed after [`ServerConfig::idle_timeout`], so silent clients
//! cannot keep every connection permit and stop the accept loop. Every
//! admission request reads its body under a size limit and a deadline, only
//! then takes an in-flight permit (a client trickling its body holds up no
//! one else), and is answered either with an AdmissionReview or with a
//! plain-text error whose status says whose fault it was.
//!
//! Memory for request bodies is bounded across all connections: a request
//! reserves each part of its body from a budget of
//! [`ServerConfig::max_buffered_body_bytes`] as the part arrives, and keeps
//! the reservation until it is answered. When the next part does not fit, the
//! server reads no further from that body until other requests give bytes
//! back: HTTP/1.1 stops reading the connection, and HTTP/2 keeps the
//! stream's small flow-control window closed. A client that announces a large
//! body thus holds nothing until it sends, a client trickling its body holds
//! only the bytes it sent, and however many clients send at once, the bodies
//! the server holds stay within the budget, but for one frame held by each
//! request waiting for room (as many as there are connections at most).
//!
//! On shutdown the listener closes first, then every connection is asked to
//! finish the requests it has and close; connections still open after
//! [`ServerConfig::drain_timeout`] are dropped.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;

use crate::{
    AdmissionHandler, Answered, CertStore, Endpoint, Error, Result,
    review::{decode_review, encode_review},
};

mod bookkeeping;
mod connection;
use bookkeeping::{BodyBudget, Close, OpenRequest, log_closed};
use connection::{connection_builder, handshake, wait_for_close};

/// Limits and timeouts of the webhook server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest accepted request body. The API server caps objects at about
    /// 1.5 MiB and a review can carry the old and the new object, hence the
    /// 3 MiB default. Larger bodies are answered with 413.
    pub max_body_bytes: usize,
    /// Time allowed to receive and answer one request (reading its body,
    /// including any wait for room in the body budget, then waiting for an
    /// in-flight permit), and for a connection closed for being idle to
    /// finish. The API server gives up after the webhook's `timeoutSeconds`
    /// anyway.
    pub request_timeout: Duration,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed, after the TLS handshake, until the headers of the first
    /// request have arrived, whatever the HTTP version; then the connection is
    /// closed.
    pub first_request_timeout: Duration,
    /// How long a connection stays open with no request open (HTTP/1.1
    /// keep-alive or HTTP/2 alike), which is also the time the headers of a
    /// further request have to arrive; then it is closed. The default outlasts
    /// the 90 s idle timeout of Go's HTTP transport, so the API server
    /// normally closes its idle connections first.
    pub idle_timeout: Duration,
    /// Open connections at most; further clients wait in the accept backlog.
    pub max_connections: usize,
    /// Admission requests being processed at most, across all connections.
    /// A request takes its permit once its body has been read.
    pub max_requests_in_flight: usize,
    /// Bytes of request bodies buffered at most, across all connections.
    ///
    /// A request reserves the bytes of its body as they arrive, not the
    /// length it declares, and holds them until it is answered. When the next
    /// part of a body does not fit, the server stops reading that body until
    /// other requests give bytes back; a request whose body is still not
    /// complete at the request timeout for that reason is answered with 503.
    /// At most [`max_connections`](Self::max_connections) requests wait for
    /// room at once; a further one (possible only over HTTP/2, where requests
    /// share a connection) is answered with 503 at once. Raised to
    /// [`max_body_bytes`](Self::max_body_bytes) when smaller, so a body of the
    /// largest size fits once no other body holds bytes.
    ///
    /// The 64 MiB default (about 21 bodies of the largest size) leaves most
    /// of a 512 MiB memory limit to the rest of the process, which room for
    /// 64 such bodies would not. A review is typically a few KiB, so
    /// thousands fit at once. A client holds the bytes it has actually sent;
    /// announcing a length costs the budget nothing. Outside the budget, a
    /// connection may hold what its client sent before the server stopped
    /// reading: on HTTP/2 up to 64 KiB (its flow-control window), on HTTP/1.1
    /// what hyper read into its buffer, and on both what the kernel's socket
    /// buffers hold; and each request waiting for room holds the one frame it
    /// could not reserve yet (16 KiB at most on HTTP/2). While a body
    /// arrives, its buffer may be up to twice the bytes received. Bodies
    /// arriving together that need more than the budget can each hold a part
    /// and wait for the rest; the first to reach its timeout gets 503 and
    /// gives its part back.
    pub max_buffered_body_bytes: usize,
    /// How long shutdown waits for open connections to finish.
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 3 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
            max_requests_in_flight: 64,
            max_buffered_body_bytes: 64 * 1024 * 1024,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// Binds the webhook's listening socket.
///
/// Separate from [`serve`] so the operator can fail fast, before it starts
/// anything else, when the port is taken; the error names the address.
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Bind { address, source })
}

/// Serves `POST /mutate`, `POST /validate` and `GET /healthz` over HTTPS on
/// `listener` until `shutdown` completes, then drains open connections.
///
/// The key pair comes from `certs` at every handshake, so updating the store
/// rotates the serving certificate without a restart. Returns an error only
/// when the TLS configuration cannot be built; per-connection and
/// per-request failures are answered or logged and the server keeps serving.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<dyn AdmissionHandler>,
    certs: CertStore,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(certs.server_config()?);
    let address = listener.local_addr().map_err(Error::LocalAddress)?;
    let connection_permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let shared = Arc::new(Shared {
        in_flight: Arc::new(Semaphore::new(config.max_requests_in_flight.max(1))),
        body_budget: BodyBudget::new(&config),
        config,
        handler,
    });
    let (drain_sender, draining) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    tracing::info!(%address, "webhook server listening");

    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = connection_permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "failed to accept a webhook connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_connection(
            stream,
            peer,
            acceptor.clone(),
            shared.clone(),
            draining.clone(),
            permit,
        ));
    }

    drop(listener);
    drain_sender.send_replace(true);
    tracing::info!(
        open = connections.len(),
        "webhook server draining connections"
    );
    let drain_timeout = shared.config.drain_timeout;
    let drained = tokio::time::timeout(drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "webhook connections still open after {drain_timeout:?}, closing them"
        );
        connections.shutdown().await;
    }
    tracing::info!("webhook server stopped");
    Ok(())
}

/// One connection from handshake to close. Failures here concern this client
/// only, so they are logged at debug level and never reach the accept loop.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut draining: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let handshake_timeout = shared.config.handshake_timeout;
    let Some(stream) = handshake(stream, peer, acceptor, handshake_timeout, &mut draining).await
    else {
        return;
    };
    let ServerConfig {
        request_timeout,
        first_request_timeout,
        idle_timeout,
        ..
    } = shared.config;
    let requests = Arc::new(watch::Sender::new(0));
    let mut open_requests = requests.subscribe();
    let service = service_fn({
        let requests = requests.clone();
        move |request| {
            // Counted from the moment hyper hands the request over, that is
            // once its headers are complete.
            let open = OpenRequest::begin(&requests);
            let shared = shared.clone();
            async move {
                let response = shared.route(request).await;
                drop(open);
                Ok::<_, Infallible>(response)
            }
        }
    });
    let builder = connection_builder();
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));

    let deadlines = (first_request_timeout, idle_timeout);
    let Some(reason) = wait_for_close(
        connection.as_mut(),
        peer,
        &mut open_requests,
        &mut draining,
        deadlines,
    )
    .await
    else {
        return;
    };

    let result = match reason {
        Close::Unused => {
            tracing::debug!(%peer, "no request within {first_request_timeout:?}, closing");
            return;
        }
        // Bounded by the drain timeout of the whole server.
        Close::Draining => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        Close::Idle => {
            tracing::debug!(%peer, "no request for {idle_timeout:?}, closing");
            connection.as_mut().graceful_shutdown();
            // An HTTP/2 GOAWAY lets the client stop sending first; a request
            // that raced with it still gets the request timeout, no more.
            match tokio::time::timeout(request_timeout, connection).await {
                Ok(result) => result,
                Err(_elapsed) => return,
            }
        }
    };
    log_closed(peer, result);
}

/// What every request task needs.
struct Shared {
    config: ServerConfig,
    handler: Arc<dyn AdmissionHandler>,
    in_flight: Arc<Semaphore>,
    body_budget: BodyBudget,
}

impl Shared {
    async fn route(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let endpoint = match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => return plain_text(StatusCode::OK, "ok".into()),
            (&Method::POST, "/mutate") => Endpoint::Mutate,
            (&Method::POST, "/validate") => Endpoint::Validate,
            (_, "/mutate" | "/validate") => return method_not_allowed("POST"),
            (_, "/healthz") => return method_not_allowed("GET"),
            (_, path) => {
                return plain_text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no route for {path}: this server answers POST /mutate, \
                         POST /validate and GET /healthz"
                    ),
                );
            }
        };
        match self.admit(endpoint, request).await {
            Ok(review) => {
                let mut response = Response::new(Full::new(Bytes::from(review)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(error) => {
                self.handler.observe_rejection(endpoint, &error);
                let message = error.describe();
                if matches!(error, Error::HandlerPanicked) {
                    // A defect of ours, not the caller's: loud.
                    tracing::error!(endpoint = endpoint.as_str(), %message, "the admission handler panicked; answered 500");
                } else {
                    tracing::debug!(
                        endpoint = endpoint.as_str(),
                        reason = error.label(),
                        %message,
                        "admission request refused"
                    );
                }
                plain_text(error.status_code(), message)
            }
        }
    }

    /// Reads, decodes, answers and encodes one AdmissionReview.
    async fn admit(&self, endpoint: Endpoint, request: Request<Incoming>) -> Result<Vec<u8>> {
        let started = Instant::now();
        let limit = self.config.max_body_bytes;
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;

        // A declared length over the limit is refused before reading anything.
        let declared_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > limit as u64) {
            return Err(Error::BodyTooLarge { limit });
        }

        // The body is read before an in-flight permit is taken, so a client
        // trickling its body holds up only itself. Its bytes stay reserved
        // until this request is answered.
        let (body, reservation) = self
            .read_body(request.into_body(), declared_length, deadline)
            .await?;
        let permit =
            match tokio::time::timeout_at(deadline, Arc::clone(&self.in_flight).acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) | Err(_) => return Err(Error::Overloaded),
            };

        // Decoding, the handler and encoding run on the blocking pool: a
        // large review costs its own thread, never the runtime's, which may
        // be a single thread shared with whatever else the process runs
        // (the operator's controllers and leader lease). The in-flight
        // permit and the body's reservation move with the work, so at most
        // `max_requests_in_flight` run at once and the buffered bytes stay
        // within their budget even when their callers have gone; and the
        // answer is observed there, so a review whose caller gave up still
        // counts in the metrics.
        let handler = Arc::clone(&self.handler);
        tokio::task::spawn_blocking(move || {
            let _held = (permit, reservation);
            let review = decode_review(&body)?;
            let answer = catch_unwind(AssertUnwindSafe(|| match endpoint {
                Endpoint::Mutate => handler.mutate(&review),
                Endpoint::Validate => handler.validate(&review),
            }))
            .map_err(|_panic| Error::HandlerPanicked)?;
            let allowed = answer.allowed;
            let encoded = encode_review(&review, answer)?;
            handler.observe(Answered {
                group: &review.kind.group,
                kind: &review.kind.kind,
                operation: &review.operation,
                allowed,
                endpoint,
                elapsed: started.elapsed(),
            });
            tracing::debug!(
                endpoint = endpoint.as_str(),
                uid = %review.uid,
                kind = %review.kind.kind,
                name = %review.name,
                allowed,
                "admission review answered"
            );
            Ok::<_, Error>(encoded)
        })
        .await
        .map_err(|_join| Error::HandlerPanicked)?
    }

    /// Reads a body frame by frame until it ends or `deadline` passes. Each
    /// frame's bytes are reserved from the budget before they are kept; while
    /// there is no room, no further frame is read, so this client waits (its
    /// HTTP/1.1 connection is not read, its HTTP/2 window stays closed) and
    /// others do not. The reservation is returned with the body.
    async fn read_body(
        &self,
        mut body: Incoming,
        declared_length: Option<u64>,
        deadline: tokio::time::Instant,
    ) -> Result<(Vec<u8>, OwnedSemaphorePermit)> {
        let limit = self.config.max_body_bytes;
        // hyper already holds a body to its declared length (HTTP/1 reads no
        // further, HTTP/2 resets the stream); this makes sure of it.
        let most = declared_length.map_or(limit, |length| {
            usize::try_from(length).map_or(limit, |length| length.min(limit))
        });
        let mut reservation = self.body_budget.nothing();
        // Allocated as bytes arrive, not when a length is announced.
        let mut buffer = Vec::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(frame)) => frame.map_err(|error| Error::ReadBody(error.into()))?,
                Ok(None) => return Ok((buffer, reservation)),
                Err(_elapsed) => return Err(Error::Timeout(self.config.request_timeout)),
            };
            // Trailers are not kept.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.len() > most - buffer.len() {
                return Err(Error::BodyTooLarge { limit });
            }
            let grown = self.body_budget.grow(&mut reservation, data.len());
            if !tokio::time::timeout_at(deadline, grown)
                .await
                .unwrap_or(false)
            {
                return Err(Error::BodyBudgetExhausted {
                    budget: self.body_budget.total,
                });
            }
            make_room(&mut buffer, data.len(), most);
            buffer.extend_from_slice(&data);
        }
    }
}

/// Makes room in `buffer` for `more` bytes. Its capacity at least doubles
/// whenever it grows, up to `most`, so it stays under twice the bytes it
/// holds and never exceeds the length the body declared.
fn make_room(buffer: &mut Vec<u8>, more: usize, most: usize) {
    let needed = buffer.len() + more;
    if needed > buffer.capacity() {
        let capacity = needed.max(buffer.capacity().saturating_mul(2)).min(most);
        buffer.reserve_exact(capacity - buffer.len());
    }
}

fn plain_text(status: StatusCode, mut message: String) -> Response<Full<Bytes>> {
    message.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn method_not_allowed(allowed: &'static str) -> Response<Full<Bytes>> {
    let mut response = plain_text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed, use {allowed}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}
