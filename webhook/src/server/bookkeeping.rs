//! The server's bookkeeping per connection and per request: why a
//! connection is closed, how many requests it has open (its idle deadline
//! runs only at none), and the byte budget of buffered request bodies.

use std::{net::SocketAddr, sync::Arc};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

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
/// byte. A request reserves the bytes of its body as they arrive, not the
/// length it announces, and holds them until it is answered.
///
/// A frame is reserved once received: hyper hands it over (and on HTTP/2
/// reopens the client's window for it) before its size is known. A request
/// waiting for room thus holds one frame outside the budget, so only as many
/// requests as the server has connections may wait at once; with HTTP/2,
/// many requests share a connection.
pub(super) struct BodyBudget {
    /// Owned permits: a reservation moves with its body to the blocking
    /// pool and is given back only when the work on it ends.
    bytes: Arc<Semaphore>,
    /// Requests that may wait for room at once.
    waiting: Semaphore,
    /// Permits the semaphore of bytes was created with.
    pub(super) total: usize,
}

impl BodyBudget {
    pub(super) fn new(config: &ServerConfig) -> Self {
        let total = config
            .max_buffered_body_bytes
            .max(config.max_body_bytes)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            waiting: Semaphore::new(config.max_connections.clamp(1, Semaphore::MAX_PERMITS)),
            total,
        }
    }

    /// A reservation of no bytes, for [`grow`](Self::grow) to add to.
    pub(super) fn nothing(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.bytes)
            .try_acquire_many_owned(0)
            .expect("the body budget is never closed")
    }

    /// Adds `bytes` to `reservation`, waiting until they are free unless
    /// the most requests that may wait already do: then it returns `false`
    /// at once. The caller keeps every reservation within the largest body,
    /// hence within the budget, so a wait ends once others give bytes back.
    pub(super) async fn grow(&self, reservation: &mut OwnedSemaphorePermit, bytes: usize) -> bool {
        // No frame comes near 4 GiB (HTTP/2 frames are 16 KiB here, HTTP/1.1
        // ones at most hyper's read buffer).
        let Ok(bytes) = u32::try_from(bytes) else {
            return false;
        };
        if let Ok(permit) = Arc::clone(&self.bytes).try_acquire_many_owned(bytes) {
            reservation.merge(permit);
            return true;
        }
        let Ok(_waiting) = self.waiting.try_acquire() else {
            return false;
        };
        match Arc::clone(&self.bytes).acquire_many_owned(bytes).await {
            Ok(permit) => {
                reservation.merge(permit);
                true
            }
            // The semaphore is never closed.
            Err(_closed) => false,
        }
    }
}
