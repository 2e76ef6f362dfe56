//! Validation: whether an object may be stored, and why not.
//!
//! Denied, per kind:
//!
//! - Sandbox and SandboxTemplate, in `spec.podTemplate.spec`: privileged
//!   containers; `hostNetwork`/`hostPID`/`hostIPC`; hostPath volumes;
//!   `hostPort`s; added capabilities outside the policy's allow-list;
//!   `Unconfined` seccomp; cpu/memory requests or limits above the policy's
//!   ceilings; a request above its limit; a `runtimeClassName` outside the
//!   allow-list (when there is one); containers without an image; ephemeral
//!   containers (a Pod cannot be created with them); under the restricted
//!   profile, root users, privilege escalation and kept capabilities.
//! - Sandbox: `spec.replicas` outside 0..1; on UPDATE, any change to
//!   `spec.volumeClaimTemplates`.
//! - SandboxClaim: an empty or malformed `spec.sandboxTemplateRef.name`; on
//!   UPDATE, any change to `spec.sandboxTemplateRef`.
//! - SandboxWarmPool: `spec.replicas` below 0 or above the policy's cap; an
//!   empty or malformed template name. The template may change: that is how
//!   a pool is rolled to a new template.
//!
//! Warned (admitted, with a message for the client): images without a tag
//! or tagged `latest`, `allowPrivilegeEscalation: true` under the baseline
//! profile, containers without cpu/memory limits, and a mounted service
//! account token when the policy would not mount one.
//!
//! Every finding names the field and the rule, e.g.
//! `spec.podTemplate.spec.containers[0].resources.limits.memory: 128Gi exceeds the maximum 64Gi`.
//! All findings are collected (not just the first) so one round trip shows
//! everything to fix.

use kube::core::admission::Operation;
use serde_json::{Map, Value};

use super::SandboxKind;
use super::field::{
    Denial, FieldPath, object_items, optional_array, optional_bool, optional_integer,
    optional_object, optional_str, present, required_object,
};
use super::policy::{ComputeResource, Policy, Profile, normalize_capability};
use super::quantity::Quantity;

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
/// `old_object` is the stored version, used for the immutability rules.
pub fn validate(
    kind: SandboxKind,
    operation: &Operation,
    object: &Value,
    old_object: Option<&Value>,
    policy: &Policy,
) -> Verdict {
    let mut validator = Validator {
        policy,
        verdict: Verdict::default(),
    };
    let root = FieldPath::root();
    let Some(object) = object.as_object() else {
        validator.deny(&root, "the object must be a JSON object");
        return validator.verdict;
    };
    let Some(spec) = validator.ok(required_object(object, "spec", &root)) else {
        return validator.verdict;
    };
    let spec_path = root.key("spec");
    let old_spec = match operation {
        Operation::Update => old_object
            .and_then(|old| old.get("spec"))
            .and_then(Value::as_object),
        _ => None,
    };
    match kind {
        SandboxKind::Sandbox => {
            validator.pod_template(spec, &spec_path);
            if let Some(Some(replicas)) =
                validator.ok(optional_integer(spec, "replicas", &spec_path))
                && !(0..=1).contains(&replicas)
            {
                validator.deny(
                    &spec_path.key("replicas"),
                    format!("{replicas} is outside the allowed range 0 to 1"),
                );
            }
            if let Some(old_spec) = old_spec {
                validator.immutable(spec, old_spec, "volumeClaimTemplates", &spec_path);
            }
        }
        SandboxKind::SandboxTemplate => validator.pod_template(spec, &spec_path),
        SandboxKind::SandboxClaim => {
            validator.template_ref(spec, &spec_path);
            if let Some(old_spec) = old_spec {
                validator.immutable(spec, old_spec, "sandboxTemplateRef", &spec_path);
            }
        }
        SandboxKind::SandboxWarmPool => {
            let replicas_path = spec_path.key("replicas");
            match validator.ok(optional_integer(spec, "replicas", &spec_path)) {
                Some(None) => validator.deny(&replicas_path, "is required"),
                Some(Some(replicas)) if replicas < 0 => {
                    validator.deny(&replicas_path, format!("{replicas} must not be negative"));
                }
                Some(Some(replicas)) if replicas > i64::from(policy.max_pool_replicas) => {
                    validator.deny(
                        &replicas_path,
                        format!(
                            "{replicas} exceeds the maximum {}",
                            policy.max_pool_replicas
                        ),
                    );
                }
                _ => {}
            }
            validator.template_ref(spec, &spec_path);
        }
    }
    validator.verdict
}

