//! Issue 8's RBAC proof, both halves: the operator with exactly the chart's
//! flags and RBAC runs the whole claim path with nothing refused, and the
//! same run with one Role rule removed fails exactly the checks the first
//! makes, then heals when the rule is back.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::Api;
use serde_json::Value as Json;

use super::helm::{kind_of, strings, succeed, text};
use super::local_operator::{
    ChartOperator, LocalRelease, create_claim, create_template_and_pool, forbidden_lines,
    reconcile_errors,
};
use crate::common::{TestNs, free_port, wait_until_ok};
use crate::fixtures::{claim_ready, wait_claim_ready, wait_idle_ready};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use sandbox_operator::api::{
    LaunchType, POOL_LABEL, READY, SandboxClaim, SandboxWarmPool, find_condition,
};

/// Issue 8, acceptance item 3 (RBAC proof): the operator binary, run with
/// the chart's Deployment arguments and nothing but a TokenRequest token of
/// the chart's ServiceAccount, goes through leader election, the caBundle
/// injection into the chart's webhook configurations, a pool fill, a warm
/// claim, the refill, a cold claim, a certificate rotation and a graceful
/// stop that releases the Lease, and the API server refuses it nothing.
/// `removing_one_rbac_rule_breaks_the_claim_path` shows these checks fail
/// when one rule is missing.
#[tokio::test]
async fn operator_runs_with_the_charts_flags_rbac_and_webhook_configurations() {
    let started = std::time::Instant::now();
    let ns = TestNs::new("chartop").await;
    let webhook_port = free_port();
    // Certificate checks every second (through the chart's extraArgs) so a
    // broken serving certificate is replaced within the test.
    let release = LocalRelease::install(
        &ns,
        webhook_port,
        &[
            "--set-json",
            r#"controller.extraArgs=["--cert-check-seconds=1"]"#,
        ],
    );
    let config_name = release.name_of("MutatingWebhookConfiguration");
    assert_eq!(release.flag("--leader-elect"), "true");
    assert_eq!(release.flag("--lease-namespace"), ns.name);
    let lease_name = release.flag("--lease-name");
    let cert_secret = release.flag("--cert-secret");
    let mut operator = ChartOperator::start(&release, &ns, webhook_port).await;
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
    step("operator ready");

    // (a) Leader election: the Lease in the release namespace is held by
    // this process, and its /metrics say so.
    let leases: Api<Lease> = ns.api();
    let held = wait_until_ok(Duration::from_secs(60), || async {
        leases
            .get_opt(&lease_name)
            .await
            .ok()
            .flatten()
            .is_some_and(|l| {
                l.spec.and_then(|s| s.holder_identity).as_deref()
                    == Some(operator.identity.as_str())
            })
    })
    .await;
    assert!(
        held,
        "Lease {lease_name} is not held by {}: {:?}\nlog:\n{}",
        operator.identity,
        leases.get_opt(&lease_name).await.ok().flatten(),
        operator.log()
    );
    let leader_gauge = wait_until_ok(Duration::from_secs(30), || async {
        operator
            .metrics()
            .await
            .lines()
            .any(|l| l == "sandbox_operator_leader 1")
    })
    .await;
    assert!(leader_gauge, "sandbox_operator_leader is not 1");
    step("leader");

    // The operator injects its CA into the chart's configurations (RBAC by
    // resourceNames).
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(ns.client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(ns.client.clone());
    let bundles = || async {
        let m = mutating.get(&config_name).await.ok()?;
        let v = validating.get(&config_name).await.ok()?;
        let mut all = Vec::new();
        for w in m.webhooks.unwrap_or_default() {
            all.push(w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default());
        }
        for w in v.webhooks.unwrap_or_default() {
            all.push(w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default());
        }
        Some(all)
    };
    let injected = wait_until_ok(Duration::from_secs(60), || async {
        bundles()
            .await
            .is_some_and(|all| !all.is_empty() && all.iter().all(|b| !b.is_empty()))
    })
    .await;
    assert!(
        injected,
        "caBundle was not injected into {config_name}; log:\n{}",
        operator.log()
    );
    let first_bundle = bundles().await.unwrap();

    // (b) A pool of 2 fills.
    create_template_and_pool(&ns, "rbac", 2).await;
    wait_idle_ready(&ns, 2, "pool fill", || operator.log()).await;
    step("pool filled");

    // (c) A warm claim through the chart's webhooks (failurePolicy Fail).
    create_claim(&ns, "warm-1", "rbac", None).await.unwrap();
    let launch = wait_claim_ready(&ns, "warm-1", || operator.log()).await;
    assert_eq!(
        launch,
        Some(LaunchType::Warm),
        "claim warm-1 on a filled pool was not served warm: {:#?}\nlog:\n{}",
        ns.api::<SandboxClaim>()
            .get("warm-1")
            .await
            .map(|c| c.status),
        operator.log()
    );
    step("warm claim Ready");

    // (d) The pool refills.
    wait_idle_ready(&ns, 2, "refill", || operator.log()).await;
    step("pool refilled");

    // (e) A cold claim.
    create_claim(&ns, "cold-1", "rbac", Some("none"))
        .await
        .unwrap();
    assert_eq!(
        wait_claim_ready(&ns, "cold-1", || operator.log()).await,
        Some(LaunchType::Cold)
    );
    // A claim that finds its pool with no idle Pod Ready is served cold too
    // (taking the pool's Pod still starting, or one of its own), with a
    // PoolExhausted Event (the Events rule). The pool keeps one Pod, which
    // KWOK starts 3 s after it is scheduled: a pool sized to zero keeps no
    // Pods by design and is not exhausted.
    crate::fixtures::create(
        &ns,
        &crate::fixtures::template_of("rbac-empty", crate::fixtures::listening_agent_pod(3000)),
    )
    .await;
    crate::fixtures::create(&ns, &crate::fixtures::pool("rbac-empty", "rbac-empty", 1)).await;
    create_claim(&ns, "cold-2", "rbac-empty", None)
        .await
        .unwrap();
    assert_eq!(
        wait_claim_ready(&ns, "cold-2", || operator.log()).await,
        Some(LaunchType::Cold)
    );
    step("cold claims Ready");

    // (f) Certificate rotation: an unreadable serving certificate in the
    // Secret (the key stays: the Secret is kubernetes.io/tls) is replaced
    // by the operator under the same CA, and the webhook presents it.
    let serial_before = operator.served_serial();
    assert!(
        serial_before.starts_with("serial="),
        "no certificate on the webhook port: {serial_before:?}"
    );
    let garbage = serde_json::to_value(k8s_openapi::ByteString(b"not a certificate".to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let out = ns.kubectl(&[
        "patch",
        "secret",
        &cert_secret,
        "--type=merge",
        "-p",
        &format!(r#"{{"data":{{"tls.crt":"{garbage}"}}}}"#),
    ]);
    assert!(out.status.success(), "patching the Secret: {}", text(&out));
    let rotated = wait_until_ok(Duration::from_secs(60), || async {
        let serial = operator.served_serial();
        serial.starts_with("serial=") && serial != serial_before
    })
    .await;
    assert!(
        rotated,
        "the webhook still presents {serial_before} after the Secret was broken; log:\n{}",
        operator.log()
    );
    let serial_after = operator.served_serial();
    let repaired = ns.kubectl(&[
        "get",
        "secret",
        &cert_secret,
        "-o",
        "jsonpath={.data.tls\\.crt}",
    ]);
    assert_ne!(
        String::from_utf8_lossy(&repaired.stdout).trim(),
        garbage,
        "the Secret still holds the broken certificate"
    );
    // The CA was sound, so it is kept: the registered caBundle stays valid
    // and no admission can fail while a new bundle would propagate.
    let bundles_now = bundles().await.unwrap_or_default();
    assert!(
        !bundles_now.is_empty()
            && bundles_now
                .iter()
                .all(|b| !b.is_empty() && first_bundle.contains(b)),
        "the caBundle of {config_name} changed although the CA was sound; log:\n{}",
        operator.log()
    );
    // An object created through the webhook after the rotation (the API
    // server may need a moment to pick up the new caBundle).
    let admitted = wait_until_ok(Duration::from_secs(60), || async {
        match create_claim(&ns, "warm-2", "rbac", None).await {
            Ok(()) => true,
            // An earlier attempt was stored although its answer was lost.
            Err(e) if e.contains("already exists") => true,
            Err(e) => {
                eprintln!("creating a claim after the rotation: {e}");
                false
            }
        }
    })
    .await;
    assert!(
        admitted,
        "no object could be created through the webhook after the rotation; log:\n{}",
        operator.log()
    );
    assert_eq!(
        wait_claim_ready(&ns, "warm-2", || operator.log()).await,
        Some(LaunchType::Warm)
    );
    step(&format!(
        "certificate rotated ({serial_before} -> {serial_after}), claim admitted after it"
    ));

    // Nothing the operator tried was forbidden to it, and no reconcile failed.
    let metrics = operator.metrics().await;
    assert!(
        reconcile_errors(&metrics).is_empty(),
        "reconciles failed: {:?}\nlog:\n{}",
        reconcile_errors(&metrics),
        operator.log()
    );
    let claims_total: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sandbox_operator_claims_total"))
        .collect();
    assert!(!claims_total.is_empty(), "no claims counted:\n{metrics}");

    // The operator's Event was published with the chart's RBAC.
    let published = wait_until_ok(Duration::from_secs(30), || async {
        let events = ns.kubectl(&["get", "events.events.k8s.io", "-o", "json"]);
        serde_json::from_slice::<Json>(&events.stdout).is_ok_and(|events| {
            events["items"].as_array().into_iter().flatten().any(|e| {
                e["reportingController"] == "sandbox-operator" && e["reason"] == "PoolExhausted"
            })
        })
    })
    .await;
    assert!(
        published,
        "no PoolExhausted Event from the operator; log:\n{}",
        operator.log()
    );

    // The Lease is renewed (an update by resourceName), not only taken.
    let renew_time = |lease: Option<Lease>| {
        lease
            .and_then(|l| l.spec)
            .and_then(|s| s.renew_time)
            .map(|t| t.0)
    };
    let first_renewal = renew_time(leases.get_opt(&lease_name).await.unwrap());
    let renewed = wait_until_ok(Duration::from_secs(30), || async {
        let now = renew_time(leases.get_opt(&lease_name).await.ok().flatten());
        now.is_some() && now != first_renewal
    })
    .await;
    assert!(
        renewed,
        "Lease {lease_name} was not renewed; log:\n{}",
        operator.log()
    );
    step("Events published, Lease renewed");

    // (g) A graceful stop (SIGTERM, as the kubelet sends) releases the Lease.
    let pid = operator.child.id().expect("operator is running");
    succeed(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let exited = tokio::time::timeout(Duration::from_secs(60), operator.child.wait()).await;
    let status = exited
        .unwrap_or_else(|_| panic!("no exit 60 s after SIGTERM; log:\n{}", operator.log()))
        .expect("wait for the operator");
    assert!(
        status.success(),
        "the operator exited with {status} after SIGTERM; log:\n{}",
        operator.log()
    );
    let lease = leases.get(&lease_name).await.expect("the Lease stays");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.is_empty(),
        "the Lease is still held by {holder:?} after a graceful stop; log:\n{}",
        operator.log()
    );
    step("stopped, Lease released");

    let log = operator.log();
    let refused = forbidden_lines(&log);
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused the operator something:\n{}",
        refused.join("\n")
    );
    assert!(
        log.contains("released the leader Lease"),
        "no release in the log:\n{log}"
    );

    release.uninstall();
    step("uninstalled");
}

/// The negative half of the RBAC proof: the same run with one rule of the
/// chart's workload Role removed (NetworkPolicy get/create) fails exactly
/// the checks the positive test makes: the pool refuses to start Pods its
/// deny-ingress policy does not cover (`NetworkPolicyFailed`, no Pod), a
/// claim never becomes Ready, the log shows 403 Forbidden, and /healthz
/// stays 200 (the refused NetworkPolicy watch is optional); putting the rule
/// back heals both, and the next claim is warm.
#[tokio::test]
async fn removing_one_rbac_rule_breaks_the_claim_path() {
    let ns = TestNs::new("chartrbac").await;
    let webhook_port = free_port();
    let release = LocalRelease::install(&ns, webhook_port, &[]);

    // The rule that lets the operator create each claim's NetworkPolicy, in
    // the Role of the watched namespace.
    let role_name = release
        .docs
        .iter()
        .filter(|d| kind_of(d) == "Role")
        .filter(|d| {
            d["rules"].as_sequence().is_some_and(|rules| {
                rules
                    .iter()
                    .any(|r| strings(&r["resources"]).contains(&"networkpolicies".to_string()))
            })
        })
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .next()
        .expect("a Role with the networkpolicies rule");
    let roles: Api<Role> = ns.api();
    let role = roles.get(&role_name).await.expect("the workload Role");
    let rules = role.rules.clone().unwrap_or_default();
    let index = rules
        .iter()
        .position(|r| {
            r.resources
                .as_ref()
                .is_some_and(|res| res.iter().any(|x| x == "networkpolicies"))
        })
        .expect("networkpolicies rule");
    let rule = serde_json::to_value(&rules[index]).unwrap();
    assert!(
        rule["verbs"]
            .as_array()
            .unwrap()
            .contains(&Json::from("create")),
        "{rule}"
    );
    let path = format!("/rules/{index}");
    let remove = serde_json::json!([
        {"op": "test", "path": path, "value": rule},
        {"op": "remove", "path": path},
    ]);
    patch_role(&ns, &role_name, &remove, "removing the rule");

    // /healthz would fail after 2 s of a broken watch: the NetworkPolicy
    // watch, forbidden too, must not count (it is optional).
    let operator = ChartOperator::start_with_env(
        &release,
        &ns,
        webhook_port,
        &[("SANDBOX_HEALTH_WATCH_BROKEN_SECONDS", "2")],
    )
    .await;
    // Without the rule the pool cannot cover its Pods, so it starts none.
    create_template_and_pool(&ns, "rbac", 1).await;
    let pools: Api<SandboxWarmPool> = ns.api();
    let refused_pool = wait_until_ok(Duration::from_secs(60), || async {
        pools
            .get_opt("rbac")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.status)
            .and_then(|s| find_condition(&s.conditions, READY).cloned())
            .is_some_and(|c| c.status == "False" && c.reason == "NetworkPolicyFailed")
    })
    .await;
    assert!(
        refused_pool,
        "the pool does not say NetworkPolicyFailed: {:?}; log:\n{}",
        pools
            .get_opt("rbac")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.status),
        operator.log()
    );
    let pool_pods = ns
        .list::<Pod>()
        .await
        .into_iter()
        .filter(|p| p.labels().contains_key(POOL_LABEL))
        .count();
    assert_eq!(
        pool_pods, 0,
        "a pool Pod was started without its NetworkPolicy"
    );

    create_claim(&ns, "claim-1", "rbac", None).await.unwrap();
    let claims: Api<SandboxClaim> = ns.api();
    let became_ready = wait_until_ok(Duration::from_secs(10), || async {
        claims
            .get_opt("claim-1")
            .await
            .ok()
            .flatten()
            .is_some_and(|c| claim_ready(&c))
    })
    .await;
    assert!(
        !became_ready,
        "the claim became Ready without the NetworkPolicy rule; log:\n{}",
        operator.log()
    );
    let log = operator.log();
    let refused = forbidden_lines(&log);
    assert!(
        refused.iter().any(|l| l.contains("networkpolicies")),
        "no Forbidden on networkpolicies in the log:\n{log}"
    );
    assert!(
        !reconcile_errors(&operator.metrics().await).is_empty(),
        "no failed reconcile counted"
    );
    // Well past the 2 s, the NetworkPolicy watch refused all along: live.
    assert_eq!(
        operator.healthz().await,
        200,
        "a refused NetworkPolicy watch failed /healthz; log:\n{}",
        operator.log()
    );

    // The rule back (as rendered): the retried reconciles serve the claim
    // (cold: the pool had nothing idle when it came) and fill the pool.
    let restore = serde_json::json!([{"op": "add", "path": path, "value": rule}]);
    patch_role(&ns, &role_name, &restore, "restoring the rule");
    assert!(
        wait_claim_ready(&ns, "claim-1", || operator.log())
            .await
            .is_some()
    );
    wait_idle_ready(&ns, 1, "pool fill with the rule back", || operator.log()).await;
    create_claim(&ns, "claim-2", "rbac", None).await.unwrap();
    assert_eq!(
        wait_claim_ready(&ns, "claim-2", || operator.log()).await,
        Some(LaunchType::Warm)
    );

    drop(operator);
    release.uninstall();
}

/// Applies the JSON patch `ops` to Role `role`; panics naming `what` when
/// kubectl fails.
fn patch_role(ns: &TestNs, role: &str, ops: &Json, what: &str) {
    let out = ns.kubectl(&["patch", "role", role, "--type=json", "-p", &ops.to_string()]);
    assert!(out.status.success(), "{what}: {}", text(&out));
}
