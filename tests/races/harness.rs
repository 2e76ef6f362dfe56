//! The race tier's harness: a fake API server holding one namespace with a
//! template and a warm pool, a "kubelet" that moves new Pods to Running and
//! Ready, operators (real [`Context`]s and controllers) running against it,
//! and the invariants every scenario checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_fakeapi::{EventType, FakeApiServer};
use sandbox_operator::admin::{Health, HealthThresholds};
use sandbox_operator::api::{CLAIM_UID_LABEL, POOL_LABEL, SandboxClaim, SandboxWarmPool};
use sandbox_operator::controller::{Config, Context, Triggers, run::run_controllers};
use sandbox_operator::metrics::Metrics;
use serde_json::{Value, json};
use tokio::sync::watch;

/// The namespace every scenario uses.
pub const NS: &str = "races";
/// The template of every scenario.
pub const TEMPLATE: &str = "tmpl";
/// The warm pool of every scenario.
pub const POOL: &str = "pool";

const EXT: &str = "/apis/extensions.agents.x-k8s.io/v1alpha1/namespaces/races";

/// Path of a claim.
pub fn claim_path(name: &str) -> String {
    format!("{EXT}/sandboxclaims/{name}")
}
/// Path of the template.
pub fn template_path() -> String {
    format!("{EXT}/sandboxtemplates/{TEMPLATE}")
}
/// Path of the pool.
pub fn pool_path() -> String {
    format!("{EXT}/sandboxwarmpools/{POOL}")
}
/// Path of a Sandbox.
pub fn sandbox_path(name: &str) -> String {
    format!("/apis/agents.x-k8s.io/v1alpha1/namespaces/{NS}/sandboxes/{name}")
}
/// Path of a Pod.
pub fn pod_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{name}")
}
/// Path of a Service.
pub fn service_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/services/{name}")
}
/// Path of a NetworkPolicy.
pub fn policy_path(name: &str) -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{name}")
}

thread_local! {
    /// The fake of the running test, dumped when a wait times out.
    static DUMP: std::cell::RefCell<Option<FakeApiServer>> = const { std::cell::RefCell::new(None) };
}

/// A fake API server with the template and a pool of `replicas`.
pub fn fake_with_pool(replicas: i32) -> FakeApiServer {
    let fake = FakeApiServer::default();
    DUMP.with(|d| *d.borrow_mut() = Some(fake.clone()));
    fake.insert(
        &template_path(),
        json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
            "metadata": {"namespace": NS},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}},
        }),
    );
    fake.insert(
        &pool_path(),
        json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
            "metadata": {"namespace": NS},
            "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": TEMPLATE}},
        }),
    );
    fake
}

/// Creates a claim of the template.
pub fn create_claim(fake: &FakeApiServer, name: &str) -> Value {
    fake.insert(
        &claim_path(name),
        json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
            "metadata": {"namespace": NS},
            "spec": {"sandboxTemplateRef": {"name": TEMPLATE}},
        }),
    )
}

/// The claim as the API server has it now.
pub fn claim(fake: &FakeApiServer, name: &str) -> Arc<SandboxClaim> {
    Arc::new(serde_json::from_value(fake.get(&claim_path(name)).expect("claim")).expect("claim"))
}

/// The pool as the API server has it now.
pub fn pool(fake: &FakeApiServer) -> Arc<SandboxWarmPool> {
    Arc::new(serde_json::from_value(fake.get(&pool_path()).expect("pool")).expect("pool"))
}

