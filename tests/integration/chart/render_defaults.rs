//! The chart rendered with its defaults: lints strictly (defaults and
//! every option on), and renders a least-privilege, highly available
//! operator whose policy admits the chart's own `helm test` objects.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_yaml::Value as Yaml;

use super::helm::{
    all_on_values, chart_dir, find, helm, kind_of, kinds, operator_args, policy_config_map, render,
    run, strings, succeed, text,
};
use crate::common::repo;

/// The rendered policy is one the operator accepts, and it admits the
/// objects of the chart's own `helm test` (`sandbox-operator policy check`).
pub(super) fn assert_policy_admits_the_helm_test(docs: &[Yaml], label: &str) {
    let policy = policy_config_map(docs);
    let dir = repo().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let policy_file = dir.join(format!("chart-{label}-policy.yaml"));
    std::fs::write(
        &policy_file,
        policy["data"]["policy.yaml"].as_str().unwrap(),
    )
    .unwrap();
    let objects: Vec<String> = docs
        .iter()
        .filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.contains("agents.x-k8s.io"))
        })
        .map(|d| serde_yaml::to_string(d).unwrap())
        .collect();
    assert_eq!(objects.len(), 3, "the helm test's template, pool and claim");
    let objects_file = dir.join(format!("chart-{label}-helm-test-objects.yaml"));
    std::fs::write(&objects_file, objects.join("---\n")).unwrap();
    succeed(
        Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
            .args(["policy", "check", "--policy"])
            .arg(&policy_file)
            .arg(&objects_file),
    );
}

#[tokio::test]
async fn chart_lints_strictly_with_defaults_and_with_every_option_on() {
    let chart = chart_dir();
    for extra in [
        vec![],
        vec!["--values".to_string(), all_on_values()],
        vec!["--set".into(), "webhook.url=https://127.0.0.1:9443".into()],
    ] {
        let out = run(helm()
            .args(["lint", "--strict", chart.to_str().unwrap()])
            .args(&extra));
        let report = text(&out);
        assert!(
            out.status.success(),
            "helm lint --strict {extra:?}:\n{report}"
        );
        assert!(
            !report.contains("[WARNING]") && !report.contains("[ERROR]"),
            "helm lint {extra:?}:\n{report}"
        );
        assert!(report.contains("0 chart(s) failed"), "{report}");
    }
}

