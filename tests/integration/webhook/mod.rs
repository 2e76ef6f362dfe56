//! Issue 6: the admission webhook as the API server calls it (registered by
//! URL on 127.0.0.1 with its caBundle), plus hostile input straight at its
//! HTTPS port.
//!
//! Certificate rotation under load is in `rotation`, hostile input in
//! `hostile`.

mod hostile;
mod ownership;
mod rotation;

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{TestNs, wait_for};
use sandbox_operator::api::{READY, Sandbox, is_true};

/// Starts an operator with its webhook on a known port.
async fn operator_with_webhook(ns: &TestNs, extra: &[&str]) -> (crate::common::Operator, u16) {
    let op = ns.operator(extra).await;
    let port = op.webhook_port;
    (op, port)
}

fn kubectl_apply(ns: &TestNs, yaml: &str) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("wh-{}-{}.yaml", ns.name, rand::random::<u32>()));
    std::fs::write(&path, yaml).unwrap();
    let out = ns.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
    out
}

#[tokio::test]
async fn seed_sandbox_is_admitted_defaulted_and_idempotent() {
    let ns = TestNs::new("wh-seed").await;
    let (_op, _port) = operator_with_webhook(&ns, &[]).await;
    ns.create_yaml("examples/aio-sandbox.yaml").await;
    let sandboxes: Api<Sandbox> = ns.api();
    let stored = sandboxes.get("aio-sandbox-example").await.unwrap();
    let spec = &stored.spec.pod_template.spec;
    assert_eq!(
        spec.automount_service_account_token,
        Some(false),
        "automountServiceAccountToken defaulted"
    );
    let seccomp = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .expect("seccompProfile defaulted");
    assert_eq!(seccomp.type_, "RuntimeDefault");
    let container = &spec.containers[0];
    let limits = crate::fixtures::limits_of(container);
    assert_eq!(limits["memory"].0, "8Gi", "the seed's own limits are kept");
    assert_eq!(
        container
            .security_context
            .as_ref()
            .unwrap()
            .allow_privilege_escalation,
        Some(false)
    );

    // Sending the stored object back changes nothing: the mutation is
    // idempotent. (The operator also writes this object's status, so wait
    // until it is Ready and retry if its write slips in between.)
    wait_for(
        &sandboxes,
        "aio-sandbox-example",
        Duration::from_secs(30),
        |s| {
            s.status
                .as_ref()
                .is_some_and(|st| is_true(&st.conditions, READY))
        },
    )
    .await;
    let mut attempts = 0;
    let (current, again) = loop {
        let current = sandboxes.get("aio-sandbox-example").await.unwrap();
        match sandboxes
            .replace("aio-sandbox-example", &PostParams::default(), &current)
            .await
        {
            Ok(again) => break (current, again),
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 5 => attempts += 1,
            Err(e) => panic!("replacing the stored Sandbox: {e}"),
        }
    };
    assert_eq!(
        again.resource_version(),
        current.resource_version(),
        "a no-op update must not write"
    );
    assert_eq!(again.spec, stored.spec);
}

