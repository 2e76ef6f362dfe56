//! Ratcheting on UPDATE: after the policy is tightened, writes that leave
//! the pod template alone (a label, the operator's annotation patch, a
//! finalizer) are admitted; writes that change it are checked whole; a
//! terminating object is checked for immutability only.

use super::*;
use crate::admission::apply_create_defaults;
use crate::api::POD_NAME_ANNOTATION;

/// A policy tightened after the seed Sandbox was stored: its 8Gi memory
/// limit is above the new ceiling, and it has no runtime class.
fn tightened() -> Policy {
    Policy::from_yaml(
        "ceilings: {memory: 4Gi}\ndefaultRuntimeClassName: gvisor\nallowedRuntimeClasses: [gvisor]\n",
    )
    .unwrap()
}

const TIGHTENED_DENIALS: [&str; 2] = [
    "spec.podTemplate.spec.runtimeClassName: must be one of the allowed runtime classes (gvisor)",
    "spec.podTemplate.spec.containers[0].resources.limits.memory: 8Gi exceeds the maximum 4Gi",
];

/// `object` as the webhook stored it under the default policy.
fn stored(kind: SandboxKind, mut object: Value) -> Value {
    apply_create_defaults(kind, &mut object, &Policy::default()).unwrap();
    assert!(
        validate(kind, &Operation::Create, &object, None, &Policy::default()).allowed(),
        "{object}"
    );
    object
}

fn update_under(policy: &Policy, kind: SandboxKind, new: &Value, old: &Value) -> Vec<String> {
    denials(&validate(kind, &Operation::Update, new, Some(old), policy))
}

/// The writes that touch metadata only, each applied to `old`.
fn metadata_only_writes(old: &Value) -> Vec<(&'static str, Value)> {
    let mut labelled = old.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    let mut repointed = old.clone();
    repointed["metadata"]["annotations"] = json!({POD_NAME_ANNOTATION: "pool-pod-x7k2p"});
    let mut finalized = old.clone();
    finalized["metadata"]["finalizers"] = json!(["example.com/backup"]);
    vec![
        ("kubectl label", labelled),
        ("the operator's repoint patch", repointed),
        ("a finalizer", finalized),
    ]
}

#[test]
fn metadata_only_updates_are_admitted_after_the_policy_is_tightened() {
    let old = stored(SandboxKind::Sandbox, aio_sandbox());
    // The tightened policy would refuse the stored Sandbox as a new one.
    let created = validate(
        SandboxKind::Sandbox,
        &Operation::Create,
        &old,
        None,
        &tightened(),
    );
    assert_eq!(denials(&created), TIGHTENED_DENIALS);
    for (write, new) in metadata_only_writes(&old) {
        let verdict = validate(
            SandboxKind::Sandbox,
            &Operation::Update,
            &new,
            Some(&old),
            &tightened(),
        );
        assert_eq!(verdict, Verdict::default(), "{write}");
    }
    // A spec field other than the pod template may change too.
    let mut paused = old.clone();
    paused["spec"]["replicas"] = json!(0);
    assert!(update_under(&tightened(), SandboxKind::Sandbox, &paused, &old).is_empty());
}

#[test]
fn metadata_only_updates_of_a_template_are_admitted_after_the_policy_is_tightened() {
    let template = object_from_yaml(include_str!("../../../../examples/template.yaml"));
    let old = stored(SandboxKind::SandboxTemplate, template);
    let mut labelled = old.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    let strict = Policy::from_yaml("allowedRuntimeClasses: [gvisor]").unwrap();
    assert!(
        !validate(
            SandboxKind::SandboxTemplate,
            &Operation::Create,
            &labelled,
            None,
            &strict
        )
        .allowed()
    );
    assert!(update_under(&strict, SandboxKind::SandboxTemplate, &labelled, &old).is_empty());
}

#[test]
fn an_update_that_changes_the_pod_template_is_checked_whole() {
    let old = stored(SandboxKind::Sandbox, aio_sandbox());
    let mut retagged = old.clone();
    retagged["spec"]["podTemplate"]["spec"]["containers"][0]["image"] =
        json!("runzhliu/sandbox-openclaw-opencode:1.0.0.153");
    assert_eq!(
        update_under(&tightened(), SandboxKind::Sandbox, &retagged, &old),
        TIGHTENED_DENIALS
    );
    // A change to the template's own metadata is a change to the template.
    let mut relabelled = old.clone();
    relabelled["spec"]["podTemplate"]["metadata"]["labels"]["tier"] = json!("b");
    assert_eq!(
        update_under(&tightened(), SandboxKind::Sandbox, &relabelled, &old),
        TIGHTENED_DENIALS
    );
    // Without a stored version (never sent by the API server on UPDATE),
    // everything is checked.
    let verdict = validate(
        SandboxKind::Sandbox,
        &Operation::Update,
        &old,
        None,
        &tightened(),
    );
    assert_eq!(denials(&verdict), TIGHTENED_DENIALS);
}

