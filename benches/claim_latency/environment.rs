//! The stage of one bench run: the local control plane's client, the CRDs,
//! a fresh namespace, the operator started in it, the claim and Pod
//! watches, and the bench template and pool. `down` stops the operator and
//! deletes the namespace (garbage collection removes everything in it).

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::json;

use sandbox_operator::api::{SandboxTemplate, SandboxWarmPool};

use crate::claims::{Claims, TEMPLATE};
use crate::guard::{self, Guard};
use crate::identity;
use crate::operator::{self, Operator};

#[path = "../shared/cluster.rs"]
pub mod cluster;

pub struct Environment {
    pub client: Client,
    pub ns: String,
    pub operator: Operator,
    pub claims: Claims,
    pub bench_dir: PathBuf,
    /// Whether the ownership guard was on for the run, and who applied it.
    pub guard: Guard,
    /// The local control plane's API server process, when the kubeconfig
    /// is one `cluster.sh` wrote (its pid file beside it): its CPU time is
    /// read from `/proc`, so reading it costs the API server nothing.
    apiserver: Option<(u32, f64)>,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubeconfig() -> PathBuf {
    if let Ok(p) = std::env::var("SANDBOX_KUBECONFIG") {
        return p.into();
    }
    let out = std::process::Command::new("bash")
        .arg(repo().join("tests/controlplane/cluster.sh"))
        .arg("up")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run cluster.sh up");
    assert!(out.status.success(), "cluster.sh up failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("kubeconfig path").trim())
}

/// The pid of the API server `cluster.sh` started for the kubeconfig at
/// `path` (`<state>/pids/kube-apiserver.pid`), if that process is running
/// and is a kube-apiserver, with the clock tick rate.
fn local_apiserver(path: &std::path::Path) -> Option<(u32, f64)> {
    let pid_file = path.parent()?.join("pids/kube-apiserver.pid");
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    comm.starts_with("kube-apiserver")
        .then(|| (pid, crate::procstat::clock_ticks_per_second()))
}

/// Waits (3 minutes at most) until no namespace is terminating. The API
/// server's write counters count every client, so the teardown of an
/// earlier run (a bench, the integration tests) would be counted as this
/// run's writes, and it loads the API server the floor is measured on.
async fn settle(client: &Client) {
    let namespaces = Api::<Namespace>::all(client.clone());
    let started = std::time::Instant::now();
    loop {
        let terminating = namespaces
            .list(&Default::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|n| n.metadata.deletion_timestamp.is_some())
                    .count()
            })
            .unwrap_or(0);
        let waited = started.elapsed();
        if terminating == 0 {
            if waited > Duration::from_secs(1) {
                eprintln!(
                    "waited {:.0} s for earlier namespaces to finish terminating",
                    waited.as_secs_f64()
                );
            }
            return;
        }
        if waited > Duration::from_secs(180) {
            eprintln!(
                "warning: {terminating} namespaces still terminating after 180 s; their deletes count in this run's writes"
            );
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A start-up that failed: removes the operator's identity and the
/// namespace, says why and exits.
async fn abandon(client: &Client, ns: &str, problem: &str) -> ! {
    identity::remove(client, ns).await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await;
    eprintln!("FAILED: {problem}");
    std::process::exit(1);
}

impl Environment {
    /// CRDs applied, a new namespace, the operator ready in it, watches running.
    pub async fn up(options: &operator::Options) -> Environment {
        let path = kubeconfig();
        let client = cluster::client_with_crds(&path).await;
        settle(&client).await;
        let wanted = !options.without_ownership_guard;
        let decided = guard::installed(&client)
            .await
            .and_then(|found| guard::decide(wanted, &found))
            .unwrap_or_else(|problem| {
                eprintln!("FAILED: {problem}");
                std::process::exit(1);
            });
        let ns = cluster::fresh_namespace(&client, "bench").await;
        let bench_dir = repo().join("target/bench");
        std::fs::create_dir_all(&bench_dir).unwrap();
        let identity = if options.as_admin {
            Ok(path.clone())
        } else {
            identity::service_account_kubeconfig(&client, &path, &ns, &bench_dir).await
        };
        let started = match identity {
            Ok(operator_kubeconfig) => {
                Operator::start(&operator_kubeconfig, &ns, &bench_dir, options).await
            }
            Err(problem) => Err(problem),
        };
        let operator = match started {
            Ok(operator) => operator,
            Err(problem) => abandon(&client, &ns, &problem).await,
        };
        let claims = Claims::watch(&client, &ns).await;
        // Applied last: nothing above panics with a guard of ours left behind.
        let guard = match guard::apply(&client, decided).await {
            Ok(guard) => guard,
            Err(problem) => {
                operator.stop().await;
                abandon(&client, &ns, &problem).await
            }
        };
        Environment {
            client,
            ns,
            operator,
            claims,
            bench_dir,
            guard,
            apiserver: local_apiserver(&path),
        }
    }

    /// CPU time the local API server has used so far, in ms; `None` when
    /// the control plane is not a local `cluster.sh` one.
    pub fn apiserver_cpu_ms(&self) -> Option<f64> {
        let (pid, ticks) = self.apiserver?;
        crate::procstat::cpu_ms(pid, ticks)
    }

    /// The bench template (KWOK start-up `delay_ms`; `tiny`: small limits so
    /// thousands of Pods fit the fake Node) and a pool of `replicas` of it.
    pub async fn create_pool(&self, replicas: usize, delay_ms: u64, tiny: bool) {
        // Not tiny: a full run keeps about 1,030 Pods (930 claims' and the
        // pool's), which at 1 CPU each passed the fake Node's 1,000 CPUs, so
        // the pool could not refill after paced-overflow and the run stopped
        // (found this round; the full run had not been made since
        // paced-overflow was added).
        let limits = if tiny {
            json!({"cpu": "10m", "memory": "16Mi"})
        } else {
            json!({"cpu": "250m", "memory": "256Mi"})
        };
        let template: SandboxTemplate = serde_json::from_value(json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
            "metadata": {"name": TEMPLATE},
            "spec": {"podTemplate": {
                "metadata": {"annotations": {"sandbox.test/start-delay-ms": delay_ms.to_string()}},
                "spec": {"containers": [{"name": "agent", "image": "busybox",
                    "ports": [{"containerPort": 8080}], "resources": {"limits": limits}}]}}}}))
        .unwrap();
        Api::<SandboxTemplate>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &template)
            .await
            .expect("create template (webhook admitted)");
        let pool: SandboxWarmPool = serde_json::from_value(json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
            "metadata": {"name": TEMPLATE},
            "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": TEMPLATE}}}))
        .unwrap();
        Api::<SandboxWarmPool>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &pool)
            .await
            .expect("create pool (webhook admitted)");
    }

    /// Stops the operator (it unregisters its webhook), deletes the namespace
    /// and removes the ownership guard if the bench applied it.
    pub async fn down(self) {
        self.operator.stop().await;
        identity::remove(&self.client, &self.ns).await;
        // Policies of cold claims hold until their Pods are gone, which the
        // stopped operator would never see: the namespace would stay
        // terminating.
        if let Err(error) =
            sandbox_operator::controller::policy_hold::lift_all(&self.client, &self.ns).await
        {
            eprintln!("warning: the NetworkPolicies' holds were not lifted: {error}");
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
        guard::restore(&self.client, self.guard).await;
    }
}
