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
