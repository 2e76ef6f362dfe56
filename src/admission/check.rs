//! The offline check behind `sandbox-operator policy check FILE.yaml`: runs
//! manifests through the same defaulting and validation as the webhooks,
//! without a cluster.
//!
//! Each object is mutated as on CREATE, the patch is applied, and the result
//! is validated, which is exactly what the API server does with the two
//! webhooks installed. Objects of other kinds are reported as skipped;
//! `kind: List` documents are unpacked.
//!
//! What the API server would refuse before admission is refused here too,
//! rather than skipped (a skip exits 0, so a typo would pass a CI gate
//! unchecked): an object that comes close to one of the four kinds without
//! being exactly one served (its `kind` is ours but for case, or its group
//! is ours, while the `apiVersion`/`kind` pair is not a served one: a
//! SandboxTemplate under `agents.x-k8s.io`, `Sandboxtemplate`, version
//! `v9`) is denied naming `apiVersion` or `kind` and the expected value; a
//! document that is not a mapping (a string, a list) is denied; and an
//! input with no document at all (an empty file, only comments) is an error
//! saying that no objects were found (exit code 2, as for input that is not
//! YAML). A `kind: List` with no items (what `kubectl get -o yaml` prints
//! when nothing matches) says so, and passes.
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
    /// `kind` as written in the manifest; empty for a document that is not
    /// a mapping.
    pub kind: String,
    /// `metadata.name`, or `generateName` followed by `*`; for a document
    /// that is not a mapping, where it is (`document 2`, `document 2
    /// items[0]`).
    pub name: String,
    /// Whether admission has a say: the object is one of the four kinds,
    /// comes close to one (see [`check_object`]), or is not a mapping.
    /// Other objects are skipped.
    pub handled: bool,
    /// Whether the object went through defaulting and validation: false
    /// when skipped, and when refused before (not a mapping, or not exactly
    /// a served `apiVersion` and `kind`).
    pub judged: bool,
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

    /// How the object is named in the output: `KIND/NAME`, or where the
    /// document is when it is not a mapping.
    pub fn label(&self) -> String {
        if self.kind.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.kind, self.name)
        }
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
    /// The stream holds no document but empty ones: more likely a wrong path
    /// or a failed redirect than a manifest, so it is not passed as one.
    #[error("no objects found: the input is empty (or holds only comments and empty documents)")]
    Empty,
}

/// Checks every object of a multi-document YAML stream against `policy`.
/// Empty documents are passed over; an input with none but those is
/// [`CheckError::Empty`]. A `kind: List` with no items gives no report.
pub fn check_objects(yaml_text: &str, policy: &Policy) -> Result<Vec<CheckReport>, CheckError> {
    let mut reports = Vec::new();
    let mut documents = 0;
    for (index, document) in serde_yaml::Deserializer::from_str(yaml_text).enumerate() {
        let object = Value::deserialize(document).map_err(|source| CheckError::Yaml {
            document: index + 1,
            source,
        })?;
        if object.is_null() {
            continue;
        }
        documents += 1;
        let place = format!("document {}", index + 1);
        collect(object, policy, &place, &mut reports);
    }
    if documents == 0 {
        return Err(CheckError::Empty);
    }
    Ok(reports)
}

/// Checks `object` (found at `place`, for a document that is not a
/// mapping), unpacking a `kind: List` and a typed list (`SandboxList`, as
/// the API server and client libraries print one), whose items carry no
/// `apiVersion` and `kind` of their own: they get the list's.
fn collect(object: Value, policy: &Policy, place: &str, reports: &mut Vec<CheckReport>) {
    let list_kind = object.get("kind").and_then(Value::as_str);
    if let Some(list_kind) = list_kind.filter(|kind| kind.ends_with("List"))
        && let Some(Value::Array(items)) = object.get("items")
    {
        let item_kind = list_kind
            .strip_suffix("List")
            .filter(|kind| !kind.is_empty());
        for (index, item) in items.iter().enumerate() {
            let mut item = item.clone();
            if let (Some(kind), Some(fields)) = (item_kind, item.as_object_mut()) {
                fields
                    .entry("kind")
                    .or_insert_with(|| Value::String(kind.to_owned()));
                if let Some(api_version) = object.get("apiVersion") {
                    fields
                        .entry("apiVersion")
                        .or_insert_with(|| api_version.clone());
                }
            }
            collect(item, policy, &format!("{place} items[{index}]"), reports);
        }
        return;
    }
    let mut report = check_object(&object, policy);
    if !object.is_object() {
        place.clone_into(&mut report.name);
    }
    reports.push(report);
}

