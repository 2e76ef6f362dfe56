//! The webhook handler end to end: both endpoints, joined denials and
//! warnings, claim stamps, skipped requests, policy reloads, the observer.

use std::sync::Arc;
use std::time::Duration;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use sandbox_webhook::{AdmissionHandler, Answered, Endpoint};
use serde_json::{Value, json};

use super::{aio_sandbox, claim, object_from_yaml, pool, request};
use crate::admission::{Policy, PolicyStore, SandboxAdmission, SandboxKind};
use crate::metrics::Metrics;

fn applied(response: &AdmissionResponse, object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(patch) = &response.patch {
        let patch: json_patch::Patch = serde_json::from_slice(patch).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    object
}

#[test]
fn the_seed_aio_sandbox_is_admitted_by_both_endpoints() {
    let handler = SandboxAdmission::new(PolicyStore::default());
    let aio = aio_sandbox();
    let mutated = handler.mutate(&request(
        SandboxKind::Sandbox,
        "CREATE",
        Some(aio.clone()),
        None,
    ));
    assert!(mutated.allowed);
    let aio_mutated = applied(&mutated, &aio);
    let validated = handler.validate(&request(
        SandboxKind::Sandbox,
        "CREATE",
        Some(aio_mutated.clone()),
        None,
    ));
    assert!(validated.allowed, "{}", validated.result.message);
    assert_eq!(validated.warnings, None);
    // The raw manifest is admitted too, when the mutating webhook is off.
    assert!(
        handler
            .validate(&request(SandboxKind::Sandbox, "CREATE", Some(aio), None))
            .allowed
    );
    // A second mutation changes nothing.
    let again = handler.mutate(&request(
        SandboxKind::Sandbox,
        "UPDATE",
        Some(aio_mutated.clone()),
        Some(aio_mutated),
    ));
    assert!(again.allowed);
    assert_eq!(again.patch, None);
}

#[test]
fn mutated_examples_pass_validation_under_both_profiles() {
    for policy in ["", "profile: restricted"] {
        let handler = SandboxAdmission::new(PolicyStore::new(Policy::from_yaml(policy).unwrap()));
        for (kind, object) in [
            (SandboxKind::Sandbox, aio_sandbox()),
            (
                SandboxKind::SandboxTemplate,
                object_from_yaml(include_str!("../../../examples/template.yaml")),
            ),
            (SandboxKind::SandboxClaim, claim()),
            (SandboxKind::SandboxWarmPool, pool(3)),
        ] {
            let mutated = applied(
                &handler.mutate(&request(kind, "CREATE", Some(object.clone()), None)),
                &object,
            );
            let response = handler.validate(&request(kind, "CREATE", Some(mutated), None));
            assert!(
                response.allowed,
                "{policy:?} {kind:?}: {}",
                response.result.message
            );
            assert_eq!(response.warnings, None, "{policy:?} {kind:?}");
        }
    }
}

#[test]
fn denials_are_joined_and_warnings_passed_on() {
    let handler = SandboxAdmission::new(PolicyStore::default());
    let mut sandbox = aio_sandbox();
    sandbox["spec"]["replicas"] = json!(2);
    sandbox["spec"]["podTemplate"]["spec"]["hostNetwork"] = json!(true);
    sandbox["spec"]["podTemplate"]["spec"]["containers"][0]["image"] = json!("busybox");
    let response = handler.validate(&request(
        SandboxKind::Sandbox,
        "CREATE",
        Some(sandbox),
        None,
    ));
    assert!(!response.allowed);
    assert_eq!(
        response.result.message,
        "spec.podTemplate.spec.hostNetwork: sharing the host's network namespace is not allowed \
         (Pod Security baseline: hostNamespaces); \
         spec.replicas: 2 is outside the allowed range 0 to 1"
    );
    assert_eq!(response.warnings.unwrap().len(), 1);
}

#[test]
fn claims_are_stamped_through_the_handler() {
    let handler = SandboxAdmission::new(PolicyStore::default());
    let response = handler.mutate(&request(
        SandboxKind::SandboxClaim,
        "CREATE",
        Some(claim()),
        None,
    ));
    let stamped = applied(&response, &claim());
    let stamp = stamped["metadata"]["annotations"][crate::api::ADMITTED_AT_ANNOTATION]
        .as_str()
        .unwrap();
    let parsed: jiff::Timestamp = stamp.parse().unwrap();
    assert!(parsed <= jiff::Timestamp::now());
    assert_eq!(
        stamp.len(),
        "2026-01-01T00:00:00.123456789Z".len(),
        "{stamp}"
    );
}

#[test]
fn malformed_sandboxes_are_denied_by_both_endpoints() {
    let handler = SandboxAdmission::new(PolicyStore::default());
    let broken = json!({"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "x"}, "spec": {"podTemplate": ["not", "an", "object"]}});
    for response in [
        handler.mutate(&request(
            SandboxKind::Sandbox,
            "CREATE",
            Some(broken.clone()),
            None,
        )),
        handler.validate(&request(
            SandboxKind::Sandbox,
            "CREATE",
            Some(broken.clone()),
            None,
        )),
    ] {
        assert!(!response.allowed);
        assert_eq!(
            response.result.message,
            "spec.podTemplate: must be an object"
        );
    }
}

#[test]
fn other_kinds_subresources_and_deletes_pass_untouched() {
    let handler = SandboxAdmission::new(PolicyStore::default());
    let mut pod = request(
        SandboxKind::Sandbox,
        "CREATE",
        Some(json!({"spec": {}})),
        None,
    );
    pod.kind.group = String::new();
    pod.kind.kind = "Pod".into();
    let response = handler.validate(&pod);
    assert!(response.allowed);
    assert_eq!(
        response.warnings.unwrap(),
        ["sandbox-operator admission does not handle /Pod; admitted unchanged"]
    );

    let mut status = request(
        SandboxKind::Sandbox,
        "UPDATE",
        Some(json!({"spec": {}})),
        Some(json!({"spec": {}})),
    );
    status.sub_resource = Some("status".into());
    assert!(handler.validate(&status).allowed);
    assert_eq!(handler.mutate(&status).patch, None);

    let delete = request(SandboxKind::Sandbox, "DELETE", None, Some(aio_sandbox()));
    assert!(handler.validate(&delete).allowed);
    assert!(handler.mutate(&delete).allowed);
}

#[test]
fn immutable_fields_are_enforced_through_the_handler() {
    let handler = SandboxAdmission::new(PolicyStore::default());
    let mut moved = claim();
    moved["spec"]["sandboxTemplateRef"]["name"] = json!("other");
    let response = handler.validate(&request(
        SandboxKind::SandboxClaim,
        "UPDATE",
        Some(moved),
        Some(claim()),
    ));
    assert!(!response.allowed);
    assert_eq!(
        response.result.message,
        "spec.sandboxTemplateRef: field is immutable"
    );
}

/// After the policy is tightened, a label on a stored Sandbox passes both
/// endpoints untouched, a change to its pod template is defaulted and
/// refused, and a terminating Sandbox can lose its finalizer.
#[test]
fn updates_after_a_policy_tightening_are_ratcheted_through_the_handler() {
    let store = PolicyStore::default();
    let handler = SandboxAdmission::new(store.clone());
    let created = handler.mutate(&request(
        SandboxKind::Sandbox,
        "CREATE",
        Some(aio_sandbox()),
        None,
    ));
    let stored = applied(&created, &aio_sandbox());
    store.replace(
        Policy::from_yaml("ceilings: {memory: 4Gi}\ndefaultRuntimeClassName: gvisor").unwrap(),
    );
    let both = |new: &Value, old: &Value| {
        let review = || {
            request(
                SandboxKind::Sandbox,
                "UPDATE",
                Some(new.clone()),
                Some(old.clone()),
            )
        };
        let mutated = handler.mutate(&review());
        assert!(mutated.allowed, "{}", mutated.result.message);
        let patched = applied(&mutated, new);
        let validated = handler.validate(&request(
            SandboxKind::Sandbox,
            "UPDATE",
            Some(patched),
            Some(old.clone()),
        ));
        (mutated.patch.is_some(), validated)
    };

    let mut labelled = stored.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    let (patched, validated) = both(&labelled, &stored);
    assert!(!patched);
    assert!(validated.allowed, "{}", validated.result.message);

    let mut retagged = stored.clone();
    retagged["spec"]["podTemplate"]["spec"]["containers"][0]["image"] = json!("a:2");
    let (patched, validated) = both(&retagged, &stored);
    assert!(patched);
    assert!(!validated.allowed);
    assert_eq!(
        validated.result.message,
        "spec.podTemplate.spec.containers[0].resources.limits.memory: 8Gi exceeds the maximum 4Gi"
    );

    let mut terminating = stored.clone();
    terminating["metadata"]["deletionTimestamp"] = json!("2026-03-01T12:00:00Z");
    terminating["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    let mut released = terminating.clone();
    released["metadata"]["finalizers"] = json!([]);
    let (patched, validated) = both(&released, &terminating);
    assert!(!patched);
    assert!(validated.allowed, "{}", validated.result.message);
}

#[test]
fn a_policy_reload_applies_to_the_next_review() {
    let store = PolicyStore::default();
    let handler = SandboxAdmission::new(store.clone());
    let review = || {
        handler.validate(&request(
            SandboxKind::SandboxWarmPool,
            "CREATE",
            Some(pool(50)),
            None,
        ))
    };
    assert!(review().allowed);
    store.replace(Policy::from_yaml("maxPoolReplicas: 10").unwrap());
    assert_eq!(
        review().result.message,
        "spec.replicas: 50 exceeds the maximum 10"
    );
}

#[test]
fn the_observer_sees_each_outcome() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let handler = SandboxAdmission::new(PolicyStore::default()).with_observer(
        move |kind, operation, endpoint, allowed, _| {
            sink.lock()
                .unwrap()
                .push(format!("{kind} {operation} {endpoint} {allowed}"));
        },
    );
    handler.observe(Answered {
        group: "agents.x-k8s.io",
        kind: "Sandbox",
        operation: &Operation::Create,
        allowed: false,
        endpoint: Endpoint::Validate,
        elapsed: Duration::from_millis(1),
    });
    assert_eq!(*seen.lock().unwrap(), ["Sandbox CREATE validate false"]);
    // A pool's scale request is counted as `Scale`; any other foreign kind
    // as `other` (the label stays bounded whatever a caller sends).
    for (group, kind) in [("autoscaling", "Scale"), ("apps", "Deployment")] {
        handler.observe(Answered {
            group,
            kind,
            operation: &Operation::Update,
            allowed: false,
            endpoint: Endpoint::Validate,
            elapsed: Duration::from_millis(1),
        });
    }
    assert_eq!(
        seen.lock().unwrap()[1..],
        ["Scale UPDATE validate false", "other UPDATE validate false"]
    );

    let metrics = Arc::new(Metrics::new());
    let handler = SandboxAdmission::new(PolicyStore::default()).with_metrics(Arc::clone(&metrics));
    handler.observe(Answered {
        group: "extensions.agents.x-k8s.io",
        kind: "SandboxClaim",
        operation: &Operation::Create,
        allowed: true,
        endpoint: Endpoint::Mutate,
        elapsed: Duration::from_micros(50),
    });
    assert!(metrics.encode().contains(
        "admission_requests_total{allowed=\"true\",endpoint=\"mutate\",kind=\"SandboxClaim\",operation=\"CREATE\"} 1"
    ));
}

/// A request refused before the policy saw it (here: overload) is counted
/// by endpoint and reason, so a replica answering 503s shows in the
/// operator's own metrics.
#[test]
fn a_refused_request_is_counted_by_reason() {
    let metrics = Arc::new(Metrics::new());
    let handler = SandboxAdmission::new(PolicyStore::default()).with_metrics(Arc::clone(&metrics));
    handler.observe_rejection(Endpoint::Mutate, &sandbox_webhook::Error::Overloaded);
    handler.observe_rejection(Endpoint::Mutate, &sandbox_webhook::Error::Overloaded);
    let text = metrics.encode();
    assert!(
        text.contains("admission_rejections_total{endpoint=\"mutate\",reason=\"overloaded\"} 2"),
        "{text}"
    );
}

/// Anyone who reaches the webhook's port writes the request's kind: a kind
/// that is not ours is counted as "other", so the metrics' series stay a
/// fixed handful however many kinds callers make up.
#[test]
fn a_made_up_kind_is_counted_as_other() {
    let metrics = Arc::new(Metrics::new());
    let handler = SandboxAdmission::new(PolicyStore::default()).with_metrics(Arc::clone(&metrics));
    for n in 0..200 {
        handler.observe(Answered {
            group: "agents.x-k8s.io",
            kind: &format!("MadeUp{n}"),
            operation: &Operation::Create,
            allowed: true,
            endpoint: Endpoint::Validate,
            elapsed: Duration::from_micros(5),
        });
    }
    // Our kind's name under another group is not ours either.
    handler.observe(Answered {
        group: "example.com",
        kind: "Sandbox",
        operation: &Operation::Create,
        allowed: true,
        endpoint: Endpoint::Validate,
        elapsed: Duration::from_micros(5),
    });
    let text = metrics.encode();
    assert!(!text.contains("MadeUp"), "a caller's kind became a label");
    assert!(text.contains(
        "admission_requests_total{allowed=\"true\",endpoint=\"validate\",kind=\"other\",operation=\"CREATE\"} 201"
    ), "{text}");
}

/// Claim CREATEs skip the validating webhook (its match condition), so the
/// mutating endpoint refuses a malformed one with the validator's message;
/// UPDATEs are left to the validating endpoint as before.
#[test]
fn the_mutating_endpoint_validates_claim_creates() {
    let handler = SandboxAdmission::new(PolicyStore::default());
    let mut bad = claim();
    bad["spec"]["sandboxTemplateRef"]["name"] = json!("Not_A_Name");
    let review = |operation: &str| {
        let old = (operation == "UPDATE").then(|| bad.clone());
        request(SandboxKind::SandboxClaim, operation, Some(bad.clone()), old)
    };
    let (mutated, validated) = (
        handler.mutate(&review("CREATE")),
        handler.validate(&review("CREATE")),
    );
    assert!(!mutated.allowed, "{mutated:?}");
    assert!(!validated.allowed);
    assert_eq!(mutated.result.message, validated.result.message);
    assert!(
        mutated
            .result
            .message
            .contains("spec.sandboxTemplateRef.name"),
        "{}",
        mutated.result.message
    );
    assert!(
        handler.mutate(&review("UPDATE")).allowed,
        "UPDATEs are the validating endpoint's"
    );
}

/// A review of a pool's scale subresource, as the API server sends it for
/// `kubectl scale`: the object is an `autoscaling/v1` Scale.
fn scale_request(replicas: Option<i64>, old: Option<i64>) -> AdmissionRequest<DynamicObject> {
    let scale = |replicas: Option<i64>| {
        let mut spec = serde_json::Map::new();
        if let Some(replicas) = replicas {
            spec.insert("replicas".into(), json!(replicas));
        }
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": spec, "status": {"replicas": 3, "selector": "x=y"}})
    };
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b6c6f7e-0000-4000-8000-000000000002",
            "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "resource": {"group": "extensions.agents.x-k8s.io", "version": "v1alpha1",
                "resource": "sandboxwarmpools"},
            "subResource": "scale",
            "name": "p",
            "namespace": "default",
            "operation": "UPDATE",
            "userInfo": {"username": "alice"},
            "object": scale(replicas),
            "oldObject": old.map(|old| scale(Some(old))),
        }
    });
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review).unwrap();
    review.try_into().unwrap()
}

