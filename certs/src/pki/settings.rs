//! [`PkiSettings`]: what the PKI issues (names, addresses, lifetimes) and
//! the renewal windows derived from them, capped so that no setting can make
//! a freshly issued certificate look due.

use std::{net::IpAddr, time::Duration};

use jiff::SignedDuration;

use super::time::to_delta;

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
    pub(super) fn serving_renewal_window(&self) -> SignedDuration {
        to_delta(self.rotate_before.min(self.serving_validity / 2))
    }

    /// The window before expiry in which the CA is replaced: early enough
    /// that a serving certificate issued just before still has its full
    /// lifetime under a valid CA, capped at half the CA's lifetime.
    pub(super) fn ca_renewal_window(&self) -> SignedDuration {
        to_delta(
            (self.serving_validity.saturating_add(self.rotate_before)).min(self.ca_validity / 2),
        )
    }
}
