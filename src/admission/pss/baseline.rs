//! The Pod Security Standards *baseline* checks (latest version, v1.37), one
//! function per upstream check, named by its check ID.
//!
//! Each function adds a finding per offending field to [`Findings`]; none
//! stops early, so one review shows everything to fix.

use serde_json::{Map, Value};

use super::super::field::{Denial, FieldPath, List, optional, present};
use super::pod::{Findings, PodView};

/// Capabilities a container may add under baseline, spelled exactly as the
/// Kubernetes check spells them (no `CAP_` prefix, upper case).
pub(crate) const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The "safe" sysctls of Pod Security v1.37.
pub(crate) const SAFE_SYSCTLS: [&str; 14] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
];

/// SELinux types a pod or container may set.
const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The annotation prefix of the deprecated per-container AppArmor profile.
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// `windowsHostProcess`: no `windowsOptions.hostProcess: true`, pod or container.
pub(crate) fn windows_host_process(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    pod.each_context_object(
        "windowsOptions",
        findings,
        |options, options_path, findings| {
            if findings.bool(options, "hostProcess", options_path) == Some(true) {
                findings.deny(
                    "windowsHostProcess",
                    &options_path.key("hostProcess"),
                    "Windows host process containers are not allowed",
                );
            }
        },
    );
}

/// `hostNamespaces`: no `hostNetwork`, `hostPID` or `hostIPC`.
pub(crate) fn host_namespaces(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    for (key, namespace) in [
        ("hostNetwork", "network"),
        ("hostPID", "process"),
        ("hostIPC", "IPC"),
    ] {
        if findings.bool(pod.spec, key, &pod.spec_path) == Some(true) {
            findings.deny(
                "hostNamespaces",
                &pod.spec_path.key(key),
                format!("sharing the host's {namespace} namespace is not allowed"),
            );
        }
    }
}

/// `privileged`: no `securityContext.privileged: true`.
pub(crate) fn privileged(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    for container in &pod.containers {
        if let Some(context) = container.context
            && findings.bool(context, "privileged", &container.context_path) == Some(true)
        {
            findings.deny(
                "privileged",
                &container.context_path.key("privileged"),
                "privileged containers are not allowed",
            );
        }
    }
}

/// The added capabilities of every container: (path of the item, name).
/// A non-string item is recorded as malformed.
pub(crate) fn added_capabilities(
    pod: &PodView<'_>,
    findings: &mut Findings<'_>,
) -> Vec<(FieldPath, String)> {
    let mut added = Vec::new();
    for container in &pod.containers {
        let capabilities_path = container.context_path.key("capabilities");
        let Some(capabilities) = container
            .context
            .and_then(|c| findings.object(c, "capabilities", &container.context_path))
        else {
            continue;
        };
        let items = findings
            .read(optional::<List>(capabilities, "add", &capabilities_path))
            .flatten();
        let add_path = capabilities_path.key("add");
        for (index, item) in items.into_iter().flatten().enumerate() {
            match item.as_str() {
                Some(name) => added.push((add_path.index(index), name.to_owned())),
                None => {
                    findings
                        .read::<()>(Err(Denial::new(&add_path.index(index), "must be a string")));
                }
            }
        }
    }
    added
}

/// `capabilities_baseline`: added capabilities only from the baseline set,
/// spelled exactly as listed.
pub(crate) fn capabilities_baseline(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    for (path, name) in added_capabilities(pod, findings) {
        if !BASELINE_CAPABILITIES.contains(&name.as_str()) {
            findings.deny(
                "capabilities_baseline",
                &path,
                format!(
                    "{name:?} is not one of the baseline capabilities ({}), spelled exactly so",
                    BASELINE_CAPABILITIES.join(", ")
                ),
            );
        }
    }
}

/// `hostPathVolumes`: no hostPath volumes.
pub(crate) fn host_path_volumes(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    for (path, volume) in findings.items(pod.spec, "volumes", &pod.spec_path) {
        if present(volume, "hostPath").is_some() {
            findings.deny(
                "hostPathVolumes",
                &path.key("hostPath"),
                "hostPath volumes are not allowed",
            );
        }
    }
}

/// `hostPorts`: no `ports[].hostPort` other than 0.
pub(crate) fn host_ports(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    for container in &pod.containers {
        for (port_path, port) in findings.items(container.container, "ports", &container.path) {
            let host_port = findings.read(optional::<i64>(port, "hostPort", &port_path));
            if host_port.flatten().is_some_and(|p| p != 0) {
                findings.deny(
                    "hostPorts",
                    &port_path.key("hostPort"),
                    "host ports are not allowed",
                );
            }
        }
    }
}

/// `hostProbesAndHostLifecycle`: probes and lifecycle handlers may not name
/// a `host` (they would make the kubelet connect anywhere).
pub(crate) fn host_probes_and_lifecycle(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    for container in &pod.containers {
        let mut handlers = Vec::new();
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if let Some(handler) = findings.object(container.container, probe, &container.path) {
                handlers.push((container.path.key(probe), handler));
            }
        }
        let lifecycle_path = container.path.key("lifecycle");
        if let Some(lifecycle) = findings.object(container.container, "lifecycle", &container.path)
        {
            for hook in ["postStart", "preStop"] {
                if let Some(handler) = findings.object(lifecycle, hook, &lifecycle_path) {
                    handlers.push((lifecycle_path.key(hook), handler));
                }
            }
        }
        for (handler_path, handler) in handlers {
            for action in ["httpGet", "tcpSocket"] {
                let action_path = handler_path.key(action);
                if let Some(action_object) = findings.object(handler, action, &handler_path)
                    && let Some(host) = findings.str(action_object, "host", &action_path)
                    && !host.is_empty()
                {
                    findings.deny(
                        "hostProbesAndHostLifecycle",
                        &action_path.key("host"),
                        format!("{host:?}: probes and lifecycle handlers may not set a host"),
                    );
                }
            }
        }
    }
}

