//! `claim create` / `claim delete` against the API server (the I/O shell
//! around [`super::facts`]).
//!
//! Flow of a create with `--wait`: one POST; ONE watch on that claim alone
//! (field selector `metadata.name`) started from the resourceVersion the
//! create returned, so nothing between the two calls is missed; every event
//! goes through [`evaluate`]; the whole wait sits under one deadline. A
//! watch the server ends is resumed from the last resourceVersion seen; a
//! `410 Gone` is answered by one GET and a new watch from there.
//!
//! Guarantees: a claim that fails or times out under `--wait` is deleted
//! again unless `--keep-on-failure`; every failure names the claim and the
//! reason and message of its `Ready` condition (or the API server's answer).

use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};

use super::facts::{ClaimFacts, Outcome, ReadyCondition, evaluate};
use crate::api::{SandboxClaim, SandboxClaimSpec, SandboxTemplateRef};

/// Field manager of the command line's writes.
pub const FIELD_MANAGER: &str = "sandbox-operator-cli";

/// Why a claim did not get Ready. Exit code 1 for the claim's own failures,
/// 2 for requests the API server refused or could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The API server refused the create (admission, RBAC, schema, no such namespace).
    #[error("SandboxClaim create in namespace {namespace} rejected ({}): {message}",
        format!("{code} {reason}").trim_end())]
    Rejected {
        /// Namespace of the create.
        namespace: String,
        /// HTTP status.
        code: u16,
        /// The Status reason.
        reason: String,
        /// The API server's message (a webhook denial names the field).
        message: String,
    },
    /// The operator reported a reason that ends the wait.
    #[error("SandboxClaim {namespace}/{name} failed: {condition}")]
    Failed {
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        name: String,
        /// Its `Ready` condition.
        condition: ReadyCondition,
    },
    /// Someone deleted the claim while we waited.
    #[error("SandboxClaim {namespace}/{name} was deleted while waiting for it")]
    Deleted {
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        name: String,
    },
    /// Not Ready in time.
    #[error("SandboxClaim {namespace}/{name} not Ready after {}s{}: {}",
        timeout.as_secs_f64(), while_cold(launch_type.as_deref()), last_state(condition.as_deref()))]
    Timeout {
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        name: String,
        /// The deadline that passed.
        timeout: Duration,
        /// The last `Ready` condition seen.
        condition: Option<Box<ReadyCondition>>,
        /// The last launch type seen.
        launch_type: Option<String>,
    },
    /// `claim delete --wait`: still there after the timeout (finalizers?).
    #[error("SandboxClaim {namespace}/{name} still exists after {}s", timeout.as_secs_f64())]
    StillThere {
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        name: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// Any other API failure.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

impl ClaimError {
    /// The documented exit code: 1 when the claim failed or timed out, 2 when
    /// the API server refused or failed the request.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClaimError::Failed { .. }
            | ClaimError::Deleted { .. }
            | ClaimError::Timeout { .. }
            | ClaimError::StillThere { .. } => 1,
            ClaimError::Rejected { .. } | ClaimError::Api { .. } => 2,
        }
    }
}

fn while_cold(launch_type: Option<&str>) -> &'static str {
    if launch_type == Some("cold") {
        " while starting cold"
    } else {
        ""
    }
}

fn last_state(condition: Option<&ReadyCondition>) -> String {
    condition.map_or_else(
        || "no status yet (is the operator running for this namespace?)".into(),
        |c| format!("last condition {c}"),
    )
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ClaimError {
    let what = what.into();
    move |source| ClaimError::Api { what, source }
}

/// What to create.
#[derive(Clone, Debug)]
pub struct CreateRequest {
    /// SandboxTemplate name.
    pub template: String,
    /// Claim name; the API server picks `<template>-xxxxx` when `None`.
    pub name: Option<String>,
    /// `spec.warmpool`: `default`, `none` or a pool name.
    pub warm_pool: Option<String>,
}

/// The claim object for a request.
pub fn claim_object(request: &CreateRequest) -> SandboxClaim {
    let mut claim = SandboxClaim::new(
        request.name.as_deref().unwrap_or_default(),
        SandboxClaimSpec {
            sandbox_template_ref: SandboxTemplateRef {
                name: request.template.clone(),
            },
            lifecycle: None,
            warm_pool: request.warm_pool.clone(),
        },
    );
    if request.name.is_none() {
        claim.metadata.name = None;
        claim.metadata.generate_name = Some(format!("{}-", request.template));
    }
    claim
}

/// POSTs the claim; a 4xx answer is [`ClaimError::Rejected`].
pub async fn create(
    api: &Api<SandboxClaim>,
    namespace: &str,
    request: &CreateRequest,
) -> Result<SandboxClaim, ClaimError> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&params, &claim_object(request)).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => {
            Err(ClaimError::Rejected {
                namespace: namespace.into(),
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            })
        }
        Err(e) => Err(api_error(format!(
            "creating a SandboxClaim in namespace {namespace}"
        ))(e)),
    }
}

