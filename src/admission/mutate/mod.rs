//! Defaulting: the JSON patch the mutating webhook answers with.
//!
//! Every pod-template rule only *adds* a field that is absent, so the patch
//! never changes what a user wrote, and mutating an already-mutated object
//! yields an empty patch (the API server may call a webhook twice). The one
//! exception is the claim's admission stamp, which is the webhook's to
//! write. On UPDATE a pod template is defaulted only when it differs from
//! the stored one, and not at all once `metadata.deletionTimestamp` is set
//! (see [`super::ratchet`]): defaults a policy added since the template was
//! stored would otherwise turn a metadata-only write (a label, the
//! operator's annotation patch, a finalizer removal) into a change of the
//! pod template, which validation then checks whole and may refuse. The
//! operator applies the current defaults itself when it builds a Pod
//! ([`super::admit_pod_template`]), so none is lost. What gets added, per
//! kind:
//!
//! - Sandbox and SandboxTemplate (their pod template, at
//!   `/spec/podTemplate/spec`):
//!   - `automountServiceAccountToken: false` unless set (policy switch);
//!   - `runtimeClassName` when the policy has a default;
//!   - pod `securityContext.seccompProfile: {type: RuntimeDefault}`, and under
//!     the restricted profile `securityContext.runAsNonRoot: true` (not with
//!     `hostUsers: false` on a cluster known to support user namespaces,
//!     where Pod Security does not ask for it: the policy snapshot carries
//!     that fact, see [`super::user_namespaces`]);
//!   - for each container and init container: default `cpu`/`memory`
//!     requests and limits (see [`ResourceDefaults`](super::ResourceDefaults)),
//!     `securityContext.allowPrivilegeEscalation: false`, and under the
//!     restricted profile `capabilities.drop` including `ALL`;
//!   - none of the Linux-only fields (seccomp, allowPrivilegeEscalation,
//!     capabilities) on `os.name: windows` pods, where the API server
//!     refuses them.
//! - SandboxClaim, on CREATE only: the `agents.x-k8s.io/admitted-at`
//!   annotation with the admission time (RFC 3339, nanoseconds), replacing
//!   any value the user wrote (removed instead with `stampClaims: false`),
//!   so the stamp is never taken from the user.
//! - SandboxWarmPool: nothing (it has no pod template of its own).
//!
//! Parents are created when missing (`/resources` as a whole rather than
//! `/resources/limits/cpu` under an absent `resources`), and pointers escape
//! `/` and `~` in keys.

use jiff::Timestamp;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use kube::core::admission::Operation;
use serde_json::{Map, Value, json};

use super::field::{
    Denial, FieldPath, List, object_items, optional, optional_object, present, required_object,
};
use super::policy::{ComputeResource, Policy, Profile, normalize_capability};
use super::pss::drops_all_capabilities;
use super::quantity::Quantity;
use super::{SandboxKind, ratchet};
use crate::api::ADMITTED_AT_ANNOTATION;

/// The patch that applies `policy`'s defaults to `object`, a `kind` being
/// admitted with `operation`; on UPDATE, `old_object` is the stored version:
/// an unchanged pod template, or any of a terminating object, gets no
/// defaults.
///
/// Returns an error, naming the field, when the object is too malformed to
/// default (a pod template that is not an object, a container list that is
/// not a list, ...): the request should be denied with that message.
pub fn mutate(
    kind: SandboxKind,
    operation: &Operation,
    object: &Value,
    old_object: Option<&Value>,
    policy: &Policy,
    now: Timestamp,
) -> Result<Vec<PatchOperation>, Denial> {
    let root = FieldPath::root();
    let object = object
        .as_object()
        .ok_or_else(|| Denial::new(&root, "the object must be a JSON object"))?;
    let mut patch = Patcher {
        policy,
        operations: Vec::new(),
        linux: true,
        user_namespace: false,
    };
    match kind {
        SandboxKind::Sandbox | SandboxKind::SandboxTemplate => {
            let update = *operation == Operation::Update;
            if update && ratchet::is_terminating(object) {
                return Ok(Vec::new());
            }
            let spec = required_object(object, "spec", &root)?;
            let old_spec = ratchet::member(old_object.and_then(Value::as_object), "spec");
            if update && ratchet::unchanged(spec, old_spec, "podTemplate") {
                return Ok(Vec::new());
            }
            let spec_path = root.key("spec");
            let template = required_object(spec, "podTemplate", &spec_path)?;
            let template_path = spec_path.key("podTemplate");
            let pod_spec = required_object(template, "spec", &template_path)?;
            patch.pod_spec(pod_spec, &template_path.key("spec"))?;
        }
        SandboxKind::SandboxClaim => {
            if *operation == Operation::Create {
                patch.admission_stamp(object, &root, now)?;
            }
        }
        SandboxKind::SandboxWarmPool => {}
    }
    Ok(patch.operations)
}

