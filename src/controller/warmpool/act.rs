//! The writes of a reconcile: deletes conditioned on what they were chosen
//! from, and creates of new idle Pods.
//!
//! Guarantees: a delete carries the uid AND resourceVersion of the Pod as it
//! was chosen, so a Pod a claim stole meanwhile is never deleted (the 409 is
//! benign); every create and delete is recorded in [`super::Expectations`]
//! before the cache shows it.
//!
//! A create's answer (the whole Pod, managedFields included) is decoded as
//! a [`LeanPod`] and only its name is kept: filling a large pool used to
//! hold every created Pod in full until the batch ended, and the garbage
//! interleaved with the cache's long-lived Pods kept the heap fragmented.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use tracing::{info, warn};

use super::super::{Context, Result, is_conflict, is_not_found, kube_err};
use super::plan::Victim;
use super::pod::desired_pod;
use crate::api::{FIELD_MANAGER, SandboxTemplate, SandboxWarmPool};
use crate::controller::lean_pod::LeanPod;

/// Test-only fault injection: `SANDBOX_TEST_POOL_DELETE_DELAY_MS` widens
/// the window between choosing a victim and deleting it, so tests can show
/// that a steal in between is never undone by the delete. Unset in
/// production.
fn delete_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("SANDBOX_TEST_POOL_DELETE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    })
}

/// Deletes the victims, each conditioned on the uid and resourceVersion it
/// was chosen from: a Pod that changed since (a claim stole it, its status
/// moved) answers 409 and is left alone; the next reconcile decides again
/// from the fresh copy. Returns how many deletes went through.
async fn delete_victims(
    ctx: &Context,
    key: &str,
    namespace: &str,
    victims: &[Victim],
) -> Result<usize> {
    if victims.is_empty() {
        return Ok(0);
    }
    if let Some(delay) = delete_delay() {
        tokio::time::sleep(delay).await;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut deleted = 0;
    for victim in victims {
        ctx.expectations.deleted(key, &victim.name);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(victim.uid.clone()),
                resource_version: Some(victim.resource_version.clone()),
            }),
            ..Default::default()
        };
        match pods.delete(&victim.name, &params).await {
            Ok(_) => deleted += 1,
            Err(e) if is_not_found(&e) => deleted += 1,
            Err(e) if is_conflict(&e) => {
                info!(pod = %victim.name, "Pod changed since it was chosen for deletion; kept");
                ctx.expectations.delete_refused(key, &victim.name);
            }
            Err(e) => return Err(kube_err(format!("delete pod {}", victim.name))(e)),
        }
    }
    Ok(deleted)
}

/// The idle Pods a pool reconcile creates.
pub(super) struct NewPods<'a> {
    /// The pool's template (labels and annotations of the Pods).
    pub template: &'a SandboxTemplate,
    /// The template's pod spec as the current policy admitted it.
    pub spec: &'a PodSpec,
    /// The template hash the Pods are labelled with.
    pub hash: &'a str,
    /// How many.
    pub count: usize,
    /// How many of them replace outdated Pods (the first created are
    /// recorded as such, see [`super::plan::Rollout`]).
    pub replacements: usize,
}

/// What [`act`] did.
pub(super) struct Acted {
    /// Pods deleted (none counted when the delete failed: what it did is
    /// not known).
    pub deleted: usize,
    /// Pods created.
    pub created: usize,
    /// The first failure, for the caller to return after the pool's
    /// record: the gauges, the status and the refill times go on following
    /// the pool while its creates fail (a quota reached, say); returned
    /// at once, as before (found by review), they stayed at their last good
    /// values and the pool alerts never fired.
    pub error: Option<crate::controller::Error>,
}

/// Deletes the pool's `victims`, then creates `new` (none after a failed
/// delete).
pub(super) async fn act(
    ctx: &Context,
    pool: &SandboxWarmPool,
    key: &str,
    victims: &[Victim],
    new: Option<NewPods<'_>>,
) -> Acted {
    let namespace = pool.namespace().unwrap_or_default();
    let (deleted, mut error) = match delete_victims(ctx, key, &namespace, victims).await {
        Ok(deleted) => (deleted, None),
        Err(e) => (0, Some(e)),
    };
    let mut created = 0;
    if error.is_none()
        && let Some(new) = new
    {
        error = create_pods(ctx, pool, key, new, &mut created).await.err();
    }
    Acted {
        deleted,
        created,
        error,
    }
}