/// Mutates `object` as on CREATE, applies the patch, and validates the result.
///
/// Only an object whose `apiVersion` and `kind` are exactly those of one of
/// the four served kinds is judged that way. One that comes close (its
/// `kind` is one of ours ignoring case, or its `apiVersion`'s group is one
/// of ours) is denied naming `apiVersion` or `kind` and the value expected:
/// the API server would refuse it, or it is a typo of one of ours. One that
/// is not a mapping is denied. Any other object is skipped.
pub fn check_object(object: &Value, policy: &Policy) -> CheckReport {
    let Some(fields) = object.as_object() else {
        return not_a_mapping(object);
    };
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
        judged: false,
        patch: Vec::new(),
        verdict: Verdict::default(),
        notes: Vec::new(),
    };
    let api_version = text(object.get("apiVersion"));
    let Some(kind) = SandboxKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == kind_name && served_api_version(*kind) == api_version)
    else {
        report.verdict.denials = near_miss(fields);
        report.handled = !report.verdict.denials.is_empty();
        return report;
    };
    report.handled = true;
    report.judged = true;
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

/// The report on a document that is not a mapping (a string, a list, a
/// number): denied at its root. [`collect`] names where it is.
fn not_a_mapping(object: &Value) -> CheckReport {
    let what = match object {
        Value::Array(_) => "a list".to_owned(),
        Value::String(text) => {
            let mut shown: String = text.chars().take(40).collect();
            if shown.len() < text.len() {
                shown.push_str("...");
            }
            format!("a string ({shown:?})")
        }
        Value::Number(number) => format!("a number ({number})"),
        Value::Bool(value) => format!("a boolean ({value})"),
        Value::Null => "empty".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    };
    let hint = if object.is_array() {
        "; put each object in a document of its own (separated by ---) or in the items of a kind: List"
    } else {
        ""
    };
    let mut verdict = Verdict::default();
    verdict.denials.push(Denial::new(
        &FieldPath::root(),
        format!(
            "the document is {what}, not a mapping: a manifest is an object with apiVersion and \
             kind{hint}"
        ),
    ));
    CheckReport {
        kind: String::new(),
        name: "<not a mapping>".to_owned(),
        handled: true,
        judged: false,
        patch: Vec::new(),
        verdict,
        notes: Vec::new(),
    }
}

/// The `apiVersion` `kind` is served at: its CRD's group and its one version.
fn served_api_version(kind: SandboxKind) -> String {
    use kube::Resource as _;
    match kind {
        SandboxKind::Sandbox => crate::api::Sandbox::api_version(&()),
        SandboxKind::SandboxTemplate => crate::api::SandboxTemplate::api_version(&()),
        SandboxKind::SandboxClaim => crate::api::SandboxClaim::api_version(&()),
        SandboxKind::SandboxWarmPool => crate::api::SandboxWarmPool::api_version(&()),
    }
    .into_owned()
}

