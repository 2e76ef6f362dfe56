//! Resource rules: ceilings, requests above limits, bad quantities.

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
