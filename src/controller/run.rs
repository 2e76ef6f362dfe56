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

/// After an error: counted by class, retried with per-object exponential
/// backoff.
fn error_policy<K: Resource>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, error, ctx| {
        let delay = ctx.backoff.failed(&backoff_key(controller, obj.as_ref()));
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
