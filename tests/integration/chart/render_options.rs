//! The chart's options: every option renders what it promises, misspelt or
//! invalid values are refused by the values schema, and NOTES warn about
//! settings that are not highly available.

use std::collections::BTreeSet;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use super::helm::{
    all_on_values, chart_dir, find, helm, helm_cluster, operator_args, promtool, render, run,
    succeed, text,
};
use super::monitoring::{alert_rules, alerts_file};
use super::render_defaults::assert_policy_admits_the_helm_test;
use crate::common::repo;

#[tokio::test]
async fn chart_renders_every_option() {
    let docs = render(&["--values", &all_on_values()]);
    for kind in ["Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"] {
        find(&docs, kind);
    }

    // The webhook port only from the ranges given.
    let webhook_rule = &find(&docs, "NetworkPolicy")["spec"]["ingress"][0];
    assert_eq!(webhook_rule["ports"][0]["port"].as_i64(), Some(9443));
    let cidrs: Vec<&str> = webhook_rule["from"]
        .as_sequence()
        .expect("a from list")
        .iter()
        .map(|peer| peer["ipBlock"]["cidr"].as_str().unwrap())
        .collect();
    assert_eq!(cidrs, ["10.0.0.10/32", "fd00::10/128"]);

    // cert-manager: the Certificate the CA injector is pointed at exists,
    // its Secret is mounted, and the operator reads it (no self-management).
    let certificate = find(&docs, "Certificate");
    let certificate_ref = format!(
        "sandbox-system/{}",
        certificate["metadata"]["name"].as_str().unwrap()
    );
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert_eq!(
            find(&docs, kind)["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str(),
            Some(certificate_ref.as_str())
        );
    }
    let secret = certificate["spec"]["secretName"].as_str().unwrap();
    let deployment = find(&docs, "Deployment");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"].as_str() == Some(secret)),
        "{volumes:?}"
    );
    let args = operator_args(&docs);
    assert!(
        args.contains(&"--cert-dir=/etc/sandbox-operator/tls".to_string()),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--cert-secret")),
        "{args:?}"
    );
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(3));
    assert!(
        certificate["spec"]["dnsNames"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|d| d.as_str() == Some("rel-sandbox-operator-webhook.sandbox-system.svc"))
    );

    // The policy ConfigMap carries the policy value.
    let policy_map = docs
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("rel-sandbox-operator-policy"))
        .expect("policy ConfigMap");
    let policy: Yaml =
        serde_yaml::from_str(policy_map["data"]["policy.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(policy["profile"].as_str(), Some("restricted"));
    assert_eq!(policy["defaultRuntimeClassName"].as_str(), Some("gvisor"));
    assert_policy_admits_the_helm_test(&docs, "all-on");

    // The dashboard ConfigMap is the dashboard file, labelled for the sidecar.
    let dashboard = docs
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("rel-sandbox-operator-dashboard"))
        .expect("dashboard ConfigMap");
    assert_eq!(
        dashboard["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    let embedded: Json =
        serde_json::from_str(dashboard["data"]["sandbox-operator.json"].as_str().unwrap()).unwrap();
    let file: Json = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("files/dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(embedded, file);

    // ServiceMonitor scrapes the metrics Service's port.
    let monitor = find(&docs, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("metrics")
    );
    let metrics_service = docs
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("rel-sandbox-operator-metrics"))
        .unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            &metrics_service["metadata"]["labels"][key.as_str().unwrap()],
            value
        );
    }

    // PrometheusRule: thresholds from values, a disabled alert left out,
    // extra labels added, and the result is still a valid rule file.
    let rule = find(&docs, "PrometheusRule");
    let spec = &rule["spec"];
    let rules = alert_rules(spec);
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !names.contains("SandboxWebhookDenialsHigh"),
        "disabled alert rendered"
    );
    assert_eq!(names.len(), alert_rules(&alerts_file()).len() - 1);
    let latency = rules
        .iter()
        .find(|(n, _)| n == "SandboxClaimLatencySLOBreached")
        .unwrap();
    assert!(
        latency.1.contains("> 0.05 # claimLatencySLOSeconds"),
        "{}",
        latency.1
    );
    let no_leader = spec["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .find(|r| r["alert"].as_str() == Some("SandboxOperatorNoLeader"))
        .unwrap();
    assert_eq!(no_leader["for"].as_str(), Some("3m"));
    assert_eq!(no_leader["labels"]["team"].as_str(), Some("platform"));
    assert_eq!(no_leader["labels"]["severity"].as_str(), Some("critical"));
    let file = repo().join("target/test-logs/rendered-prometheusrule.yaml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, serde_yaml::to_string(spec).unwrap()).unwrap();
    succeed(promtool().args(["check", "rules"]).arg(&file));
}

#[tokio::test]
async fn chart_refuses_misspelt_or_invalid_values() {
    let chart = chart_dir();
    for (set, complaint) in [
        (
            "controler.replicas=3",
            "additional properties 'controler' not allowed",
        ),
        (
            "controller.replica=3",
            "additional properties 'replica' not allowed",
        ),
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("webhook.url=http://127.0.0.1:9443", "webhook/url"),
        (
            "policy.profil=restricted",
            "additional properties 'profil' not allowed",
        ),
        (
            "metrics.serviceMonitor.enable=true",
            "additional properties 'enable' not allowed",
        ),
        ("controller.replicas=0", "replicas"),
        (
            "networkPolicy.webhookFromCIDRs={10.0.0.1}",
            "webhookFromCIDRs",
        ),
        // The probes and Prometheus cannot reach a loopback address.
        ("metrics.address=127.0.0.1:8080", "metrics/address"),
    ] {
        let out = run(helm().args(["template", "rel", chart.to_str().unwrap(), "--set", set]));
        let report = text(&out);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            report.contains("schema") && report.contains(complaint),
            "--set {set}: expected a schema error naming {complaint:?}, got:\n{report}"
        );
    }

    // Strict at every level: each object of the schema says what it allows.
    let schema: Json =
        serde_json::from_str(&std::fs::read_to_string(chart.join("values.schema.json")).unwrap())
            .unwrap();
    fn check(node: &Json, path: &str) {
        if node["type"] == "object" {
            assert!(
                node.get("additionalProperties").is_some(),
                "{path}: object without additionalProperties"
            );
            if node.get("properties").is_some() && path != "/global" {
                assert_eq!(
                    node["additionalProperties"],
                    Json::Bool(false),
                    "{path}: a values object must refuse unknown keys"
                );
            }
        }
        for (key, child) in node["properties"].as_object().into_iter().flatten() {
            check(child, &format!("{path}/{key}"));
        }
        if let Some(items) = node.get("items") {
            check(items, &format!("{path}[]"));
        }
        for alternative in node["oneOf"].as_array().into_iter().flatten() {
            check(alternative, path);
        }
    }
    check(&schema, "");
    assert_eq!(schema["additionalProperties"], Json::Bool(false));

    // values.yaml itself is covered key by key (the schema would refuse it otherwise).
    succeed(helm().args(["template", "rel", chart.to_str().unwrap()]));

    // The names `alerts.disabled` accepts are exactly the alerts of the file.
    let allowed: BTreeSet<String> =
        schema["properties"]["alerts"]["properties"]["disabled"]["items"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
    let defined: BTreeSet<String> = alert_rules(&alerts_file())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(allowed, defined);
}

#[tokio::test]
async fn notes_warn_about_settings_that_are_not_highly_available() {
    let chart = chart_dir();
    // A client-side dry run still asks the cluster for its version.
    let notes = |args: &[&str]| {
        succeed(
            helm_cluster()
                .args([
                    "install",
                    "rel",
                    chart.to_str().unwrap(),
                    "--dry-run=client",
                    "--namespace",
                    "sandbox-system",
                ])
                .args(args),
        )
    };
    let default = notes(&[]);
    assert!(
        !default.contains("WARNING"),
        "default install warns:\n{default}"
    );
    let risky = notes(&[
        "--set",
        "controller.replicas=1",
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "webhook.failurePolicy=Ignore",
    ]);
    for needle in [
        "controller.replicas is 1",
        "leaderElection.enabled is false",
        "webhook.failurePolicy is Ignore",
    ] {
        assert!(
            risky.contains(needle),
            "NOTES do not mention {needle:?}:\n{risky}"
        );
    }
}
