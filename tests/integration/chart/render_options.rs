//! The chart's options: every option renders what it promises, misspelt or
//! invalid values are refused by the values schema, and NOTES warn about
//! settings that are not highly available.

use std::collections::BTreeSet;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use super::helm::{
    KUBE_VERSION, all_on_values, chart_dir, find, helm_cluster, helm_template, operator_args,
    promtool, render, run, succeed, text,
};
use super::monitoring::{alert_rules, alerts_file};
use super::render_defaults::assert_policy_admits_the_helm_test;
use crate::common::repo;

#[tokio::test]
async fn chart_renders_every_option() {
    let docs = render(&["--values", &all_on_values()]);
    for kind in ["ServiceMonitor", "PrometheusRule"] {
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
    // Without an issuer of the admin's, a CA of the release's own (issued
    // by a self-signed Issuer) issues it, so caBundle (its ca.crt) stays
    // the same when the serving certificate is renewed; issued by the
    // self-signed Issuer directly, caBundle changed at every renewal before
    // the Pods served the new certificate.
    let named = |kind: &str, suffix: &str| {
        docs.iter()
            .find(|d| {
                d["kind"].as_str() == Some(kind)
                    && d["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with(suffix))
            })
            .unwrap_or_else(|| panic!("no {kind} *{suffix} rendered"))
    };
    let certificate = named("Certificate", "-webhook");
    let ca = named("Certificate", "-ca");
    assert_eq!(ca["spec"]["isCA"].as_bool(), Some(true), "{ca:?}");
    // Renewed with its key, so the certificates it signed still verify;
    // renewed more than a serving certificate's lifetime before it ends,
    // so none outlives it.
    assert_eq!(
        ca["spec"]["privateKey"]["rotationPolicy"].as_str(),
        Some("Never")
    );
    let hours = |v: &Yaml| {
        v.as_str()
            .and_then(|d| d.strip_suffix('h'))
            .and_then(|h| h.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("a duration in hours: {v:?}"))
    };
    assert!(hours(&ca["spec"]["renewBefore"]) > hours(&certificate["spec"]["duration"]));
    assert_eq!(
        ca["spec"]["issuerRef"]["name"],
        named("Issuer", "-selfsigned")["metadata"]["name"]
    );
    let ca_issuer = named("Issuer", "-ca");
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    assert_eq!(
        certificate["spec"]["issuerRef"]["name"], ca_issuer["metadata"]["name"],
        "the serving certificate is issued by the release's CA"
    );
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
    // An IPv6 admin address ([::]:9090 in these values): the webhook
    // listens on IPv6 too (it listened on 0.0.0.0 only, unreachable on a
    // single-stack IPv6 cluster while the Pods were Ready).
    assert!(
        args.contains(&"--webhook-addr=[::]:9443".to_string()),
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
        // The webhook's port.
        ("metrics.address=0.0.0.0:9443", "metrics/address"),
    ] {
        let out = run(helm_template().args(["--set", set]));
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
    succeed(&mut helm_template());

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

/// `helm template` with `args`: `None` when it renders, else its report.
fn refusal(args: &[&str]) -> Option<String> {
    let out = run(helm_template().args(args));
    (!out.status.success()).then(|| text(&out))
}

/// The schema refuses what the operator refuses at start (it would exit 2
/// and crash-loop), and accepts what it accepts: each policy below goes
/// through `helm template` and through `Policy::from_yaml`, the operator's
/// own parse and check, and both must agree.
#[tokio::test]
async fn schema_refuses_the_policies_the_operator_refuses() {
    use sandbox_operator::admission::{Cidr, Policy};

    // Names at the length limits: a DNS-1123 subdomain has at most 253
    // characters (an extended resource's domain too), the name part of an
    // extended resource 1 to 63.
    let name = |length: usize| format!("{}.b", "a".repeat(length - 2));
    let long_names = [
        (
            format!(r#"{{"allowedServiceAccounts":["{}"]}}"#, name(253)),
            true,
        ),
        (
            format!(r#"{{"allowedServiceAccounts":["{}"]}}"#, name(254)),
            false,
        ),
        (
            format!(r#"{{"defaultRuntimeClassName":"{}"}}"#, name(254)),
            false,
        ),
        (
            format!(r#"{{"allowedExtendedResources":["{}/gpu"]}}"#, name(253)),
            true,
        ),
        (
            format!(r#"{{"allowedExtendedResources":["{}/gpu"]}}"#, name(254)),
            false,
        ),
        (
            format!(
                r#"{{"allowedExtendedResources":["example.com/{}"]}}"#,
                "g".repeat(63)
            ),
            true,
        ),
        (
            format!(
                r#"{{"allowedExtendedResources":["example.com/{}"]}}"#,
                "g".repeat(64)
            ),
            false,
        ),
    ];
    let samples = [
        // TolerationRule.key is a required String.
        (r#"{"allowedTolerations":[{"operator":"Exists"}]}"#, false),
        (
            r#"{"allowedTolerations":[{"key":"gpu","operator":"Exists"}]}"#,
            true,
        ),
        (r#"{"allowedTolerations":[{"key":""}]}"#, true),
        // Toleration operators and effects as the API has them; no value
        // with Exists, a value with Lt and Gt (Kubernetes 1.35+); an empty
        // effect means any.
        (
            r#"{"allowedTolerations":[{"key":"gpu","operator":"Lt","value":"5"},{"key":"gpu","operator":"Gt","value":"1","effect":"NoSchedule"}]}"#,
            true,
        ),
        (
            r#"{"allowedTolerations":[{"key":"gpu","operator":"Gt"}]}"#,
            false,
        ),
        (
            r#"{"allowedTolerations":[{"key":"gpu","operator":"Lt","value":""}]}"#,
            false,
        ),
        (
            r#"{"allowedTolerations":[{"key":"gpu","operator":"LT","value":"5"}]}"#,
            false,
        ),
        (
            r#"{"allowedTolerations":[{"key":"gpu","operator":"Exists","value":"a100"}]}"#,
            false,
        ),
        (
            r#"{"allowedTolerations":[{"key":"gpu","operator":"Exists","value":"","effect":""}]}"#,
            true,
        ),
        (
            r#"{"allowedTolerations":[{"key":"gpu","operator":"Equal","value":"a100","effect":"NoSchedule"},{"key":"gpu","value":"a100"}]}"#,
            true,
        ),
        (
            r#"{"allowedTolerations":[{"key":"gpu","operator":"exists"}]}"#,
            false,
        ),
        (
            r#"{"allowedTolerations":[{"key":"gpu","effect":"NoExecution"}]}"#,
            false,
        ),
        // Capabilities: empty once blanks and CAP_ are taken off.
        (r#"{"allowedCapabilities":["CAP_"]}"#, false),
        (r#"{"allowedCapabilities":[" cap_ "]}"#, false),
        (r#"{"allowedCapabilities":[" "]}"#, false),
        (
            r#"{"allowedCapabilities":["cap_net_raw","SYS_PTRACE"]}"#,
            true,
        ),
        // Capabilities: Linux capability names, CAP_ and case optional,
        // blanks trimmed as Rust trims them (\v and U+00A0 too); Go's (?i)
        // would take U+017F for s and U+212A (Kelvin) for k, the operator
        // does not.
        (
            r#"{"allowedCapabilities":["CAP_NET_ADMIN","Cap_Sys_Admin","bpf"]}"#,
            true,
        ),
        (
            r#"{"allowedCapabilities":["\u000b net_bind_service\u00a0"]}"#,
            true,
        ),
        (r#"{"allowedCapabilities":["NET_ADMINS"]}"#, false),
        (r#"{"allowedCapabilities":["CAP_CAP_CHOWN"]}"#, false),
        (r#"{"allowedCapabilities":["NET-ADMIN"]}"#, false),
        (r#"{"allowedCapabilities":["ALL"]}"#, false),
        (r#"{"allowedCapabilities":["\u017fys_admin"]}"#, false),
        (r#"{"allowedCapabilities":["\u212aill"]}"#, false),
        // null allows any runtime class; an empty list nothing, refused.
        (r#"{"allowedRuntimeClasses":[]}"#, false),
        (r#"{"allowedRuntimeClasses":["gvisor"]}"#, true),
        (r#"{"defaultRuntimeClassName":""}"#, false),
        (r#"{"defaultRuntimeClassName":"gvisor"}"#, true),
        // Runtime class, service account and priority class names are
        // DNS-1123 subdomains (lengths above).
        (r#"{"defaultRuntimeClassName":"gVisor"}"#, false),
        (r#"{"defaultRuntimeClassName":"gvisor-"}"#, false),
        (r#"{"allowedRuntimeClasses":["gvisor","kata_fc"]}"#, false),
        (r#"{"allowedRuntimeClasses":["a..b"]}"#, false),
        (
            r#"{"defaultRuntimeClassName":"kata.fc","allowedRuntimeClasses":["gvisor","kata.fc"]}"#,
            true,
        ),
        (r#"{"allowedServiceAccounts":["default","Builder"]}"#, false),
        (r#"{"allowedServiceAccounts":["system:serviceaccount:a:b"]}"#, false),
        (r#"{"allowedServiceAccounts":["ci-bot.example","0"]}"#, true),
        (r#"{"allowedPriorityClasses":["-batch"]}"#, false),
        (r#"{"allowedPriorityClasses":["batch."]}"#, false),
        // Names that are blank.
        (r#"{"allowedServiceAccounts":[" "]}"#, false),
        (r#"{"allowedExtendedResources":["\t"]}"#, false),
        (r#"{"allowedVolumeTypes":[" "]}"#, false),
        (r#"{"allowedPriorityClasses":[" "]}"#, false),
        (r#"{"allowedPriorityClasses":["sandbox-batch"]}"#, true),
        // Volume types: the keys of a Pod's volumes, case-sensitive.
        (
            r#"{"allowedVolumeTypes":["emptyDir","configMap","nfs","csi","image"]}"#,
            true,
        ),
        (r#"{"allowedVolumeTypes":["emptydir"]}"#, false),
        (r#"{"allowedVolumeTypes":["emptyDir "]}"#, false),
        (r#"{"allowedVolumeTypes":["persistentVolume"]}"#, false),
        (r#"{"allowedVolumeTypes":["EmptyDir"]}"#, false),
        // Extended resources: hugepages-<size> above zero, or a name with a
        // domain outside kubernetes.io; never cpu, memory or
        // ephemeral-storage (lengths above).
        (
            r#"{"allowedExtendedResources":["nvidia.com/gpu","hugepages-2Mi","hugepages-1Gi","example.com/GPU_x.2"]}"#,
            true,
        ),
        (r#"{"allowedExtendedResources":["hugepages/x"]}"#, true),
        (r#"{"allowedExtendedResources":["hugepages-1.5e-3"]}"#, true),
        (r#"{"allowedExtendedResources":["cpu"]}"#, false),
        (r#"{"allowedExtendedResources":["memory"]}"#, false),
        (r#"{"allowedExtendedResources":["ephemeral-storage"]}"#, false),
        (r#"{"allowedExtendedResources":["gpu"]}"#, false),
        (r#"{"allowedExtendedResources":["kubernetes.io/gpu"]}"#, false),
        (
            r#"{"allowedExtendedResources":["example.kubernetes.io/gpu"]}"#,
            false,
        ),
        (r#"{"allowedExtendedResources":["hugepages-0"]}"#, false),
        (r#"{"allowedExtendedResources":["hugepages-0.00Mi"]}"#, false),
        (r#"{"allowedExtendedResources":["hugepages-"]}"#, false),
        (r#"{"allowedExtendedResources":["hugepages-2mi"]}"#, false),
        (r#"{"allowedExtendedResources":["hugepages-+2Mi"]}"#, false),
        (r#"{"allowedExtendedResources":["hugepages-2Mi/x"]}"#, false),
        (r#"{"allowedExtendedResources":["Example.com/gpu"]}"#, false),
        (r#"{"allowedExtendedResources":["example.com/-gpu"]}"#, false),
        (r#"{"allowedExtendedResources":["example.com/"]}"#, false),
        (r#"{"allowedExtendedResources":["example.com/a/b"]}"#, false),
        (r#"{"allowedExtendedResources":["example..com/gpu"]}"#, false),
        // maxPoolReplicas is an i32, not negative.
        (r#"{"maxPoolReplicas":2147483648}"#, false),
        (r#"{"maxPoolReplicas":-1}"#, false),
        (r#"{"maxPoolReplicas":2147483647}"#, true),
        // Amounts: never negative, string or number; null turns one off.
        (r#"{"ceilings":{"cpu":"-1"}}"#, false),
        (r#"{"ceilings":{"memory":-1}}"#, false),
        (r#"{"ceilings":{"ephemeral-storage":"-5Gi"}}"#, false),
        (r#"{"defaults":{"requests":{"cpu":"-100m"}}}"#, false),
        (
            r#"{"ceilings":{"cpu":32,"memory":"+64Gi","ephemeral-storage":null}}"#,
            true,
        ),
        // Memory and ephemeral-storage are whole bytes (more below); cpu
        // is not.
        (r#"{"ceilings":{"memory":"100m"}}"#, false),
        (r#"{"defaults":{"requests":{"memory":"0.5"}}}"#, false),
        (r#"{"defaults":{"limits":{"memory":1.5}}}"#, false),
        (r#"{"ceilings":{"ephemeral-storage":"1.1Gi"}}"#, false),
        (
            r#"{"defaults":{"requests":{"cpu":"250m","memory":"0.5Gi"}},"ceilings":{"ephemeral-storage":"1000m"}}"#,
            true,
        ),
        // Enums.
        (r#"{"profile":"privileged"}"#, false),
        (r#"{"network":{"standalonePolicy":"open"}}"#, false),
        (r#"{"network":{"standalonePolicy":"isolated"}}"#, true),
        // CIDRs (more below).
        (r#"{"network":{"denyEgressCIDRs":["10.0.0.1/8"]}}"#, false),
        (r#"{"network":{"denyEgressCIDRs":["0.0.0.0/0"]}}"#, false),
        (r#"{"network":{"denyEgressCIDRs":["::/0"]}}"#, false),
        (r#"{"network":{"denyEgressCIDRs":["10.0.0.0/99"]}}"#, false),
        (r#"{"network":{"denyEgressCIDRs":["fd00::/129"]}}"#, false),
        (
            r#"{"network":{"denyEgressCIDRs":["10.0.0.0/8","fd00:ec2::254/128"]}}"#,
            true,
        ),
        // In the operator's spelling, and not IPv4-mapped.
        (
            r#"{"network":{"denyEgressCIDRs":["FD00:EC2::254/128"]}}"#,
            false,
        ),
        (
            r#"{"network":{"denyEgressCIDRs":["fd00:ec2:0:0:0:0:0:254/128"]}}"#,
            false,
        ),
        (r#"{"network":{"denyEgressCIDRs":["fd00:0::/16"]}}"#, false),
        (r#"{"network":{"denyEgressCIDRs":["169.254.0.0/016"]}}"#, false),
        (
            r#"{"network":{"denyEgressCIDRs":["::ffff:a9fe:0/112"]}}"#,
            false,
        ),
        (
            r#"{"network":{"denyEgressCIDRs":["::ffff:169.254.0.0/112"]}}"#,
            false,
        ),
        (r#"{"network":{"denyEgressCIDRs":["::ffff:0/112"]}}"#, true),
    ]
    .into_iter()
    .map(|(policy, valid)| (policy.to_string(), valid))
    .chain(long_names);
    for (policy, valid) in samples {
        let policy = policy.as_str();
        assert_eq!(
            Policy::from_yaml(policy).is_ok(),
            valid,
            "the operator's verdict on {policy} is not the expected one"
        );
        let report = refusal(&["--set-json", &format!("policy={policy}")]);
        assert_eq!(
            report.is_none(),
            valid,
            "the schema's verdict on {policy} differs from the operator's: {}",
            report.as_deref().unwrap_or("accepted")
        );
        if let Some(report) = report {
            assert!(report.contains("/policy/"), "{report}");
        }
    }

    // denyEgressCIDRs against Cidr::parse, in one render: every IPv4 prefix
    // length from 0 to 33 with one address bit set at every position (host
    // bits set or not), IPv4 and IPv6 samples of every kind, and every
    // pattern of zero and non-zero IPv6 groups in every spelling (each run
    // of zero groups written `::` or not, one of which is the operator's),
    // upper case, leading zeros and IPv4-mapped ranges included. The schema
    // is looser only on IPv6 host bits (`fe80::1/64`), which a pattern
    // cannot check.
    let mut samples: Vec<String> = Vec::new();
    for prefix in 0..=33 {
        for bit in 0..32 {
            samples.push(format!(
                "{}/{prefix}",
                std::net::Ipv4Addr::from(1u32 << (31 - bit))
            ));
        }
        for address in [
            "0.0.0.0",
            "10.0.0.0",
            "10.0.0.1",
            "169.254.0.0",
            "169.254.169.254",
            "172.16.0.0",
            "192.168.1.0",
            "255.255.255.255",
            "255.255.255.254",
            "10.255.0.0",
            "10.0.252.0",
        ] {
            samples.push(format!("{address}/{prefix}"));
        }
    }
    for prefix in [0, 1, 7, 8, 32, 64, 127, 128, 129, 200] {
        for address in [
            "::",
            "fd00::",
            "2001:db8::",
            "fd00:ec2::254",
            "1:2:3:4:5:6:7:8",
        ] {
            samples.push(format!("{address}/{prefix}"));
        }
    }
    for odd in [
        "10.0.0.0",
        "10.0.0.0/",
        "/8",
        "10.0.0/8",
        "010.0.0.0/8",
        "10.0.0.256/32",
        "10.0.0.0/8/8",
        " 10.0.0.0/8",
        "10.0.0.0/8 ",
        "fe80::1%eth0/128",
        "fd00:::/16",
        "1:2:3:4:5:6:7:8:9/128",
        "fd00::/8\n",
        "x/8",
        "10.0.0.0/08",
        "10.0.0.0/+8",
        "fd00::/016",
        "fd00::/+16",
        "FD00:EC2::254/128",
        "Fd00::/16",
        "fd00:ec2::0254/128",
        "fd00:0::/16",
        "::169.254.0.0/112",
        "::ffff:169.254.0.0/112",
        "::ffff:a9fe:0/112",
        "::ffff:0:0/96",
        "::ffff:0:0/95",
        "0:0:0:0:0:ffff:a9fe:0/112",
        "::ffff:0/112",
        "::ffff:0:0:0/128",
        "ffff::/16",
    ] {
        samples.push(odd.to_string());
    }
    for zeros in 0u32..256 {
        // ffff in the sixth group: with five zero groups before it, an
        // IPv4-mapped address.
        let groups: Vec<&str> = (0..8)
            .map(|i| match (zeros >> i & 1, i % 3) {
                (1, _) => "0",
                (_, 0) => "fd00",
                (_, 1) => "a",
                _ => "ffff",
            })
            .collect();
        samples.push(format!("{}/128", groups.join(":")));
        for start in 0..8 {
            for end in start + 1..=8 {
                if groups[start..end].iter().all(|group| *group == "0") {
                    samples.push(format!(
                        "{}::{}/128",
                        groups[..start].join(":"),
                        groups[end..].join(":")
                    ));
                }
            }
        }
    }
    let report = refusal(&[
        "--set-json",
        &format!(
            "policy.network.denyEgressCIDRs={}",
            serde_json::to_string(&samples).unwrap()
        ),
    ])
    .unwrap_or_default();
    let refused: BTreeSet<usize> = report
        .split("/policy/network/denyEgressCIDRs/")
        .skip(1)
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("an item index")
        })
        .collect();
    let mut disagreements = Vec::new();
    let mut ipv6_host_bits = 0;
    for (index, sample) in samples.iter().enumerate() {
        let parsed = Cidr::parse(sample);
        let (operator, schema) = (parsed.is_ok(), !refused.contains(&index));
        if schema
            && sample.contains(':')
            && parsed
                .as_ref()
                .is_err_and(|rule| rule.contains("host bits"))
        {
            ipv6_host_bits += 1; // the one gap a pattern leaves
        } else if operator != schema {
            disagreements.push(format!("{sample:?}: operator {operator}, schema {schema}"));
        }
    }
    assert!(ipv6_host_bits > 0, "the samples include IPv6 host bits");
    assert!(
        disagreements.is_empty(),
        "denyEgressCIDRs: the schema and Cidr::parse disagree on {} of {} samples:\n{}",
        disagreements.len(),
        samples.len(),
        disagreements.join("\n")
    );
    assert!(
        refused.len() > samples.len() / 3,
        "too few refusals: {refused:?}"
    );

    byte_amounts_agree_with_the_operator();
}

/// Memory and ephemeral-storage amounts (whole bytes, not negative) against
/// the operator, in one render of a chart whose only value is a list of
/// amounts, each checked by the chart's own `ceilings.ephemeral-storage`
/// schema (its definitions copied; the three memory fields share it, and
/// the samples above show each of them refuses a fraction of a byte):
/// every whole part, fraction and suffix below, and numbers. Strings
/// without an exponent are judged exactly, as the operator judges them
/// (which takes a fraction of a nano-unit for a whole one: `0.9999999999`
/// is one byte), but the schema leaves to the operator an exponent
/// (`1.5e-1`) and a binary suffix after a fraction of 10 or more
/// significant digits (`0.00048828125Ki`, half a byte), which it lets
/// through. Numbers must be whole, so the one number the operator rounds up
/// to a whole byte (0.9999999999) is refused. Amounts too large for the
/// operator's arithmetic are left out: the schema bounds no amount.
fn byte_amounts_agree_with_the_operator() {
    use sandbox_operator::admission::{Policy, Quantity, QuantityError};

    let schema: Json = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    let chart = repo().join("target/test-logs/byte-amounts-chart");
    let _ = std::fs::remove_dir_all(&chart);
    std::fs::create_dir_all(&chart).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: byte-amounts\nversion: 0.1.0\n",
    )
    .unwrap();
    let ceilings = &schema["properties"]["policy"]["properties"]["ceilings"]["properties"];
    let amount = &ceilings["ephemeral-storage"];
    std::fs::write(
        chart.join("values.schema.json"),
        serde_json::json!({
            "$schema": schema["$schema"],
            "type": "object",
            "properties": {"samples": {"type": "array", "items": amount}},
            "definitions": schema["definitions"],
        })
        .to_string(),
    )
    .unwrap();

    let mut samples: Vec<Json> = Vec::new();
    for whole in ["", "0", "1", "999", "999999", "999999999"] {
        for fraction in [
            "",
            ".",
            ".0",
            ".5",
            ".25",
            ".1",
            ".001",
            ".999999999",
            ".9999999999",
            ".99999999991",
            ".0009765625",
            ".00048828125",
        ] {
            for suffix in [
                "", "m", "u", "n", "k", "M", "G", "E", "Ki", "Mi", "Gi", "Ei", "e3", "e-3", "E2",
            ] {
                samples.push(Json::from(format!("{whole}{fraction}{suffix}")));
            }
        }
    }
    samples.extend(["-1", "-0.5Gi", "+1Ki", "1e", "0x10", "1 Gi"].map(Json::from));
    samples.extend(
        [
            0.0,
            1.0,
            2.0,
            1024.0,
            1e21,
            0.5,
            1.5,
            0.001,
            -1.0,
            0.9999999999,
        ]
        .map(Json::from),
    );
    samples.extend([0, 1, 4096, -1].map(Json::from));
    let values = chart.join("samples.json");
    std::fs::write(
        &values,
        serde_json::json!({ "samples": samples }).to_string(),
    )
    .unwrap();
    let out = run(super::helm::helm()
        .args(["template", "rel", chart.to_str().unwrap(), "--values"])
        .arg(&values));
    let report = text(&out);
    let refused: BTreeSet<usize> = report
        .split("'/samples/")
        .skip(1)
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("an item index")
        })
        .collect();
    assert_eq!(out.status.success(), refused.is_empty(), "{report}");

    let left_to_operator = |text: &str| {
        let exponent = text.contains('e') || text.trim_end_matches('E').contains('E');
        let long_binary_fraction = text
            .strip_suffix('i')
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(_, fraction)| {
                let digits = fraction.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                digits.trim_end_matches('0').len() >= 10
            });
        exponent || long_binary_fraction
    };
    let (mut disagreements, mut left, mut rounded, mut checked) = (Vec::new(), 0, 0, 0);
    for (index, sample) in samples.iter().enumerate() {
        if let Some(text) = sample.as_str()
            && matches!(Quantity::parse(text), Err(QuantityError::TooLarge(_)))
        {
            continue;
        }
        checked += 1;
        let operator = Policy::from_yaml(&format!(
            r#"{{"ceilings":{{"ephemeral-storage":{sample}}}}}"#
        ))
        .is_ok();
        let schema = !refused.contains(&index);
        if schema && !operator && sample.as_str().is_some_and(left_to_operator) {
            left += 1;
        } else if operator && !schema && sample.is_f64() {
            rounded += 1;
        } else if operator != schema {
            disagreements.push(format!("{sample}: operator {operator}, schema {schema}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "byte amounts: the schema and the operator disagree on {} of {checked} samples:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(left > 0, "the samples include amounts left to the operator");
    assert_eq!(
        rounded, 1,
        "only 0.9999999999 is rounded up to a whole byte"
    );
    assert!(
        refused.len() > samples.len() / 3,
        "too few refusals: {refused:?}"
    );
}

/// Helm reads a values file's numbers as float64, which prints 1000000 as
/// 1e+06: every number the chart renders (flags, Pod fields) stays an
/// integer however large.
#[tokio::test]
async fn large_numbers_render_as_integers() {
    let values = repo().join("target/test-logs/chart-large-numbers.yaml");
    std::fs::create_dir_all(values.parent().unwrap()).unwrap();
    std::fs::write(
        &values,
        "maxPoolReplicas: 2000000000\n\
         controller:\n  replicas: 1000000\n  concurrency: 65535\n  rolloutBatch: 1000\n  \
         deferOffPathMs: 5000\n  poolCreateParallelism: 256\n  runtimeThreads: 64\n  \
         preStopSleepSeconds: 60\n  terminationGracePeriodSeconds: 10000000\n\
         leaderElection:\n  leaseDurationSeconds: 300\n\
         webhook:\n  timeoutSeconds: 30\n\
         tests:\n  timeoutSeconds: 10000000\n",
    )
    .unwrap();
    let values = values.to_str().unwrap();
    let manifest = succeed(helm_template().args(["--values", values]));
    assert!(
        !manifest.contains("e+0"),
        "a number rendered in scientific notation:\n{}",
        manifest
            .lines()
            .filter(|l| l.contains("e+0"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let docs = render(&["--values", values]);
    let args = operator_args(&docs);
    for flag in [
        "--max-pool-replicas=2000000000",
        "--concurrency=65535",
        "--rollout-batch=1000",
        "--defer-off-path-ms=5000",
        "--pool-create-parallelism=256",
        "--runtime-threads=64",
        "--lease-duration-seconds=300",
    ] {
        assert!(
            args.iter().any(|a| a == flag),
            "{flag} missing from {args:?}"
        );
    }
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(1000000));
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["terminationGracePeriodSeconds"].as_i64(),
        Some(10000000)
    );
    assert_eq!(
        pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64(),
        Some(60)
    );
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert_eq!(
            find(&docs, kind)["webhooks"][0]["timeoutSeconds"].as_i64(),
            Some(30)
        );
    }
    assert!(manifest.contains("--timeout=10000000s"));
    // And the policy's own numbers stay integers in the mounted file.
    let docs = render(&["--set-json", "policy={\"maxPoolReplicas\":2000000000}"]);
    let policy: Yaml = serde_yaml::from_str(
        super::helm::policy_config_map(&docs)["data"]["policy.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(policy["maxPoolReplicas"].as_i64(), Some(2000000000));
}

/// ValidatingAdmissionPolicy v1, webhook matchConditions and the preStop
/// sleep action need Kubernetes 1.30: the chart says so, and helm refuses
/// an older cluster instead of installing objects it would reject.
#[tokio::test]
async fn chart_requires_kubernetes_1_30() {
    let chart: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["kubeVersion"].as_str(), Some(">=1.30.0-0"));
    let report = refusal(&["--kube-version", "1.29.15"]).expect("1.29 refused");
    assert!(report.contains("kubeVersion"), "{report}");
    // Vendor builds of 1.30 and later match (the -0 takes pre-releases in).
    for version in [KUBE_VERSION, "v1.30.2-eks-1234", "1.31.0-gke.100", "1.37.2"] {
        assert_eq!(refusal(&["--kube-version", version]), None, "{version}");
    }
}

/// histogram_quantile never returns more than the top finite bucket of its
/// histogram (the +Inf bucket reads as that bound), so a latency threshold
/// at or above it could never fire: the schema's exclusiveMaximum of each is
/// that bucket, read from src/metrics.rs.
#[tokio::test]
async fn latency_thresholds_stay_below_the_top_bucket() {
    let source = crate::chart::metrics_source();
    let top_bucket = |constant: &str| -> f64 {
        let start = source
            .find(&format!("const {constant}: &[f64] = &["))
            .unwrap_or_else(|| panic!("{constant} in src/metrics.rs"));
        let list = &source[start..];
        let list = &list[list.find("&[").unwrap() + 2..list.find("];").unwrap()];
        list.split(',')
            .filter_map(|n| n.trim().parse::<f64>().ok())
            .fold(f64::MIN, f64::max)
    };
    let buckets_of = |metric: &str| -> &str {
        let at = source
            .find(&format!("\"{metric}\""))
            .unwrap_or_else(|| panic!("{metric} in src/metrics.rs"));
        let rest = &source[at..];
        let end = rest.find("_BUCKETS").expect("buckets after the name");
        let start = rest[..end]
            .rfind(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap()
            + 1;
        &rest[start..end + "_BUCKETS".len()]
    };
    let schema: Json = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    for (key, metric) in [
        ("claimLatencySLOSeconds", "claim_ready_duration_seconds"),
        ("coldClaimLatencySLOSeconds", "claim_ready_duration_seconds"),
        ("webhookLatencyP99Seconds", "admission_duration_seconds"),
        ("apiWriteLatencyP99Seconds", "api_request_duration_seconds"),
        ("queueWaitP99Seconds", "queue_wait_seconds"),
    ] {
        let top = top_bucket(buckets_of(metric));
        let property = &schema["properties"]["alerts"]["properties"][key];
        assert_eq!(
            property["exclusiveMaximum"].as_f64(),
            Some(top),
            "alerts.{key}: its p99 never exceeds {top} s (sandbox_operator_{metric})"
        );
        // The alert's expression is on that histogram.
        let rule = alert_rules(&alerts_file())
            .into_iter()
            .find(|(_, expr)| expr.contains(&format!("# {key}")))
            .unwrap_or_else(|| panic!("no alert uses {key}"));
        assert!(
            rule.1
                .contains(&format!("sandbox_operator_{metric}_bucket")),
            "{rule:?}"
        );
        let report = refusal(&["--set-json", &format!("alerts.{key}={top}")])
            .unwrap_or_else(|| panic!("alerts.{key}={top} accepted"));
        assert!(report.contains(&format!("/alerts/{key}")), "{report}");
        assert_eq!(
            refusal(&["--set-json", &format!("alerts.{key}={}", top * 0.99)]),
            None
        );
    }
}

/// NOTES.txt rendered without a cluster: `helm install --dry-run` needs one
/// and the CRDs of every rendered kind (a ServiceMonitor's too), and `helm
/// template` leaves NOTES out, so a copy of the chart's values, schema and
/// helpers renders NOTES.txt as a string through `tpl`.
fn render_notes(args: &[&str]) -> String {
    static CHART: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let chart = CHART.get_or_init(|| {
        let dir = repo().join("target/test-logs/notes-chart");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        let source = chart_dir();
        for file in ["Chart.yaml", "values.yaml", "values.schema.json"] {
            std::fs::copy(source.join(file), dir.join(file)).unwrap();
        }
        std::fs::copy(
            source.join("templates/_helpers.tpl"),
            dir.join("templates/_helpers.tpl"),
        )
        .unwrap();
        std::fs::copy(source.join("templates/NOTES.txt"), dir.join("NOTES.txt")).unwrap();
        std::fs::write(
            dir.join("templates/notes.yaml"),
            "{\"notes\": {{ tpl (.Files.Get \"NOTES.txt\") . | toJson }}}\n",
        )
        .unwrap();
        dir
    });
    let rendered = succeed(
        super::helm::helm()
            .args(["template", "rel", chart.to_str().unwrap()])
            .args([
                "--kube-version",
                KUBE_VERSION,
                "--namespace",
                "sandbox-system",
            ])
            .args(["--show-only", "templates/notes.yaml"])
            .args(args),
    );
    let doc: Yaml = serde_yaml::from_str(&rendered).expect("notes render as YAML");
    doc["notes"].as_str().expect("notes").to_string()
}

/// A ServiceMonitor next to the chart's NetworkPolicy at its default (the
/// admin port open to the release namespace only) leaves a Prometheus in
/// any other namespace outside, and SandboxOperatorNoLeader pages: NOTES
/// say so and name the values to set.
#[tokio::test]
async fn notes_warn_when_the_network_policy_keeps_prometheus_out() {
    let notes = render_notes(&[]);
    assert!(notes.contains("Try it:"), "{notes}");
    assert!(
        !notes.contains("WARNING"),
        "default install warns:\n{notes}"
    );

    let notes = render_notes(&["--set", "metrics.serviceMonitor.enabled=true"]);
    for needle in [
        "WARNING",
        "metrics.serviceMonitor.enabled is true",
        "networkPolicy.metricsFrom.namespaceSelector",
        "networkPolicy.metricsFrom.podSelector",
        "namespace sandbox-system",
        "admin port 8080",
        "SandboxOperatorNoLeader",
    ] {
        assert!(notes.contains(needle), "NOTES lack {needle:?}:\n{notes}");
    }

    // A selector for Prometheus's namespace, or no NetworkPolicy: no warning.
    for args in [
        vec![
            "--set-json",
            r#"networkPolicy.metricsFrom.namespaceSelector={"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}"#,
        ],
        vec!["--set", "networkPolicy.enabled=false"],
    ] {
        let mut args = args;
        args.extend(["--set", "metrics.serviceMonitor.enabled=true"]);
        let notes = render_notes(&args);
        assert!(!notes.contains("WARNING"), "{args:?} warns:\n{notes}");
    }
}

/// The operator-level alerts follow the release: SandboxOperatorMultipleLeaders
/// is left out when leader election is off (every replica leads then, by
/// design), and the selectors of the operator's own series are narrowed to
/// the release namespace, so another release neither hides a missing leader
/// nor counts as a second one (promtool on the rendered rules).
#[tokio::test]
async fn operator_alerts_follow_leader_election_and_the_release_namespace() {
    let rules_of = |args: &[&str]| -> Yaml {
        let mut all = vec!["--set", "metrics.prometheusRule.enabled=true"];
        all.extend(args);
        find(&render(&all), "PrometheusRule")["spec"].clone()
    };
    let names = |spec: &Yaml| -> BTreeSet<String> {
        alert_rules(spec)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    };

    let off = rules_of(&[
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "controller.replicas=2",
    ]);
    assert!(!names(&off).contains("SandboxOperatorMultipleLeaders"));
    assert!(names(&off).contains("SandboxOperatorNoLeader"));
    assert_eq!(names(&off).len(), alert_rules(&alerts_file()).len() - 1);

    let scoped = rules_of(&[]);
    assert!(names(&scoped).contains("SandboxOperatorMultipleLeaders"));
    let marker = r#"namespace=~".*""#;
    let file_rules = alert_rules(&alerts_file());
    for ((name, expr), (_, file_expr)) in alert_rules(&scoped).iter().zip(&file_rules) {
        assert!(!expr.contains(marker), "{name}: {expr}");
        assert_eq!(
            expr.matches(r#"namespace="sandbox-system""#).count(),
            file_expr.matches(marker).count(),
            "{name}: {expr}"
        );
    }
    for name in [
        "SandboxOperatorNoLeader",
        "SandboxOperatorMultipleLeaders",
        "SandboxWebhookCertificateExpiringSoon",
        "SandboxPolicyFileRefused",
        "SandboxWebhookLatencyHigh",
        "SandboxReconcileErrors",
        "SandboxOperatorAPIWritesSlow",
        "SandboxOperatorAPIWritesFailing",
        "SandboxOperatorQueueBacklog",
    ] {
        let (_, expr) = alert_rules(&scoped)
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap();
        assert!(
            expr.contains(r#"namespace="sandbox-system""#),
            "{name} is not scoped to the release: {expr}"
        );
    }
    // Off: no namespace matcher on the operator's series at all.
    let unscoped = rules_of(&["--set", "alerts.matchReleaseNamespace=false"]);
    for (name, expr) in alert_rules(&unscoped) {
        assert!(
            !expr.contains(marker) && !expr.contains("namespace=\""),
            "{name}: {expr}"
        );
    }

    // promtool on the rendered rules: two releases, this one in
    // sandbox-system, the other in another namespace.
    let dir = repo().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("scoped-alerts.rules.yaml"),
        serde_yaml::to_string(&scoped).unwrap(),
    )
    .unwrap();
    let no_leader = scoped["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .find(|r| r["alert"].as_str() == Some("SandboxOperatorNoLeader"))
        .unwrap();
    let test = serde_json::json!({
        "rule_files": ["scoped-alerts.rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "another release's leader does not hide this one's missing leader",
                "interval": "1m",
                "input_series": [
                    {"series": r#"sandbox_operator_leader{namespace="other",pod="x"}"#, "values": "1x30"},
                    {"series": r#"sandbox_operator_leader{namespace="sandbox-system",pod="a"}"#, "values": "1x5 0x25"},
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "SandboxOperatorMultipleLeaders"},
                    {
                        "eval_time": "20m",
                        "alertname": "SandboxOperatorNoLeader",
                        "exp_alerts": [{
                            "exp_labels": no_leader["labels"],
                            "exp_annotations": no_leader["annotations"],
                        }],
                    },
                ],
            },
            {
                "name": "another release's leader is not a second leader",
                "interval": "1m",
                "input_series": [
                    {"series": r#"sandbox_operator_leader{namespace="other",pod="x"}"#, "values": "1x30"},
                    {"series": r#"sandbox_operator_leader{namespace="sandbox-system",pod="a"}"#, "values": "1x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "SandboxOperatorMultipleLeaders"},
                    {"eval_time": "20m", "alertname": "SandboxOperatorNoLeader"},
                ],
            },
        ],
    });
    let test_file = dir.join("scoped-alerts-test.yaml");
    std::fs::write(&test_file, serde_yaml::to_string(&test).unwrap()).unwrap();
    let out = run(promtool().args(["test", "rules"]).arg(&test_file));
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
}

/// `image.digest` pins one build: every build of a version has the same
/// tag, and with `IfNotPresent` a node keeps the one it pulled first. Set,
/// the image is `repository@digest` (the tag no longer counts); empty, it is
/// `repository:tag` as before; a digest that is not `sha256:` and 64
/// lowercase hex digits is refused by the schema.
#[tokio::test]
async fn image_digest_pins_the_image_by_digest() {
    let image = |docs: &[Yaml]| {
        find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .expect("an image")
            .to_string()
    };
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let pinned = render(&[
        "--set",
        "image.repository=registry.example/sandbox-operator",
        "--set",
        "image.tag=9.9.9",
        "--set",
        &format!("image.digest={digest}"),
    ]);
    assert_eq!(
        image(&pinned),
        format!("registry.example/sandbox-operator@{digest}")
    );
    let tagged = render(&["--set", "image.tag=9.9.9"]);
    assert_eq!(image(&tagged), "sandbox-operator:9.9.9");

    for bad in [
        "sha256:0123".to_string(),
        digest.to_uppercase().replace("SHA256", "sha256"),
        digest.replace("sha256:", "sha512:"),
        digest.trim_start_matches("sha256:").to_string(),
    ] {
        let report = refusal(&["--set", &format!("image.digest={bad}")])
            .unwrap_or_else(|| panic!("image.digest={bad} was accepted"));
        assert!(
            report.contains("schema") && report.contains("/image/digest"),
            "image.digest={bad}: expected a schema error naming /image/digest, got:\n{report}"
        );
    }
}