#[test]
fn a_pool_scale_request_is_held_to_the_pools_replica_bound() {
    let store = PolicyStore::default();
    store.replace(Policy::from_yaml("maxPoolReplicas: 10").unwrap());
    let handler = SandboxAdmission::new(store);
    let refused = handler.validate(&scale_request(Some(50), Some(3)));
    assert!(!refused.allowed);
    assert_eq!(
        refused.result.message,
        "spec.replicas: 50 exceeds the maximum 10"
    );
    let negative = handler.validate(&scale_request(Some(-1), Some(3)));
    assert_eq!(
        negative.result.message,
        "spec.replicas: -1 must not be negative"
    );
    for (asked, old) in [(Some(10), Some(3)), (None, Some(3))] {
        let answer = handler.validate(&scale_request(asked, old));
        assert!(
            answer.allowed,
            "{asked:?} from {old:?}: {}",
            answer.result.message
        );
    }
    // A scale UPDATE without the stored Scale is malformed (the API server
    // always sends it): refused, not judged without it.
    let unstored = handler.validate(&scale_request(Some(4), None));
    assert!(!unstored.allowed);
    assert_eq!(
        unstored.result.message,
        "malformed AdmissionReview request: request.oldObject: is required for UPDATE"
    );
    // A request that keeps the stored size is not judged again: a pool
    // stored at 50 before the policy was tightened can still be re-applied,
    // only not grown.
    assert!(handler.validate(&scale_request(Some(50), Some(50))).allowed);
    assert!(!handler.validate(&scale_request(Some(51), Some(50))).allowed);
    // Nor stepping down: an autoscaler above a lowered limit comes back
    // under it one step at a time.
    assert!(handler.validate(&scale_request(Some(40), Some(50))).allowed);
    assert!(handler.validate(&scale_request(None, Some(50))).allowed);
    // An edit of the pool itself follows the same rule.
    let edit = |new: i64, old: i64| {
        handler.validate(&request(
            SandboxKind::SandboxWarmPool,
            "UPDATE",
            Some(pool(new)),
            Some(pool(old)),
        ))
    };
    assert!(edit(40, 50).allowed);
    assert_eq!(
        edit(51, 50).result.message,
        "spec.replicas: 51 exceeds the maximum 10"
    );
    // The mutating webhook leaves a Scale as it is (it is not registered for
    // it; if it were called, it would still change nothing).
    let mutated = handler.mutate(&scale_request(Some(50), Some(3)));
    assert!(mutated.allowed && mutated.patch.is_none());
}

