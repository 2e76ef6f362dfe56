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
//!    (`path: rule`) and warnings.
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
mod mutate;
mod policy;
mod quantity;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use sandbox_webhook::{AdmissionHandler, Endpoint};
use serde_json::Value;

use crate::metrics::Metrics;

pub use check::{CheckError, CheckReport, check_object, check_objects, run_policy_check};
pub use field::Denial;
pub use mutate::mutate;
pub use policy::{
    Ceilings, ComputeResource, DEFAULT_POLICY_YAML, DefaultLimits, DefaultRequests, Policy,
    PolicyError, PolicyStore, Profile, ResourceDefaults,
};
pub use quantity::{Quantity, QuantityError};
pub use validate::{Verdict, validate};

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

/// Called once per answered review with (kind, operation, endpoint, allowed,
/// elapsed), e.g. to feed metrics.
pub type AdmissionObserver = Arc<dyn Fn(&str, &str, &str, bool, Duration) + Send + Sync>;

/// The admission policy of the operator, plugged into the webhook server.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use sandbox_operator::admission::{PolicyStore, SandboxAdmission};
/// # use sandbox_operator::metrics::Metrics;
/// let store = PolicyStore::default();
/// let handler = SandboxAdmission::new(store.clone()).with_metrics(Arc::new(Metrics::new()));
/// ```
#[derive(Clone)]
pub struct SandboxAdmission {
    policy: PolicyStore,
    observer: Option<AdmissionObserver>,
}

impl SandboxAdmission {
    /// A handler answering with the policy held in `policy` (reloads of the
    /// store apply to the next review).
    pub fn new(policy: PolicyStore) -> Self {
        SandboxAdmission {
            policy,
            observer: None,
        }
    }

    /// Reports every answered review to `observer`.
    pub fn with_observer(
        mut self,
        observer: impl Fn(&str, &str, &str, bool, Duration) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Records every answered review in `admission_requests_total` and
    /// `admission_duration_seconds`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        self.with_observer(move |kind, operation, endpoint, allowed, elapsed| {
            metrics
                .admission_requests
                .with_label_values(&[
                    kind,
                    operation,
                    endpoint,
                    if allowed { "true" } else { "false" },
                ])
                .inc();
            metrics
                .admission_seconds
                .with_label_values(&[kind, endpoint])
                .observe(elapsed.as_secs_f64());
        })
    }

    /// The store the policy is read from.
    pub fn policy(&self) -> &PolicyStore {
        &self.policy
    }
}

/// What a request is, as far as admission is concerned.
enum Target {
    /// One of our kinds, with its object as JSON.
    Ours(SandboxKind, Value),
    /// Admitted unchanged: a subresource write (status, scale: a scale
    /// request's object is a Scale, not our kind) or an operation without a
    /// new object (DELETE, CONNECT).
    Skip,
    /// Admitted unchanged, with a warning: a kind admission does not handle.
    Foreign(String),
    /// The object could not be turned into JSON.
    Unreadable(String),
}

impl Target {
    fn of(request: &AdmissionRequest<DynamicObject>) -> Target {
        let Some(kind) = SandboxKind::from_group_kind(&request.kind.group, &request.kind.kind)
        else {
            return Target::Foreign(format!(
                "sandbox-operator admission does not handle {}/{}; admitted unchanged",
                request.kind.group, request.kind.kind
            ));
        };
        let Some(object) = request
            .object
            .as_ref()
            .filter(|_| request.sub_resource.is_none())
        else {
            return Target::Skip;
        };
        match serde_json::to_value(object) {
            Ok(value) => Target::Ours(kind, value),
            Err(error) => Target::Unreadable(format!("cannot read the object: {error}")),
        }
    }

    /// The answer for a request admission does not judge.
    fn answer(self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let mut response = AdmissionResponse::from(request);
        match self {
            Target::Ours(..) | Target::Skip => response,
            Target::Foreign(warning) => {
                response.warnings = Some(vec![warning]);
                response
            }
            Target::Unreadable(reason) => response.deny(reason),
        }
    }
}

