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
use kube::api::{
    Api, DeleteParams, PostParams, Preconditions, PropagationPolicy, WatchEvent, WatchParams,
};
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
    /// The create got no answer within the timeout: the claim may exist.
    #[error("SandboxClaim {namespace}/{name}: no answer to its create within {}s", timeout.as_secs_f64())]
    NoAnswer {
        /// Namespace of the claim.
        namespace: String,
        /// Name of the claim.
        name: String,
        /// The deadline that passed.
        timeout: Duration,
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
            ClaimError::Rejected { .. } | ClaimError::Api { .. } | ClaimError::NoAnswer { .. } => 2,
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
    /// Claim name; `None` picks one ([`name_prefix`] plus five random
    /// characters) in the client, so a claim whose create's answer is lost
    /// can still be found and deleted.
    pub name: Option<String>,
    /// `spec.warmpool`: `default`, `none` or a pool name.
    pub warm_pool: Option<String>,
}

/// The start of a claim name made from `template`: a claim's name is its
/// Sandbox's and Service's, so it must be a DNS-1035 label, while a
/// template's name may hold dots or start with a digit. Other characters
/// become '-', a prefix not starting with a letter gets `c-`, and it is cut
/// to leave room for the five random characters (`py3.12` gives `py3-12-`,
/// `3d-render` gives `c-3d-render-`; the Python client makes the same).
/// Pure.
pub fn name_prefix(template: &str) -> String {
    let mapped: String = template
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let prefix = if mapped.starts_with(|c: char| c.is_ascii_lowercase()) {
        mapped
    } else {
        format!("c-{mapped}")
    };
    let cut: String = prefix.chars().take(57).collect();
    format!("{}-", cut.trim_end_matches('-'))
}

/// Five random characters of the alphabet the API server uses for
/// `generateName` (no vowels, so no words).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rand::Rng::random_range(&mut rng, 0..ALPHABET.len())]))
        .collect()
}

/// How often a picked name that is taken (409) is picked again.
const NAME_TRIES: usize = 3;

/// The annotation that marks a claim as made by one create request (a
/// random token; the Python client writes the same): a claim found under
/// the name after a create with no clear answer is this command's only
/// when it carries the token.
pub const REQUEST_ID_ANNOTATION: &str = "sandbox-client/request-id";

/// A claim create that was sent and may have been written.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    /// The claim's name.
    pub name: String,
    /// The token of [`REQUEST_ID_ANNOTATION`] it carries.
    pub token: String,
}

/// The claim object for a request, named `name`, carrying `token`.
pub fn claim_object(request: &CreateRequest, name: &str, token: &str) -> SandboxClaim {
    let mut claim = SandboxClaim::new(
        name,
        SandboxClaimSpec {
            sandbox_template_ref: SandboxTemplateRef {
                name: request.template.clone(),
            },
            lifecycle: None,
            warm_pool: request.warm_pool.clone(),
        },
    );
    claim
        .annotations_mut()
        .insert(REQUEST_ID_ANNOTATION.into(), token.into());
    claim
}

/// Whether `claim` was made by the request of `token`.
pub fn made_by(claim: &SandboxClaim, token: &str) -> bool {
    claim
        .annotations()
        .get(REQUEST_ID_ANNOTATION)
        .map(String::as_str)
        == Some(token)
}

/// A random token for [`REQUEST_ID_ANNOTATION`].
fn request_token() -> String {
    (0..4).map(|_| random_suffix()).collect()
}

/// Whether the API server's answer `error` to a create says for sure that
/// nothing was made: a 4xx other than 408 (the request timed out on the
/// server, which may still write it). A 5xx (a 504 may come after the
/// write), a lost connection or no answer leaves it open.
fn refused(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 408)
}

