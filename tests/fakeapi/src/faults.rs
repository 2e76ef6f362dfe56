//! Fault hooks for tests: delay or fail the next N requests matching a
//! predicate, run code when a request arrives or between the read and the
//! write of a write request (to force an interleaving), and seeded random
//! delays (the same seed gives the same sequence of delays).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;

use crate::path::ResourcePath;

/// What a fault predicate or hook sees of a request.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    /// `GET`, `POST`, ...
    pub method: String,
    /// URL path.
    pub path: String,
    /// URL query (may be empty).
    pub query: String,
    /// The JSON body (`Null` when there is none).
    pub body: Value,
    /// The parsed resource path, when it is one.
    pub resource: Option<ResourcePath>,
}

impl RequestInfo {
    /// Whether this is `method` on `resource` (plural name), any name.
    pub fn is(&self, method: &str, resource: &str) -> bool {
        self.method == method
            && self
                .resource
                .as_ref()
                .is_some_and(|r| r.collection.resource == resource)
    }

    /// The object name in the path, if any.
    pub fn name(&self) -> Option<&str> {
        self.resource.as_ref()?.name.as_deref()
    }

    /// Whether this is a watch request.
    pub fn is_watch(&self) -> bool {
        self.query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
    }
}

/// Selects requests.
pub type Predicate = Arc<dyn Fn(&RequestInfo) -> bool + Send + Sync>;
/// Code run at a point of a request; the request waits for it.
pub type Hook = Arc<dyn Fn(RequestInfo) -> BoxFuture<'static, ()> + Send + Sync>;

/// Where a fault acts.
#[derive(Clone)]
pub(crate) enum Action {
    Delay(Duration),
    Fail(Value),
    OnArrival(Hook),
    BetweenReadAndWrite(Hook),
}

pub(crate) struct Rule {
    predicate: Predicate,
    /// Requests left to act on (`None`: every one).
    remaining: Option<usize>,
    action: Action,
}

struct Jitter {
    rng: StdRng,
    max: Duration,
    predicate: Predicate,
}

/// The installed faults.
#[derive(Default)]
pub(crate) struct Faults {
    rules: Vec<Rule>,
    jitter: Option<Jitter>,
}

impl Faults {
    pub(crate) fn add(&mut self, predicate: Predicate, remaining: Option<usize>, action: Action) {
        self.rules.push(Rule {
            predicate,
            remaining,
            action,
        });
    }

    pub(crate) fn jitter(&mut self, seed: u64, max: Duration, predicate: Predicate) {
        self.jitter = Some(Jitter {
            rng: StdRng::seed_from_u64(seed),
            max,
            predicate,
        });
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
        self.jitter = None;
    }

    /// The actions for this request, consuming one use of each rule.
    pub(crate) fn take(&mut self, request: &RequestInfo) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(jitter) = &mut self.jitter
            && (jitter.predicate)(request)
        {
            let micros = u64::try_from(jitter.max.as_micros()).unwrap_or(u64::MAX);
            actions.push(Action::Delay(Duration::from_micros(
                jitter.rng.random_range(0..=micros),
            )));
        }
        for rule in &mut self.rules {
            if rule.remaining != Some(0) && (rule.predicate)(request) {
                if let Some(n) = &mut rule.remaining {
                    *n -= 1;
                }
                actions.push(rule.action.clone());
            }
        }
        self.rules.retain(|r| r.remaining != Some(0));
        actions
    }
}

/// Runs the arrival actions in order: delays, hooks; returns the failure to
/// answer with, if any, and the hooks to run between read and write.
pub(crate) async fn on_arrival(
    actions: Vec<Action>,
    request: &RequestInfo,
) -> (Option<Value>, Vec<Hook>) {
    let mut later = Vec::new();
    for action in actions {
        match action {
            Action::Delay(delay) => tokio::time::sleep(delay).await,
            Action::OnArrival(hook) => hook(request.clone()).await,
            Action::Fail(status) => return (Some(status), later),
            Action::BetweenReadAndWrite(hook) => later.push(hook),
        }
    }
    (None, later)
}
