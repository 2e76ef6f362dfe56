//! A connection's transport: its TLS handshake, hyper's builder for both
//! protocols, and the deadline that closes a connection no request uses.

use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};

use hyper_util::{rt::TokioExecutor, rt::TokioTimer, server::conn::auto};
use tokio::{net::TcpStream, sync::watch};
use tokio_rustls::TlsAcceptor;

use super::bookkeeping::{Close, log_closed};

/// Bytes an HTTP/2 client may send on a connection before the server reads
/// them: the protocol's initial flow-control window, for a stream and for the
/// whole connection alike.
const HTTP2_RECEIVE_WINDOW: u32 = 65_535;

/// The TLS handshake of a new connection, under `timeout` and given up
/// when the server starts draining; `None` (logged at debug level) when it
/// does not complete.
pub(super) async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    timeout: Duration,
    draining: &mut watch::Receiver<bool>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot disable Nagle's algorithm");
    }
    let handshake = tokio::select! {
        result = tokio::time::timeout(timeout, acceptor.accept(stream)) => result,
        _ = draining.wait_for(|draining| *draining) => return None,
    };
    match handshake {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_elapsed) => {
            tracing::debug!(%peer, "TLS handshake timed out after {timeout:?}");
            None
        }
    }
}

/// hyper's connection builder for both protocols:
/// - no HTTP/1 header read timeout: it would also cut idle keep-alive
///   connections short, and [`wait_for_close`]'s deadline covers headers;
/// - HTTP/2 receive windows of the protocol's initial size: hyper's default
///   lets every connection send 1 MiB ahead, which the server buffers
///   whether or not a request has reserved it (a gigabyte over all
///   connections); a body larger than the window costs a round trip per
///   window's worth.
pub(super) fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(HTTP2_RECEIVE_WINDOW)
        .initial_connection_window_size(HTTP2_RECEIVE_WINDOW);
    builder
}

/// Waits while the connection serves: `None` when it ended by itself
/// (logged), else why it must be closed now. One deadline covers headers,
/// whatever the HTTP version, and runs while no request is open: first
/// `deadlines.0` for the first request, then `deadlines.1` of idleness.
/// hyper has none before the first bytes (it waits for them to tell HTTP/1
/// from HTTP/2) nor on an idle HTTP/2 connection, and HTTP/2 pings would
/// not help: a silent client still answers them.
pub(super) async fn wait_for_close<C>(
    mut connection: Pin<&mut C>,
    peer: SocketAddr,
    open_requests: &mut watch::Receiver<usize>,
    draining: &mut watch::Receiver<bool>,
    (first_request_timeout, idle_timeout): (Duration, Duration),
) -> Option<Close>
where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    let mut idle_deadline = tokio::time::Instant::now() + first_request_timeout;
    let mut used = false;
    loop {
        let idle = *open_requests.borrow() == 0;
        tokio::select! {
            result = connection.as_mut() => {
                log_closed(peer, result);
                return None;
            }
            _ = draining.wait_for(|draining| *draining) => return Some(Close::Draining),
            () = tokio::time::sleep_until(idle_deadline), if idle => {
                // Unless a request came (and maybe went) in this same round:
                // then the branch below resets the deadline.
                if !open_requests.has_changed().unwrap_or(false) {
                    return Some(if used { Close::Idle } else { Close::Unused });
                }
            }
            _ = open_requests.changed() => {
                used = true;
                if *open_requests.borrow() == 0 {
                    idle_deadline = tokio::time::Instant::now() + idle_timeout;
                }
            }
        }
    }
}
