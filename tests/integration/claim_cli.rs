//! Issue 16: `sandbox-operator claim create|delete`, the built binary run
//! against the real control plane with the operator serving one namespace.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{TestNs, kubeconfig, wait_until};
use crate::fixtures::{self, create};
use sandbox_operator::api::{SandboxClaim, SandboxWarmPool};

/// Simulated cold start of the `delayed` template (KWOK delay annotation).
const COLD_START_MS: u64 = 1000;

/// Output of one run of the CLI.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

async fn cli(ns: &TestNs, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
        .arg("claim")
        .args(args)
        .args(["--namespace", &ns.name])
        .env("KUBECONFIG", kubeconfig())
        .output()
        .await
        .expect("run the CLI");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        took: started.elapsed(),
    };
    println!(
        "claim {args:?} -> exit {} in {:?}\n{}{}",
        run.code, run.took, run.stdout, run.stderr
    );
    run
}

async fn template(ns: &TestNs, name: &str, delay_ms: u64) {
    create(ns, &fixtures::template(name, delay_ms)).await;
}

async fn claim_gone(ns: &TestNs, name: &str) {
    let api = ns.api::<SandboxClaim>();
    wait_until(Duration::from_secs(10), || async {
        api.get_opt(name).await.ok().flatten().is_none()
    })
    .await;
}

#[tokio::test]
async fn claim_cli_prints_warm_and_cold_facts_and_deletes() {
    let ns = TestNs::new("claim-cli").await;
    let _op = ns.operator(&[]).await;
    template(&ns, "fast", 0).await;
    template(&ns, "delayed", COLD_START_MS).await;
    create(&ns, &fixtures::pool("pool", "fast", 2)).await;
    let pools = ns.api::<SandboxWarmPool>();
    wait_until(Duration::from_secs(60), || async {
        pools
            .get("pool")
            .await
            .ok()
            .and_then(|p| p.status)
            .is_some_and(|s| s.ready_replicas >= 2)
    })
    .await;

    // Warm, JSON: the stolen Pod keeps its pool name.
    let warm = cli(&ns, &["create", "-t", "fast", "--wait", "-o", "json"]).await;
    assert_eq!(warm.code, 0, "{}", warm.stderr);
    let facts: Value = serde_json::from_str(&warm.stdout).expect("JSON facts");
    let name = facts["claim"].as_str().unwrap().to_string();
    assert!(name.starts_with("fast-"), "{name}");
    assert_eq!(facts["namespace"], json!(ns.name));
    assert_eq!(facts["launch_type"], json!("warm"));
    assert_eq!(facts["sandbox_name"], json!(name));
    assert_eq!(facts["warm_pool"], json!("pool"));
    let pod = facts["pod_name"].as_str().unwrap();
    assert!(pod.starts_with("pool-") && pod != name, "{pod}");
    assert!(!facts["pod_ips"].as_array().unwrap().is_empty());
    let ready = facts["time_to_ready_seconds"].as_f64().unwrap();
    let client = facts["client_seconds"].as_f64().unwrap();
    assert!(ready > 0.0 && ready <= client + 0.1, "{ready} vs {client}");
    if let Some(fqdn) = facts["service_fqdn"].as_str() {
        assert!(fqdn.ends_with(&format!(".{}.svc.cluster.local", ns.name)));
    }
    let stored = ns.api::<SandboxClaim>().get(&name).await.unwrap();
    assert_eq!(stored.status.unwrap().pod_name.as_deref(), Some(pod));

    // Cold, default table: waits for the simulated start.
    let cold = cli(
        &ns,
        &["create", "-t", "delayed", "--warm-pool", "none", "--wait"],
    )
    .await;
    assert_eq!(cold.code, 0, "{}", cold.stderr);
    let lines: Vec<&str> = cold.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("READY-MS"));
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[1], "cold", "{}", cold.stdout);
    assert!(cold.took >= Duration::from_millis(COLD_START_MS - 100));

    // Without --wait: created, name printed, nothing waited for.
    let quick = cli(
        &ns,
        &["create", "-t", "fast", "--name", "mine", "-o", "yaml"],
    )
    .await;
    assert_eq!(quick.code, 0, "{}", quick.stderr);
    assert!(quick.stdout.contains("claim: mine"), "{}", quick.stdout);

    // Delete: 0, then 1 when there is nothing left to delete.
    let deleted = cli(&ns, &["delete", &name, "--wait"]).await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert!(
        ns.api::<SandboxClaim>()
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
    );
    let again = cli(&ns, &["delete", &name]).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("not found"), "{}", again.stderr);
}

