//! The Pod Security Standards *restricted* checks (latest version, v1.37),
//! one function per upstream check, named by its check ID. Restricted runs
//! these on top of baseline; four of them replace a baseline check (see
//! [`super::CHECKS`]).

use super::super::field::{optional, present};
use super::baseline::{added_capabilities, seccomp_type_allowed};
use super::pod::{Findings, PodView};

/// The volume sources restricted allows; anything else (hostPath, nfs,
/// gitRepo, the in-tree cloud disks, ...) is refused.
pub const ALLOWED_VOLUME_TYPES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The one capability restricted lets a container add.
const NET_BIND_SERVICE: &str = "NET_BIND_SERVICE";

/// `restrictedVolumes` (replaces `hostPathVolumes`): every volume uses an
/// allowed source (none at all means emptyDir, the API server's default).
pub(crate) fn restricted_volumes(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    for (path, volume) in findings.items(pod.spec, "volumes", &pod.spec_path) {
        if ALLOWED_VOLUME_TYPES
            .iter()
            .any(|source| present(volume, source).is_some())
        {
            continue;
        }
        // A volume with no source at all is defaulted to emptyDir by the
        // API server (and judged so by Pod Security).
        let Some(source) = volume
            .iter()
            .find(|(key, value)| key.as_str() != "name" && !value.is_null())
            .map(|(key, _)| key.clone())
        else {
            continue;
        };
        findings.deny(
            "restrictedVolumes",
            &path.key(source.clone()),
            format!(
                "volume type {source} is not allowed; use one of {}",
                ALLOWED_VOLUME_TYPES.join(", ")
            ),
        );
    }
}

/// `allowPrivilegeEscalation`: every container sets it to false (not on
/// Windows pods).
pub(crate) fn allow_privilege_escalation(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    if pod.windows {
        return;
    }
    for container in &pod.containers {
        let escalation = container
            .context
            .and_then(|c| findings.bool(c, "allowPrivilegeEscalation", &container.context_path));
        if escalation != Some(false) {
            findings.deny(
                "allowPrivilegeEscalation",
                &container.context_path.key("allowPrivilegeEscalation"),
                "must be false",
            );
        }
    }
}

/// `runAsNonRoot`: never false, and true for every container (directly or
/// through the pod); relaxed for pods in a user namespace (only on a
/// cluster known to give them one, see [`PodView::user_namespace`]).
pub(crate) fn run_as_non_root(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    if pod.user_namespace {
        return;
    }
    let not_relaxed = pod.not_relaxed();
    let pod_setting = pod
        .context
        .and_then(|c| findings.bool(c, "runAsNonRoot", &pod.context_path));
    if pod_setting == Some(false) {
        findings.deny(
            "runAsNonRoot",
            &pod.context_path.key("runAsNonRoot"),
            format!("must not be false{not_relaxed}"),
        );
    }
    for container in &pod.containers {
        let setting = container
            .context
            .and_then(|c| findings.bool(c, "runAsNonRoot", &container.context_path));
        let path = container.context_path.key("runAsNonRoot");
        match setting {
            Some(false) => {
                findings.deny(
                    "runAsNonRoot",
                    &path,
                    format!("must not be false{not_relaxed}"),
                );
            }
            None if pod_setting != Some(true) => findings.deny(
                "runAsNonRoot",
                &path,
                format!("must be true, here or in the pod's securityContext{not_relaxed}"),
            ),
            _ => {}
        }
    }
}

/// `runAsUser`: never 0, pod or container; relaxed for pods in a user
/// namespace (only on a cluster known to give them one).
pub(crate) fn run_as_user(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    if pod.user_namespace {
        return;
    }
    for (context, context_path) in pod.security_contexts() {
        let Some(context) = context else { continue };
        if findings
            .read(optional::<i64>(context, "runAsUser", context_path))
            .flatten()
            == Some(0)
        {
            findings.deny(
                "runAsUser",
                &context_path.key("runAsUser"),
                format!("0 (root) is not allowed{}", pod.not_relaxed()),
            );
        }
    }
}

/// `seccompProfile_restricted` (replaces `seccompProfile_baseline`): the
/// pod, or else every container, sets RuntimeDefault or Localhost; an
/// explicit other value is refused anywhere. Not on Windows pods.
pub(crate) fn seccomp_profile_restricted(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    if pod.windows {
        return;
    }
    let check = "seccompProfile_restricted";
    let pod_type = pod
        .context
        .and_then(|c| findings.object(c, "seccompProfile", &pod.context_path))
        .map(|p| {
            findings
                .str(p, "type", &pod.context_path.key("seccompProfile"))
                .unwrap_or("")
        });
    let pod_allowed = pod_type.is_some_and(seccomp_type_allowed);
    if let Some(kind) = pod_type.filter(|kind| !seccomp_type_allowed(kind)) {
        findings.deny(
            check,
            &pod.context_path.key("seccompProfile").key("type"),
            format!("{kind:?} is not allowed; use RuntimeDefault or Localhost"),
        );
    }
    for container in &pod.containers {
        let profile_path = container.context_path.key("seccompProfile");
        let kind = container
            .context
            .and_then(|c| findings.object(c, "seccompProfile", &container.context_path))
            .map(|p| findings.str(p, "type", &profile_path).unwrap_or(""));
        match kind {
            Some(kind) if !seccomp_type_allowed(kind) => findings.deny(
                check,
                &profile_path.key("type"),
                format!("{kind:?} is not allowed; use RuntimeDefault or Localhost"),
            ),
            None if !pod_allowed => findings.deny(
                check,
                &profile_path,
                "must be RuntimeDefault or Localhost, here or in the pod's securityContext",
            ),
            _ => {}
        }
    }
}

/// Whether a container's `securityContext` drops `ALL` capabilities,
/// spelled exactly so (the Pod Security check and the container runtimes
/// agree on that spelling only). The one helper for this question, shared
/// by defaulting and validation.
pub(crate) fn drops_all_capabilities(
    context: Option<&serde_json::Map<String, serde_json::Value>>,
) -> bool {
    context
        .and_then(|c| present(c, "capabilities"))
        .and_then(|c| c.get("drop"))
        .and_then(serde_json::Value::as_array)
        .is_some_and(|names| names.iter().any(|name| name.as_str() == Some("ALL")))
}

/// `capabilities_restricted` (replaces `capabilities_baseline`): every
/// container drops `ALL` and adds nothing but `NET_BIND_SERVICE`. Not on
/// Windows pods.
pub(crate) fn capabilities_restricted(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    if pod.windows {
        return;
    }
    for container in &pod.containers {
        if !drops_all_capabilities(container.context) {
            findings.deny(
                "capabilities_restricted",
                &container.context_path.key("capabilities").key("drop"),
                "must include ALL",
            );
        }
    }
    for (path, name) in added_capabilities(pod, findings) {
        if name != NET_BIND_SERVICE {
            findings.deny(
                "capabilities_restricted",
                &path,
                format!("{name:?} is not allowed; only NET_BIND_SERVICE may be added"),
            );
        }
    }
}
