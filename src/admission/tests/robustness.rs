//! Malformed objects never panic, defaulting stays idempotent, and the kinds
//! match the CRD types.

use kube::Resource;
use kube::core::admission::Operation;
use serde_json::{Value, json};

use super::{aio_sandbox, claim, object_from_yaml, pool};
use crate::admission::{Policy, SandboxKind, mutate, validate};
use crate::api::{Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};

/// Every value inside `value`, replaced in turn by each of a few wrong
/// shapes.
fn variants(value: &Value) -> Vec<Value> {
    let replacements = [
        json!(null),
        json!(7),
        json!("x"),
        json!([]),
        json!({}),
        json!(true),
        json!([1]),
    ];
    let mut out = Vec::new();
    let mut pointers = Vec::new();
    fn walk(value: &Value, pointer: String, pointers: &mut Vec<String>) {
        pointers.push(pointer.clone());
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let token = key.replace('~', "~0").replace('/', "~1");
                    walk(child, format!("{pointer}/{token}"), pointers);
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    walk(child, format!("{pointer}/{index}"), pointers);
                }
            }
            _ => {}
        }
    }
    walk(value, String::new(), &mut pointers);
    for pointer in pointers {
        for replacement in &replacements {
            let mut variant = value.clone();
            match variant.pointer_mut(&pointer) {
                Some(slot) => *slot = replacement.clone(),
                None => continue,
            }
            out.push(variant);
        }
    }
    out
}

#[test]
fn malformed_variants_never_panic_and_defaulting_stays_idempotent() {
    let rich = object_from_yaml(
        "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: s, annotations: {a: b}}\nspec:\n  replicas: 1\n  podTemplate:\n    spec:\n      securityContext: {runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}\n      volumes: [{name: v, emptyDir: {}}]\n      initContainers: [{name: i, image: a:1}]\n      containers:\n      - name: c\n        image: a:1\n        ports: [{containerPort: 80, hostPort: 0}]\n        resources: {requests: {cpu: 1, memory: 1Gi}, limits: {memory: 2Gi}}\n        securityContext: {capabilities: {add: [CHOWN], drop: [NET_RAW]}, allowPrivilegeEscalation: false}\n",
    );
    let policies = [
        Policy::default(),
        Policy::from_yaml(
            "profile: restricted\ndefaultRuntimeClassName: gvisor\nallowedRuntimeClasses: [gvisor]",
        )
        .unwrap(),
    ];
    let now = jiff::Timestamp::now();
    for (kind, base) in [
        (SandboxKind::Sandbox, aio_sandbox()),
        (SandboxKind::Sandbox, rich.clone()),
        (SandboxKind::SandboxTemplate, rich),
        (SandboxKind::SandboxClaim, claim()),
        (SandboxKind::SandboxWarmPool, pool(2)),
    ] {
        for object in variants(&base) {
            for policy in &policies {
                let old = Some(&base);
                let _ = validate(kind, &Operation::Update, &object, old, policy);
                let _ = mutate(kind, &Operation::Update, &object, old, policy, now);
                let Ok(patch) = mutate(kind, &Operation::Create, &object, None, policy, now) else {
                    continue;
                };
                let mut patched = object.clone();
                json_patch::patch(&mut patched, &patch).unwrap_or_else(|e| panic!("{e}: {object}"));
                let again = mutate(kind, &Operation::Create, &patched, None, policy, now).unwrap();
                assert!(again.is_empty(), "{object} -> {again:?}");
                let _ = validate(kind, &Operation::Create, &patched, None, policy);
            }
        }
    }
}

#[test]
fn kinds_match_the_crd_types() {
    let types = [
        (Sandbox::group(&()), Sandbox::kind(&())),
        (SandboxTemplate::group(&()), SandboxTemplate::kind(&())),
        (SandboxClaim::group(&()), SandboxClaim::kind(&())),
        (SandboxWarmPool::group(&()), SandboxWarmPool::kind(&())),
    ];
    for (kind, (group, name)) in SandboxKind::ALL.into_iter().zip(types) {
        assert_eq!(
            (kind.group(), kind.as_str()),
            (group.as_ref(), name.as_ref())
        );
        assert_eq!(SandboxKind::from_group_kind(&group, &name), Some(kind));
    }
    assert_eq!(SandboxKind::from_group_kind("apps", "Sandbox"), None);
    assert_eq!(
        SandboxKind::from_api_version_kind("agents.x-k8s.io/v1alpha1", "Sandbox"),
        Some(SandboxKind::Sandbox)
    );
    assert_eq!(SandboxKind::from_api_version_kind("v1", "Pod"), None);
}
