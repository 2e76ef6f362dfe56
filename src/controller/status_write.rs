//! Status writes: one JSON merge patch on the status subresource,
//! conditioned on the resourceVersion the status was computed from.

use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::errors::{Result, is_conflict, is_not_found, kube_err};

/// Replaces an object's status with ONE JSON merge patch on the status
/// subresource: every top-level field in `fields` that `status` leaves out
/// is sent as `null`, so the stored status equals `status` exactly (a
/// field that went away is removed). No read-modify-write, and cheaper for
/// the API server than server-side apply on objects carrying a pod template.
/// A deleted object is not an error.
///
/// The patch carries `object`'s resourceVersion, so the API server applies
/// it only to the version the status was computed from: a status computed
/// from a stale cache, or one sent late by a process that has since lost
/// the leader Lease, is refused with 409 Conflict (an error of class
/// writes nothing and returns `Ok(false)`: the newer version's watch event
/// reconciles again and computes the status anew) instead of overwriting a
/// newer status. `Ok(true)`: the status is stored (or the object is gone).
pub(crate) async fn write_status<K, S>(
    api: &Api<K>,
    object: &K,
    status: &S,
    fields: &[&str],
    what: &str,
) -> Result<bool>
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
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": object.resource_version() },
        "status": value,
    });
    match api
        .patch_status(&object.name_any(), &params, &kube::api::Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(true),
        Err(e) if is_conflict(&e) => {
            tracing::debug!(
                name = object.name_any(),
                "{what} status computed from a stale version; the newer one will be reconciled"
            );
            Ok(false)
        }
        Err(e) => Err(kube_err(format!("write {what} status"))(e)),
    }
}
