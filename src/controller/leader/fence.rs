//! The leader's write fence: the instant until which this process may
//! write as the leader. The elector moves it forward after each successful
//! renewal and closes it when it stops leading; the controllers' API client
//! checks it before every write (see [`crate::client`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The instant until which this process may write as the leader; closed
/// (in the past) when it does not lead. Cheap to clone; all clones share it.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    until: Arc<Mutex<Option<Instant>>>,
    /// Set by [`close`](Self::close): nothing opens the fence again.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Fence {
    /// Whether writes are allowed at `now`.
    pub fn is_open_at(&self, now: Instant) -> bool {
        !self.closed.load(std::sync::atomic::Ordering::SeqCst)
            && self
                .until
                .lock()
                .expect("fence lock")
                .is_some_and(|until| now < until)
    }

    /// Whether writes are allowed now.
    pub fn is_open(&self) -> bool {
        self.is_open_at(Instant::now())
    }

    /// The deadline, if the fence was ever opened.
    pub fn deadline(&self) -> Option<Instant> {
        *self.until.lock().expect("fence lock")
    }

    /// Moves the deadline to `until` (never backwards); nothing once closed.
    pub fn extend_to(&self, until: Instant) {
        let mut current = self.until.lock().expect("fence lock");
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
    }

    /// Closes the fence for good: a renewal that lands afterwards (one in
    /// flight when the process stops leading) does not open it again; it
    /// did before (found by review).
    pub fn close(&self) {
        let mut current = self.until.lock().expect("fence lock");
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        *current = Some(Instant::now() - Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fence_opens_forward_only_and_closes() {
        let fence = Fence::default();
        let now = Instant::now();
        assert!(!fence.is_open_at(now), "closed until a renewal opens it");
        fence.extend_to(now + Duration::from_secs(10));
        assert!(fence.is_open_at(now + Duration::from_secs(9)));
        assert!(!fence.is_open_at(now + Duration::from_secs(10)));
        fence.extend_to(now + Duration::from_secs(5));
        assert!(
            fence.is_open_at(now + Duration::from_secs(9)),
            "never moves back"
        );
        fence.close();
        assert!(!fence.is_open());
        fence.extend_to(Instant::now() + Duration::from_secs(10));
        assert!(!fence.is_open(), "closed for good");
    }
}
