//! Unit tests of the PKI: issuing, trust by a real TLS verifier, renewal
//! decisions and their windows.

use std::{sync::Arc, time::Duration};

use jiff::{SignedDuration, Timestamp};

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

/// A PKI issued now with the default test settings.
fn issued_now() -> (Timestamp, PkiSettings, WebhookPki) {
    let now = Timestamp::now();
    let settings = settings();
    let pki = WebhookPki::generate(&settings, now).unwrap();
    (now, settings, pki)
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
    let (now, _, pki) = issued_now();
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
    let (now, settings, pki) = issued_now();
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

/// `cert` with another private key.
fn with_key(cert: &IssuedCertificate, key_pem: &str) -> IssuedCertificate {
    IssuedCertificate {
        key_pem: key_pem.to_owned(),
        ..cert.clone()
    }
}

#[test]
fn inconsistent_or_outdated_pki_is_due() {
    let (now, settings, pki) = issued_now();
    let other = WebhookPki::generate(&settings, now).unwrap();

    let mut new_name = settings.clone();
    new_name.dns_names.push("renamed.sandbox-system.svc".into());
    assert_eq!(plan_renewal(&pki, &new_name, now), Renewal::Serving);

    let with_serving = |serving| WebhookPki {
        serving,
        ..pki.clone()
    };
    let with_ca = |ca| WebhookPki { ca, ..pki.clone() };
    let garbage = IssuedCertificate {
        cert_pem: "garbage".into(),
        ..pki.ca.clone()
    };
    let cases = [
        (
            "wrong serving key",
            with_serving(with_key(&pki.serving, &other.serving.key_pem)),
            Renewal::Serving,
        ),
        (
            "serving certificate signed by another CA",
            with_serving(other.serving.clone()),
            Renewal::Serving,
        ),
        (
            "wrong CA key",
            with_ca(with_key(&pki.ca, &other.ca.key_pem)),
            Renewal::CaAndServing,
        ),
        ("garbage CA", with_ca(garbage), Renewal::CaAndServing),
    ];
    for (case, broken, expected) in cases {
        assert_eq!(plan_renewal(&broken, &settings, now), expected, "{case}");
    }
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
    let (now, settings, pki) = issued_now();
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

#[test]
fn not_after_der_reads_the_served_form() {
    let now = Timestamp::now();
    let ca = generate_ca("der", 10 * DAY, now).unwrap();
    let pem = x509_parser::pem::Pem::iter_from_buffer(ca.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        super::inspect::not_after_der(&pem.contents).unwrap(),
        ca.not_after
    );
    assert_eq!(
        super::inspect::not_after_der(b"not der")
            .unwrap_err()
            .label(),
        "certificate"
    );
}

#[test]
fn a_trust_bundle_keeps_the_current_ca_and_two_before_it() {
    let (now, settings, first) = issued_now();
    let mut pki = first.clone();
    let mut cas = vec![first.ca.cert_pem.clone()];
    for _ in 0..4 {
        pki = pki.renew(Renewal::CaAndServing, &settings, now).unwrap();
        cas.push(pki.ca.cert_pem.clone());
    }
    let kept: Vec<&str> = pki
        .ca_bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    assert_eq!(kept.len(), inspect::MAX_TRUSTED_CAS, "{kept:?}");
    // The newest first, then the two before it.
    let newest: Vec<&str> = cas.iter().rev().take(3).map(|c| c.trim()).collect();
    assert_eq!(kept, newest);
}
