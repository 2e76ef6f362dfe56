//! An in-memory fake Kubernetes API server for tests, with the semantics
//! the operator's races depend on, plugged into a [`kube::Client`] without
//! sockets.
//!
//! What it does like the real API server, for any resource path (core and
//! custom groups, namespaced or cluster-scoped):
//! - GET, LIST (label selectors; the list's resourceVersion) and WATCH
//!   (resume from a resourceVersion, bounded history, 410 Expired when too
//!   old), so kube-runtime watchers and reflectors work against it;
//! - POST (generateName, uid, creationTimestamp, 409 AlreadyExists), PUT and
//!   PATCH (JSON patch with `test`, whose failure is the same bare 422 as any
//!   other unappliable patch; merge patch; a resourceVersion in the result is
//!   a precondition: 409 Conflict), the `/status` subresource;
//! - DELETE with uid/resourceVersion preconditions (409), finalizers, and
//!   ownerReference garbage collection;
//! - `Status` bodies shaped like the real server's.
//!
//! Simplifications: garbage collection runs within the delete that orphans
//! the dependents (the real collector runs a moment later); a watch stays
//! open until its client drops it (`timeoutSeconds` is ignored, bookmarks
//! are not sent); a list returns everything in one page.
//!
//! What it does NOT do: admission, validation, defaulting, server-side
//! apply, strategic merge patch (415), field selectors (400), scheduling or
//! kubelets (tests move Pods to Ready themselves, e.g. [`FakeApiServer::set_status`]).
//!
//! For tests it adds fault hooks ([`FakeApiServer::fail_next`],
//! [`FakeApiServer::delay_next`], [`FakeApiServer::hook`] at a
//! [`Moment`] of a request, seeded
//! [`FakeApiServer::random_delays`]), a request log and the full change
//! history ([`FakeApiServer::audit`]).

pub mod faults;
pub mod http;
pub mod patch;
pub mod path;
pub mod store;
pub mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use faults::{Action, Faults};
pub use faults::{Hook, Predicate, RequestInfo};

/// When a [`FakeApiServer::hook`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// When the request arrives, before anything is read.
    OnArrival,
    /// For a write: after the stored object was read and before the write
    /// is committed. A write made by the hook makes the request read again
    /// and re-apply (the API server's guaranteed update): preconditions and
    /// `test` operations are then judged against the new version. For a
    /// GET: after the read, before the answer (the reader then holds a copy
    /// that may already be stale).
    BetweenReadAndWrite,
}
pub use path::{ObjectKey, ResourcePath};
pub use watch::{Change, EventType};

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// URL query.
    pub query: String,
    /// HTTP status code answered.
    pub code: u16,
}

/// What the server shares between requests.
pub(crate) struct Shared {
    state: Mutex<store::State>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Logged>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, store::State> {
        self.state.lock().expect("fake API state")
    }
}

/// The fake API server; clones share the same state.
#[derive(Clone)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        FakeApiServer::with_history(10_000)
    }
}

fn key_of(path: &str) -> ObjectKey {
    ResourcePath::parse(path)
        .and_then(|p| p.key())
        .unwrap_or_else(|| panic!("not an object path: {path}"))
}

impl FakeApiServer {
    /// A server whose watch history keeps the last `history` changes.
    pub fn with_history(history: usize) -> Self {
        FakeApiServer {
            shared: Arc::new(Shared {
                state: Mutex::new(store::State::new(history)),
                faults: Mutex::default(),
                log: Mutex::default(),
            }),
        }
    }

