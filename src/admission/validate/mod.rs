//! Validation: whether an object may be stored, and why not.
//!
//! Denied, per kind (each rule lives in the submodule named after it):
//!
//! - Sandbox and SandboxTemplate, in `spec.podTemplate`
//!   ([`pod`], [`container`], [`resources`], [`names`]):
//!   - every Pod Security Standards check of the policy's profile
//!     (`baseline` or `restricted`, see [`crate::admission::pss`]);
//!   - the sandbox rules beyond Pod Security: reserved label and annotation
//!     keys in the template metadata; capabilities outside the policy's
//!     allow-list; a `serviceAccountName` outside its allow-list; a mounted
//!     service account token under restricted, automounted or through a
//!     projected `serviceAccountToken` volume source; `nodeName`;
//!     tolerations outside the allow-list; a `priorityClassName` outside
//!     `allowedPriorityClasses`, and any `priority`; `runtimeClassName`
//!     outside the allow-list (when there is one); containers without an
//!     image; ephemeral containers (a Pod cannot be created with them);
//!   - resources: cpu, memory and ephemeral-storage above the ceilings,
//!     extended resources outside the allow-list, a request above its limit,
//!     resource claims (`spec.resourceClaims`, `resources.claims`) unless
//!     `allowResourceClaims` is true.
//! - Sandbox and SandboxTemplate, in `spec.volumeClaimTemplates[i].spec`
//!   ([`volume_claims`]): `volumeName` and `selector` (the operator will
//!   not bind a claim it creates to a volume the template picks).
//! - Sandbox: a name longer than 63 characters (it becomes a label value);
//!   `spec.replicas` outside 0..1; on UPDATE, any change to
//!   `spec.volumeClaimTemplates`.
//! - SandboxTemplate: on CREATE, a name longer than 63 characters (the
//!   template label of its Pods); in `spec.networkPolicy` ([`network`]), an
//!   `ipBlock` range not in canonical form, or an `except` entry not a
//!   smaller range of its block's family.
//! - SandboxClaim: a name longer than 63 characters; an empty or malformed
//!   `spec.sandboxTemplateRef.name`, or one longer than 63 characters; a
//!   `spec.warmpool` that is not `default`, `none` or a valid object name
//!   (the controller reads any other string as the name of one pool, so a
//!   typo would make the claim cold with no word); on UPDATE, any change to
//!   `spec.sandboxTemplateRef` or to the `admitted-at` stamp.
//! - SandboxWarmPool: on CREATE, a name longer than 63 characters (the pool
//!   label of its Pods); `spec.replicas` below 0 or above the policy's cap;
//!   an empty or malformed template name, or one longer than 63 characters.
//!   The template may change: that is how a pool is rolled to a new
//!   template.
//!
//! On UPDATE (ratcheting, see [`super::ratchet`]) the rules of a spec field
//! run only when the field differs from the stored object's, so a
//! metadata-only write (a label, an annotation, a finalizer) to an object a
//! tightened policy would now refuse is admitted; once
//! `metadata.deletionTimestamp` is set only the immutability rules run. The
//! immutability rules always run. The operator admits every pod template
//! again before it creates a Pod from it.
//!
//! Warned (admitted, with a message for the client): images without a tag
//! or tagged `latest`, `allowPrivilegeEscalation: true` under the baseline
//! profile, containers without cpu/memory limits, and a mounted service
//! account token (automounted or projected) or a projected pod certificate
//! under baseline when the policy would not mount a token.
//!
//! Every finding names the field and the rule, e.g.
//! `spec.podTemplate.spec.containers[0].resources.limits.memory: 128Gi exceeds the maximum 64Gi`.
//! All findings are collected (not just the first) so one round trip shows
//! everything to fix.

mod container;
mod names;
mod network;
mod pod;
mod resources;
#[cfg(test)]
mod tests;
mod volume_claims;

use kube::core::admission::Operation;
use serde_json::{Map, Value};

use super::field::{
    Denial, FieldPath, object_items, optional, optional_object, present, required_object,
};
use super::policy::{Policy, Profile};
use super::{SandboxKind, ratchet};

