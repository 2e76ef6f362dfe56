//! `make run` as the README's reader runs it: in its own process group
//! (so Ctrl-C reaches the whole group, as from a terminal), its output
//! captured; on drop (a failed assertion included) it gets Ctrl-C, then
//! SIGKILL, and the objects it created are removed. Also the small kubectl
//! and log readers the quick-start test uses.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::processes::{group_members, signal_group};
use super::{NAMESPACE, STOP_TIMEOUT};
use crate::common::repo;

pub(super) fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

pub(super) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Port in `... webhook https://127.0.0.1:<port>` of the script's start message.
pub(super) fn webhook_port(log: &str) -> Option<u16> {
    let rest = log.split("webhook https://127.0.0.1:").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `make run` in its own process group; on drop (a failed assertion included)
/// it gets Ctrl-C, then SIGKILL, and the objects it created are removed.
pub(super) struct MakeRun {
    child: Child,
    pub(super) pgid: u32,
    pub(super) log: PathBuf,
    pub(super) kubeconfig: Option<PathBuf>,
    pub(super) claims: Vec<String>,
}

impl MakeRun {
    pub(super) fn start(command: &str, env: &[(&str, &Path)]) -> MakeRun {
        let logs = repo().join("target/test-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        // One file per run: tests of this binary run side by side (same pid).
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = logs.join(format!(
            "quickstart-make-run-{}-{run}.log",
            std::process::id()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(command)
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .process_group(0);
        // As from a fresh shell: none of the operator's settings (it reads
        // SANDBOX_* variables) and no fixed ports; the control plane's own
        // SANDBOX_CP_* settings are kept. Nor what `cargo test` sets for test
        // processes: build scripts track some of it (ring's tracks
        // CARGO_MANIFEST_DIR), so `make run`'s `cargo build` would rebuild
        // ring, rustls, kube and the operator, and the next build again.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().to_string();
            let operator = key.starts_with("SANDBOX_") && !key.starts_with("SANDBOX_CP_");
            let cargo_test = key == "OUT_DIR"
                || [
                    "CARGO_MANIFEST_",
                    "CARGO_PKG_",
                    "CARGO_BIN_",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .iter()
                .any(|p| key.starts_with(p));
            if operator || cargo_test {
                cmd.env_remove(&key);
            }
        }
        // Isolation from the tests running alongside (each with its own
        // namespace and operator): the operator `make run` starts watches,
        // and its webhook admits, namespace `default` only, where the README's
        // objects go. The command itself is unchanged.
        cmd.env("SANDBOX_WATCH_NAMESPACE", NAMESPACE);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd.spawn().expect("bash runs");
        let pgid = child.id();
        MakeRun {
            child,
            pgid,
            log,
            kubeconfig: None,
            claims: Vec::new(),
        }
    }

    pub(super) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `timeout` for `make` to exit.
    pub(super) async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for MakeRun {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal_group(self.pgid, "INT");
            let start = Instant::now();
            while matches!(self.child.try_wait(), Ok(None)) && start.elapsed() < STOP_TIMEOUT {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if !group_members(self.pgid).is_empty() {
            signal_group(self.pgid, "KILL");
            let _ = self.child.wait();
        }
        let kubeconfig = self
            .kubeconfig
            .clone()
            .unwrap_or_else(crate::common::kubeconfig);
        for claim in &self.claims {
            let _ = kubectl(
                &kubeconfig,
                &[
                    "delete",
                    "sbc",
                    claim,
                    "-n",
                    NAMESPACE,
                    "--ignore-not-found",
                    "--wait=false",
                ],
            );
        }
        // A claim that went cold leaves its policy held (the operator is
        // stopped): lifted here, or it would stay terminating.
        crate::common::lift_policy_holds(&kubeconfig.to_string_lossy(), NAMESPACE);
        let _ = kubectl(
            &kubeconfig,
            &[
                "delete",
                "swp/aio-pool",
                "sbt/aio",
                "-n",
                NAMESPACE,
                "--ignore-not-found",
                "--wait=false",
            ],
        );
    }
}
