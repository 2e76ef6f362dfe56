//! Defaulting: the JSON patch the mutating webhook answers with.
//!
//! Every rule only *adds* a field that is absent, so the patch never changes
//! what a user wrote, and mutating an already-mutated object yields an empty
//! patch (the API server may call a webhook twice, and re-admits objects on
//! every update). What gets added, per kind:
//!
//! - Sandbox and SandboxTemplate (their pod template, at
//!   `/spec/podTemplate/spec`):
//!   - `automountServiceAccountToken: false` unless set (policy switch);
//!   - `runtimeClassName` when the policy has a default;
//!   - pod `securityContext.seccompProfile: {type: RuntimeDefault}`, and under
//!     the restricted profile `securityContext.runAsNonRoot: true`;
//!   - for each container and init container: default `cpu`/`memory`
//!     requests and limits (see [`ResourceDefaults`](super::ResourceDefaults)),
//!     `securityContext.allowPrivilegeEscalation: false`, and under the
//!     restricted profile `capabilities.drop` including `ALL`.
//! - SandboxClaim, on CREATE only: the `agents.x-k8s.io/admitted-at`
//!   annotation with the admission time (RFC 3339, nanoseconds).
//! - SandboxWarmPool: nothing (it has no pod template of its own).
//!
//! Parents are created when missing (`/resources` as a whole rather than
//! `/resources/limits/cpu` under an absent `resources`), and pointers escape
//! `/` and `~` in keys.

use jiff::Timestamp;
use json_patch::{AddOperation, PatchOperation};
use kube::core::admission::Operation;
use serde_json::{Map, Value, json};

use super::SandboxKind;
use super::field::{
    Denial, FieldPath, object_items, optional_array, optional_object, present, required_object,
};
use super::policy::{ComputeResource, Policy, Profile, normalize_capability};
use super::quantity::Quantity;
use crate::api::ADMITTED_AT_ANNOTATION;

