//! The Kubernetes side against an in-memory API server that enforces what
//! matters here: unique names on create (409 AlreadyExists), resourceVersion
//! preconditions on replace and merge patch (409 Conflict), 404s.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use sandbox_certs::{
    CertManager, CertManagerConfig, PkiSettings, Renewal, inject_ca_bundle, load_or_create,
    plan_renewal, rotate,
};
use serde_json::{Value, json};

/// Objects by URL path, with a global resourceVersion counter and a log of
/// writes and conflicts.
#[derive(Clone, Default)]
struct FakeApiServer {
    state: Arc<Mutex<State>>,
    /// When set, a GET that finds nothing waits here, so concurrent readers
    /// all see "absent" before anyone creates.
    absent_read_barrier: Option<Arc<tokio::sync::Barrier>>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    last_version: u64,
    writes: Vec<String>,
    conflicts: usize,
}

impl FakeApiServer {
    fn client(&self) -> Client {
        let server = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(request).await) }
        });
        Client::new(service, "default")
    }

    fn insert(&self, path: &str, mut object: Value) {
        let mut state = self.state.lock().unwrap();
        state.last_version += 1;
        object["metadata"]["resourceVersion"] = json!(state.last_version.to_string());
        state.objects.insert(path.to_owned(), object);
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    fn writes(&self) -> Vec<String> {
        self.state.lock().unwrap().writes.clone()
    }

    async fn handle(&self, request: Request<kube::client::Body>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        let (status, answer) = self.answer(&method, path, body);
        if let Some(barrier) = &self.absent_read_barrier
            && method == Method::GET
            && status == StatusCode::NOT_FOUND
        {
            barrier.wait().await;
        }
        let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
        *response.status_mut() = status;
        response
    }

    fn answer(&self, method: &Method, path: String, body: Value) -> (StatusCode, Value) {
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        let (status, answer) = match *method {
            Method::GET => match state.objects.get(&path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => failure(StatusCode::NOT_FOUND, "NotFound"),
            },
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap().to_owned();
                let key = format!("{path}/{name}");
                if state.objects.contains_key(&key) {
                    failure(StatusCode::CONFLICT, "AlreadyExists")
                } else {
                    (StatusCode::CREATED, store(state, method, key, body))
                }
            }
            Method::PUT | Method::PATCH => match state.objects.get(&path).cloned() {
                None => failure(StatusCode::NOT_FOUND, "NotFound"),
                Some(stored) => {
                    let wanted = &body["metadata"]["resourceVersion"];
                    if !wanted.is_null() && *wanted != stored["metadata"]["resourceVersion"] {
                        failure(StatusCode::CONFLICT, "Conflict")
                    } else {
                        let object = if *method == Method::PATCH {
                            let mut merged = stored;
                            json_patch::merge(&mut merged, &body);
                            merged
                        } else {
                            body
                        };
                        (StatusCode::OK, store(state, method, path, object))
                    }
                }
            },
            _ => failure(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        };
        if status == StatusCode::CONFLICT {
            state.conflicts += 1;
        }
        (status, answer)
    }
}

fn store(state: &mut State, method: &Method, key: String, mut object: Value) -> Value {
    state.last_version += 1;
    object["metadata"]["resourceVersion"] = json!(state.last_version.to_string());
    state.objects.insert(key.clone(), object.clone());
    state.writes.push(format!("{method} {key}"));
    object
}

fn failure(status: StatusCode, reason: &str) -> (StatusCode, Value) {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": reason, "reason": reason, "code": status.as_u16(),
    });
    (status, body)
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
    let server = FakeApiServer {
        absent_read_barrier: Some(Arc::new(tokio::sync::Barrier::new(2))),
        ..FakeApiServer::default()
    };
    let (first, second) = (server.client(), server.client());
    let now = Timestamp::now();
    let settings = settings();
    let (a, b) = tokio::join!(
        load_or_create(&first, NAMESPACE, SECRET, &settings, now),
        load_or_create(&second, NAMESPACE, SECRET, &settings, now),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    {
        let state = server.state.lock().unwrap();
        assert_eq!(
            state.writes.len(),
            1,
            "exactly one create won: {:?}",
            state.writes
        );
        assert_eq!(state.conflicts, 1, "the other create got AlreadyExists");
    }

    let secret: Secret = serde_json::from_value(server.get(SECRET_PATH).unwrap()).unwrap();
    let data = secret.data.unwrap();
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt"] {
        assert!(data.contains_key(key), "{key}");
    }
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(data["tls.crt"].0, a.pki.serving.cert_pem.as_bytes());

    // Reading again reuses it without writing.
    let again = load_or_create(&first, NAMESPACE, SECRET, &settings, now)
        .await
        .unwrap();
    assert_eq!(again, a);
    assert_eq!(server.writes().len(), 1);
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
    let stored = load_or_create(&client, NAMESPACE, SECRET, &settings, now)
        .await
        .unwrap();

    let near_expiry = now + SignedDuration::from_hours(24 * 340);
    let renewal = plan_renewal(&stored.pki, &settings, near_expiry);
    assert_eq!(renewal, Renewal::Serving);

    let winner = rotate(
        &client,
        NAMESPACE,
        SECRET,
        &stored,
        renewal,
        &settings,
        near_expiry,
    )
    .await
    .unwrap();
    assert_ne!(winner.resource_version, stored.resource_version);
    assert_eq!(winner.pki.ca, stored.pki.ca);
    assert_ne!(winner.pki.serving, stored.pki.serving);

    // A second replica still holding the old version loses and gets the winner's PKI.
    let loser = rotate(
        &client,
        NAMESPACE,
        SECRET,
        &stored,
        renewal,
        &settings,
        near_expiry,
    )
    .await
    .unwrap();
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
    let writes = server.writes().len();
    let injection = inject_ca_bundle(&client, &names("sandbox"), &names("sandbox"), "PEM A")
        .await
        .unwrap();
    assert!(injection.changed.is_empty());
    assert_eq!(server.writes().len(), writes);

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
        move |cert, key| handed_over.send((cert.to_owned(), key.to_owned())).unwrap(),
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