/// `appArmorProfile`: the field type RuntimeDefault or Localhost (pod and
/// container), and the deprecated annotations `runtime/default`,
/// `localhost/*` or empty.
pub(crate) fn app_armor_profile(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    pod.each_context_object("appArmorProfile", findings, |profile, path, findings| {
        // The same two types as seccomp.
        let allowed = seccomp_type_allowed;
        deny_type_unless(
            findings,
            "appArmorProfile",
            (profile, path),
            allowed,
            PROFILE_TYPES,
        );
    });
    for (key, value) in pod.annotations.into_iter().flatten() {
        if !key.starts_with(APPARMOR_ANNOTATION_PREFIX) {
            continue;
        }
        let value = value.as_str().unwrap_or("<not a string>");
        if !(value.is_empty() || value == "runtime/default" || value.starts_with("localhost/")) {
            findings.deny(
                "appArmorProfile",
                &pod.annotations_path.key(key.clone()),
                format!("{value:?} is not allowed; use runtime/default or localhost/<profile>"),
            );
        }
    }
}

/// `seLinuxOptions`: type from the container types only, no user, no role.
pub(crate) fn se_linux_options(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    pod.each_context_object(
        "seLinuxOptions",
        findings,
        |options, options_path, findings| {
            let allowed = |kind: &str| SELINUX_TYPES.contains(&kind);
            let instead = format!("one of {}", SELINUX_TYPES[1..].join(", "));
            deny_type_unless(
                findings,
                "seLinuxOptions",
                (options, options_path),
                allowed,
                &instead,
            );
            for key in ["user", "role"] {
                if findings
                    .str(options, key, options_path)
                    .is_some_and(|v| !v.is_empty())
                {
                    findings.deny("seLinuxOptions", &options_path.key(key), "must not be set");
                }
            }
        },
    );
}

/// `procMount`: `securityContext.procMount` unset or `Default`, unless the
/// pod runs in a user namespace (`hostUsers: false`, on a cluster known to
/// give it one).
pub(crate) fn proc_mount_baseline(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    if !pod.user_namespace {
        proc_mount(pod, findings, "procMount", pod.not_relaxed());
    }
}

/// `procMount_restricted` (replaces `procMount`): `procMount` unset or
/// `Default`, user namespace or not.
pub(crate) fn proc_mount_restricted(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    proc_mount(pod, findings, "procMount_restricted", "");
}

/// Denies under `check` every `procMount` other than `Default`, the message
/// ending with `note`.
fn proc_mount(pod: &PodView<'_>, findings: &mut Findings<'_>, check: &str, note: &str) {
    for container in &pod.containers {
        let Some(context) = container.context else {
            continue;
        };
        if let Some(mount) = findings.str(context, "procMount", &container.context_path)
            && mount != "Default"
        {
            findings.deny(
                check,
                &container.context_path.key("procMount"),
                format!("{mount:?} is not allowed; only Default{note}"),
            );
        }
    }
}

/// Whether a seccomp profile object names an allowed type.
pub(crate) fn seccomp_type_allowed(kind: &str) -> bool {
    matches!(kind, "RuntimeDefault" | "Localhost")
}

/// `seccompProfile_baseline`: a seccomp profile that is set is
/// RuntimeDefault or Localhost (not Unconfined, not empty).
pub(crate) fn seccomp_profile_baseline(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    pod.each_context_object("seccompProfile", findings, |profile, path, findings| {
        let (check, allowed) = ("seccompProfile_baseline", seccomp_type_allowed);
        deny_type_unless(findings, check, (profile, path), allowed, PROFILE_TYPES);
    });
}

/// The seccomp and AppArmor profile types allowed, as the denials name them.
const PROFILE_TYPES: &str = "RuntimeDefault or Localhost";

/// Denies under `check` the `type` of a profile object (`appArmorProfile`,
/// `seLinuxOptions`, `seccompProfile`) at `path` that `allowed` refuses
/// (absent reads as empty), naming what to use `instead`.
fn deny_type_unless(
    findings: &mut Findings<'_>,
    check: &str,
    (profile, path): (&Map<String, Value>, &FieldPath),
    allowed: impl Fn(&str) -> bool,
    instead: &str,
) {
    let kind = findings.str(profile, "type", path).unwrap_or("");
    if !allowed(kind) {
        let message = format!("{kind:?} is not allowed; use {instead}");
        findings.deny(check, &path.key("type"), message);
    }
}

/// `sysctls`: only the safe set.
pub(crate) fn sysctls(pod: &PodView<'_>, findings: &mut Findings<'_>) {
    let Some(context) = pod.context else {
        return;
    };
    for (path, sysctl) in findings.items(context, "sysctls", &pod.context_path) {
        let name = findings.str(sysctl, "name", &path).unwrap_or("");
        if !SAFE_SYSCTLS.contains(&name) {
            findings.deny(
                "sysctls",
                &path.key("name"),
                format!("{name:?} is not one of the safe sysctls"),
            );
        }
    }
}
