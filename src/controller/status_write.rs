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
    /// Every field of each nested object of the status, by the object's
    /// field: a merge patch merges into a stored object, so a nested field
    /// left out would keep its stored value (one left out is sent as
    /// `null` when the object is sent).
    const NESTED: &'static [(&'static str, &'static [&'static str])] = &[];
    /// What the kind is called in errors and logs.
    const WHAT: &'static str;
}

/// `impl OwnStatus` for a kind: its status type, what it is called, and
/// every top-level status field.
macro_rules! own_status {
    ($kind:ty, $status:ty, $what:literal, [$($field:literal),+ $(,)?]
     $(, nested $object:literal: [$($inner:literal),+ $(,)?])*) => {
        impl OwnStatus for $kind {
            type Status = $status;
            const FIELDS: &'static [&'static str] = &[$($field),+];
            const NESTED: &'static [(&'static str, &'static [&'static str])] =
                &[$(($object, &[$($inner),+])),*];
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
    ],
    nested "sandbox": ["name", "podIPs", "service", "serviceFQDN"]
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
        "podIPs",
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
/// (every field of `fields`, and of each object of `nested` that is sent,
/// it leaves out is sent as `null`, so a field that went away is removed),
/// applicable only to `resource_version`. Pure.
pub(crate) fn status_patch<S: Serialize>(
    status: &S,
    fields: &[&str],
    nested: &[(&str, &[&str])],
    resource_version: Option<String>,
) -> Result<serde_json::Value> {
    fn fill_nulls(value: &mut serde_json::Value, fields: &[&str]) {
        if let Some(object) = value.as_object_mut() {
            for field in fields {
                object
                    .entry(field.to_string())
                    .or_insert(serde_json::Value::Null);
            }
        }
    }
    let mut value = serde_json::to_value(status)?;
    fill_nulls(&mut value, fields);
    for (field, inner) in nested {
        if let Some(object) = value.get_mut(*field) {
            fill_nulls(object, inner);
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
    let patch = status_patch(status, K::FIELDS, K::NESTED, object.resource_version())?;
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
        let patch = status_patch(
            &status,
            SandboxClaim::FIELDS,
            SandboxClaim::NESTED,
            Some("42".into()),
        )
        .unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["status"]["podName"], "p");
        for field in SandboxClaim::FIELDS.iter().filter(|f| **f != "podName") {
            assert!(
                patch["status"].get(*field).is_some(),
                "{field} is sent (null when absent)"
            );
        }
    }

    /// The status properties of a kind's CRD schema (what the API server
    /// stores), and those of each nested object among them.
    fn schema_fields<K: kube::CustomResourceExt>() -> (Vec<String>, Vec<(String, Vec<String>)>) {
        let crd = serde_json::to_value(K::crd()).unwrap();
        let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"];
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        let nested = status
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| v.get("properties").is_some())
            .map(|(k, v)| (k.clone(), keys(&v["properties"])))
            .collect();
        (keys(status), nested)
    }

    fn listed<K: OwnStatus>() -> (Vec<String>, Vec<(String, Vec<String>)>) {
        let sorted = |fields: &[&str]| {
            let mut v: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            v.sort();
            v
        };
        let nested = K::NESTED
            .iter()
            .map(|(field, inner)| (field.to_string(), sorted(inner)))
            .collect();
        (sorted(K::FIELDS), nested)
    }

    #[test]
    fn every_status_field_of_the_schema_is_listed_nested_objects_too() {
        // A field the schema stores but the list leaves out would never be
        // removed by a status write (before: a Sandbox kept `podIPs` after
        // its Pod went, and a claim's `sandbox.podIPs` too).
        assert_eq!(listed::<SandboxClaim>(), schema_fields::<SandboxClaim>());
        assert_eq!(listed::<Sandbox>(), schema_fields::<Sandbox>());
        assert_eq!(
            listed::<SandboxWarmPool>(),
            schema_fields::<SandboxWarmPool>()
        );
    }

    #[test]
    fn a_pod_gone_clears_every_ip_of_the_sandbox_and_its_claim() {
        let sandbox = status_patch(
            &SandboxStatus::default(),
            Sandbox::FIELDS,
            Sandbox::NESTED,
            None,
        )
        .unwrap();
        assert!(sandbox["status"]["podIP"].is_null());
        assert!(sandbox["status"].get("podIPs").is_some_and(|v| v.is_null()));
        let claim = SandboxClaimStatus {
            sandbox: Some(crate::api::ClaimedSandboxStatus {
                name: Some("s".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let claim = status_patch(&claim, SandboxClaim::FIELDS, SandboxClaim::NESTED, None).unwrap();
        assert_eq!(claim["status"]["sandbox"]["name"], "s");
        assert!(
            claim["status"]["sandbox"]
                .get("podIPs")
                .is_some_and(|v| v.is_null())
        );
    }
}
