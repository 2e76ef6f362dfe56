//! Ownership the operator wrote: controller ownerReferences, and creates
//! that treat AlreadyExists as success only for an object this owner controls.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::{Api, PostParams};

use super::errors::{Error, Result, is_already_exists, kube_err};

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

/// What [`create_owned`] found.
#[derive(Debug)]
pub enum Created<K> {
    /// This call created it; the API server's answer.
    New(K),
    /// It already existed, controlled by the same owner (an earlier
    /// reconcile, or another process, created it); the object as read.
    Existing(K),
}

impl<K> Created<K> {
    /// The object, however it came to be.
    pub fn into_inner(self) -> K {
        match self {
            Created::New(k) | Created::Existing(k) => k,
        }
    }
}

/// Creates `obj`, whose metadata carries its controller ownerReference.
///
/// Guarantee: an AlreadyExists answer counts as success only when the
/// object found under that name is controlled by the same owner uid (read
/// back from the API server); anything else is [`Error::NameConflict`] and
/// the object is never used.
pub(crate) async fn create_owned<K>(api: &Api<K>, obj: &K, kind: &'static str) -> Result<Created<K>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let owner = obj
        .meta()
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true))
        .cloned()
        .ok_or(Error::Incomplete("created object has no controller"))?;
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
        Ok(created) => Ok(Created::New(created)),
        Err(e) if is_already_exists(&e) => {
            let existing = api
                .get(&name)
                .await
                .map_err(kube_err(format!("read existing {kind} {name}")))?;
            if controller_uid(existing.meta()) == Some(owner.uid.as_str()) {
                Ok(Created::Existing(existing))
            } else {
                Err(Error::NameConflict {
                    kind,
                    name,
                    owner: format!("{} {}", owner.kind, owner.name),
                })
            }
        }
        Err(e) => Err(kube_err(format!("create {kind} {name}"))(e)),
    }
}