pub use names::{MAX_LABEL_VALUE, is_reserved_key, label_value_rule};
pub(crate) use pod::check_pod_template_value;
pub(crate) use volume_claims::check_volume_claim_templates_value;

/// The outcome of validating one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Why the object is refused; empty when it is admitted.
    pub denials: Vec<Denial>,
    /// Soft findings, returned to the client as warnings.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// Whether the object is admitted.
    pub fn allowed(&self) -> bool {
        self.denials.is_empty()
    }

    /// Every denial as `path: rule`, joined by `"; "`.
    pub fn message(&self) -> String {
        self.denials
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Validates `object`, a `kind` being admitted with `operation`; on UPDATE,
/// `old_object` is the stored version, used for the immutability rules and
/// for ratcheting: a spec field's rules run only when the field changed,
/// and a terminating object (`metadata.deletionTimestamp` set) is checked
/// for immutability only (see [`super::ratchet`]).
pub fn validate(
    kind: SandboxKind,
    operation: &Operation,
    object: &Value,
    old_object: Option<&Value>,
    policy: &Policy,
) -> Verdict {
    let mut validator = Validator::new(policy);
    let root = FieldPath::root();
    let Some(object) = object.as_object() else {
        validator.deny(&root, "the object must be a JSON object");
        return validator.verdict;
    };
    let old_object = match operation {
        Operation::Update => old_object.and_then(Value::as_object),
        _ => None,
    };
    let terminating = *operation == Operation::Update && ratchet::is_terminating(object);
    if !terminating {
        validator.object_name(kind, *operation == Operation::Create, object, &root);
    }
    if *operation == Operation::Create {
        validator.service_name(kind, object, &root);
    }
    let Some(spec) = validator.ok(required_object(object, "spec", &root)) else {
        return validator.verdict;
    };
    let spec_path = root.key("spec");
    let old_spec = ratchet::member(old_object, "spec");
    // Whether the rules over `spec[key]` run: on CREATE, and on an UPDATE
    // that changes the field, unless the object is terminating.
    let checks = |key: &str| !terminating && !ratchet::unchanged(spec, old_spec, key);
    match kind {
        SandboxKind::Sandbox | SandboxKind::SandboxTemplate => {
            if checks("podTemplate") {
                validator.pod_template(spec, &spec_path);
            }
            if checks("volumeClaimTemplates") {
                validator.volume_claim_templates(spec, &spec_path);
            }
            if kind == SandboxKind::Sandbox {
                if checks("replicas") {
                    validator.sandbox_replicas(spec, &spec_path);
                }
                if checks("shutdownTime") {
                    validator.shutdown_policy_default(spec, &spec_path);
                }
                if let Some(old_spec) = old_spec {
                    validator.immutable(spec, old_spec, "volumeClaimTemplates", &spec_path);
                }
            } else if checks("networkPolicy") {
                validator.network_policy(spec, &spec_path);
                validator.egress_left_out(spec, &spec_path);
            }
        }
        SandboxKind::SandboxClaim => {
            if checks("sandboxTemplateRef") {
                validator.template_ref(spec, &spec_path);
            }
            if checks("warmpool") {
                validator.warm_pool(spec, &spec_path);
            }
            if let Some(old_spec) = old_spec {
                validator.immutable(spec, old_spec, "sandboxTemplateRef", &spec_path);
            }
            if let Some(old_object) = old_object {
                validator.stamp_unchanged(object, old_object, &root);
            }
        }
        SandboxKind::SandboxWarmPool => {
            // Only growth is judged, as for a scale request: a pool above
            // a limit lowered since may step down (found by the second
            // read: the scale subresource allowed it, an edit did not).
            let lowered = spec
                .get("replicas")
                .and_then(Value::as_i64)
                .zip(old_spec.and_then(|old| old.get("replicas")?.as_i64()))
                .is_some_and(|(new, old)| (0..=old).contains(&new));
            if checks("replicas") && !lowered {
                validator.pool_replicas(spec, &spec_path);
            }
            if checks("sandboxTemplateRef") {
                validator.template_ref(spec, &spec_path);
            }
        }
    }
    validator.verdict
}

/// Validates a scale request on a pool (`sandboxwarmpools/scale`, what
/// `kubectl scale`, an HPA or KEDA send): an `autoscaling/v1` Scale whose
/// `spec.replicas` becomes the pool's, held to the same bound as a write of
/// the pool itself. A Scale leaves `spec.replicas` out for 0. The bound
/// applies only to growth: a request that keeps or lowers the stored size
/// (`old_object`) is admitted even above a policy tightened since, so an
/// autoscaler above the limit can still step down (found by the second
/// read: a pool at 50 under a limit lowered to 10 could not go to 40).
pub fn validate_pool_scale(object: &Value, old_object: Option<&Value>, policy: &Policy) -> Verdict {
    let mut validator = Validator::new(policy);
    let root = FieldPath::root();
    let Some(object) = object.as_object() else {
        validator.deny(&root, "the Scale must be a JSON object");
        return validator.verdict;
    };
    let Some(spec) = validator.ok(optional_object(object, "spec", &root)) else {
        return validator.verdict;
    };
    let spec_path = root.key("spec");
    let replicas = |spec: Option<&Map<String, Value>>| {
        spec.and_then(|spec| spec.get("replicas"))
            .cloned()
            .unwrap_or(Value::from(0))
    };
    let old_spec = ratchet::member(old_object.and_then(Value::as_object), "spec");
    let (asked, stored) = (replicas(spec), replicas(old_spec));
    if old_object.is_some()
        && (asked == stored
            || asked
                .as_i64()
                .zip(stored.as_i64())
                .is_some_and(|(asked, stored)| (0..=stored).contains(&asked)))
    {
        return validator.verdict;
    }
    let mut asked = spec.cloned().unwrap_or_default();
    asked.entry("replicas").or_insert(Value::from(0));
    validator.pool_replicas(&asked, &spec_path);
    validator.verdict
}

/// How many warnings one verdict carries at most (the API server passes
/// them to the client in headers; one per list item could be thousands).
pub(crate) const MAX_WARNINGS: usize = 20;

/// Collects the findings of one validation.
pub(crate) struct Validator<'p> {
    pub(crate) policy: &'p Policy,
    pub(crate) verdict: Verdict,
    /// The resources the pod being checked limits at pod level (its
    /// containers' own limits are then not needed to bound them).
    pub(crate) pod_limits: Vec<String>,
}

