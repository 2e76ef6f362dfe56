//! Test harness: the real local control plane, one namespace per test, and
//! the operator as a real child process scoped to that namespace.
//!
//! The control plane comes from `SANDBOX_KUBECONFIG` when set, otherwise
//! `tests/controlplane/cluster.sh up` is run (building it on a new machine).
//! When neither works the test FAILS with the reason; nothing is skipped.
//! HTTP helpers for the operator's ports are in `http`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

mod http;

pub use http::{free_port, free_ports, http_get};

/// Repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the admin kubeconfig of the running control plane (started if needed).
pub fn kubeconfig() -> PathBuf {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(path) = std::env::var("SANDBOX_KUBECONFIG") {
            return Ok(PathBuf::from(path));
        }
        let script = repo().join("tests/controlplane/cluster.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("up")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} up failed with {}",
                script.display(),
                out.status
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| "cluster.sh printed no kubeconfig path".to_string())
    })
    .clone()
    .unwrap_or_else(|reason| panic!("no local control plane for this test: {reason}"))
}

/// The directory of the harness binaries (kubectl-compatible tools, helm, kwok).
pub fn bin_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("bash")
        .arg(repo().join("tests/controlplane/cluster.sh"))
        .arg("env")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        l.strip_prefix("export PATH=")
            .map(|p| PathBuf::from(p.split(':').next().unwrap_or_default()))
    })
}

/// A client for the admin user.
pub async fn client() -> Client {
    client_for(&kubeconfig()).await
}

/// A client from a kubeconfig file.
pub async fn client_for(path: &Path) -> Client {
    let kc = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("client from kubeconfig")
}

/// A client that acts as `user` (the admin impersonating it), for requests
/// an ordinary namespace user makes.
pub async fn client_as(user: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig()).expect("reading the admin kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("client from kubeconfig")
}

/// Installs (server-side apply) the operator's CRDs once per test binary and
/// waits until they are Established.
pub async fn install_crds(client: &Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| apply_crds(client)).await;
}

/// Server-side applies the CRDs on the cluster of `client` and waits until
/// each is Established (a CRD without a status yet simply is not Established
/// yet); panics naming the CRD otherwise.
pub async fn apply_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in sandbox_operator::api::crds() {
        api.patch(
            &crd.name_any(),
            &PatchParams::apply("sandbox-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("installing CRD {}: {e}", crd.name_any()));
    }
    for crd in sandbox_operator::api::crds() {
        let established = wait_until_ok(Duration::from_secs(60), || async {
            api.get_opt(&crd.name_any())
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status?.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        })
        .await;
        assert!(established, "CRD {} not Established", crd.name_any());
    }
}

/// Creates namespace `<prefix>-<random>` on the cluster of `client` and
/// waits (30 s at most) for its default ServiceAccount.
pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    let ok = wait_until_ok(Duration::from_secs(30), || async {
        service_accounts
            .get_opt("default")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    assert!(ok, "namespace {name} got no default ServiceAccount");
    name
}

/// A namespace owned by one test; deleted when dropped.
pub struct TestNs {
    /// Client for the admin user.
    pub client: Client,
    /// The namespace name.
    pub name: String,
}

impl TestNs {
    /// Creates a fresh namespace `<prefix>-<random>` and installs the CRDs.
    pub async fn new(prefix: &str) -> TestNs {
        let client = client().await;
        install_crds(&client).await;
        let name = create_namespace(&client, prefix).await;
        TestNs { client, name }
    }

    /// A typed API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Every object of kind `K` in this namespace; panics on an API error.
    pub async fn list<K>(&self) -> Vec<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("listing in {}: {e}", self.name))
            .items
    }

    /// Creates every document of a YAML file (relative to the repo) in this
    /// namespace, unchanged; returns the created objects.
    pub async fn create_yaml(&self, relative: &str) -> Vec<DynamicObject> {
        let text = std::fs::read_to_string(repo().join(relative)).expect("example file");
        self.create_yaml_text(&text)
            .await
            .unwrap_or_else(|e| panic!("creating {relative}: {e}"))
    }

    /// Creates every document of a YAML text; the first API error is returned.
    pub async fn create_yaml_text(&self, text: &str) -> Result<Vec<DynamicObject>, kube::Error> {
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(doc).expect("valid YAML");
            if value.is_null() {
                continue;
            }
            let obj: DynamicObject = serde_yaml::from_value(value).expect("a Kubernetes object");
            let api = self.dynamic_api(&obj);
            out.push(api.create(&PostParams::default(), &obj).await?);
        }
        Ok(out)
    }

    /// A dynamic API for the kind of `obj` in this namespace.
    pub fn dynamic_api(&self, obj: &DynamicObject) -> Api<DynamicObject> {
        let types = obj.types.as_ref().expect("apiVersion and kind");
        let (group, version) = match types.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), types.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &types.kind);
        let plural = format!("{}s", types.kind.to_lowercase()).replace("sandboxs", "sandboxes");
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        Api::namespaced_with(self.client.clone(), &self.name, &resource)
    }

    /// `kubectl` against the test control plane in this namespace.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        kubectl(&[&["-n", &self.name], args].concat())
    }

    /// Starts the operator for this namespace (leader election off).
    pub async fn operator(&self, extra: &[&str]) -> Operator {
        Operator::start(&self.name, extra).await
    }
}