/// Collects `add` operations.
struct Patcher<'p> {
    policy: &'p Policy,
    operations: Vec<PatchOperation>,
    /// False for `os.name: windows` pods, where the Linux-only fields
    /// (seccomp, allowPrivilegeEscalation, capabilities) may not be set.
    linux: bool,
    /// `hostUsers: false` on a cluster known to support user namespaces:
    /// Pod Security does not require `runAsNonRoot`.
    user_namespace: bool,
}

/// `read(object, key, path)` when `object` is there; `None` when it is not
/// (a field of an absent section is absent).
fn within<'v, T>(
    object: Option<&'v Map<String, Value>>,
    read: impl FnOnce(&'v Map<String, Value>, &'static str, &FieldPath) -> Result<Option<T>, Denial>,
    key: &'static str,
    path: &FieldPath,
) -> Result<Option<T>, Denial> {
    Ok(object.map(|o| read(o, key, path)).transpose()?.flatten())
}

/// The parsable `resources.limits[name]` of every container and init
/// container of a pod spec.
fn container_limits(
    spec: &Map<String, Value>,
    path: &FieldPath,
    name: &str,
) -> Result<Vec<Quantity>, Denial> {
    let mut found = Vec::new();
    for list in ["initContainers", "containers"] {
        for (container_path, container) in object_items(spec, list, path)? {
            let (limits, _) = Section::at(container, &container_path)
                .child("resources")?
                .child("limits")?
                .parts();
            if let Some(Ok(limit)) = limits
                .and_then(|l| present(l, name))
                .map(Quantity::from_json)
            {
                found.push(limit);
            }
        }
    }
    Ok(found)
}

/// An object of the reviewed document that may be absent, and where it is
/// (or would be added).
struct Section<'v> {
    object: Option<&'v Map<String, Value>>,
    path: FieldPath,
}

impl<'v> Section<'v> {
    fn at(object: &'v Map<String, Value>, path: &FieldPath) -> Self {
        Section {
            object: Some(object),
            path: path.clone(),
        }
    }

    /// The object and its path.
    fn parts(self) -> (Option<&'v Map<String, Value>>, FieldPath) {
        (self.object, self.path)
    }

    /// The object at `self[key]`: absent when it or `self` is absent, a
    /// denial when it is something else.
    fn child(&self, key: &'static str) -> Result<Section<'v>, Denial> {
        Ok(Section {
            object: within(self.object, optional_object, key, &self.path)?,
            path: self.path.key(key),
        })
    }
}

impl Patcher<'_> {
    fn add(&mut self, path: &FieldPath, value: Value) {
        self.operations.push(PatchOperation::Add(AddOperation {
            path: path.pointer(),
            value,
        }));
    }

    /// Adds `fields` under `path`: as one new object when the object there
    /// (`existing`) is absent, else member by member, never replacing what
    /// the user wrote. Nothing when `fields` is empty.
    fn add_fields(
        &mut self,
        path: &FieldPath,
        existing: Option<&Map<String, Value>>,
        fields: Map<String, Value>,
    ) {
        if fields.is_empty() {
            return;
        }
        match existing {
            None => self.add(path, Value::Object(fields)),
            Some(_) => {
                for (key, value) in fields {
                    self.add(&path.key(key), value);
                }
            }
        }
    }

    fn restricted(&self) -> bool {
        self.policy.profile == Profile::Restricted
    }

    /// Sets the `admitted-at` stamp to `now`, replacing any value the user
    /// wrote (a JSON-patch `add` replaces an existing member); with
    /// `stampClaims: false`, removes a user-written one. A stamp already
    /// equal to `now` is left alone, so a second pass is a no-op.
    fn admission_stamp(
        &mut self,
        object: &Map<String, Value>,
        root: &FieldPath,
        now: Timestamp,
    ) -> Result<(), Denial> {
        let stamp = Value::String(format!("{now:.9}"));
        let metadata = Section::at(object, root).child("metadata")?;
        let annotations = metadata.child("annotations")?;
        let (metadata, metadata_path) = metadata.parts();
        let (annotations, annotations_path) = annotations.parts();
        let current = annotations.and_then(|a| present(a, ADMITTED_AT_ANNOTATION));
        let stamp_path = annotations_path.key(ADMITTED_AT_ANNOTATION);
        if !self.policy.stamp_claims {
            if current.is_some() {
                self.operations
                    .push(PatchOperation::Remove(RemoveOperation {
                        path: stamp_path.pointer(),
                    }));
            }
            return Ok(());
        }
        match (metadata, annotations) {
            (None, _) => self.add(
                &metadata_path,
                json!({"annotations": {ADMITTED_AT_ANNOTATION: stamp}}),
            ),
            (Some(_), None) => self.add(&annotations_path, json!({ADMITTED_AT_ANNOTATION: stamp})),
            (Some(_), Some(_)) if current == Some(&stamp) => {}
            (Some(_), Some(_)) => self.add(&stamp_path, stamp),
        }
        Ok(())
    }

