//! The offline check behind `sandbox-operator policy check FILE.yaml`: runs
//! manifests through the same defaulting and validation as the webhooks,
//! without a cluster.
//!
//! Each object is mutated as on CREATE, the patch is applied, and the result
//! is validated, which is exactly what the API server does with the two
//! webhooks installed. Objects of other kinds are reported as skipped;
//! `kind: List` documents are unpacked.
//!
//! Offline there is no cluster to ask whether user namespaces are supported
//! (see [`super::user_namespaces`]): `--user-namespaces` says, and its
//! default, `disabled`, judges as the operator does before it knows, so a
//! manifest that passes passes on every cluster the chart supports (an
//! `enabled` default would pass root templates that a cluster dropping
//! `hostUsers` runs as root). A template that sets `hostUsers: false` gets a
//! note saying which way it was judged.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use json_patch::PatchOperation;
use kube::core::admission::Operation;
use serde::Deserialize;
use serde_json::Value;

use super::field::{Denial, FieldPath};
use super::user_namespaces::UserNamespaces;
use super::{Policy, SandboxKind, Verdict, mutate, validate};

/// What admission would do with one object.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// `kind` as written in the manifest.
    pub kind: String,
    /// `metadata.name`, or `generateName` followed by `*`.
    pub name: String,
    /// Whether the kind is one admission handles; other objects are skipped.
    pub handled: bool,
    /// The defaulting patch (empty when nothing needs defaulting).
    pub patch: Vec<PatchOperation>,
    /// The validation outcome of the patched object.
    pub verdict: Verdict,
    /// What the reader should know about how it was judged (neither a
    /// denial nor a warning).
    pub notes: Vec<String>,
}

impl CheckReport {
    /// Whether the object would be admitted.
    pub fn admitted(&self) -> bool {
        self.verdict.allowed()
    }
}

/// Why a manifest file could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// One YAML document (counted from 1) is not valid YAML.
    #[error("document {document} is not valid YAML")]
    Yaml {
        /// The document's position in the stream, from 1.
        document: usize,
        /// The parser's message.
        #[source]
        source: serde_yaml::Error,
    },
}

/// Checks every object of a multi-document YAML stream against `policy`.
pub fn check_objects(yaml_text: &str, policy: &Policy) -> Result<Vec<CheckReport>, CheckError> {
    let mut reports = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml_text).enumerate() {
        let object = Value::deserialize(document).map_err(|source| CheckError::Yaml {
            document: index + 1,
            source,
        })?;
        collect(object, policy, &mut reports);
    }
    Ok(reports)
}

fn collect(object: Value, policy: &Policy, reports: &mut Vec<CheckReport>) {
    if object.is_null() {
        return;
    }
    if object.get("kind").and_then(Value::as_str) == Some("List")
        && let Some(Value::Array(items)) = object.get("items")
    {
        for item in items {
            collect(item.clone(), policy, reports);
        }
        return;
    }
    reports.push(check_object(&object, policy));
}

/// Mutates `object` as on CREATE, applies the patch, and validates the result.
pub fn check_object(object: &Value, policy: &Policy) -> CheckReport {
    let kind_name = text(object.get("kind"));
    let metadata = object.get("metadata");
    let name = match text(metadata.and_then(|m| m.get("name"))) {
        "" => match text(metadata.and_then(|m| m.get("generateName"))) {
            "" => "<unnamed>".to_owned(),
            prefix => format!("{prefix}*"),
        },
        name => name.to_owned(),
    };
    let mut report = CheckReport {
        kind: if kind_name.is_empty() {
            "<no kind>".to_owned()
        } else {
            kind_name.to_owned()
        },
        name,
        handled: false,
        patch: Vec::new(),
        verdict: Verdict::default(),
        notes: Vec::new(),
    };
    let Some(kind) = SandboxKind::from_api_version_kind(text(object.get("apiVersion")), kind_name)
    else {
        return report;
    };
    report.handled = true;
    report.notes.extend(user_namespace_note(object, policy));
    match mutate(
        kind,
        &Operation::Create,
        object,
        None,
        policy,
        jiff::Timestamp::now(),
    ) {
        Err(denial) => report.verdict.denials.push(denial),
        Ok(patch) => {
            let mut patched = object.clone();
            match json_patch::patch(&mut patched, &patch) {
                Ok(()) => {
                    report.verdict = validate(kind, &Operation::Create, &patched, None, policy);
                }
                Err(error) => report.verdict.denials.push(Denial::new(
                    &FieldPath::root(),
                    format!("the defaulting patch does not apply: {error}"),
                )),
            }
            report.patch = patch;
        }
    }
    report
}