#[tokio::test]
async fn dangerous_specs_are_refused_with_field_path_and_rule() {
    let ns = TestNs::new("wh-deny").await;
    let (_op, _port) = operator_with_webhook(&ns, &[]).await;
    let sandbox = |name: &str, pod_spec: &str| {
        format!(
            "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {{name: {name}}}\nspec:\n  podTemplate:\n    spec:\n{pod_spec}"
        )
    };
    let cases = [
        (
            sandbox("priv", "      containers: [{name: c, image: busybox, securityContext: {privileged: true}}]\n"),
            "spec.podTemplate.spec.containers[0].securityContext.privileged",
        ),
        (
            sandbox("hostpath", "      containers: [{name: c, image: busybox}]\n      volumes: [{name: h, hostPath: {path: /etc}}]\n"),
            "spec.podTemplate.spec.volumes[0].hostPath",
        ),
        (
            sandbox("hostnet", "      hostNetwork: true\n      containers: [{name: c, image: busybox}]\n"),
            "spec.podTemplate.spec.hostNetwork",
        ),
        (
            sandbox("sysadmin", "      containers: [{name: c, image: busybox, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]\n"),
            "spec.podTemplate.spec.containers[0].securityContext.capabilities.add[0]",
        ),
        (
            sandbox("huge", "      containers: [{name: c, image: busybox, resources: {limits: {memory: 128Gi}}}]\n"),
            "spec.podTemplate.spec.containers[0].resources.limits.memory: 128Gi exceeds the maximum 64Gi",
        ),
        (
            "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxWarmPool\nmetadata: {name: big}\nspec: {replicas: 5000, sandboxTemplateRef: {name: t}}\n".to_string(),
            "spec.replicas",
        ),
        // Issue 13: Pod Security baseline checks and the sandbox rules.
        (
            sandbox("procmount", "      containers: [{name: c, image: busybox, securityContext: {procMount: Unmasked}}]\n"),
            "spec.podTemplate.spec.containers[0].securityContext.procMount: \"Unmasked\" is not allowed; only Default (Pod Security baseline: procMount)",
        ),
        (
            sandbox("sysctl", "      securityContext: {sysctls: [{name: net.core.somaxconn, value: \"1024\"}]}\n      containers: [{name: c, image: busybox}]\n"),
            "spec.podTemplate.spec.securityContext.sysctls[0].name: \"net.core.somaxconn\" is not one of the safe sysctls (Pod Security baseline: sysctls)",
        ),
        (
            sandbox("nfs", "      containers: [{name: c, image: busybox}]\n      volumes: [{name: shared, nfs: {server: 10.0.0.1, path: /}}]\n"),
            "spec.podTemplate.spec.volumes[0].nfs: volume type nfs is not in allowedVolumeTypes",
        ),
        (
            sandbox("pinned", "      nodeName: kwok-node-0\n      containers: [{name: c, image: busybox}]\n"),
            "spec.podTemplate.spec.nodeName: is not allowed",
        ),
        (
            sandbox("scratch", "      containers: [{name: c, image: busybox, resources: {limits: {ephemeral-storage: 10Ti}}}]\n"),
            "spec.podTemplate.spec.containers[0].resources.limits[ephemeral-storage]: 10Ti exceeds the maximum 20Gi",
        ),
        (
            sandbox("account", "      serviceAccountName: builder\n      containers: [{name: c, image: busybox}]\n"),
            "spec.podTemplate.spec.serviceAccountName: \"builder\" is not one of the allowed service accounts",
        ),
        (
            sandbox("tolerant", "      tolerations: [{operator: Exists}]\n      containers: [{name: c, image: busybox}]\n"),
            "spec.podTemplate.spec.tolerations[0]: toleration",
        ),
        (
            "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: forged}\nspec:\n  podTemplate:\n    metadata: {labels: {agents.x-k8s.io/sandbox: someone-else}}\n    spec:\n      containers: [{name: c, image: busybox}]\n".to_string(),
            "spec.podTemplate.metadata.labels[agents.x-k8s.io/sandbox]: \"agents.x-k8s.io/sandbox\" is a reserved key",
        ),
        (
            sandbox(&"n".repeat(64), "      containers: [{name: c, image: busybox}]\n"),
            "metadata.name: 64 characters is longer than 63",
        ),
        // A claim's Sandbox and Service take its name: refused before it
        // could take a warm Pod it would never be Ready on.
        (
            "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxClaim\nmetadata: {name: agent.1}\nspec: {sandboxTemplateRef: {name: t}}\n".to_string(),
            "metadata.name: \"agent.1\" is not a valid Service name (a DNS-1035 label",
        ),
    ];
    for (yaml, expected) in cases {
        let out = kubectl_apply(&ns, &yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "accepted but should be refused:\n{yaml}"
        );
        assert!(
            stderr.contains("denied the request"),
            "not refused by the webhook: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "refusal lacks {expected:?}: {stderr}"
        );
        println!("refused as expected: {}", stderr.trim());
    }
}

