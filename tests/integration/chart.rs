//! The Helm chart (`charts/sandbox-operator`): lint, render, schema, alert
//! rules and dashboard, and installs on the local control plane, including
//! the real operator binary running with exactly the chart's flags and the
//! chart's RBAC (a token of its ServiceAccount).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, PostParams};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::common::{
    TestNs, bin_dir, free_port, http_get, kubeconfig, kubectl, repo, wait_until_ok,
};
use crate::fixtures::{
    claim_of, claim_ready, create, listening_agent_pod, pool, template_of, wait_claim_ready,
    wait_idle_ready,
};
use sandbox_operator::api::{ADMITTED_AT_ANNOTATION, LaunchType, SandboxClaim};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn chart_dir() -> PathBuf {
    repo().join("charts/sandbox-operator")
}

/// `helm` of the control-plane harness (falls back to the one on PATH).
fn helm() -> Command {
    let harness = bin_dir()
        .map(|dir| dir.join("helm"))
        .filter(|path| path.exists());
    let mut command = Command::new(harness.unwrap_or_else(|| PathBuf::from("helm")));
    command.env("HELM_CACHE_HOME", repo().join("target/helm/cache"));
    command.env("HELM_CONFIG_HOME", repo().join("target/helm/config"));
    command.env("HELM_DATA_HOME", repo().join("target/helm/data"));
    command
}

/// `helm` talking to the local control plane.
fn helm_cluster() -> Command {
    let mut command = helm();
    command.env("KUBECONFIG", kubeconfig());
    command
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn succeed(command: &mut Command) -> String {
    let out = run(command);
    assert!(out.status.success(), "{command:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` of the chart with `args`; every document parsed.
fn render(args: &[&str]) -> Vec<Yaml> {
    let chart = chart_dir();
    let manifest = succeed(
        helm()
            .args([
                "template",
                "rel",
                chart.to_str().unwrap(),
                "--namespace",
                "sandbox-system",
            ])
            .args(args),
    );
    documents(&manifest)
}

fn documents(manifest: &str) -> Vec<Yaml> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(manifest)
        .map(|doc| Yaml::deserialize(doc).expect("rendered YAML parses"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind_of(doc: &Yaml) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn find<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let found: Vec<&Yaml> = docs.iter().filter(|d| kind_of(d) == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, found {}",
        found.len()
    );
    found[0]
}

fn kinds(docs: &[Yaml]) -> BTreeSet<String> {
    docs.iter().map(|d| kind_of(d).to_string()).collect()
}

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `args` of the operator container of the rendered Deployment.
fn operator_args(docs: &[Yaml]) -> Vec<String> {
    strings(&find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])
}

fn promtool() -> Command {
    Command::new("promtool")
}

fn all_on_values() -> String {
    chart_dir()
        .join("ci/all-on-values.yaml")
        .to_string_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------
// Metric names: what the operator exports, what a query uses
// ---------------------------------------------------------------------------

/// The metric names the operator registers, read from `src/metrics.rs`
/// (`histogram("..."`, `counter("..."`, `gauge("..."`, `name("..."`), with
/// the `_bucket`/`_sum`/`_count` series of histograms.
fn exported_series() -> BTreeSet<String> {
    let source = std::fs::read_to_string(repo().join("src/metrics.rs")).expect("src/metrics.rs");
    let mut names = BTreeSet::new();
    for constructor in ["histogram(", "counter(", "gauge(", "name("] {
        let mut rest = source.as_str();
        while let Some(at) = rest.find(constructor) {
            rest = &rest[at + constructor.len()..];
            let Some(quoted) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            let short: String = quoted.chars().take_while(|c| *c != '"').collect();
            if short.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !short.is_empty() {
                let name = format!("sandbox_operator_{short}");
                if constructor == "histogram(" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                names.insert(name);
            }
        }
    }
    // The parse above must see every metric the design lists.
    for expected in [
        "claim_ready_duration_seconds_bucket",
        "claims_total",
        "steal_attempts_total",
        "steal_conflicts_total",
        "pool_exhausted_total",
        "pool_desired_replicas",
        "pool_ready_replicas",
        "pool_idle_replicas",
        "pool_replenish_duration_seconds_bucket",
        "reconcile_total",
        "reconcile_errors_total",
        "reconcile_duration_seconds_bucket",
        "admission_requests_total",
        "admission_duration_seconds_bucket",
        "webhook_certificate_expiry_timestamp_seconds",
        "leader",
        "build_info",
    ] {
        assert!(
            names.contains(&format!("sandbox_operator_{expected}")),
            "src/metrics.rs does not register sandbox_operator_{expected}; found {names:?}"
        );
    }
    names
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, keywords, label names, durations, numbers or dashboard
/// variables.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Strings, comments, label matchers, ranges and variables go first.
    let mut cleaned = String::new();
    let mut chars = expr.chars().peekable();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let quote = c;
                while let Some(d) = chars.next() {
                    if d == '\\' && quote != '`' {
                        chars.next();
                    } else if d == quote {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '#' if depth_brace == 0 => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            '$' => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_alphanumeric() || *d == '_')
                {
                    chars.next();
                }
                cleaned.push(' ');
            }
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => cleaned.push(c),
        }
    }
    // Tokens.
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = cleaned.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut word = String::new();
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_' || *d == ':')
            {
                word.push(chars.next().unwrap());
            }
            tokens.push(word);
        } else if c.is_ascii_digit() || c == '.' {
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
            {
                chars.next();
            }
            tokens.push("0".into());
        } else if c.is_whitespace() {
            chars.next();
        } else {
            tokens.push(chars.next().unwrap().to_string());
        }
    }
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let next = tokens.get(i + 1).map(String::as_str);
        if GROUPING.contains(&token.as_str()) && next == Some("(") {
            // Skip the label list of a grouping clause.
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
        } else if token.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && !matches!(next, Some("(" | "by" | "without"))
            && !KEYWORDS.contains(&token.as_str())
        {
            names.insert(token.clone());
        }
        i += 1;
    }
    names
}

