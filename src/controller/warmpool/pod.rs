//! The idle Pod a pool creates from its template. Pure.
//!
//! Guarantee: keys reserved for the operator never come from the user's
//! template (defense in depth: the webhook refuses them too); the Pod is
//! controlled by the pool (controller ownerReference with the pool's uid).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::ResourceExt;
use kube::api::ObjectMeta;

use super::super::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, Result, controller_ref};
use crate::api::{
    CREATED_AT_ANNOTATION, ORIGIN_POOL_LABEL, POOL_LABEL, SandboxTemplate, SandboxWarmPool,
    TEMPLATE_HASH_LABEL, TEMPLATE_LABEL,
};

/// A new idle Pod for `pool`: `spec` (the template's pod spec as the policy
/// admitted it, defaults applied) with the template's labels and
/// annotations. Pure.
pub fn desired_pod(
    pool: &SandboxWarmPool,
    template: &SandboxTemplate,
    spec: &PodSpec,
    hash: &str,
    now: jiff::Timestamp,
) -> Result<Pod> {
    let meta = template
        .spec
        .pod_template
        .metadata
        .clone()
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    labels.retain(|k, _| !crate::api::is_reserved_key(k));
    labels.insert(POOL_LABEL.into(), pool.name_any());
    // Kept by the steal (which only drops the pool label): the pool's
    // NetworkPolicy selects it, so a Pod stays covered from its creation
    // until the claim's own policy exists.
    labels.insert(ORIGIN_POOL_LABEL.into(), pool.name_any());
    labels.insert(TEMPLATE_LABEL.into(), template.name_any());
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.retain(|k, _| !crate::api::is_reserved_key(k));
    annotations.insert(CREATED_AT_ANNOTATION.into(), now.to_string());
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", pool.name_any())),
            namespace: pool.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(pool)?]),
            ..Default::default()
        },
        spec: Some(spec.clone()),
        status: None,
    })
}
