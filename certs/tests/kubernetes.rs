//! The Kubernetes side against the in-memory API server of
//! `tests/fakeapi` (the workspace's one fake): unique names on create (409
//! AlreadyExists), resourceVersion preconditions on replace and merge patch
//! (409 Conflict), 404s.

use std::{sync::Arc, time::Duration};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use sandbox_certs::{
    CertManager, CertManagerConfig, PkiSettings, Renewal, inject_ca_bundle, load_or_create,
    plan_renewal, rotate,
};
use sandbox_fakeapi::{FakeApiServer, Moment};
use serde_json::{Value, json};

/// Writes the server accepted (creates, replaces, patches).
fn writes(server: &FakeApiServer) -> Vec<String> {
    server
        .log()
        .into_iter()
        .filter(|r| ["POST", "PUT", "PATCH"].contains(&r.method.as_str()) && r.code < 300)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Requests answered 409.
fn conflicts(server: &FakeApiServer) -> usize {
    server.log().iter().filter(|r| r.code == 409).count()
}

const NAMESPACE: &str = "sandbox-system";
const SECRET: &str = "webhook-tls";
const SECRET_PATH: &str = "/api/v1/namespaces/sandbox-system/secrets/webhook-tls";

fn settings() -> PkiSettings {
    PkiSettings::for_service("sandbox-operator-webhook", NAMESPACE)
}

fn webhook_configuration(kind: &str, name: &str, entries: usize) -> Value {
    let webhooks: Vec<Value> = (0..entries)
        .map(|index| {
            json!({
                "name": format!("hook{index}.agents.x-k8s.io"),
                "clientConfig": {"service": {"name": "sandbox-operator-webhook", "namespace": NAMESPACE}},
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
            })
        })
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": webhooks,
    })
}

fn ca_bundles(server: &FakeApiServer, path: &str) -> Vec<Value> {
    server.get(path).unwrap()["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|webhook| webhook["clientConfig"]["caBundle"].clone())
        .collect()
}

fn base64_of(text: &str) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec())).unwrap()
}

#[tokio::test]
async fn replicas_racing_to_create_the_secret_agree_on_one_pki() {
    // Both replicas read "absent" before either creates.
    let server = FakeApiServer::default();
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    server.hook(
        Moment::BetweenReadAndWrite,
        2,
        |r| r.method == "GET" && r.path == SECRET_PATH,
        move |_| {
            let barrier = Arc::clone(&barrier);
            async move {
                barrier.wait().await;
            }
        },
    );
    let (first, second) = (server.client(), server.client());
    let now = Timestamp::now();
    let settings = settings();
    let (a, b) = tokio::join!(
        load_or_create(&first, NAMESPACE, SECRET, None, &settings, now),
        load_or_create(&second, NAMESPACE, SECRET, None, &settings, now),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_eq!(
        writes(&server).len(),
        1,
        "exactly one create won: {:?}",
        writes(&server)
    );
    assert_eq!(conflicts(&server), 1, "the other create got AlreadyExists");

    let secret: Secret = serde_json::from_value(server.get(SECRET_PATH).unwrap()).unwrap();
    let data = secret.data.unwrap();
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt"] {
        assert!(data.contains_key(key), "{key}");
    }
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(data["tls.crt"].0, a.pki.serving.cert_pem.as_bytes());

    // Reading again reuses it without writing.
    let again = load_or_create(&first, NAMESPACE, SECRET, None, &settings, now)
        .await
        .unwrap();
    assert_eq!(again, a);
    assert_eq!(writes(&server).len(), 1);
}

#[tokio::test]
async fn an_unusable_secret_is_replaced() {
    let server = FakeApiServer::default();
    server.insert(
        SECRET_PATH,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NAMESPACE, "labels": {"keep": "me"}},
            "type": "Opaque",
            "data": {"ca.crt": base64_of("not a certificate")},
        }),
    );
    let stored = load_or_create(
        &server.client(),
        NAMESPACE,
        SECRET,
        None,
        &settings(),
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert_eq!(
        plan_renewal(&stored.pki, &settings(), Timestamp::now()),
        Renewal::NotDue
    );
    let secret = server.get(SECRET_PATH).unwrap();
    assert_eq!(secret["metadata"]["labels"]["keep"], "me");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["data"]["tls.key"],
        base64_of(&stored.pki.serving.key_pem)
    );
}

