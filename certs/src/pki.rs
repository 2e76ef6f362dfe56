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

use std::{fmt, net::IpAddr, time::Duration};

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use x509_parser::{
    certificate::X509Certificate, extensions::GeneralName, pem::Pem, prelude::FromDer,
};

use crate::{Error, Result};

/// Certificates are valid from a little before their issue time, so a
/// client whose clock lags behind ours does not reject a fresh one.
const CLOCK_SKEW_ALLOWANCE: SignedDuration = SignedDuration::from_mins(5);

const END_CERTIFICATE: &str = "-----END CERTIFICATE-----";

/// What to issue and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiSettings {
    /// Common name of the self-signed CA.
    pub ca_common_name: String,
    /// DNS names the serving certificate must carry (the first one is also
    /// its common name).
    pub dns_names: Vec<String>,
    /// IP addresses the serving certificate must carry.
    pub ip_addresses: Vec<IpAddr>,
    /// Lifetime of a new CA certificate.
    pub ca_validity: Duration,
    /// Lifetime of a new serving certificate.
    pub serving_validity: Duration,
    /// Reissue the serving certificate when it expires within this window.
    /// Capped at half the serving validity so a misconfiguration cannot make
    /// every fresh certificate look due.
    pub rotate_before: Duration,
}

impl PkiSettings {
    /// Settings for a webhook behind the Service `service` in `namespace`:
    /// all the names the API server may use for it, a ten-year CA, one-year
    /// serving certificates reissued thirty days before they expire.
    pub fn for_service(service: &str, namespace: &str) -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self {
            ca_common_name: format!("{service}-ca"),
            dns_names: vec![
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
                format!("{service}.{namespace}"),
                service.to_owned(),
            ],
            ip_addresses: Vec::new(),
            ca_validity: Duration::from_secs(3650 * DAY),
            serving_validity: Duration::from_secs(365 * DAY),
            rotate_before: Duration::from_secs(30 * DAY),
        }
    }

    /// The window before expiry in which the serving certificate is reissued.
    fn serving_renewal_window(&self) -> SignedDuration {
        to_delta(self.rotate_before.min(self.serving_validity / 2))
    }

    /// The window before expiry in which the CA is replaced: early enough
    /// that a serving certificate issued just before still has its full
    /// lifetime under a valid CA, capped at half the CA's lifetime.
    fn ca_renewal_window(&self) -> SignedDuration {
        to_delta(
            (self.serving_validity.saturating_add(self.rotate_before)).min(self.ca_validity / 2),
        )
    }
}

