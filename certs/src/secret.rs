//! Keeping the PKI in one Secret that every replica agrees on.
//!
//! Expected flow: each replica calls [`load_or_create`] at start-up, then
//! on a timer asks [`plan_renewal`](crate::plan_renewal) whether anything is
//! due and, if so, calls [`rotate`].
//!
//! Guarantees: every write is conditioned on what was read. Creation relies
//! on the name being unique (a second create gets 409 `AlreadyExists`);
//! updates carry the `resourceVersion` that was read (a stale one gets 409
//! `Conflict`). The loser of either race reads the winner's Secret and uses
//! it, so all replicas converge on one CA and one serving key pair without
//! a leader.
//!
//! Caveats: a replica learns about another's rotation only when it next
//! reads the Secret; until then it keeps serving its (still valid) older
//! certificate, which the trust bundle still covers.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    Error, PkiSettings, Renewal, Result, WebhookPki,
    error::{is_conflict, is_not_found},
};

/// Secret key of the CA certificate.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Secret key of the CA private key.
pub const CA_KEY_KEY: &str = "ca.key";
/// Secret key of the serving certificate (the `kubernetes.io/tls` name).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key of the serving private key (the `kubernetes.io/tls` name).
pub const TLS_KEY_KEY: &str = "tls.key";
/// Secret key of the trust bundle: the current CA, then a previous one
/// while it is still valid. Absent means the CA alone.
pub const CA_BUNDLE_KEY: &str = "ca-bundle.crt";

/// How many times a write that lost a race is retried before giving up.
const MAX_ATTEMPTS: usize = 5;

/// The PKI with the `resourceVersion` of the Secret it was read from or
/// written to; the version is what the next write is conditioned on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPki {
    /// The certificates and keys.
    pub pki: WebhookPki,
    /// The Secret's `metadata.resourceVersion`.
    pub resource_version: String,
}

/// Returns the PKI stored in Secret `namespace/secret_name`, creating the
/// Secret with a freshly generated PKI when it does not exist.
///
/// A Secret that exists but is incomplete or unreadable is overwritten with
/// a fresh PKI, conditioned on its `resourceVersion`. When another replica
/// wins a create or update race, its Secret is read and returned instead:
/// all callers end up with the same PKI. The PKI is returned as stored; ask
/// [`plan_renewal`](crate::plan_renewal) whether it still fits the settings.
pub async fn load_or_create(
    client: &Client,
    namespace: &str,
    secret_name: &str,
    settings: &PkiSettings,
    now: Timestamp,
) -> Result<StoredPki> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let object = format!("Secret {namespace}/{secret_name}");
    for _attempt in 0..MAX_ATTEMPTS {
        let existing = api
            .get_opt(secret_name)
            .await
            .map_err(Error::kube(format!("read {object}")))?;
        let written = match existing {
            Some(secret) => {
                let resource_version = secret.metadata.resource_version.clone();
                match (pki_from_secret(&secret), resource_version) {
                    (Ok(pki), Some(resource_version)) => {
                        return Ok(StoredPki {
                            pki,
                            resource_version,
                        });
                    }
                    (Err(reason), Some(resource_version)) => {
                        tracing::warn!(
                            %object,
                            %reason,
                            "webhook PKI Secret is unusable, replacing it"
                        );
                        // Keep a sound CA: the caBundle the API server trusts
                        // stays valid, so only the serving pair changes and no
                        // admission fails while the new bundle propagates.
                        let pki = match salvage_ca(&secret, settings, now) {
                            Some(pki) => pki,
                            None => WebhookPki::generate(settings, now)?,
                        };
                        store(&api, namespace, secret_name, Some(&resource_version), pki).await
                    }
                    (_, None) => {
                        return Err(Error::MissingResourceVersion { object });
                    }
                }
            }
            None => {
                let pki = WebhookPki::generate(settings, now)?;
                store(&api, namespace, secret_name, None, pki).await
            }
        };
        match written {
            Ok(stored) => {
                tracing::info!(%object, "stored a new webhook PKI");
                return Ok(stored);
            }
            // Another replica wrote first: read again and use what it wrote.
            Err(error) if is_conflict(&error) => continue,
            Err(source) => return Err(Error::kube(format!("write {object}"))(source)),
        }
    }
    Err(Error::Contention {
        object,
        attempts: MAX_ATTEMPTS,
    })
}