#[tokio::test]
async fn rotation_is_conditioned_and_the_loser_adopts_the_winner() {
    let server = FakeApiServer::default();
    let client = server.client();
    let settings = settings();
    let now = Timestamp::now();
    let stored = load_or_create(&client, NAMESPACE, SECRET, None, &settings, now)
        .await
        .unwrap();

    let near_expiry = now + SignedDuration::from_hours(24 * 340);
    let renewal = plan_renewal(&stored.pki, &settings, near_expiry);
    assert_eq!(renewal, Renewal::Serving);

    // Each call rotates from the same stored version, like two replicas.
    let rotate_from_stored = || {
        rotate(
            &client,
            NAMESPACE,
            SECRET,
            &stored,
            renewal,
            &settings,
            near_expiry,
        )
    };
    let winner = rotate_from_stored().await.unwrap();
    assert_ne!(winner.resource_version, stored.resource_version);
    assert_eq!(winner.pki.ca, stored.pki.ca);
    assert_ne!(winner.pki.serving, stored.pki.serving);

    // A second replica still holding the old version loses and gets the winner's PKI.
    let loser = rotate_from_stored().await.unwrap();
    assert_eq!(loser, winner);
    assert_eq!(
        server.get(SECRET_PATH).unwrap()["data"]["tls.crt"],
        base64_of(&winner.pki.serving.cert_pem)
    );
}

#[tokio::test]
async fn ca_bundle_goes_on_every_webhook_entry_once() {
    let server = FakeApiServer::default();
    let mutating_path =
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/sandbox";
    let validating_path =
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/sandbox";
    server.insert(
        mutating_path,
        webhook_configuration("MutatingWebhookConfiguration", "sandbox", 2),
    );
    server.insert(
        validating_path,
        webhook_configuration("ValidatingWebhookConfiguration", "sandbox", 3),
    );
    let client = server.client();
    let names = |name: &str| vec![name.to_owned()];

    let injection = inject_ca_bundle(&client, &names("sandbox"), &names("sandbox"), "PEM A")
        .await
        .unwrap();
    assert_eq!(injection.changed.len(), 2);
    assert!(injection.missing.is_empty());
    assert_eq!(
        ca_bundles(&server, mutating_path),
        vec![base64_of("PEM A"); 2]
    );
    assert_eq!(
        ca_bundles(&server, validating_path),
        vec![base64_of("PEM A"); 3]
    );

    // Already set: nothing is written.
    let before = writes(&server).len();
    let injection = inject_ca_bundle(&client, &names("sandbox"), &names("sandbox"), "PEM A")
        .await
        .unwrap();
    assert!(injection.changed.is_empty());
    assert_eq!(writes(&server).len(), before);

    // A missing configuration is reported, the others still updated.
    let injection = inject_ca_bundle(&client, &names("absent"), &names("sandbox"), "PEM B")
        .await
        .unwrap();
    assert_eq!(
        injection.missing,
        vec!["MutatingWebhookConfiguration absent".to_owned()]
    );
    assert_eq!(
        injection.changed,
        vec!["ValidatingWebhookConfiguration sandbox".to_owned()]
    );
    assert_eq!(
        ca_bundles(&server, validating_path),
        vec![base64_of("PEM B"); 3]
    );
}