/// Lifts the hold of the operator's NetworkPolicies in `namespace` (its
/// finalizer keeps a deleted policy until the operator has seen its Pods
/// gone, which a stopped operator never does, and the namespace would stay
/// terminating). One `kubectl get` when none carries it.
pub fn lift_policy_holds(kubeconfig: &str, namespace: &str) {
    let held = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            kubeconfig,
            "-n",
            namespace,
            "get",
            "networkpolicies",
            "-l",
            "app.kubernetes.io/managed-by=sandbox-operator",
            "-o",
        ])
        .arg(r#"jsonpath={range .items[?(@.metadata.finalizers)]}{.metadata.name}{"\n"}{end}"#)
        .output();
    let Ok(held) = held else {
        return;
    };
    let lift = r#"[{"op":"remove","path":"/metadata/finalizers"}]"#;
    for name in String::from_utf8_lossy(&held.stdout)
        .lines()
        .filter(|l| !l.is_empty())
    {
        let _ = std::process::Command::new("kubectl")
            .args([
                "--kubeconfig",
                kubeconfig,
                "-n",
                namespace,
                "patch",
                "networkpolicy",
                name,
            ])
            .args(["--type=json", "-p", lift])
            .output();
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let name = self.name.clone();
        let path = kubeconfig();
        // Best effort, outside the test's runtime (it may be shutting down).
        let _ = std::thread::spawn(move || {
            let config = webhook_config_name(&name);
            let kc = path.to_str().unwrap_or_default();
            let _ = std::process::Command::new("kubectl")
                .args([
                    "--kubeconfig",
                    kc,
                    "delete",
                    "namespace",
                    &name,
                    "--wait=false",
                ])
                .output();
            lift_policy_holds(kc, &name);
            for kind in [
                "mutatingwebhookconfiguration",
                "validatingwebhookconfiguration",
            ] {
                let _ = std::process::Command::new("kubectl")
                    .args(["--kubeconfig", kc, "delete", "--ignore-not-found", kind])
                    .arg(&config)
                    .output();
            }
        })
        .join();
    }
}

/// Name of the webhook configurations a test's operator registers.
pub fn webhook_config_name(namespace: &str) -> String {
    format!("sandbox-operator-{namespace}")
}

/// Runs kubectl with the test kubeconfig.
pub fn kubectl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// The operator as a child process, killed (SIGKILL) when dropped.
pub struct Operator {
    child: tokio::process::Child,
    /// Admin port address.
    pub metrics_addr: String,
    /// Port of the webhook's HTTPS server.
    pub webhook_port: u16,
    /// Where its log goes.
    pub log: PathBuf,
}

