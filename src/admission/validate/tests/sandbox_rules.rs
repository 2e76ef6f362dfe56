//! Sandbox rules beyond Pod Security (issue 13 points 1 and 6): the cases a
//! security review found admitted, each refused with its field path.

use super::*;

fn restricted() -> Policy {
    Policy::from_yaml("profile: restricted").unwrap()
}

#[test]
fn the_reviewed_escapes_are_refused_under_the_default_policy() {
    let cases = [
        (
            json!({}),
            json!({"volumes": [{"name": "n", "nfs": {"server": "10.0.0.1", "path": "/"}}]}),
            "spec.podTemplate.spec.volumes[0].nfs: volume type nfs is not in allowedVolumeTypes (configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected, secret)".to_owned(),
        ),
        (
            json!({"securityContext": {"procMount": "Unmasked"}}),
            json!({}),
            format!(
                "{C0}.securityContext.procMount: \"Unmasked\" is not allowed; only Default (Pod Security baseline: procMount)"
            ),
        ),
        (
            json!({}),
            json!({"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}}),
            "spec.podTemplate.spec.securityContext.sysctls[0].name: \"net.core.somaxconn\" is not one of the safe sysctls (Pod Security baseline: sysctls)".to_owned(),
        ),
        (
            json!({"resources": {"limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "10Ti"}}}),
            json!({}),
            format!("{C0}.resources.limits[ephemeral-storage]: 10Ti exceeds the maximum 20Gi"),
        ),
        (
            json!({}),
            json!({"serviceAccountName": "builder", "automountServiceAccountToken": true}),
            "spec.podTemplate.spec.serviceAccountName: \"builder\" is not one of the allowed service accounts (default)".to_owned(),
        ),
        (
            json!({}),
            json!({"nodeName": "node-1"}),
            "spec.podTemplate.spec.nodeName: is not allowed: sandboxes are placed by the scheduler".to_owned(),
        ),
        (
            json!({}),
            json!({"tolerations": [{"operator": "Exists"}]}),
            "spec.podTemplate.spec.tolerations[0]: toleration {key: \"\", operator: \"Exists\", value: \"\", effect: \"\"} is not in allowedTolerations".to_owned(),
        ),
        (
            json!({"resources": {"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 1}}}),
            json!({}),
            format!("{C0}.resources.limits[nvidia.com/gpu]: nvidia.com/gpu is not in allowedExtendedResources"),
        ),
    ];
    for (container, pod, expected) in cases {
        let denied = denied_with(container.clone(), pod.clone());
        assert_eq!(denied, [expected], "{container} {pod}");
    }
    // Under restricted, Pod Security itself names nfs (once).
    let verdict = validate(
        SandboxKind::Sandbox,
        &Operation::Create,
        &sandbox_with(
            json!({}),
            json!({"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]}),
        ),
        None,
        &restricted(),
    );
    let nfs: Vec<_> = verdict
        .denials
        .iter()
        .filter(|d| d.path.ends_with("nfs"))
        .collect();
    assert_eq!(nfs.len(), 1, "{nfs:?}");
    assert!(
        nfs[0]
            .message
            .ends_with("(Pod Security restricted: restrictedVolumes)")
    );
}

#[test]
fn reserved_keys_are_refused_in_pod_template_metadata() {
    let mut sandbox = sandbox_with(json!({}), json!({}));
    sandbox["spec"]["podTemplate"]["metadata"] = json!({
        "labels": {"agents.x-k8s.io/sandbox": "someone-else", "app.kubernetes.io/managed-by": "sandbox-operator", "team": "a"},
        "annotations": {"extensions.agents.x-k8s.io/anything": "x", "note": "fine"},
    });
    for kind in [SandboxKind::Sandbox, SandboxKind::SandboxTemplate] {
        let denied = denials(&create(kind, &sandbox));
        assert_eq!(denied.len(), 3, "{denied:?}");
        assert!(denied[0].starts_with(
            "spec.podTemplate.metadata.labels[agents.x-k8s.io/sandbox]: \"agents.x-k8s.io/sandbox\" is a reserved key"
        ), "{denied:?}");
        assert!(denied[1].starts_with(
            "spec.podTemplate.metadata.labels[app.kubernetes.io/managed-by]: \"app.kubernetes.io/managed-by\" is a reserved key"
        ));
        assert!(denied[2].starts_with(
            "spec.podTemplate.metadata.annotations[extensions.agents.x-k8s.io/anything]"
        ));
    }
    for (key, reserved) in [
        ("agents.x-k8s.io/claim", true),
        ("extensions.agents.x-k8s.io/x", true),
        ("app.kubernetes.io/managed-by", true),
        ("app.kubernetes.io/name", false),
        ("agents.x-k8s.io.example.com/x", false),
        ("x-k8s.io/agents", false),
        ("sandbox", false),
    ] {
        assert_eq!(crate::admission::is_reserved_key(key), reserved, "{key}");
    }
}

#[test]
fn allow_lists_open_what_the_admin_chose() {
    let policy = Policy::from_yaml(
        "allowedServiceAccounts: [default, builder]\n\
         allowedExtendedResources: [nvidia.com/gpu]\n\
         allowedTolerations: [{key: sandbox-only, operator: Exists, effect: NoSchedule}]\n\
         ceilings: {ephemeral-storage: null}\n",
    )
    .unwrap();
    let check = |container: Value, pod: Value| denied_under(&policy, container, pod);
    assert!(check(json!({}), json!({"serviceAccountName": "builder"})).is_empty());
    assert!(
        check(
            json!({"resources": {"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 1, "ephemeral-storage": "1Ti"}}}),
            json!({})
        )
        .is_empty()
    );
    assert!(
        check(
            json!({}),
            json!({"tolerations": [{"key": "sandbox-only", "operator": "Exists", "effect": "NoSchedule"}]})
        )
        .is_empty()
    );
    assert_eq!(
        check(
            json!({}),
            json!({"tolerations": [{"key": "sandbox-only", "operator": "Exists", "effect": "NoExecute"}]})
        )
        .len(),
        1
    );
}

#[test]
fn token_automount_is_refused_under_restricted_and_warned_under_baseline() {
    let pod = json!({"automountServiceAccountToken": true,
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}});
    let container = json!({"securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}});
    let verdict = validate(
        SandboxKind::Sandbox,
        &Operation::Create,
        &sandbox_with(container.clone(), pod.clone()),
        None,
        &restricted(),
    );
    assert_eq!(
        denials(&verdict),
        [
            "spec.podTemplate.spec.automountServiceAccountToken: must not be true under the restricted profile: code in the sandbox could call the Kubernetes API"
        ]
    );
    let verdict = create(SandboxKind::Sandbox, &sandbox_with(container, pod));
    assert!(verdict.allowed());
    assert_eq!(verdict.warnings.len(), 1, "{:?}", verdict.warnings);
}

#[test]
fn sandbox_and_claim_names_fit_a_label_value() {
    let long = "a".repeat(64);
    let mut sandbox = aio_sandbox();
    sandbox["metadata"]["name"] = json!(long);
    assert_eq!(
        denials(&create(SandboxKind::Sandbox, &sandbox)),
        ["metadata.name: 64 characters is longer than 63: the name is used as a label value"]
    );
    sandbox["metadata"]["name"] = json!("a".repeat(63));
    assert!(create(SandboxKind::Sandbox, &sandbox).allowed());

    let mut generated = claim();
    generated["metadata"] = json!({"generateName": "b".repeat(59)});
    assert_eq!(
        denials(&create(SandboxKind::SandboxClaim, &generated)),
        [
            "metadata.generateName: 59 characters plus 5 generated ones is longer than 63: the name is used as a label value"
        ]
    );
    generated["metadata"] = json!({"generateName": "b".repeat(58)});
    assert!(create(SandboxKind::SandboxClaim, &generated).allowed());
}

/// A pool's name is its Pods' pool label (and its `status.selector`), a
/// template's their template label: both fit a label value, or every Pod
/// create of the pool is refused (422). Judged on CREATE: a stored one's
/// updates are not refused for it (its pool reports it instead).
#[test]
fn pool_and_template_names_fit_a_label_value() {
    let template = object_from_yaml(include_str!("../../../../examples/template.yaml"));
    for (kind, object) in [
        (SandboxKind::SandboxWarmPool, pool(2)),
        (SandboxKind::SandboxTemplate, template),
    ] {
        let mut named = object.clone();
        named["metadata"]["name"] = json!("t".repeat(64));
        assert_eq!(
            denials(&create(kind, &named)),
            ["metadata.name: 64 characters is longer than 63: the name is used as a label value"],
            "{kind:?}"
        );
        assert!(update(kind, &named, &named).allowed(), "{kind:?}");
        named["metadata"]["name"] = json!("t".repeat(63));
        assert!(create(kind, &named).allowed(), "{kind:?}");
        let mut generated = object.clone();
        generated["metadata"] = json!({"generateName": "g".repeat(59)});
        assert_eq!(
            denials(&create(kind, &generated)),
            [
                "metadata.generateName: 59 characters plus 5 generated ones is longer than 63: the name is used as a label value"
            ],
            "{kind:?}"
        );
    }
}

/// Every template reference (a claim's, a pool's) names a template whose
/// name becomes a label value: at most 63 characters.
#[test]
fn template_references_fit_a_label_value() {
    for (kind, object) in [
        (SandboxKind::SandboxWarmPool, pool(2)),
        (SandboxKind::SandboxClaim, claim()),
    ] {
        let mut long = object.clone();
        long["spec"]["sandboxTemplateRef"]["name"] = json!("a".repeat(64));
        assert_eq!(
            denials(&create(kind, &long)),
            [
                "spec.sandboxTemplateRef.name: 64 characters is longer than 63: the template's name is used as a label value"
            ],
            "{kind:?}"
        );
        long["spec"]["sandboxTemplateRef"]["name"] = json!(format!("{}.b", "a".repeat(61)));
        assert!(create(kind, &long).allowed(), "{kind:?}: 63 characters");
    }
    // A pool moved to a long name is refused too (the reference changed).
    let mut moved = pool(2);
    moved["spec"]["sandboxTemplateRef"]["name"] = json!("a".repeat(64));
    assert_eq!(
        denials(&update(SandboxKind::SandboxWarmPool, &moved, &pool(2))),
        [
            "spec.sandboxTemplateRef.name: 64 characters is longer than 63: the template's name is used as a label value"
        ]
    );
}

/// A Sandbox's name is its Service's, a claim's its Sandbox's: both must
/// be DNS-1035 labels, or the Service create fails after a warm Pod was
/// taken. Judged on CREATE only (a name never changes).
#[test]
fn sandbox_and_claim_names_are_service_names() {
    for (kind, object, owner) in [
        (
            SandboxKind::Sandbox,
            aio_sandbox(),
            "the Sandbox's Service takes this name",
        ),
        (
            SandboxKind::SandboxClaim,
            claim(),
            "the claim's Sandbox and its Service take this name",
        ),
    ] {
        for bad in ["agent.1", "1agent", "agent-"] {
            let mut named = object.clone();
            named["metadata"]["name"] = json!(bad);
            assert_eq!(
                denials(&create(kind, &named)),
                [format!(
                    "metadata.name: {bad:?} is not a valid Service name (a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit): {owner}"
                )]
            );
            // Stored before the webhook: its updates are not refused for it.
            assert!(update(kind, &named, &named).allowed(), "{bad}");
        }
        let mut named = object.clone();
        named["metadata"]["name"] = json!("agent-1");
        assert!(create(kind, &named).allowed());
        let mut generated = object.clone();
        generated["metadata"] = json!({"generateName": "9-"});
        assert_eq!(
            denials(&create(kind, &generated)),
            [format!(
                "metadata.generateName: \"9-\" cannot begin a valid Service name (a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit): {owner}"
            )]
        );
        generated["metadata"] = json!({"generateName": "agent-"});
        assert!(create(kind, &generated).allowed());
    }
}

#[test]
fn a_claims_admission_stamp_cannot_be_changed() {
    let mut stamped = claim();
    stamped["metadata"]["annotations"] =
        json!({"agents.x-k8s.io/admitted-at": "2026-03-01T12:00:00.000000001Z"});
    let mut forged = stamped.clone();
    forged["metadata"]["annotations"]["agents.x-k8s.io/admitted-at"] =
        json!("2020-01-01T00:00:00.000000000Z");
    let update = |new: &Value, old: &Value| denials(&update(SandboxKind::SandboxClaim, new, old));
    assert_eq!(
        update(&forged, &stamped),
        [
            "metadata.annotations[agents.x-k8s.io/admitted-at]: is set by the admission webhook when the claim is created and cannot be changed"
        ]
    );
    assert_eq!(
        update(&claim(), &stamped).len(),
        1,
        "removing it is a change"
    );
    assert!(update(&stamped, &stamped).is_empty());
}
