//! The controllers' work queue: what runs a reconcile when, in place of
//! kube-runtime's `Controller`.
//!
//! Why our own: kube-runtime passes every wake-up, even one for "now",
//! through a timer queue whose deadlines are whole milliseconds rounded up,
//! then through the runtime's timer, so each watch event reached its
//! reconcile 1-2 ms late (the bench's breakdown showed 1.9 ms at the median
//! between a claim's watch event and its reconcile, with a write round trip
//! of 5 ms). Here a wake-up for now goes straight to the ready queue; only
//! requeues ("look again in 5 s") go through a timer.
//!
//! Guarantees, per object (by [`ObjectRef`]):
//! - at most one reconcile at a time; a wake-up while it runs makes it run
//!   once more after it ends, never twice at once;
//! - a wake-up while it waits in the ready queue is absorbed;
//! - a requeue is set when a reconcile ends (none can be pending then: a
//!   wake-up for now drops it, and the reconcile returns a fresh
//!   [`Action`]); a requeue is capped at [`MAX_REQUEUE`] (the timer queue cannot hold deadlines past
//!   about two years, and a user can set an expiry that far);
//! - the object is read from the cache when its reconcile starts; one the
//!   cache no longer has is not reconciled (its children go by GC);
//! - at most `concurrency` reconciles at once (0: no limit); the rest wait
//!   in wake-up order; each runs as a task of its own (with more than one
//!   runtime thread, reconciles run in parallel), a panic in one is resumed
//!   here, and a runner that is itself aborted aborts its running
//!   reconciles, as under kube-runtime;
//! - on shutdown no reconcile starts and the running ones are awaited.
//!
//! Each reconcile's tracing span is `reconcile{controller, object, reason}`,
//! where the reason ([`Reason`]) says what queued it: a watch event
//! (`woken`), one during its previous run (`rerun`), its own requeue
//! (`requeue`) or the retry after an error (`retry`).
//!
//! The queue reports itself ([`QueueReport`]): how long each reconcile
//! waited between becoming due (its wake-up, its timer, the end of the run
//! it waited behind) and its start, and how many objects wait for a slot
//! and run. A wait above a few milliseconds means every slot was busy.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use prometheus::{Gauge, Histogram};
use tokio::time::Instant;
use tokio_util::time::{DelayQueue, delay_queue};
use tracing::Instrument;

/// The longest requeue the queue sets: later deadlines are cut to this (the
/// reconcile then runs early and asks again). The operator's own requeues
/// are cut much shorter, at the resync period (see `run::with_retry`).
pub const MAX_REQUEUE: Duration = Duration::from_secs(180 * 24 * 3600);

/// What a reconcile asks for next: to be run again after a delay, or only
/// when something wakes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Run again after `after`, unless something wakes it sooner.
    pub const fn requeue(after: Duration) -> Action {
        Action {
            requeue_after: Some(after),
        }
    }

    /// Run again only when something wakes it.
    pub const fn await_change() -> Action {
        Action {
            requeue_after: None,
        }
    }

    /// The delay asked for, if any.
    pub const fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// What queued a reconcile (the first cause wins: later wake-ups while it
/// waits are absorbed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A wake-up for now (a watch event, through the triggers).
    Woken,
    /// A wake-up for now that came while the object's reconcile ran.
    Rerun,
    /// The requeue its previous reconcile asked for.
    Requeue,
    /// The retry after its previous reconcile's error.
    Retry,
}

impl Reason {
    /// The name in the reconcile's span.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Woken => "woken",
            Reason::Rerun => "rerun",
            Reason::Requeue => "requeue",
            Reason::Retry => "retry",
        }
    }
}

/// Where a runner reports its queue (its controller's series of
/// `sandbox_operator_queue_wait_seconds`, `_queue_depth` and
/// `_reconciles_running`).
#[derive(Clone)]
pub struct QueueReport {
    /// Time from due to start, per reconcile.
    pub wait: Histogram,
    /// Objects due and waiting for a slot.
    pub waiting: Gauge,
    /// Reconciles running.
    pub running: Gauge,
}

/// How a runner runs: its controller's name (in spans), how many
/// reconciles at once (0: no limit), where it reports its queue.
pub struct Settings {
    /// The controller's name.
    pub name: &'static str,
    /// Reconciles at once, at most (0: no limit).
    pub concurrency: usize,
    /// Where the queue's figures go.
    pub report: QueueReport,
}

/// The queue's bookkeeping; see the module docs for the rules. Each ready
/// object keeps when it became due.
struct Queue<R> {
    ready: VecDeque<(R, Reason, Instant)>,
    in_ready: HashSet<R>,
    running: HashSet<R>,
    again: HashSet<R>,
    timers: DelayQueue<R>,
    deadlines: HashMap<R, (delay_queue::Key, Instant, Reason)>,
}

impl<R: Clone + Eq + Hash> Queue<R> {
    fn new() -> Queue<R> {
        Queue {
            ready: VecDeque::new(),
            in_ready: HashSet::new(),
            running: HashSet::new(),
            again: HashSet::new(),
            timers: DelayQueue::new(),
            deadlines: HashMap::new(),
        }
    }

    /// A wake-up for now.
    fn wake(&mut self, object: R) {
        self.wake_for(object, Reason::Woken);
    }

