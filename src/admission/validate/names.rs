//! Names and keys: object name lengths, template references, a claim's
//! warm pool choice, the reserved label and annotation keys of pod
//! templates, and the admission stamp.
//!
//! Guarantees: every name the operator writes into a label value fits one
//! (63 characters): a Sandbox's, a SandboxClaim's, a SandboxWarmPool's
//! (its Pods' pool labels), a SandboxTemplate's and every
//! `spec.sandboxTemplateRef.name` (the Pods' template label, which a claim
//! matches); no pod
//! template carries a key the operator uses to recognise its own Pods
//! (those are written by the operator only, so a user cannot forge a pool
//! member or point a Pod at someone else's Sandbox); a claim's
//! `admitted-at` stamp never changes after admission.

use serde_json::{Map, Value};

use super::super::SandboxKind;
use super::super::field::{FieldPath, optional, optional_object, present, required_object};
use super::Validator;
use crate::api::ADMITTED_AT_ANNOTATION;
use crate::api::dns::{is_dns1035_label, is_dns1123_subdomain};

/// The longest label value, and so the longest name of any of the four
/// kinds, and of a template reference.
pub const MAX_LABEL_VALUE: usize = 63;

/// The characters the API server appends to a `generateName` prefix.
const GENERATED_SUFFIX: usize = 5;

/// The label key the operator marks its objects with.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

pub use crate::api::is_reserved_key;

/// The rule `name` breaks when the operator uses it as a label value and
/// it is longer than one may be; `whose` names it in the message ("the
/// name", "the template's name"). `None` when it fits. Pure: the webhook
/// and the pool (for objects stored without the webhook) say the same.
pub fn label_value_rule(name: &str, whose: &str) -> Option<String> {
    let length = name.chars().count();
    (length > MAX_LABEL_VALUE).then(|| {
        format!(
            "{length} characters is longer than {MAX_LABEL_VALUE}: {whose} is used as a label value"
        )
    })
}