/// The patch that applies `policy`'s defaults to `object`, a `kind` being
/// admitted with `operation`.
///
/// Returns an error, naming the field, when the object is too malformed to
/// default (a pod template that is not an object, a container list that is
/// not a list, ...): the request should be denied with that message.
pub fn mutate(
    kind: SandboxKind,
    operation: &Operation,
    object: &Value,
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
    };
    match kind {
        SandboxKind::Sandbox | SandboxKind::SandboxTemplate => {
            let spec = required_object(object, "spec", &root)?;
            let spec_path = root.key("spec");
            let template = required_object(spec, "podTemplate", &spec_path)?;
            let template_path = spec_path.key("podTemplate");
            let pod_spec = required_object(template, "spec", &template_path)?;
            patch.pod_spec(pod_spec, &template_path.key("spec"))?;
        }
        SandboxKind::SandboxClaim => {
            if policy.stamp_claims && *operation == Operation::Create {
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
}

impl Patcher<'_> {
    fn add(&mut self, path: &FieldPath, value: Value) {
        self.operations.push(PatchOperation::Add(AddOperation {
            path: path.pointer(),
            value,
        }));
    }

    fn restricted(&self) -> bool {
        self.policy.profile == Profile::Restricted
    }

    fn admission_stamp(
        &mut self,
        object: &Map<String, Value>,
        root: &FieldPath,
        now: Timestamp,
    ) -> Result<(), Denial> {
        let stamp = Value::String(format!("{now:.9}"));
        let Some(metadata) = optional_object(object, "metadata", root)? else {
            self.add(
                &root.key("metadata"),
                json!({"annotations": {ADMITTED_AT_ANNOTATION: stamp}}),
            );
            return Ok(());
        };
        let metadata_path = root.key("metadata");
        match optional_object(metadata, "annotations", &metadata_path)? {
            None => self.add(
                &metadata_path.key("annotations"),
                json!({ADMITTED_AT_ANNOTATION: stamp}),
            ),
            Some(annotations) if present(annotations, ADMITTED_AT_ANNOTATION).is_none() => self
                .add(
                    &metadata_path.key("annotations").key(ADMITTED_AT_ANNOTATION),
                    stamp,
                ),
            Some(_) => {}
        }
        Ok(())
    }

    fn pod_spec(&mut self, spec: &Map<String, Value>, path: &FieldPath) -> Result<(), Denial> {
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
        self.pod_security_context(spec, path)?;
        for list in ["initContainers", "containers"] {
            for (container_path, container) in object_items(spec, list, path)? {
                self.resources(container, &container_path)?;
                self.container_security_context(container, &container_path)?;
            }
        }
        Ok(())
    }

    fn pod_security_context(
        &mut self,
        spec: &Map<String, Value>,
        path: &FieldPath,
    ) -> Result<(), Denial> {
        let context_path = path.key("securityContext");
        let seccomp = json!({"type": "RuntimeDefault"});
        match optional_object(spec, "securityContext", path)? {
            None => {
                let mut context = Map::new();
                context.insert("seccompProfile".into(), seccomp);
                if self.restricted() {
                    context.insert("runAsNonRoot".into(), Value::Bool(true));
                }
                self.add(&context_path, Value::Object(context));
            }
            Some(context) => {
                if present(context, "seccompProfile").is_none() {
                    self.add(&context_path.key("seccompProfile"), seccomp);
                }
                if self.restricted() && present(context, "runAsNonRoot").is_none() {
                    self.add(&context_path.key("runAsNonRoot"), Value::Bool(true));
                }
            }
        }
        Ok(())
    }

    /// Per resource (cpu, memory):
    /// - neither request nor limit: both defaults;
    /// - only a limit: nothing (Kubernetes defaults the request to the limit);
    /// - only a request: a limit of max(request, default limit), so the
    ///   container is bounded without a limit below its own request.
    fn resources(
        &mut self,
        container: &Map<String, Value>,
        container_path: &FieldPath,
    ) -> Result<(), Denial> {
        let defaults = &self.policy.defaults;
        let resources_path = container_path.key("resources");
        let resources = optional_object(container, "resources", container_path)?;
        let requests = resources
            .map(|r| optional_object(r, "requests", &resources_path))
            .transpose()?
            .flatten();
        let limits = resources
            .map(|r| optional_object(r, "limits", &resources_path))
            .transpose()?
            .flatten();

        let mut new_requests = Map::new();
        let mut new_limits = Map::new();
        for resource in ComputeResource::ALL {
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
        if new_requests.is_empty() && new_limits.is_empty() {
            return Ok(());
        }
        if resources.is_none() {
            let mut fresh = Map::new();
            for (section, amounts) in [("requests", new_requests), ("limits", new_limits)] {
                if !amounts.is_empty() {
                    fresh.insert(section.into(), Value::Object(amounts));
                }
            }
            self.add(&resources_path, Value::Object(fresh));
            return Ok(());
        }
        for (section, existing, amounts) in [
            ("requests", requests, new_requests),
            ("limits", limits, new_limits),
        ] {
            if amounts.is_empty() {
                continue;
            }
            let section_path = resources_path.key(section);
            if existing.is_none() {
                self.add(&section_path, Value::Object(amounts));
            } else {
                for (name, amount) in amounts {
                    self.add(&section_path.key(name), amount);
                }
            }
        }
        Ok(())
    }

    fn container_security_context(
        &mut self,
        container: &Map<String, Value>,
        container_path: &FieldPath,
    ) -> Result<(), Denial> {
        let context_path = container_path.key("securityContext");
        let context = optional_object(container, "securityContext", container_path)?;
        let capabilities_path = context_path.key("capabilities");
        let capabilities = context
            .map(|c| optional_object(c, "capabilities", &context_path))
            .transpose()?
            .flatten();
        let drop = capabilities
            .map(|c| optional_array(c, "drop", &capabilities_path))
            .transpose()?
            .flatten();

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
        let default_escalation = !privileged
            && !adds_sys_admin
            && context.is_none_or(|c| present(c, "allowPrivilegeEscalation").is_none());
        let drops_all = drop.is_some_and(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .any(|name| normalize_capability(name) == "ALL")
        });
        let default_drop = self.restricted() && !drops_all;

        let Some(_) = context else {
            let mut fresh = Map::new();
            if default_escalation {
                fresh.insert("allowPrivilegeEscalation".into(), Value::Bool(false));
            }
            if default_drop {
                fresh.insert("capabilities".into(), json!({"drop": ["ALL"]}));
            }
            if !fresh.is_empty() {
                self.add(&context_path, Value::Object(fresh));
            }
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
mod tests {
    use super::*;
    use crate::admission::tests::{aio_sandbox, claim, object_from_yaml, pool};

    fn now() -> Timestamp {
        "2026-03-01T12:00:00.123456789Z".parse().unwrap()
    }

    /// Mutates, applies the patch, and checks that a second pass is a no-op.
    fn mutate_twice(
        kind: SandboxKind,
        object: &Value,
        policy: &Policy,
    ) -> (Vec<PatchOperation>, Value) {
        let patch = mutate(kind, &Operation::Create, object, policy, now()).unwrap();
        let mut mutated = object.clone();
        json_patch::patch(&mut mutated, &patch).unwrap();
        let again = mutate(kind, &Operation::Create, &mutated, policy, now()).unwrap();
        assert!(
            again.is_empty(),
            "not idempotent: {}",
            serde_json::to_string(&again).unwrap()
        );
        (patch, mutated)
    }

    fn pointers(patch: &[PatchOperation]) -> Vec<String> {
        patch.iter().map(|op| op.path().to_string()).collect()
    }

    #[test]
    fn the_seed_aio_sandbox_keeps_every_field_it_sets() {
        let aio = aio_sandbox();
        let (patch, mutated) = mutate_twice(SandboxKind::Sandbox, &aio, &Policy::default());
        assert_eq!(
            pointers(&patch),
            [
                "/spec/podTemplate/spec/automountServiceAccountToken",
                "/spec/podTemplate/spec/securityContext",
            ]
        );
        let container = &mutated["spec"]["podTemplate"]["spec"]["containers"][0];
        assert_eq!(
            container,
            &aio["spec"]["podTemplate"]["spec"]["containers"][0]
        );
        assert_eq!(
            mutated["spec"]["podTemplate"]["spec"]["securityContext"],
            json!({"seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert_eq!(
            mutated["spec"]["podTemplate"]["spec"]["automountServiceAccountToken"],
            false
        );
    }

    #[test]
    fn a_bare_container_gets_resources_and_hardening() {
        let sandbox = object_from_yaml(
            "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: s}\nspec:\n  podTemplate:\n    spec:\n      initContainers: [{name: init, image: busybox:1}]\n      containers: [{name: c, image: busybox:1}]\n",
        );
        let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &Policy::default());
        for list in ["initContainers", "containers"] {
            let container = &mutated["spec"]["podTemplate"]["spec"][list][0];
            assert_eq!(
                container["resources"],
                json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}),
            );
            assert_eq!(
                container["securityContext"],
                json!({"allowPrivilegeEscalation": false})
            );
        }
    }

    #[test]
    fn resources_are_defaulted_per_resource() {
        let sandbox = object_from_yaml(
            "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      containers:\n      - {name: limit-only, image: a:1, resources: {limits: {memory: 1Gi}}}\n      - {name: request-small, image: a:1, resources: {requests: {cpu: 500m, memory: 1Gi}}}\n      - {name: request-big, image: a:1, resources: {requests: {cpu: 4, memory: 4Gi}}}\n      - {name: empty, image: a:1, resources: {}}\n",
        );
        let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &Policy::default());
        let resources =
            |i: usize| mutated["spec"]["podTemplate"]["spec"]["containers"][i]["resources"].clone();
        // memory: limit only -> left alone; cpu: neither -> both defaults.
        assert_eq!(
            resources(0),
            json!({"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi", "cpu": "2"}})
        );
        // Requests below the default limits get the default limits.
        assert_eq!(
            resources(1),
            json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}})
        );
        // Requests above the default limits become the limits.
        assert_eq!(
            resources(2),
            json!({"requests": {"cpu": 4, "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}})
        );
        assert_eq!(
            resources(3),
            json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}})
        );
    }

    #[test]
    fn null_defaults_are_not_applied() {
        let policy = Policy::from_yaml(
            "defaults: {requests: {cpu: null, memory: null}, limits: {cpu: null, memory: null}}\nautomountServiceAccountToken: true\n",
        )
        .unwrap();
        let (_, mutated) =
            mutate_twice(SandboxKind::SandboxTemplate, &aio_template_bare(), &policy);
        let spec = &mutated["spec"]["podTemplate"]["spec"];
        assert!(spec["containers"][0].get("resources").is_none());
        assert!(spec.get("automountServiceAccountToken").is_none());
    }

    fn aio_template_bare() -> Value {
        object_from_yaml(
            "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxTemplate\nmetadata: {name: t}\nspec:\n  podTemplate:\n    spec:\n      containers: [{name: c, image: a:1}]\n",
        )
    }

    #[test]
    fn set_fields_are_never_overwritten() {
        let sandbox = object_from_yaml(
            "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      automountServiceAccountToken: true\n      runtimeClassName: kata\n      securityContext: {seccompProfile: {type: Localhost, localhostProfile: p.json}, runAsNonRoot: false}\n      containers:\n      - name: c\n        image: a:1\n        resources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 1, memory: 1Gi}}\n        securityContext: {allowPrivilegeEscalation: true, capabilities: {drop: [all]}}\n",
        );
        let policy =
            Policy::from_yaml("profile: restricted\ndefaultRuntimeClassName: gvisor\n").unwrap();
        let patch = mutate(
            SandboxKind::Sandbox,
            &Operation::Create,
            &sandbox,
            &policy,
            now(),
        )
        .unwrap();
        assert!(
            patch.is_empty(),
            "{}",
            serde_json::to_string(&patch).unwrap()
        );
    }

    #[test]
    fn restricted_profile_adds_non_root_and_drops_all() {
        let policy =
            Policy::from_yaml("profile: restricted\ndefaultRuntimeClassName: gvisor\n").unwrap();
        let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &aio_sandbox(), &policy);
        let spec = &mutated["spec"]["podTemplate"]["spec"];
        assert_eq!(
            spec["securityContext"],
            json!({"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": true})
        );
        assert_eq!(spec["runtimeClassName"], "gvisor");
        assert_eq!(
            spec["containers"][0]["securityContext"],
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
        );

        let sandbox = object_from_yaml(
            "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      securityContext: {runAsUser: 1000}\n      containers:\n      - {name: a, image: a:1, securityContext: {capabilities: {add: [NET_BIND_SERVICE]}}}\n      - {name: b, image: a:1, securityContext: {capabilities: {drop: [NET_RAW]}}}\n",
        );
        let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &policy);
        let spec = &mutated["spec"]["podTemplate"]["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            spec["containers"][0]["securityContext"]["capabilities"],
            json!({"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]})
        );
        assert_eq!(
            spec["containers"][1]["securityContext"]["capabilities"]["drop"],
            json!(["NET_RAW", "ALL"])
        );
    }

    #[test]
    fn privileged_containers_are_left_for_validation_to_deny() {
        let sandbox = object_from_yaml(
            "kind: Sandbox\nspec:\n  podTemplate:\n    spec:\n      containers:\n      - {name: a, image: a:1, securityContext: {privileged: true}}\n      - {name: b, image: a:1, securityContext: {capabilities: {add: [CAP_SYS_ADMIN]}}}\n",
        );
        let (_, mutated) = mutate_twice(SandboxKind::Sandbox, &sandbox, &Policy::default());
        for i in 0..2 {
            let context =
                &mutated["spec"]["podTemplate"]["spec"]["containers"][i]["securityContext"];
            assert!(context.get("allowPrivilegeEscalation").is_none());
        }
    }

    #[test]
    fn claims_are_stamped_once_on_create() {
        let (patch, mutated) =
            mutate_twice(SandboxKind::SandboxClaim, &claim(), &Policy::default());
        assert_eq!(pointers(&patch), ["/metadata/annotations"]);
        assert_eq!(
            mutated["metadata"]["annotations"][ADMITTED_AT_ANNOTATION],
            "2026-03-01T12:00:00.123456789Z"
        );

        let mut annotated = claim();
        annotated["metadata"]["annotations"] = json!({"team": "a"});
        let (patch, mutated) =
            mutate_twice(SandboxKind::SandboxClaim, &annotated, &Policy::default());
        assert_eq!(
            pointers(&patch),
            ["/metadata/annotations/agents.x-k8s.io~1admitted-at"]
        );
        assert_eq!(mutated["metadata"]["annotations"]["team"], "a");

        let whole_seconds: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        let patch = mutate(
            SandboxKind::SandboxClaim,
            &Operation::Create,
            &claim(),
            &Policy::default(),
            whole_seconds,
        )
        .unwrap();
        let mut stamped = claim();
        json_patch::patch(&mut stamped, &patch).unwrap();
        assert_eq!(
            stamped["metadata"]["annotations"][ADMITTED_AT_ANNOTATION],
            "2026-03-01T12:00:00.000000000Z"
        );

        let update = mutate(
            SandboxKind::SandboxClaim,
            &Operation::Update,
            &claim(),
            &Policy::default(),
            now(),
        )
        .unwrap();
        assert!(update.is_empty());
        let off = Policy::from_yaml("stampClaims: false").unwrap();
        assert!(
            mutate(
                SandboxKind::SandboxClaim,
                &Operation::Create,
                &claim(),
                &off,
                now()
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn pools_are_not_mutated() {
        let patch = mutate(
            SandboxKind::SandboxWarmPool,
            &Operation::Create,
            &pool(3),
            &Policy::default(),
            now(),
        )
        .unwrap();
        assert!(patch.is_empty());
    }

    #[test]
    fn malformed_objects_are_refused_with_the_field() {
        let cases = [
            (
                json!({"kind": "Sandbox", "spec": {"podTemplate": "nope"}}),
                "spec.podTemplate: must be an object",
            ),
            (
                json!({"kind": "Sandbox", "spec": {}}),
                "spec.podTemplate: is required",
            ),
            (json!({"kind": "Sandbox"}), "spec: is required"),
            (
                json!({"kind": "Sandbox", "spec": {"podTemplate": {"spec": {"containers": {}}}}}),
                "spec.podTemplate.spec.containers: must be a list",
            ),
            (
                json!({"kind": "Sandbox", "spec": {"podTemplate": {"spec": {"containers": [1]}}}}),
                "spec.podTemplate.spec.containers[0]: must be an object",
            ),
            (
                json!({"kind": "Sandbox", "spec": {"podTemplate": {"spec": {"containers": [{"resources": []}]}}}}),
                "spec.podTemplate.spec.containers[0].resources: must be an object",
            ),
            (json!([1, 2]), "the object must be a JSON object"),
        ];
        for (object, expected) in cases {
            let denial = mutate(
                SandboxKind::Sandbox,
                &Operation::Create,
                &object,
                &Policy::default(),
                now(),
            )
            .unwrap_err();
            assert_eq!(denial.to_string(), expected);
        }
        let bad_claim = json!({"metadata": {"annotations": "x"}});
        assert_eq!(
            mutate(
                SandboxKind::SandboxClaim,
                &Operation::Create,
                &bad_claim,
                &Policy::default(),
                now()
            )
            .unwrap_err()
            .to_string(),
            "metadata.annotations: must be an object"
        );
    }
}
