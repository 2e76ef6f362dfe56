//! The shared runtime of the controllers: their tunables ([`Config`]), the
//! [`Context`] every reconcile receives (API client, metrics, caches,
//! in-memory reservations and expectations), and the reconcile triggers the
//! caches feed.
//!
//! Guarantee: each trigger is sent only after its cache applied the event, so
//! a reconcile never reads a cache older than the event that woke it.

use std::sync::Arc;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use super::index::PodIndex;
use super::index::named::NamedPods;
use super::memo::WriteMemo;
use super::warmpool;
use crate::api::{ORIGIN_POOL_LABEL, Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};
use crate::metrics::Metrics;

mod spawn;
use spawn::CacheSpawner;

/// Label on every object the operator creates; the Pod cache watches only these.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "sandbox-operator";

/// Which NetworkPolicy a claim relies on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkPolicyMode {
    /// One policy per claim, owned by the claim (the seed's design).
    #[default]
    PerClaim,
    /// One policy per template, owned by the template, selecting every Pod
    /// of the template (idle, stolen, cold): one write less per claim.
    PerTemplate,
}

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
    /// The admission policy (shared with the webhook, reloaded with it): the
    /// controllers check every pod template against it again right before
    /// they create a Pod.
    pub policy: crate::admission::PolicyStore,
    /// Namespaces the controllers leave alone: the ones admission excludes
    /// (kube-system and the operator's own when watching all namespaces), so
    /// nothing runs there unchecked.
    pub excluded_namespaces: Vec<String>,
    /// Which NetworkPolicy keeps a claimed Pod's ingress closed.
    pub claim_network_policy: NetworkPolicyMode,
    /// Every object is reconciled again at least this often (jittered by
    /// +-10%), even without an event: the safety net against a missed one.
    pub resync: std::time::Duration,
    /// At most how long an adoption or a pool refill waits for the claims
    /// this process is serving to write Ready (zero: never waits); see
    /// [`super::critical`].
    pub defer_off_path: std::time::Duration,
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
            resync: std::time::Duration::from_secs(300),
            defer_off_path: std::time::Duration::from_millis(100),
            claim_network_policy: NetworkPolicyMode::PerClaim,
            policy: Default::default(),
            excluded_namespaces: Vec::new(),
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
    /// The watch caches (one watch per kind) and the Pod indexes.
    pub caches: Caches,
    /// Health of the watches and reconciles, for `/healthz`.
    pub health: Arc<crate::admin::Health>,
    /// Consecutive reconcile failures per object (exponential backoff).
    pub backoff: super::retry::Backoff,
    /// What this process remembers of the Pods it takes: chosen for a
    /// steal, won for a claim, given back.
    pub reservations: super::reservations::Reservations,
    /// Pod creates/deletes issued by pools but not yet seen in the cache.
    pub expectations: Arc<warmpool::Expectations>,
    /// What this process last wrote, so a reconcile woken by another event
    /// before its own write came back does not write the same thing again
    /// (shared with the NetworkPolicy trigger, which forgets a deleted
    /// policy's entry so that it is made again at once).
    pub written: Arc<WriteMemo>,
    /// Warm-pool sizing measurements (claim arrivals, refill times); the
    /// claim controller reports claims with [`crate::sizing::Sizing::record_claim`].
    pub sizing: crate::sizing::Sizing,
    /// Claims this process is serving now (off-path work waits for them).
    pub in_flight: super::critical::InFlight,
    /// Template hashes and policy verdicts, once per template version.
    pub template_facts: warmpool::template_facts::TemplateMemo,
    /// Excluded namespaces an object was seen in (each is logged once).
    pub(crate) excluded_seen: std::sync::Mutex<std::collections::HashSet<String>>,
    recorder: Recorder,
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
        health: Arc<crate::admin::Health>,
    ) -> anyhow::Result<(Arc<Self>, Triggers)> {
        // Shared with the Pod trigger, which skips the wake-up a pool's own
        // pending create would cause (see `triggers::pod_trigger`).
        let expectations = Arc::new(warmpool::Expectations::default());
        let written = Arc::new(WriteMemo::default());
        let spawner = CacheSpawner {
            client: &client,
            config: &config,
            health: &health,
            metrics: &metrics,
            expectations: &expectations,
            written: &written,
        };
        let (caches, triggers) = spawner.spawn_all().await?;
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
            caches,
            health,
            backoff: Default::default(),
            reservations: Default::default(),
            expectations,
            written,
            sizing: Default::default(),
            in_flight: Default::default(),
            template_facts: Default::default(),
            excluded_seen: Default::default(),
            recorder,
        });
        super::janitor::start(&ctx);
        super::policy_hold::start(&ctx);
        Ok((ctx, triggers))
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
        self.caches
            .templates
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// The template `name` in `namespace`: from the cache, else read from the
    /// API server (the cache may not show a template created a moment ago).
    pub async fn template_or_get(
        &self,
        namespace: &str,
        name: &str,
    ) -> super::Result<Option<SandboxTemplate>> {
        if let Some(template) = self.template(namespace, name) {
            return Ok(Some((*template).clone()));
        }
        Api::<SandboxTemplate>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(super::kube_err(format!("get template {name}")))
    }

    /// The controller uid of the cached Service `namespace/name`: `None`
    /// when the cache has no such Service, `Some(None)` when it has no
    /// controller. The cache selects by a label anyone can write, so a
    /// caller decides from this uid, never from the Service's presence.
    pub fn service_controller(&self, namespace: &str, name: &str) -> Option<Option<String>> {
        self.caches
            .services
            .get(&ObjectRef::new(name).within(namespace))
            .map(|s| super::controller_uid(&s.metadata).map(str::to_owned))
    }

    /// Whether the NetworkPolicy cache has had its first list (see
    /// `spawn_all`): its readiness, polled once.
    pub fn network_policies_listed(&self) -> bool {
        use futures::FutureExt;
        self.caches
            .network_policies
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|ready| ready.is_ok())
    }

    /// The controller uid of the cached NetworkPolicy `namespace/name`, as
    /// [`Self::service_controller`]: `None` when the cache has no such
    /// policy (or has not listed yet).
    pub fn network_policy_controller(&self, namespace: &str, name: &str) -> Option<Option<String>> {
        self.caches
            .network_policies
            .get(&ObjectRef::new(name).within(namespace))
            .map(|p| super::controller_uid(&p.metadata).map(str::to_owned))
    }

    /// The pool a stolen Pod came from (its `origin-pool` label), from the cache.
    pub fn stolen_pool(&self, namespace: &str, pod: Option<&str>) -> Option<String> {
        let pod = self
            .caches
            .pods
            .get(&ObjectRef::new(pod?).within(namespace))?;
        pod.labels().get(ORIGIN_POOL_LABEL).cloned()
    }
}