#[tokio::test]
async fn manager_publishes_the_ca_and_hands_over_rotated_pairs() {
    let server = FakeApiServer::default();
    let validating_path =
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/sandbox";
    server.insert(
        validating_path,
        webhook_configuration("ValidatingWebhookConfiguration", "sandbox", 1),
    );
    let mut manager = CertManager::new(
        server.client(),
        CertManagerConfig {
            namespace: NAMESPACE.into(),
            secret_name: SECRET.into(),
            // Four-second certificates, renewed in the second half of their life.
            settings: PkiSettings {
                serving_validity: Duration::from_secs(4),
                rotate_before: Duration::from_secs(2),
                ..settings()
            },
            mutating_webhooks: vec![],
            validating_webhooks: vec!["sandbox".into()],
            check_interval: Duration::from_millis(200),
        },
    );
    let mut expiry = manager.expiry();
    let first = manager.ensure().await.unwrap();
    let ca_bundle = manager.current().unwrap().pki.ca_bundle.clone();
    assert_eq!(
        ca_bundles(&server, validating_path),
        vec![base64_of(&ca_bundle)]
    );
    assert_eq!(
        expiry.borrow_and_update().serving_not_after,
        first.not_after.as_second()
    );

    let (handed_over, mut received) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(manager.run(
        move |cert, key| {
            handed_over.send((cert.to_owned(), key.to_owned())).unwrap();
            Ok::<(), String>(())
        },
        async {
            stopped.await.ok();
        },
    ));
    let (cert, _key) = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("a rotated pair is handed over")
        .unwrap();
    assert_ne!(cert, first.cert_pem);
    assert_eq!(
        server.get(SECRET_PATH).unwrap()["data"]["tls.crt"],
        base64_of(&cert)
    );
    assert!(expiry.borrow_and_update().serving_not_after > first.not_after.as_second());

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("run stops on shutdown")
        .unwrap();
}

/// The PEM certificates of a bundle, trimmed, in order.
fn certificates_of(bundle: &str) -> Vec<String> {
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|block| block.starts_with("-----BEGIN CERTIFICATE-----"))
        .map(str::to_owned)
        .collect()
}

fn manager_for(server: &FakeApiServer, settings: PkiSettings) -> CertManager {
    CertManager::new(
        server.client(),
        CertManagerConfig {
            namespace: NAMESPACE.into(),
            secret_name: SECRET.into(),
            settings,
            mutating_webhooks: vec![],
            validating_webhooks: vec!["sandbox".into()],
            check_interval: Duration::from_millis(200),
        },
    )
}

#[tokio::test]
async fn a_deleted_secret_gets_a_new_ca_and_the_bundle_keeps_the_old_one() {
    let server = FakeApiServer::default();
    let validating_path =
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/sandbox";
    server.insert(
        validating_path,
        webhook_configuration("ValidatingWebhookConfiguration", "sandbox", 1),
    );
    let mut manager = manager_for(&server, settings());
    manager.ensure().await.unwrap();
    let old = manager.current().unwrap().pki.clone();

    // An admin deletes the Secret to force a re-issue.
    server.delete(SECRET_PATH).unwrap();
    manager.ensure().await.unwrap();
    let new = manager.current().unwrap().pki.clone();

    // The admin's intent holds: a new CA and a new serving pair...
    assert_ne!(new.ca, old.ca);
    assert_ne!(new.serving, old.serving);
    // ...and servers still presenting the old pair stay trusted.
    assert_eq!(
        certificates_of(&new.ca_bundle),
        vec![
            new.ca.cert_pem.trim().to_owned(),
            old.ca.cert_pem.trim().to_owned()
        ],
        "the new bundle is the new CA, then the old one"
    );
    assert_eq!(
        ca_bundles(&server, validating_path),
        vec![base64_of(&new.ca_bundle)]
    );
    assert_eq!(
        server.get(SECRET_PATH).unwrap()["data"]["ca-bundle.crt"],
        base64_of(&new.ca_bundle)
    );
}

#[tokio::test]
async fn a_rotation_that_finds_the_secret_deleted_keeps_the_old_ca_trusted() {
    let server = FakeApiServer::default();
    let client = server.client();
    let settings = settings();
    let now = Timestamp::now();
    let stored = load_or_create(&client, NAMESPACE, SECRET, None, &settings, now)
        .await
        .unwrap();
    server.delete(SECRET_PATH).unwrap();
    let near_expiry = now + SignedDuration::from_hours(24 * 340);
    let after = rotate(
        &client,
        NAMESPACE,
        SECRET,
        &stored,
        Renewal::Serving,
        &settings,
        near_expiry,
    )
    .await
    .unwrap();
    assert_ne!(after.pki.ca, stored.pki.ca);
    assert!(
        certificates_of(&after.pki.ca_bundle).contains(&stored.pki.ca.cert_pem.trim().to_owned()),
        "the old CA stays in the bundle"
    );
}