impl Validator<'_> {
    /// Names become label values: at most 63 characters (a `generateName`
    /// prefix leaves room for the 5 generated ones). Sandbox and claim
    /// names are judged on every write; pool and template names on CREATE
    /// only (a name never changes, and one stored before this rule is
    /// reported by its pool instead of refusing its updates).
    pub(super) fn object_name(
        &mut self,
        kind: SandboxKind,
        create: bool,
        object: &Map<String, Value>,
        root: &FieldPath,
    ) {
        if !create && !matches!(kind, SandboxKind::Sandbox | SandboxKind::SandboxClaim) {
            return;
        }
        let Some(Some(metadata)) = self.ok(optional_object(object, "metadata", root)) else {
            return;
        };
        let metadata_path = root.key("metadata");
        if let Some(Some(name)) = self.ok(optional::<&str>(metadata, "name", &metadata_path))
            && let Some(rule) = label_value_rule(name, "the name")
        {
            self.deny(&metadata_path.key("name"), rule);
        }
        let generated = present(metadata, "name").is_none();
        if generated
            && let Some(Some(prefix)) =
                self.ok(optional::<&str>(metadata, "generateName", &metadata_path))
            && prefix.chars().count() + GENERATED_SUFFIX > MAX_LABEL_VALUE
        {
            self.deny(
                &metadata_path.key("generateName"),
                format!(
                    "{} characters plus {GENERATED_SUFFIX} generated ones is longer than \
                     {MAX_LABEL_VALUE}: the name is used as a label value",
                    prefix.chars().count()
                ),
            );
        }
    }

    /// On CREATE: a Sandbox's name is its Service's, and a claim's is its
    /// Sandbox's, so both must be DNS-1035 labels (a Service name); the API
    /// server would refuse the Service only after the claim had taken a
    /// warm Pod. A `generateName` prefix must start with a letter and use
    /// only lowercase letters, digits and '-' (the generated characters are
    /// letters and digits). Names never change, so an UPDATE is not judged.
    pub(super) fn service_name(
        &mut self,
        kind: SandboxKind,
        object: &Map<String, Value>,
        root: &FieldPath,
    ) {
        let owner = match kind {
            SandboxKind::Sandbox => "the Sandbox's Service takes this name",
            SandboxKind::SandboxClaim => "the claim's Sandbox and its Service take this name",
            _ => return,
        };
        let Some(Some(metadata)) = self.ok(optional_object(object, "metadata", root)) else {
            return;
        };
        let metadata_path = root.key("metadata");
        const RULE: &str = "lowercase letters, digits and '-', starting with a letter and \
                            ending with a letter or digit";
        if let Some(Some(name)) = self.ok(optional::<&str>(metadata, "name", &metadata_path))
            && name.chars().count() <= MAX_LABEL_VALUE
            && !is_dns1035_label(name)
        {
            self.deny(
                &metadata_path.key("name"),
                format!("{name:?} is not a valid Service name (a DNS-1035 label: {RULE}): {owner}"),
            );
        }
        if present(metadata, "name").is_none()
            && let Some(Some(prefix)) =
                self.ok(optional::<&str>(metadata, "generateName", &metadata_path))
            && !(prefix.starts_with(|c: char| c.is_ascii_lowercase())
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            self.deny(
                &metadata_path.key("generateName"),
                format!(
                    "{prefix:?} cannot begin a valid Service name (a DNS-1035 label: {RULE}): {owner}"
                ),
            );
        }
    }

    /// `spec.sandboxTemplateRef.name` of a claim or a pool: a template's
    /// name, so a valid object name that fits a label value (the Pods'
    /// template label).
    pub(super) fn template_ref(&mut self, spec: &Map<String, Value>, spec_path: &FieldPath) {
        let Some(reference) = self.ok(required_object(spec, "sandboxTemplateRef", spec_path))
        else {
            return;
        };
        let reference_path = spec_path.key("sandboxTemplateRef");
        let name_path = reference_path.key("name");
        match self.ok(optional::<&str>(reference, "name", &reference_path)) {
            Some(None | Some("")) => self.deny(&name_path, "must not be empty"),
            Some(Some(name)) if !is_dns1123_subdomain(name) => self.deny(
                &name_path,
                format!(
                    "{name:?} is not a valid object name (lowercase letters, digits, '-' and '.', \
                     starting and ending with a letter or digit, at most 253 characters)"
                ),
            ),
            Some(Some(name)) => {
                if let Some(rule) = label_value_rule(name, "the template's name") {
                    self.deny(&name_path, rule);
                }
            }
            _ => {}
        }
    }

    /// A claim's `spec.warmpool`: `default` (any pool of the template),
    /// `none` (always cold) or the name of one pool, so a valid object name.
    /// The claim controller reads every other string as a pool's name
    /// (`controller::claim::desired::pool_choice`), so `Default` or a typo
    /// would name a pool that cannot exist and the claim would start cold
    /// with no warning. Absent, `null` and `""` mean `default`, as there.
    pub(super) fn warm_pool(&mut self, spec: &Map<String, Value>, spec_path: &FieldPath) {
        let Some(Some(choice)) = self.ok(optional::<&str>(spec, "warmpool", spec_path)) else {
            return;
        };
        if matches!(choice, "" | "default" | "none") || is_dns1123_subdomain(choice) {
            return;
        }
        self.deny(
            &spec_path.key("warmpool"),
            format!(
                "{choice:?} is not default, none or a pool name (a valid object name: lowercase \
                 letters, digits, '-' and '.', starting and ending with a letter or digit, at \
                 most 253 characters)"
            ),
        );
    }

    /// Labels and annotations of a pod template may not use reserved keys.
    pub(super) fn template_metadata(
        &mut self,
        template: &Map<String, Value>,
        template_path: &FieldPath,
    ) {
        let Some(Some(metadata)) = self.ok(optional_object(template, "metadata", template_path))
        else {
            return;
        };
        let metadata_path = template_path.key("metadata");
        for section in ["labels", "annotations"] {
            let Some(Some(keys)) = self.ok(optional_object(metadata, section, &metadata_path))
            else {
                continue;
            };
            for key in keys.keys().filter(|key| is_reserved_key(key)) {
                self.deny(
                    &metadata_path.key(section).key(key.clone()),
                    format!(
                        "{key:?} is a reserved key: agents.x-k8s.io/*, \
                         extensions.agents.x-k8s.io/* and {MANAGED_BY} are set by the operator only"
                    ),
                );
            }
        }
    }

    /// On UPDATE a claim keeps the `admitted-at` stamp the webhook gave it.
    pub(super) fn stamp_unchanged(
        &mut self,
        object: &Map<String, Value>,
        old_object: &Map<String, Value>,
        root: &FieldPath,
    ) {
        let stamp = |object: &Map<String, Value>| {
            object
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(ADMITTED_AT_ANNOTATION))
                .cloned()
        };
        if stamp(object) != stamp(old_object) {
            self.deny(
                &root
                    .key("metadata")
                    .key("annotations")
                    .key(ADMITTED_AT_ANNOTATION),
                "is set by the admission webhook when the claim is created and cannot be changed",
            );
        }
    }
}
