//! Running helm and reading what it renders: the chart's folder, `helm`
//! (the harness's binary) with or without the local control plane,
//! `helm template` parsed into YAML documents, and small readers over them
//! (find a kind, the operator's arguments). No assertions about the chart.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_yaml::Value as Yaml;

use crate::common::{bin_dir, kubeconfig, repo};

pub(super) fn chart_dir() -> PathBuf {
    repo().join("charts/sandbox-operator")
}

/// `helm` of the control-plane harness (falls back to the one on PATH).
pub(super) fn helm() -> Command {
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
pub(super) fn helm_cluster() -> Command {
    let mut command = helm();
    command.env("KUBECONFIG", kubeconfig());
    command
}

pub(super) fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

pub(super) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(super) fn succeed(command: &mut Command) -> String {
    let out = run(command);
    assert!(out.status.success(), "{command:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Kubernetes version `helm template` renders for: the chart's floor
/// (Chart.yaml `kubeVersion`). Without a cluster, helm assumes the version
/// it was built with, and the harness's `go install`ed helm says v1.20.0,
/// which the chart refuses.
pub(super) const KUBE_VERSION: &str = "1.30.0";

/// `helm template rel <chart>` for [`KUBE_VERSION`]; more arguments follow.
pub(super) fn helm_template() -> Command {
    let mut command = helm();
    command.args([
        "template",
        "rel",
        chart_dir().to_str().unwrap(),
        "--kube-version",
        KUBE_VERSION,
    ]);
    command
}

/// `helm template` of the chart with `args`; every document parsed.
pub(super) fn render(args: &[&str]) -> Vec<Yaml> {
    let manifest = succeed(
        helm_template()
            .args(["--namespace", "sandbox-system"])
            .args(args),
    );
    documents(&manifest)
}

pub(super) fn documents(manifest: &str) -> Vec<Yaml> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(manifest)
        .map(|doc| Yaml::deserialize(doc).expect("rendered YAML parses"))
        .filter(|doc| !doc.is_null())
        .collect()
}

pub(super) fn kind_of(doc: &Yaml) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

pub(super) fn find<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let found: Vec<&Yaml> = docs.iter().filter(|d| kind_of(d) == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, found {}",
        found.len()
    );
    found[0]
}

pub(super) fn kinds(docs: &[Yaml]) -> BTreeSet<String> {
    docs.iter().map(|d| kind_of(d).to_string()).collect()
}

pub(super) fn strings(value: &Yaml) -> Vec<String> {
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
pub(super) fn operator_args(docs: &[Yaml]) -> Vec<String> {
    strings(&find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])
}

pub(super) fn promtool() -> Command {
    Command::new("promtool")
}

pub(super) fn all_on_values() -> String {
    chart_dir()
        .join("ci/all-on-values.yaml")
        .to_string_lossy()
        .into_owned()
}

/// The chart's policy ConfigMap (`<release>-policy`) among rendered documents.
pub(super) fn policy_config_map(docs: &[Yaml]) -> &Yaml {
    docs.iter()
        .find(|d| {
            kind_of(d) == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-policy"))
        })
        .expect("policy ConfigMap")
}

/// `helm install <release>` of the chart into `namespace` on the local
/// control plane, CRDs left out (the tests install them once).
pub(super) fn helm_install(release: &str, namespace: &str) -> Command {
    let mut command = helm_cluster();
    command.args([
        "install",
        release,
        chart_dir().to_str().unwrap(),
        "--namespace",
        namespace,
        "--skip-crds",
    ]);
    command
}
