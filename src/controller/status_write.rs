//! Status writes: one JSON merge patch on the status subresource,
//! conditioned on the resourceVersion the status was computed from, for
//! every kind whose status the operator owns ([`OwnStatus`]).

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use super::context::Context;
use super::errors::{Result, is_conflict, is_not_found, kube_err};
use crate::api::{
    Sandbox, SandboxClaim, SandboxClaimStatus, SandboxStatus, SandboxWarmPool,
    SandboxWarmPoolStatus,
};

/// A kind whose whole status the operator writes.
pub(crate) trait OwnStatus:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
    /// The status type.
    type Status: Serialize;
    /// Every top-level field of the status (one left out is sent as `null`).
    const FIELDS: &'static [&'static str];
    /// What the kind is called in errors and logs.
    const WHAT: &'static str;
}

/// `impl OwnStatus` for a kind: its status type, what it is called, and
/// every top-level status field.
macro_rules! own_status {
    ($kind:ty, $status:ty, $what:literal, [$($field:literal),+ $(,)?]) => {
        impl OwnStatus for $kind {
            type Status = $status;
            const FIELDS: &'static [&'static str] = &[$($field),+];
            const WHAT: &'static str = $what;
        }
    };
}

own_status!(
    SandboxClaim,
    SandboxClaimStatus,
    "claim",
    [
        "conditions",
        "sandbox",
        "podName",
        "launchType",
        "warmPool",
        "readyTime",
        "timeToReadySeconds",
    ]
);
own_status!(
    Sandbox,
    SandboxStatus,
    "sandbox",
    [
        "conditions",
        "service",
        "serviceFQDN",
        "replicas",
        "selector",
        "podName",
        "podIP",
        "nodeName",
    ]
);
own_status!(
    SandboxWarmPool,
    SandboxWarmPoolStatus,
    "pool",
    [
        "replicas",
        "readyReplicas",
        "selector",
        "templateHash",
        "desiredReplicas",
        "recommendedReplicas",
        "predictedHitRatio",
        "observedHitRatio",
        "claimRatePerMinute",
        "refillSeconds",
        "conditions",
    ]
);

/// The merge patch that makes the stored status equal `status` exactly
/// (every field of `fields` it leaves out is sent as `null`, so a field that
/// went away is removed), applicable only to `resource_version`. Pure.
pub(crate) fn status_patch<S: Serialize>(
    status: &S,
    fields: &[&str],
    resource_version: Option<String>,
) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(status)?;
    if let Some(object) = value.as_object_mut() {
        for field in fields {
            object
                .entry(field.to_string())
                .or_insert(serde_json::Value::Null);
        }
    }
    Ok(serde_json::json!({
        "metadata": { "resourceVersion": resource_version },
        "status": value,
    }))
}

/// Replaces `object`'s status with ONE merge patch on the status
/// subresource ([`status_patch`]): no read-modify-write, and cheaper for the
/// API server than server-side apply on objects carrying a pod template.
///
/// The patch carries `object`'s resourceVersion, so the API server applies
/// it only to the version the status was computed from. A status computed
/// from a stale cache, or one sent late by a process that has since lost
/// the leader Lease, gets 409 Conflict: nothing is written and the result is
/// `Ok(false)` (the newer version's watch event reconciles again and
/// computes the status anew), never an overwrite of a newer status.
/// `Ok(true)`: the status is stored, or the object is gone.
pub(crate) async fn write_status<K: OwnStatus>(
    ctx: &Context,
    object: &K,
    status: &K::Status,
) -> Result<bool> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let patch = status_patch(status, K::FIELDS, object.resource_version())?;
    let params = PatchParams {
        field_manager: Some(crate::api::FIELD_MANAGER.into()),
        ..Default::default()
    };
    // The answer (the whole object, pod template included) is not read:
    // the next watch event brings it. Sent as a raw request so it is not
    // decoded either; errors come back exactly as from `patch_status`.
    let mut request = kube::core::Request::new(api.resource_url())
        .patch_subresource("status", &object.name_any(), &params, &Patch::Merge(patch))
        .map_err(kube::Error::BuildRequest)
        .map_err(kube_err(format!("build {} status write", K::WHAT)))?;
    // The same name in the client's trace spans as `patch_status` gives.
    request.extensions_mut().insert("patch_status");
    match ctx.client.request_text(request).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(true),
        Err(e) if is_conflict(&e) => {
            tracing::debug!(
                name = object.name_any(),
                "{} status computed from a stale version; the newer one will be reconciled",
                K::WHAT
            );
            Ok(false)
        }
        Err(e) => Err(kube_err(format!("write {} status", K::WHAT))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_nulls_missing_fields_and_carries_the_version_read() {
        let status = SandboxClaimStatus {
            pod_name: Some("p".into()),
            ..Default::default()
        };
        let patch = status_patch(&status, SandboxClaim::FIELDS, Some("42".into())).unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["status"]["podName"], "p");
        for field in SandboxClaim::FIELDS.iter().filter(|f| **f != "podName") {
            assert!(
                patch["status"].get(*field).is_some(),
                "{field} is sent (null when absent)"
            );
        }
    }

    #[test]
    fn every_status_field_is_listed() {
        fn serialized_fields<S: Serialize>(status: S) -> Vec<String> {
            serde_json::to_value(status)
                .unwrap()
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        }
        // A status with every optional field set must name only listed fields.
        let claim = serde_json::from_value::<SandboxClaimStatus>(serde_json::json!({
            "conditions": [], "sandbox": {"name": "s"}, "podName": "p", "launchType": "warm",
            "warmPool": "w", "readyTime": "2026-01-01T00:00:00Z", "timeToReadySeconds": 1.0
        }))
        .unwrap();
        for field in serialized_fields(claim) {
            assert!(SandboxClaim::FIELDS.contains(&field.as_str()), "{field}");
        }
    }
}