#[tokio::test]
async fn an_unusable_secret_without_a_sound_ca_key_keeps_its_ca_trusted() {
    let server = FakeApiServer::default();
    let settings = settings();
    let now = Timestamp::now();
    let old = sandbox_certs::WebhookPki::generate(&settings, now).unwrap();
    // The CA key is gone: the CA cannot be salvaged, a new one is made.
    server.insert(
        SECRET_PATH,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "type": "kubernetes.io/tls",
            "data": {
                "ca.crt": base64_of(&old.ca.cert_pem),
                "tls.crt": base64_of(&old.serving.cert_pem),
                "tls.key": base64_of(&old.serving.key_pem),
            },
        }),
    );
    let stored = load_or_create(&server.client(), NAMESPACE, SECRET, None, &settings, now)
        .await
        .unwrap();
    assert_ne!(stored.pki.ca.cert_pem, old.ca.cert_pem);
    assert_eq!(
        certificates_of(&stored.pki.ca_bundle),
        vec![
            stored.pki.ca.cert_pem.trim().to_owned(),
            old.ca.cert_pem.trim().to_owned()
        ]
    );
}

/// A valid certificate followed by a block the HTTPS server cannot load.
const GARBAGE_BLOCK: &str = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";

#[tokio::test]
async fn a_secret_with_a_bad_later_block_is_repaired_keeping_its_ca() {
    let server = FakeApiServer::default();
    let settings = settings();
    let now = Timestamp::now();
    let old = sandbox_certs::WebhookPki::generate(&settings, now).unwrap();
    server.insert(
        SECRET_PATH,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "type": "kubernetes.io/tls",
            "data": {
                "ca.crt": base64_of(&old.ca.cert_pem),
                "ca.key": base64_of(&old.ca.key_pem),
                "tls.crt": base64_of(&format!("{}{GARBAGE_BLOCK}", old.serving.cert_pem)),
                "tls.key": base64_of(&old.serving.key_pem),
                "ca-bundle.crt": base64_of(&old.ca_bundle),
            },
        }),
    );
    let stored = load_or_create(&server.client(), NAMESPACE, SECRET, None, &settings, now)
        .await
        .unwrap();
    // Replaced: a serving pair the server can load, from the same CA.
    assert_eq!(stored.pki.ca, old.ca);
    assert!(!stored.pki.serving.cert_pem.contains("!!!"));
    assert_eq!(
        server.get(SECRET_PATH).unwrap()["data"]["tls.crt"],
        base64_of(&stored.pki.serving.cert_pem)
    );
    let pem = stored.pki.serving.cert_pem.as_bytes();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    assert!(
        CertificateDer::pem_slice_iter(pem).all(|block| block.is_ok()),
        "rustls reads every block"
    );
}

#[tokio::test]
async fn a_handover_the_server_refuses_is_offered_again_at_the_next_pass() {
    let server = FakeApiServer::default();
    // Four-second certificates, renewed in the second half of their life.
    let mut manager = manager_for(
        &server,
        PkiSettings {
            serving_validity: Duration::from_secs(4),
            rotate_before: Duration::from_secs(2),
            ..settings()
        },
    );
    manager.ensure().await.unwrap();
    let (handed_over, mut received) = tokio::sync::mpsc::unbounded_channel();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(manager.run(
        move |cert, _key| {
            handed_over.send(cert.to_owned()).unwrap();
            // The server refuses the first pair it is offered.
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Err("refused".to_owned())
            } else {
                Ok(())
            }
        },
        async {
            stopped.await.ok();
        },
    ));
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("a pair is handed over")
            .unwrap()
    };
    let refused = next().await;
    let again = next().await;
    assert_eq!(
        again, refused,
        "the refused pair is offered again, not skipped until the next rotation"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("run stops on shutdown")
        .unwrap();
}
