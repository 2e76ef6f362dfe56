//! The gaps security reviews found admitted: projected service account
//! tokens and pod certificates, priority, dynamic resource allocation and
//! claim templates that pick their volume. Each is refused with its field
//! path and admitted where the policy allows it.

use super::*;

const POD: &str = "spec.podTemplate.spec";

fn restricted() -> Policy {
    Policy::from_yaml("profile: restricted").unwrap()
}

/// A pod spec with a projected volume whose second source is a token.
fn projected_token() -> Value {
    json!({"volumes": [
        {"name": "cfg", "configMap": {"name": "c"}},
        {"name": "token", "projected": {"sources": [
            {"configMap": {"name": "c"}},
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
        ]}},
    ]})
}

/// Container and pod fields that pass every restricted check, plus `extra`
/// pod fields.
fn restricted_ready(extra: Value) -> (Value, Value) {
    let container = json!({"securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}});
    let mut pod = json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}});
    pod.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    (container, pod)
}

#[test]
fn a_projected_token_is_denied_under_restricted() {
    let (container, pod) = restricted_ready(projected_token());
    assert_eq!(
        denied_under(&restricted(), container, pod),
        [format!(
            "{POD}.volumes[1].projected.sources[1].serviceAccountToken: a projected service account token is not allowed under the restricted profile \
             (as automountServiceAccountToken: true is not): the sandbox would get a Kubernetes API token"
        )]
    );
}

#[test]
fn a_projected_volume_without_a_token_is_admitted_and_a_token_is_warned_under_baseline() {
    let without = json!({"volumes": [{"name": "p", "projected": {"sources": [
        {"configMap": {"name": "c"}}, {"downwardAPI": {"items": []}}]}}]});
    let (container, pod) = restricted_ready(without);
    assert!(denied_under(&restricted(), container, pod).is_empty());

    let verdict = create_sandbox_with(json!({}), projected_token());
    assert!(verdict.allowed(), "{verdict:?}");
    assert_eq!(
        verdict.warnings,
        [format!(
            "{POD}.volumes[1].projected.sources[1].serviceAccountToken: projects a service account token, so code in the sandbox can call the Kubernetes API"
        )]
    );
    // A policy that mounts tokens anyway has nothing to warn about.
    let mounting = Policy::from_yaml("automountServiceAccountToken: true").unwrap();
    let verdict = validate(
        SandboxKind::Sandbox,
        &Operation::Create,
        &sandbox_with(json!({}), projected_token()),
        None,
        &mounting,
    );
    assert_eq!(verdict, Verdict::default());
}

/// A pod spec with a projected volume whose second source is a pod
/// certificate.
fn projected_pod_certificate() -> Value {
    json!({"volumes": [
        {"name": "cfg", "configMap": {"name": "c"}},
        {"name": "identity", "projected": {"sources": [
            {"configMap": {"name": "c"}},
            {"podCertificate": {"signerName": "example.com/sandbox", "keyType": "ED25519",
                "credentialBundlePath": "credentials.pem"}},
        ]}},
    ]})
}

#[test]
fn a_projected_pod_certificate_is_denied_where_a_token_would_be() {
    let (container, pod) = restricted_ready(projected_pod_certificate());
    assert_eq!(
        denied_under(&restricted(), container, pod),
        [format!(
            "{POD}.volumes[1].projected.sources[1].podCertificate: a projected pod certificate is not allowed \
             under the restricted profile (as automountServiceAccountToken: true is not): \
             the sandbox would get a client certificate for its ServiceAccount"
        )]
    );
    // Under baseline it is warned about, as a projected token is.
    let verdict = create_sandbox_with(json!({}), projected_pod_certificate());
    assert!(verdict.allowed(), "{verdict:?}");
    assert_eq!(
        verdict.warnings,
        [format!(
            "{POD}.volumes[1].projected.sources[1].podCertificate: projects a pod certificate, \
             so code in the sandbox gets a client certificate for its ServiceAccount"
        )]
    );
    // One source of each in the same volume: both are named.
    let both = json!({"volumes": [{"name": "p", "projected": {"sources": [
        {"podCertificate": {"signerName": "example.com/sandbox", "keyType": "ED25519"}},
        {"serviceAccountToken": {"path": "token"}},
    ]}}]});
    let (container, pod) = restricted_ready(both);
    let denied = denied_under(&restricted(), container, pod);
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(denied[0].starts_with(&format!(
        "{POD}.volumes[0].projected.sources[0].podCertificate: "
    )));
    assert!(denied[1].starts_with(&format!(
        "{POD}.volumes[0].projected.sources[1].serviceAccountToken: "
    )));
}

