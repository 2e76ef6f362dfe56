//! Issue 13 point 5: the `baseline` and `restricted` profiles implement every
//! Pod Security Standards check, proven two ways.
//!
//! 1. Against the official fixtures of `k8s.io/pod-security-admission`
//!    v0.37.2 (fetched by `tests/pss/fixtures.sh`, pinned by version and
//!    hash): every pass fixture is admitted at its level and every fail
//!    fixture is denied by the check it was written for, both by the bare
//!    Pod Security checks and through the webhook's flow (defaulting patch,
//!    then validation), where a fail fixture may instead be repaired by the
//!    patch. Pure: no API server. Prints the per-check table that is in the
//!    README.
//! 2. Differentially against the API server's own Pod Security admission:
//!    the same Pods, created with `dryRun=All` in namespaces labelled
//!    `pod-security.kubernetes.io/enforce=<level>`, get the same verdict as
//!    our checks; every Pod our defaulting repaired is admitted by the API
//!    server too; the cases where the sandbox rules are stricter are listed
//!    with their reasons.
//!
//! Both judge as on this control plane (v1.37, `UserNamespacesSupport` on):
//! user namespaces supported, so `hostUsers: false` relaxes what upstream
//! relaxes; a third test checks that the operator's probe finds that out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::common::{TestNs, repo};
use sandbox_operator::admission::pss::{self, CHECKS, PodSecurityOptions};
use sandbox_operator::admission::{Policy, Profile, UserNamespaces, check_object, user_namespaces};

/// One official fixture.
struct Fixture {
    level: Profile,
    /// Expected to be admitted at `level`.
    pass: bool,
    /// The file name without `.yaml`, e.g. `capabilities_baseline2`.
    name: String,
    /// The check it was written for, as the upstream ID.
    check: &'static str,
    pod: Value,
}

fn level_name(level: Profile) -> &'static str {
    match level {
        Profile::Baseline => "baseline",
        Profile::Restricted => "restricted",
    }
}

/// The fixture directory, downloaded (once) through the Go module proxy.
fn fixtures_root() -> PathBuf {
    let script = repo().join("tests/pss/fixtures.sh");
    let out = std::process::Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The upstream check a fixture file is named after, replaced by its
/// restricted counterpart at restricted (as the upstream registry does).
fn check_for(file_stem: &str, level: Profile) -> &'static str {
    let prefix = file_stem.trim_end_matches(|c: char| c.is_ascii_digit());
    let named = CHECKS
        .iter()
        .find(|c| c.id.eq_ignore_ascii_case(prefix))
        .unwrap_or_else(|| panic!("fixture {file_stem} names no known check"));
    match level {
        Profile::Restricted => {
            CHECKS
                .iter()
                .find(|c| c.replaces == Some(named.id))
                .unwrap_or(named)
                .id
        }
        Profile::Baseline => named.id,
    }
}

fn load(root: &Path) -> Vec<Fixture> {
    let mut fixtures = Vec::new();
    for level in [Profile::Baseline, Profile::Restricted] {
        for (outcome, pass) in [("pass", true), ("fail", false)] {
            let dir = root.join(level_name(level)).join("v1.37").join(outcome);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
                .collect();
            files.sort();
            for file in files {
                let name = file.file_stem().unwrap().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(&file).unwrap();
                let pod: Value = serde_yaml::from_str(&text).unwrap();
                let check = if name.starts_with("base") {
                    "base"
                } else {
                    check_for(&name, level)
                };
                fixtures.push(Fixture {
                    level,
                    pass,
                    name,
                    check,
                    pod,
                });
            }
        }
    }
    fixtures
}

fn policy(level: Profile) -> Policy {
    Policy {
        profile: level,
        user_namespaces: UserNamespaces::Supported,
        ..Policy::default()
    }
}

/// The bare checks at `level`, as on this control plane.
fn options(level: Profile) -> PodSecurityOptions {
    PodSecurityOptions::new(level, UserNamespaces::Supported)
}

/// The fixture Pod as the pod template of a Sandbox.
fn as_sandbox(pod: &Value) -> Value {
    let metadata = &pod["metadata"];
    let mut template_metadata = serde_json::Map::new();
    for key in ["labels", "annotations"] {
        if let Some(value) = metadata.get(key) {
            template_metadata.insert(key.into(), value.clone());
        }
    }
    json!({"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "pss-fixture"},
        "spec": {"podTemplate": {"metadata": template_metadata, "spec": pod["spec"]}}})
}

/// What the webhook flow does with a fixture: (admitted, the Pod as patched
/// by the defaulting, every denial).
fn through_the_webhook(fixture: &Fixture) -> (bool, Value, Vec<String>) {
    let sandbox = as_sandbox(&fixture.pod);
    let report = check_object(&sandbox, &policy(fixture.level));
    let mut patched = sandbox.clone();
    json_patch::patch(&mut patched, &report.patch).unwrap();
    let template = &patched["spec"]["podTemplate"];
    let mut pod = fixture.pod.clone();
    pod["spec"] = template["spec"].clone();
    let denials = report
        .verdict
        .denials
        .iter()
        .map(ToString::to_string)
        .collect();
    (report.admitted(), pod, denials)
}