/// Plays the kubelet: every `latency`, each Pod without a phase becomes
/// Running and Ready with an IP. Stops when the returned handle is dropped.
pub fn kubelet(fake: &FakeApiServer, latency: Duration) -> tokio::task::JoinHandle<()> {
    let fake = fake.clone();
    tokio::spawn(async move {
        let mut ip = 0u32;
        loop {
            tokio::time::sleep(latency).await;
            for pod in fake.objects(&format!("/api/v1/namespaces/{NS}/pods/")) {
                if pod["status"]["phase"].is_null() {
                    ip += 1;
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                    fake.set_status(
                        &pod_path(name),
                        json!({"phase": "Running", "podIP": format!("10.0.{}.{}", ip / 250, ip % 250),
                               "conditions": [{"type": "Ready", "status": "True"}]}),
                    );
                }
            }
        }
    })
}

/// One operator process: its context and, once started, its controllers.
pub struct Operator {
    /// The shared runtime of its controllers.
    pub ctx: Arc<Context>,
    triggers: Option<Triggers>,
    stop: watch::Sender<bool>,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    /// Starts the caches of an operator named `identity` on the fake.
    pub async fn start(fake: &FakeApiServer, identity: &str) -> Operator {
        Operator::start_with(fake, identity, |_| {}).await
    }

    /// [`Operator::start`] with its [`Config`] changed by `tune` first.
    pub async fn start_with(
        fake: &FakeApiServer,
        identity: &str,
        tune: impl FnOnce(&mut Config),
    ) -> Operator {
        let mut config = Config {
            namespace: Some(NS.into()),
            events: false,
            identity: identity.into(),
            resync: Duration::from_secs(30),
            ..Config::default()
        };
        tune(&mut config);
        let health = Arc::new(Health::new(HealthThresholds::default()));
        let (ctx, triggers) =
            Context::start(fake.client(), config, Arc::new(Metrics::new()), health)
                .await
                .expect("context starts against the fake");
        Operator {
            ctx,
            triggers: Some(triggers),
            stop: watch::channel(false).0,
            running: None,
        }
    }

    /// Runs its three controllers.
    pub fn run(&mut self) {
        let triggers = self.triggers.take().expect("controllers started once");
        let stopped = self.stop.subscribe();
        self.running = Some(tokio::spawn(run_controllers(
            self.ctx.clone(),
            triggers,
            stopped,
        )));
    }

    /// Waits until its Pod cache shows `n` idle Ready Pods of the pool.
    pub async fn sees_idle(&self, n: usize) {
        let ctx = self.ctx.clone();
        wait_until(&format!("the cache shows {n} idle Ready Pods"), || {
            idle_in_cache(&ctx) == n
        })
        .await;
    }

    /// Steal conflicts it counted.
    pub fn steal_conflicts(&self) -> u64 {
        self.ctx
            .metrics
            .steal_conflicts
            .with_label_values(&[NS, POOL])
            .get()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(running) = self.running.take() {
            running.abort();
        }
    }
}

fn idle_in_cache(ctx: &Context) -> usize {
    ctx.caches
        .pods
        .state()
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(POOL_LABEL))
        })
        .filter(|p| sandbox_operator::controller::pod_is_ready(p))
        .count()
}

/// Polls `condition` every 2 ms; panics with `what` after 10 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() > Duration::from_secs(10) {
            if let Some(fake) = DUMP.with(|d| d.borrow().clone()) {
                eprintln!("{}", dump(&fake));
            }
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The Ready condition of an object: (status, reason).
pub fn ready(object: &Value) -> Option<(String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (text(&c["status"]), text(&c["reason"]))
        })
}

