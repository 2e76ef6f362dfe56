//! The admission policy as a webhook handler: recognises our kinds, takes a
//! snapshot of the current policy per review, answers `/mutate` with the
//! defaulting patch and `/validate` with the verdict, and reports each
//! outcome to an optional observer (metrics).

use std::sync::Arc;
use std::time::Duration;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use sandbox_webhook::{AdmissionHandler, Answered, Endpoint, Error as WebhookError};
use serde_json::Value;

use super::{PolicyStore, SandboxKind, mutate, validate, validate_pool_scale};
use crate::metrics::Metrics;

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
    rejections: Option<Arc<Metrics>>,
}

impl SandboxAdmission {
    /// A handler answering with the policy held in `policy` (reloads of the
    /// store apply to the next review).
    pub fn new(policy: PolicyStore) -> Self {
        SandboxAdmission {
            policy,
            observer: None,
            rejections: None,
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
    /// `admission_duration_seconds`, and every request refused before the
    /// policy saw it in `admission_rejections_total`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.rejections = Some(Arc::clone(&metrics));
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
    /// A scale request on a pool (`sandboxwarmpools/scale`): its Scale as
    /// JSON. Validated against the pool's replica bound; never mutated.
    PoolScale(Value),
    /// Admitted unchanged: a subresource write (status, scale: a scale
    /// request's object is a Scale, not our kind) or an operation without a
    /// new object (DELETE, CONNECT).
    Skip,
    /// Admitted unchanged, with a warning: a kind admission does not handle.
    Foreign(String),
    /// The object could not be turned into JSON.
    Unreadable(String),
    /// A CREATE or UPDATE of a kind admission judges without the object it
    /// needs (`request.object`, or an UPDATE's `request.oldObject`): denied,
    /// naming the member. The transport refuses such a review before it
    /// gets here (`sandbox_webhook`'s `decode_review`, HTTP 400, in the same
    /// words); this keeps a request built some other way from being
    /// admitted unjudged, or judged without its immutability rules.
    Malformed(String),
}

impl Target {
    fn of(request: &AdmissionRequest<DynamicObject>) -> Target {
        if is_pool_scale(request) {
            if let Some(missing) = missing_member(request) {
                return Target::Malformed(missing);
            }
            return match request.object.as_ref().map(serde_json::to_value) {
                Some(Ok(scale)) => Target::PoolScale(scale),
                Some(Err(error)) => Target::Unreadable(format!("cannot read the Scale: {error}")),
                None => Target::Skip,
            };
        }
        let Some(kind) = SandboxKind::from_group_kind(&request.kind.group, &request.kind.kind)
        else {
            return Target::Foreign(format!(
                "sandbox-operator admission does not handle {}/{}; admitted unchanged",
                request.kind.group, request.kind.kind
            ));
        };
        if request.sub_resource.is_some() {
            return Target::Skip;
        }
        if let Some(missing) = missing_member(request) {
            return Target::Malformed(missing);
        }
        let Some(object) = request.object.as_ref() else {
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
            Target::Ours(..) | Target::PoolScale(_) | Target::Skip => response,
            Target::Foreign(warning) => {
                response.warnings = Some(vec![warning]);
                response
            }
            Target::Unreadable(reason) | Target::Malformed(reason) => response.deny(reason),
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
        let mut response = AdmissionResponse::from(request);
        // A claim CREATE is validated here, in the one webhook call it gets:
        // the validating webhook's match condition leaves claim CREATEs out
        // (see `webhook::config`). The stamp is the only field the mutation
        // writes and no rule reads it on CREATE, so validating the object as
        // sent is validating the object as stored.
        if kind == SandboxKind::SandboxClaim && request.operation == Operation::Create {
            let verdict = validate(kind, &request.operation, &object, None, &policy);
            if !verdict.warnings.is_empty() {
                response.warnings = Some(verdict.warnings.clone());
            }
            if !verdict.allowed() {
                return response.deny(verdict.message());
            }
        }
        let old_object = stored_object(request);
        match mutate(
            kind,
            &request.operation,
            &object,
            old_object.as_ref(),
            &policy,
            now,
        ) {
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
        let old_object = stored_object(request);
        let policy = self.policy.current();
        let verdict = match Target::of(request) {
            Target::Ours(kind, object) => validate(
                kind,
                &request.operation,
                &object,
                old_object.as_ref(),
                &policy,
            ),
            Target::PoolScale(scale) => validate_pool_scale(&scale, old_object.as_ref(), &policy),
            other => return other.answer(request),
        };
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

    fn observe_rejection(&self, endpoint: Endpoint, error: &WebhookError) {
        if let Some(metrics) = &self.rejections {
            metrics
                .admission_rejections
                .with_label_values(&[endpoint.as_str(), error.label()])
                .inc();
        }
    }

    fn observe(&self, answered: Answered<'_>) {
        if let Some(observer) = &self.observer {
            // The kind is the request's own text: one of ours, or "other"
            // (a label from a caller's text would grow without bound).
            let kind = match SandboxKind::from_group_kind(answered.group, answered.kind) {
                Some(kind) => kind.as_str(),
                None if (answered.group, answered.kind) == ("autoscaling", "Scale") => "Scale",
                None => "other",
            };
            observer(
                kind,
                operation_name(answered.operation),
                answered.endpoint.as_str(),
                answered.allowed,
                answered.elapsed,
            );
        }
    }
}

/// Whether `request` is a scale request on a pool: the only subresource
/// admission judges (a status write is the operator's own; a Sandbox's scale
/// is bounded by its CRD's schema, 0 to 1).
fn is_pool_scale(request: &AdmissionRequest<DynamicObject>) -> bool {
    request.sub_resource.as_deref() == Some("scale")
        && request.resource.group == SandboxKind::SandboxWarmPool.group()
        && request.resource.resource == "sandboxwarmpools"
}

/// What a CREATE or UPDATE lacks of what the API server always sends
/// (`object`, and an UPDATE's `oldObject`), in the transport's words (its
/// malformed-request error); `None` for DELETE and CONNECT, which need
/// neither.
fn missing_member(request: &AdmissionRequest<DynamicObject>) -> Option<String> {
    let field = match request.operation {
        Operation::Create | Operation::Update if request.object.is_none() => "request.object",
        Operation::Update if request.old_object.is_none() => "request.oldObject",
        _ => return None,
    };
    let error = WebhookError::MalformedRequest {
        field: field.to_owned(),
        reason: format!("is required for {}", operation_name(&request.operation)),
    };
    Some(error.to_string())
}

/// The stored version of the object (an UPDATE's `oldObject`), as JSON.
fn stored_object(request: &AdmissionRequest<DynamicObject>) -> Option<Value> {
    request
        .old_object
        .as_ref()
        .and_then(|old| serde_json::to_value(old).ok())
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