/// Every PromQL query of the dashboard: panel targets and the metric of each
/// `label_values(metric, label)` variable.
fn dashboard_queries() -> Vec<String> {
    let dashboard: Json = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("files/dashboard.json")).unwrap(),
    )
    .expect("files/dashboard.json is valid JSON");
    let mut queries = Vec::new();
    fn walk(panel: &Json, out: &mut Vec<String>) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(
                target["expr"]
                    .as_str()
                    .expect("every target has an expr")
                    .to_string(),
            );
        }
        for inner in panel["panels"].as_array().into_iter().flatten() {
            walk(inner, out);
        }
    }
    for panel in dashboard["panels"].as_array().expect("panels") {
        walk(panel, &mut queries);
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(definition) = variable["definition"].as_str() {
            let inner = definition
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .expect("label_values(metric, label)");
            let (metric, _label) = inner.split_once(',').expect("label_values(metric, label)");
            queries.push(metric.trim().to_string());
        }
    }
    queries
}

/// `(alert name, expr)` of every rule in a Prometheus rule file.
fn alert_rules(file: &Yaml) -> Vec<(String, String)> {
    let mut rules = Vec::new();
    for group in file["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            rules.push((
                rule["alert"]
                    .as_str()
                    .expect("alerting rules only")
                    .to_string(),
                rule["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    rules
}

fn alerts_file() -> Yaml {
    serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("files/alerts.yaml")).unwrap())
        .expect("files/alerts.yaml parses")
}

/// `promtool check rules` on queries turned into recording rules (dashboard
/// variables replaced by plain values), so every query is known to parse.
fn assert_queries_parse(what: &str, queries: &[String]) {
    let rules: Vec<Json> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let expr = q
                .replace("$__rate_interval", "5m")
                .replace("$template", ".*")
                .replace("$pool", ".*");
            serde_json::json!({"record": format!("query:{i}"), "expr": expr})
        })
        .collect();
    let file = repo().join(format!("target/test-logs/{what}-queries.rules.yaml"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        serde_yaml::to_string(&serde_json::json!({"groups": [{"name": what, "rules": rules}]}))
            .unwrap(),
    )
    .unwrap();
    succeed(promtool().args(["check", "rules"]).arg(&file));
}

