//! The operator under test, as in production: its own process (the
//! `sandbox-operator` binary of this build), scoped to the bench namespace,
//! its webhook registered by URL on 127.0.0.1. Its log (JSON, with the
//! `timeline` target) goes to `target/bench/<ns>-operator.log`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::environment::cluster::free_port;
use crate::procstat;

pub struct Operator {
    child: tokio::process::Child,
    pid: u32,
    pub log_path: PathBuf,
    ticks_per_second: f64,
    metrics_port: u16,
}

/// How the operator is started beyond the bench's fixed flags.
#[derive(Default)]
pub struct Options {
    /// `--claim-network-policy`, passed only when the bench was given it
    /// (else the operator's default: no inherited `SANDBOX_*` reaches it).
    pub network_policy: Option<String>,
    /// `--max-pool-replicas` and an admission policy file allowing that many.
    pub max_pool_replicas: Option<usize>,
    /// Run the operator with the bench's admin kubeconfig instead of a
    /// ServiceAccount token (`--operator-as-admin`, see `identity`).
    pub as_admin: bool,
    /// Run without the ownership guard (`--no-ownership-guard`); by default
    /// it is applied before the operator starts, as the chart installs it
    /// (`guard`).
    pub without_ownership_guard: bool,
}

impl Operator {
    /// Starts the operator and waits (60 s at most) until `/readyz` answers 200.
    pub async fn start(
        kubeconfig: &Path,
        ns: &str,
        bench_dir: &Path,
        options: &Options,
    ) -> Result<Self, String> {
        let (mport, wport) = (free_port(), free_port());
        let log_path = bench_dir.join(format!("{ns}-operator.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-operator"));
        command
            .args(["run", "--leader-elect=false", "--namespace", ns])
            .args(["--operator-namespace", ns])
            .args(["--metrics-addr", &format!("127.0.0.1:{mport}")])
            .args(["--webhook-addr", &format!("127.0.0.1:{wport}")])
            .args([
                "--register-webhook-url",
                &format!("https://127.0.0.1:{wport}"),
            ])
            .args(["--webhook-config-name", &format!("sandbox-operator-{ns}")])
            .args(["--log-format", "json"])
            // The bench decides about the ownership guard (`guard`).
            .arg("--register-ownership-guard=false");
        if let Some(mode) = &options.network_policy {
            command.arg(format!("--claim-network-policy={mode}"));
        }
        if let Some(n) = options.max_pool_replicas {
            let policy = bench_dir.join(format!("{ns}-policy.yaml"));
            std::fs::write(&policy, format!("maxPoolReplicas: {n}\n")).unwrap();
            command.arg(format!("--max-pool-replicas={n}"));
            command.arg("--policy-file").arg(policy);
        }
        // Nothing inherited may set a flag behind the bench's back (`child_env`).
        for name in crate::child_env::inherited_to_remove() {
            command.env_remove(name);
        }
        let child = command
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,timeline=info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the operator");
        let pid = child.id().expect("the operator's pid");
        let mut operator = Operator {
            child,
            pid,
            log_path,
            ticks_per_second: procstat::clock_ticks_per_second(),
            metrics_port: mport,
        };
        match operator.wait_ready(mport).await {
            Ok(()) => Ok(operator),
            Err(problem) => {
                operator.stop().await;
                Err(problem)
            }
        }
    }

    async fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let start = Instant::now();
        while !readyz(port).await {
            let log = self.log_path.display();
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                let lines: Vec<&str> = tail.lines().collect();
                let last = lines
                    .iter()
                    .find(|l| l.starts_with("error"))
                    .or(lines.last())
                    .unwrap_or(&"")
                    .to_string();
                return Err(format!(
                    "the operator exited ({status}) before it was ready: {last} (log {log})"
                ));
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("the operator was not ready within 60 s; see {log}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// CPU time (user + system, all threads) the operator has used so far, ms.
    pub fn cpu_ms(&self) -> f64 {
        procstat::cpu_ms(self.pid, self.ticks_per_second).expect("read /proc/<operator>/stat")
    }

    /// The operator's resident memory now, MiB.
    pub fn rss_mib(&self) -> f64 {
        procstat::rss_mib(self.pid).expect("read /proc/<operator>/status")
    }

    /// The operator's peak resident memory so far (VmHWM), MiB.
    pub fn rss_peak_mib(&self) -> f64 {
        procstat::rss_peak_mib(self.pid).expect("read /proc/<operator>/status")
    }

    /// The operator's own `/metrics` text (empty if it does not answer).
    pub async fn metrics(&self) -> String {
        let answer = get(self.metrics_port, "/metrics").await;
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }

    /// SIGTERM (the operator unregisters its webhook), then wait 10 s at most.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

async fn readyz(port: u16) -> bool {
    get(port, "/readyz").await.starts_with("HTTP/1.1 200")
}

/// The whole answer (status line, headers, body) to a GET of `path` on the
/// operator's admin port; empty when it cannot be reached.
async fn get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer
}
