//! Builders shared by the warm-pool controller's unit tests (test builds
//! only): string maps for labels and annotations, and controller
//! ownerReferences.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// Labels or annotations from `(key, value)` pairs.
pub(super) fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An ownerReference to the `kind` named `name` with `uid`, the controller
/// one when `controller`.
pub(super) fn owner(kind: &str, name: &str, uid: &str, controller: bool) -> OwnerReference {
    OwnerReference {
        controller: Some(controller),
        ..crate::controller::test_pod::controller(kind, name, uid)
    }
}