#[test]
fn a_priority_class_outside_the_allow_list_is_denied() {
    assert_eq!(
        denied_with(
            json!({}),
            json!({"priorityClassName": "system-node-critical"})
        ),
        [format!(
            "{POD}.priorityClassName: \"system-node-critical\" is not in allowedPriorityClasses (none): \
             a priority class decides which Pods are preempted to make room"
        )]
    );
    let policy = Policy::from_yaml("allowedPriorityClasses: [sandbox-low, sandbox-high]").unwrap();
    assert_eq!(
        denied_under(&policy, json!({}), json!({"priorityClassName": "critical"})),
        [format!(
            "{POD}.priorityClassName: \"critical\" is not in allowedPriorityClasses (sandbox-low, sandbox-high): \
             a priority class decides which Pods are preempted to make room"
        )]
    );
}

#[test]
fn an_allowed_priority_class_is_admitted() {
    let policy = Policy::from_yaml("allowedPriorityClasses: [sandbox-low]").unwrap();
    assert!(
        denied_under(
            &policy,
            json!({}),
            json!({"priorityClassName": "sandbox-low"})
        )
        .is_empty()
    );
    // Unset and empty mean no class.
    assert!(denied_with(json!({}), json!({"priorityClassName": ""})).is_empty());
    assert!(denied_with(json!({}), json!({})).is_empty());
}

#[test]
fn a_priority_integer_is_denied_even_with_an_allowed_class() {
    let policy = Policy::from_yaml("allowedPriorityClasses: [sandbox-low]").unwrap();
    let expected = [format!(
        "{POD}.priority: must not be set: the API server computes a Pod's priority from its priorityClassName"
    )];
    assert_eq!(
        denied_under(
            &policy,
            json!({}),
            json!({"priorityClassName": "sandbox-low", "priority": 1_000_000})
        ),
        expected
    );
    assert_eq!(denied_with(json!({}), json!({"priority": 0})), expected);
    assert_eq!(
        denied_with(json!({}), json!({"priority": "high"})),
        [format!("{POD}.priority: must be an integer")]
    );
}

#[test]
fn resource_claims_are_denied_unless_the_policy_allows_them() {
    let rule = "is not allowed while allowResourceClaims is false: \
                devices allocated through dynamic resource allocation bypass allowedExtendedResources";
    let claims = json!({"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "claims": [{"name": "gpu"}]}});
    let pod = json!({
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "gpu-template"}],
        "initContainers": [{"name": "i", "image": "a:1",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "claims": [{"name": "gpu"}]}}],
    });
    assert_eq!(
        denied_with(claims.clone(), pod.clone()),
        [
            format!("{POD}.resourceClaims: {rule}"),
            format!("{POD}.initContainers[0].resources.claims: {rule}"),
            format!("{C0}.resources.claims: {rule}"),
        ]
    );
    let allowing = Policy::from_yaml("allowResourceClaims: true").unwrap();
    assert!(denied_under(&allowing, claims, pod).is_empty());
}

#[test]
fn empty_resource_claim_lists_are_admitted() {
    assert!(
        denied_with(
            json!({"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "claims": []}}),
            json!({"resourceClaims": []})
        )
        .is_empty()
    );
}

/// The seed Sandbox with these claim templates.
fn sandbox_with_claims(claims: Value) -> Value {
    let mut sandbox = aio_sandbox();
    sandbox["spec"]["volumeClaimTemplates"] = claims;
    sandbox
}

fn work_claim(extra: Value) -> Value {
    let mut spec =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"metadata": {"name": "work"}, "spec": spec})
}

const VOLUME_NAME_RULE: &str = "spec.volumeClaimTemplates[1].spec.volumeName: \"pv-of-someone-else\" pre-binds the claim to a PersistentVolume: \
     the operator creates claims with its own identity and will not bind a claim to a volume the template picks";