/// Carries out `renewal` (from [`plan_renewal`](crate::plan_renewal)) on
/// `current` and writes the result to the Secret, conditioned on
/// `current.resource_version`.
///
/// If the Secret changed since `current` was read (another replica rotated
/// first), nothing is written and the Secret as it is now is returned, so
/// the caller adopts the winner's PKI; plan again on the result if needed.
pub async fn rotate(
    client: &Client,
    namespace: &str,
    secret_name: &str,
    current: &StoredPki,
    renewal: Renewal,
    settings: &PkiSettings,
    now: Timestamp,
) -> Result<StoredPki> {
    if renewal == Renewal::NotDue {
        return Ok(current.clone());
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let renewed = current.pki.renew(renewal, settings, now)?;
    let read_at = Some(current.resource_version.as_str());
    match store(&api, namespace, secret_name, read_at, renewed).await {
        Ok(stored) => {
            tracing::info!(
                secret = %format!("{namespace}/{secret_name}"),
                ?renewal,
                serving_not_after = %stored.pki.serving.not_after,
                "rotated webhook certificates"
            );
            Ok(stored)
        }
        Err(error) if is_conflict(&error) || is_not_found(&error) => {
            tracing::info!(
                secret = %format!("{namespace}/{secret_name}"),
                "webhook PKI Secret changed under us, adopting its content"
            );
            load_or_create(client, namespace, secret_name, settings, now).await
        }
        Err(source) => Err(Error::Kube {
            action: format!("update Secret {namespace}/{secret_name}"),
            source,
        }),
    }
}

/// Stores `pki` in the Secret and returns it with the new `resourceVersion`.
///
/// With `read_at: None` the Secret is created, which fails with 409
/// `AlreadyExists` if any replica created it first. With the
/// `resourceVersion` it was read at, only the PKI keys are replaced, and only
/// if the Secret is still at that version (a merge patch carrying the
/// version is refused with 409 otherwise); other keys, labels and the type
/// are left alone.
async fn store(
    api: &Api<Secret>,
    namespace: &str,
    secret_name: &str,
    read_at: Option<&str>,
    pki: WebhookPki,
) -> Result<StoredPki, kube::Error> {
    let written = match read_at {
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(secret_name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".to_owned()),
                data: Some(secret_data(&pki)),
                ..Secret::default()
            };
            api.create(&PostParams::default(), &secret).await?
        }
        Some(resource_version) => {
            let patch = json!({
                "metadata": { "resourceVersion": resource_version },
                "data": secret_data(&pki),
            });
            api.patch(secret_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?
        }
    };
    Ok(StoredPki {
        pki,
        resource_version: written.metadata.resource_version.unwrap_or_default(),
    })
}

fn secret_data(pki: &WebhookPki) -> BTreeMap<String, ByteString> {
    [
        (CA_CERT_KEY, &pki.ca.cert_pem),
        (CA_KEY_KEY, &pki.ca.key_pem),
        (TLS_CERT_KEY, &pki.serving.cert_pem),
        (TLS_KEY_KEY, &pki.serving.key_pem),
        (CA_BUNDLE_KEY, &pki.ca_bundle),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), ByteString(value.as_bytes().to_vec())))
    .collect()
}

/// Reads the PKI out of a Secret, or says what is wrong with it.
/// A PKI keeping the Secret's CA (when its certificate and key are readable,
/// match and are not due for renewal) with a freshly issued serving pair.
fn salvage_ca(secret: &Secret, settings: &PkiSettings, now: Timestamp) -> Option<WebhookPki> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(key).and_then(|v| std::str::from_utf8(&v.0).ok());
    let (ca_cert, ca_key) = (text(CA_CERT_KEY)?, text(CA_KEY_KEY)?);
    let ca = crate::IssuedCertificate {
        not_after: crate::not_after(ca_cert).ok()?,
        cert_pem: ca_cert.to_owned(),
        key_pem: ca_key.to_owned(),
    };
    let serving = crate::issue_serving(
        &ca,
        &settings.dns_names,
        &settings.ip_addresses,
        settings.serving_validity,
        now,
    )
    .ok()?;
    let ca_bundle = text(CA_BUNDLE_KEY).unwrap_or(ca_cert).to_owned();
    let pki = WebhookPki {
        ca,
        serving,
        ca_bundle,
    };
    // The CA must still be sound by the renewal rules; otherwise start over.
    (crate::plan_renewal(&pki, settings, now) == crate::Renewal::NotDue).then_some(pki)
}

fn pki_from_secret(secret: &Secret) -> std::result::Result<WebhookPki, String> {
    let data = secret.data.as_ref();
    let text = |key: &str| -> std::result::Result<Option<&str>, String> {
        match data.and_then(|data| data.get(key)) {
            None => Ok(None),
            Some(value) => std::str::from_utf8(&value.0)
                .map(Some)
                .map_err(|_| format!("key {key} is not UTF-8")),
        }
    };
    let required = |key: &str| text(key)?.ok_or_else(|| format!("key {key} is missing"));
    WebhookPki::from_pem(
        required(CA_CERT_KEY)?,
        required(CA_KEY_KEY)?,
        required(TLS_CERT_KEY)?,
        required(TLS_KEY_KEY)?,
        text(CA_BUNDLE_KEY)?,
    )
    .map_err(|error| error.describe())
}
