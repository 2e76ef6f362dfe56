//! Pod-level rules of a pod template: Pod Security at the policy's profile,
//! and the sandbox rules that Pod Security does not cover (service account
//! and its credentials, an automounted or projected token or a projected
//! pod certificate, node pinning, tolerations, priority, runtime class,
//! pod-level resources, ephemeral containers, at least one container).

use serde_json::{Map, Value};

use super::super::field::{FieldPath, List, object_items, optional, present, required_object};
use super::super::policy::{Policy, TolerationRule};
use super::super::pss;
use super::{Validator, Verdict};

/// A projected volume source that hands the sandbox a credential for its
/// ServiceAccount, and what is said about it.
struct ProjectedCredential {
    /// The key of the source in `projected.sources[i]`.
    source: &'static str,
    /// The rule, under the restricted profile.
    denial: &'static str,
    /// The warning, under baseline when the policy would not mount a token.
    warning: &'static str,
}

const PROJECTED_CREDENTIALS: [ProjectedCredential; 2] = [
    ProjectedCredential {
        source: "serviceAccountToken",
        denial: "a projected service account token is not allowed under the restricted profile \
                 (as automountServiceAccountToken: true is not): the sandbox would get a Kubernetes API token",
        warning: "projects a service account token, so code in the sandbox can call the Kubernetes API",
    },
    ProjectedCredential {
        source: "podCertificate",
        denial: "a projected pod certificate is not allowed under the restricted profile \
                 (as automountServiceAccountToken: true is not): the sandbox would get a client certificate \
                 for its ServiceAccount",
        warning: "projects a pod certificate, so code in the sandbox gets a client certificate for its ServiceAccount",
    },
];

