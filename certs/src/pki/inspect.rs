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

/// The most CAs a trust bundle keeps: the current one and two before it.
pub(crate) const MAX_TRUSTED_CAS: usize = 3;

/// `current` first, then every other certificate of `others` that is still
/// valid at `now`, without duplicates, [`MAX_TRUSTED_CAS`] at most. Blocks of `others` that are not
/// certificates (garbage, truncated, another PEM type) are left out.
pub(crate) fn trust_bundle(current: &str, others: &str, now: Timestamp) -> String {
    let current = current.trim();
    let mut bundle = vec![current.to_owned()];
    for block in pem_blocks(others) {
        let still_valid = block.certificate.as_ref().is_ok_and(|end| *end > now);
        if still_valid && !bundle.iter().any(|b| b == block.text) {
            bundle.push(block.text.to_owned());
        }
    }
    // The most recent ones only: each deleted or unusable Secret carries the
    // CAs it replaces over (see `load_or_create`), and a CA lasts years, so
    // without a bound the bundle grew by one at each (found by review). A
    // certificate of a CA replaced more than twice within one check
    // interval is the only one this can leave untrusted.
    bundle.truncate(MAX_TRUSTED_CAS);
    let mut text = bundle.join("\n");
    text.push('\n');
    text
}

/// One PEM block of a text: its text from `-----BEGIN` to the end of its
/// `-----END` line (or to the end of the text when truncated), and, when it
/// is an X.509 certificate, its `notAfter`; otherwise why it is not one.
pub(crate) struct PemBlock<'a> {
    /// The block's text, trimmed.
    pub text: &'a str,
    /// The end of the certificate's validity, or why the block is not a
    /// readable certificate.
    pub certificate: Result<Timestamp>,
}

/// Every PEM block of `pem`, in order, each judged on its own (text outside
/// blocks is ignored, as PEM readers do). The HTTPS server's loader reads
/// every block of a chain, so one bad block anywhere makes the text
/// unusable even when the first block is fine.
pub(crate) fn pem_blocks(pem: &str) -> Vec<PemBlock<'_>> {
    const BEGIN: &str = "-----BEGIN ";
    const END: &str = "-----END ";
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let from_begin = &rest[start..];
        // Look for the end marker after the BEGIN line.
        let body_start = from_begin.find('\n').unwrap_or(from_begin.len());
        let end = from_begin[body_start..].find(END).map(|at| {
            let end_line = body_start + at;
            end_line
                + from_begin[end_line..]
                    .find('\n')
                    .unwrap_or(from_begin.len() - end_line)
        });
        let (text, next) = match end {
            Some(end) => (&from_begin[..end], &from_begin[end..]),
            None => (from_begin, ""),
        };
        let certificate = if end.is_none() {
            Err(Error::Pem(x509_parser::error::PEMError::IncompletePEM))
        } else {
            with_certificate(text, |cert| {
                Timestamp::from_second(cert.validity().not_after.timestamp())
                    .map_err(|_| Error::TimeOutOfRange)
            })
        };
        blocks.push(PemBlock {
            text: text.trim(),
            certificate,
        });
        rest = next;
    }
    blocks
}

/// Checks that `pem` holds at least one PEM block and that every block is
/// a readable X.509 certificate; the error names the first bad block,
/// counting from 1.
pub(crate) fn every_block_a_certificate(pem: &str) -> std::result::Result<(), String> {
    let blocks = pem_blocks(pem);
    if blocks.is_empty() {
        return Err(Error::NoCertificate.describe());
    }
    for (index, block) in blocks.iter().enumerate() {
        if let Err(error) = &block.certificate {
            return Err(format!(
                "block {} is not a certificate: {}",
                index + 1,
                error.describe()
            ));
        }
    }
    Ok(())
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
    if pem.label != "CERTIFICATE" {
        return Err(Error::NotCertificatePem { label: pem.label });
    }
    let (_, cert) = X509Certificate::from_der(&pem.contents).map_err(Error::Certificate)?;
    inspect(&cert)
}
