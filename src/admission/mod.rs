//! Admission policy for the four sandbox kinds: what the mutating webhook
//! defaults and what the validating webhook refuses.
//!
//! The transport (TLS, AdmissionReview decoding, routing) lives in the
//! `sandbox-webhook` crate; this module is the policy it calls. The flow of
//! one review:
//!
//! 1. [`SandboxAdmission`] receives the decoded request, recognises the kind
//!    by group and kind ([`SandboxKind`]) and takes a snapshot of the current
//!    [`Policy`] from its [`PolicyStore`]. Other kinds and subresources pass
//!    untouched.
//! 2. `/mutate` calls [`mutate`], a pure function of (kind, operation,
//!    object, policy, time) that returns the JSON patch to apply; `/validate`
//!    calls [`validate`], a pure function that returns a [`Verdict`]: denials
//!    (`path: rule`) and warnings. On UPDATE both look at the stored object
//!    too: a field's rules run only when the field changes, and a
//!    terminating object is checked for immutability only (`ratchet`).
//! 3. The outcome is reported to an optional observer, for metrics.
//!
//! The same pure functions back the offline check
//! (`sandbox-operator policy check FILE.yaml`, see [`check_objects`] and
//! [`run_policy_check`]), so a manifest can be tried against a policy
//! without a cluster.
//!
//! Malformed objects never panic: every field is read through typed
//! accessors that turn a wrong shape into a denial naming the field.

mod check;
mod field;
mod handler;
mod mutate;
mod policy;
pub mod pss;
mod quantity;
mod ratchet;
pub mod user_namespaces;
mod validate;

use kube::core::admission::Operation;

pub use check::{CheckError, CheckReport, check_object, check_objects, run_policy_check};
pub use field::Denial;
pub use handler::{AdmissionObserver, SandboxAdmission};
pub use mutate::mutate;
pub use policy::{
    Ceilings, Cidr, ComputeResource, DEFAULT_DENY_EGRESS, DEFAULT_POLICY_YAML, DefaultLimits,
    DefaultRequests, NetworkRules, Policy, PolicyError, PolicyStore, Profile, ResourceDefaults,
    StandalonePolicy, TolerationRule, everywhere_except, restrict_egress,
};
pub use quantity::{Quantity, QuantityError};
pub use user_namespaces::{UserNamespaces, UserNamespacesSetting};
pub use validate::{
    MAX_LABEL_VALUE, Verdict, is_reserved_key, label_value_rule, validate, validate_pool_scale,
};

use crate::api::{PersistentVolumeClaimTemplate, PodTemplate};

/// The kinds admission knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SandboxKind {
    /// `agents.x-k8s.io` Sandbox.
    Sandbox,
    /// `extensions.agents.x-k8s.io` SandboxTemplate.
    SandboxTemplate,
    /// `extensions.agents.x-k8s.io` SandboxClaim.
    SandboxClaim,
    /// `extensions.agents.x-k8s.io` SandboxWarmPool.
    SandboxWarmPool,
}

impl SandboxKind {
    /// All four kinds.
    pub const ALL: [SandboxKind; 4] = [
        SandboxKind::Sandbox,
        SandboxKind::SandboxTemplate,
        SandboxKind::SandboxClaim,
        SandboxKind::SandboxWarmPool,
    ];

    /// The kind's API group.
    pub fn group(self) -> &'static str {
        match self {
            SandboxKind::Sandbox => "agents.x-k8s.io",
            _ => "extensions.agents.x-k8s.io",
        }
    }

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxKind::Sandbox => "Sandbox",
            SandboxKind::SandboxTemplate => "SandboxTemplate",
            SandboxKind::SandboxClaim => "SandboxClaim",
            SandboxKind::SandboxWarmPool => "SandboxWarmPool",
        }
    }

    /// The kind with this group and kind name, if it is one of ours (any
    /// version: the shape admission looks at is the same in all of them).
    pub fn from_group_kind(group: &str, kind: &str) -> Option<SandboxKind> {
        SandboxKind::ALL
            .into_iter()
            .find(|known| known.group() == group && known.as_str() == kind)
    }

    /// The kind of a manifest, from its `apiVersion` (`group/version`) and `kind`.
    pub fn from_api_version_kind(api_version: &str, kind: &str) -> Option<SandboxKind> {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        SandboxKind::from_group_kind(group, kind)
    }
}