/// The watch caches every controller reads, one watch per kind.
pub struct Caches {
    /// Cache of the Pods the operator manages (label [`MANAGED_BY_LABEL`]).
    pub pods: Store<Pod>,
    /// Cache of SandboxTemplates.
    pub templates: Store<SandboxTemplate>,
    /// Cache of the Services the operator manages.
    pub services: Store<Service>,
    /// Cache of Sandboxes (claims mirror their status from it).
    pub sandboxes: Store<Sandbox>,
    /// Cache of SandboxWarmPools (a warm Pod is a candidate only when its
    /// controller is the live pool its label names).
    pub pools: Store<SandboxWarmPool>,
    /// Cache of SandboxClaims (the claim controller reconciles from it).
    pub claims: Store<SandboxClaim>,
    /// Cache of the NetworkPolicies the operator manages (label
    /// [`MANAGED_BY_LABEL`]); may lag its first list (see `spawn_all`).
    pub network_policies: Store<NetworkPolicy>,
    /// Indexes over the Pod cache (by pool template hash, controller uid,
    /// claim uid), updated before each Pod event's triggers are sent.
    pub index: Arc<PodIndex>,
    /// Which Sandboxes (and claims) name each Pod, kept by the Sandbox
    /// cache; a named Pod's events wake them.
    pub named: Arc<NamedPods>,
}
