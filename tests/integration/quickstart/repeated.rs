//! Issue 18 point 8: `make run` never flakes, on a cold and on a warm
//! control plane, several times in a row (on a private control plane).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{MakeRun, READY_TIMEOUT, STOP_TIMEOUT, signal_group, text};
use crate::common::repo;

/// `cluster.sh ARGS` on the control plane in `state`; its output.
fn private_cluster(state: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("tests/controlplane/cluster.sh"))
        .args(args)
        .env("SANDBOX_CP_STATE", state)
        .env_remove("SANDBOX_CP_POD_START_DELAY_MS")
        .stderr(Stdio::inherit())
        .output()
        .expect("cluster.sh runs")
}

/// Brings the private control plane down when the test ends, however it ends.
struct PrivateCluster(PathBuf);

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = private_cluster(&self.0, &["down"]);
    }
}

/// One `make run` until "ready", then Ctrl-C; returns its output and the
/// time to ready. Panics (with the output) on any failure along the way.
async fn make_run_once(state: &Path) -> (String, Duration) {
    let start = Instant::now();
    let mut run = MakeRun::start("make run", &[("SANDBOX_CP_STATE", state)]);
    // Clean-up on failure goes to this control plane, never the shared one.
    run.kubeconfig = Some(state.join("admin.kubeconfig"));
    loop {
        let output = run.output();
        if output.contains("sandbox-operator is ready") {
            break;
        }
        if let Some(status) = run.exited() {
            panic!("`make run` exited with {status} before it was ready:\n{output}");
        }
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "`make run` not ready within {READY_TIMEOUT:?}:\n{output}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = start.elapsed();
    assert!(
        run.output().contains("warm pool aio-pool has 3 idle Pods"),
        "the pool is not full at \"ready\":\n{}",
        run.output()
    );
    signal_group(run.pgid, "INT");
    let status = run.wait_exit(STOP_TIMEOUT).await;
    let output = run.output();
    assert!(
        status.is_some(),
        "`make run` still runs {STOP_TIMEOUT:?} after Ctrl-C:\n{output}"
    );
    (output, ready)
}

/// Issue 18 point 8: `make run` never flakes. Three runs in a row on a
/// PRIVATE control plane (never the shared one): the first on a cold one
/// (`make run` starts it, and Ctrl-C stops it again), then two on a warm
/// one that was already up (reused and left running). Every run must reach
/// "ready" with a full pool and stop cleanly on Ctrl-C.
#[tokio::test]
async fn make_run_succeeds_on_a_cold_then_a_warm_control_plane_three_times() {
    let state = PathBuf::from(format!(
        "/tmp/sandbox-operator-cp-quickstart-{}",
        std::process::id()
    ));
    let _cleanup = PrivateCluster(state.clone());
    let mut figures = Vec::new();

    let (output, ready) = make_run_once(&state).await;
    assert!(
        output.contains("and the control plane"),
        "run 1 started the control plane, so Ctrl-C stops it:\n{output}"
    );
    assert!(
        !private_cluster(&state, &["kubeconfig"]).status.success(),
        "run 1 left the control plane it started running"
    );
    figures.push(("cold", ready));

    let up = private_cluster(&state, &["up"]);
    assert!(up.status.success(), "cluster.sh up: {}", text(&up));
    for _ in 0..2 {
        let (output, ready) = make_run_once(&state).await;
        assert!(
            !output.contains("stopping the local control plane"),
            "a run on a warm control plane stopped it:\n{output}"
        );
        assert!(
            private_cluster(&state, &["kubeconfig"]).status.success(),
            "the warm control plane is down after a run"
        );
        figures.push(("warm", ready));
    }
    for (i, (kind, ready)) in figures.iter().enumerate() {
        println!(
            "make run #{} on a {kind} control plane: ready after {ready:.1?}",
            i + 1
        );
    }
}
