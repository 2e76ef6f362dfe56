//! Wiring: the three controllers (each a [`runner`] over a shared cache) on
//! one shared [`Context`].

use std::sync::Arc;

use tokio::sync::watch;
use tracing::warn;

use kube::Resource;

use super::{Action, Context, Error, Triggers, claim, retry, runner, sandbox, warmpool};

/// Key of an object in the backoff table.
fn backoff_key<K: Resource>(controller: &str, obj: &K) -> String {
    format!(
        "{controller}/{}",
        obj.meta().uid.as_deref().unwrap_or_default()
    )
}

/// An object's shutdown time, when it has one: a retry never waits past
/// it (found by review: a claim whose reconcile kept failing, a refused
/// policy say, was expired up to the 2-minute backoff late, its Pod
/// running on).
trait Deadline {
    fn deadline(&self) -> Option<jiff::Timestamp>;
}

impl Deadline for crate::api::SandboxClaim {
    fn deadline(&self) -> Option<jiff::Timestamp> {
        Some(self.spec.lifecycle.as_ref()?.shutdown_time.as_ref()?.0)
    }
}

impl Deadline for crate::api::Sandbox {
    fn deadline(&self) -> Option<jiff::Timestamp> {
        Some(self.spec.shutdown_time.as_ref()?.0)
    }
}

impl Deadline for crate::api::SandboxWarmPool {
    fn deadline(&self) -> Option<jiff::Timestamp> {
        None
    }
}

/// `delay`, or just after `deadline` when that comes first (and is still
/// ahead: past it, the backoff stands, so a failing expiry does not spin).
/// Pure.
fn within_deadline(
    delay: std::time::Duration,
    deadline: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> std::time::Duration {
    deadline
        .and_then(|d| std::time::Duration::try_from(d.duration_since(now)).ok())
        .filter(|left| !left.is_zero())
        .map_or(delay, |left| {
            delay.min(left + std::time::Duration::from_millis(50))
        })
}

/// After an error: counted by class, retried with per-object exponential
/// backoff, never past the object's shutdown time.
fn error_policy<K: Resource + Deadline>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, error, ctx| {
        let delay = ctx.backoff.failed(&backoff_key(controller, obj.as_ref()));
        let delay = within_deadline(delay, obj.deadline(), jiff::Timestamp::now());
        warn!(controller, %error, class = error.class(), retry_in_ms = delay.as_millis() as u64, "reconcile failed; retrying");
        ctx.metrics
            .reconcile_errors
            .with_label_values(&[controller, error.class()])
            .inc();
        Action::requeue(delay)
    }
}

/// Says once per namespace and process that objects there are left alone:
/// a claim in the operator's own namespace (`default` when run outside a
/// cluster without `--operator-namespace`) otherwise waits with no status
/// and no word why.
fn warn_once_excluded(ctx: &Context, namespace: &str) {
    let mut seen = ctx
        .excluded_seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.insert(namespace.to_string()) {
        warn!(
            namespace,
            "objects in this namespace are left alone: it is kube-system or the operator's own (--operator-namespace / POD_NAMESPACE), which admission does not check; create sandboxes in another namespace, or run with --namespace to watch only this one"
        );
    }
}

/// Wraps a reconcile: times it (count and duration per controller), a
/// success clears the object's backoff, and "wait for the next event", or a
/// requeue later than the resync period (a distant expiry), becomes the
/// jittered periodic resync (the safety net).
fn with_retry<K, F, Fut>(
    controller: &'static str,
    reconcile: F,
) -> impl Fn(Arc<K>, Arc<Context>) -> futures::future::BoxFuture<'static, Result<Action, Error>>
where
    K: Resource + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |obj, ctx| {
        let reconcile = reconcile.clone();
        Box::pin(async move {
            let namespace = obj.meta().namespace.as_deref().unwrap_or_default();
            if ctx
                .config
                .excluded_namespaces
                .iter()
                .any(|n| n == namespace)
            {
                // Admission does not check this namespace, so nothing runs here.
                warn_once_excluded(&ctx, namespace);
                return Ok(Action::await_change());
            }
            let key = backoff_key(controller, obj.as_ref());
            let _in_flight = ctx.health.reconcile_started(controller);
            let _timer = ctx.metrics.reconcile_timer(controller);
            let action = reconcile(obj, ctx.clone()).await?;
            ctx.backoff.succeeded(&key);
            Ok(retry::with_resync(
                action,
                action.requeue_after(),
                ctx.config.resync,
            ))
        })
    }
}

/// Runs the sandbox, claim and warm-pool controllers until `shutdown` turns
/// true (then waits for the reconciles still running).
pub async fn run_controllers(
    ctx: Arc<Context>,
    triggers: Triggers,
    shutdown: watch::Receiver<bool>,
) {
    let concurrency = usize::from(ctx.config.concurrency);
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // Every controller runs the same way (see `runner`): its kind read from
    // the shared cache, woken by its triggers, its reconcile with retries,
    // its error policy, the shutdown signal.
    macro_rules! drive {
        ($module:ident, $cache:ident, $wake_ups:expr) => {{
            let reconcile = with_retry($module::CONTROLLER, $module::reconcile);
            let on_error = error_policy($module::CONTROLLER);
            let (ctx_run, ctx_err) = (ctx.clone(), ctx.clone());
            let settings = runner::Settings {
                name: $module::CONTROLLER,
                concurrency,
                report: ctx.metrics.queue_report($module::CONTROLLER),
            };
            runner::run(
                settings,
                ctx.caches.$cache.clone(),
                $wake_ups,
                move |obj| reconcile(obj, ctx_run.clone()),
                move |obj, error: &Error| on_error(obj, error, ctx_err.clone()),
                stop(shutdown.clone()),
            )
        }};
    }
    // The three controllers read the shared caches and are woken by their
    // triggers (see `triggers`: a claim by its own events, its Sandbox's,
    // its Services', the named Pod's and, when deleted, its template's; a
    // Sandbox by its own, its Services', its Pods' and the named Pod's; a
    // pool by its own, its Pods' and its template's): no second watch of any kind, so no
    // object is decoded twice, every watch event is counted in one place
    // (`watch_events_total`), and a pool this controller fills is always one
    // the claim path sees.
    let sandboxes = drive!(sandbox, sandboxes, triggers.sandboxes);
    let claims = drive!(claim, claims, triggers.claims);
    let pools = drive!(warmpool, pools, triggers.pools);

    futures::join!(sandboxes, claims, pools);
}

#[cfg(test)]
mod deadline_tests {
    use super::within_deadline;
    use std::time::Duration;

    #[test]
    fn a_retry_never_waits_past_the_shutdown_time() {
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        let backoff = Duration::from_secs(120);
        let soon = jiff::Timestamp::from_second(1_003).unwrap();
        assert_eq!(
            within_deadline(backoff, Some(soon), now),
            Duration::from_millis(3_050)
        );
        assert_eq!(within_deadline(backoff, None, now), backoff);
        // Past it: the backoff stands (a failing expiry does not spin).
        let past = jiff::Timestamp::from_second(900).unwrap();
        assert_eq!(within_deadline(backoff, Some(past), now), backoff);
        let short = Duration::from_secs(1);
        assert_eq!(within_deadline(short, Some(soon), now), short);
    }
}
