//! The names a policy lists: checked when the policy loads, so that a name
//! the API server or the validator would never match is refused with the
//! field and the rule, not stamped into templates or silently ignored.

use crate::api::dns::is_dns1123_subdomain;

/// Every Linux capability (`include/uapi/linux/capability.h`, up to
/// `CAP_CHECKPOINT_RESTORE`), without the `CAP_` prefix, as
/// [`super::normalize_capability`] spells them.
pub(crate) const LINUX_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Every volume source of a Pod's `volumes[]` (Kubernetes v1.37), spelled
/// as the key the validator names a volume's type by (`emptyDir`,
/// `configMap`, ...).
pub(crate) const VOLUME_TYPES: [&str; 30] = [
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

/// The rule of a DNS-1123 subdomain, as messages state it.
const DNS_SUBDOMAIN_RULE: &str = "a DNS-1123 subdomain: at most 253 characters of lowercase \
     letters, digits, '-' and '.', each '.'-separated part starting and ending with a letter or digit";

/// The resources every node has; the validator bounds them by the ceilings
/// and asks the allow-list only about the others.
const STANDARD_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// Why `name` cannot name an object of `kind` (a RuntimeClass, a
/// ServiceAccount, a PriorityClass: DNS-1123 subdomains all), if it cannot.
pub(crate) fn object_name_rule(name: &str, kind: &str) -> Option<String> {
    (!is_dns1123_subdomain(name))
        .then(|| format!("{name:?} is not a valid {kind} name ({DNS_SUBDOMAIN_RULE})"))
}

/// Why `name` is not a capability the validator can match (it compares
/// without `CAP_` and case-insensitively), if it is not.
pub(crate) fn capability_rule(name: &str) -> Option<String> {
    (!LINUX_CAPABILITIES.contains(&super::normalize_capability(name).as_str())).then(|| {
        format!(
            "{name:?} is not a Linux capability name (such as NET_BIND_SERVICE; CAP_ and case are optional)"
        )
    })
}

/// Why `name` is not a volume type the validator can match (it compares
/// exactly, by the key of the volume source), if it is not; a name that
/// differs from one only by case or blanks gets that one suggested.
pub(crate) fn volume_type_rule(name: &str) -> Option<String> {
    if VOLUME_TYPES.contains(&name) {
        return None;
    }
    let trimmed = name.trim();
    Some(
        match VOLUME_TYPES
            .iter()
            .find(|known| known.eq_ignore_ascii_case(trimmed))
        {
            Some(known) => format!(
                "{name:?} is not a volume type; did you mean {known}? \
                 (volume types are spelled as the keys of a pod's volumes)"
            ),
            None => format!(
                "{name:?} is not a volume type (one of {})",
                VOLUME_TYPES.join(", ")
            ),
        },
    )
}

/// The name part of a qualified name (`IsQualifiedName`): 1 to 63
/// letters, digits, '-', '_' and '.', starting and ending with a letter or
/// digit.
fn is_qualified_name_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why `name` is not a resource the allow-list can admit, if it is not:
/// cpu, memory and ephemeral-storage are bounded by the ceilings (the
/// validator never asks the list about them); a huge page resource is
/// `hugepages-<size>`; anything else is an extended resource, a qualified
/// name with a domain outside `kubernetes.io` (`example.com/gpu`), as the
/// API server requires of a container's resource names.
pub(crate) fn extended_resource_rule(name: &str) -> Option<String> {
    if STANDARD_RESOURCES.contains(&name) {
        return Some(format!(
            "{name:?} is not an extended resource: cpu, memory and ephemeral-storage are \
             bounded by ceilings, not allow-listed"
        ));
    }
    if let Some(size) = name.strip_prefix("hugepages-") {
        let valid = size.starts_with(|c: char| c.is_ascii_digit())
            && super::super::quantity::Quantity::parse(size).is_ok_and(|q| q.nanos() > 0);
        return (!valid).then(|| {
            format!("{name:?} is not a huge page size: write hugepages-<size>, e.g. hugepages-2Mi")
        });
    }
    let Some((domain, part)) = name.split_once('/') else {
        let example = if is_qualified_name_part(name) {
            name
        } else {
            "gpu"
        };
        return Some(format!(
            "{name:?} is not an extended resource name: write it with its domain, e.g. example.com/{example}"
        ));
    };
    if !is_dns1123_subdomain(domain) {
        return Some(format!(
            "{name:?} is not an extended resource name: its domain {domain:?} is not {DNS_SUBDOMAIN_RULE}"
        ));
    }
    if !is_qualified_name_part(part) {
        return Some(format!(
            "{name:?} is not an extended resource name: the part after the domain must be 1 to 63 \
             letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    // The API server takes any name containing `kubernetes.io/` for a
    // native resource, never an extended one.
    if domain.ends_with("kubernetes.io") {
        return Some(format!(
            "{name:?} is in the kubernetes.io namespace, which Kubernetes keeps for its own \
             resources; an extended resource has a domain of its own, e.g. example.com/gpu"
        ));
    }
    None
}