#[derive(Default)]
struct Row {
    pass: usize,
    pass_admitted: usize,
    fail: usize,
    fail_denied: usize,
    fail_repaired: usize,
}

#[test]
fn pss_fixtures_are_judged_right_at_their_level() {
    let fixtures = load(&fixtures_root());
    let mut table: BTreeMap<(&str, &str), Row> = BTreeMap::new();
    let mut wrong = Vec::new();
    for fixture in &fixtures {
        let level = level_name(fixture.level);
        let bare = pss::check_pod_object(options(fixture.level), &fixture.pod);
        let fired: Vec<&str> = bare.iter().filter_map(pss::check_of).collect();
        let (admitted, patched, denials) = through_the_webhook(fixture);
        let row = table.entry((level, fixture.check)).or_default();
        if fixture.pass {
            row.pass += 1;
            if bare.is_empty() && admitted {
                row.pass_admitted += 1;
            } else {
                wrong.push(format!(
                    "{level}/pass/{}: {bare:?} {denials:?}",
                    fixture.name
                ));
            }
            continue;
        }
        row.fail += 1;
        if !fired.contains(&fixture.check) {
            wrong.push(format!(
                "{level}/fail/{}: check {} did not fire (fired: {fired:?})",
                fixture.name, fixture.check
            ));
        } else if !admitted {
            row.fail_denied += 1;
        } else if pss::check_pod_object(options(fixture.level), &patched).is_empty() {
            // Repaired: the defaulted Pod passes every check of the level.
            row.fail_repaired += 1;
        } else {
            wrong.push(format!(
                "{level}/fail/{}: admitted unrepaired",
                fixture.name
            ));
        }
    }
    println!("| level | check | pass admitted | fail denied | fail repaired by defaulting |");
    println!("|---|---|---|---|---|");
    let (mut pass, mut fail) = ((0, 0), (0, 0, 0));
    for ((level, check), row) in &table {
        println!(
            "| {level} | {check} | {}/{} | {}/{} | {} |",
            row.pass_admitted, row.pass, row.fail_denied, row.fail, row.fail_repaired
        );
        pass = (pass.0 + row.pass_admitted, pass.1 + row.pass);
        fail = (
            fail.0 + row.fail_denied,
            fail.1 + row.fail_repaired,
            fail.2 + row.fail,
        );
    }
    println!(
        "pass fixtures admitted: {}/{}; fail fixtures denied: {}, repaired: {}, of {}",
        pass.0, pass.1, fail.0, fail.1, fail.2
    );
    assert!(
        wrong.is_empty(),
        "{} fixtures judged wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // 15 + 34 baseline, 23 + 76 restricted in v0.37.2.
    assert_eq!((pass.1, fail.2), (38, 110), "fixture count changed");
    for check in CHECKS {
        for level in [Profile::Baseline, Profile::Restricted] {
            if pss::applies(&check, level) {
                assert!(
                    table
                        .get(&(level_name(level), check.id))
                        .is_some_and(|row| row.fail > 0),
                    "no fail fixture exercised {} at {}",
                    check.id,
                    level_name(level)
                );
            }
        }
    }
}

/// The API server's verdict on one Pod.
#[derive(Debug, PartialEq)]
enum Served {
    Admitted,
    /// Refused by Pod Security admission.
    Forbidden(String),
    /// Refused before Pod Security looked at it (object validation).
    Invalid(String),
}

/// A namespace whose Pod Security admission enforces `level`.
async fn enforcing(level: Profile) -> TestNs {
    let ns = TestNs::new(&format!("pss-{}", level_name(level))).await;
    let label = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": level_name(level),
        "pod-security.kubernetes.io/enforce-version": "v1.37",
    }}});
    Api::<Namespace>::all(ns.client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label the namespace");
    ns
}

/// Creates `pod` with `dryRun=All` (nothing is stored or run).
async fn dry_run(pods: &Api<Pod>, name: &str, pod: &Value) -> Served {
    let mut pod = pod.clone();
    pod["metadata"]["name"] = json!(name.replace('_', "-"));
    let pod: Pod = serde_json::from_value(pod).expect("fixture is a Pod");
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match pods.create(&params, &pod).await {
        Ok(_) => Served::Admitted,
        Err(kube::Error::Api(status))
            if status.code == 403 && status.message.contains("PodSecurity") =>
        {
            Served::Forbidden(status.message)
        }
        Err(kube::Error::Api(status)) => Served::Invalid(status.message),
        Err(other) => panic!("{name}: {other}"),
    }
}