/// Idle Pods of the pool that are Ready, per the API server.
pub fn idle_ready_pods(fake: &FakeApiServer) -> Vec<String> {
    fake.objects(&format!("/api/v1/namespaces/{NS}/pods/"))
        .iter()
        .filter(|p| {
            p["metadata"]["labels"][POOL_LABEL] == POOL && p["status"]["phase"] == "Running"
        })
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// A fake with a pool of `replicas`, an operator (its [`Config`] changed
/// by `tune`) running on it, and the pool full. The kubelet stub's handle
/// comes back too: dropping it stops the kubelet.
pub async fn full_pool_with(
    replicas: i32,
    tune: impl FnOnce(&mut Config),
) -> (FakeApiServer, Operator, tokio::task::JoinHandle<()>) {
    let fake = fake_with_pool(replicas);
    let kubelet = kubelet(&fake, Duration::from_millis(2));
    let mut operator = Operator::start_with(&fake, "a", tune).await;
    operator.run();
    wait_until("the pool is full", || {
        idle_ready_pods(&fake).len() == replicas as usize
    })
    .await;
    (fake, operator, kubelet)
}

/// A fake with a pool of `replicas` filled by one real pool reconcile of
/// operator `a`, whose controllers are not running (the test drives the
/// reconciles), `a`'s cache showing every idle Pod; and the kubelet stub's
/// handle (dropping it stops the kubelet).
pub async fn filled_by_hand(
    replicas: i32,
) -> (FakeApiServer, Operator, tokio::task::JoinHandle<()>) {
    let fake = fake_with_pool(replicas);
    let kubelet = kubelet(&fake, Duration::from_millis(2));
    let operator = Operator::start(&fake, "a").await;
    sandbox_operator::controller::warmpool::reconcile(pool(&fake), operator.ctx.clone())
        .await
        .expect("pool reconcile");
    operator.sees_idle(replicas as usize).await;
    (fake, operator, kubelet)
}

/// [`full_pool_with`] with the default configuration.
pub async fn full_pool(replicas: i32) -> (FakeApiServer, Operator, tokio::task::JoinHandle<()>) {
    full_pool_with(replicas, |_| {}).await
}

/// Whether the object at `path` exists and its Ready condition is True.
pub fn ready_in_api(fake: &FakeApiServer, path: &str) -> bool {
    fake.get(path)
        .and_then(|o| ready(&o))
        .is_some_and(|(status, _)| status == "True")
}

/// A running operator, its pool of `replicas` full, and claim `c` served
/// warm from it (see [`full_pool`]).
pub async fn one_warm_claim(
    replicas: i32,
) -> (FakeApiServer, Operator, tokio::task::JoinHandle<()>) {
    let (fake, operator, kubelet) = full_pool(replicas).await;
    create_claim(&fake, "c");
    wait_until("the claim is Ready", || check_invariants(&fake).len() == 1).await;
    assert_eq!(check_invariants(&fake)["c"].0, "warm");
    (fake, operator, kubelet)
}

/// Prints every stored change of the objects with these names and every
/// request whose path ends in one, in order: what a failed invariant needs
/// to be understood from its output alone.
fn print_history(fake: &FakeApiServer, names: &[&str]) {
    for change in fake.audit() {
        if names.contains(&change.key.name.as_str()) {
            let meta = &change.after["metadata"];
            eprintln!(
                "change {:?} {} {}: owners {} labels {} annotations {} status {}",
                change.kind,
                change.key.resource,
                change.key.name,
                meta["ownerReferences"],
                meta["labels"],
                meta["annotations"],
                change.after["status"]
            );
        }
    }
    for request in fake.log() {
        if names
            .iter()
            .any(|n| request.path.ends_with(&format!("/{n}")))
        {
            eprintln!(
                "request {} {} -> {}",
                request.method, request.path, request.code
            );
        }
    }
}

/// Checks the invariants over the fake's whole history and current state:
/// - no Pod ever carried two different claims' uids;
/// - no claim ever showed two different Pods in its status;
/// - each Ready claim's Pod exists and is controlled by the claim or its
///   Sandbox, and no two Ready claims name the same Pod.
///
/// Returns the Ready claims with their launch type and Pod.
pub fn check_invariants(fake: &FakeApiServer) -> BTreeMap<String, (String, String)> {
    check_invariants_with(fake, true)
}

/// [`check_invariants`], with the second rule (a claim never shows two
/// Pods over its life) only when `one_pod_per_claim`; the other rules
/// always hold.
pub fn check_invariants_with(
    fake: &FakeApiServer,
    one_pod_per_claim: bool,
) -> BTreeMap<String, (String, String)> {
    let mut claims_of_pod: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pods_of_claim: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for change in fake.audit() {
        let name = change.key.name.clone();
        if change.key.resource == "pods"
            && change.kind != EventType::Deleted
            && let Some(uid) = change.after["metadata"]["labels"][CLAIM_UID_LABEL].as_str()
        {
            claims_of_pod
                .entry(name.clone())
                .or_default()
                .insert(uid.to_owned());
        }
        if change.key.resource == "sandboxclaims"
            && let Some(pod) = change.after["status"]["podName"].as_str()
        {
            pods_of_claim
                .entry(name)
                .or_default()
                .insert(pod.to_owned());
        }
    }
    for (pod, claims) in &claims_of_pod {
        assert!(
            claims.len() <= 1,
            "Pod {pod} was handed to several claims: {claims:?}"
        );
    }
    for (claim, pods) in pods_of_claim.iter().filter(|_| one_pod_per_claim) {
        assert!(
            pods.len() <= 1,
            "claim {claim} was served by several Pods: {pods:?}"
        );
    }
    let mut served = BTreeMap::new();
    let mut by_pod: BTreeMap<String, String> = BTreeMap::new();
    for claim in fake.objects(&format!("{EXT}/sandboxclaims/")) {
        let name = claim["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if ready(&claim).map(|r| r.0).as_deref() != Some("True") {
            continue;
        }
        let pod_name = claim["status"]["podName"]
            .as_str()
            .expect("a Ready claim names its Pod");
        let Some(pod) = fake.get(&pod_path(pod_name)) else {
            print_history(fake, &[pod_name, &name]);
            panic!("the Pod of a Ready claim exists: claim {name} names Pod {pod_name}");
        };
        let sandbox = fake
            .get(&sandbox_path(&name))
            .expect("a Ready claim has its Sandbox");
        let controller = pod["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|o| o.iter().find(|r| r["controller"] == true))
            .map(|r| r["uid"].clone());
        assert!(
            controller == Some(claim["metadata"]["uid"].clone())
                || controller == Some(sandbox["metadata"]["uid"].clone()),
            "the Pod {pod_name} of claim {name} is controlled by {controller:?}"
        );
        if let Some(other) = by_pod.insert(pod_name.to_owned(), name.clone()) {
            panic!("Pod {pod_name} serves both {other} and {name}");
        }
        let launch = claim["status"]["launchType"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        served.insert(name, (launch, pod_name.to_owned()));
    }
    served
}

/// A summary of claims, Sandboxes and Pods, for failure messages.
pub fn dump(fake: &FakeApiServer) -> String {
    let mut out = String::new();
    for r in fake
        .log()
        .iter()
        .filter(|r| !r.query.contains("watch") && (r.method != "GET" || r.code != 200))
    {
        out.push_str(&format!("{} {} {}\n", r.method, r.path, r.code));
    }
    out.push_str(&format!(
        "pool {}\n",
        fake.get(&pool_path()).unwrap_or_default()
    ));
    for (what, prefix) in [
        ("claim", format!("{EXT}/sandboxclaims/")),
        (
            "sandbox",
            format!("/apis/agents.x-k8s.io/v1alpha1/namespaces/{NS}/sandboxes/"),
        ),
        ("pod", format!("/api/v1/namespaces/{NS}/pods/")),
    ] {
        for o in fake.objects(&prefix) {
            out.push_str(&format!(
                "{what} {} rv={} labels={} annotations={} owner={} ready={:?} status.podName={}\n",
                o["metadata"]["name"],
                o["metadata"]["resourceVersion"],
                o["metadata"]["labels"],
                o["metadata"]["annotations"],
                o["metadata"]["ownerReferences"][0]["name"],
                ready(&o),
                o["status"]["podName"],
            ));
        }
    }
    out
}
