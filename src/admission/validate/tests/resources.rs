//! Resource rules: ceilings, requests above limits, bad quantities, of
//! containers and of the pod as a whole (`spec.resources`).

use super::*;

#[test]
fn a_limit_above_the_ceiling_names_field_and_maximum() {
    let denied = denied_with(
        json!({"resources": {"limits": {"memory": "128Gi"}}}),
        json!({}),
    );
    assert_eq!(
        denied,
        [
            "spec.podTemplate.spec.containers[0].resources.limits.memory: 128Gi exceeds the maximum 64Gi"
        ]
    );
    let denied = denied_with(
        json!({"resources": {"limits": {"cpu": 17}, "requests": {"cpu": "20"}}}),
        json!({}),
    );
    assert_eq!(
        denied,
        [
            format!("{C0}.resources.limits.cpu: 17 exceeds the maximum 16"),
            format!("{C0}.resources.requests.cpu: 20 exceeds the maximum 16"),
            format!("{C0}.resources.requests.cpu: 20 exceeds the limit 17"),
        ]
    );
}

#[test]
fn requests_above_limits_are_denied_for_any_resource() {
    let denied = denied_with(
        json!({"resources": {
            "requests": {"cpu": "2", "memory": "512Mi", "ephemeral-storage": "2Gi"},
            "limits": {"cpu": "1500m", "memory": "1Gi", "ephemeral-storage": "1Gi"}}}),
        json!({}),
    );
    assert_eq!(
        denied,
        [
            format!("{C0}.resources.requests.cpu: 2 exceeds the limit 1500m"),
            format!("{C0}.resources.requests[ephemeral-storage]: 2Gi exceeds the limit 1Gi"),
        ]
    );
}

#[test]
fn bad_quantities_are_denied() {
    let denied = denied_with(
        json!({"resources": {"limits": {"cpu": "-1", "memory": "8GB"}}}),
        json!({}),
    );
    assert_eq!(
        denied,
        [
            format!("{C0}.resources.limits.cpu: -1 must not be negative"),
            format!("{C0}.resources.limits.memory: \"8GB\" is not a Kubernetes quantity"),
        ]
    );
}

const POD_RESOURCES: &str = "spec.podTemplate.spec.resources";

#[test]
fn a_pod_level_limit_bounds_containers_without_their_own() {
    let manifest = |budget: &str| {
        format!(
            "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {{name: b}}\nspec:\n  podTemplate:\n    spec:\n      resources: {budget}\n      containers:\n      - {{name: c, image: \"busybox:1.36\"}}\n"
        )
    };
    let unbounded = |budget: &str| -> Vec<String> {
        let report = crate::admission::check_object(
            &object_from_yaml(&manifest(budget)),
            &Policy::default(),
        );
        assert!(report.handled);
        assert!(denials(&report.verdict).is_empty(), "{:?}", report.verdict);
        report
            .verdict
            .warnings
            .into_iter()
            .filter(|w| w.contains("is unbounded"))
            .collect()
    };
    // Limited at pod level: no container default, and no warning.
    assert!(unbounded("{limits: {cpu: \"1\", memory: 1Gi}}").is_empty());
    // A pod-level request only gets its limit from defaulting: still none.
    assert!(unbounded("{requests: {cpu: 500m}}").is_empty());
}

#[test]
fn a_pod_level_request_above_the_ceiling_is_denied_naming_the_field() {
    // The containers are left to the defaults, as the review found.
    let manifest = "\
apiVersion: agents.x-k8s.io/v1alpha1
kind: Sandbox
metadata: {name: big}
spec:
  podTemplate:
    spec:
      resources: {requests: {cpu: \"200\", memory: 1Ti}}
      containers:
      - {name: c, image: \"busybox:1.36\"}
";
    let report = crate::admission::check_object(&object_from_yaml(manifest), &Policy::default());
    // Defaulting gave the pod-level requests their limits (max(request,
    // default limit)), which are over the ceilings too.
    assert_eq!(
        denials(&report.verdict),
        [
            format!("{POD_RESOURCES}.limits.cpu: 200 exceeds the maximum 16"),
            format!("{POD_RESOURCES}.requests.cpu: 200 exceeds the maximum 16"),
            format!("{POD_RESOURCES}.limits.memory: 1Ti exceeds the maximum 64Gi"),
            format!("{POD_RESOURCES}.requests.memory: 1Ti exceeds the maximum 64Gi"),
        ]
    );
    // Limits, ephemeral storage, extended resources, bad amounts and a
    // request above its limit get the same rules as a container's.
    let denied = denied_with(
        json!({}),
        json!({"resources": {
            "limits": {"cpu": "32", "memory": "-1", "ephemeral-storage": "1Ti", "nvidia.com/gpu": "1"},
            "requests": {"cpu": "4", "memory": "8GB"}}}),
    );
    assert_eq!(
        denied,
        [
            format!("{POD_RESOURCES}.requests.memory: \"8GB\" is not a Kubernetes quantity"),
            format!("{POD_RESOURCES}.limits.memory: -1 must not be negative"),
            format!("{POD_RESOURCES}.limits.cpu: 32 exceeds the maximum 16"),
            format!("{POD_RESOURCES}.limits[ephemeral-storage]: 1Ti exceeds the maximum 20Gi"),
            format!(
                "{POD_RESOURCES}.limits[nvidia.com/gpu]: nvidia.com/gpu is not in allowedExtendedResources"
            ),
        ]
    );
    assert_eq!(
        denied_with(
            json!({}),
            json!({"resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "2"}}})
        ),
        [format!(
            "{POD_RESOURCES}.requests.cpu: 3 exceeds the limit 2"
        )]
    );
}

#[test]
fn a_pod_level_resource_claim_is_denied_unless_the_policy_allows_them() {
    let pod = json!({"resources": {"requests": {"cpu": "1"}, "claims": [{"name": "gpu"}]}});
    assert_eq!(
        denied_with(json!({}), pod.clone()),
        [format!(
            "{POD_RESOURCES}.claims: is not allowed while allowResourceClaims is false: \
             devices allocated through dynamic resource allocation bypass allowedExtendedResources"
        )]
    );
    let allowing = Policy::from_yaml("allowResourceClaims: true").unwrap();
    assert!(denied_under(&allowing, json!({}), pod).is_empty());
}

#[test]
fn pod_level_amounts_within_the_ceilings_are_admitted() {
    let pod = json!({"resources": {
        "requests": {"cpu": "16", "memory": "64Gi", "ephemeral-storage": "20Gi"},
        "limits": {"cpu": "16", "memory": "64Gi"}}});
    assert_eq!(create_sandbox_with(json!({}), pod), Verdict::default());
    // An extended resource the policy allows is admitted at pod level too.
    let gpus = Policy::from_yaml("allowedExtendedResources: [nvidia.com/gpu]").unwrap();
    assert!(
        denied_under(
            &gpus,
            json!({}),
            json!({"resources": {"limits": {"nvidia.com/gpu": "1"}}})
        )
        .is_empty()
    );
}
