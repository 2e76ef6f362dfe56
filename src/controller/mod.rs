//! The three controllers and what they share.
//!
//! Flow (the seed's diagram):
//! 1. [`warmpool`] keeps `spec.replicas` idle Pods of a template, owned by the
//!    pool and labelled with the pool and the template hash.
//! 2. [`claim`] creates a deny-ingress NetworkPolicy for a claim and, alongside,
//!    takes an idle Pod over with ONE write conditioned on its resourceVersion
//!    ([`pod_index::steal_patch`]) and creates the Sandbox with the
//!    `agents.x-k8s.io/pod-name` annotation; with no usable Pod it creates the
//!    Sandbox without it (cold path).
//! 3. [`sandbox`] adopts the named Pod (again a conditioned write) or creates
//!    one, creates the headless Service and reports `Ready`.
//! 4. The pool sees a Pod leave (the steal's watch event) and creates the
//!    replacement at once.
//!
//! All state lives in the API server (labels, annotations, ownerReferences);
//! the in-memory parts ([`pod_index::Reservations`], [`warmpool::Expectations`])
//! only prevent wasted writes and are safe to lose on restart.

pub mod claim;
pub mod leader;
pub mod pod_index;
pub mod run;
pub mod sandbox;
pub mod warmpool;

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use crate::api::{
    ORIGIN_POOL_LABEL, POOL_LABEL, Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool,
};
use crate::metrics::Metrics;

/// Label on every object the operator creates; the Pod cache watches only these.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "sandbox-operator";

/// Tunables of the controllers (from `run`'s flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// DNS domain of the cluster, for `status.serviceFQDN`.
    pub cluster_domain: String,
    /// Largest `spec.replicas` a pool may ask for; larger values are capped.
    pub max_pool_replicas: i32,
    /// Pod creates a pool runs at once.
    pub pool_create_parallelism: usize,
    /// Idle Pods of an outdated template replaced per pool reconcile.
    pub rollout_batch: usize,
    /// Publish Kubernetes Events (switch off at very high claim rates).
    pub events: bool,
    /// Reconciles run at once per controller.
    pub concurrency: u16,
    /// Identity used for Events and the leader Lease.
    pub identity: String,
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
}

impl Config {
    /// An API handle on the watched scope (one namespace or all).
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_domain: "cluster.local".into(),
            max_pool_replicas: 1000,
            pool_create_parallelism: 16,
            rollout_batch: 5,
            events: true,
            concurrency: 32,
            identity: "sandbox-operator".into(),
            namespace: None,
        }
    }
}

/// Everything a reconcile needs; one per process, shared by all controllers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Tunables.
    pub config: Config,
    /// Metrics registry and handles.
    pub metrics: Arc<Metrics>,
    /// Cache of the Pods the operator manages (label [`MANAGED_BY_LABEL`]).
    pub pods: Store<Pod>,
    /// Cache of SandboxTemplates.
    pub templates: Store<SandboxTemplate>,
    /// Cache of the Services the operator manages.
    pub services: Store<Service>,
    /// Cache of Sandboxes (claims mirror their status from it).
    pub sandboxes: Store<Sandbox>,
    /// Pods chosen by in-flight steals of this process.
    pub reservations: pod_index::Reservations,
    /// Pod creates/deletes issued by pools but not yet seen in the cache.
    pub expectations: warmpool::Expectations,
    /// What this process last wrote, so a reconcile woken by another event
    /// before its own write came back does not write the same thing again.
    pub written: WriteMemo,
    recorder: Recorder,
}

/// Remembers the last status (and one-off creates) written per object uid.
/// Safe to lose: after a restart the first write is simply repeated.
#[derive(Default)]
pub struct WriteMemo {
    inner: std::sync::Mutex<
        std::collections::HashMap<String, (serde_json::Value, std::time::Instant)>,
    >,
}

/// How long a remembered write suppresses an identical one.
const MEMO_TTL: Duration = Duration::from_secs(30);

impl WriteMemo {
    /// The comparable form of a status: condition transition times and the
    /// ready time left out (a stale copy of the object recomputes them with
    /// a later clock).
    pub fn status_key_value<T: serde::Serialize>(status: &T) -> serde_json::Value {
        let mut value = serde_json::to_value(status).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.remove("readyTime");
        }
        if let Some(conditions) = value.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for c in conditions {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastTransitionTime");
                }
            }
        }
        value
    }

    /// Whether `value` under `key` was written less than a while ago.
    pub fn recently_wrote(&self, key: &str, value: &serde_json::Value) -> bool {
        let memo = self.inner.lock().expect("memo lock");
        memo.get(key)
            .is_some_and(|(v, at)| v == value && at.elapsed() < MEMO_TTL)
    }

    /// Records a write.
    pub fn record(&self, key: &str, value: serde_json::Value) {
        let mut memo = self.inner.lock().expect("memo lock");
        if memo.len() > 10_000 {
            memo.retain(|_, (_, at)| at.elapsed() < MEMO_TTL);
        }
        memo.insert(key.to_string(), (value, std::time::Instant::now()));
    }
}

