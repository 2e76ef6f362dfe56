//! The seam between transport and policy.
//!
//! The server decodes each AdmissionReview, hands the request to an
//! [`AdmissionHandler`] and encodes whatever it answers. A handler is a plain
//! synchronous function of the request: it must not block, because it runs on
//! the connection's task. Policies that need cluster state read it from caches
//! (reflector stores) they hold, never from the API server mid-request.

use std::time::Duration;

use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, Operation},
};

use crate::Error;

/// The two admission endpoints the server exposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /mutate`: defaulting, answers may carry a JSON patch.
    Mutate,
    /// `POST /validate`: accept or deny, answers carry no patch.
    Validate,
}

impl Endpoint {
    /// The request path the endpoint is served on.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Mutate => "/mutate",
            Endpoint::Validate => "/validate",
        }
    }

    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// What the server tells the handler about one answered review.
#[derive(Clone, Copy, Debug)]
pub struct Answered<'a> {
    /// The API group of the admitted object, as the request says.
    pub group: &'a str,
    /// The kind of the admitted object (for example `Sandbox`), as the
    /// request says: anyone who reaches the port chooses it, so an observer
    /// that keeps it (a metric label, say) must bound it first.
    pub kind: &'a str,
    /// The operation reviewed.
    pub operation: &'a Operation,
    /// Whether the answer allowed it.
    pub allowed: bool,
    /// The endpoint that answered.
    pub endpoint: Endpoint,
    /// Reading, decoding, the handler and encoding.
    pub elapsed: Duration,
}

/// The admission policy behind the server.
///
/// The server guarantees that the response it sends carries the request's
/// `uid` whatever the handler puts there, so a handler may build its answer
/// with `AdmissionResponse::from(req)` and `deny`/`with_patch` as usual.
/// A panic in a handler is caught and answered with HTTP 500; it never takes
/// the server down.
pub trait AdmissionHandler: Send + Sync + 'static {
    /// Answers a request sent to `/mutate`.
    fn mutate(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse;

    /// Answers a request sent to `/validate`.
    fn validate(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse;

    /// Called once per answered review, after the handler returned, so the
    /// caller can record metrics (see [`Answered`]). The default does
    /// nothing.
    fn observe(&self, answered: Answered<'_>) {
        let _ = answered;
    }

    /// Called when a request to an admission endpoint is refused before it
    /// reaches the handler (body too large, bad JSON, timeout, overload...).
    /// `error.label()` is a short, stable name for a metric label. The
    /// default does nothing.
    fn observe_rejection(&self, endpoint: Endpoint, error: &Error) {
        let _ = (endpoint, error);
    }
}