/// Host namespaces a pod may not share, with the words messages use.
const HOST_NAMESPACES: [(&str, &str); 3] = [
    ("hostNetwork", "network"),
    ("hostPID", "process"),
    ("hostIPC", "IPC"),
];

struct Validator<'p> {
    policy: &'p Policy,
    verdict: Verdict,
}

impl Validator<'_> {
    fn deny(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.verdict.denials.push(Denial::new(path, message));
    }

    fn warn(&mut self, path: &FieldPath, message: impl std::fmt::Display) {
        self.verdict.warnings.push(format!("{path}: {message}"));
    }

    /// Records a malformed field as a denial and carries on without it.
    fn ok<T>(&mut self, read: Result<T, Denial>) -> Option<T> {
        read.map_err(|denial| self.verdict.denials.push(denial))
            .ok()
    }

    fn restricted(&self) -> bool {
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

    fn template_ref(&mut self, spec: &Map<String, Value>, spec_path: &FieldPath) {
        let Some(reference) = self.ok(required_object(spec, "sandboxTemplateRef", spec_path))
        else {
            return;
        };
        let reference_path = spec_path.key("sandboxTemplateRef");
        let name_path = reference_path.key("name");
        match self.ok(optional_str(reference, "name", &reference_path)) {
            Some(None | Some("")) => self.deny(&name_path, "must not be empty"),
            Some(Some(name)) if !is_dns_subdomain(name) => self.deny(
                &name_path,
                format!(
                    "{name:?} is not a valid object name (lowercase letters, digits, '-' and '.', \
                     starting and ending with a letter or digit, at most 253 characters)"
                ),
            ),
            _ => {}
        }
    }

    fn pod_template(&mut self, spec: &Map<String, Value>, spec_path: &FieldPath) {
        let Some(template) = self.ok(required_object(spec, "podTemplate", spec_path)) else {
            return;
        };
        let template_path = spec_path.key("podTemplate");
        if let Some(pod_spec) = self.ok(required_object(template, "spec", &template_path)) {
            self.pod_spec(pod_spec, &template_path.key("spec"));
        }
    }

    fn pod_spec(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        for (key, namespace) in HOST_NAMESPACES {
            if let Some(Some(true)) = self.ok(optional_bool(spec, key, path)) {
                self.deny(
                    &path.key(key),
                    format!("sharing the host's {namespace} namespace is not allowed"),
                );
            }
        }
        for (volume_path, volume) in self
            .ok(object_items(spec, "volumes", path))
            .unwrap_or_default()
        {
            if present(volume, "hostPath").is_some() {
                self.deny(
                    &volume_path.key("hostPath"),
                    "hostPath volumes are not allowed",
                );
            }
        }
        self.runtime_class(spec, path);
        if let Some(Some(true)) = self.ok(optional_bool(spec, "automountServiceAccountToken", path))
            && !self.policy.automount_service_account_token
        {
            self.warn(
                &path.key("automountServiceAccountToken"),
                "mounts the service account token, so code in the sandbox can call the Kubernetes API",
            );
        }

        let pod_context_path = path.key("securityContext");
        let pod_context = self
            .ok(optional_object(spec, "securityContext", path))
            .flatten();
        if let Some(context) = pod_context {
            self.security_context(context, &pod_context_path);
        }
        let pod_non_root = pod_context
            .and_then(|c| present(c, "runAsNonRoot"))
            .and_then(Value::as_bool);

        if let Some(Some(ephemeral)) = self.ok(optional_array(spec, "ephemeralContainers", path))
            && !ephemeral.is_empty()
        {
            self.deny(
                &path.key("ephemeralContainers"),
                "ephemeral containers cannot be part of a pod template",
            );
        }
        if let Some(None) = self
            .ok(optional_array(spec, "containers", path))
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
                self.container(container, &container_path, pod_non_root);
            }
        }
    }

    fn runtime_class(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        let Some(allowed) = &self.policy.allowed_runtime_classes else {
            return;
        };
        let class_path = path.key("runtimeClassName");
        match self.ok(optional_str(spec, "runtimeClassName", path)) {
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

    /// Rules shared by pod- and container-level security contexts.
    fn security_context(&mut self, context: &Map<String, Value>, path: &FieldPath) {
        let seccomp_path = path.key("seccompProfile");
        if let Some(Some(seccomp)) = self.ok(optional_object(context, "seccompProfile", path))
            && let Some(Some("Unconfined")) = self.ok(optional_str(seccomp, "type", &seccomp_path))
        {
            self.deny(
                &seccomp_path.key("type"),
                "Unconfined is not allowed; use RuntimeDefault or Localhost",
            );
        }
        if !self.restricted() {
            return;
        }
        if let Some(Some(false)) = self.ok(optional_bool(context, "runAsNonRoot", path)) {
            self.deny(
                &path.key("runAsNonRoot"),
                "must not be false under the restricted profile",
            );
        }
        if let Some(Some(0)) = self.ok(optional_integer(context, "runAsUser", path)) {
            self.deny(
                &path.key("runAsUser"),
                "0 (root) is not allowed under the restricted profile",
            );
        }
    }

    fn container(
        &mut self,
        container: &Map<String, Value>,
        path: &FieldPath,
        pod_non_root: Option<bool>,
    ) {
        let image_path = path.key("image");
        match self.ok(optional_str(container, "image", path)) {
            Some(None | Some("")) => self.deny(&image_path, "is required"),
            Some(Some(image)) => {
                if let Some(problem) = image_tag_problem(image) {
                    self.warn(&image_path, format_args!("{image:?} {problem}"));
                }
            }
            None => {}
        }

        let context_path = path.key("securityContext");
        let context = self
            .ok(optional_object(container, "securityContext", path))
            .flatten();
        let capabilities_path = context_path.key("capabilities");
        let capabilities = context
            .and_then(|c| self.ok(optional_object(c, "capabilities", &context_path)))
            .flatten();
        if let Some(context) = context {
            if let Some(Some(true)) = self.ok(optional_bool(context, "privileged", &context_path)) {
                self.deny(
                    &context_path.key("privileged"),
                    "privileged containers are not allowed",
                );
            }
            self.security_context(context, &context_path);
        }
        if let Some(capabilities) = capabilities {
            let add_path = capabilities_path.key("add");
            let added = self
                .ok(optional_array(capabilities, "add", &capabilities_path))
                .flatten();
            for (index, name) in added.into_iter().flatten().enumerate() {
                match name.as_str() {
                    Some(name) if self.policy.allows_capability(name) => {}
                    Some(name) => self.deny(
                        &add_path.index(index),
                        format!("{name} is not in allowedCapabilities"),
                    ),
                    None => self.deny(&add_path.index(index), "must be a string"),
                }
            }
        }

        let escalation = context.and_then(|c| present(c, "allowPrivilegeEscalation"));
        let escalation_path = context_path.key("allowPrivilegeEscalation");
        if self.restricted() {
            if escalation != Some(&Value::Bool(false)) {
                self.deny(
                    &escalation_path,
                    "must be false under the restricted profile",
                );
            }
            let drops_all = capabilities
                .and_then(|c| present(c, "drop"))
                .and_then(Value::as_array)
                .is_some_and(|names| {
                    names
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|name| normalize_capability(name) == "ALL")
                });
            if !drops_all {
                self.deny(
                    &capabilities_path.key("drop"),
                    "must include ALL under the restricted profile",
                );
            }
            let container_non_root = context
                .and_then(|c| present(c, "runAsNonRoot"))
                .and_then(Value::as_bool);
            if pod_non_root != Some(true) && container_non_root.is_none() {
                self.deny(
                    &context_path.key("runAsNonRoot"),
                    "must be true under the restricted profile (here or in the pod's securityContext)",
                );
            }
        } else if escalation == Some(&Value::Bool(true)) {
            self.warn(
                &escalation_path,
                "is true, so setuid binaries in the sandbox can gain privileges",
            );
        }

        for (port_path, port) in self
            .ok(object_items(container, "ports", path))
            .unwrap_or_default()
        {
            if let Some(Some(host_port)) = self.ok(optional_integer(port, "hostPort", &port_path))
                && host_port != 0
            {
                self.deny(&port_path.key("hostPort"), "host ports are not allowed");
            }
        }
        self.resources(container, path);
    }

    fn resources(&mut self, container: &Map<String, Value>, container_path: &FieldPath) {
        let resources_path = container_path.key("resources");
        let resources = self
            .ok(optional_object(container, "resources", container_path))
            .flatten();
        let requests = self.quantities(resources, "requests", &resources_path);
        let limits = self.quantities(resources, "limits", &resources_path);
        let find = |amounts: &[(String, Quantity)], name: &str| {
            amounts
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, quantity)| quantity.clone())
        };

        for resource in ComputeResource::ALL {
            let name = resource.as_str();
            if let Some(ceiling) = self.policy.ceilings.get(resource) {
                for (section, amounts) in [("limits", &limits), ("requests", &requests)] {
                    if let Some(amount) = find(amounts, name)
                        && amount > *ceiling
                    {
                        self.deny(
                            &resources_path.key(section).key(name),
                            format!("{amount} exceeds the maximum {ceiling}"),
                        );
                    }
                }
            }
        }
        for (name, request) in &requests {
            if let Some(limit) = find(&limits, name)
                && *request > limit
            {
                self.deny(
                    &resources_path.key("requests").key(name.clone()),
                    format!("{request} exceeds the limit {limit}"),
                );
            }
        }
        for resource in ComputeResource::ALL {
            let name = resource.as_str();
            if find(&limits, name).is_none() {
                self.warn(
                    &resources_path.key("limits").key(name),
                    format_args!("is not set, so the container's {name} is unbounded"),
                );
            }
        }
    }

    /// The parsed amounts of `resources.<section>`; unparsable or negative
    /// amounts are denied and left out.
    fn quantities(
        &mut self,
        resources: Option<&Map<String, Value>>,
        section: &'static str,
        resources_path: &FieldPath,
    ) -> Vec<(String, Quantity)> {
        let Some(Some(amounts)) = resources.map(|r| {
            self.ok(optional_object(r, section, resources_path))
                .flatten()
        }) else {
            return Vec::new();
        };
        let section_path = resources_path.key(section);
        let mut parsed = Vec::with_capacity(amounts.len());
        for (name, value) in amounts {
            let path = section_path.key(name.clone());
            match Quantity::from_json(value) {
                Ok(quantity) if quantity.is_negative() => {
                    self.deny(&path, format!("{quantity} must not be negative"));
                }
                Ok(quantity) => parsed.push((name.clone(), quantity)),
                Err(error) => self.deny(&path, error.to_string()),
            }
        }
        parsed
    }
}

