//! Registration by URL (`run --register-webhook-url`, for local runs): the
//! configurations it writes carry its marker, and it writes, and deletes
//! on exit, only configurations that carry it.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};

use super::{ByUrl, by_url};
use crate::api::FIELD_MANAGER;
use crate::controller::is_conflict;

/// The label registration by URL writes on both configurations, with the
/// value [`REGISTERED_BY_URL`]: the marker of a configuration this operator
/// made by URL. One without it (the Helm chart's carries
/// `app.kubernetes.io/managed-by: Helm`) is never overwritten nor deleted.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// See [`MANAGED_BY_LABEL`].
pub const REGISTERED_BY_URL: &str = "sandbox-operator";

/// Whether a configuration carries the marker of registration by URL.
pub fn registered_by_url(metadata: &ObjectMeta) -> bool {
    metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == REGISTERED_BY_URL)
}

/// Why registering by URL failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A configuration of that name exists and is not ours.
    #[error(
        "{kind} {name} already exists and was not registered by URL by this operator \
         ({MANAGED_BY_LABEL}: {managed_by}, not {REGISTERED_BY_URL}); refusing to point it at this \
         process or delete it on exit. If it is the Helm chart's, leave it; choose another name \
         for this process's configurations with --webhook-config-name"
    )]
    NotOurs {
        /// `MutatingWebhookConfiguration` or `ValidatingWebhookConfiguration`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The value of its managed-by label, or `(none)`.
        managed_by: String,
    },
    /// An API call failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What was attempted, naming the object.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The object kept changing between our read and write.
    #[error("gave up on {kind} {name}: it kept changing between read and write")]
    Contention {
        /// The kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
}

/// A configuration as this process registered it: what deleting it on
/// exit is conditioned on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion` right after the write.
    pub resource_version: String,
}

/// Both configurations as registered by [`register_by_url`].
#[derive(Clone, Debug)]
pub struct Registered {
    /// Name of both.
    pub name: String,
    /// The base URL they point at.
    pub base_url: String,
    /// The MutatingWebhookConfiguration.
    pub mutating: Applied,
    /// The ValidatingWebhookConfiguration.
    pub validating: Applied,
}

/// A webhook configuration kind, with the client configs of its entries.
trait Configuration:
    kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
    + k8s_openapi::Resource
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
{
    fn urls(&self) -> Vec<Option<&str>>;
}

impl Configuration for MutatingWebhookConfiguration {
    fn urls(&self) -> Vec<Option<&str>> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| w.client_config.url.as_deref())
            .collect()
    }
}

impl Configuration for ValidatingWebhookConfiguration {
    fn urls(&self) -> Vec<Option<&str>> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| w.client_config.url.as_deref())
            .collect()
    }
}

/// How many times a write that lost a race is retried.
const MAX_ATTEMPTS: usize = 5;

/// Refuses when a configuration named `name` exists without the marker of
/// registration by URL. Call it before anything writes to them (the
/// certificate manager injects its caBundle into configurations of that
/// name); [`register_by_url`] checks again at each write.
pub async fn check_ours(client: &Client, name: &str) -> Result<(), RegisterError> {
    check_one(
        &Api::<MutatingWebhookConfiguration>::all(client.clone()),
        name,
    )
    .await?;
    check_one(
        &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        name,
    )
    .await?;
    Ok(())
}

async fn check_one<K: Configuration>(api: &Api<K>, name: &str) -> Result<Option<K>, RegisterError> {
    let kind = <K as k8s_openapi::Resource>::KIND;
    let existing = api
        .get_opt(name)
        .await
        .map_err(|source| RegisterError::Kube {
            action: format!("read {kind} {name}"),
            source,
        })?;
    match existing {
        Some(existing) if !registered_by_url(existing.meta()) => Err(RegisterError::NotOurs {
            kind,
            name: name.to_owned(),
            managed_by: existing
                .meta()
                .labels
                .as_ref()
                .and_then(|labels| labels.get(MANAGED_BY_LABEL))
                .cloned()
                .unwrap_or_else(|| "(none)".to_owned()),
        }),
        existing => Ok(existing),
    }
}

