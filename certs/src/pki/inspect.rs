//! Reading certificates: PEM parsing with x509-parser, expiry, whether a key
//! belongs to a certificate, whether it names what is asked for, and the
//! trust bundle (current CA first, then still-valid others, no duplicates).
//! Pure functions of PEM text and a time.

use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use rcgen::{KeyPair, PublicKeyData};
use x509_parser::{
    certificate::X509Certificate, extensions::GeneralName, pem::Pem, prelude::FromDer,
};

use super::time::later;
use crate::{Error, Result};

const END_CERTIFICATE: &str = "-----END CERTIFICATE-----";

/// The end of validity of the first certificate in a PEM text.
pub fn not_after(cert_pem: &str) -> Result<Timestamp> {
    with_certificate(cert_pem, |cert| {
        Timestamp::from_second(cert.validity().not_after.timestamp())
            .map_err(|_| Error::TimeOutOfRange)
    })
}

/// The end of validity of a DER-encoded certificate (as a TLS server holds
/// the one it serves).
pub fn not_after_der(cert_der: &[u8]) -> Result<Timestamp> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(Error::Certificate)?;
    Timestamp::from_second(cert.validity().not_after.timestamp()).map_err(|_| Error::TimeOutOfRange)
}

pub(super) fn needs_rotation_within(
    cert: &X509Certificate<'_>,
    now: Timestamp,
    window: SignedDuration,
) -> bool {
    let not_after = Timestamp::from_second(cert.validity().not_after.timestamp());
    not_after.map_or(true, |not_after| later(now, window) >= not_after)
}

/// Whether `key_pem` is the private key of `cert`.
pub(super) fn key_matches(cert: &X509Certificate<'_>, key_pem: &str) -> bool {
    KeyPair::from_pem(key_pem)
        .is_ok_and(|key| key.subject_public_key_info() == cert.public_key().raw)
}

/// Whether the certificate names every DNS name and IP address asked for.
pub(super) fn covers(
    cert: &X509Certificate<'_>,
    dns_names: &[String],
    ip_addresses: &[IpAddr],
) -> bool {
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
pub(super) fn trust_bundle(current: &str, others: &str, now: Timestamp) -> String {
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
pub(super) fn with_certificate<T>(
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
