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
//! Whenever a new CA has to be generated (the Secret is missing, or
//! unusable with no sound CA to salvage), the new trust bundle is the new
//! CA followed by every still-valid CA the caller remembers (the PKI it
//! last loaded) and every still-valid CA readable in the unusable Secret.
//! A deleted Secret still gets a new CA and serving pair: the old CA is
//! only kept trusted, not reused.
//!
//! Caveats: a replica learns about another's rotation only when it next
//! reads the Secret; until then it keeps serving its (still valid) older
//! certificate, which the trust bundle still covers as long as some
//! replica that knew the older CA wrote the new bundle. A process that
//! starts with no memory and finds no Secret cannot know the CA the other
//! replicas serve; their older certificates are then untrusted until their
//! next pass picks up the new pair.

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
    pki::inspect::{every_block_a_certificate, trust_bundle},
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
/// A Secret that exists but is incomplete or unreadable (a key missing, a
/// key that does not parse, any PEM block of `tls.crt` or `ca.crt` that is
/// not a certificate) is overwritten, conditioned on its `resourceVersion`,
/// keeping its CA when that is sound. When another replica wins a create or
/// update race, its Secret is read and returned instead: all callers end up
/// with the same PKI. The PKI is returned as stored; ask
/// [`plan_renewal`](crate::plan_renewal) whether it still fits the settings.
///
/// `remembered` is the PKI this process last loaded, if any. When a new CA
/// must be generated, its still-valid CAs (and those still readable in an
/// unusable Secret) stay in the new trust bundle, so servers still
/// presenting a certificate they signed stay trusted until they reload.
pub async fn load_or_create(
    client: &Client,
    namespace: &str,
    secret_name: &str,
    remembered: Option<&WebhookPki>,
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
                        let previous = previous_cas(remembered, Some(&secret));
                        let pki = match salvage_ca(&secret, &previous, settings, now) {
                            Some(pki) => pki,
                            None => WebhookPki::generate_trusting(settings, now, &previous)?,
                        };
                        store(&api, namespace, secret_name, Some(&resource_version), pki).await
                    }
                    (_, None) => {
                        return Err(Error::MissingResourceVersion { object });
                    }
                }
            }
            None => {
                let previous = previous_cas(remembered, None);
                let pki = WebhookPki::generate_trusting(settings, now, &previous)?;
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
            load_or_create(
                client,
                namespace,
                secret_name,
                Some(&current.pki),
                settings,
                now,
            )
            .await
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

/// The CA certificates a new trust bundle should keep while they are valid:
/// those of the remembered PKI, then those of the (unusable) Secret.
/// Unreadable and expired blocks are dropped later, by the bundle builder.
fn previous_cas(remembered: Option<&WebhookPki>, secret: Option<&Secret>) -> String {
    let mut previous = Vec::new();
    if let Some(pki) = remembered {
        previous.push(pki.ca.cert_pem.clone());
        previous.push(pki.ca_bundle.clone());
    }
    if let Some(data) = secret.and_then(|secret| secret.data.as_ref()) {
        for key in [CA_CERT_KEY, CA_BUNDLE_KEY] {
            if let Some(text) = data.get(key).and_then(|v| std::str::from_utf8(&v.0).ok()) {
                previous.push(text.to_owned());
            }
        }
    }
    previous.join("\n")
}

/// A PKI keeping the Secret's CA (when its certificate and key are readable,
/// match and are not due for renewal) with a freshly issued serving pair;
/// the bundle keeps the still-valid certificates of the Secret's bundle and
/// of `previous`.
fn salvage_ca(
    secret: &Secret,
    previous: &str,
    settings: &PkiSettings,
    now: Timestamp,
) -> Option<WebhookPki> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(key).and_then(|v| std::str::from_utf8(&v.0).ok());
    let (ca_cert, ca_key) = (text(CA_CERT_KEY)?, text(CA_KEY_KEY)?);
    every_block_a_certificate(ca_cert).ok()?;
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
    let pki = WebhookPki {
        ca_bundle: trust_bundle(ca_cert, previous, now),
        ca,
        serving,
    };
    // The CA must still be sound by the renewal rules; otherwise start over.
    (crate::plan_renewal(&pki, settings, now) == crate::Renewal::NotDue).then_some(pki)
}