/// A certificate with its private key, both PEM encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The end of the certificate's validity.
    pub not_after: Timestamp,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What needs reissuing, as decided by [`plan_renewal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Everything is valid, matches the settings and is not close to expiry.
    NotDue,
    /// Reissue the serving certificate from the current CA.
    Serving,
    /// Replace the CA and reissue the serving certificate from it.
    CaAndServing,
}

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
        let serving = issue_serving(
            &ca,
            &settings.dns_names,
            &settings.ip_addresses,
            settings.serving_validity,
            now,
        )?;
        Ok(Self {
            ca_bundle: ca.cert_pem.clone(),
            ca,
            serving,
        })
    }

    /// Rebuilds the PKI from the PEM texts of a Secret, reading the expiry
    /// dates from the certificates. A missing bundle means the CA alone.
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
            Some(bundle) if !bundle.trim().is_empty() => bundle.to_owned(),
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
        let serving = issue_serving(
            &ca,
            &settings.dns_names,
            &settings.ip_addresses,
            settings.serving_validity,
            now,
        )?;
        Ok(Self {
            ca,
            serving,
            ca_bundle,
        })
    }
}

/// Generates a self-signed CA certificate with a new ECDSA P-256 key, valid
/// from a few minutes before `now` for `validity`.
pub fn generate_ca(
    common_name: &str,
    validity: Duration,
    now: Timestamp,
) -> Result<IssuedCertificate> {
    let not_after = later(now, to_delta(validity));
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = to_offset(later(now, -CLOCK_SKEW_ALLOWANCE))?;
    params.not_after = to_offset(not_after)?;
    let key = KeyPair::generate().map_err(Error::Generate)?;
    let cert = params.self_signed(&key).map_err(Error::Generate)?;
    Ok(IssuedCertificate {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: truncate_to_seconds(not_after),
    })
}

/// Issues a serving certificate signed by `ca` for the given DNS names and
/// IP addresses, with a new ECDSA P-256 key. Its lifetime is `validity` but
/// never beyond the CA's.
pub fn issue_serving(
    ca: &IssuedCertificate,
    dns_names: &[String],
    ip_addresses: &[IpAddr],
    validity: Duration,
    now: Timestamp,
) -> Result<IssuedCertificate> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(Error::Generate)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(Error::Generate)?;
    let not_after = later(now, to_delta(validity)).min(ca.not_after);

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(first) = dns_names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    params.subject_alt_names = dns_names
        .iter()
        .map(|name| {
            let name = name.clone().try_into().map_err(Error::Generate)?;
            Ok(SanType::DnsName(name))
        })
        .chain(ip_addresses.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<_>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_offset(later(now, -CLOCK_SKEW_ALLOWANCE))?;
    params.not_after = to_offset(not_after)?;
    let key = KeyPair::generate().map_err(Error::Generate)?;
    let cert = params.signed_by(&key, &issuer).map_err(Error::Generate)?;
    Ok(IssuedCertificate {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: truncate_to_seconds(not_after),
    })
}

/// The end of validity of the first certificate in a PEM text.
pub fn not_after(cert_pem: &str) -> Result<Timestamp> {
    with_certificate(cert_pem, |cert| {
        Timestamp::from_second(cert.validity().not_after.timestamp())
            .map_err(|_| Error::TimeOutOfRange)
    })
}

/// Whether a certificate ending at `not_after` should be replaced at `now`,
/// given that replacements happen `rotate_before` ahead of expiry. True
/// from the start of that window on, including after expiry.
pub fn needs_rotation(not_after: Timestamp, now: Timestamp, rotate_before: Duration) -> bool {
    later(now, to_delta(rotate_before)) >= not_after
}

/// Decides what to reissue so the PKI is valid, consistent and matches the
/// settings.
///
/// The CA is replaced when it is unreadable, its key does not match, or it
/// expires within the CA renewal window (serving validity plus
/// `rotate_before`). Otherwise the serving certificate is reissued when it
/// is unreadable, its key does not match, it was not signed by the CA, it
/// lacks a configured name, or it is within `rotate_before` of expiry.
pub fn plan_renewal(pki: &WebhookPki, settings: &PkiSettings, now: Timestamp) -> Renewal {
    let ca_sound = with_certificate(&pki.ca.cert_pem, |ca| {
        Ok(key_matches(ca, &pki.ca.key_pem)
            && !needs_rotation_within(ca, now, settings.ca_renewal_window()))
    });
    if !matches!(ca_sound, Ok(true)) {
        return Renewal::CaAndServing;
    }
    let serving_sound = with_certificate(&pki.ca.cert_pem, |ca| {
        with_certificate(&pki.serving.cert_pem, |serving| {
            Ok(key_matches(serving, &pki.serving.key_pem)
                && serving.verify_signature(Some(ca.public_key())).is_ok()
                && covers(serving, &settings.dns_names, &settings.ip_addresses)
                && !needs_rotation_within(serving, now, settings.serving_renewal_window()))
        })
    });
    if matches!(serving_sound, Ok(true)) {
        Renewal::NotDue
    } else {
        Renewal::Serving
    }
}

fn needs_rotation_within(
    cert: &X509Certificate<'_>,
    now: Timestamp,
    window: SignedDuration,
) -> bool {
    let not_after = Timestamp::from_second(cert.validity().not_after.timestamp());
    not_after.map_or(true, |not_after| later(now, window) >= not_after)
}

/// Whether `key_pem` is the private key of `cert`.
fn key_matches(cert: &X509Certificate<'_>, key_pem: &str) -> bool {
    KeyPair::from_pem(key_pem)
        .is_ok_and(|key| key.subject_public_key_info() == cert.public_key().raw)
}

/// Whether the certificate names every DNS name and IP address asked for.
fn covers(cert: &X509Certificate<'_>, dns_names: &[String], ip_addresses: &[IpAddr]) -> bool {
    let Ok(Some(extension)) = cert.subject_alternative_name() else {
        return dns_names.is_empty() && ip_addresses.is_empty();
    };
    let names = &extension.value.general_names;
    let has_dns = |wanted: &String| {
        names.iter().any(|name| match name {
            GeneralName::DNSName(found) => found.eq_ignore_ascii_case(wanted),
            _ => false,
        })
    };
    let has_ip = |wanted: &IpAddr| {
        names.iter().any(|name| match name {
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes) == Some(*wanted),
            _ => false,
        })
    };
    dns_names.iter().all(has_dns) && ip_addresses.iter().all(has_ip)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// `current` first, then every other certificate of `others` that is still
/// valid at `now`, without duplicates.
fn trust_bundle(current: &str, others: &str, now: Timestamp) -> String {
    let current = current.trim();
    let mut bundle = vec![current.to_owned()];
    for block in others.split_inclusive(END_CERTIFICATE) {
        let block = block.trim();
        let still_valid = not_after(block).is_ok_and(|end| end > now);
        if block.ends_with(END_CERTIFICATE) && still_valid && !bundle.iter().any(|b| b == block) {
            bundle.push(block.to_owned());
        }
    }
    let mut text = bundle.join("\n");
    text.push('\n');
    text
}

/// Parses the first certificate of a PEM text and hands it to `inspect`.
fn with_certificate<T>(
    cert_pem: &str,
    inspect: impl FnOnce(&X509Certificate<'_>) -> Result<T>,
) -> Result<T> {
    let pem: Pem = Pem::iter_from_buffer(cert_pem.as_bytes())
        .next()
        .ok_or(Error::NoCertificate)?
        .map_err(Error::Pem)?;
    let (_, cert) = X509Certificate::from_der(&pem.contents).map_err(Error::Certificate)?;
    inspect(&cert)
}

/// `time + delta`, saturating instead of overflowing.
fn later(time: Timestamp, delta: SignedDuration) -> Timestamp {
    time.checked_add(delta).unwrap_or(if delta.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

fn to_delta(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

fn to_offset(instant: Timestamp) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(instant.as_second())
        .map_err(|_| Error::TimeOutOfRange)
}

/// Certificates carry whole seconds.
fn truncate_to_seconds(time: Timestamp) -> Timestamp {
    Timestamp::from_second(time.as_second()).unwrap_or(time)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{
        RootCertStore,
        client::{WebPkiServerVerifier, danger::ServerCertVerifier},
        pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
    };

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn settings() -> PkiSettings {
        PkiSettings {
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            ..PkiSettings::for_service("sandbox-operator-webhook", "sandbox-system")
        }
    }

    fn days(count: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * count)
    }

    /// Verifies `serving` for `name` the way a TLS client trusting `bundle` would.
    fn verify(bundle: &str, serving: &IssuedCertificate, name: &str, at: Timestamp) -> bool {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(serving.cert_pem.as_bytes()).unwrap();
        let at = UnixTime::since_unix_epoch(Duration::from_secs(at.as_second() as u64));
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                at,
            )
            .is_ok()
    }

    #[test]
    fn needs_rotation_from_the_start_of_the_window_on() {
        let not_after: Timestamp = "2030-01-31T00:00:00Z".parse().unwrap();
        let thirty_days = 30 * DAY;
        assert!(!needs_rotation(
            not_after,
            not_after - days(31),
            thirty_days
        ));
        assert!(needs_rotation(not_after, not_after - days(30), thirty_days));
        assert!(needs_rotation(not_after, not_after - days(1), thirty_days));
        assert!(needs_rotation(not_after, not_after + days(1), thirty_days));
        assert!(!needs_rotation(
            not_after,
            not_after - days(1),
            Duration::ZERO
        ));
        // Absurd windows saturate instead of overflowing.
        assert!(needs_rotation(
            not_after,
            not_after - days(1),
            Duration::MAX
        ));
    }

    #[test]
    fn serving_certificate_is_trusted_for_every_name_and_address() {
        let now = Timestamp::now();
        let settings = settings();
        let pki = WebhookPki::generate(&settings, now).unwrap();
        for name in ["sandbox-operator-webhook.sandbox-system.svc", "127.0.0.1"] {
            assert!(verify(&pki.ca_bundle, &pki.serving, name, now), "{name}");
        }
        assert!(!verify(
            &pki.ca_bundle,
            &pki.serving,
            "other.sandbox-system.svc",
            now
        ));
        assert_eq!(
            not_after(&pki.serving.cert_pem).unwrap(),
            pki.serving.not_after
        );
        assert_eq!(
            pki.serving.not_after.as_second(),
            (now + days(365)).as_second()
        );
        assert_eq!(pki.ca.not_after.as_second(), (now + days(3650)).as_second());
    }

    #[test]
    fn fresh_pki_is_not_due_and_expiry_makes_it_due() {
        let now = Timestamp::now();
        let settings = settings();
        let pki = WebhookPki::generate(&settings, now).unwrap();
        assert_eq!(plan_renewal(&pki, &settings, now), Renewal::NotDue);
        assert_eq!(
            plan_renewal(&pki, &settings, now + days(334)),
            Renewal::NotDue
        );
        assert_eq!(
            plan_renewal(&pki, &settings, now + days(336)),
            Renewal::Serving
        );
        // The CA is replaced while a one-year certificate plus its renewal
        // window still fits in its remaining life.
        assert_eq!(
            plan_renewal(&pki, &settings, now + days(3650 - 396)),
            Renewal::Serving
        );
        assert_eq!(
            plan_renewal(&pki, &settings, now + days(3650 - 394)),
            Renewal::CaAndServing
        );
    }

    #[test]
    fn inconsistent_or_outdated_pki_is_due() {
        let now = Timestamp::now();
        let settings = settings();
        let pki = WebhookPki::generate(&settings, now).unwrap();
        let other = WebhookPki::generate(&settings, now).unwrap();

        let mut new_name = settings.clone();
        new_name.dns_names.push("renamed.sandbox-system.svc".into());
        assert_eq!(plan_renewal(&pki, &new_name, now), Renewal::Serving);

        let wrong_serving_key = WebhookPki {
            serving: IssuedCertificate {
                key_pem: other.serving.key_pem.clone(),
                ..pki.serving.clone()
            },
            ..pki.clone()
        };
        assert_eq!(
            plan_renewal(&wrong_serving_key, &settings, now),
            Renewal::Serving
        );

        let signed_by_another_ca = WebhookPki {
            serving: other.serving.clone(),
            ..pki.clone()
        };
        assert_eq!(
            plan_renewal(&signed_by_another_ca, &settings, now),
            Renewal::Serving
        );

        let wrong_ca_key = WebhookPki {
            ca: IssuedCertificate {
                key_pem: other.ca.key_pem.clone(),
                ..pki.ca.clone()
            },
            ..pki.clone()
        };
        assert_eq!(
            plan_renewal(&wrong_ca_key, &settings, now),
            Renewal::CaAndServing
        );

        let garbage_ca = WebhookPki {
            ca: IssuedCertificate {
                cert_pem: "garbage".into(),
                ..pki.ca.clone()
            },
            ..pki.clone()
        };
        assert_eq!(
            plan_renewal(&garbage_ca, &settings, now),
            Renewal::CaAndServing
        );
    }

    #[test]
    fn renewal_windows_larger_than_lifetimes_do_not_make_fresh_certificates_due() {
        let now = Timestamp::now();
        let settings = PkiSettings {
            ca_validity: 2 * DAY,
            serving_validity: DAY,
            rotate_before: 5 * DAY,
            ..settings()
        };
        let pki = WebhookPki::generate(&settings, now).unwrap();
        assert_eq!(plan_renewal(&pki, &settings, now), Renewal::NotDue);
        assert_eq!(
            plan_renewal(&pki, &settings, now + SignedDuration::from_hours(13)),
            Renewal::Serving
        );
    }

    #[test]
    fn serving_renewal_keeps_the_ca() {
        let now = Timestamp::now();
        let settings = settings();
        let pki = WebhookPki::generate(&settings, now).unwrap();
        let later = now + days(340);
        let renewed = pki.renew(Renewal::Serving, &settings, later).unwrap();
        assert_eq!(renewed.ca, pki.ca);
        assert_eq!(renewed.ca_bundle.trim(), pki.ca.cert_pem.trim());
        assert_ne!(renewed.serving.cert_pem, pki.serving.cert_pem);
        assert!(renewed.serving.not_after > pki.serving.not_after);
        assert_eq!(plan_renewal(&renewed, &settings, later), Renewal::NotDue);
    }

    #[test]
    fn ca_renewal_keeps_trusting_the_old_ca_until_it_expires() {
        let now = Timestamp::now();
        let settings = settings();
        let first = WebhookPki::generate(&settings, now).unwrap();
        let later = now + days(3650 - 390);
        // The pair servers present when the CA is replaced, issued by the old CA.
        let old = first
            .renew(Renewal::Serving, &settings, later - days(100))
            .unwrap();
        let renewed = old.renew(Renewal::CaAndServing, &settings, later).unwrap();
        assert_ne!(renewed.ca, old.ca);
        assert_eq!(plan_renewal(&renewed, &settings, later), Renewal::NotDue);

        let name = "sandbox-operator-webhook.sandbox-system.svc";
        // Servers still presenting the old pair and those with the new one are both trusted.
        assert!(verify(&renewed.ca_bundle, &old.serving, name, later));
        assert!(verify(&renewed.ca_bundle, &renewed.serving, name, later));

        // Once the old CA has expired, the next renewal drops it.
        let after_old_ca = now + days(3651);
        let pruned = renewed
            .renew(Renewal::Serving, &settings, after_old_ca)
            .unwrap();
        assert_eq!(pruned.ca_bundle.trim(), renewed.ca.cert_pem.trim());
    }

    #[test]
    fn serving_certificate_never_outlives_its_ca() {
        let now = Timestamp::now();
        let ca = generate_ca("short-lived", 10 * DAY, now).unwrap();
        let serving = issue_serving(&ca, &["a.example".into()], &[], 365 * DAY, now).unwrap();
        assert_eq!(serving.not_after, ca.not_after);
    }

    #[test]
    fn not_after_rejects_text_without_a_certificate() {
        assert_eq!(
            not_after("no pem here").unwrap_err().label(),
            "no_certificate"
        );
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(not_after(broken).unwrap_err().label(), "certificate");
    }
}