impl AdmissionHandler for SandboxAdmission {
    fn mutate(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let (kind, object) = match Target::of(request) {
            Target::Ours(kind, object) => (kind, object),
            other => return other.answer(request),
        };
        let policy = self.policy.current();
        let now = jiff::Timestamp::now();
        let response = AdmissionResponse::from(request);
        match mutate(kind, &request.operation, &object, &policy, now) {
            Ok(operations) if operations.is_empty() => response,
            Ok(operations) => response
                .with_patch(json_patch::Patch(operations))
                .unwrap_or_else(|error| {
                    AdmissionResponse::from(request)
                        .deny(format!("cannot encode the defaulting patch: {error}"))
                }),
            Err(denial) => response.deny(denial),
        }
    }

    fn validate(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let (kind, object) = match Target::of(request) {
            Target::Ours(kind, object) => (kind, object),
            other => return other.answer(request),
        };
        let old_object = request
            .old_object
            .as_ref()
            .and_then(|old| serde_json::to_value(old).ok());
        let policy = self.policy.current();
        let verdict = validate(
            kind,
            &request.operation,
            &object,
            old_object.as_ref(),
            &policy,
        );
        let mut response = AdmissionResponse::from(request);
        if !verdict.warnings.is_empty() {
            response.warnings = Some(verdict.warnings.clone());
        }
        if verdict.allowed() {
            response
        } else {
            response.deny(verdict.message())
        }
    }

    fn observe(
        &self,
        kind: &str,
        operation: &Operation,
        allowed: bool,
        endpoint: Endpoint,
        elapsed: Duration,
    ) {
        if let Some(observer) = &self.observer {
            observer(
                kind,
                operation_name(operation),
                endpoint.as_str(),
                allowed,
                elapsed,
            );
        }
    }
}

