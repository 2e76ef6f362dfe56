//! What a reconcile sees of a pool: its template (cache first, then the
//! API) and its members, i.e. Pods whose controller owner is this pool's uid
//! (see [`super::plan::is_member`]), with pending creates and deletes
//! settled against [`super::Expectations`].

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::super::{Context, Result, is_terminating, kube_err, pod_has_ended, pod_is_ready};
use super::plan::{IdlePod, is_member};
use super::size::pool_cap;
use super::status::{self, SizingFields, pool_status};
use crate::api::{SandboxTemplate, SandboxWarmPool, TEMPLATE_HASH_LABEL};

/// What a reconcile observed of the pool's members.
pub(super) struct Members {
    /// Every member Pod, terminating ones included.
    pub all: Vec<Arc<Pod>>,
    /// Members that count as idle (not terminating, no delete pending).
    pub idle: Vec<IdlePod>,
    /// Creates the cache has not shown yet.
    pub pending_creates: usize,
}

/// The pool's members as the cache shows them.
pub(super) fn observe_members(
    ctx: &Context,
    pool: &SandboxWarmPool,
    key: &str,
    hash: &str,
) -> Members {
    let namespace = pool.namespace().unwrap_or_default();
    let (name, uid) = (pool.name_any(), pool.uid().unwrap_or_default());
    let all: Vec<Arc<Pod>> = ctx
        .index
        .controlled_by(&uid)
        .iter()
        .filter_map(|pod| ctx.pods.get(pod))
        .filter(|p| is_member(p, &namespace, &name, &uid))
        .collect();
    let seen: HashSet<String> = all
        .iter()
        .filter(|p| !is_terminating(p.as_ref()))
        .map(|p| p.name_any())
        .collect();
    let (pending_creates, pending_deletes) = ctx.expectations.settle_with(key, &seen, |name| {
        ctx.pods
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(&namespace))
            .is_some()
    });
    let idle = all
        .iter()
        .filter(|p| !is_terminating(p.as_ref()) && !pending_deletes.contains(&p.name_any()))
        .map(|p| IdlePod {
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            resource_version: p.resource_version().unwrap_or_default(),
            ready: pod_is_ready(p),
            current: p.labels().get(TEMPLATE_HASH_LABEL).map(String::as_str) == Some(hash)
                && !pod_has_ended(p),
            created: p.meta().creation_timestamp.as_ref().map(|t| t.0),
        })
        .collect();
    Members {
        all,
        idle,
        pending_creates,
    }
}

/// The pool's template from the cache (or the API); `None` after reporting
/// `TemplateNotFound` in the status.
pub(super) async fn template_of(
    ctx: &Context,
    pool: &SandboxWarmPool,
) -> Result<Option<SandboxTemplate>> {
    let namespace = pool.namespace().unwrap_or_default();
    let template_name = &pool.spec.sandbox_template_ref.name;
    if let Some(t) = ctx.template(&namespace, template_name) {
        return Ok(Some((*t).clone()));
    }
    let api: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(t) = api
        .get_opt(template_name)
        .await
        .map_err(kube_err("get template"))?
    {
        return Ok(Some(t));
    }
    let fields = SizingFields {
        desired_replicas: pool.spec.replicas.min(pool_cap(ctx)),
        ..Default::default()
    };
    let status = pool_status(
        pool,
        0,
        0,
        None,
        Some((
            "TemplateNotFound",
            format!("SandboxTemplate {template_name} does not exist"),
        )),
        &fields,
        None,
    );
    status::write_status(ctx, pool, &status).await?;
    Ok(None)
}
