//! The Kubernetes Pod Security Standards, every check of the latest version
//! (v1.37, as in `k8s.io/pod-security-admission` v0.37.2), applied to a pod
//! template at the policy's level.
//!
//! - [`CHECKS`] lists each check with its upstream ID, its level, the
//!   baseline check it replaces under restricted, and the rule.
//! - [`check_pod`] runs every check of a level over one pod (metadata and
//!   spec as raw JSON) and returns a [`Denial`] per offending field, phrased
//!   `path: rule (Pod Security <level>: <check ID>)`.
//! - [`PodSecurityOptions`] is what a run needs besides the pod: the level,
//!   and whether the cluster is known to support user namespaces
//!   ([`UserNamespaces`]). Upstream relaxes three checks for a pod with
//!   `hostUsers: false` (restricted `runAsNonRoot` and `runAsUser`, baseline
//!   `procMount`), but judges the Pod as stored, and an API server whose
//!   `UserNamespacesSupport` gate is off drops `hostUsers` before Pod
//!   Security sees it: so these checks relax only where user namespaces are
//!   known to be supported, and a denial they make on a pod that set
//!   `hostUsers: false` says why it was not relaxed.
//!
//! Containers are visited in every list the upstream checks visit
//! (`initContainers`, `containers`, `ephemeralContainers`), at pod and
//! container level. The checks agree with the API server's own Pod Security
//! admission on every official fixture; `tests/integration/pss.rs` proves it
//! against the fixtures and, differentially, against a live API server.

mod baseline;
mod pod;
mod restricted;

use serde_json::{Map, Value};

use super::field::{Denial, FieldPath};
use super::policy::{Policy, Profile};
use super::user_namespaces::UserNamespaces;
use pod::{Findings, PodView};

pub(crate) use baseline::BASELINE_CAPABILITIES;
pub use restricted::ALLOWED_VOLUME_TYPES;
pub(crate) use restricted::drops_all_capabilities;

/// One Pod Security check.
#[derive(Clone, Copy, Debug)]
pub struct PodSecurityCheck {
    /// The upstream check ID, e.g. `capabilities_baseline`.
    pub id: &'static str,
    /// The lowest level that applies it.
    pub level: Profile,
    /// Under restricted, the baseline check this one replaces.
    pub replaces: Option<&'static str>,
    /// What it refuses, in a few words.
    pub rule: &'static str,
    run: CheckFn,
}

type CheckFn = fn(&PodView<'_>, &mut Findings<'_>);

const fn check(
    id: &'static str,
    level: Profile,
    replaces: Option<&'static str>,
    rule: &'static str,
    run: CheckFn,
) -> PodSecurityCheck {
    PodSecurityCheck {
        id,
        level,
        replaces,
        rule,
        run,
    }
}

use Profile::{Baseline, Restricted};
use baseline as b;
use restricted as r;

/// Every check of Pod Security v1.37, in the upstream order.
pub const CHECKS: [PodSecurityCheck; 19] = [
    check(
        "windowsHostProcess",
        Baseline,
        None,
        "no windowsOptions.hostProcess: true",
        b::windows_host_process,
    ),
    check(
        "hostNamespaces",
        Baseline,
        None,
        "no hostNetwork, hostPID, hostIPC",
        b::host_namespaces,
    ),
    check(
        "privileged",
        Baseline,
        None,
        "no privileged: true",
        b::privileged,
    ),
    check(
        "capabilities_baseline",
        Baseline,
        None,
        "capabilities.add only from the baseline set",
        b::capabilities_baseline,
    ),
    check(
        "hostPathVolumes",
        Baseline,
        None,
        "no hostPath volumes",
        b::host_path_volumes,
    ),
    check(
        "hostPorts",
        Baseline,
        None,
        "no hostPort other than 0",
        b::host_ports,
    ),
    check(
        "hostProbesAndHostLifecycle",
        Baseline,
        None,
        "probes and lifecycle handlers set no host",
        b::host_probes_and_lifecycle,
    ),
    check(
        "appArmorProfile",
        Baseline,
        None,
        "AppArmor RuntimeDefault or Localhost (field and annotation)",
        b::app_armor_profile,
    ),
    check(
        "seLinuxOptions",
        Baseline,
        None,
        "SELinux type from the container types, no user or role",
        b::se_linux_options,
    ),
    check(
        "procMount",
        Baseline,
        None,
        "procMount Default (relaxed with hostUsers: false where supported)",
        b::proc_mount_baseline,
    ),
    check(
        "seccompProfile_baseline",
        Baseline,
        None,
        "seccomp RuntimeDefault or Localhost when set",
        b::seccomp_profile_baseline,
    ),
    check(
        "sysctls",
        Baseline,
        None,
        "only the safe sysctls",
        b::sysctls,
    ),
    check(
        "restrictedVolumes",
        Restricted,
        Some("hostPathVolumes"),
        "volumes only of the allowed types",
        r::restricted_volumes,
    ),
    check(
        "allowPrivilegeEscalation",
        Restricted,
        None,
        "allowPrivilegeEscalation: false",
        r::allow_privilege_escalation,
    ),
    check(
        "runAsNonRoot",
        Restricted,
        None,
        "runAsNonRoot: true (relaxed with hostUsers: false where supported)",
        r::run_as_non_root,
    ),
    check(
        "runAsUser",
        Restricted,
        None,
        "no runAsUser: 0 (relaxed with hostUsers: false where supported)",
        r::run_as_user,
    ),
    check(
        "seccompProfile_restricted",
        Restricted,
        Some("seccompProfile_baseline"),
        "seccomp RuntimeDefault or Localhost required",
        r::seccomp_profile_restricted,
    ),
    check(
        "capabilities_restricted",
        Restricted,
        Some("capabilities_baseline"),
        "drop ALL, add only NET_BIND_SERVICE",
        r::capabilities_restricted,
    ),
    check(
        "procMount_restricted",
        Restricted,
        Some("procMount"),
        "procMount Default, even with hostUsers: false",
        b::proc_mount_restricted,
    ),
];

