//! What the fault and leader tests share: a private control plane they may
//! break, operator processes they may freeze and kill, claim bursts that
//! retry like a real client, and the end-state invariants (every claim
//! Ready, no Pod serving two claims, nothing orphaned, the pool full, the
//! operator's metrics matching the objects).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::common::{client_for, free_port, http_get, operator_command, repo, wait_until_ok};
use crate::fixtures;
use sandbox_operator::api::SandboxClaim;

/// A control plane of its own (state dir, ports, processes), so faults never
/// touch the shared one other tests use. Brought down on drop unless
/// `SANDBOX_FAULTS_KEEP_CP=1` (handy while iterating: the next run reuses it).
pub struct PrivateControlPlane {
    state: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    keep: bool,
}

impl PrivateControlPlane {
    /// Starts (or reuses) the control plane in `SANDBOX_FAULTS_CP_STATE`
    /// (default `/tmp/sandbox-operator-cp-faults`).
    pub fn up() -> PrivateControlPlane {
        let state = std::env::var("SANDBOX_FAULTS_CP_STATE")
            .unwrap_or_else(|_| "/tmp/sandbox-operator-cp-faults".into());
        let mut cp = PrivateControlPlane {
            state: PathBuf::from(state),
            kubeconfig: PathBuf::new(),
            keep: std::env::var("SANDBOX_FAULTS_KEEP_CP").is_ok_and(|v| v == "1"),
        };
        let started = Instant::now();
        let out = cp.cluster(&["up"]);
        cp.kubeconfig = PathBuf::from(out.lines().last().unwrap_or_default().trim());
        println!(
            "private control plane {} up in {:.1?}",
            cp.state.display(),
            started.elapsed()
        );
        cp
    }

    /// Runs `cluster.sh ARGS` on this control plane; panics on failure.
    pub fn cluster(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("bash")
            .arg(repo().join("tests/controlplane/cluster.sh"))
            .args(args)
            .env("SANDBOX_CP_STATE", &self.state)
            .env_remove("SANDBOX_CP_POD_START_DELAY_MS")
            .stderr(Stdio::inherit())
            .output()
            .expect("cluster.sh runs");
        assert!(
            out.status.success(),
            "cluster.sh {args:?} failed ({}) on {}",
            out.status,
            self.state.display()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// An admin client.
    pub async fn client(&self) -> Client {
        client_for(&self.kubeconfig).await
    }
}

impl Drop for PrivateControlPlane {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::process::Command::new("bash")
                .arg(repo().join("tests/controlplane/cluster.sh"))
                .arg("down")
                .env("SANDBOX_CP_STATE", &self.state)
                .status();
        }
    }
}

/// Template `tmpl` (Pods start after `start_delay_ms`) and pool `pool`.
pub async fn template_and_pool(client: &Client, ns: &str, replicas: i32, start_delay_ms: u64) {
    let template = fixtures::template("tmpl", start_delay_ms);
    retry_create(&Api::namespaced(client.clone(), ns), &template).await;
    let pool = fixtures::pool("pool", "tmpl", replicas);
    retry_create(&Api::namespaced(client.clone(), ns), &pool).await;
}

/// Creates `obj` as a client would during an outage: retries on any error
/// for up to a minute; AlreadyExists (an earlier attempt landed) is success.
/// Returns the number of failed attempts.
pub async fn retry_create<K>(api: &Api<K>, obj: &K) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let start = Instant::now();
    let mut failures = 0;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(15),
            api.create(&PostParams::default(), obj),
        )
        .await;
        match attempt {
            Ok(Ok(_)) => return failures,
            Ok(Err(kube::Error::Api(s))) if s.reason == "AlreadyExists" => return failures,
            Ok(Err(error)) if start.elapsed() > Duration::from_secs(60) => {
                panic!(
                    "creating {}: still failing after 60 s: {error}",
                    obj.name_any()
                )
            }
            _ => failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates claims `<prefix><i>` for every `i` in `range` at once, each
/// retrying; returns the total number of failed attempts (how much of the
/// fault the clients saw).
pub async fn burst(
    client: Client,
    ns: String,
    prefix: &'static str,
    range: std::ops::Range<usize>,
) -> usize {
    let api: Api<SandboxClaim> = Api::namespaced(client, &ns);
    let tasks: Vec<_> = range
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}{i}");
            tokio::spawn(async move { retry_create(&api, &fixtures::claim(&name)).await })
        })
        .collect();
    let mut failures = 0;
    for task in tasks {
        failures += task.await.expect("claim task");
    }
    failures
}

/// An operator process (`sandbox-operator run`) on a given control plane.
pub struct OperatorProc {
    child: tokio::process::Child,
    /// Admin address (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_addr: String,
    /// Its log file.
    pub log: PathBuf,
}

impl OperatorProc {
    /// Starts `sandbox-operator run --namespace NS` plus `args`, logging to
    /// `target/test-logs/<ns>-<label>.log`; does not wait for readiness.
    pub fn spawn(kubeconfig: &Path, ns: &str, label: &str, args: &[String]) -> OperatorProc {
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let logs = repo().join("target/test-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let log = logs.join(format!("{ns}-{label}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = operator_command(kubeconfig, file)
            .args(["run", "--namespace", ns, "--metrics-addr", &metrics_addr])
            .args(["--identity", label])
            .args(args)
            .spawn()
            .expect("start the operator binary");
        OperatorProc {
            child,
            metrics_addr,
            log,
        }
    }

    /// Waits for `/readyz`; panics with the log when it does not come.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.metrics_addr);
        let ok = wait_until_ok(Duration::from_secs(60), || async {
            http_get(&url).await.is_ok_and(|(code, _)| code == 200)
        })
        .await;
        assert!(ok, "operator not ready; log:\n{}", self.log_text());
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("operator still running")
    }

    /// Sends a signal (`kill -s NAME`) to this process only.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -s {name} {}", self.pid());
    }

    /// SIGKILL, like a crash; waits until it is gone.
    pub async fn kill9(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait"))
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `/metrics` text (empty when unreachable).
    pub async fn metrics(&self) -> String {
        http_get(&format!("http://{}/metrics", self.metrics_addr))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }
}