    fn wake_for(&mut self, object: R, reason: Reason) {
        if let Some((key, _, _)) = self.deadlines.remove(&object) {
            self.timers.remove(&key);
        }
        if self.running.contains(&object) {
            self.again.insert(object);
        } else if self.in_ready.insert(object.clone()) {
            self.ready.push_back((object, reason, Instant::now()));
        }
    }

    /// A wake-up `after` from now (at most [`MAX_REQUEUE`]), replacing any
    /// set before.
    fn wake_after(&mut self, object: R, after: Duration, reason: Reason) {
        let at = Instant::now() + after.min(MAX_REQUEUE);
        if let Some((key, _, _)) = self.deadlines.remove(&object) {
            self.timers.remove(&key);
        }
        let key = self.timers.insert_at(object.clone(), at);
        self.deadlines.insert(object, (key, at, reason));
    }

    /// The next object to start, what queued it and how long it waited
    /// since it was due, if `limit` allows one more.
    fn next_to_start(&mut self, limit: usize) -> Option<(R, Reason, Duration)> {
        if limit != 0 && self.running.len() >= limit {
            return None;
        }
        let (object, reason, due) = self.ready.pop_front()?;
        self.in_ready.remove(&object);
        self.running.insert(object.clone());
        Some((object, reason, due.elapsed()))
    }

    /// Sets the gauges of `report` to what waits and runs now.
    fn report(&self, report: &QueueReport) {
        report.waiting.set(self.ready.len() as f64);
        report.running.set(self.running.len() as f64);
    }

    /// A reconcile ended with `action`.
    fn finished(&mut self, object: R, action: Action) {
        self.finished_with(object, action, Reason::Requeue);
    }

    /// A reconcile failed; `action` is the retry its error policy gave.
    fn failed(&mut self, object: R, action: Action) {
        self.finished_with(object, action, Reason::Retry);
    }

    fn finished_with(&mut self, object: R, action: Action, timer_reason: Reason) {
        self.running.remove(&object);
        if self.again.remove(&object) {
            self.wake_for(object, Reason::Rerun);
        } else if let Some(after) = action.requeue_after() {
            self.wake_after(object, after, timer_reason);
        }
    }

    /// A timer went off.
    fn expired(&mut self, object: R) {
        let reason = self
            .deadlines
            .remove(&object)
            .map_or(Reason::Requeue, |(_, _, reason)| reason);
        self.wake_for(object, reason);
    }
}

/// A spawned reconcile, aborted if dropped unfinished (when the runner
/// itself is aborted): no reconcile outlives its runner.
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Task<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `reconcile` for the objects of `store` that `wake_ups` name, by
/// the rules of the module docs, until `shutdown` completes; then waits for
/// the reconciles still running. An error becomes the [`Action`] that
/// `on_error` gives for it.
pub async fn run<K, E, Fut>(
    settings: Settings,
    store: Store<K>,
    mut wake_ups: impl Stream<Item = ObjectRef<K>> + Unpin,
    reconcile: impl Fn(Arc<K>) -> Fut,
    on_error: impl Fn(Arc<K>, &E) -> Action,
    shutdown: impl Future<Output = ()>,
) where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + Hash + Default,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: Send + 'static,
{
    let Settings {
        name,
        concurrency,
        report,
    } = settings;
    let mut queue = Queue::new();
    let mut running = FuturesUnordered::new();
    let mut open = true;
    let shutdown = shutdown.fuse();
    futures::pin_mut!(shutdown);
    loop {
        while let Some((object, reason, waited)) = queue.next_to_start(concurrency) {
            let Some(obj) = store.get(&object) else {
                queue.finished(object, Action::await_change());
                continue;
            };
            report.wait.observe(waited.as_secs_f64());
            let span = tracing::info_span!(
                "reconcile",
                controller = name,
                object = %object,
                reason = reason.as_str()
            );
            let work = Task(tokio::spawn(reconcile(Arc::clone(&obj)).instrument(span)));
            running.push(async move { (object, obj, work.await) });
        }
        queue.report(&report);
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some((object, obj, outcome)) = running.next(), if !running.is_empty() => {
                match outcome {
                    Ok(Ok(action)) => queue.finished(object, action),
                    Ok(Err(error)) => queue.failed(object, on_error(obj, &error)),
                    Err(ended) if ended.is_panic() => std::panic::resume_unwind(ended.into_panic()),
                    // Cancelled: only when the runtime itself shuts down.
                    Err(_) => queue.finished(object, Action::await_change()),
                }
            }
            wake_up = wake_ups.next(), if open => match wake_up {
                Some(object) => queue.wake(object),
                None => open = false,
            },
            Some(expired) = queue.timers.next(), if !queue.timers.is_empty() => {
                queue.expired(expired.into_inner());
            }
        }
    }
    // Nothing starts any more: nothing waits, and the gauge of what runs
    // counts the reconciles down as they end.
    report.waiting.set(0.0);
    while let Some((object, _, outcome)) = running.next().await {
        queue.running.remove(&object);
        report.running.set(queue.running.len() as f64);
        if let Err(ended) = outcome
            && ended.is_panic()
        {
            std::panic::resume_unwind(ended.into_panic());
        }
    }
}

#[cfg(test)]
mod tests;