/// Creates `new.count` idle Pods (see the waves below), adding each one
/// created to `created`, so a caller that gets an error still knows how
/// many were made.
async fn create_pods(
    ctx: &Context,
    pool: &SandboxWarmPool,
    key: &str,
    new: NewPods<'_>,
    created: &mut usize,
) -> Result<()> {
    let NewPods {
        template,
        spec,
        hash,
        count,
        replacements,
    } = new;
    if count == 0 {
        return Ok(());
    }
    let namespace = pool.namespace().unwrap_or_default();
    let started = Instant::now();
    // Claims being served in this namespace come first (see
    // `controller::critical`).
    if ctx.in_flight.serves_in(&namespace) {
        let waited = ctx
            .in_flight
            .yield_to_namespace(&namespace, ctx.config.defer_off_path)
            .await;
        ctx.metrics
            .off_path_wait_seconds
            .with_label_values(&["refill"])
            .observe(waited.as_secs_f64());
    }
    let pod = desired_pod(pool, template, spec, hash, jiff::Timestamp::now())?;
    // Encoded once for the whole batch.
    let body = serde_json::to_vec(&pod)?;
    let url = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .resource_url()
        .to_owned();
    let name = pool.name_any();
    let created_seconds = ctx
        .metrics
        .replenish_seconds
        .with_label_values(&[&namespace, &name, "created"]);
    let (sent, error) = in_waves(ctx, &url, &body, count, |pod| {
        *created += 1;
        ctx.expectations.created(key, pod);
        if *created <= replacements {
            ctx.expectations.replacement_created(key, pod);
        }
        created_seconds.observe(started.elapsed().as_secs_f64());
    })
    .await;
    info!(count, sent, "created warm Pods");
    match error {
        Some(e) => Err(kube_err("create warm pod")(e)),
        None => Ok(()),
    }
}

/// Sends `count` creates of `body` to `url` in waves of 1, 2, 4, ... (at
/// most `pool_create_parallelism` in flight), none after a wave with a
/// failure, calling `created` with each Pod's name as its answer arrives
/// (not when its wave ends: its first watch event then finds it expected
/// and wakes no reconcile, see `triggers::pod_trigger`). Returns how many
/// were sent and the first failure.
///
/// A template the API server refuses for every Pod (a RuntimeClass or a
/// quota it lacks, say) so costs one request per reconcile, not one per
/// missing Pod (up to the pool's 1,000), which spent the operator's share
/// of the API server on one tenant's mistake. A refill of one Pod (the warm
/// path) is one wave of one.
async fn in_waves(
    ctx: &Context,
    url: &str,
    body: &[u8],
    count: usize,
    mut created: impl FnMut(&str),
) -> (usize, Option<kube::Error>) {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut first_error = None;
    let (mut sent, mut wave) = (0, 1);
    while sent < count && first_error.is_none() {
        let this_wave = wave.min(count - sent);
        sent += this_wave;
        wave *= 2;
        let mut creates = futures::stream::iter(0..this_wave)
            .map(|_| create_lean(ctx, url, &params, body))
            .buffer_unordered(ctx.config.pool_create_parallelism.max(1));
        while let Some(result) = creates.next().await {
            match result {
                Ok(name) => created(&name),
                Err(e) => {
                    warn!(error = %e, "creating a warm Pod failed");
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    (sent, first_error)
}

/// One Pod create from an encoded body; the name of the created Pod (the
/// answer is decoded lean, see the module docs). Errors come back as from
/// `Api::create`.
async fn create_lean(
    ctx: &Context,
    url: &str,
    params: &PostParams,
    body: &[u8],
) -> std::result::Result<String, kube::Error> {
    let mut request = kube::core::Request::new(url)
        .create(params, body.to_vec())
        .map_err(kube::Error::BuildRequest)?;
    // The same name in the client's trace spans as `Api::create` gives.
    request.extensions_mut().insert("create");
    let created: LeanPod = ctx.client.request(request).await?;
    Ok(created.name_any())
}