impl Operator {
    /// Starts `sandbox-operator run` scoped to `namespace`, waits for /readyz.
    pub async fn start(namespace: &str, extra: &[&str]) -> Operator {
        let [port, webhook_port] = free_ports::<2>();
        let metrics_addr = format!("127.0.0.1:{port}");
        let logs = repo().join("target/test-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let log = logs.join(format!("{namespace}-operator-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = operator_command(&kubeconfig(), file)
            .args([
                "run",
                "--leader-elect=false",
                "--namespace",
                namespace,
                "--metrics-addr",
                &metrics_addr,
            ])
            // The webhook as in production, registered by URL on 127.0.0.1 and
            // limited to this test's namespace.
            .args([
                "--operator-namespace",
                namespace,
                "--webhook-addr",
                &format!("127.0.0.1:{webhook_port}"),
            ])
            .args([
                "--register-webhook-url",
                &format!("https://127.0.0.1:{webhook_port}"),
            ])
            .args(["--webhook-config-name", &webhook_config_name(namespace)])
            // Cluster-wide and the same for every test's operator (all run
            // as the admin): applying it again is a no-op.
            .arg("--register-ownership-guard=true")
            .args(extra)
            .spawn()
            .expect("start the operator binary");
        let op = Operator {
            child,
            metrics_addr,
            webhook_port,
            log,
        };
        let url = format!("http://{}/readyz", op.metrics_addr);
        let ok = wait_until_ok(Duration::from_secs(60), || async {
            http_get(&url).await.is_ok_and(|(code, _)| code == 200)
        })
        .await;
        assert!(
            ok,
            "operator did not become ready; log: {}",
            std::fs::read_to_string(&op.log).unwrap_or_default()
        );
        op
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("operator is running")
    }

    /// Kills the process with SIGKILL (no cleanup, like a crash).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        http_get(&format!("http://{}/metrics", self.metrics_addr))
            .await
            .expect("scrape metrics")
            .1
    }
}

/// The operator binary as a command: `KUBECONFIG` set, its logs (stdout
/// and stderr) to `log`, killed when the child handle is dropped.
pub fn operator_command(kubeconfig: &Path, log: std::fs::File) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-operator"));
    command
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,kube_runtime=warn,kube_client=warn")
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true);
    command
}

/// Polls `get` until `cond` holds on the object; panics with the last state
/// after `timeout`.
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, timeout: Duration, cond: F) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Ok(Some(obj)) = api.get_opt(name).await {
            if cond(&obj) {
                return obj;
            }
            last = Some(obj);
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting on {name}; last seen: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until the future yields true; panics after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        wait_until_ok(timeout, f).await,
        "condition not met within {timeout:?}"
    );
}

/// Polls until the future yields true; false after `timeout`.
pub async fn wait_until_ok<F, Fut>(timeout: Duration, f: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

use serde::Deserialize;

/// The test's finalizer on one object (`kind`/`name`), lifted when dropped
/// (even by a failing test: the namespace could not go otherwise).
pub struct Held {
    namespace: String,
    kind: &'static str,
    name: String,
}

/// The finalizer [`Held`] lifts.
pub const TEST_HOLD: &str = "sandbox.test/hold";

impl Held {
    /// Puts [`TEST_HOLD`] on `kind`/`name`.
    pub fn on(ns: &TestNs, kind: &'static str, name: &str) -> Held {
        let out = ns.kubectl(&[
            "patch",
            kind,
            name,
            "--type=merge",
            "-p",
            &serde_json::json!({"metadata": {"finalizers": [TEST_HOLD]}}).to_string(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Held {
            namespace: ns.name.clone(),
            kind,
            name: name.to_string(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "-n",
            &self.namespace,
            "patch",
            self.kind,
            &self.name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    }
}
