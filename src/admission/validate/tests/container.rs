//! Container rules: images and soft findings.

use super::*;

#[test]
fn images_without_a_pinned_tag_are_warned_about() {
    for (image, warned) in [
        ("busybox", true),
        ("busybox:latest", true),
        ("registry:5000/team/busybox", true),
        ("registry:5000/team/busybox:1.36", false),
        ("busybox@sha256:0123", false),
        ("runzhliu/sandbox-openclaw-opencode:1.0.0.152", false),
    ] {
        let verdict = create_sandbox_with(json!({"image": image}), json!({}));
        assert!(verdict.allowed());
        assert_eq!(
            verdict.warnings.len(),
            usize::from(warned),
            "{image}: {:?}",
            verdict.warnings
        );
    }
    assert_eq!(
        denied_with(json!({"image": ""}), json!({})),
        [format!("{C0}.image: is required")]
    );
}

#[test]
fn soft_findings_are_warnings() {
    let verdict = create_sandbox_with(
        json!({"securityContext": {"allowPrivilegeEscalation": true}, "resources": {"requests": {"cpu": "1"}}}),
        json!({"automountServiceAccountToken": true}),
    );
    assert!(verdict.allowed());
    assert_eq!(
        verdict.warnings,
        [
            "spec.podTemplate.spec.automountServiceAccountToken: mounts the service account token, so code in the sandbox can call the Kubernetes API".to_owned(),
            format!("{C0}.securityContext.allowPrivilegeEscalation: is true, so setuid binaries in the sandbox can gain privileges"),
            format!("{C0}.resources.limits.cpu: is not set, so the container's cpu is unbounded"),
            format!("{C0}.resources.limits.memory: is not set, so the container's memory is unbounded"),
        ]
    );
}
