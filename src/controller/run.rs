//! Wiring: the three kube-runtime controllers on one shared [`Context`].

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use tokio::sync::watch;
use tracing::warn;

use super::{
    Context, ERROR_REQUEUE, Error, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Triggers, claim, sandbox,
    warmpool,
};
use crate::api::{Sandbox, SandboxClaim, SandboxWarmPool};

fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_obj, error, ctx| {
        warn!(controller, %error, "reconcile failed; retrying");
        ctx.metrics
            .reconcile_errors
            .with_label_values(&[controller, error.metric_label()])
            .inc();
        Action::requeue(ERROR_REQUEUE)
    }
}

/// Runs the sandbox, claim and warm-pool controllers until `shutdown` turns true.
pub async fn run_controllers(
    ctx: Arc<Context>,
    triggers: Triggers,
    shutdown: watch::Receiver<bool>,
) {
    let client = ctx.client.clone();
    let config = controller::Config::default().concurrency(ctx.config.concurrency);
    let managed =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let sandboxes = Controller::new(
        ctx.config.api::<Sandbox>(&client),
        watcher::Config::default(),
    )
    .owns(ctx.config.api::<Service>(&client), managed)
    .reconcile_on(triggers.sandboxes)
    .with_config(config.clone())
    .graceful_shutdown_on(stop(shutdown.clone()))
    .run(
        sandbox::reconcile,
        error_policy(sandbox::CONTROLLER),
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));

    let claims = Controller::new(
        ctx.config.api::<SandboxClaim>(&client),
        watcher::Config::default(),
    )
    .reconcile_on(triggers.claims)
    .with_config(config.clone())
    .graceful_shutdown_on(stop(shutdown.clone()))
    .run(
        claim::reconcile,
        error_policy(claim::CONTROLLER),
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));

    let pools = Controller::new(
        ctx.config.api::<SandboxWarmPool>(&client),
        watcher::Config::default(),
    )
    .reconcile_on(triggers.pools)
    .with_config(config)
    .graceful_shutdown_on(stop(shutdown.clone()))
    .run(
        warmpool::reconcile,
        error_policy(warmpool::CONTROLLER),
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));

    futures::join!(sandboxes, claims, pools);
}