/// Reconcile triggers fed by the caches: each event is sent only after the
/// cache has applied it, so the reconcile it triggers never reads an older
/// cache than the event (a refill is never missed because the cache lagged).
pub struct Triggers {
    /// Pools to reconcile (a Pod of theirs changed or left; a template changed).
    pub pools: mpsc::UnboundedReceiver<ObjectRef<SandboxWarmPool>>,
    /// Sandboxes to reconcile (a Pod they own changed or went away).
    pub sandboxes: mpsc::UnboundedReceiver<ObjectRef<Sandbox>>,
    /// Claims to reconcile (the Sandbox they own changed or went away).
    pub claims: mpsc::UnboundedReceiver<ObjectRef<SandboxClaim>>,
}

impl Context {
    /// Builds the context and starts the caches; returns once every cache has
    /// its initial list.
    pub async fn start(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Arc<Self>, Triggers)> {
        let (pool_tx, pools) = mpsc::unbounded();
        let (sandbox_tx, sandbox_triggers) = mpsc::unbounded();
        let (claim_tx, claims) = mpsc::unbounded();
        let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");

        let (pods, pod_writer) = reflector::store();
        let pod_triggers = {
            let (pool_tx, sandbox_tx) = (pool_tx.clone(), sandbox_tx.clone());
            move |pod: &Pod| {
                let namespace = pod.namespace().unwrap_or_default();
                let labels = pod.labels();
                for pool in [labels.get(POOL_LABEL), labels.get(ORIGIN_POOL_LABEL)]
                    .into_iter()
                    .flatten()
                {
                    let _ = pool_tx.unbounded_send(ObjectRef::new(pool).within(&namespace));
                }
                for owner in pod
                    .owner_references()
                    .iter()
                    .filter(|o| o.controller == Some(true) && o.kind == "Sandbox")
                {
                    let _ =
                        sandbox_tx.unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
                }
            }
        };
        tokio::spawn(cache(
            "pods",
            config.api::<Pod>(&client),
            watcher::Config::default().labels(&managed),
            pod_writer,
            pod_triggers,
        ));

        let (templates, template_writer) = reflector::store();
        let pool_api: Api<SandboxWarmPool> = config.api(&client);
        let template_triggers = {
            let pool_tx = pool_tx.clone();
            // Template changes are rare: list the pools that use it.
            move |template: &SandboxTemplate| {
                let (pool_api, pool_tx) = (pool_api.clone(), pool_tx.clone());
                let namespace = template.namespace().unwrap_or_default();
                let name = template.name_any();
                tokio::spawn(async move {
                    let Ok(list) =
                        Api::<SandboxWarmPool>::namespaced(pool_api.into_client(), &namespace)
                            .list(&ListParams::default())
                            .await
                    else {
                        return;
                    };
                    for pool in list
                        .items
                        .iter()
                        .filter(|p| p.spec.sandbox_template_ref.name == name)
                    {
                        let _ = pool_tx.unbounded_send(ObjectRef::from_obj(pool));
                    }
                });
            }
        };
        tokio::spawn(cache(
            "templates",
            config.api::<SandboxTemplate>(&client),
            watcher::Config::default(),
            template_writer,
            template_triggers,
        ));

        let (services, service_writer) = reflector::store();
        tokio::spawn(cache(
            "services",
            config.api::<Service>(&client),
            watcher::Config::default().labels(&managed),
            service_writer,
            |_: &Service| {},
        ));

        let (sandboxes, sandbox_writer) = reflector::store();
        tokio::spawn(cache(
            "sandboxes",
            config.api::<Sandbox>(&client),
            watcher::Config::default(),
            sandbox_writer,
            move |sandbox: &Sandbox| {
                let namespace = sandbox.namespace().unwrap_or_default();
                for owner in sandbox
                    .owner_references()
                    .iter()
                    .filter(|o| o.controller == Some(true) && o.kind == "SandboxClaim")
                {
                    let _ = claim_tx.unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
                }
            },
        ));

        pods.wait_until_ready().await?;
        templates.wait_until_ready().await?;
        services.wait_until_ready().await?;
        sandboxes.wait_until_ready().await?;

        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "sandbox-operator".into(),
                instance: Some(config.identity.clone()),
            },
        );
        let ctx = Arc::new(Context {
            client,
            config,
            metrics,
            pods,
            templates,
            services,
            sandboxes,
            reservations: Default::default(),
            expectations: Default::default(),
            written: Default::default(),
            recorder,
        });
        Ok((
            ctx,
            Triggers {
                pools,
                sandboxes: sandbox_triggers,
                claims,
            },
        ))
    }

    /// Publishes an Event about `obj` unless Events are switched off. A
    /// failure to publish is logged, never fails the reconcile.
    pub async fn event<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        if !self.config.events {
            return;
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(%error, reason, "could not publish event");
        }
    }

    /// The template `name` in `namespace`, from the cache.
    pub fn template(&self, namespace: &str, name: &str) -> Option<Arc<SandboxTemplate>> {
        self.templates.get(&ObjectRef::new(name).within(namespace))
    }

    /// Whether the cache lacks the Service `name` (it may lag: creating it
    /// then answers AlreadyExists, which is fine).
    pub fn services_missing(&self, namespace: &str, name: &str) -> bool {
        self.services
            .get(&ObjectRef::new(name).within(namespace))
            .is_none()
    }

    /// The pool a stolen Pod came from (its `origin-pool` label), from the cache.
    pub fn stolen_pool(&self, namespace: &str, pod: Option<&str>) -> Option<String> {
        let pod = self.pods.get(&ObjectRef::new(pod?).within(namespace))?;
        pod.labels().get(ORIGIN_POOL_LABEL).cloned()
    }
}

