//! Issuing certificates with rcgen: a self-signed CA and a serving
//! certificate it signs, each with a new ECDSA P-256 key. Guarantees: both
//! are valid from a few minutes before the issue time (clock skew), and a
//! serving certificate never outlives its CA.

use std::{fmt, net::IpAddr, time::Duration};

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::time::{later, to_delta, to_offset, truncate_to_seconds};
use crate::{Error, Result};

/// Certificates are valid from a little before their issue time, so a
/// client whose clock lags behind ours does not reject a fresh one.
const CLOCK_SKEW_ALLOWANCE: SignedDuration = SignedDuration::from_mins(5);

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