/// For a pod template that sets `hostUsers: false`: which way it was judged
/// (whether that relaxes Pod Security depends on the cluster).
fn user_namespace_note(object: &Value, policy: &Policy) -> Option<String> {
    let host_users = object.pointer("/spec/podTemplate/spec/hostUsers");
    if host_users != Some(&Value::Bool(false)) {
        return None;
    }
    let path = "spec.podTemplate.spec.hostUsers";
    Some(if policy.user_namespaces.supported() {
        format!(
            "{path}: false was judged as on a cluster that supports user namespaces \
             (--user-namespaces enabled); where the API server drops hostUsers \
             (UserNamespacesSupport off, the default before Kubernetes 1.33) root-user \
             and procMount settings it allowed are denied"
        )
    } else {
        format!(
            "{path}: false relaxed no Pod Security check: user namespaces count as not supported \
             (--user-namespaces disabled, the default offline); pass --user-namespaces enabled \
             to judge as on a cluster that supports them (Kubernetes 1.35+ by default)"
        )
    })
}

/// Checks manifest files against a policy file (or the built-in policy) and
/// prints, per object, `KIND/NAME: patch: <json>`, then each denial,
/// warning and note, then the decision. `user_namespaces` is what to assume
/// of the cluster (see the module doc). Returns whether every object was
/// admitted.
pub fn run_policy_check(
    files: &[PathBuf],
    policy: Option<&Path>,
    user_namespaces: UserNamespaces,
) -> anyhow::Result<bool> {
    let mut policy = match policy {
        Some(path) => Policy::from_file(path)
            .with_context(|| format!("cannot load the policy {}", path.display()))?,
        None => Policy::default(),
    };
    policy.user_namespaces = user_namespaces;
    let mut all_admitted = true;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let reports =
            check_objects(&text, &policy).with_context(|| format!("in {}", file.display()))?;
        let mut out = Vec::new();
        if files.len() > 1 {
            writeln!(out, "# {}", file.display())?;
        }
        all_admitted &= write_reports(&mut out, &reports)?;
        print!("{}", String::from_utf8_lossy(&out));
    }
    Ok(all_admitted)
}

/// A string field, or `""`.
fn text(value: Option<&Value>) -> &str {
    value.and_then(Value::as_str).unwrap_or_default()
}

/// Prints reports in the `policy check` format; returns whether all were admitted.
fn write_reports(out: &mut impl Write, reports: &[CheckReport]) -> std::io::Result<bool> {
    let mut all_admitted = true;
    for report in reports {
        let label = format!("{}/{}", report.kind, report.name);
        if !report.handled {
            writeln!(out, "{label}: skipped: not a kind sandbox-operator admits")?;
            continue;
        }
        let patch = serde_json::to_string(&report.patch).map_err(std::io::Error::other)?;
        writeln!(out, "{label}: patch: {patch}")?;
        for denial in &report.verdict.denials {
            writeln!(out, "{label}: denied: {denial}")?;
        }
        for warning in &report.verdict.warnings {
            writeln!(out, "{label}: warning: {warning}")?;
        }
        for note in &report.notes {
            writeln!(out, "{label}: note: {note}")?;
        }
        if report.admitted() {
            writeln!(out, "{label}: admitted")?;
        } else {
            all_admitted = false;
        }
    }
    Ok(all_admitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(yaml: &str, policy: &Policy) -> (String, bool) {
        let reports = check_objects(yaml, policy).unwrap();
        let mut out = Vec::new();
        let admitted = write_reports(&mut out, &reports).unwrap();
        (String::from_utf8(out).unwrap(), admitted)
    }

    #[test]
    fn the_seed_examples_are_admitted_by_the_default_policy() {
        let manifests = [
            include_str!("../../examples/aio-sandbox.yaml"),
            include_str!("../../examples/template.yaml"),
            include_str!("../../examples/warmpool.yaml"),
        ]
        .join("\n---\n");
        let (text, admitted) = printed(&manifests, &Policy::default());
        assert!(admitted, "{text}");
        assert_eq!(
            text,
            "Sandbox/aio-sandbox-example: patch: [\
             {\"op\":\"add\",\"path\":\"/spec/podTemplate/spec/automountServiceAccountToken\",\"value\":false},\
             {\"op\":\"add\",\"path\":\"/spec/podTemplate/spec/securityContext\",\"value\":{\"seccompProfile\":{\"type\":\"RuntimeDefault\"}}}]\n\
             Sandbox/aio-sandbox-example: admitted\n\
             SandboxTemplate/aio: patch: [\
             {\"op\":\"add\",\"path\":\"/spec/podTemplate/spec/automountServiceAccountToken\",\"value\":false},\
             {\"op\":\"add\",\"path\":\"/spec/podTemplate/spec/securityContext\",\"value\":{\"seccompProfile\":{\"type\":\"RuntimeDefault\"}}}]\n\
             SandboxTemplate/aio: admitted\n\
             SandboxWarmPool/aio-pool: patch: []\n\
             SandboxWarmPool/aio-pool: admitted\n"
        );
    }

    #[test]
    fn claims_get_their_stamp_and_generated_names_are_shown() {
        let reports = check_objects(
            include_str!("../../examples/claim.yaml"),
            &Policy::default(),
        )
        .unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].name, "my-sandbox-*");
        assert!(reports[0].admitted());
        assert_eq!(reports[0].patch[0].path().as_str(), "/metadata/annotations");
    }

    #[test]
    fn denials_warnings_and_skips_are_printed() {
        let yaml = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings}