/// Creates or updates both configurations by URL, never over one that is
/// not ours ([`registered_by_url`]): an existing one is updated by
/// server-side apply conditioned on the `resourceVersion` it was checked
/// at, an absent one is created (409 if someone created it meanwhile; then
/// it is checked again).
pub async fn register_by_url(
    client: &Client,
    target: &ByUrl<'_>,
) -> Result<Registered, RegisterError> {
    let name = target.name;
    let (mutating, validating) = by_url(target);
    let mutating = register_one(
        &Api::<MutatingWebhookConfiguration>::all(client.clone()),
        name,
        &mutating,
    )
    .await?;
    let validating = register_one(
        &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        name,
        &validating,
    )
    .await?;
    Ok(Registered {
        name: name.to_owned(),
        base_url: target.base_url.trim_end_matches('/').to_owned(),
        mutating,
        validating,
    })
}

async fn register_one<K: Configuration>(
    api: &Api<K>,
    name: &str,
    desired: &K,
) -> Result<Applied, RegisterError> {
    let kind = <K as k8s_openapi::Resource>::KIND;
    let failed = |verb: &str| {
        let action = format!("{verb} {kind} {name}");
        move |source| RegisterError::Kube { action, source }
    };
    for _attempt in 0..MAX_ATTEMPTS {
        let written = match check_one(api, name).await? {
            Some(existing) => {
                let mut body = serde_json::to_value(desired).expect("serializable");
                body["apiVersion"] = <K as k8s_openapi::Resource>::API_VERSION.into();
                body["kind"] = kind.into();
                // Applied only over the version just checked: a 409 if it
                // changed (possibly to someone else's) since.
                body["metadata"]["resourceVersion"] =
                    existing.meta().resource_version.clone().into();
                let params = PatchParams::apply(FIELD_MANAGER).force();
                api.patch(name, &params, &Patch::Apply(body)).await
            }
            None => {
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                api.create(&params, desired).await
            }
        };
        match written {
            Ok(object) => {
                return Ok(Applied {
                    uid: object.meta().uid.clone().unwrap_or_default(),
                    resource_version: object.meta().resource_version.clone().unwrap_or_default(),
                });
            }
            Err(error) if is_conflict(&error) => continue,
            Err(source) => return Err(failed("write")(source)),
        }
    }
    Err(RegisterError::Contention {
        kind,
        name: name.to_owned(),
    })
}

/// Deletes both configurations registered by [`register_by_url`], each only
/// if it is still the object this process wrote: the delete carries its
/// uid and resourceVersion as preconditions. On a 409 the object is read
/// again; it is still deleted when only its caBundle can have changed (same
/// uid, still marked as registered by URL, every entry still pointing at
/// this process's base URL: this process's certificate manager rewrites
/// the caBundle after a CA change), and otherwise left in place and logged.
pub async fn unregister(client: &Client, registered: &Registered) {
    delete_one(
        &Api::<MutatingWebhookConfiguration>::all(client.clone()),
        registered,
        &registered.mutating,
    )
    .await;
    delete_one(
        &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        registered,
        &registered.validating,
    )
    .await;
}

async fn delete_one<K: Configuration>(api: &Api<K>, registered: &Registered, applied: &Applied) {
    let kind = <K as k8s_openapi::Resource>::KIND;
    let name = registered.name.as_str();
    let mut resource_version = applied.resource_version.clone();
    for _attempt in 0..MAX_ATTEMPTS {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(applied.uid.clone()),
                resource_version: Some(resource_version.clone()),
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(kind, name, "removed the URL-based webhook configuration");
                return;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => return,
            Err(error) if is_conflict(&error) => {
                let current = match api.get_opt(name).await {
                    Ok(Some(current)) => current,
                    Ok(None) => return,
                    Err(error) => {
                        tracing::warn!(kind, name, %error, "could not read the webhook configuration again; left in place");
                        return;
                    }
                };
                let prefix = format!("{}/", registered.base_url);
                let still_ours = current.meta().uid.as_deref() == Some(applied.uid.as_str())
                    && registered_by_url(current.meta())
                    && current
                        .urls()
                        .iter()
                        .all(|url| url.is_some_and(|url| url.starts_with(&prefix)));
                if !still_ours {
                    tracing::warn!(
                        kind,
                        name,
                        "the webhook configuration was changed by someone else since this process registered it; left in place"
                    );
                    return;
                }
                resource_version = current.meta().resource_version.clone().unwrap_or_default();
            }
            Err(error) => {
                tracing::warn!(kind, name, %error, "could not remove the URL-based webhook configuration");
                return;
            }
        }
    }
    tracing::warn!(
        kind,
        name,
        "the webhook configuration kept changing; left in place"
    );
}
