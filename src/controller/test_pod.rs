//! A Pod for unit tests: the identity fields the controllers read (name,
//! namespace `ns`, uid `uid-<name>`, resourceVersion), the rest for each
//! test to set.

use k8s_openapi::api::core::v1::Pod;
use kube::api::ObjectMeta;

/// The Pod `ns/name` at resourceVersion `version`, with uid `uid-<name>`.
pub(crate) fn named(name: &str, version: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some(version.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The status of a Running Pod whose Ready condition is True (add the
/// rest, e.g. Pod IPs, with struct update syntax).
pub(crate) fn ready_status() -> k8s_openapi::api::core::v1::PodStatus {
    k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// A controller ownerReference to one of the operator's kinds, with the
/// API group of that kind (the operator counts no other).
pub(crate) fn controller(
    kind: &str,
    name: &str,
    uid: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    let group = if kind == "Sandbox" {
        "agents.x-k8s.io"
    } else {
        "extensions.agents.x-k8s.io"
    };
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: format!("{group}/v1alpha1"),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// A core `v1` Pod owner reference (not controller) to Pod `p` of `uid`.
pub(crate) fn pod_owner(
    uid: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: "p".into(),
        uid: uid.into(),
        ..Default::default()
    }
}