/// Runs one cache: applies each watch event to the store, then calls
/// `trigger` with the object (for deletions too).
async fn cache<K, F>(
    what: &'static str,
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    trigger: F,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(&K),
{
    use futures::StreamExt;
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                writer.apply_watcher_event(&event);
                match &event {
                    watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => trigger(obj),
                    watcher::Event::InitApply(_)
                    | watcher::Event::Init
                    | watcher::Event::InitDone => {}
                }
            }
            Err(error) => warn!(%error, what, "watch error (retrying with backoff)"),
        }
    }
}

/// Errors of a reconcile. A lost steal race is not an error (it is counted
/// and the next candidate is tried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes API call failed: {context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An object lacks something the controller needs (name, namespace, uid).
    #[error("object is incomplete: {0}")]
    Incomplete(&'static str),
    /// Serializing an object or patch failed.
    #[error("serialization failed: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// Short label for the `reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Incomplete(_) => "incomplete",
            Error::Serialize(_) => "serialize",
        }
    }
}

/// Adds context to a kube error.
pub(crate) fn kube_err(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let context = context.into();
    move |source| Error::Kube { context, source }
}

/// Result of a reconcile.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// HTTP status of an API error, if it is one.
pub fn api_status(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Whether the error means "someone else wrote first" (409 Conflict, or 422
/// from a failed JSON-patch `test` operation).
pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(api_status(err), Some(409) | Some(422))
}

/// Whether the error is 404 Not Found.
pub fn is_not_found(err: &kube::Error) -> bool {
    api_status(err) == Some(404)
}

/// Whether the error is 409 AlreadyExists on a create.
pub fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// A controller ownerReference pointing at `owner`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference> {
    owner
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("owner has no name or uid"))
}

/// The uid of the object's controller owner, if any.
pub fn controller_uid(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// Whether a Pod is Running with a `Ready=True` condition.
pub fn pod_is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether a Pod has a deletionTimestamp.
pub fn is_terminating<K: ResourceExt>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

/// Whether a Pod ended (Succeeded or Failed).
pub fn pod_has_ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// Creates `obj`; an AlreadyExists answer counts as success (the object was
/// created by an earlier reconcile whose result the cache has not shown yet).
pub(crate) async fn create_idempotent<K>(api: &Api<K>, obj: &K, what: &str) -> Result<bool>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api
        .create(
            &PostParams {
                field_manager: Some(crate::api::FIELD_MANAGER.into()),
                ..Default::default()
            },
            obj,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_already_exists(&e) => Ok(false),
        Err(e) => Err(kube_err(format!("create {what}"))(e)),
    }
}

/// Logs one step of a claim's way to Ready at target `timeline`, with the
/// milliseconds since the API server admitted the claim (the webhook's
/// `admitted-at` stamp, copied onto its Sandbox). `RUST_LOG=timeline=info`
/// turns it on; the end-to-end bench uses it for its per-step breakdown.
pub fn timeline<K: Resource>(obj: &K, claim: &str, step: &'static str) {
    if !tracing::enabled!(target: "timeline", tracing::Level::INFO) {
        return;
    }
    let Some(admitted) = obj
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::api::ADMITTED_AT_ANNOTATION))
        .and_then(|v| v.parse::<jiff::Timestamp>().ok())
    else {
        return;
    };
    let ms = jiff::Timestamp::now()
        .duration_since(admitted)
        .as_secs_f64()
        * 1000.0;
    tracing::info!(target: "timeline", claim, step, ms, "timeline");
}

/// Replaces an object's status with ONE JSON merge patch on the status
/// subresource: every top-level field in `fields` that `status` leaves out
/// is sent as `null`, so the stored status equals `status` exactly (a
/// field that went away is removed). No read-modify-write, and cheaper for
/// the API server than server-side apply on objects carrying a pod template.
/// A deleted object is not an error.
pub(crate) async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    status: &S,
    fields: &[&str],
    what: &str,
) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let mut value = serde_json::to_value(status)?;
    if let Some(object) = value.as_object_mut() {
        for field in fields {
            object
                .entry(field.to_string())
                .or_insert(serde_json::Value::Null);
        }
    }
    let params = kube::api::PatchParams {
        field_manager: Some(crate::api::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api
        .patch_status(
            name,
            &params,
            &kube::api::Patch::Merge(serde_json::json!({ "status": value })),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(kube_err(format!("write {what} status"))(e)),
    }
}

/// Requeue delay after a failed reconcile.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(2);