#[tokio::test]
async fn stopped_webhook_follows_the_fail_policy_with_a_clear_message() {
    let ns = TestNs::new("wh-down").await;
    let (op, _port) = operator_with_webhook(&ns, &[]).await;
    op.kill().await;
    let yaml = "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: s}\nspec:\n  podTemplate:\n    spec:\n      containers: [{name: c, image: busybox}]\n";
    let out = kubectl_apply(&ns, yaml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("with the webhook down: {}", stderr.trim());
    assert!(
        !out.status.success(),
        "failurePolicy Fail: the create must be refused"
    );
    assert!(
        stderr.contains("failed calling webhook")
            && stderr.contains("mutate.sandboxes.agents.x-k8s.io"),
        "{stderr}"
    );
    // Objects outside the webhook's scope are unaffected.
    let cm = ns.kubectl(&["create", "configmap", "still-works"]);
    assert!(cm.status.success());
}

#[tokio::test]
async fn the_admission_stamp_is_the_webhooks_never_the_users() {
    let ns = TestNs::new("wh-stamp").await;
    let (_op, _port) = operator_with_webhook(&ns, &[]).await;
    let forged = "2000-01-01T00:00:00.000000000Z";
    let claim = format!(
        "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxClaim\nmetadata:\n  name: stamped\n  annotations: {{agents.x-k8s.io/admitted-at: \"{forged}\"}}\nspec: {{sandboxTemplateRef: {{name: none}}}}\n"
    );
    let before = jiff::Timestamp::now();
    let out = kubectl_apply(&ns, &claim);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: Api<sandbox_operator::api::SandboxClaim> = ns.api();
    let stored = claims.get("stamped").await.unwrap();
    let stamp: jiff::Timestamp = stored.annotations()
        [sandbox_operator::api::ADMITTED_AT_ANNOTATION]
        .parse()
        .unwrap();
    assert!(
        stamp >= before - jiff::SignedDuration::from_secs(5),
        "stamp {stamp} was taken from the user"
    );

    // An update may not change it.
    let patch = json!({"metadata": {"annotations": {sandbox_operator::api::ADMITTED_AT_ANNOTATION: forged}}});
    let error = claims
        .patch("stamped", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains(
            "metadata.annotations[agents.x-k8s.io/admitted-at]: is set by the admission webhook"
        ),
        "{error}"
    );
    // Claim UPDATEs go through the validating webhook; claim CREATEs skip
    // it (its match condition) and are refused by the mutating one, with
    // the same field path and rule.
    assert!(
        error
            .to_string()
            .contains("validate.sandboxes.agents.x-k8s.io"),
        "{error}"
    );
    let bad = "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxClaim\nmetadata: {name: bad-ref}\nspec: {sandboxTemplateRef: {name: Not_A_Name}}\n";
    let out = kubectl_apply(&ns, bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a malformed claim was stored");
    assert!(
        stderr.contains("mutate.sandboxes.agents.x-k8s.io")
            && stderr.contains("spec.sandboxTemplateRef.name"),
        "{stderr}"
    );
}

/// `kubectl scale` goes through the pool's scale subresource, whose object is
/// a Scale, not the pool: the validating webhook is registered for it and
/// holds it to the policy's `maxPoolReplicas` like a write of the pool.
#[tokio::test]
async fn a_scale_request_above_the_pool_limit_is_refused() {
    let ns = TestNs::new("wh-scale").await;
    let (_op, _port) = operator_with_webhook(&ns, &[]).await;
    let pool = "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxWarmPool\nmetadata: {name: p}\nspec:\n  replicas: 0\n  sandboxTemplateRef: {name: absent}\n";
    let out = kubectl_apply(&ns, pool);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scale =
        |replicas: &str| ns.kubectl(&["scale", "sandboxwarmpool", "p", "--replicas", replicas]);
    let refused = scale("1001");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    println!("kubectl scale --replicas 1001: {}", stderr.trim());
    assert!(
        !refused.status.success(),
        "a scale above the limit is refused"
    );
    assert!(
        stderr.contains("validate.sandboxes.agents.x-k8s.io")
            && stderr.contains("spec.replicas: 1001 exceeds the maximum 1000"),
        "the refusal names the webhook, the field and the rule: {stderr}"
    );
    let pools: Api<sandbox_operator::api::SandboxWarmPool> = ns.api();
    assert_eq!(
        pools.get("p").await.unwrap().spec.replicas,
        0,
        "nothing stored"
    );
    let allowed = scale("2");
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_eq!(pools.get("p").await.unwrap().spec.replicas, 2);
}