#[test]
fn a_terminating_object_is_checked_for_immutability_only() {
    let mut old = stored(SandboxKind::Sandbox, aio_sandbox());
    old["metadata"]["deletionTimestamp"] = json!("2026-03-01T12:00:00Z");
    old["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    // The garbage collector removes its finalizer.
    let mut released = old.clone();
    released["metadata"]["finalizers"] = json!([]);
    assert_eq!(
        validate(
            SandboxKind::Sandbox,
            &Operation::Update,
            &released,
            Some(&old),
            &tightened()
        ),
        Verdict::default()
    );
    // Even with the pod template changed, only immutability is checked.
    let mut changed = released.clone();
    changed["spec"]["podTemplate"]["spec"]["hostNetwork"] = json!(true);
    changed["spec"]["replicas"] = json!(5);
    assert!(update_under(&tightened(), SandboxKind::Sandbox, &changed, &old).is_empty());
    changed["spec"]["volumeClaimTemplates"] = json!([]);
    assert_eq!(
        update_under(&tightened(), SandboxKind::Sandbox, &changed, &old),
        ["spec.volumeClaimTemplates: field is immutable"]
    );

    // A terminating claim still keeps its template and its stamp.
    let mut old_claim = claim();
    old_claim["metadata"]["annotations"] =
        json!({crate::api::ADMITTED_AT_ANNOTATION: "2026-03-01T12:00:00.000000000Z"});
    old_claim["metadata"]["deletionTimestamp"] = json!("2026-03-01T12:05:00Z");
    let mut moved = old_claim.clone();
    moved["spec"]["sandboxTemplateRef"]["name"] = json!("other");
    moved["metadata"]["annotations"] = json!({});
    assert_eq!(
        update_under(
            &Policy::default(),
            SandboxKind::SandboxClaim,
            &moved,
            &old_claim
        ),
        [
            "spec.sandboxTemplateRef: field is immutable",
            "metadata.annotations[agents.x-k8s.io/admitted-at]: is set by the admission webhook \
             when the claim is created and cannot be changed",
        ]
    );
}

#[test]
fn a_pool_above_a_lowered_cap_can_still_be_labelled_but_not_grown() {
    let small = Policy::from_yaml("maxPoolReplicas: 5").unwrap();
    let old = pool(10);
    let mut labelled = old.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    assert!(update_under(&small, SandboxKind::SandboxWarmPool, &labelled, &old).is_empty());
    assert_eq!(
        update_under(&small, SandboxKind::SandboxWarmPool, &pool(11), &old),
        ["spec.replicas: 11 exceeds the maximum 5"]
    );
}

/// A claim stored with a `spec.warmpool` the rule now refuses (before the
/// rule existed) stays writable: a label, a finalizer's removal and its
/// deletion pass; only a change of `spec.warmpool` is judged.
#[test]
fn a_claim_stored_with_a_bad_warm_pool_can_still_be_updated() {
    let mut old = claim();
    old["spec"]["warmpool"] = json!("Default");
    old["metadata"]["finalizers"] = json!(["example.com/keep"]);
    let policy = Policy::default();
    assert!(
        !validate(
            SandboxKind::SandboxClaim,
            &Operation::Create,
            &old,
            None,
            &policy
        )
        .allowed()
    );
    for (write, new) in metadata_only_writes(&old) {
        assert_eq!(
            update_under(&policy, SandboxKind::SandboxClaim, &new, &old),
            Vec::<String>::new(),
            "{write}"
        );
    }
    let mut released = old.clone();
    released["metadata"]["finalizers"] = json!([]);
    assert!(update_under(&policy, SandboxKind::SandboxClaim, &released, &old).is_empty());
    let mut terminating = old.clone();
    terminating["metadata"]["deletionTimestamp"] = json!("2026-03-01T12:05:00Z");
    let mut released = terminating.clone();
    released["metadata"]["finalizers"] = json!([]);
    assert!(update_under(&policy, SandboxKind::SandboxClaim, &released, &terminating).is_empty());
    // A change is judged: to another bad value it is refused, to a good one admitted.
    let mut retyped = old.clone();
    retyped["spec"]["warmpool"] = json!("Bad Pool!");
    let refused = update_under(&policy, SandboxKind::SandboxClaim, &retyped, &old);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].starts_with("spec.warmpool: \"Bad Pool!\" is not default, none or a pool name"),
        "{refused:?}"
    );
    let mut fixed = old.clone();
    fixed["spec"]["warmpool"] = json!("default");
    assert!(update_under(&policy, SandboxKind::SandboxClaim, &fixed, &old).is_empty());
}