/// Why the policy's defaults could not be applied to an object.
#[derive(Debug)]
pub enum DefaultingError {
    /// [`mutate`] refused the object (a field it reads is malformed).
    Denied(Denial),
    /// The defaulting patch does not apply to the object.
    Patch(json_patch::PatchError),
}

/// Applies the policy's defaults to `object`, a `kind` being created now,
/// as the mutating webhook does ([`mutate`], then its patch). Returns
/// whether anything was added.
pub fn apply_create_defaults(
    kind: SandboxKind,
    object: &mut serde_json::Value,
    policy: &Policy,
) -> Result<bool, DefaultingError> {
    let now = jiff::Timestamp::now();
    let patch = mutate(kind, &Operation::Create, object, None, policy, now)
        .map_err(DefaultingError::Denied)?;
    if patch.is_empty() {
        return Ok(false);
    }
    json_patch::patch(object, &patch).map_err(DefaultingError::Patch)?;
    Ok(true)
}

/// Admits a pod template the way the webhook admits a Sandbox's
/// `spec.podTemplate`: the policy's defaults are applied first (as the
/// mutating webhook would), then every validation rule (Pod Security at the
/// policy's profile, the sandbox rules, resources, reserved keys). Returns
/// the defaulted template, or the denials with paths under
/// `spec.podTemplate`.
///
/// The controllers call this before creating any Pod, with the policy of the
/// moment (`PolicyStore::current()`), and build the Pod from the template it
/// returns: a template admitted under an older or laxer policy, or never
/// admitted at all (webhook off, excluded namespace), still cannot produce a
/// Pod the policy forbids, and the Pod carries every default the check
/// counted on (a restricted `securityContext`, the default runtime class,
/// resource limits), not only the template's own fields.
pub fn admit_pod_template(
    policy: &Policy,
    template: &PodTemplate,
) -> Result<PodTemplate, Vec<Denial>> {
    let root = field::FieldPath::root();
    let template_path = root.key("spec").key("podTemplate");
    let template = serde_json::to_value(template).map_err(|error| {
        vec![Denial::new(
            &template_path,
            format!("cannot be read: {error}"),
        )]
    })?;
    let mut object = serde_json::json!({"spec": {"podTemplate": template}});
    match apply_create_defaults(SandboxKind::SandboxTemplate, &mut object, policy) {
        Ok(_) => {}
        Err(DefaultingError::Denied(denial)) => return Err(vec![denial]),
        Err(DefaultingError::Patch(error)) => {
            let message = format!("the defaulting patch does not apply: {error}");
            return Err(vec![Denial::new(&root, message)]);
        }
    }
    let denials = validate::check_pod_template_value(
        policy,
        &object["spec"]["podTemplate"],
        &["spec", "podTemplate"],
    )
    .denials;
    if !denials.is_empty() {
        return Err(denials);
    }
    serde_json::from_value(object["spec"]["podTemplate"].take()).map_err(|error| {
        let message = format!("cannot be read after defaulting: {error}");
        vec![Denial::new(&template_path, message)]
    })
}

/// Checks a Sandbox's volume claim templates the way the webhook does (none
/// may pick its volume or copy another's data): the Sandbox controller
/// calls it before creating the claims, which it does with its own rights.
pub fn check_volume_claim_templates(
    policy: &Policy,
    templates: &[PersistentVolumeClaimTemplate],
) -> Vec<Denial> {
    match serde_json::to_value(templates) {
        Ok(value) => validate::check_volume_claim_templates_value(policy, &value).denials,
        Err(error) => vec![Denial::new(
            &field::FieldPath::root()
                .key("spec")
                .key("volumeClaimTemplates"),
            format!("cannot be read: {error}"),
        )],
    }
}

/// The denials of [`admit_pod_template`]; empty means a Pod may be created
/// from the defaulted template.
pub fn check_pod_template(policy: &Policy, template: &PodTemplate) -> Vec<Denial> {
    admit_pod_template(policy, template)
        .err()
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests;
