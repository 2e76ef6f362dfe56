//! Deciding what to reissue: [`plan_renewal`] judges a stored PKI against
//! the settings and the time; [`needs_rotation`] is the window rule. Pure,
//! no I/O; a PKI that cannot be read is always due.

use std::time::Duration;

use jiff::Timestamp;

use super::inspect::{covers, key_matches, needs_rotation_within, with_certificate};
use super::time::{later, to_delta};
use super::{PkiSettings, WebhookPki};

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