/// Whether `check` runs at `level`: at baseline only the baseline checks;
/// at restricted every check except those a restricted check replaces.
pub fn applies(check: &PodSecurityCheck, level: Profile) -> bool {
    match level {
        Baseline => check.level == Baseline,
        Restricted => !CHECKS.iter().any(|other| other.replaces == Some(check.id)),
    }
}

/// What a run of the checks needs besides the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSecurityOptions {
    /// The level whose checks run.
    pub level: Profile,
    /// Whether the cluster is known to support user namespaces: only then
    /// does `hostUsers: false` relax the checks upstream relaxes for it.
    pub user_namespaces: UserNamespaces,
}

impl PodSecurityOptions {
    /// The checks of `level` on a cluster where `user_namespaces`.
    pub fn new(level: Profile, user_namespaces: UserNamespaces) -> Self {
        PodSecurityOptions {
            level,
            user_namespaces,
        }
    }
}

/// A bare level: user namespaces are not known to be supported, so
/// `hostUsers: false` relaxes nothing (fail closed).
impl From<Profile> for PodSecurityOptions {
    fn from(level: Profile) -> Self {
        PodSecurityOptions::new(level, UserNamespaces::Unknown)
    }
}

impl Policy {
    /// The Pod Security options this policy snapshot judges by: its
    /// profile, and the user-namespace fact it carries
    /// ([`PolicyStore::set_user_namespaces`](super::PolicyStore::set_user_namespaces)).
    pub fn pod_security(&self) -> PodSecurityOptions {
        PodSecurityOptions::new(self.profile, self.user_namespaces)
    }
}

/// Runs every check of the options' level over one pod and returns the
/// findings.
///
/// `metadata` is the pod's metadata (for the AppArmor annotations) at
/// `metadata_path`; `spec` is its spec at `spec_path`. A bare [`Profile`]
/// converts to options with user namespaces unknown (no relaxation).
pub(crate) fn check_pod(
    options: impl Into<PodSecurityOptions>,
    metadata: Option<&Map<String, Value>>,
    metadata_path: &FieldPath,
    spec: &Map<String, Value>,
    spec_path: &FieldPath,
) -> Vec<Denial> {
    let PodSecurityOptions {
        level,
        user_namespaces,
    } = options.into();
    let mut denials = Vec::new();
    let mut findings = Findings::new(level, &mut denials);
    let pod = PodView::new(
        metadata,
        metadata_path,
        spec,
        spec_path,
        user_namespaces,
        &mut findings,
    );
    for check in CHECKS.iter().filter(|c| applies(c, level)) {
        (check.run)(&pod, &mut findings);
    }
    denials
}

/// Whether Pod Security at `level` lets a container add capability `name`
/// (spelled exactly as the check wants it).
pub fn allows_added_capability(level: Profile, name: &str) -> bool {
    match level {
        Baseline => BASELINE_CAPABILITIES.contains(&name),
        Restricted => name == "NET_BIND_SERVICE",
    }
}

/// Whether Pod Security at `level` lets a pod use the volume source `kind`
/// (`hostPath` never; at restricted only [`ALLOWED_VOLUME_TYPES`]).
pub fn allows_volume_type(level: Profile, kind: &str) -> bool {
    match level {
        Baseline => kind != "hostPath",
        Restricted => ALLOWED_VOLUME_TYPES.contains(&kind),
    }
}

/// Runs every check of the options' level over a Pod object as the API
/// server sees it (`{metadata, spec}`); paths start at `metadata` and
/// `spec`. A Pod without a spec object is one denial.
pub fn check_pod_object(options: impl Into<PodSecurityOptions>, pod: &Value) -> Vec<Denial> {
    let root = FieldPath::root();
    let metadata = pod.get("metadata").and_then(Value::as_object);
    match pod.get("spec").and_then(Value::as_object) {
        Some(spec) => check_pod(
            options,
            metadata,
            &root.key("metadata"),
            spec,
            &root.key("spec"),
        ),
        None => vec![Denial::new(&root.key("spec"), "must be an object")],
    }
}

/// The check ID a denial of [`check_pod`] names, if it is a Pod Security
/// finding (`... (Pod Security <level>: <check ID>)`).
pub fn check_of(denial: &Denial) -> Option<&str> {
    let (_, tail) = denial.message.rsplit_once("(Pod Security ")?;
    let (_, id) = tail.strip_suffix(')')?.split_once(": ")?;
    Some(id)
}

#[cfg(test)]
mod tests;
