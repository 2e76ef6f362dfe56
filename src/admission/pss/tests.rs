//! Unit tests of the Pod Security checks on hand-written pods; the official
//! fixtures are run by `tests/integration/pss.rs`.

use serde_json::{Value, json};

use super::*;

fn findings(options: impl Into<PodSecurityOptions>, pod: Value) -> Vec<String> {
    check_pod_object(options, &pod)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn pod(spec: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": spec})
}

#[test]
fn restricted_replaces_four_baseline_checks_and_keeps_the_rest() {
    let baseline: Vec<&str> = CHECKS
        .iter()
        .filter(|c| applies(c, Baseline))
        .map(|c| c.id)
        .collect();
    let restricted: Vec<&str> = CHECKS
        .iter()
        .filter(|c| applies(c, Restricted))
        .map(|c| c.id)
        .collect();
    assert_eq!(baseline.len(), 12);
    assert_eq!(restricted.len(), 19 - 4);
    for replaced in [
        "hostPathVolumes",
        "seccompProfile_baseline",
        "capabilities_baseline",
        "procMount",
    ] {
        assert!(baseline.contains(&replaced) && !restricted.contains(&replaced));
    }
}

#[test]
fn probe_hosts_apparmor_annotations_and_selinux_are_named_by_field() {
    let mut pod = pod(json!({"containers": [{"name": "c", "image": "a:1",
        "livenessProbe": {"httpGet": {"host": "169.254.169.254", "port": 80}},
        "lifecycle": {"preStop": {"tcpSocket": {"host": "10.0.0.1", "port": 1}}},
        "securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "root"}}}]}));
    pod["metadata"]["annotations"] = json!({
        "container.apparmor.security.beta.kubernetes.io/c": "unconfined",
        "container.apparmor.security.beta.kubernetes.io/d": "localhost/mine",
    });
    assert_eq!(
        findings(Baseline, pod),
        [
            "spec.containers[0].livenessProbe.httpGet.host: \"169.254.169.254\": probes and lifecycle handlers may not set a host (Pod Security baseline: hostProbesAndHostLifecycle)",
            "spec.containers[0].lifecycle.preStop.tcpSocket.host: \"10.0.0.1\": probes and lifecycle handlers may not set a host (Pod Security baseline: hostProbesAndHostLifecycle)",
            "metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]: \"unconfined\" is not allowed; use runtime/default or localhost/<profile> (Pod Security baseline: appArmorProfile)",
            "spec.containers[0].securityContext.seLinuxOptions.type: \"spc_t\" is not allowed; use one of container_t, container_init_t, container_kvm_t, container_engine_t (Pod Security baseline: seLinuxOptions)",
            "spec.containers[0].securityContext.seLinuxOptions.user: must not be set (Pod Security baseline: seLinuxOptions)",
        ]
    );
}

#[test]
fn restricted_volume_types_and_windows_exemptions() {
    let volumes = pod(json!({"securityContext": {"runAsNonRoot": true},
        "os": {"name": "windows"},
        "containers": [{"name": "c", "image": "a:1"}],
        "volumes": [{"name": "ok", "projected": {"sources": []}},
                    {"name": "n", "nfs": {"server": "s", "path": "/"}},
                    {"name": "x"}]}));
    // On Windows, seccomp, escalation and capabilities are not required; a
    // volume without a source is an emptyDir.
    assert_eq!(
        findings(Restricted, volumes),
        [
            "spec.volumes[1].nfs: volume type nfs is not allowed; use one of configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected, secret (Pod Security restricted: restrictedVolumes)",
        ]
    );
}

#[test]
fn wrong_types_fail_closed() {
    let findings = findings(
        Baseline,
        pod(json!({"hostPID": "yes", "containers": [{"name": "c",
            "securityContext": {"privileged": 1, "procMount": ["Unmasked"]}}]})),
    );
    assert_eq!(
        findings,
        [
            "spec.hostPID: must be true or false",
            "spec.containers[0].securityContext.privileged: must be true or false",
            "spec.containers[0].securityContext.procMount: must be a string",
        ]
    );
}

#[test]
fn check_of_reads_the_check_back() {
    let denials = check_pod_object(Baseline, &pod(json!({"hostIPC": true})));
    assert_eq!(check_of(&denials[0]), Some("hostNamespaces"));
    assert_eq!(
        check_of(&Denial {
            path: "x".into(),
            message: "other".into()
        }),
        None
    );
    assert!(allows_added_capability(Baseline, "CHOWN"));
    assert!(!allows_added_capability(Baseline, "CAP_CHOWN"));
    assert!(allows_added_capability(Restricted, "NET_BIND_SERVICE"));
    assert!(!allows_added_capability(Restricted, "CHOWN"));
}

/// A restricted-compliant pod but for `runAsUser: 0` in a container,
/// `procMount: Unmasked`, and no `runAsNonRoot`, with `hostUsers: false`.
fn root_in_a_user_namespace() -> Value {
    pod(json!({"hostUsers": false,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "a:1", "securityContext": {
            "runAsUser": 0, "procMount": "Unmasked", "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}}}]}))
}

fn with(level: Profile, user_namespaces: UserNamespaces) -> PodSecurityOptions {
    PodSecurityOptions::new(level, user_namespaces)
}

#[test]
fn host_users_false_relaxes_the_three_checks_where_user_namespaces_are_supported() {
    let pod = root_in_a_user_namespace();
    // Restricted: runAsNonRoot and runAsUser relaxed; procMount_restricted
    // never is.
    assert_eq!(
        findings(with(Restricted, UserNamespaces::Supported), pod.clone()),
        [
            "spec.containers[0].securityContext.procMount: \"Unmasked\" is not allowed; only Default (Pod Security restricted: procMount_restricted)"
        ]
    );
    // Baseline: procMount relaxed.
    assert!(findings(with(Baseline, UserNamespaces::Supported), pod).is_empty());
}

#[test]
fn host_users_false_relaxes_nothing_where_user_namespaces_are_not_known_supported() {
    const WHY: &str = " (hostUsers: false would allow it, but user namespaces are not known to be supported on this cluster; if they are, set --user-namespaces=enabled)";
    let pod = root_in_a_user_namespace();
    for fact in [UserNamespaces::Unknown, UserNamespaces::Unsupported] {
        assert_eq!(
            findings(with(Restricted, fact), pod.clone()),
            [
                format!("spec.containers[0].securityContext.runAsNonRoot: must be true, here or in the pod's securityContext{WHY} (Pod Security restricted: runAsNonRoot)"),
                format!("spec.containers[0].securityContext.runAsUser: 0 (root) is not allowed{WHY} (Pod Security restricted: runAsUser)"),
                "spec.containers[0].securityContext.procMount: \"Unmasked\" is not allowed; only Default (Pod Security restricted: procMount_restricted)".to_owned(),
            ],
            "{fact:?}"
        );
        assert_eq!(
            findings(with(Baseline, fact), pod.clone()),
            [format!(
                "spec.containers[0].securityContext.procMount: \"Unmasked\" is not allowed; only Default{WHY} (Pod Security baseline: procMount)"
            )],
            "{fact:?}"
        );
    }
    // A bare level is the same as not knowing; the check is still named.
    let denials = check_pod_object(Restricted, &pod);
    assert_eq!(check_of(&denials[1]), Some("runAsUser"));
    // Without hostUsers: false the messages say nothing of user namespaces.
    let mut plain = pod;
    plain["spec"].as_object_mut().unwrap().remove("hostUsers");
    assert!(
        findings(with(Restricted, UserNamespaces::Unknown), plain)
            .iter()
            .all(|denial| !denial.contains("hostUsers")),
    );
}
