//! Publishing the CA to the API server: `caBundle` on every webhook entry.
//!
//! A webhook configuration lists several webhooks, each with its own
//! `clientConfig.caBundle`. A merge patch cannot set a field inside every
//! element of a list, so each configuration is read, every entry is given
//! the bundle, and the whole object is replaced with the `resourceVersion`
//! that was read: a concurrent edit (a Helm upgrade, another replica) makes
//! the write fail with 409 and the read-modify-write starts over, instead
//! of silently undoing the other change.

use std::fmt::Debug;

use k8s_openapi::{
    ByteString,
    api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
    },
};
use kube::{Api, Client, Resource, api::PostParams, core::ClusterResourceScope};
use serde::{Serialize, de::DeserializeOwned};

use crate::{Error, Result, error::is_conflict};

/// How many times a replace that lost a race is retried before giving up.
const MAX_ATTEMPTS: usize = 5;

/// Sets `caBundle` to `ca_bundle` (PEM) on every webhook of the named
/// mutating and validating webhook configurations.
///
/// Configurations whose every entry already carries the bundle are not
/// written. A configuration that does not exist (yet) is reported in
/// [`Injection::missing`] rather than failing the call: it may be created
/// later, and the next call fills it in. Every named configuration is
/// attempted even if an earlier one fails; the first error is returned (and
/// not logged here), the others are logged.
pub async fn inject_ca_bundle(
    client: &Client,
    mutating_names: &[String],
    validating_names: &[String],
    ca_bundle: &str,
) -> Result<Injection> {
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mut outcomes = Vec::new();
    for name in mutating_names {
        outcomes.push(inject_into(&mutating, name, ca_bundle).await);
    }
    for name in validating_names {
        outcomes.push(inject_into(&validating, name, ca_bundle).await);
    }

    let mut injection = Injection::default();
    let mut first_error = None;
    for outcome in outcomes {
        match outcome {
            Ok((object, Outcome::Changed)) => injection.changed.push(object),
            Ok((_, Outcome::AlreadySet)) => {}
            Ok((object, Outcome::Missing)) => injection.missing.push(object),
            // The first error is the caller's to report; only the others
            // are logged here.
            Err(error) if first_error.is_none() => first_error = Some(error),
            Err(error) => {
                tracing::warn!(error = %error.describe(), "caBundle injection failed too");
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(injection),
    }
}

/// What [`inject_ca_bundle`] did, each configuration named `Kind name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Injection {
    /// Configurations that were written.
    pub changed: Vec<String>,
    /// Configurations that do not exist.
    pub missing: Vec<String>,
}

enum Outcome {
    Changed,
    AlreadySet,
    Missing,
}

/// A webhook configuration whose entries each have a client config.
pub(crate) trait WebhookConfiguration:
    Resource<Scope = ClusterResourceScope, DynamicType = ()>
    + k8s_openapi::Resource
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig>;
}

/// Both configuration kinds hold their entries' client configs the same way.
macro_rules! client_configs_of {
    ($($kind:ty),+) => {$(
        impl WebhookConfiguration for $kind {
            fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
                self.webhooks
                    .iter_mut()
                    .flatten()
                    .map(|webhook| &mut webhook.client_config)
                    .collect()
            }
        }
    )+};
}

client_configs_of!(MutatingWebhookConfiguration, ValidatingWebhookConfiguration);

/// Sets the bundle on every entry of one configuration.
async fn inject_into<K: WebhookConfiguration>(
    api: &Api<K>,
    name: &str,
    ca_bundle: &str,
) -> Result<(String, Outcome)> {
    let kind = <K as k8s_openapi::Resource>::KIND;
    let object = format!("{kind} {name}");
    for _attempt in 0..MAX_ATTEMPTS {
        let Some(mut configuration) = api
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("read {object}")))?
        else {
            return Ok((object, Outcome::Missing));
        };
        if !set_ca_bundle(configuration.client_configs(), ca_bundle) {
            return Ok((object, Outcome::AlreadySet));
        }
        // The object carries the resourceVersion it was read at, so the
        // replace fails with 409 if anyone changed it since.
        match api
            .replace(name, &PostParams::default(), &configuration)
            .await
        {
            Ok(_) => {
                tracing::info!(%object, "injected caBundle");
                return Ok((object, Outcome::Changed));
            }
            Err(error) if is_conflict(&error) => continue,
            Err(source) => return Err(Error::kube(format!("update {object}"))(source)),
        }
    }
    Err(Error::Contention {
        object,
        attempts: MAX_ATTEMPTS,
    })
}

/// Sets `caBundle` on each client config; returns whether any changed.
fn set_ca_bundle(client_configs: Vec<&mut WebhookClientConfig>, ca_bundle: &str) -> bool {
    let mut changed = false;
    for client_config in client_configs {
        if !carries(client_config, ca_bundle) {
            client_config.ca_bundle = Some(ByteString(ca_bundle.as_bytes().to_vec()));
            changed = true;
        }
    }
    changed
}

/// Whether a client config's `caBundle` is exactly `ca_bundle`: what
/// [`inject_ca_bundle`] leaves alone, and what the watch of
/// [`crate::reset_watch`] expects to see.
pub(crate) fn carries(client_config: &WebhookClientConfig, ca_bundle: &str) -> bool {
    client_config
        .ca_bundle
        .as_ref()
        .is_some_and(|bundle| bundle.0 == ca_bundle.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_every_entry_and_reports_no_change_the_second_time() {
        let mut configs = [
            WebhookClientConfig::default(),
            WebhookClientConfig {
                ca_bundle: Some(ByteString(b"old".to_vec())),
                ..WebhookClientConfig::default()
            },
        ];
        assert!(set_ca_bundle(configs.iter_mut().collect(), "new"));
        assert!(
            configs
                .iter()
                .all(|config| config.ca_bundle == Some(ByteString(b"new".to_vec())))
        );
        assert!(!set_ca_bundle(configs.iter_mut().collect(), "new"));
    }
}