impl<'p> Validator<'p> {
    /// A validator with no findings yet, judging by `policy`.
    pub(crate) fn new(policy: &'p Policy) -> Self {
        Validator {
            policy,
            verdict: Verdict::default(),
            pod_limits: Vec::new(),
        }
    }
}

impl Validator<'_> {
    /// Records a denial, once (two rules may reach the same malformed field).
    pub(crate) fn deny(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.push(Denial::new(path, message));
    }

    /// Records a denial, once, up to [`MAX_DENIALS`](crate::admission::field::MAX_DENIALS).
    pub(crate) fn push(&mut self, denial: Denial) {
        crate::admission::field::record_denial(&mut self.verdict.denials, denial);
    }

    /// Records a warning, up to [`MAX_WARNINGS`].
    pub(crate) fn warn(&mut self, path: &FieldPath, message: impl std::fmt::Display) {
        if self.verdict.warnings.len() < MAX_WARNINGS {
            self.verdict.warnings.push(format!("{path}: {message}"));
        }
    }

    /// Records a malformed field as a denial and carries on without it.
    pub(crate) fn ok<T>(&mut self, read: Result<T, Denial>) -> Option<T> {
        read.map_err(|denial| self.push(denial)).ok()
    }

    /// `object[key]` as an object (`None` when absent; another type is a
    /// denial), with its path.
    pub(crate) fn object_field<'v>(
        &mut self,
        object: &'v Map<String, Value>,
        key: &'static str,
        path: &FieldPath,
    ) -> (FieldPath, Option<&'v Map<String, Value>>) {
        (
            path.key(key),
            self.ok(optional_object(object, key, path)).flatten(),
        )
    }

    /// The object field `child` of each object item of the list
    /// `object[list]`, with its path; items without it are skipped, and a
    /// wrong type on the way is a denial.
    pub(crate) fn item_fields<'v>(
        &mut self,
        object: &'v Map<String, Value>,
        list: &'static str,
        child: &'static str,
        path: &FieldPath,
    ) -> Vec<(FieldPath, &'v Map<String, Value>)> {
        let mut found = Vec::new();
        for (item_path, item) in self
            .ok(object_items(object, list, path))
            .unwrap_or_default()
        {
            if let Some(Some(field)) = self.ok(optional_object(item, child, &item_path)) {
                found.push((item_path.key(child), field));
            }
        }
        found
    }

    pub(crate) fn restricted(&self) -> bool {
        self.policy.profile == Profile::Restricted
    }

    fn immutable(
        &mut self,
        spec: &Map<String, Value>,
        old_spec: &Map<String, Value>,
        key: &'static str,
        spec_path: &FieldPath,
    ) {
        if present(spec, key) != present(old_spec, key) {
            self.deny(&spec_path.key(key), "field is immutable");
        }
    }

    /// A `shutdownTime` without a `shutdownPolicy` deletes the Sandbox, and
    /// with it its volume claims, when the time comes: the seed's (v0.1.0)
    /// default, which upstream agent-sandbox changed to `Retain` in v0.1.1.
    /// Admitted, with a warning naming the field, so that a manifest written
    /// for a later upstream does not lose its data unannounced (found by
    /// review).
    fn shutdown_policy_default(&mut self, spec: &Map<String, Value>, spec_path: &FieldPath) {
        if present(spec, "shutdownTime").is_some() && present(spec, "shutdownPolicy").is_none() {
            self.warn(
                &spec_path.key("shutdownPolicy"),
                "not set, so at spec.shutdownTime the Sandbox is deleted and its volume claims with it \
                 (Delete, the v0.1 default; upstream agent-sandbox v0.1.1 and later default to Retain): \
                 set Retain to keep them",
            );
        }
    }

    /// A template's `networkPolicy` that leaves `egress` out allows no
    /// egress at all, DNS included (as upstream agent-sandbox; before this
    /// version it meant unrestricted egress here): admitted, with a warning
    /// saying so and how to open it (found by the second read: the change
    /// cut a stored template's egress silently).
    fn egress_left_out(&mut self, spec: &Map<String, Value>, spec_path: &FieldPath) {
        if let Some(rules) = spec.get("networkPolicy").and_then(Value::as_object)
            && present(rules, "egress").is_none()
        {
            self.warn(
                &spec_path.key("networkPolicy").key("egress"),
                "not set, so sandboxes of this template get no egress at all, DNS included; \
                 `egress: [{}]` allows everywhere but the policy file's denied ranges",
            );
        }
    }

    fn sandbox_replicas(&mut self, spec: &Map<String, Value>, spec_path: &FieldPath) {
        if let Some(Some(replicas)) = self.ok(optional::<i64>(spec, "replicas", spec_path))
            && !(0..=1).contains(&replicas)
        {
            self.deny(
                &spec_path.key("replicas"),
                format!("{replicas} is outside the allowed range 0 to 1"),
            );
        }
    }

    fn pool_replicas(&mut self, spec: &Map<String, Value>, spec_path: &FieldPath) {
        let replicas_path = spec_path.key("replicas");
        let maximum = self.policy.max_pool_replicas;
        match self.ok(optional::<i64>(spec, "replicas", spec_path)) {
            Some(None) => self.deny(&replicas_path, "is required"),
            Some(Some(replicas)) if replicas < 0 => {
                self.deny(&replicas_path, format!("{replicas} must not be negative"));
            }
            Some(Some(replicas)) if replicas > i64::from(maximum) => {
                self.deny(
                    &replicas_path,
                    format!("{replicas} exceeds the maximum {maximum}"),
                );
            }
            _ => {}
        }
    }
}