#[tokio::test]
async fn chart_renders_a_least_privilege_ha_operator_by_default() {
    let docs = render(&[]);
    let expected: BTreeSet<String> = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        // the ownership guard
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        // helm test hooks
        "Pod",
        "SandboxTemplate",
        "SandboxWarmPool",
        "SandboxClaim",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds(&docs), expected);
    for doc in &docs {
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/instance"].as_str(),
            Some("rel"),
            "{} has the release label",
            kind_of(doc)
        );
    }

    // The Deployment: two replicas, leader election, restricted Pods, probes.
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert_eq!(
        strings(&container["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert!(
        container["resources"]["requests"]["memory"]
            .as_str()
            .is_some()
    );
    let env: BTreeMap<String, String> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()?
                    .to_string(),
            ))
        })
        .collect();
    assert_eq!(
        env.get("POD_NAME").map(String::as_str),
        Some("metadata.name")
    );
    assert_eq!(
        env.get("POD_NAMESPACE").map(String::as_str),
        Some("metadata.namespace")
    );
    assert!(pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"].as_str() == Some("rel"));
    let args = operator_args(&docs);
    for flag in [
        "--metrics-addr=0.0.0.0:8080",
        "--webhook-addr=0.0.0.0:9443",
        "--leader-elect=true",
        "--lease-namespace=sandbox-system",
        "--lease-name=rel-sandbox-operator-leader",
        "--webhook-config-name=rel-sandbox-operator",
        "--webhook-service=rel-sandbox-operator-webhook",
        "--cert-secret=rel-sandbox-operator-webhook-tls",
        "--policy-file=/etc/sandbox-operator/policy/policy.yaml",
        "--defer-off-path-ms=100",
        "--runtime-threads=1",
    ] {
        assert!(
            args.iter().any(|a| a == flag),
            "{flag} missing from {args:?}"
        );
    }
    assert!(find(&docs, "PodDisruptionBudget")["spec"]["minAvailable"].as_i64() == Some(1));

    // Every flag the chart passes is one `sandbox-operator run` accepts.
    let help =
        succeed(Command::new(env!("CARGO_BIN_EXE_sandbox-operator")).args(["run", "--help"]));
    for arg in args.iter().skip(1) {
        let flag = arg.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} ")),
            "the chart passes {flag}, which `sandbox-operator run` does not know:\n{help}"
        );
    }

    assert_policy_admits_the_helm_test(&docs, "default");

    // Webhook configurations: by Service, caBundle left to the operator,
    // deliberate settings, our four resources only.
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = find(&docs, kind);
        assert_eq!(
            config["metadata"]["name"].as_str(),
            Some("rel-sandbox-operator")
        );
        let webhook = &config["webhooks"][0];
        assert_eq!(
            webhook["clientConfig"]["service"]["name"].as_str(),
            Some("rel-sandbox-operator-webhook")
        );
        assert_eq!(
            webhook["clientConfig"]["service"]["port"].as_i64(),
            Some(443)
        );
        assert!(
            webhook["clientConfig"].get("caBundle").is_none(),
            "caBundle must not be rendered (Helm would reset it)"
        );
        assert!(webhook["clientConfig"].get("url").is_none());
        assert_eq!(webhook["failurePolicy"].as_str(), Some("Fail"));
        assert_eq!(webhook["timeoutSeconds"].as_i64(), Some(5));
        assert_eq!(webhook["sideEffects"].as_str(), Some("None"));
        assert_eq!(webhook["matchPolicy"].as_str(), Some("Equivalent"));
        let excluded = strings(&webhook["namespaceSelector"]["matchExpressions"][0]["values"]);
        assert_eq!(
            webhook["namespaceSelector"]["matchExpressions"][0]["operator"].as_str(),
            Some("NotIn")
        );
        assert_eq!(excluded, ["kube-system", "sandbox-system"]);
        // The same rules as the operator registers by URL: our four
        // resources, and for the validating webhook a pool's scale requests.
        let expected = if kind == "ValidatingWebhookConfiguration" {
            sandbox_operator::webhook::config::validating_rules()
        } else {
            sandbox_operator::webhook::config::rules()
        };
        let rendered: Vec<serde_json::Value> =
            serde_json::from_value(serde_json::to_value(&webhook["rules"]).unwrap()).unwrap();
        assert_eq!(
            rendered,
            serde_json::to_value(expected)
                .unwrap()
                .as_array()
                .unwrap()
                .clone(),
            "the {kind}'s rules are the operator's own"
        );
    }
    assert_eq!(
        find(&docs, "MutatingWebhookConfiguration")["webhooks"][0]["reinvocationPolicy"].as_str(),
        Some("IfNeeded")
    );

    // RBAC: nothing cluster-wide on Secrets or Leases; webhook configurations
    // only by name; no wildcards anywhere.
    for doc in docs
        .iter()
        .filter(|d| matches!(kind_of(d), "ClusterRole" | "Role"))
    {
        for rule in doc["rules"].as_sequence().unwrap() {
            let all: Vec<String> = ["apiGroups", "resources", "verbs"]
                .iter()
                .flat_map(|k| strings(&rule[*k]))
                .collect();
            assert!(!all.iter().any(|s| s == "*"), "wildcard in {rule:?}");
            if kind_of(doc) == "ClusterRole" {
                let resources = strings(&rule["resources"]);
                assert!(
                    !resources.iter().any(|r| r == "secrets" || r == "leases"),
                    "cluster-wide {resources:?}"
                );
                if resources
                    .iter()
                    .any(|r| r.ends_with("webhookconfigurations"))
                {
                    assert_eq!(strings(&rule["resourceNames"]), ["rel-sandbox-operator"]);
                }
            }
        }
    }

    // Exactly the verbs the code uses on the certificate Secret (get, a merge
    // patch at the version read; certs/src/secret.rs) and on the webhook
    // configurations (get, a replace at the version read;
    // certs/src/ca_bundle.rs; list and watch by name, certs/src/reset_watch.rs):
    // no update of the Secret, no patch of the configurations. rbac_proof.rs
    // runs the operator on these rules.
    let verbs_on = |resource: &str| -> Vec<Vec<String>> {
        docs.iter()
            .filter(|d| matches!(kind_of(d), "ClusterRole" | "Role"))
            .flat_map(|d| d["rules"].as_sequence().unwrap())
            .filter(|rule| strings(&rule["resources"]).iter().any(|r| r == resource))
            .map(|rule| strings(&rule["verbs"]))
            .collect()
    };
    assert_eq!(verbs_on("secrets"), [vec!["create"], vec!["get", "patch"]]);
    for resource in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ] {
        assert_eq!(
            verbs_on(resource),
            [vec!["get", "list", "update", "watch"]],
            "{resource}"
        );
    }

    // URL mode for local control planes.
    let docs = render(&["--set", "webhook.url=https://127.0.0.1:9443/"]);
    let mutating = find(&docs, "MutatingWebhookConfiguration");
    assert_eq!(
        mutating["webhooks"][0]["clientConfig"]["url"].as_str(),
        Some("https://127.0.0.1:9443/mutate")
    );
    assert!(
        mutating["webhooks"][0]["clientConfig"]
            .get("service")
            .is_none()
    );
    let validating = find(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(
        validating["webhooks"][0]["clientConfig"]["url"].as_str(),
        Some("https://127.0.0.1:9443/validate")
    );
    // The self-managed certificate names the URL's host (the API server
    // checks it against the certificate), an address or a DNS name.
    assert!(operator_args(&docs).contains(&"--webhook-cert-hosts=127.0.0.1".to_string()));
    let docs = render(&["--set", "webhook.url=https://hook.example.com:8443"]);
    assert!(operator_args(&docs).contains(&"--webhook-cert-hosts=hook.example.com".to_string()));

    // One watched namespace: admission only there, workload rights in a Role.
    let docs = render(&["--set", "controller.watchNamespace=team-a"]);
    let selector = &find(&docs, "ValidatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"]
        ["matchExpressions"][0];
    assert_eq!(
        (selector["operator"].as_str(), strings(&selector["values"])),
        (Some("In"), vec!["team-a".to_string()])
    );
    assert!(operator_args(&docs).contains(&"--namespace=team-a".to_string()));
    let cluster_role = find(&docs, "ClusterRole");
    assert_eq!(
        cluster_role["rules"].as_sequence().unwrap().len(),
        1,
        "only the caBundle rule stays cluster-wide"
    );
    assert!(
        docs.iter()
            .any(|d| kind_of(d) == "Role" && d["metadata"]["namespace"].as_str() == Some("team-a"))
    );

    // A single replica gets no PDB (it would block node drains).
    let docs = render(&["--set", "controller.replicas=1"]);
    assert!(!kinds(&docs).contains("PodDisruptionBudget"));
}

#[test]
fn chart_installs_the_ownership_guard_the_operator_applies_locally() {
    // One definition: the chart's objects are the operator's
    // (files/ownership-guard.yaml) but for the release's name and labels.
    let docs = render(&[]);
    let shipped: Vec<Yaml> =
        serde_yaml::Deserializer::from_str(sandbox_operator::webhook::guard::GUARD_YAML)
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .collect();
    let policy = find(&docs, "ValidatingAdmissionPolicy");
    let binding = find(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(policy["spec"], shipped[0]["spec"]);
    let name = policy["metadata"]["name"].as_str().unwrap();
    assert_eq!(binding["spec"]["policyName"].as_str(), Some(name));
    assert_eq!(
        binding["spec"]["validationActions"],
        shipped[1]["spec"]["validationActions"]
    );
    // And it can be left out.
    let without = render(&["--set", "ownershipGuard.enabled=false"]);
    let kinds = kinds(&without);
    assert!(!kinds.contains("ValidatingAdmissionPolicy"), "{kinds:?}");
    assert!(
        !kinds.contains("ValidatingAdmissionPolicyBinding"),
        "{kinds:?}"
    );
}
