//! Issuing and judging the webhook's certificates: pure functions of PEM
//! text and the current time, no I/O.
//!
//! The PKI has two levels. A self-signed CA, long lived, whose certificate
//! is what the API server trusts (the `caBundle`). A serving certificate,
//! shorter lived, signed by the CA, naming the webhook Service's DNS names
//! and any IP addresses; this is what the HTTPS server presents.
//!
//! [`plan_renewal`] decides what to reissue; [`WebhookPki::renew`] does it.
//! When the CA is replaced, the previous CA stays in the trust bundle until
//! it expires, so servers still presenting a certificate from the old CA
//! (another replica that has not reloaded yet) keep being trusted.
//!
//! Layout: [`PkiSettings`] (`settings`) says what to issue; `issue` makes a CA
//! or a serving certificate; `inspect` reads PEM/X.509 (expiry, key match,
//! names, trust bundles); `renewal` decides what is due; `time` holds the
//! saturating time arithmetic. [`WebhookPki`] (here) ties them together.

pub(crate) mod inspect;
mod issue;
mod renewal;
mod settings;
mod time;

pub use inspect::{not_after, not_after_der};
pub use issue::{IssuedCertificate, generate_ca, issue_serving};
pub use renewal::{Renewal, needs_rotation, plan_renewal};
pub use settings::PkiSettings;

use jiff::Timestamp;

use crate::Result;
use inspect::trust_bundle;

/// The webhook's whole PKI as stored in its Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookPki {
    /// The CA that signs serving certificates.
    pub ca: IssuedCertificate,
    /// The serving certificate the HTTPS server presents.
    pub serving: IssuedCertificate,
    /// The PEM certificates the API server should trust (`caBundle`): the
    /// current CA, then a previous one until it expires.
    pub ca_bundle: String,
}

impl WebhookPki {
    /// A fresh CA and a serving certificate signed by it.
    pub fn generate(settings: &PkiSettings, now: Timestamp) -> Result<Self> {
        let ca = generate_ca(&settings.ca_common_name, settings.ca_validity, now)?;
        let serving = serving_for(&ca, settings, now)?;
        Ok(Self {
            ca_bundle: ca.cert_pem.clone(),
            ca,
            serving,
        })
    }

    /// A fresh CA and a serving certificate signed by it, with a trust
    /// bundle that also keeps every certificate of `previous_cas` still
    /// valid at `now` (unreadable blocks are dropped): servers still
    /// presenting a certificate from a CA this one replaces stay trusted
    /// until they reload.
    pub fn generate_trusting(
        settings: &PkiSettings,
        now: Timestamp,
        previous_cas: &str,
    ) -> Result<Self> {
        let mut pki = Self::generate(settings, now)?;
        pki.ca_bundle = trust_bundle(&pki.ca.cert_pem, previous_cas, now);
        Ok(pki)
    }

    /// Rebuilds the PKI from the PEM texts of a Secret, reading the expiry
    /// dates from the certificates (the first block of each). A missing or
    /// empty bundle means the CA alone; blocks of the bundle that are not
    /// readable certificates are dropped, and the CA is put first if the
    /// bundle lacks it.
    pub fn from_pem(
        ca_cert: &str,
        ca_key: &str,
        serving_cert: &str,
        serving_key: &str,
        ca_bundle: Option<&str>,
    ) -> Result<Self> {
        let ca = IssuedCertificate {
            not_after: not_after(ca_cert)?,
            cert_pem: ca_cert.to_owned(),
            key_pem: ca_key.to_owned(),
        };
        let serving = IssuedCertificate {
            not_after: not_after(serving_cert)?,
            cert_pem: serving_cert.to_owned(),
            key_pem: serving_key.to_owned(),
        };
        let ca_bundle = match ca_bundle {
            Some(bundle) if !bundle.trim().is_empty() => readable_bundle(ca_cert, bundle),
            _ => ca_cert.to_owned(),
        };
        Ok(Self {
            ca,
            serving,
            ca_bundle,
        })
    }

    /// Carries out `renewal`: a new serving certificate, and first a new CA
    /// when asked. The trust bundle keeps the previous CA while it is valid.
    pub fn renew(&self, renewal: Renewal, settings: &PkiSettings, now: Timestamp) -> Result<Self> {
        let (ca, ca_bundle) = match renewal {
            Renewal::NotDue => return Ok(self.clone()),
            Renewal::Serving => (
                self.ca.clone(),
                trust_bundle(&self.ca.cert_pem, &self.ca_bundle, now),
            ),
            Renewal::CaAndServing => {
                let ca = generate_ca(&settings.ca_common_name, settings.ca_validity, now)?;
                let previous = format!("{}\n{}", self.ca.cert_pem, self.ca_bundle);
                let bundle = trust_bundle(&ca.cert_pem, &previous, now);
                (ca, bundle)
            }
        };
        let serving = serving_for(&ca, settings, now)?;
        Ok(Self {
            ca,
            serving,
            ca_bundle,
        })
    }
}

/// The readable certificates of `bundle`, in order and without duplicates,
/// with the CA first when the bundle does not hold it.
fn readable_bundle(ca_cert: &str, bundle: &str) -> String {
    let mut blocks: Vec<&str> = inspect::pem_blocks(bundle)
        .into_iter()
        .filter(|block| block.certificate.is_ok())
        .map(|block| block.text)
        .collect();
    let ca_cert = ca_cert.trim();
    if !blocks.contains(&ca_cert) {
        blocks.insert(0, ca_cert);
    }
    let mut unique: Vec<&str> = Vec::with_capacity(blocks.len());
    for block in blocks {
        if !unique.contains(&block) {
            unique.push(block);
        }
    }
    let mut text = unique.join("\n");
    text.push('\n');
    text
}

/// A serving certificate signed by `ca` for the settings' names and lifetime.
fn serving_for(
    ca: &IssuedCertificate,
    settings: &PkiSettings,
    now: Timestamp,
) -> Result<IssuedCertificate> {
    issue_serving(
        ca,
        &settings.dns_names,
        &settings.ip_addresses,
        settings.serving_validity,
        now,
    )
}

#[cfg(test)]
mod tests;