#[tokio::test]
async fn claim_cli_exit_codes_name_the_reason() {
    let ns = TestNs::new("claim-cli-fail").await;
    let _op = ns.operator(&[]).await;
    template(&ns, "slow", 60_000).await;

    // Missing template: exit 1 with the reason; the claim is deleted again.
    let missing = cli(&ns, &["create", "-t", "nope", "--wait", "--timeout", "30"]).await;
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("Ready=False TemplateNotFound: SandboxTemplate nope does not exist"),
        "{}",
        missing.stderr
    );
    assert!(missing.took < Duration::from_secs(10), "failed at once");
    let claims = ns
        .api::<SandboxClaim>()
        .list(&Default::default())
        .await
        .unwrap();
    for c in claims.items {
        claim_gone(&ns, &kube::ResourceExt::name_any(&c)).await;
    }

    // Timeout while cold: exit 1 naming the last condition; --keep-on-failure keeps the claim.
    // A cold claim of the slow template, waited for `timeout` seconds.
    let slow_claim = |name: &'static str, timeout: &'static str, extra: &'static [&'static str]| {
        let create = ["create", "-t", "slow", "--warm-pool", "none", "--wait"];
        let args = [&create[..], &["--name", name, "--timeout", timeout], extra].concat();
        let ns = &ns;
        async move { cli(ns, &args).await }
    };
    let slow = slow_claim("slow-1", "2", &["--keep-on-failure"]).await;
    assert_eq!(slow.code, 1, "{}", slow.stderr);
    let expected = format!(
        "SandboxClaim {}/slow-1 not Ready after 2s while starting cold: last condition Ready=False",
        ns.name
    );
    assert!(slow.stderr.contains(&expected), "{}", slow.stderr);
    assert!(slow.took >= Duration::from_secs(2) && slow.took < Duration::from_secs(5));
    let claims = ns.api::<SandboxClaim>();
    assert!(claims.get_opt("slow-1").await.unwrap().is_some(), "kept");
    // Without it the claim is deleted again.
    let dropped = slow_claim("slow-2", "1", &[]).await;
    assert_eq!(dropped.code, 1, "{}", dropped.stderr);
    assert!(
        dropped.stderr.contains("deleted SandboxClaim"),
        "{}",
        dropped.stderr
    );
    claim_gone(&ns, "slow-2").await;

    // Interrupted (SIGTERM, as `timeout 30 sandbox-operator claim create
    // --wait` sends): exit 143, and the claim is deleted, not left behind.
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
        .args([
            "claim",
            "create",
            "-t",
            "slow",
            "--warm-pool",
            "none",
            "--wait",
        ])
        .args(["--name", "slow-3", "--namespace", &ns.name])
        .env("KUBECONFIG", kubeconfig())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the CLI");
    wait_until(Duration::from_secs(20), || async {
        claims.get_opt("slow-3").await.ok().flatten().is_some()
    })
    .await;
    let pid = child.id().expect("the CLI's pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the CLI ends after SIGTERM")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGTERM: deleted SandboxClaim"),
        "{stderr}"
    );
    claim_gone(&ns, "slow-3").await;

    // A create with no clear answer (here: no answer within 1 ms) under the
    // name of a claim that exists: that claim is someone's (its request
    // token is not this command's), and the clean-up leaves it alone. It
    // used to delete by name: the mutating webhook runs before the API
    // server finds the name taken, so a webhook down gave a 500, not 409.
    create(
        &ns,
        &fixtures::claim_of(
            "keep-me",
            json!({"sandboxTemplateRef": {"name": "slow"}, "warmpool": "none"}),
        ),
    )
    .await;
    let kept_uid = claims.get("keep-me").await.unwrap().metadata.uid;
    let abandoned = cli(
        &ns,
        &[
            "create",
            "-t",
            "slow",
            "--name",
            "keep-me",
            "--timeout",
            "0.001",
            "--wait",
        ],
    )
    .await;
    assert_eq!(abandoned.code, 2, "{}", abandoned.stderr);
    assert!(
        abandoned.stderr.contains("no answer to its create")
            && abandoned
                .stderr
                .contains("was made by another request: left alone"),
        "{}",
        abandoned.stderr
    );
    assert_eq!(
        claims.get("keep-me").await.unwrap().metadata.uid,
        kept_uid,
        "the existing claim was left alone"
    );

    // A template name that cannot start a claim's name (a claim's name is
    // its Service's, a DNS-1035 label): the picked name is a valid one.
    template(&ns, "py3.12", 60_000).await;
    let named = cli(
        &ns,
        &[
            "create",
            "-t",
            "py3.12",
            "--warm-pool",
            "none",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(named.code, 0, "{}", named.stderr);
    let name = serde_json::from_str::<Value>(&named.stdout).unwrap()["claim"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        name.starts_with("py3-12-") && name.len() == "py3-12-".len() + 5,
        "{name}"
    );
    assert_eq!(cli(&ns, &["delete", &name]).await.code, 0);

    // Refused by admission: exit 2, the webhook's message names the field.
    let refused = cli(
        &ns,
        &["create", "-t", "Not_A_Name", "--name", "bad-ref", "--wait"],
    )
    .await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("rejected")
            && refused.stderr.contains("spec.sandboxTemplateRef.name"),
        "{}",
        refused.stderr
    );

    // Bad usage: exit 2.
    assert_eq!(cli(&ns, &["create"]).await.code, 2);
}