/// The operation as the API server spells it.
fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};
    use kube::Resource;
    use kube::core::admission::AdmissionReview;
    use serde_json::json;

    /// Parses a YAML manifest into JSON, as the API server would send it.
    pub(crate) fn object_from_yaml(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).expect("test YAML parses")
    }

    /// The seed's AIO Sandbox, verbatim.
    pub(crate) fn aio_sandbox() -> Value {
        object_from_yaml(include_str!("../../examples/aio-sandbox.yaml"))
    }

    pub(crate) fn claim() -> Value {
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {"sandboxTemplateRef": {"name": "aio"}}})
    }

    pub(crate) fn pool(replicas: i64) -> Value {
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": "aio"}}})
    }

    /// Every value inside `value`, replaced in turn by each of a few wrong
    /// shapes.
    fn variants(value: &Value) -> Vec<Value> {
        let replacements = [
            json!(null),
            json!(7),
            json!("x"),
            json!([]),
            json!({}),
            json!(true),
            json!([1]),
        ];
        let mut out = Vec::new();
        let mut pointers = Vec::new();
        fn walk(value: &Value, pointer: String, pointers: &mut Vec<String>) {
            pointers.push(pointer.clone());
            match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        let token = key.replace('~', "~0").replace('/', "~1");
                        walk(child, format!("{pointer}/{token}"), pointers);
                    }
                }
                Value::Array(items) => {
                    for (index, child) in items.iter().enumerate() {
                        walk(child, format!("{pointer}/{index}"), pointers);
                    }
                }
                _ => {}
            }
        }
        walk(value, String::new(), &mut pointers);
        for pointer in pointers {
            for replacement in &replacements {
                let mut variant = value.clone();
                match variant.pointer_mut(&pointer) {
                    Some(slot) => *slot = replacement.clone(),
                    None => continue,
                }
                out.push(variant);
            }
        }
        out
    }

    #[test]
    fn malformed_variants_never_panic_and_defaulting_stays_idempotent() {
        let rich = object_from_yaml(
            "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: s, annotations: {a: b}}\nspec:\n  replicas: 1\n  podTemplate:\n    spec:\n      securityContext: {runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}\n      volumes: [{name: v, emptyDir: {}}]\n      initContainers: [{name: i, image: a:1}]\n      containers:\n      - name: c\n        image: a:1\n        ports: [{containerPort: 80, hostPort: 0}]\n        resources: {requests: {cpu: 1, memory: 1Gi}, limits: {memory: 2Gi}}\n        securityContext: {capabilities: {add: [CHOWN], drop: [NET_RAW]}, allowPrivilegeEscalation: false}\n",
        );
        let policies = [Policy::default(), Policy::from_yaml("profile: restricted\ndefaultRuntimeClassName: gvisor\nallowedRuntimeClasses: [gvisor]").unwrap()];
        let now = jiff::Timestamp::now();
        for (kind, base) in [
            (SandboxKind::Sandbox, aio_sandbox()),
            (SandboxKind::Sandbox, rich.clone()),
            (SandboxKind::SandboxTemplate, rich),
            (SandboxKind::SandboxClaim, claim()),
            (SandboxKind::SandboxWarmPool, pool(2)),
        ] {
            for object in variants(&base) {
                for policy in &policies {
                    let old = Some(&base);
                    let _ = validate(kind, &Operation::Update, &object, old, policy);
                    let Ok(patch) = mutate(kind, &Operation::Create, &object, policy, now) else {
                        continue;
                    };
                    let mut patched = object.clone();
                    json_patch::patch(&mut patched, &patch)
                        .unwrap_or_else(|e| panic!("{e}: {object}"));
                    let again = mutate(kind, &Operation::Create, &patched, policy, now).unwrap();
                    assert!(again.is_empty(), "{object} -> {again:?}");
                    let _ = validate(kind, &Operation::Create, &patched, None, policy);
                }
            }
        }
    }

    #[test]
    fn kinds_match_the_crd_types() {
        let types = [
            (Sandbox::group(&()), Sandbox::kind(&())),
            (SandboxTemplate::group(&()), SandboxTemplate::kind(&())),
            (SandboxClaim::group(&()), SandboxClaim::kind(&())),
            (SandboxWarmPool::group(&()), SandboxWarmPool::kind(&())),
        ];
        for (kind, (group, name)) in SandboxKind::ALL.into_iter().zip(types) {
            assert_eq!(
                (kind.group(), kind.as_str()),
                (group.as_ref(), name.as_ref())
            );
            assert_eq!(SandboxKind::from_group_kind(&group, &name), Some(kind));
        }
        assert_eq!(SandboxKind::from_group_kind("apps", "Sandbox"), None);
        assert_eq!(
            SandboxKind::from_api_version_kind("agents.x-k8s.io/v1alpha1", "Sandbox"),
            Some(SandboxKind::Sandbox)
        );
        assert_eq!(SandboxKind::from_api_version_kind("v1", "Pod"), None);
    }

    pub(crate) fn request(
        kind: SandboxKind,
        operation: &str,
        object: Option<Value>,
        old_object: Option<Value>,
    ) -> AdmissionRequest<DynamicObject> {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0b6c6f7e-0000-4000-8000-000000000001",
                "kind": {"group": kind.group(), "version": "v1alpha1", "kind": kind.as_str()},
                "resource": {"group": kind.group(), "version": "v1alpha1", "resource": "things"},
                "name": "x",
                "namespace": "default",
                "operation": operation,
                "userInfo": {"username": "alice"},
                "object": object,
                "oldObject": old_object,
            }
        });
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(review).unwrap();
        review.try_into().unwrap()
    }

    fn applied(response: &AdmissionResponse, object: &Value) -> Value {
        let mut object = object.clone();
        if let Some(patch) = &response.patch {
            let patch: json_patch::Patch = serde_json::from_slice(patch).unwrap();
            json_patch::patch(&mut object, &patch).unwrap();
        }
        object
    }

    #[test]
    fn the_seed_aio_sandbox_is_admitted_by_both_endpoints() {
        let handler = SandboxAdmission::new(PolicyStore::default());
        let aio = aio_sandbox();
        let mutated = handler.mutate(&request(
            SandboxKind::Sandbox,
            "CREATE",
            Some(aio.clone()),
            None,
        ));
        assert!(mutated.allowed);
        let aio_mutated = applied(&mutated, &aio);
        let validated = handler.validate(&request(
            SandboxKind::Sandbox,
            "CREATE",
            Some(aio_mutated.clone()),
            None,
        ));
        assert!(validated.allowed, "{}", validated.result.message);
        assert_eq!(validated.warnings, None);
        // The raw manifest is admitted too, when the mutating webhook is off.
        assert!(
            handler
                .validate(&request(SandboxKind::Sandbox, "CREATE", Some(aio), None))
                .allowed
        );
        // A second mutation changes nothing.
        let again = handler.mutate(&request(
            SandboxKind::Sandbox,
            "UPDATE",
            Some(aio_mutated.clone()),
            Some(aio_mutated),
        ));
        assert!(again.allowed);
        assert_eq!(again.patch, None);
    }

    #[test]
    fn mutated_examples_pass_validation_under_both_profiles() {
        for policy in ["", "profile: restricted"] {
            let handler =
                SandboxAdmission::new(PolicyStore::new(Policy::from_yaml(policy).unwrap()));
            for (kind, object) in [
                (SandboxKind::Sandbox, aio_sandbox()),
                (
                    SandboxKind::SandboxTemplate,
                    object_from_yaml(include_str!("../../examples/template.yaml")),
                ),
                (SandboxKind::SandboxClaim, claim()),
                (SandboxKind::SandboxWarmPool, pool(3)),
            ] {
                let mutated = applied(
                    &handler.mutate(&request(kind, "CREATE", Some(object.clone()), None)),
                    &object,
                );
                let response = handler.validate(&request(kind, "CREATE", Some(mutated), None));
                assert!(
                    response.allowed,
                    "{policy:?} {kind:?}: {}",
                    response.result.message
                );
                assert_eq!(response.warnings, None, "{policy:?} {kind:?}");
            }
        }
    }

    #[test]
    fn denials_are_joined_and_warnings_passed_on() {
        let handler = SandboxAdmission::new(PolicyStore::default());
        let mut sandbox = aio_sandbox();
        sandbox["spec"]["replicas"] = json!(2);
        sandbox["spec"]["podTemplate"]["spec"]["hostNetwork"] = json!(true);
        sandbox["spec"]["podTemplate"]["spec"]["containers"][0]["image"] = json!("busybox");
        let response = handler.validate(&request(
            SandboxKind::Sandbox,
            "CREATE",
            Some(sandbox),
            None,
        ));
        assert!(!response.allowed);
        assert_eq!(
            response.result.message,
            "spec.podTemplate.spec.hostNetwork: sharing the host's network namespace is not allowed; \
             spec.replicas: 2 is outside the allowed range 0 to 1"
        );
        assert_eq!(response.warnings.unwrap().len(), 1);
    }

    #[test]
    fn claims_are_stamped_through_the_handler() {
        let handler = SandboxAdmission::new(PolicyStore::default());
        let response = handler.mutate(&request(
            SandboxKind::SandboxClaim,
            "CREATE",
            Some(claim()),
            None,
        ));
        let stamped = applied(&response, &claim());
        let stamp = stamped["metadata"]["annotations"][crate::api::ADMITTED_AT_ANNOTATION]
            .as_str()
            .unwrap();
        let parsed: jiff::Timestamp = stamp.parse().unwrap();
        assert!(parsed <= jiff::Timestamp::now());
        assert_eq!(
            stamp.len(),
            "2026-01-01T00:00:00.123456789Z".len(),
            "{stamp}"
        );
    }

    #[test]
    fn malformed_sandboxes_are_denied_by_both_endpoints() {
        let handler = SandboxAdmission::new(PolicyStore::default());
        let broken = json!({"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "x"}, "spec": {"podTemplate": ["not", "an", "object"]}});
        for response in [
            handler.mutate(&request(
                SandboxKind::Sandbox,
                "CREATE",
                Some(broken.clone()),
                None,
            )),
            handler.validate(&request(
                SandboxKind::Sandbox,
                "CREATE",
                Some(broken.clone()),
                None,
            )),
        ] {
            assert!(!response.allowed);
            assert_eq!(
                response.result.message,
                "spec.podTemplate: must be an object"
            );
        }
    }

    #[test]
    fn other_kinds_subresources_and_deletes_pass_untouched() {
        let handler = SandboxAdmission::new(PolicyStore::default());
        let mut pod = request(
            SandboxKind::Sandbox,
            "CREATE",
            Some(json!({"spec": {}})),
            None,
        );
        pod.kind.group = String::new();
        pod.kind.kind = "Pod".into();
        let response = handler.validate(&pod);
        assert!(response.allowed);
        assert_eq!(
            response.warnings.unwrap(),
            ["sandbox-operator admission does not handle /Pod; admitted unchanged"]
        );

        let mut status = request(
            SandboxKind::Sandbox,
            "UPDATE",
            Some(json!({"spec": {}})),
            Some(json!({"spec": {}})),
        );
        status.sub_resource = Some("status".into());
        assert!(handler.validate(&status).allowed);
        assert_eq!(handler.mutate(&status).patch, None);

        let delete = request(SandboxKind::Sandbox, "DELETE", None, Some(aio_sandbox()));
        assert!(handler.validate(&delete).allowed);
        assert!(handler.mutate(&delete).allowed);
    }

    #[test]
    fn immutable_fields_are_enforced_through_the_handler() {
        let handler = SandboxAdmission::new(PolicyStore::default());
        let mut moved = claim();
        moved["spec"]["sandboxTemplateRef"]["name"] = json!("other");
        let response = handler.validate(&request(
            SandboxKind::SandboxClaim,
            "UPDATE",
            Some(moved),
            Some(claim()),
        ));
        assert!(!response.allowed);
        assert_eq!(
            response.result.message,
            "spec.sandboxTemplateRef: field is immutable"
        );
    }

    #[test]
    fn a_policy_reload_applies_to_the_next_review() {
        let store = PolicyStore::default();
        let handler = SandboxAdmission::new(store.clone());
        let review = || {
            handler.validate(&request(
                SandboxKind::SandboxWarmPool,
                "CREATE",
                Some(pool(50)),
                None,
            ))
        };
        assert!(review().allowed);
        store.replace(Policy::from_yaml("maxPoolReplicas: 10").unwrap());
        assert_eq!(
            review().result.message,
            "spec.replicas: 50 exceeds the maximum 10"
        );
    }

    #[test]
    fn the_observer_sees_each_outcome() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let handler = SandboxAdmission::new(PolicyStore::default()).with_observer(
            move |kind, operation, endpoint, allowed, _| {
                sink.lock()
                    .unwrap()
                    .push(format!("{kind} {operation} {endpoint} {allowed}"));
            },
        );
        handler.observe(
            "Sandbox",
            &Operation::Create,
            false,
            Endpoint::Validate,
            Duration::from_millis(1),
        );
        assert_eq!(*seen.lock().unwrap(), ["Sandbox CREATE validate false"]);

        let metrics = Arc::new(Metrics::new());
        let handler =
            SandboxAdmission::new(PolicyStore::default()).with_metrics(Arc::clone(&metrics));
        handler.observe(
            "SandboxClaim",
            &Operation::Create,
            true,
            Endpoint::Mutate,
            Duration::from_micros(50),
        );
        assert!(metrics.encode().contains(
            "admission_requests_total{allowed=\"true\",endpoint=\"mutate\",kind=\"SandboxClaim\",operation=\"CREATE\"} 1"
        ));
    }
}