/// Why an object that is not exactly one of the four served kinds comes
/// close to one, naming `apiVersion` and `kind` and what each should be;
/// empty when it comes nowhere near (its kind is not ours in any case and
/// its group is not ours: a ConfigMap, a Deployment). Close: the kind is
/// one of ours ignoring case, or the group (before the `/` of
/// `apiVersion`, or all of it without one) is one of ours ignoring case.
fn near_miss(object: &serde_json::Map<String, Value>) -> Vec<Denial> {
    let root = FieldPath::root();
    let (api_version, kind) = (object.get("apiVersion"), object.get("kind"));
    let (api_text, kind_text) = (text(api_version), text(kind));
    // `v1` is the core group's version; `agents.x-k8s.io` alone (the
    // version left out) is read as a group.
    let group = match api_text.split_once('/') {
        Some((group, _)) => group,
        None if api_text.contains('.') => api_text,
        None => "",
    };
    let mut denials = Vec::new();
    // A kind of ours ignoring case is a near miss unless its group is
    // clearly another project's (`example.com/v1 Sandbox` is theirs): no
    // group, one of ours in any case, or one naming `agents` (a typo of
    // ours) counts (found by the second read: a mixed manifest's foreign
    // Sandbox failed the check).
    let group_could_be_ours = group.is_empty()
        || group.to_ascii_lowercase().contains("agents")
        || SandboxKind::ALL
            .into_iter()
            .any(|ours| ours.group().eq_ignore_ascii_case(group));
    let by_kind = SandboxKind::ALL
        .into_iter()
        .find(|ours| ours.as_str().eq_ignore_ascii_case(kind_text))
        .filter(|_| group_could_be_ours);
    let in_group: Vec<SandboxKind> = SandboxKind::ALL
        .into_iter()
        .filter(|ours| ours.group().eq_ignore_ascii_case(group))
        .collect();
    let expected = match (by_kind, in_group.first()) {
        (Some(ours), _) => {
            if kind_text != ours.as_str() {
                denials.push(Denial::new(
                    &root.key("kind"),
                    format!(
                        "{kind_text:?} is not a served kind: expected {} (kinds are \
                         case-sensitive)",
                        ours.as_str()
                    ),
                ));
            }
            ours
        }
        (None, Some(&first)) => {
            let names: Vec<&str> = in_group.iter().map(|ours| ours.as_str()).collect();
            let expected = match names.split_last() {
                Some((last, [])) => (*last).to_owned(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            let written = match kind {
                None | Some(Value::Null) => "is missing".to_owned(),
                Some(Value::String(kind)) => format!("{kind:?} is not a kind of {group}"),
                Some(other) => format!("{other} is not a string"),
            };
            denials.push(Denial::new(
                &root.key("kind"),
                format!("{written}: expected {expected}"),
            ));
            first
        }
        (None, None) => return denials,
    };
    let served = served_api_version(expected);
    if api_text != served {
        let written = match api_version {
            None | Some(Value::Null) => "is missing".to_owned(),
            Some(Value::String(api_version)) if by_kind.is_some() => {
                format!("{api_version:?} does not serve {}", expected.as_str())
            }
            Some(Value::String(api_version)) => format!("{api_version:?} is not served"),
            Some(other) => format!("{other} is not a string"),
        };
        denials.push(Denial::new(
            &root.key("apiVersion"),
            format!("{written}: expected {served}"),
        ));
    }
    denials
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
        all_admitted &= write_input(&mut out, &file.display().to_string(), &reports)?;
        print!("{}", String::from_utf8_lossy(&out));
    }
    Ok(all_admitted)
}

/// A string field, or `""`.
fn text(value: Option<&Value>) -> &str {
    value.and_then(Value::as_str).unwrap_or_default()
}

/// Prints what one input (`source`, a file name) held in the `policy check`
/// format; returns whether every object was admitted. An input whose Lists
/// have no items (what `kubectl get -o yaml` prints when nothing matches)
/// passes, saying no objects were found.
fn write_input(
    out: &mut impl Write,
    source: &str,
    reports: &[CheckReport],
) -> std::io::Result<bool> {
    if reports.is_empty() {
        writeln!(
            out,
            "{source}: no objects found: every kind: List in it has no items"
        )?;
        return Ok(true);
    }
    write_reports(out, reports)
}

/// Prints reports in the `policy check` format; returns whether all were admitted.
fn write_reports(out: &mut impl Write, reports: &[CheckReport]) -> std::io::Result<bool> {
    let mut all_admitted = true;
    for report in reports {
        let label = report.label();
        if !report.handled {
            writeln!(out, "{label}: skipped: not a kind sandbox-operator admits")?;
            continue;
        }
        if report.judged {
            let patch = serde_json::to_string(&report.patch).map_err(std::io::Error::other)?;
            writeln!(out, "{label}: patch: {patch}")?;
        }
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
        let admitted = write_input(&mut out, "input.yaml", &reports).unwrap();
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

    /// A template with a pod template the default policy admits, under
    /// `api_version` and `kind`.
    fn template(api_version: &str, kind: &str, name: &str) -> String {
        format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: {name}}}\n\
             spec: {{podTemplate: {{spec: {{containers: [{{name: c, image: \"busybox:1.36\", \
             resources: {{limits: {{cpu: 1, memory: 1Gi}}}}}}]}}}}}}\n"
        )
    }

    /// Objects that come close to one of the four kinds without being one
    /// served were skipped, and the check exited 0 (found by review): now
    /// each is denied naming `apiVersion` or `kind` and the expected value.
    /// Unrelated kinds are still skipped.
    #[test]
    fn near_misses_of_our_kinds_are_denied_naming_api_version_and_kind() {
        let documents = [
            template(
                "extensions.agents.x-k8s.io/v1alpha1",
                "SandboxTemplate",
                "good",
            ),
            template("agents.x-k8s.io/v1alpha1", "SandboxTemplate", "wrong-group"),
            template(
                "extensions.agents.x-k8s.io/v1alpha1",
                "Sandboxtemplate",
                "wrong-case",
            ),
            template(
                "extensions.agents.x-k8s.io/v9",
                "SandboxTemplate",
                "wrong-version",
            ),
            template("v1", "sandbox", "both"),
            template(
                "extensions.agents.x-k8s.io/v1alpha1",
                "SandboxFoo",
                "unknown-kind",
            ),
            "apiVersion: agents.x-k8s.io/v1alpha1\nmetadata: {name: no-kind}\n".to_owned(),
            "kind: SandboxClaim\nmetadata: {name: no-version}\n".to_owned(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n".to_owned(),
            "apiVersion: example.com/v1\nkind: SandboxPolicy\nmetadata: {name: other}\n".to_owned(),
            // Another project's kind of the same name is theirs.
            "apiVersion: example.com/v1\nkind: Sandbox\nmetadata: {name: theirs}\n".to_owned(),
            // A typed list, as the API server prints one: its items get
            // the list's apiVersion and kind.
            "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxTemplateList\n\
             items: [{metadata: {name: listed}, spec: {podTemplate: {spec: {containers: [{name: c, \
             image: \"busybox:1.36\", resources: {limits: {cpu: 1, memory: 1Gi}}}]}}}}]\n"
                .to_owned(),
        ];
        let (text, admitted) = printed(&documents.join("---\n"), &Policy::default());
        assert!(!admitted, "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("SandboxTemplate/good: patch: ["),
            "{text}"
        );
        assert_eq!(
            &lines[1..13],
            [
                "SandboxTemplate/good: admitted",
                "SandboxTemplate/wrong-group: denied: apiVersion: \"agents.x-k8s.io/v1alpha1\" does not serve SandboxTemplate: expected extensions.agents.x-k8s.io/v1alpha1",
                "Sandboxtemplate/wrong-case: denied: kind: \"Sandboxtemplate\" is not a served kind: expected SandboxTemplate (kinds are case-sensitive)",
                "SandboxTemplate/wrong-version: denied: apiVersion: \"extensions.agents.x-k8s.io/v9\" does not serve SandboxTemplate: expected extensions.agents.x-k8s.io/v1alpha1",
                "sandbox/both: denied: kind: \"sandbox\" is not a served kind: expected Sandbox (kinds are case-sensitive)",
                "sandbox/both: denied: apiVersion: \"v1\" does not serve Sandbox: expected agents.x-k8s.io/v1alpha1",
                "SandboxFoo/unknown-kind: denied: kind: \"SandboxFoo\" is not a kind of extensions.agents.x-k8s.io: expected SandboxTemplate, SandboxClaim or SandboxWarmPool",
                "<no kind>/no-kind: denied: kind: is missing: expected Sandbox",
                "SandboxClaim/no-version: denied: apiVersion: is missing: expected extensions.agents.x-k8s.io/v1alpha1",
                "ConfigMap/settings: skipped: not a kind sandbox-operator admits",
                "SandboxPolicy/other: skipped: not a kind sandbox-operator admits",
                "Sandbox/theirs: skipped: not a kind sandbox-operator admits",
            ]
        );
        assert!(
            lines[13].starts_with("SandboxTemplate/listed: patch: [")
                && lines[14..] == ["SandboxTemplate/listed: admitted"],
            "{text}"
        );
        // Through the library too: denied, never judged (no patch).
        let report = check_object(
            &serde_yaml::from_str(&documents[3]).unwrap(),
            &Policy::default(),
        );
        assert!(report.handled && !report.judged && !report.admitted());
        assert!(report.patch.is_empty());
    }

    /// A document that is a string or a list was skipped (found by review):
    /// now it is denied, named by where it is.
    #[test]
    fn documents_that_are_not_mappings_are_denied() {
        let yaml = "\
apiVersion SandboxTemplate
---
- apiVersion: agents.x-k8s.io/v1alpha1
  kind: Sandbox
---
42
---
apiVersion: v1
kind: List
items:
- just text
-
";
        let (text, admitted) = printed(yaml, &Policy::default());
        assert!(!admitted, "{text}");
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "document 1: denied: the document is a string (\"apiVersion SandboxTemplate\"), not a mapping: a manifest is an object with apiVersion and kind",
                "document 2: denied: the document is a list, not a mapping: a manifest is an object with apiVersion and kind; put each object in a document of its own (separated by ---) or in the items of a kind: List",
                "document 3: denied: the document is a number (42), not a mapping: a manifest is an object with apiVersion and kind",
                "document 4 items[0]: denied: the document is a string (\"just text\"), not a mapping: a manifest is an object with apiVersion and kind",
                "document 4 items[1]: denied: the document is empty, not a mapping: a manifest is an object with apiVersion and kind",
            ]
        );
    }

    /// An empty input printed nothing and passed (found by review): it is
    /// now an error saying no objects were found (exit code 2, as for input
    /// that is not YAML). An empty `kind: List` (what `kubectl get -o yaml`
    /// prints when nothing matches) says so and passes.
    #[test]
    fn an_empty_input_says_no_objects_were_found_and_fails() {
        for empty in ["", "\n", "# only a comment\n", "---\n---\n", "--- ~\n"] {
            let error = check_objects(empty, &Policy::default()).unwrap_err();
            assert_eq!(
                error.to_string(),
                "no objects found: the input is empty (or holds only comments and empty \
                 documents)",
                "{empty:?}"
            );
        }
        let (text, admitted) = printed(
            "apiVersion: v1\nkind: List\nitems: []\n",
            &Policy::default(),
        );
        assert!(admitted, "{text}");
        assert_eq!(
            text,
            "input.yaml: no objects found: every kind: List in it has no items\n"
        );

        let file = std::env::temp_dir().join(format!(
            "sandbox-operator-check-empty-{}.yaml",
            std::process::id()
        ));
        std::fs::write(&file, "# nothing here\n").unwrap();
        let offline = UserNamespaces::Unsupported;
        let error = run_policy_check(std::slice::from_ref(&file), None, offline).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            format!("{error:#}"),
            format!(
                "in {}: no objects found: the input is empty (or holds only comments and empty \
                 documents)",
                file.display()
            )
        );
    }
}