/// Validates a pod template given as JSON (`{metadata, spec}`) at
/// `template_path`, with every rule a Sandbox's `spec.podTemplate` gets.
pub(crate) fn check_pod_template_value(
    policy: &Policy,
    template: &Value,
    template_path_keys: &[&'static str],
) -> Verdict {
    let mut validator = Validator::new(policy);
    let mut path = FieldPath::root();
    for key in template_path_keys {
        path = path.key(*key);
    }
    match template.as_object() {
        Some(template) => validator.pod_template_at(template, &path),
        None => validator.deny(&path, "must be an object"),
    }
    validator.verdict
}

impl Validator<'_> {
    pub(super) fn pod_template(&mut self, spec: &Map<String, Value>, spec_path: &FieldPath) {
        if let Some(template) = self.ok(required_object(spec, "podTemplate", spec_path)) {
            self.pod_template_at(template, &spec_path.key("podTemplate"));
        }
    }

    fn pod_template_at(&mut self, template: &Map<String, Value>, template_path: &FieldPath) {
        self.template_metadata(template, template_path);
        let Some(pod_spec) = self.ok(required_object(template, "spec", template_path)) else {
            return;
        };
        let spec_path = template_path.key("spec");
        let metadata = template.get("metadata").and_then(Value::as_object);
        for denial in pss::check_pod(
            self.policy.pod_security(),
            metadata,
            &template_path.key("metadata"),
            pod_spec,
            &spec_path,
        ) {
            self.push(denial);
        }
        self.pod_spec(pod_spec, &spec_path);
    }

    fn pod_spec(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        self.runtime_class(spec, path);
        self.service_account(spec, path);
        self.projected_credentials(spec, path);
        self.node_placement(spec, path);
        self.priority(spec, path);
        self.volume_types(spec, path);
        self.pod_resource_claims(spec, path);
        self.pod_resources(spec, path);
        if let Some(Some(ephemeral)) = self.ok(optional::<List>(spec, "ephemeralContainers", path))
            && !ephemeral.is_empty()
        {
            self.deny(
                &path.key("ephemeralContainers"),
                "ephemeral containers cannot be part of a pod template",
            );
        }
        if let Some(None) = self
            .ok(optional::<List>(spec, "containers", path))
            .map(|list| list.filter(|items| !items.is_empty()))
        {
            self.deny(
                &path.key("containers"),
                "at least one container is required",
            );
        }
        for list in ["initContainers", "containers"] {
            for (container_path, container) in
                self.ok(object_items(spec, list, path)).unwrap_or_default()
            {
                self.container(container, &container_path);
            }
        }
    }

    fn runtime_class(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        let Some(allowed) = &self.policy.allowed_runtime_classes else {
            return;
        };
        let class_path = path.key("runtimeClassName");
        match self.ok(optional::<&str>(spec, "runtimeClassName", path)) {
            Some(Some(class)) if allowed.iter().any(|a| a == class) => {}
            Some(Some(class)) => self.deny(
                &class_path,
                format!(
                    "{class:?} is not one of the allowed runtime classes ({})",
                    allowed.join(", ")
                ),
            ),
            Some(None) => self.deny(
                &class_path,
                format!(
                    "must be one of the allowed runtime classes ({})",
                    allowed.join(", ")
                ),
            ),
            None => {}
        }
    }

    /// The service account comes from the allow-list; its token is never
    /// mounted under restricted (a warning under baseline when the policy
    /// would not mount it).
    fn service_account(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        let allowed = &self.policy.allowed_service_accounts;
        for key in ["serviceAccountName", "serviceAccount"] {
            if let Some(Some(account)) = self.ok(optional::<&str>(spec, key, path))
                && !account.is_empty()
                && !allowed.iter().any(|a| a == account)
            {
                self.deny(
                    &path.key(key),
                    format!(
                        "{account:?} is not one of the allowed service accounts ({})",
                        allowed.join(", ")
                    ),
                );
            }
        }
        let automount_path = path.key("automountServiceAccountToken");
        if let Some(Some(true)) =
            self.ok(optional::<bool>(spec, "automountServiceAccountToken", path))
        {
            if self.restricted() {
                self.deny(
                    &automount_path,
                    "must not be true under the restricted profile: code in the sandbox could call the Kubernetes API",
                );
            } else if !self.policy.automount_service_account_token {
                self.warn(
                    &automount_path,
                    "mounts the service account token, so code in the sandbox can call the Kubernetes API",
                );
            }
        }
    }

    /// A projected `serviceAccountToken` source mounts a token whatever
    /// `automountServiceAccountToken` says, and a projected `podCertificate`
    /// source gives the sandbox a client certificate for its ServiceAccount
    /// (the kubelet makes the key, a signer certifies it): both follow the rule
    /// of the automounted token, denied under restricted, warned about under
    /// baseline when the policy would not mount a token.
    fn projected_credentials(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        for (projected_path, projected) in self.item_fields(spec, "volumes", "projected", path) {
            for (source_path, source) in self
                .ok(object_items(projected, "sources", &projected_path))
                .unwrap_or_default()
            {
                for credential in PROJECTED_CREDENTIALS {
                    if present(source, credential.source).is_none() {
                        continue;
                    }
                    let credential_path = source_path.key(credential.source);
                    if self.restricted() {
                        self.deny(&credential_path, credential.denial);
                    } else if !self.policy.automount_service_account_token {
                        self.warn(&credential_path, credential.warning);
                    }
                }
            }
        }
    }

    /// `priorityClassName` only from `allowedPriorityClasses` (empty refuses
    /// every class): a class decides which Pods the scheduler preempts to
    /// make room. `priority` is never set in a template: the API server
    /// computes it from the class.
    fn priority(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        let allowed = &self.policy.allowed_priority_classes;
        if let Some(Some(class)) = self.ok(optional::<&str>(spec, "priorityClassName", path))
            && !class.is_empty()
            && !allowed.iter().any(|a| a == class)
        {
            let listed = if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            };
            self.deny(
                &path.key("priorityClassName"),
                format!(
                    "{class:?} is not in allowedPriorityClasses ({listed}): \
                     a priority class decides which Pods are preempted to make room"
                ),
            );
        }
        if let Some(Some(_)) = self.ok(optional::<i64>(spec, "priority", path)) {
            self.deny(
                &path.key("priority"),
                "must not be set: the API server computes a Pod's priority from its priorityClassName",
            );
        }
    }

    /// No pinning to a node (it bypasses the scheduler and its checks), and
    /// tolerations only from the allow-list.
    fn node_placement(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        if let Some(Some(node)) = self.ok(optional::<&str>(spec, "nodeName", path))
            && !node.is_empty()
        {
            self.deny(
                &path.key("nodeName"),
                "is not allowed: sandboxes are placed by the scheduler",
            );
        }
        for (toleration_path, toleration) in self
            .ok(object_items(spec, "tolerations", path))
            .unwrap_or_default()
        {
            let field = |key: &'static str| {
                optional::<&str>(toleration, key, &toleration_path)
                    .ok()
                    .flatten()
                    .unwrap_or("")
            };
            let (key, operator, value, effect) = (
                field("key"),
                field("operator"),
                field("value"),
                field("effect"),
            );
            if !self
                .policy
                .allowed_tolerations
                .iter()
                .any(|rule| rule.allows(key, operator, value, effect))
            {
                self.deny(
                    &toleration_path,
                    format!(
                        "toleration {{key: {key:?}, operator: {operator:?}, value: {value:?}, effect: {effect:?}}} \
                         is not in allowedTolerations"
                    ),
                );
            }
        }
    }
}

impl Validator<'_> {
    /// Volume sources only from `allowedVolumeTypes`; those Pod Security
    /// already refuses are reported once, by its check.
    fn volume_types(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        for (volume_path, volume) in self
            .ok(object_items(spec, "volumes", path))
            .unwrap_or_default()
        {
            let Some(kind) = volume
                .iter()
                .find(|(key, value)| key.as_str() != "name" && !value.is_null())
                .map(|(key, _)| key.as_str())
            else {
                continue; // no source: the API server makes it an emptyDir
            };
            if pss::allows_volume_type(self.policy.profile, kind)
                && !self.policy.allowed_volume_types.iter().any(|t| t == kind)
            {
                self.deny(
                    &volume_path.key(kind.to_owned()),
                    format!(
                        "volume type {kind} is not in allowedVolumeTypes ({})",
                        self.policy.allowed_volume_types.join(", ")
                    ),
                );
            }
        }
    }
}

impl TolerationRule {
    /// Whether a toleration with these fields is allowed by this rule: the
    /// key must match exactly; operator, value and effect must match when
    /// the rule sets them. (`operator` defaults to `Equal`, as in the API.)
    pub fn allows(&self, key: &str, operator: &str, value: &str, effect: &str) -> bool {
        let operator = if operator.is_empty() {
            "Equal"
        } else {
            operator
        };
        self.key == key
            && self.operator.as_deref().is_none_or(|o| o == operator)
            && self.value.as_deref().is_none_or(|v| v == value)
            && self.effect.as_deref().is_none_or(|e| e == effect)
    }
}