    fn pod_spec(&mut self, spec: &Map<String, Value>, path: &FieldPath) -> Result<(), Denial> {
        self.linux = optional_object(spec, "os", path)?
            .and_then(|os| present(os, "name"))
            .and_then(Value::as_str)
            != Some("windows");
        // As the Pod Security checks decide it (`pss::PodView`): without the
        // fact, the API server may drop hostUsers and Pod Security then asks
        // for runAsNonRoot, which is defaulted here.
        self.user_namespace = present(spec, "hostUsers") == Some(&Value::Bool(false))
            && self.policy.user_namespaces.supported();
        if !self.policy.automount_service_account_token
            && present(spec, "automountServiceAccountToken").is_none()
        {
            self.add(
                &path.key("automountServiceAccountToken"),
                Value::Bool(false),
            );
        }
        if let Some(class) = &self.policy.default_runtime_class_name
            && present(spec, "runtimeClassName").is_none()
        {
            self.add(&path.key("runtimeClassName"), Value::String(class.clone()));
        }
        self.pod_security_context(Section::at(spec, path).child("securityContext")?);
        let budgeted = self.pod_resources(spec, path)?;
        for list in ["initContainers", "containers"] {
            for (container_path, container) in object_items(spec, list, path)? {
                let container = Section::at(container, &container_path);
                self.resources(container.child("resources")?, &budgeted)?;
                self.container_security_context(container.child("securityContext")?)?;
            }
        }
        Ok(())
    }

    fn pod_security_context(&mut self, context: Section<'_>) {
        let (context, context_path) = context.parts();
        let mut fresh = Map::new();
        if self.linux && context.is_none_or(|c| present(c, "seccompProfile").is_none()) {
            fresh.insert("seccompProfile".into(), json!({"type": "RuntimeDefault"}));
        }
        if self.restricted()
            && !self.user_namespace
            && context.is_none_or(|c| present(c, "runAsNonRoot").is_none())
        {
            fresh.insert("runAsNonRoot".into(), Value::Bool(true));
        }
        self.add_fields(&context_path, context, fresh);
    }

    /// The pod-level `resources` (a budget the containers share): returns
    /// the resources (cpu, memory) it names, whose container defaults are
    /// then left out, since Kubernetes refuses a Pod whose containers'
    /// requests add up to more than the pod-level request, or whose
    /// container limit is above the pod-level limit, and the containers of
    /// a budgeted pod are bounded by it. A pod-level request without a
    /// limit gets one, as a container's does: max(request, default limit,
    /// every container's own limit of that resource).
    fn pod_resources(
        &mut self,
        spec: &Map<String, Value>,
        path: &FieldPath,
    ) -> Result<Vec<ComputeResource>, Denial> {
        let (resources, resources_path) = Section::at(spec, path).child("resources")?.parts();
        let requests = within(resources, optional_object, "requests", &resources_path)?;
        let limits = within(resources, optional_object, "limits", &resources_path)?;
        let mut budgeted = Vec::new();
        let mut new_limits = Map::new();
        for resource in ComputeResource::ALL {
            let name = resource.as_str();
            let request = requests.and_then(|r| present(r, name));
            let has_limit = limits.is_some_and(|l| present(l, name).is_some());
            if request.is_none() && !has_limit {
                continue;
            }
            budgeted.push(resource);
            // An unparsable request is left for validation to report.
            if let (Some(request), false) = (request, has_limit)
                && let (Some(default), Ok(request)) = (
                    self.policy.defaults.limits.get(resource),
                    Quantity::from_json(request),
                )
            {
                let mut limit = std::cmp::max(&request, default).clone();
                for own in container_limits(spec, path, name)? {
                    limit = std::cmp::max(limit, own);
                }
                new_limits.insert(name.into(), limit.as_str().into());
            }
        }
        self.add_fields(&resources_path.key("limits"), limits, new_limits);
        Ok(budgeted)
    }