const SELECTOR_RULE: &str = "spec.volumeClaimTemplates[1].spec.selector: binds the claim to existing PersistentVolumes by label: \
     the operator creates claims with its own identity and will not bind a claim to a volume the template picks";

#[test]
fn claim_templates_that_pick_their_volume_are_denied_on_create_and_update() {
    let picking = json!([
        work_claim(json!({})),
        work_claim(
            json!({"volumeName": "pv-of-someone-else", "selector": {"matchLabels": {"team": "b"}}})
        ),
    ]);
    let sandbox = sandbox_with_claims(picking.clone());
    assert_eq!(
        denials(&create(SandboxKind::Sandbox, &sandbox)),
        [VOLUME_NAME_RULE, SELECTOR_RULE]
    );
    // An update that leaves the templates alone is not refused for them
    // (ratcheting: the Sandbox controller checks them again before it
    // creates the claims, see `check_volume_claim_templates`); one that
    // changes them is, and they are immutable on a Sandbox anyway.
    let mut paused = sandbox.clone();
    paused["spec"]["replicas"] = json!(0);
    assert!(update(SandboxKind::Sandbox, &paused, &sandbox).allowed());
    let mut changed = sandbox.clone();
    changed["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] = json!("fast");
    assert_eq!(
        denials(&update(SandboxKind::Sandbox, &changed, &sandbox)),
        [
            VOLUME_NAME_RULE,
            SELECTOR_RULE,
            "spec.volumeClaimTemplates: field is immutable"
        ]
    );
    // An empty selector still binds only static volumes.
    let empty_selector = sandbox_with_claims(json!([
        work_claim(json!({})),
        work_claim(json!({"selector": {}}))
    ]));
    assert_eq!(
        denials(&create(SandboxKind::Sandbox, &empty_selector)),
        [SELECTOR_RULE]
    );
}

#[test]
fn sandbox_templates_with_claim_templates_get_the_same_rule() {
    let mut template = object_from_yaml(include_str!("../../../../examples/template.yaml"));
    template["spec"]["volumeClaimTemplates"] = json!([
        work_claim(json!({})),
        work_claim(json!({"volumeName": "pv-of-someone-else"})),
    ]);
    assert_eq!(
        denials(&create(SandboxKind::SandboxTemplate, &template)),
        [VOLUME_NAME_RULE]
    );
}

#[test]
fn claim_templates_the_cluster_provisions_are_admitted() {
    let claims = json!([
        work_claim(json!({})),
        work_claim(json!({"storageClassName": "fast", "volumeName": ""})),
    ]);
    let sandbox = sandbox_with_claims(claims.clone());
    assert!(create(SandboxKind::Sandbox, &sandbox).allowed());
    let verdict = update(SandboxKind::Sandbox, &sandbox, &sandbox);
    assert!(verdict.allowed(), "{verdict:?}");
    let mut template = object_from_yaml(include_str!("../../../../examples/template.yaml"));
    template["spec"]["volumeClaimTemplates"] = claims;
    assert!(create(SandboxKind::SandboxTemplate, &template).allowed());
}

/// A container with 20,000 host ports breaks a rule once per port. The
/// answer lists the first 50 denials and a note, and the warnings are
/// bounded too: each denial used to be compared with all those before it,
/// so a body of a few MiB cost seconds of CPU (quadratic). The elapsed
/// time is printed, not asserted (run with `--nocapture`).
#[test]
fn a_rule_broken_once_per_list_item_lists_a_bounded_number_of_denials() {
    let ports: Vec<Value> = (1..=20_000)
        .map(|p| json!({"containerPort": p, "hostPort": p}))
        .collect();
    let started = std::time::Instant::now();
    let verdict = create_sandbox_with(json!({"ports": ports}), json!({}));
    eprintln!(
        "20,000 denied host ports validated in {:?}",
        started.elapsed()
    );
    let listed = denials(&verdict);
    assert_eq!(
        listed.len(),
        crate::admission::field::MAX_DENIALS + 1,
        "{listed:?}"
    );
    assert!(listed[0].contains(".ports[0].hostPort"), "{}", listed[0]);
    assert_eq!(
        listed.last().unwrap(),
        "and more: one answer lists at most 50 denials; fix these and try again"
    );
    assert!(verdict.warnings.len() <= super::super::MAX_WARNINGS);
}