/// Pods outside the fixtures that Pod Security admits and the sandbox rules
/// refuse: (name, level, pod spec).
fn sandbox_rule_cases() -> Vec<(&'static str, Profile, Value)> {
    let container = json!({"name": "c", "image": "registry.k8s.io/pause:3.10"});
    let with = |extra: Value| {
        let mut spec = json!({"containers": [container.clone()]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    };
    vec![
        (
            "nodename",
            Profile::Baseline,
            with(json!({"nodeName": "kwok-node-0"})),
        ),
        (
            "nfs",
            Profile::Baseline,
            with(json!({"volumes": [{"name": "n", "nfs": {"server": "10.0.0.1", "path": "/"}}]})),
        ),
        (
            "serviceaccount",
            Profile::Baseline,
            with(json!({"serviceAccountName": "builder"})),
        ),
        (
            "toleration",
            Profile::Baseline,
            with(json!({"tolerations": [{"operator": "Exists"}]})),
        ),
        (
            "ephemeral-storage",
            Profile::Baseline,
            json!({"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                "resources": {"limits": {"ephemeral-storage": "10Ti"}}}]}),
        ),
        ("automount", Profile::Restricted, {
            let mut spec = with(json!({"automountServiceAccountToken": true,
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}}));
            spec["containers"][0]["securityContext"] =
                json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
            spec
        }),
    ]
}

#[tokio::test]
async fn pss_verdicts_match_the_api_servers_pod_security_admission() {
    let fixtures = load(&fixtures_root());
    let baseline = enforcing(Profile::Baseline).await;
    let restricted = enforcing(Profile::Restricted).await;
    let pods = |level: Profile| -> Api<Pod> {
        match level {
            Profile::Baseline => baseline.api(),
            Profile::Restricted => restricted.api(),
        }
    };
    let (mut same, mut invalid, mut differ, mut repaired) = (0, Vec::new(), Vec::new(), 0);
    for fixture in &fixtures {
        let label = format!(
            "{}/{}/{}",
            level_name(fixture.level),
            if fixture.pass { "pass" } else { "fail" },
            fixture.name
        );
        let served = dry_run(&pods(fixture.level), &fixture.name, &fixture.pod).await;
        let ours = pss::check_pod_object(options(fixture.level), &fixture.pod);
        match (&served, ours.is_empty()) {
            (Served::Invalid(message), _) => invalid.push(format!("{label}: {message}")),
            (Served::Admitted, true) | (Served::Forbidden(_), false) => same += 1,
            _ => differ.push(format!("{label}: API server {served:?}, ours {ours:?}")),
        }
        let (admitted, patched, _) = through_the_webhook(fixture);
        if !fixture.pass && admitted {
            let name = format!("{}-repaired", fixture.name);
            let served = dry_run(&pods(fixture.level), &name, &patched).await;
            assert_eq!(
                served,
                Served::Admitted,
                "{label}: our repair is not admitted by the API server"
            );
            repaired += 1;
        }
    }
    println!(
        "fixtures with the same verdict as the API server: {same}; repaired and admitted by it: {repaired}"
    );
    for case in &invalid {
        println!("not comparable (refused by object validation before Pod Security): {case}");
    }
    assert!(differ.is_empty(), "verdicts differ:\n{}", differ.join("\n"));
    assert!(
        same >= 140,
        "too few comparable fixtures: {same} (invalid: {})",
        invalid.len()
    );

    // Where the sandbox rules are stricter than Pod Security, with the reason.
    // (The service account exists, so only the allow-list refuses it.)
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "builder"}})).unwrap();
    baseline
        .api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .expect("create the service account");
    for (name, level, spec) in sandbox_rule_cases() {
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec});
        let served = dry_run(&pods(level), name, &pod).await;
        assert_eq!(
            served,
            Served::Admitted,
            "{name}: Pod Security itself refuses it"
        );
        let fixture = Fixture {
            level,
            pass: true,
            name: name.into(),
            check: "sandbox",
            pod,
        };
        let (admitted, _, denials) = through_the_webhook(&fixture);
        assert!(!admitted, "{name}: the sandbox rules admit it");
        println!(
            "stricter than Pod Security {}: {name}: {}",
            level_name(level),
            denials.join("; ")
        );
    }
}

/// The operator's probe (`--user-namespaces auto`) finds user namespaces
/// supported on this control plane: the API server keeps `hostUsers: false`
/// on a dry-run create, and v1.37's Pod Security relaxes for it.
#[tokio::test]
async fn the_user_namespace_probe_finds_them_supported_here() {
    let ns = TestNs::new("userns-probe").await;
    let finding = user_namespaces::probe(&ns.client, &ns.name)
        .await
        .expect("the dry-run Pod create and the version request succeed");
    assert_eq!(
        finding.fact,
        UserNamespaces::Supported,
        "{}",
        finding.reason
    );
}
