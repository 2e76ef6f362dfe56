//! Status writes: one JSON merge patch on the status subresource.

use kube::Resource;
use kube::api::Api;

use super::errors::{Result, is_not_found, kube_err};

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