/// POSTs the claim; a 4xx answer is [`ClaimError::Rejected`]. Without a
/// requested name it picks one, and picks again (at most [`NAME_TRIES`]
/// times) when it is taken. `sent` holds the claim that may exist: set
/// before each POST, cleared when the answer says nothing was made, so a
/// caller whose create fails or is interrupted can find it (see
/// [`clean_up`]).
pub async fn create(
    api: &Api<SandboxClaim>,
    namespace: &str,
    request: &CreateRequest,
    sent: &std::cell::RefCell<Option<Sent>>,
) -> Result<SandboxClaim, ClaimError> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let prefix = name_prefix(&request.template);
    let mut tries = 0;
    loop {
        tries += 1;
        let name = match &request.name {
            Some(name) => name.clone(),
            None => format!("{prefix}{}", random_suffix()),
        };
        let token = request_token();
        *sent.borrow_mut() = Some(Sent {
            name: name.clone(),
            token: token.clone(),
        });
        let error = match api
            .create(&params, &claim_object(request, &name, &token))
            .await
        {
            Ok(created) => return Ok(created),
            Err(error) => error,
        };
        if !refused(&error) {
            return Err(api_error(format!(
                "creating SandboxClaim {namespace}/{name}"
            ))(error));
        }
        *sent.borrow_mut() = None;
        let kube::Error::Api(status) = error else {
            unreachable!("refused() is true only for an API answer");
        };
        if status.code == 409 && request.name.is_none() && tries < NAME_TRIES {
            continue;
        }
        return Err(ClaimError::Rejected {
            namespace: namespace.into(),
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        });
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
/// garbage collection), only while it is the object of `uid` when given (a
/// claim made since under the same name is someone else's). `Ok(false)`
/// when there was no such claim, or only another one under its name.
pub async fn delete(
    api: &Api<SandboxClaim>,
    namespace: &str,
    name: &str,
    uid: Option<String>,
) -> Result<bool, ClaimError> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
        Err(e) => Err(api_error(format!(
            "deleting SandboxClaim {namespace}/{name}"
        ))(e)),
    }
}

/// What [`clean_up`] found.
#[derive(Debug, PartialEq)]
pub enum Cleaned {
    /// The claim was this command's, and is deleted.
    Deleted,
    /// No claim of this command's exists (never written, or gone).
    Gone,
    /// A claim of that name exists but another request made it: left alone.
    NotOurs,
}

/// How long [`clean_up`] looks for a claim whose create got no answer: the
/// API server may still write it after the command gave up on it.
const LATE_CREATE_WAIT: Duration = Duration::from_secs(5);

/// Deletes the claim a failed or interrupted create may have made: by its
/// uid when the create answered (`uid`); else only a claim found under the
/// name carrying this request's token (a claim of that name someone else
/// made, say because the user gave `--name` of an existing one and the
/// admission webhook failed before the API server could answer 409, is
/// never touched), with its uid as precondition; looked for again for
/// [`LATE_CREATE_WAIT`], since a create without a clear answer (none, a
/// timeout, or a 408 or 5xx: the API server may go on after a 504, and a
/// proxy's 502/504 says nothing of it) may be written after the first
/// look.
pub async fn clean_up(
    api: &Api<SandboxClaim>,
    namespace: &str,
    sent: &Sent,
    uid: Option<String>,
) -> Result<Cleaned, ClaimError> {
    let deleted = |yes: bool| if yes { Cleaned::Deleted } else { Cleaned::Gone };
    if uid.is_some() {
        return delete(api, namespace, &sent.name, uid).await.map(deleted);
    }
    let until = Instant::now() + LATE_CREATE_WAIT;
    let what = || format!("reading SandboxClaim {namespace}/{}", sent.name);
    loop {
        match api.get_opt(&sent.name).await.map_err(api_error(what()))? {
            Some(claim) if made_by(&claim, &sent.token) => {
                return delete(api, namespace, &sent.name, claim.uid())
                    .await
                    .map(deleted);
            }
            Some(_) => return Ok(Cleaned::NotOurs),
            None if Instant::now() >= until => return Ok(Cleaned::Gone),
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
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