    /// Per resource (cpu, memory) not in `budgeted` (the pod-level
    /// resources name it: see [`Self::pod_resources`]):
    /// - neither request nor limit: both defaults;
    /// - only a limit: nothing (Kubernetes defaults the request to the limit);
    /// - only a request: a limit of max(request, default limit), so the
    ///   container is bounded without a limit below its own request.
    fn resources(
        &mut self,
        resources: Section<'_>,
        budgeted: &[ComputeResource],
    ) -> Result<(), Denial> {
        let defaults = &self.policy.defaults;
        let (resources, resources_path) = resources.parts();
        let requests = within(resources, optional_object, "requests", &resources_path)?;
        let limits = within(resources, optional_object, "limits", &resources_path)?;

        let mut new_requests = Map::new();
        let mut new_limits = Map::new();
        for resource in ComputeResource::ALL {
            if budgeted.contains(&resource) {
                continue;
            }
            let name = resource.as_str();
            let request = requests.and_then(|r| present(r, name));
            let has_limit = limits.is_some_and(|l| present(l, name).is_some());
            match (request, has_limit) {
                (None, false) => {
                    if let Some(amount) = defaults.requests.get(resource) {
                        new_requests.insert(name.into(), amount.as_str().into());
                    }
                    if let Some(amount) = defaults.limits.get(resource) {
                        new_limits.insert(name.into(), amount.as_str().into());
                    }
                }
                (Some(request), false) => {
                    // An unparsable request is left for validation to report.
                    if let (Some(default), Ok(request)) =
                        (defaults.limits.get(resource), Quantity::from_json(request))
                    {
                        let limit = std::cmp::max(&request, default);
                        new_limits.insert(name.into(), limit.as_str().into());
                    }
                }
                (_, true) => {}
            }
        }
        if resources.is_none() {
            let mut fresh = Map::new();
            for (section, amounts) in [("requests", new_requests), ("limits", new_limits)] {
                if !amounts.is_empty() {
                    fresh.insert(section.into(), Value::Object(amounts));
                }
            }
            self.add_fields(&resources_path, None, fresh);
            return Ok(());
        }
        for (section, existing, amounts) in [
            ("requests", requests, new_requests),
            ("limits", limits, new_limits),
        ] {
            self.add_fields(&resources_path.key(section), existing, amounts);
        }
        Ok(())
    }

    fn container_security_context(&mut self, context: Section<'_>) -> Result<(), Denial> {
        let capabilities = context.child("capabilities")?;
        let (context, context_path) = context.parts();
        let (capabilities, capabilities_path) = capabilities.parts();
        let drop = within(capabilities, optional::<List>, "drop", &capabilities_path)?;

        // The API server refuses `allowPrivilegeEscalation: false` next to
        // `privileged: true` or an added SYS_ADMIN; such containers are
        // denied by validation with a clearer message, so leave them be.
        let privileged = context
            .and_then(|c| present(c, "privileged"))
            .and_then(Value::as_bool)
            == Some(true);
        let adds_sys_admin = capabilities
            .and_then(|c| present(c, "add"))
            .and_then(Value::as_array)
            .is_some_and(|added| {
                added
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|name| normalize_capability(name) == "SYS_ADMIN")
            });
        let default_escalation = self.linux
            && !privileged
            && !adds_sys_admin
            && context.is_none_or(|c| present(c, "allowPrivilegeEscalation").is_none());
        let default_drop = self.linux && self.restricted() && !drops_all_capabilities(context);

        let Some(_) = context else {
            let mut fresh = Map::new();
            if default_escalation {
                fresh.insert("allowPrivilegeEscalation".into(), Value::Bool(false));
            }
            if default_drop {
                fresh.insert("capabilities".into(), json!({"drop": ["ALL"]}));
            }
            self.add_fields(&context_path, None, fresh);
            return Ok(());
        };
        if default_escalation {
            self.add(
                &context_path.key("allowPrivilegeEscalation"),
                Value::Bool(false),
            );
        }
        if default_drop {
            match (capabilities, drop) {
                (None, _) => self.add(&capabilities_path, json!({"drop": ["ALL"]})),
                (Some(_), None) => self.add(&capabilities_path.key("drop"), json!(["ALL"])),
                (Some(_), Some(names)) => {
                    let mut names = names.clone();
                    names.push(Value::String("ALL".into()));
                    self.add(&capabilities_path.key("drop"), Value::Array(names));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
