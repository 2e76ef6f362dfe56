//! What the soak reads besides the claims: the operator's RSS and CPU
//! (`/proc`), its `sandbox_operator_tracked_entries` tables (its `/metrics`,
//! on the address found in its command line), and the objects left in the
//! namespace after the deletes.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use sandbox_operator::api::{POOL_LABEL, Sandbox};

use crate::environment::Environment;
use crate::minute::{Sample, tracked_entries};

/// Objects of the soak's claims still present.
#[derive(Debug, Default)]
pub struct Leaks {
    pub claimed_pods: usize,
    pub sandboxes: usize,
    pub services: usize,
    pub network_policies: usize,
}

impl Leaks {
    pub fn total(&self) -> usize {
        self.claimed_pods + self.sandboxes + self.services + self.network_policies
    }
}

impl std::fmt::Display for Leaks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (Pods outside the pool {}, Sandboxes {}, Services {}, NetworkPolicies {})",
            self.total(),
            self.claimed_pods,
            self.sandboxes,
            self.services,
            self.network_policies
        )
    }
}

pub struct Probe {
    metrics_addr: String,
}

/// The `--metrics-addr` of this process's `sandbox-operator` child.
fn operator_metrics_addr() -> Option<String> {
    let me = std::process::id();
    let tasks = std::fs::read_dir(format!("/proc/{me}/task")).ok()?;
    let children: Vec<String> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    children.iter().find_map(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        let at = args.iter().position(|a| a == "--metrics-addr")?;
        args.get(at + 1).cloned()
    })
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

impl Probe {
    pub fn find(_env: &Environment) -> Result<Probe, String> {
        let metrics_addr = operator_metrics_addr()
            .ok_or("no sandbox-operator child with --metrics-addr found in /proc")?;
        if !metrics_addr.starts_with("127.0.0.1:") {
            return Err(format!(
                "the operator's metrics address {metrics_addr} is not local"
            ));
        }
        Ok(Probe { metrics_addr })
    }

    pub async fn sample(&self, env: &Environment) -> Sample {
        let metrics = http_get(&self.metrics_addr, "/metrics")
            .await
            .unwrap_or_default();
        Sample {
            rss_mib: env.operator.rss_mib(),
            cpu_ms: env.operator.cpu_ms(),
            apiserver_cpu_ms: env.apiserver_cpu_ms(),
            tables: tracked_entries(&metrics),
        }
    }

    /// The soak's objects left in the namespace (the pool's own Pods and its
    /// NetworkPolicy for idle Pods are not leaks).
    pub async fn leaks(env: &Environment) -> Result<Leaks, kube::Error> {
        let all = ListParams::default();
        let pods = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
            .list(&all)
            .await?;
        Ok(Leaks {
            claimed_pods: pods
                .items
                .iter()
                .filter(|p| !p.labels().contains_key(POOL_LABEL))
                .count(),
            sandboxes: Api::<Sandbox>::namespaced(env.client.clone(), &env.ns)
                .list(&all)
                .await?
                .items
                .len(),
            services: Api::<Service>::namespaced(env.client.clone(), &env.ns)
                .list(&all)
                .await?
                .items
                .len(),
            network_policies: Api::<NetworkPolicy>::namespaced(env.client.clone(), &env.ns)
                .list(&all)
                .await?
                .items
                .iter()
                .filter(|np| !owned_by_the_pool(np))
                .count(),
        })
    }

    /// Waits (at most `timeout`) for garbage collection to remove what the
    /// deleted claims owned; returns what is left then.
    pub async fn wait_for_no_leaks(&self, env: &Environment, timeout: Duration) -> Leaks {
        let start = Instant::now();
        loop {
            match Self::leaks(env).await {
                Ok(leaks) if leaks.total() == 0 || start.elapsed() > timeout => return leaks,
                Err(error) if start.elapsed() > timeout => {
                    panic!("cannot list the namespace's objects: {error}")
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// Whether a controller owner reference of `object` is a SandboxWarmPool
/// (the pool's NetworkPolicy for its idle Pods lives as long as the pool).
fn owned_by_the_pool(object: &NetworkPolicy) -> bool {
    object
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "SandboxWarmPool")
}