    /// A client talking to this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let shared = Arc::clone(&self.shared);
        let service = tower::service_fn(move |request| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(http::handle(&shared, request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Creates an object at its path (`.../<resource>/<name>`), as a POST
    /// would; panics if the name is taken.
    pub fn insert(&self, path: &str, mut object: Value) -> Value {
        let key = key_of(path);
        object["metadata"]["name"] = Value::String(key.name.clone());
        let collection = path::Collection {
            prefix: key.prefix,
            resource: key.resource,
            namespace: key.namespace,
        };
        self.shared
            .state()
            .create(&collection, object)
            .unwrap_or_else(|e| panic!("insert {path}: {e}"))
    }

    /// The object at `path`, if any.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.shared.state().get(&key_of(path)).ok()
    }

    /// Every stored object whose path starts with `prefix`.
    pub fn objects(&self, prefix: &str) -> Vec<Value> {
        self.shared
            .state()
            .objects
            .iter()
            .filter(|(k, _)| k.path().starts_with(prefix))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Replaces the `.status` of the object at `path` (as a kubelet or
    /// another controller would), one MODIFIED event. Returns the object.
    pub fn set_status(&self, path: &str, status: Value) -> Option<Value> {
        let key = key_of(path);
        let mut state = self.shared.state();
        let mut object = state.get(&key).ok()?;
        let version = object["metadata"]["resourceVersion"].as_str()?.to_owned();
        object["status"] = status;
        match state.commit(&key, &version, object) {
            store::Commit::Done(object) => Some(object),
            store::Commit::Stale => None,
        }
    }

    /// Applies a JSON merge patch to the object at `path` outside any
    /// request (an "external writer"), one MODIFIED event.
    pub fn merge(&self, path: &str, patch: &Value) -> Option<Value> {
        let key = key_of(path);
        let mut state = self.shared.state();
        let mut object = state.get(&key).ok()?;
        let version = object["metadata"]["resourceVersion"].as_str()?.to_owned();
        json_patch::merge(&mut object, patch);
        object["metadata"]["resourceVersion"] = Value::String(version.clone());
        match state.commit(&key, &version, object) {
            store::Commit::Done(object) => Some(object),
            store::Commit::Stale => None,
        }
    }

    /// Deletes the object at `path` (garbage collection follows).
    pub fn delete(&self, path: &str) -> Result<Value, Value> {
        self.shared.state().delete(&key_of(path), &Value::Null)
    }

    /// The current resourceVersion (the last one handed out).
    pub fn resource_version(&self) -> u64 {
        self.shared.state().version
    }

    /// Every change since the start, oldest first (never compacted).
    pub fn audit(&self) -> Vec<Change> {
        self.shared.state().audit.clone()
    }

    /// Forgets the watch history (etcd compaction): watches resuming from an
    /// older version get 410 Expired and must re-list.
    pub fn compact(&self) {
        self.shared.state().hub.compact();
    }

    /// Ends every open watch (the clients resume from their last version).
    pub fn close_watches(&self) {
        self.shared.state().hub.close_watches();
    }

    /// Holds back the events of `resource` (plural name) from its watches,
    /// as a slow watch delivery would, until [`Self::release_watches`]: the
    /// store and every read move on meanwhile.
    pub fn hold_watches(&self, resource: &str) {
        self.shared.state().hub.hold(resource);
    }

    /// Sends the watches of `resource` what [`Self::hold_watches`] held
    /// back, in order, and ends the hold.
    pub fn release_watches(&self, resource: &str) {
        self.shared.state().hub.release(resource);
    }

    /// The requests answered so far.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.log.lock().expect("log").clone()
    }

    fn add(&self, n: Option<usize>, predicate: Predicate, action: Action) {
        self.shared
            .faults
            .lock()
            .expect("faults")
            .add(predicate, n, action);
    }

    /// The next `n` requests matching `predicate` fail with `code`, `reason`
    /// and `message` (a Status body), without touching the store.
    pub fn fail_next(
        &self,
        n: usize,
        predicate: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static,
        code: u16,
        reason: &str,
        message: &str,
    ) {
        let status = http::status(code, reason, message);
        self.add(Some(n), Arc::new(predicate), Action::Fail(status));
    }

    /// The next `n` requests matching `predicate` wait `delay` first.
    pub fn delay_next(
        &self,
        n: usize,
        predicate: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static,
        delay: Duration,
    ) {
        self.add(Some(n), Arc::new(predicate), Action::Delay(delay));
    }

    /// The next `n` requests matching `predicate` run `hook` at `moment`,
    /// and wait for it.
    pub fn hook<F, Fut>(
        &self,
        moment: Moment,
        n: usize,
        predicate: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static,
        hook: F,
    ) where
        F: Fn(RequestInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let hook: Hook = Arc::new(move |r| Box::pin(hook(r)));
        let action = match moment {
            Moment::OnArrival => Action::OnArrival(hook),
            Moment::BetweenReadAndWrite => Action::BetweenReadAndWrite(hook),
        };
        self.add(Some(n), Arc::new(predicate), action);
    }

    /// Every request matching `predicate` waits a random delay in
    /// `[0, max]`, drawn from an RNG seeded with `seed`.
    pub fn random_delays(
        &self,
        seed: u64,
        max: Duration,
        predicate: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static,
    ) {
        self.shared
            .faults
            .lock()
            .expect("faults")
            .jitter(seed, max, Arc::new(predicate));
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().expect("faults").clear();
    }
}