/// The rendered policy is one the operator accepts, and it admits the
/// objects of the chart's own `helm test` (`sandbox-operator policy check`).
fn assert_policy_admits_the_helm_test(docs: &[Yaml], label: &str) {
    let policy = docs
        .iter()
        .find(|d| {
            kind_of(d) == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-policy"))
        })
        .expect("policy ConfigMap");
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

// ---------------------------------------------------------------------------
// Tests without a cluster
// ---------------------------------------------------------------------------

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
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
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
        let resources: BTreeSet<String> = webhook["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|r| strings(&r["resources"]))
            .collect();
        assert_eq!(
            resources,
            [
                "sandboxclaims",
                "sandboxes",
                "sandboxtemplates",
                "sandboxwarmpools"
            ]
            .map(String::from)
            .into()
        );
        for rule in webhook["rules"].as_sequence().unwrap() {
            assert_eq!(strings(&rule["operations"]), ["CREATE", "UPDATE"]);
        }
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

#[tokio::test]
async fn chart_renders_every_option() {
    let docs = render(&["--values", &all_on_values()]);
    for kind in ["Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"] {
        find(&docs, kind);
    }

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
async fn alert_rules_pass_promtool_check_and_unit_tests() {
    let chart = chart_dir();
    let out = run(promtool()
        .args(["check", "rules"])
        .arg(chart.join("files/alerts.yaml")));
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );
    let out = run(promtool()
        .args(["test", "rules"])
        .arg(chart.join("ci/alerts-test.yaml")));
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
}

#[tokio::test]
async fn dashboard_and_alerts_query_only_metrics_the_operator_exports() {
    let exported = exported_series();

    let queries = dashboard_queries();
    assert!(
        queries.len() >= 20,
        "only {} dashboard queries",
        queries.len()
    );
    let mut used = BTreeSet::new();
    for query in &queries {
        let names = metrics_in(query);
        assert!(!names.is_empty(), "no metric found in {query:?}");
        for name in names {
            assert!(
                exported.contains(&name),
                "dashboard query uses {name}, which the operator does not export: {query}"
            );
            used.insert(name);
        }
    }
    // The panels the design asks for.
    for needed in [
        "claim_ready_duration_seconds_bucket",
        "claims_total",
        "pool_desired_replicas",
        "pool_ready_replicas",
        "pool_idle_replicas",
        "steal_attempts_total",
        "steal_conflicts_total",
        "admission_requests_total",
        "admission_duration_seconds_bucket",
        "reconcile_errors_total",
        "webhook_certificate_expiry_timestamp_seconds",
    ] {
        assert!(
            used.contains(&format!("sandbox_operator_{needed}")),
            "the dashboard has no panel on sandbox_operator_{needed}"
        );
    }
    assert_queries_parse("dashboard", &queries);

    // Alerts: the operator's metrics, plus the API server's own webhook
    // metrics (the only view of calls that never reached the operator).
    let rules = alert_rules(&alerts_file());
    for (alert, expr) in &rules {
        for name in metrics_in(expr) {
            assert!(
                exported.contains(&name) || name.starts_with("apiserver_admission_webhook_"),
                "alert {alert} uses {name}, which neither the operator nor the API server exports"
            );
        }
    }

    // The extractor itself.
    assert_eq!(
        metrics_in(
            "sum by (le, pool) (rate(a_total{x=\"y\"}[5m])) / on (pool) group_left () b > 0 # c\n and vector(1) or max(c) without (d)"
        ),
        ["a_total", "b", "c"].map(String::from).into()
    );
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

// ---------------------------------------------------------------------------
// On the local control plane
// ---------------------------------------------------------------------------

/// Kinds of the cluster-scoped objects a release creates.
const CLUSTER_SCOPED: &str = "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations";

fn release_objects(release: &str, kinds: &str, namespace: Option<&str>) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={release}");
    let mut args = vec!["get", kinds, "-l", &selector, "-o", "name"];
    if let Some(namespace) = namespace {
        args.extend(["-n", namespace]);
    }
    let out = kubectl(&args);
    assert!(out.status.success(), "kubectl get {kinds}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Uninstalls `release` and checks that nothing of it is left.
fn uninstall_and_check(release: &str, namespace: &str) {
    succeed(helm_cluster().args([
        "uninstall",
        release,
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "60s",
    ]));
    let left = release_objects(release, CLUSTER_SCOPED, None);
    assert!(
        left.is_empty(),
        "helm uninstall left cluster-scoped objects: {left:?}"
    );
    let left = release_objects(
        release,
        "deployments,services,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets",
        Some(namespace),
    );
    assert!(
        left.is_empty(),
        "helm uninstall left objects in {namespace}: {left:?}"
    );
}

#[tokio::test]
async fn chart_installs_on_the_control_plane_and_uninstalls_without_leftovers() {
    let ns = TestNs::new("chart").await;
    let chart = chart_dir();

    // The default rendering (cluster-wide RBAC, Service-based webhooks) is
    // accepted by the API server as it is (server-side dry run; registering
    // it for real would send admission calls to a Service IP).
    let manifest = succeed(helm().args([
        "template",
        &ns.name,
        chart.to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--skip-tests",
    ]));
    let file = repo().join(format!(
        "target/test-logs/{}-default-manifest.yaml",
        ns.name
    ));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &manifest).unwrap();
    let out = ns.kubectl(&["apply", "--dry-run=server", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "the API server refuses the default rendering:\n{}",
        text(&out)
    );

    // A real install in URL mode, scoped to this namespace so no other test's
    // objects meet these webhooks; nothing serves them, so Ignore.
    let release = ns.name.clone();
    let port = free_port();
    succeed(
        helm_cluster()
            .args([
                "install",
                &release,
                chart.to_str().unwrap(),
                "--namespace",
                &ns.name,
                "--skip-crds",
            ])
            .args([
                "--set",
                &format!("webhook.url=https://127.0.0.1:{port}"),
                "--set",
                "webhook.failurePolicy=Ignore",
                "--set",
                &format!("controller.watchNamespace={}", ns.name),
            ]),
    );
    let status =
        succeed(helm_cluster().args(["status", &release, "--namespace", &ns.name, "-o", "json"]));
    let status: Json = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["info"]["status"].as_str(),
        Some("deployed"),
        "{status}"
    );

    // Every object of the release is there.
    let manifest =
        succeed(helm_cluster().args(["get", "manifest", &release, "--namespace", &ns.name]));
    let docs = documents(&manifest);
    assert!(docs.len() >= 12, "{} objects", docs.len());
    for doc in &docs {
        let name = doc["metadata"]["name"].as_str().unwrap();
        let namespace = doc["metadata"]["namespace"].as_str();
        let resource = format!("{}/{name}", kind_of(doc).to_lowercase());
        let mut args = vec!["get", resource.as_str(), "-o", "name"];
        if let Some(namespace) = namespace {
            args.extend(["-n", namespace]);
        }
        let out = kubectl(&args);
        assert!(
            out.status.success(),
            "{resource} of the release is missing: {}",
            text(&out)
        );
    }
    let cluster_scoped = release_objects(&release, CLUSTER_SCOPED, None);
    assert_eq!(cluster_scoped.len(), 4, "{cluster_scoped:?}");

    uninstall_and_check(&release, &ns.name);
}

/// The chart's ServiceAccount, as a kubeconfig with a token of it.
fn service_account_kubeconfig(ns: &TestNs, service_account: &str) -> PathBuf {
    let out = ns.kubectl(&["create", "token", service_account, "--duration=1h"]);
    assert!(out.status.success(), "kubectl create token: {}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut config: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig()).unwrap()).unwrap();
    config["users"] =
        serde_yaml::from_str(&format!("[{{name: sa, user: {{token: {token}}}}}]")).unwrap();
    for context in config["contexts"].as_sequence_mut().unwrap() {
        context["context"]["user"] = Yaml::from("sa");
    }
    let path = repo().join(format!("target/test-logs/{}-sa.kubeconfig", ns.name));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// The operator binary started with the Deployment's own arguments (only the
/// listen addresses and the policy path made local) and the chart's RBAC.
fn start_like_the_deployment(
    docs: &[Yaml],
    ns: &TestNs,
    kubeconfig: &Path,
    metrics_port: u16,
    webhook_port: u16,
    log: &Path,
) -> tokio::process::Child {
    let policy = docs
        .iter()
        .find(|d| {
            kind_of(d) == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-policy"))
        })
        .expect("policy ConfigMap");
    let policy_file = repo().join(format!("target/test-logs/{}-policy.yaml", ns.name));
    std::fs::write(
        &policy_file,
        policy["data"]["policy.yaml"].as_str().unwrap(),
    )
    .unwrap();
    let args: Vec<String> = operator_args(docs)
        .into_iter()
        .map(|arg| match arg.split_once('=') {
            Some(("--metrics-addr", _)) => format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            Some(("--webhook-addr", _)) => format!("--webhook-addr=127.0.0.1:{webhook_port}"),
            Some(("--policy-file", _)) => format!("--policy-file={}", policy_file.display()),
            _ => arg,
        })
        .collect();
    let file = std::fs::File::create(log).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
        .args(&args)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", format!("{}-local", ns.name))
        .env("POD_NAMESPACE", &ns.name)
        .env("RUST_LOG", "info,kube_runtime=warn,kube_client=warn")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator binary")
}

/// A release installed for an operator that runs on this machine: webhooks
/// registered by URL on 127.0.0.1, watch and admission scoped to the test's
/// namespace (the release namespace too). Uninstalled (best effort) when
/// dropped unless [`LocalRelease::uninstall`] ran.
struct LocalRelease {
    name: String,
    namespace: String,
    /// The installed manifest, every document parsed.
    docs: Vec<Yaml>,
    uninstalled: bool,
}

impl LocalRelease {
    fn install(ns: &TestNs, webhook_port: u16, extra: &[&str]) -> LocalRelease {
        let chart = chart_dir();
        let name = ns.name.clone();
        succeed(
            helm_cluster()
                .args([
                    "install",
                    &name,
                    chart.to_str().unwrap(),
                    "--namespace",
                    &ns.name,
                    "--skip-crds",
                ])
                .args([
                    "--set",
                    &format!("webhook.url=https://127.0.0.1:{webhook_port}"),
                    "--set",
                    &format!("controller.watchNamespace={}", ns.name),
                ])
                .args(extra),
        );
        let docs = documents(&succeed(helm_cluster().args([
            "get",
            "manifest",
            &name,
            "--namespace",
            &ns.name,
        ])));
        LocalRelease {
            name,
            namespace: ns.name.clone(),
            docs,
            uninstalled: false,
        }
    }

    fn name_of(&self, kind: &str) -> String {
        find(&self.docs, kind)["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The value of `--flag=` in the Deployment's args.
    fn flag(&self, flag: &str) -> String {
        let prefix = format!("{flag}=");
        operator_args(&self.docs)
            .into_iter()
            .find_map(|arg| arg.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("the Deployment has no {flag}"))
    }

    fn uninstall(mut self) {
        self.uninstalled = true;
        uninstall_and_check(&self.name, &self.namespace);
    }
}

impl Drop for LocalRelease {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ =
                run(helm_cluster().args(["uninstall", &self.name, "--namespace", &self.namespace]));
        }
    }
}

/// The operator binary run like the release's Deployment with the chart's
/// ServiceAccount token; killed when dropped.
struct ChartOperator {
    child: tokio::process::Child,
    metrics_port: u16,
    webhook_port: u16,
    log: PathBuf,
    /// Its Lease identity (POD_NAME).
    identity: String,
}

impl ChartOperator {
    /// Starts it and waits until /readyz answers 200.
    async fn start(release: &LocalRelease, ns: &TestNs, webhook_port: u16) -> ChartOperator {
        let service_account = release.name_of("ServiceAccount");
        let sa_kubeconfig = service_account_kubeconfig(ns, &service_account);
        let metrics_port = free_port();
        let log = repo().join(format!("target/test-logs/{}-operator.log", ns.name));
        let child = start_like_the_deployment(
            &release.docs,
            ns,
            &sa_kubeconfig,
            metrics_port,
            webhook_port,
            &log,
        );
        let op = ChartOperator {
            child,
            metrics_port,
            webhook_port,
            log,
            identity: format!("{}-local", ns.name),
        };
        let ready = wait_until_ok(Duration::from_secs(90), || async {
            http_get(&format!("http://127.0.0.1:{metrics_port}/readyz"))
                .await
                .is_ok_and(|(code, _)| code == 200)
        })
        .await;
        assert!(
            ready,
            "the operator, run as the chart's ServiceAccount, did not become ready; log:\n{}",
            op.log()
        );
        op
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The serial of the certificate a fresh TLS handshake on the webhook
    /// port presents (`serial=...`), or "" when none.
    fn served_serial(&self) -> String {
        let out = run(Command::new("sh").arg("-c").arg(format!(
            "openssl s_client -connect 127.0.0.1:{} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            self.webhook_port
        )));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Log lines that show the API server refusing the operator something.
fn forbidden_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            line.to_ascii_lowercase().contains("forbidden")
                || line.contains("code: 403")
                || line.contains("\"code\":403")
        })
        .collect()
}

/// `sandbox_operator_reconcile_errors_total` series with a non-zero value.
fn reconcile_errors(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("sandbox_operator_reconcile_errors_total"))
        .filter(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_none_or(|v| v != 0.0)
        })
        .collect()
}

/// A template whose Pods (an `agent` container listening on 8080) start
/// after 300 ms (KWOK) and a pool of `replicas` of it, both named `name`
/// (through the webhooks).
async fn create_template_and_pool(ns: &TestNs, name: &str, replicas: i32) {
    create(ns, &template_of(name, listening_agent_pod(300))).await;
    create(ns, &pool(name, name, replicas)).await;
}

/// Creates a claim on `template` (through the webhooks) and checks that the
/// mutating webhook stamped it.
async fn create_claim(
    ns: &TestNs,
    name: &str,
    template: &str,
    warmpool: Option<&str>,
) -> Result<(), String> {
    let mut spec = serde_json::json!({"sandboxTemplateRef": {"name": template}});
    if let Some(warmpool) = warmpool {
        spec["warmpool"] = Json::from(warmpool);
    }
    let created = ns
        .api::<SandboxClaim>()
        .create(&PostParams::default(), &claim_of(name, spec))
        .await
        .map_err(|e| e.to_string())?;
    assert!(
        created
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ADMITTED_AT_ANNOTATION)),
        "claim {name} was not mutated by the webhook: {:?}",
        created.metadata.annotations
    );
    Ok(())
}

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
    assert_eq!(
        wait_claim_ready(&ns, "warm-1", || operator.log()).await,
        Some(LaunchType::Warm)
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
    // A claim whose pool is empty is served cold too, with a PoolExhausted
    // Event (the Events rule).
    create_template_and_pool(&ns, "rbac-empty", 0).await;
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
/// the checks the positive test makes (a claim never becomes Ready, the
/// log shows 403 Forbidden), and putting the rule back heals it.
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
    let out = ns.kubectl(&[
        "patch",
        "role",
        &role_name,
        "--type=json",
        "-p",
        &remove.to_string(),
    ]);
    assert!(out.status.success(), "removing the rule: {}", text(&out));

    let operator = ChartOperator::start(&release, &ns, webhook_port).await;
    // Everything but the claim path still works: the pool fills.
    create_template_and_pool(&ns, "rbac", 1).await;
    wait_idle_ready(&ns, 1, "pool fill without the rule", || operator.log()).await;

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

    // The rule back (as rendered): the retried reconcile serves the claim.
    let restore = serde_json::json!([{"op": "add", "path": path, "value": rule}]);
    let out = ns.kubectl(&[
        "patch",
        "role",
        &role_name,
        "--type=json",
        "-p",
        &restore.to_string(),
    ]);
    assert!(out.status.success(), "restoring the rule: {}", text(&out));
    assert_eq!(
        wait_claim_ready(&ns, "claim-1", || operator.log()).await,
        Some(LaunchType::Warm)
    );

    drop(operator);
    release.uninstall();
}
