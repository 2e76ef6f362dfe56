//! Pod-level rules: the seed, host access, runtime classes, ephemeral containers.

use super::*;

#[test]
fn the_seed_aio_sandbox_is_admitted_without_warnings() {
    let verdict = create(SandboxKind::Sandbox, &aio_sandbox());
    assert_eq!(verdict, Verdict::default());
}

#[test]
fn a_plain_container_is_admitted() {
    assert!(denied_with(json!({}), json!({})).is_empty());
}

#[test]
fn privilege_and_host_access_are_denied() {
    assert_eq!(
        denied_with(json!({"securityContext": {"privileged": true}}), json!({})),
        [format!(
            "{C0}.securityContext.privileged: privileged containers are not allowed (Pod Security baseline: privileged)"
        )]
    );
    assert_eq!(
        denied_with(
            json!({}),
            json!({"hostNetwork": true, "hostPID": true, "hostIPC": false})
        ),
        [
            "spec.podTemplate.spec.hostNetwork: sharing the host's network namespace is not allowed (Pod Security baseline: hostNamespaces)",
            "spec.podTemplate.spec.hostPID: sharing the host's process namespace is not allowed (Pod Security baseline: hostNamespaces)",
        ]
    );
    assert_eq!(
        denied_with(
            json!({}),
            json!({"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "hostPath": {"path": "/"}}]})
        ),
        [
            "spec.podTemplate.spec.volumes[1].hostPath: hostPath volumes are not allowed (Pod Security baseline: hostPathVolumes)"
        ]
    );
    assert_eq!(
        denied_with(
            json!({"ports": [{"containerPort": 8080}, {"containerPort": 80, "hostPort": 80}]}),
            json!({})
        ),
        [format!(
            "{C0}.ports[1].hostPort: host ports are not allowed (Pod Security baseline: hostPorts)"
        )]
    );
    assert_eq!(
        denied_with(
            json!({}),
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}})
        ),
        [
            "spec.podTemplate.spec.securityContext.seccompProfile.type: \"Unconfined\" is not allowed; use RuntimeDefault or Localhost (Pod Security baseline: seccompProfile_baseline)"
        ]
    );
}

#[test]
fn capabilities_follow_pod_security_and_then_the_policy() {
    // Pod Security refuses SYS_ADMIN and any spelling but the exact one;
    // the policy's list can only narrow what is left.
    let denied = denied_with(
        json!({"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", "SYS_ADMIN", "cap_chown"]}}}),
        json!({}),
    );
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(denied[0].starts_with(&format!(
        "{C0}.securityContext.capabilities.add[1]: \"SYS_ADMIN\" is not one of the baseline capabilities"
    )));
    assert!(denied[1].starts_with(&format!(
        "{C0}.securityContext.capabilities.add[2]: \"cap_chown\" is not one of the baseline capabilities"
    )));
    assert!(denied[1].ends_with("(Pod Security baseline: capabilities_baseline)"));
    let narrow = Policy::from_yaml("allowedCapabilities: [CHOWN]").unwrap();
    let verdict = validate(
        SandboxKind::Sandbox,
        &Operation::Create,
        &sandbox_with(
            json!({"securityContext": {"capabilities": {"add": ["CHOWN", "KILL"]}}}),
            json!({}),
        ),
        None,
        &narrow,
    );
    assert_eq!(
        verdict.message(),
        format!("{C0}.securityContext.capabilities.add[1]: KILL is not in allowedCapabilities")
    );
}

#[test]
fn init_and_ephemeral_containers_are_checked_too() {
    let denied = denied_with(
        json!({}),
        json!({"initContainers": [{"name": "i", "image": "a:1", "securityContext": {"privileged": true}}]}),
    );
    assert_eq!(
        denied,
        [
            "spec.podTemplate.spec.initContainers[0].securityContext.privileged: privileged containers are not allowed (Pod Security baseline: privileged)"
        ]
    );
    let denied = denied_with(
        json!({}),
        json!({"ephemeralContainers": [{"name": "e", "image": "a:1", "securityContext": {"procMount": "Unmasked"}}]}),
    );
    assert_eq!(
        denied,
        [
            "spec.podTemplate.spec.ephemeralContainers[0].securityContext.procMount: \"Unmasked\" is not allowed; only Default (Pod Security baseline: procMount)",
            "spec.podTemplate.spec.ephemeralContainers: ephemeral containers cannot be part of a pod template",
        ]
    );
}