/// Reads the PKI out of a Secret, or says what is wrong with it, naming the
/// key. Judged as strictly as the HTTPS server's loader reads the pair:
/// every PEM block of `tls.crt` and `ca.crt` must be a certificate and both
/// keys must parse. Unreadable blocks of the bundle are dropped instead.
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
    let certificates = |key: &str| {
        let pem = required(key)?;
        every_block_a_certificate(pem).map_err(|reason| format!("key {key}: {reason}"))?;
        Ok::<_, String>(pem)
    };
    let private_key = |key: &str| {
        let pem = required(key)?;
        rcgen::KeyPair::from_pem(pem)
            .map_err(|error| format!("key {key}: not a readable private key: {error}"))?;
        Ok::<_, String>(pem)
    };
    WebhookPki::from_pem(
        certificates(CA_CERT_KEY)?,
        private_key(CA_KEY_KEY)?,
        certificates(TLS_CERT_KEY)?,
        private_key(TLS_KEY_KEY)?,
        text(CA_BUNDLE_KEY)?,
    )
    .map_err(|error| error.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_with(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(key, value)| ((*key).to_owned(), ByteString(value.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn pki() -> WebhookPki {
        let settings = PkiSettings::for_service("svc", "ns");
        WebhookPki::generate(&settings, Timestamp::now()).unwrap()
    }

    fn data_of(pki: &WebhookPki) -> Vec<(&'static str, String)> {
        vec![
            (CA_CERT_KEY, pki.ca.cert_pem.clone()),
            (CA_KEY_KEY, pki.ca.key_pem.clone()),
            (TLS_CERT_KEY, pki.serving.cert_pem.clone()),
            (TLS_KEY_KEY, pki.serving.key_pem.clone()),
            (CA_BUNDLE_KEY, pki.ca_bundle.clone()),
        ]
    }

    fn judge(data: &[(&'static str, String)]) -> std::result::Result<WebhookPki, String> {
        let borrowed: Vec<(&str, &str)> = data.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pki_from_secret(&secret_with(&borrowed))
    }

    const GARBAGE_BLOCK: &str = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";

    /// The Secret's data of `pki` with the value of `key` changed by `edit`.
    fn edited(
        pki: &WebhookPki,
        key: &str,
        edit: impl Fn(&str) -> String,
    ) -> Vec<(&'static str, String)> {
        data_of(pki)
            .into_iter()
            .map(|(k, v)| if k == key { (k, edit(&v)) } else { (k, v) })
            .collect()
    }

    #[test]
    fn a_sound_secret_reads_back_as_written() {
        let pki = pki();
        assert_eq!(judge(&data_of(&pki)), Ok(pki));
    }

    /// The HTTPS server's loader reads every block; so must the judge.
    #[test]
    fn a_bad_block_after_a_good_certificate_makes_the_secret_unusable() {
        let pki = pki();
        let cases = [
            (
                TLS_CERT_KEY,
                GARBAGE_BLOCK,
                "key tls.crt: block 2 is not a certificate",
            ),
            (
                TLS_CERT_KEY,
                "-----BEGIN CERTIFICATE-----\nMIIB\n",
                "key tls.crt: block 2 is not a certificate",
            ),
            (
                CA_CERT_KEY,
                GARBAGE_BLOCK,
                "key ca.crt: block 2 is not a certificate",
            ),
            (
                TLS_CERT_KEY,
                // A block of another PEM type (made up, no key material).
                "-----BEGIN OTHER BLOCK-----\nAAAA\n-----END OTHER BLOCK-----\n",
                "key tls.crt: block 2 is not a certificate",
            ),
        ];
        for (key, appended, reason) in cases {
            let data = edited(&pki, key, |v| format!("{v}{appended}"));
            let error = judge(&data).expect_err(key);
            assert!(error.starts_with(reason), "{key}: {error}");
        }
    }

    #[test]
    fn an_unreadable_key_makes_the_secret_unusable() {
        let pki = pki();
        let data = edited(&pki, TLS_KEY_KEY, |_| "not a key".to_owned());
        let error = judge(&data).unwrap_err();
        assert!(
            error.starts_with("key tls.key: not a readable private key"),
            "{error}"
        );
    }

    #[test]
    fn unreadable_bundle_blocks_are_dropped() {
        let pki = pki();
        let data = edited(&pki, CA_BUNDLE_KEY, |v| format!("{v}{GARBAGE_BLOCK}"));
        assert_eq!(judge(&data).unwrap().ca_bundle, pki.ca_bundle);
    }
}
