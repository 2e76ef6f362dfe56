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

/// Whether `reference` names one of the operator's kinds, by API group and
/// kind: the references the ownership guard lets only the operator add.
pub fn is_operator_kind(reference: &OwnerReference) -> bool {
    let group = reference.api_version.split('/').next().unwrap_or_default();
    matches!(
        (group, reference.kind.as_str()),
        ("agents.x-k8s.io", "Sandbox")
            | (
                "extensions.agents.x-k8s.io",
                "SandboxClaim" | "SandboxWarmPool" | "SandboxTemplate"
            )
    )
}

/// The uid of the object's controller owner, when that owner is one of the
/// operator's kinds ([`is_operator_kind`]). Every ownership decision
/// compares this uid with a pool's, claim's, Sandbox's or template's, so a
/// controller reference of any other group or kind carrying such a uid (one
/// the ownership guard would not judge) counts for nothing.
pub fn controller_uid(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .filter(|r| is_operator_kind(r))
        .map(|r| r.uid.as_str())
}

/// Whether a claim's Sandbox, or the claim itself, controls the object:
/// its operator-kind controller is `claim_uid` or the Sandbox's uid. The
/// one rule for "the claim holds this Pod" (claim repair, Sandbox plan,
/// named-Pod wake-ups).
pub fn held_by_claim(
    meta: &kube::api::ObjectMeta,
    claim_uid: &str,
    sandbox: &kube::api::ObjectMeta,
) -> bool {
    controller_uid(meta).is_some_and(|uid| uid == claim_uid || Some(uid) == sandbox.uid.as_deref())
}

/// Whether the object has a controller at all, of any kind: one that is
/// not the operator's ([`controller_uid`] says `None` for it) still owns
/// the object, which is then never "unowned" (adoptable).
pub fn has_controller(meta: &kube::api::ObjectMeta) -> bool {
    meta.owner_references
        .as_deref()
        .is_some_and(|refs| refs.iter().any(|r| r.controller == Some(true)))
}

/// The controller reference of an object, when it names one of the
/// operator's kinds and that kind is `kind`.
pub fn controller_of_kind<'a>(
    references: &'a [OwnerReference],
    kind: &str,
) -> Option<&'a OwnerReference> {
    references
        .iter()
        .find(|r| r.controller == Some(true))
        .filter(|r| r.kind == kind && is_operator_kind(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(api_version: &str, kind: &str) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: "pool".into(),
                uid: "pool-uid".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_controller_of_the_operators_kinds_counts() {
        let pool = meta("extensions.agents.x-k8s.io/v1alpha1", "SandboxWarmPool");
        assert_eq!(controller_uid(&pool), Some("pool-uid"));
        let sandbox = meta("agents.x-k8s.io/v1", "Sandbox");
        assert_eq!(controller_uid(&sandbox), Some("pool-uid"));
        // The pool's uid under another group or kind: not the pool.
        for (api_version, kind) in [
            ("v1", "SandboxWarmPool"),
            ("example.com/v1", "SandboxWarmPool"),
            ("extensions.agents.x-k8s.io/v1alpha1", "Deployment"),
            ("agents.x-k8s.io/v1", "SandboxClaim"),
        ] {
            let foreign = meta(api_version, kind);
            assert_eq!(controller_uid(&foreign), None, "{api_version} {kind}");
            assert!(has_controller(&foreign), "still owned: never adoptable");
        }
        assert!(!has_controller(&kube::api::ObjectMeta::default()));
    }
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
        // A quota is checked before the name: an object that exists
        // already (a Sandbox's volume claim made again with its Pod) is
        // refused "exceeded quota" in a namespace at its limit, not
        // AlreadyExists. Ours under the name, it is the one wanted.
        Err(e) if crate::controller::errors::kube_error_class(&e) == "quota" => {
            match api.get_opt(&name).await {
                Ok(Some(existing))
                    if controller_uid(existing.meta()) == Some(owner.uid.as_str()) =>
                {
                    Ok(Created::Existing(existing))
                }
                _ => Err(kube_err(format!("create {kind} {name}"))(e)),
            }
        }
        Err(e) => Err(kube_err(format!("create {kind} {name}"))(e)),
    }
}