/// Why an image reference is not pinned, if it is not: no tag (meaning
/// `latest`) or the `latest` tag. Digests are pinned.
fn image_tag_problem(image: &str) -> Option<&'static str> {
    // The tag follows the last `:` of the last path component; a `:` before
    // the last `/` belongs to a registry port.
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains('@') {
        return None;
    }
    match last.rsplit_once(':') {
        Some((_, "latest")) => Some(
            "uses the tag latest, which can change under running sandboxes; pin a version or digest",
        ),
        Some(_) => None,
        None => Some("has no tag, so it means latest; pin a version or digest"),
    }
}

/// A Kubernetes object name: a DNS-1123 subdomain.
fn is_dns_subdomain(name: &str) -> bool {
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes
            .iter()
            .all(|&b| alphanumeric(b) || b == b'-' || b == b'.')
        && alphanumeric(bytes[0])
        && alphanumeric(bytes[bytes.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::tests::{aio_sandbox, claim, object_from_yaml, pool};
    use serde_json::json;

    fn create(kind: SandboxKind, object: &Value) -> Verdict {
        validate(kind, &Operation::Create, object, None, &Policy::default())
    }

    /// A Sandbox whose only container has the given extra fields.
    fn sandbox_with(container: Value, pod: Value) -> Value {
        let mut base = json!({"name": "c", "image": "busybox:1.36",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}});
        base.as_object_mut()
            .unwrap()
            .extend(container.as_object().unwrap().clone());
        let mut spec = json!({"containers": [base]});
        spec.as_object_mut()
            .unwrap()
            .extend(pod.as_object().unwrap().clone());
        json!({"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "s"}, "spec": {"podTemplate": {"spec": spec}}})
    }

    fn denials(verdict: &Verdict) -> Vec<String> {
        verdict.denials.iter().map(ToString::to_string).collect()
    }

    fn denied_with(container: Value, pod: Value) -> Vec<String> {
        denials(&create(SandboxKind::Sandbox, &sandbox_with(container, pod)))
    }

    const C0: &str = "spec.podTemplate.spec.containers[0]";

    #[test]
    fn the_seed_aio_sandbox_is_admitted_without_warnings() {
        let verdict = create(SandboxKind::Sandbox, &aio_sandbox());
        assert_eq!(verdict, Verdict::default());
    }

    #[test]
    fn a_plain_container_is_admitted() {
        assert!(denied_with(json!({}), json!({})).is_empty());
    }

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

    #[test]
    fn privilege_and_host_access_are_denied() {
        assert_eq!(
            denied_with(json!({"securityContext": {"privileged": true}}), json!({})),
            [format!(
                "{C0}.securityContext.privileged: privileged containers are not allowed"
            )]
        );
        assert_eq!(
            denied_with(
                json!({}),
                json!({"hostNetwork": true, "hostPID": true, "hostIPC": false})
            ),
            [
                "spec.podTemplate.spec.hostNetwork: sharing the host's network namespace is not allowed",
                "spec.podTemplate.spec.hostPID: sharing the host's process namespace is not allowed",
            ]
        );
        assert_eq!(
            denied_with(
                json!({}),
                json!({"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "hostPath": {"path": "/"}}]})
            ),
            ["spec.podTemplate.spec.volumes[1].hostPath: hostPath volumes are not allowed"]
        );
        assert_eq!(
            denied_with(
                json!({"ports": [{"containerPort": 8080}, {"containerPort": 80, "hostPort": 80}]}),
                json!({})
            ),
            [format!(
                "{C0}.ports[1].hostPort: host ports are not allowed"
            )]
        );
        assert_eq!(
            denied_with(
                json!({"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", "SYS_ADMIN", "cap_net_raw"]}}}),
                json!({})
            ),
            [
                format!(
                    "{C0}.securityContext.capabilities.add[1]: SYS_ADMIN is not in allowedCapabilities"
                ),
                format!(
                    "{C0}.securityContext.capabilities.add[2]: cap_net_raw is not in allowedCapabilities"
                ),
            ]
        );
        assert_eq!(
            denied_with(
                json!({}),
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}})
            ),
            [
                "spec.podTemplate.spec.securityContext.seccompProfile.type: Unconfined is not allowed; use RuntimeDefault or Localhost"
            ]
        );
    }

    #[test]
    fn init_containers_are_checked_too() {
        let denied = denied_with(
            json!({}),
            json!({"initContainers": [{"name": "i", "image": "a:1", "securityContext": {"privileged": true}}]}),
        );
        assert_eq!(
            denied,
            [
                "spec.podTemplate.spec.initContainers[0].securityContext.privileged: privileged containers are not allowed"
            ]
        );
    }

    #[test]
    fn all_findings_are_reported_together() {
        let verdict = create(
            SandboxKind::Sandbox,
            &sandbox_with(
                json!({"securityContext": {"privileged": true}, "resources": {"limits": {"memory": "128Gi"}}}),
                json!({"hostNetwork": true}),
            ),
        );
        assert_eq!(verdict.denials.len(), 3);
        assert_eq!(verdict.message().matches("; ").count(), 2);
    }

    #[test]
    fn runtime_classes_follow_the_allow_list() {
        let policy = Policy::from_yaml("allowedRuntimeClasses: [gvisor, kata]").unwrap();
        let check = |pod: Value| {
            denials(&validate(
                SandboxKind::SandboxTemplate,
                &Operation::Create,
                &sandbox_with(json!({}), pod),
                None,
                &policy,
            ))
        };
        assert!(check(json!({"runtimeClassName": "kata"})).is_empty());
        assert_eq!(
            check(json!({"runtimeClassName": "runc"})),
            [
                "spec.podTemplate.spec.runtimeClassName: \"runc\" is not one of the allowed runtime classes (gvisor, kata)"
            ]
        );
        assert_eq!(
            check(json!({})),
            [
                "spec.podTemplate.spec.runtimeClassName: must be one of the allowed runtime classes (gvisor, kata)"
            ]
        );
    }

    #[test]
    fn restricted_profile_denies_root_escalation_and_kept_capabilities() {
        let policy = Policy::from_yaml("profile: restricted").unwrap();
        let check = |container: Value, pod: Value| {
            denials(&validate(
                SandboxKind::Sandbox,
                &Operation::Create,
                &sandbox_with(container, pod),
                None,
                &policy,
            ))
        };
        let hardened = json!({"securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}});
        assert!(
            check(
                hardened.clone(),
                json!({"securityContext": {"runAsNonRoot": true}})
            )
            .is_empty()
        );
        assert_eq!(
            check(json!({}), json!({"securityContext": {"runAsNonRoot": false, "runAsUser": 0}})),
            [
                "spec.podTemplate.spec.securityContext.runAsNonRoot: must not be false under the restricted profile".to_owned(),
                "spec.podTemplate.spec.securityContext.runAsUser: 0 (root) is not allowed under the restricted profile".to_owned(),
                format!("{C0}.securityContext.allowPrivilegeEscalation: must be false under the restricted profile"),
                format!("{C0}.securityContext.capabilities.drop: must include ALL under the restricted profile"),
                format!("{C0}.securityContext.runAsNonRoot: must be true under the restricted profile (here or in the pod's securityContext)"),
            ]
        );
    }

    #[test]
    fn images_without_a_pinned_tag_are_warned_about() {
        for (image, warned) in [
            ("busybox", true),
            ("busybox:latest", true),
            ("registry:5000/team/busybox", true),
            ("registry:5000/team/busybox:1.36", false),
            ("busybox@sha256:0123", false),
            ("runzhliu/sandbox-openclaw-opencode:1.0.0.152", false),
        ] {
            let verdict = create(
                SandboxKind::Sandbox,
                &sandbox_with(json!({"image": image}), json!({})),
            );
            assert!(verdict.allowed());
            assert_eq!(
                verdict.warnings.len(),
                usize::from(warned),
                "{image}: {:?}",
                verdict.warnings
            );
        }
        assert_eq!(
            denied_with(json!({"image": ""}), json!({})),
            [format!("{C0}.image: is required")]
        );
    }

    #[test]
    fn soft_findings_are_warnings() {
        let verdict = create(
            SandboxKind::Sandbox,
            &sandbox_with(
                json!({"securityContext": {"allowPrivilegeEscalation": true}, "resources": {"requests": {"cpu": "1"}}}),
                json!({"automountServiceAccountToken": true}),
            ),
        );
        assert!(verdict.allowed());
        assert_eq!(
            verdict.warnings,
            [
                "spec.podTemplate.spec.automountServiceAccountToken: mounts the service account token, so code in the sandbox can call the Kubernetes API".to_owned(),
                format!("{C0}.securityContext.allowPrivilegeEscalation: is true, so setuid binaries in the sandbox can gain privileges"),
                format!("{C0}.resources.limits.cpu: is not set, so the container's cpu is unbounded"),
                format!("{C0}.resources.limits.memory: is not set, so the container's memory is unbounded"),
            ]
        );
    }

    #[test]
    fn sandbox_replicas_must_be_zero_or_one() {
        for (replicas, allowed) in [
            (json!(0), true),
            (json!(1), true),
            (json!(2), false),
            (json!(-1), false),
        ] {
            let mut sandbox = aio_sandbox();
            sandbox["spec"]["replicas"] = replicas.clone();
            let verdict = create(SandboxKind::Sandbox, &sandbox);
            assert_eq!(verdict.allowed(), allowed, "{replicas}");
        }
        let mut sandbox = aio_sandbox();
        sandbox["spec"]["replicas"] = json!(2);
        assert_eq!(
            denials(&create(SandboxKind::Sandbox, &sandbox)),
            ["spec.replicas: 2 is outside the allowed range 0 to 1"]
        );
        sandbox["spec"]["replicas"] = json!("one");
        assert_eq!(
            denials(&create(SandboxKind::Sandbox, &sandbox)),
            ["spec.replicas: must be an integer"]
        );
    }

    #[test]
    fn volume_claim_templates_cannot_change_on_update() {
        let mut old = aio_sandbox();
        old["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "work"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]);
        let mut new = old.clone();
        new["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
            json!("2Gi");
        let policy = Policy::default();
        let update = |new: &Value, old: &Value| {
            denials(&validate(
                SandboxKind::Sandbox,
                &Operation::Update,
                new,
                Some(old),
                &policy,
            ))
        };
        assert_eq!(
            update(&new, &old),
            ["spec.volumeClaimTemplates: field is immutable"]
        );
        assert_eq!(
            update(&aio_sandbox(), &old),
            ["spec.volumeClaimTemplates: field is immutable"]
        );
        assert_eq!(
            update(&old, &aio_sandbox()),
            ["spec.volumeClaimTemplates: field is immutable"]
        );
        assert!(update(&old, &old).is_empty());
        // Other fields may change.
        let mut paused = old.clone();
        paused["spec"]["replicas"] = json!(0);
        assert!(update(&paused, &old).is_empty());
        // On CREATE there is nothing to compare with.
        assert!(
            validate(
                SandboxKind::Sandbox,
                &Operation::Create,
                &new,
                Some(&old),
                &policy
            )
            .allowed()
        );
    }

    #[test]
    fn claims_need_a_template_name_that_never_changes() {
        assert!(create(SandboxKind::SandboxClaim, &claim()).allowed());
        for (reference, expected) in [
            (
                json!({"name": ""}),
                "spec.sandboxTemplateRef.name: must not be empty",
            ),
            (json!({}), "spec.sandboxTemplateRef.name: must not be empty"),
            (
                json!({"name": 5}),
                "spec.sandboxTemplateRef.name: must be a string",
            ),
            (json!("aio"), "spec.sandboxTemplateRef: must be an object"),
            (json!(null), "spec.sandboxTemplateRef: is required"),
        ] {
            let mut object = claim();
            object["spec"]["sandboxTemplateRef"] = reference;
            assert_eq!(
                denials(&create(SandboxKind::SandboxClaim, &object)),
                [expected]
            );
        }
        let mut object = claim();
        object["spec"]["sandboxTemplateRef"]["name"] = json!("Not_A_Name");
        assert!(
            denials(&create(SandboxKind::SandboxClaim, &object))[0].starts_with(
                "spec.sandboxTemplateRef.name: \"Not_A_Name\" is not a valid object name"
            )
        );

        let mut moved = claim();
        moved["spec"]["sandboxTemplateRef"]["name"] = json!("other");
        let verdict = validate(
            SandboxKind::SandboxClaim,
            &Operation::Update,
            &moved,
            Some(&claim()),
            &Policy::default(),
        );
        assert_eq!(
            denials(&verdict),
            ["spec.sandboxTemplateRef: field is immutable"]
        );
    }

    #[test]
    fn pool_replicas_are_capped_and_the_template_may_change() {
        assert!(create(SandboxKind::SandboxWarmPool, &pool(1000)).allowed());
        assert_eq!(
            denials(&create(SandboxKind::SandboxWarmPool, &pool(1001))),
            ["spec.replicas: 1001 exceeds the maximum 1000"]
        );
        assert_eq!(
            denials(&create(SandboxKind::SandboxWarmPool, &pool(-1))),
            ["spec.replicas: -1 must not be negative"]
        );
        let small = Policy::from_yaml("maxPoolReplicas: 5").unwrap();
        assert!(
            !validate(
                SandboxKind::SandboxWarmPool,
                &Operation::Create,
                &pool(6),
                None,
                &small
            )
            .allowed()
        );

        let mut retemplated = pool(3);
        retemplated["spec"]["sandboxTemplateRef"]["name"] = json!("aio-v2");
        let verdict = validate(
            SandboxKind::SandboxWarmPool,
            &Operation::Update,
            &retemplated,
            Some(&pool(3)),
            &Policy::default(),
        );
        assert!(verdict.allowed());
    }

    #[test]
    fn malformed_objects_get_clear_denials_not_panics() {
        let cases = [
            (
                json!({"spec": {"podTemplate": "nope"}}),
                "spec.podTemplate: must be an object",
            ),
            (
                json!({"spec": {"podTemplate": {}}}),
                "spec.podTemplate.spec: is required",
            ),
            (json!({"spec": []}), "spec: must be an object"),
            (json!({}), "spec: is required"),
            (json!("text"), "the object must be a JSON object"),
            (
                json!({"spec": {"podTemplate": {"spec": {}}}}),
                "spec.podTemplate.spec.containers: at least one container is required",
            ),
            (
                json!({"spec": {"podTemplate": {"spec": {"containers": [7]}}}}),
                "spec.podTemplate.spec.containers[0]: must be an object",
            ),
            (
                json!({"spec": {"podTemplate": {"spec": {"containers": [{"image": "a:1", "resources": {"limits": []}}]}}}}),
                "spec.podTemplate.spec.containers[0].resources.limits: must be an object",
            ),
            (
                json!({"spec": {"podTemplate": {"spec": {"containers": [{"image": "a:1"}], "hostNetwork": "yes"}}}}),
                "spec.podTemplate.spec.hostNetwork: must be true or false",
            ),
        ];
        for (object, expected) in cases {
            let verdict = create(SandboxKind::Sandbox, &object);
            assert_eq!(denials(&verdict), [expected], "{object}");
        }
        assert_eq!(
            denials(&create(
                SandboxKind::SandboxWarmPool,
                &json!({"spec": {"sandboxTemplateRef": {"name": "a"}}})
            )),
            ["spec.replicas: is required"]
        );
    }

    #[test]
    fn ephemeral_containers_are_denied_in_templates() {
        assert_eq!(
            denied_with(
                json!({}),
                json!({"ephemeralContainers": [{"name": "debug", "image": "a:1"}]})
            ),
            [
                "spec.podTemplate.spec.ephemeralContainers: ephemeral containers cannot be part of a pod template"
            ]
        );
    }

    #[test]
    fn the_seed_template_is_admitted() {
        let template = object_from_yaml(include_str!("../../examples/template.yaml"));
        assert!(create(SandboxKind::SandboxTemplate, &template).allowed());
    }
}