/// Watches `claim` (as the create returned it) until Ready, failed, deleted
/// or `timeout` after `started`.
pub async fn wait_ready(
    api: &Api<SandboxClaim>,
    claim: &SandboxClaim,
    started: Instant,
    timeout: Duration,
) -> Result<ClaimFacts, ClaimError> {
    let name = claim.name_any();
    let namespace = claim.namespace().unwrap_or_default();
    let mut last: Option<(Option<ReadyCondition>, Option<String>)> = None;
    let watching = watch_until_done(api, claim, started, &mut last);
    match tokio::time::timeout(timeout.saturating_sub(started.elapsed()), watching).await {
        Ok(result) => result,
        Err(_) => {
            let (condition, launch_type) = last.unwrap_or_default();
            Err(ClaimError::Timeout {
                namespace,
                name,
                timeout,
                condition: condition.map(Box::new),
                launch_type,
            })
        }
    }
}

async fn watch_until_done(
    api: &Api<SandboxClaim>,
    claim: &SandboxClaim,
    started: Instant,
    last: &mut Option<(Option<ReadyCondition>, Option<String>)>,
) -> Result<ClaimFacts, ClaimError> {
    let name = claim.name_any();
    let namespace = claim.namespace().unwrap_or_default();
    let what = || format!("watching SandboxClaim {namespace}/{name}");
    let mut version = claim.resource_version().unwrap_or_default();
    loop {
        let mut events = watch_one(api, &name, &version)
            .await
            .map_err(api_error(what()))?;
        while let Some(event) = events.try_next().await.map_err(api_error(what()))? {
            let observed = match event {
                WatchEvent::Added(c) | WatchEvent::Modified(c) => c,
                WatchEvent::Deleted(_) => return Err(ClaimError::Deleted { namespace, name }),
                WatchEvent::Bookmark(b) => {
                    version = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(status) if status.code == 410 => {
                    // Out of the watch window: read once, watch on from there.
                    match api.get_opt(&name).await.map_err(api_error(what()))? {
                        Some(c) => c,
                        None => return Err(ClaimError::Deleted { namespace, name }),
                    }
                }
                WatchEvent::Error(status) => {
                    return Err(api_error(what())(kube::Error::Api(status)));
                }
            };
            version = observed.resource_version().unwrap_or_default();
            match evaluate(&observed, Some(started.elapsed().as_secs_f64())) {
                Outcome::Ready(facts) => return Ok(*facts),
                Outcome::Failed(condition) => {
                    return Err(ClaimError::Failed {
                        namespace,
                        name,
                        condition,
                    });
                }
                Outcome::Waiting {
                    condition,
                    launch_type,
                } => *last = Some((condition, launch_type)),
            }
        }
    }
}

/// A watch on the one claim `name` from `version`. The API server ends it
/// after 290 s; callers watch again from the last version they saw.
async fn watch_one(
    api: &Api<SandboxClaim>,
    name: &str,
    version: &str,
) -> kube::Result<BoxStream<'static, kube::Result<WatchEvent<SandboxClaim>>>> {
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(290);
    Ok(api.watch(&params, version).await?.boxed())
}

/// Deletes the claim (its Sandbox, Pod, Service and NetworkPolicy follow by
/// garbage collection). `Ok(false)` when there was no such claim.
pub async fn delete(api: &Api<SandboxClaim>, name: &str) -> Result<bool, ClaimError> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(api_error(format!("deleting SandboxClaim {name}"))(e)),
    }
}

/// Waits until the claim is gone from the API server: one GET, then one
/// watch from its resourceVersion until the `Deleted` event.
pub async fn wait_deleted(
    api: &Api<SandboxClaim>,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), ClaimError> {
    let what = || format!("waiting for SandboxClaim {namespace}/{name} to go");
    let gone = async {
        let Some(claim) = api.get_opt(name).await.map_err(api_error(what()))? else {
            return Ok(());
        };
        let mut version = claim.resource_version().unwrap_or_default();
        loop {
            let mut events = watch_one(api, name, &version)
                .await
                .map_err(api_error(what()))?;
            while let Some(event) = events.try_next().await.map_err(api_error(what()))? {
                match event {
                    WatchEvent::Deleted(_) => return Ok(()),
                    WatchEvent::Added(c) | WatchEvent::Modified(c) => {
                        version = c.resource_version().unwrap_or_default()
                    }
                    WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                    WatchEvent::Error(status) if status.code == 410 => {
                        match api.get_opt(name).await.map_err(api_error(what()))? {
                            Some(c) => version = c.resource_version().unwrap_or_default(),
                            None => return Ok(()),
                        }
                    }
                    WatchEvent::Error(status) => {
                        return Err(api_error(what())(kube::Error::Api(status)));
                    }
                }
            }
        }
    };
    tokio::time::timeout(timeout, gone)
        .await
        .unwrap_or_else(|_| {
            Err(ClaimError::StillThere {
                namespace: namespace.into(),
                name: name.into(),
                timeout,
            })
        })
}

/// A client from `KUBECONFIG` / `~/.kube/config` / the in-cluster account.
pub async fn client() -> Result<Client, ClaimError> {
    Client::try_default().await.map_err(api_error(
        "building a Kubernetes client (KUBECONFIG or in-cluster config)",
    ))
}