#[test]
fn a_scale_request_on_anything_but_a_pool_is_not_judged() {
    let store = PolicyStore::default();
    store.replace(Policy::from_yaml("maxPoolReplicas: 10").unwrap());
    let handler = SandboxAdmission::new(store);
    let mut request = scale_request(Some(50), Some(3));
    request.resource.resource = "deployments".into();
    request.resource.group = "apps".into();
    let answer = handler.validate(&request);
    assert!(answer.allowed, "{}", answer.result.message);
    assert!(
        answer
            .warnings
            .is_some_and(|w| w[0].contains("does not handle autoscaling/Scale")),
        "a foreign kind is admitted with a warning"
    );
}

/// A CREATE or UPDATE of our kinds without `request.object` was admitted
/// unjudged, and an UPDATE without `request.oldObject` was judged without
/// its immutability rules (found by review): both are refused by both
/// endpoints, naming the member. DELETE and CONNECT are as before.
#[test]
fn a_create_or_update_without_its_objects_is_refused_naming_the_member() {
    let handler = SandboxAdmission::new(PolicyStore::default());
    let refused = |request: &AdmissionRequest<DynamicObject>, expected: &str| {
        for response in [handler.mutate(request), handler.validate(request)] {
            assert!(!response.allowed, "{expected}");
            assert_eq!(response.result.message, expected);
            assert_eq!(response.patch, None);
        }
    };
    for kind in SandboxKind::ALL {
        let object = match kind {
            SandboxKind::Sandbox => aio_sandbox(),
            SandboxKind::SandboxTemplate => {
                object_from_yaml(include_str!("../../../examples/template.yaml"))
            }
            SandboxKind::SandboxClaim => claim(),
            SandboxKind::SandboxWarmPool => pool(3),
        };
        refused(
            &request(kind, "CREATE", None, None),
            "malformed AdmissionReview request: request.object: is required for CREATE",
        );
        refused(
            &request(kind, "UPDATE", None, Some(object.clone())),
            "malformed AdmissionReview request: request.object: is required for UPDATE",
        );
        refused(
            &request(kind, "UPDATE", Some(object.clone()), None),
            "malformed AdmissionReview request: request.oldObject: is required for UPDATE",
        );
        for (operation, new, old) in [
            ("DELETE", None, Some(object.clone())),
            ("DELETE", None, None),
            ("CONNECT", None, None),
        ] {
            let request = request(kind, operation, new, old);
            assert!(handler.mutate(&request).allowed, "{kind:?} {operation}");
            assert!(handler.validate(&request).allowed, "{kind:?} {operation}");
        }
    }
    // Without its stored version, a claim moved to another template was
    // admitted: the immutability rule had nothing to compare with.
    let mut moved = claim();
    moved["spec"]["sandboxTemplateRef"]["name"] = json!("other");
    refused(
        &request(SandboxKind::SandboxClaim, "UPDATE", Some(moved), None),
        "malformed AdmissionReview request: request.oldObject: is required for UPDATE",
    );
    // A status write stays the operator's own, unjudged.
    let mut status = request(SandboxKind::Sandbox, "UPDATE", None, None);
    status.sub_resource = Some("status".into());
    assert!(handler.validate(&status).allowed);
}

/// Claim CREATEs are judged by the mutating endpoint only (see above), so
/// that is where a `spec.warmpool` naming no possible pool is refused.
#[test]
fn a_claims_bad_warm_pool_is_refused_when_it_is_created() {
    let handler = SandboxAdmission::new(PolicyStore::default());
    let mut bad = claim();
    bad["spec"]["warmpool"] = json!("Default");
    let response = handler.mutate(&request(
        SandboxKind::SandboxClaim,
        "CREATE",
        Some(bad.clone()),
        None,
    ));
    assert!(!response.allowed);
    assert!(
        response
            .result
            .message
            .starts_with("spec.warmpool: \"Default\" is not default, none or a pool name"),
        "{}",
        response.result.message
    );
    // Stored before the rule: a label still goes through both endpoints.
    let mut labelled = bad.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    let update = request(
        SandboxKind::SandboxClaim,
        "UPDATE",
        Some(labelled),
        Some(bad),
    );
    assert!(handler.mutate(&update).allowed);
    let validated = handler.validate(&update);
    assert!(validated.allowed, "{}", validated.result.message);
}