- apiVersion: agents.x-k8s.io/v1alpha1
  kind: Sandbox
  metadata: {name: big}
  spec:
    podTemplate:
      spec:
        containers:
        - name: c
          image: busybox
          resources: {limits: {memory: 128Gi, cpu: 1}}
---
---
apiVersion: extensions.agents.x-k8s.io/v1alpha1
kind: SandboxWarmPool
metadata: {name: huge}
spec: {replicas: 5000, sandboxTemplateRef: {name: aio}}
";
        let (text, admitted) = printed(yaml, &Policy::default());
        assert!(!admitted);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ConfigMap/settings: skipped: not a kind sandbox-operator admits"
        );
        assert!(
            lines[1].starts_with("Sandbox/big: patch: ["),
            "{}",
            lines[1]
        );
        assert_eq!(
            &lines[2..],
            [
                "Sandbox/big: denied: spec.podTemplate.spec.containers[0].resources.limits.memory: 128Gi exceeds the maximum 64Gi",
                "Sandbox/big: warning: spec.podTemplate.spec.containers[0].image: \"busybox\" has no tag, so it means latest; pin a version or digest",
                "SandboxWarmPool/huge: patch: []",
                "SandboxWarmPool/huge: denied: spec.replicas: 5000 exceeds the maximum 1000",
            ]
        );
    }

    #[test]
    fn malformed_objects_and_yaml_are_reported() {
        let reports = check_objects(
            "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: x}\nspec: {podTemplate: 3}\n",
            &Policy::default(),
        )
        .unwrap();
        assert_eq!(
            reports[0].verdict.message(),
            "spec.podTemplate: must be an object"
        );

        let error =
            check_objects("kind: Sandbox\n---\nkind: [unclosed\n", &Policy::default()).unwrap_err();
        assert_eq!(error.to_string(), "document 2 is not valid YAML");
    }

    #[test]
    fn run_policy_check_reads_files_and_a_policy() {
        let directory =
            std::env::temp_dir().join(format!("sandbox-operator-check-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let policy = directory.join("policy.yaml");
        std::fs::write(&policy, "ceilings: {memory: 4Gi}\n").unwrap();
        let aio = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/aio-sandbox.yaml"
        ));
        let offline = UserNamespaces::Unsupported;
        assert!(run_policy_check(std::slice::from_ref(&aio), None, offline).unwrap());
        assert!(!run_policy_check(std::slice::from_ref(&aio), Some(&policy), offline).unwrap());
        std::fs::write(&policy, "ceilings: {memory: 4Qi}\n").unwrap();
        let error =
            run_policy_check(std::slice::from_ref(&aio), Some(&policy), offline).unwrap_err();
        assert!(
            format!("{error:#}").contains("ceilings.memory: \"4Qi\" is not a Kubernetes quantity"),
            "{error:#}"
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn host_users_false_is_judged_as_the_flag_says_and_noted() {
        let yaml = "\
apiVersion: agents.x-k8s.io/v1alpha1
kind: Sandbox
metadata: {name: root}
spec:
  podTemplate:
    spec:
      hostUsers: false
      securityContext: {runAsUser: 0}
      containers: [{name: c, image: a:1}]
";
        let restricted = Policy::from_yaml("profile: restricted").unwrap();
        let offline = Policy {
            user_namespaces: UserNamespaces::Unsupported,
            ..restricted.clone()
        };
        let (text, admitted) = printed(yaml, &offline);
        assert!(!admitted, "{text}");
        assert!(
            text.contains(
                "Sandbox/root: denied: spec.podTemplate.spec.securityContext.runAsUser: 0 (root) is not allowed (hostUsers: false would allow it, but user namespaces are not known to be supported on this cluster; if they are, set --user-namespaces=enabled) (Pod Security restricted: runAsUser)"
            ),
            "{text}"
        );
        assert!(
            text.contains("Sandbox/root: note: spec.podTemplate.spec.hostUsers: false relaxed no Pod Security check"),
            "{text}"
        );
        let supported = Policy {
            user_namespaces: UserNamespaces::Supported,
            ..restricted
        };
        let (text, _) = printed(yaml, &supported);
        assert!(text.contains("Sandbox/root: note: spec.podTemplate.spec.hostUsers: false was judged as on a cluster that supports user namespaces"), "{text}");
    }
}
