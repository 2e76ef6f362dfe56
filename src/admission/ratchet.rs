//! Ratcheting: what an UPDATE is checked for.
//!
//! The policy decides what may be *written*, not what may stay stored. If
//! an UPDATE were checked against every rule, then once an admin tightens
//! the policy (or an upgrade adds a rule) every write to an object stored
//! before would be refused, whoever makes it and whatever it changes: the
//! operator's merge patch of a Sandbox annotation, `kubectl label`, and the
//! garbage collector removing the `foregroundDeletion` finalizer, which
//! leaves the object stuck Terminating. So, on UPDATE:
//!
//! - the rules over a spec field (the pod template, the volume claim
//!   templates, the replicas, a template reference) run only when that field
//!   differs from the stored object's (an explicit `null` is the same as
//!   absent); a changed pod template is checked whole;
//! - once `metadata.deletionTimestamp` is set (only a DELETE sets it), only
//!   the immutability rules run: the object is on its way out;
//! - the immutability rules always run;
//! - the mutating webhook adds no default to an unchanged pod template, nor
//!   to a terminating object, so its patch never makes an unchanged template
//!   look changed.
//!
//! Nothing a rule refuses can reach a Pod this way: the operator admits a
//! pod template again, in-process, with the policy of the moment, before it
//! creates anything from it ([`super::admit_pod_template`] in the Sandbox
//! and pool controllers before every Pod, `controller::admit::admit_sandbox`
//! before every Sandbox it creates for a claim, and
//! [`super::check_volume_claim_templates`] before a Sandbox's claims). A
//! stored object the current policy refuses starts nothing (the Sandbox,
//! pool or claim says why in its status); it only stays writable, so it can
//! be labelled, fixed or deleted.

use serde_json::{Map, Value};

use super::field::present;

/// Whether `object` is being deleted: its `metadata.deletionTimestamp` is
/// set.
pub(crate) fn is_terminating(object: &Map<String, Value>) -> bool {
    object
        .get("metadata")
        .and_then(Value::as_object)
        .and_then(|metadata| present(metadata, "deletionTimestamp"))
        .is_some()
}

/// Whether `object[key]` is the same as in `old`, the stored version of the
/// same object (`None` on CREATE, so nothing is unchanged).
pub(crate) fn unchanged(
    object: &Map<String, Value>,
    old: Option<&Map<String, Value>>,
    key: &str,
) -> bool {
    old.is_some_and(|old| present(object, key) == present(old, key))
}

/// The object member `key` of `object`, if it is one (for the stored
/// version's `spec`, which is only compared, never reported on).
pub(crate) fn member<'v>(
    object: Option<&'v Map<String, Value>>,
    key: &str,
) -> Option<&'v Map<String, Value>> {
    object?.get(key)?.as_object()
}
