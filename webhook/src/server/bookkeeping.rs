//! The server's bookkeeping per connection and per request: why a
//! connection is closed, how many requests it has open (its idle deadline
//! runs only at none), and the byte budget of buffered request bodies.

use std::{net::SocketAddr, sync::Arc};

use tokio::sync::{Semaphore, SemaphorePermit, watch};

use super::ServerConfig;

/// Why [`serve_connection`] closes a connection its client has not closed.
pub(super) enum Close {
    /// The server shuts down.
    Draining,
    /// No complete request headers within the first request timeout: dropped
    /// at once, there is nothing to finish.
    Unused,
    /// No request open for the idle timeout: closed gracefully.
    Idle,
}

pub(super) fn log_closed(
    peer: SocketAddr,
    result: std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>,
) {
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "webhook connection closed with an error");
    }
}

/// One request a connection is answering, from complete headers to answer;
/// the count tells the connection's idle deadline when to run.
pub(super) struct OpenRequest(Arc<watch::Sender<usize>>);

impl OpenRequest {
    pub(super) fn begin(requests: &Arc<watch::Sender<usize>>) -> Self {
        requests.send_modify(|open| *open += 1);
        Self(requests.clone())
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

/// The bytes of request bodies the server may buffer at once; a permit is one
/// byte.
pub(super) struct BodyBudget {
    bytes: Semaphore,
    /// Permits the semaphore was created with.
    pub(super) total: usize,
}

impl BodyBudget {
    pub(super) fn new(config: &ServerConfig) -> Self {
        let total = config
            .max_buffered_body_bytes
            .max(config.max_body_bytes)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Semaphore::new(total),
            total,
        }
    }

    /// Waits until `bytes` (at most the whole budget) are free and takes them.
    pub(super) async fn reserve(&self, bytes: usize) -> SemaphorePermit<'_> {
        let bytes = u32::try_from(bytes.min(self.total)).unwrap_or(u32::MAX);
        match self.bytes.acquire_many(bytes).await {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_closed) => std::future::pending().await,
        }
    }
}
