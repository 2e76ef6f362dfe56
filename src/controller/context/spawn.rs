//! Starting the watch caches of one process, each with its trigger.

use std::sync::Arc;

use futures::channel::mpsc;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};

use super::super::cache::{Intake, cache, slim_meta};
use super::super::index::PodIndex;
use super::super::index::named::NamedPods;
use super::super::lean_pod::LeanPod;
use super::super::memo::WriteMemo;
use super::super::triggers::{
    PolicyOwners, TemplateUsers, network_policy_trigger, pod_trigger, pool_trigger,
    sandbox_trigger, self_trigger, service_trigger, template_trigger,
};
use super::super::warmpool;
use super::{Caches, Config, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Triggers};
use crate::api::{Sandbox, SandboxClaim, SandboxWarmPool};
use crate::metrics::Metrics;

/// Where a trigger sends the objects it wakes.
type Wake<K> = mpsc::UnboundedSender<ObjectRef<K>>;

/// Starts the watch caches of one process, all on the watched scope.
pub(super) struct CacheSpawner<'a> {
    pub(super) client: &'a Client,
    pub(super) config: &'a Config,
    pub(super) health: &'a Arc<crate::admin::Health>,
    pub(super) metrics: &'a Metrics,
    pub(super) expectations: &'a Arc<warmpool::Expectations>,
    pub(super) written: &'a Arc<WriteMemo>,
}

impl CacheSpawner<'_> {
    /// Starts every cache with its trigger (see [`super::triggers`]) and
    /// returns once each has its initial list.
    pub(super) async fn spawn_all(&self) -> anyhow::Result<(Caches, Triggers)> {
        let (pool_tx, pool_triggers) = mpsc::unbounded();
        let (sandbox_tx, sandbox_triggers) = mpsc::unbounded();
        let (claim_tx, claim_triggers) = mpsc::unbounded();
        let index = Arc::new(PodIndex::default());
        let named = Arc::new(NamedPods::default());
        // Pods are decoded straight into what the cache keeps (see `lean_pod`).
        let pods = self.spawn_decoded(
            "pods",
            true,
            Intake {
                into: LeanPod::into_pod,
                slim: slim_meta,
            },
            pod_trigger(
                Arc::clone(&index),
                Arc::clone(&named),
                Arc::clone(self.expectations),
                pool_tx.clone(),
                sandbox_tx.clone(),
                claim_tx.clone(),
            ),
        );
        // The one pool watch: the pool controller reconciles from this cache
        // (see `run`), so a pool it fills is always one the claim path sees.
        let pools = self.spawn(
            "pools",
            false,
            slim_meta,
            pool_trigger(Arc::clone(self.expectations), pool_tx.clone()),
        );
        // The Sandbox controller, like the pool controller, has no watch of
        // its own: these two caches wake it (see `run`).
        let services = self.spawn(
            "services",
            true,
            slim_meta,
            service_trigger(sandbox_tx.clone(), claim_tx.clone()),
        );
        let sandboxes = self.spawn(
            "sandboxes",
            false,
            slim_meta,
            sandbox_trigger(Arc::clone(&named), sandbox_tx.clone(), claim_tx.clone()),
        );
        // The claim controller, too, reconciles from a shared cache.
        let claims = self.spawn("claims", false, slim_meta, self_trigger(claim_tx.clone()));
        let templates = self.spawn(
            "templates",
            false,
            slim_meta,
            template_trigger(
                TemplateUsers {
                    pools: pools.clone(),
                    claims: claims.clone(),
                },
                pool_tx.clone(),
                claim_tx.clone(),
            ),
        );
        let network_policies = self.spawn_network_policies(
            &pools,
            &claims,
            &sandboxes,
            (pool_tx, claim_tx, sandbox_tx),
        );
        pods.wait_until_ready().await?;
        pools.wait_until_ready().await?;
        templates.wait_until_ready().await?;
        services.wait_until_ready().await?;
        sandboxes.wait_until_ready().await?;
        claims.wait_until_ready().await?;
        let caches = Caches {
            pods,
            pools,
            templates,
            services,
            sandboxes,
            claims,
            network_policies,
            index,
            named,
        };
        let triggers = Triggers {
            pools: pool_triggers,
            sandboxes: sandbox_triggers,
            claims: claim_triggers,
        };
        Ok((caches, triggers))
    }

    /// The operator's NetworkPolicies: a deleted one wakes its owner, which
    /// makes it again. Not waited for, and not part of /healthz (see
    /// `cache::OPTIONAL_CACHES`): until it has listed (say its RBAC rule is
    /// missing) Ready claims do not check their policy, as before the cache
    /// existed, and nothing else reads it.
    fn spawn_network_policies(
        &self,
        pools: &Store<SandboxWarmPool>,
        claims: &Store<SandboxClaim>,
        sandboxes: &Store<Sandbox>,
        (pool_tx, claim_tx, sandbox_tx): (Wake<SandboxWarmPool>, Wake<SandboxClaim>, Wake<Sandbox>),
    ) -> Store<NetworkPolicy> {
        self.spawn(
            "networkpolicies",
            true,
            slim_meta,
            network_policy_trigger(PolicyOwners {
                written: Arc::clone(self.written),
                expectations: Arc::clone(self.expectations),
                pools: pools.clone(),
                claims: claims.clone(),
                sandboxes: sandboxes.clone(),
                pool_tx,
                claim_tx,
                sandbox_tx,
            }),
        )
    }

    /// Starts the cache of `K` (only objects carrying [`MANAGED_BY_LABEL`]
    /// when `managed_only`), trimmed by `slim`, calling `trigger` after each
    /// applied event; returns its store.
    fn spawn<K, F>(
        &self,
        what: &'static str,
        managed_only: bool,
        slim: fn(&mut K),
        trigger: F,
    ) -> Store<K>
    where
        K: super::super::cache::Cached + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        F: Fn(&K, bool) + Send + 'static,
    {
        let intake = Intake {
            into: std::convert::identity,
            slim,
        };
        self.spawn_decoded(what, managed_only, intake, trigger)
    }

    /// [`CacheSpawner::spawn`] with the watch decoding `W` (a lean wire
    /// type) and `intake` turning it into the kept `K`.
    fn spawn_decoded<W, K, F>(
        &self,
        what: &'static str,
        managed_only: bool,
        intake: Intake<W, K>,
        trigger: F,
    ) -> Store<K>
    where
        W: super::super::cache::Cached + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K: super::super::cache::Cached,
        F: Fn(&K, bool) + Send + 'static,
    {
        let mut watch = watcher::Config::default();
        if managed_only {
            watch = watch.labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        }
        let (store, writer) = reflector::store();
        tokio::spawn(cache(
            super::super::cache::Reporting::new(what, self.health.clone(), self.metrics),
            self.config.api::<W>(self.client),
            watch,
            writer,
            intake,
            trigger,
        ));
        store
    }
}
