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
mod tests;