#[test]
fn runtime_classes_follow_the_allow_list() {
    let policy = Policy::from_yaml("allowedRuntimeClasses: [gvisor, kata]").unwrap();
    let check = |pod: Value| {
        denials(&validate(
            SandboxKind::SandboxTemplate,
            &Operation::Create,
            &sandbox_with(json!({}), pod),
            None,
            &policy,
        ))
    };
    assert!(check(json!({"runtimeClassName": "kata"})).is_empty());
    assert_eq!(
        check(json!({"runtimeClassName": "runc"})),
        [
            "spec.podTemplate.spec.runtimeClassName: \"runc\" is not one of the allowed runtime classes (gvisor, kata)"
        ]
    );
    assert_eq!(
        check(json!({})),
        [
            "spec.podTemplate.spec.runtimeClassName: must be one of the allowed runtime classes (gvisor, kata)"
        ]
    );
}

#[test]
fn ephemeral_containers_are_denied_in_templates() {
    assert_eq!(
        denied_with(
            json!({}),
            json!({"ephemeralContainers": [{"name": "debug", "image": "a:1"}]})
        ),
        [
            "spec.podTemplate.spec.ephemeralContainers: ephemeral containers cannot be part of a pod template"
        ]
    );
}

#[test]
fn the_seed_template_is_admitted() {
    let template = object_from_yaml(include_str!("../../../../examples/template.yaml"));
    assert!(create(SandboxKind::SandboxTemplate, &template).allowed());
}

#[test]
fn restricted_profile_denies_root_escalation_and_kept_capabilities() {
    let policy = Policy::from_yaml("profile: restricted").unwrap();
    let check = |container: Value, pod: Value| denied_under(&policy, container, pod);
    let hardened = json!({"securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}});
    assert!(
        check(
            hardened.clone(),
            json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}})
        )
        .is_empty()
    );
    assert_eq!(
        check(json!({}), json!({"securityContext": {"runAsNonRoot": false, "runAsUser": 0}})),
        [
            format!("{C0}.securityContext.allowPrivilegeEscalation: must be false (Pod Security restricted: allowPrivilegeEscalation)"),
            "spec.podTemplate.spec.securityContext.runAsNonRoot: must not be false (Pod Security restricted: runAsNonRoot)".to_owned(),
            format!("{C0}.securityContext.runAsNonRoot: must be true, here or in the pod's securityContext (Pod Security restricted: runAsNonRoot)"),
            "spec.podTemplate.spec.securityContext.runAsUser: 0 (root) is not allowed (Pod Security restricted: runAsUser)".to_owned(),
            format!("{C0}.securityContext.seccompProfile: must be RuntimeDefault or Localhost, here or in the pod's securityContext (Pod Security restricted: seccompProfile_restricted)"),
            format!("{C0}.securityContext.capabilities.drop: must include ALL (Pod Security restricted: capabilities_restricted)"),
        ]
    );
    // In a user namespace, root inside is not root outside: Pod Security
    // relaxes runAsNonRoot and runAsUser, and so do we, where the cluster
    // is known to keep hostUsers (else the Pod is stored without it).
    let root_in_user_namespace = json!({"hostUsers": false, "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}}});
    let supported = Policy {
        user_namespaces: crate::admission::UserNamespaces::Supported,
        ..policy.clone()
    };
    assert!(denied_under(&supported, hardened.clone(), root_in_user_namespace.clone()).is_empty());
    let denied = check(hardened, root_in_user_namespace);
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied[1].starts_with("spec.podTemplate.spec.securityContext.runAsUser: 0 (root) is not allowed (hostUsers: false would allow it, but user namespaces are not known to be supported on this cluster; if they are, set --user-namespaces=enabled)"),
        "{denied:?}"
    );
}
