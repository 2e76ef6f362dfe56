//! How long the API server takes to answer this process, request by
//! request: the production counterpart of the bench's write floor.
//!
//! The bench shows that a warm claim's time is mostly the time of the API
//! writes on its path (three of them in sequence; see the README's
//! "Performance"). In a cluster, an admin who sees claims slow down needs
//! to tell "the operator is slow" from "the API server is slow"; the
//! `sandbox_operator_api_request_duration_seconds` histogram, which
//! [`super::Guard`] feeds through a [`RequestObserver`], answers that: the
//! warm claim p50 over the p50 of the operator's Pod patches (the kind of
//! write the bench's floor is) is the bench's headline ratio, live.
//!
//! What is timed: every request the guard bounds (everything but a watch),
//! from the moment it enters the stack until its response head arrives,
//! until it fails, or until its caller stops waiting (the request's future
//! is dropped: an outer timeout, a shutdown). A fenced write refused before
//! sending is not timed (no request was made). Labels are bounded by
//! construction: the verb as the API server's own `apiserver_request_total`
//! spells it, the resource (and subresource) read from the request path
//! without namespace or object name, and the outcome's class.

use std::sync::Arc;
use std::time::Duration;

use http::Method;

/// Called once per timed request with its labels and duration.
pub type RequestObserver = Arc<dyn Fn(&Labels, Duration) + Send + Sync>;

/// The labels of one timed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// `GET`, `LIST`, `POST`, `PUT`, `PATCH`, `DELETE`, `DELETECOLLECTION`
    /// (as in `apiserver_request_total`), or the method as sent.
    pub verb: String,
    /// `pods`, `pods/status`, `sandboxes`, ...; `other` for a path outside
    /// `/api` and `/apis` (discovery, `/version`).
    pub resource: String,
    /// `2xx`, `3xx`, `4xx`, `5xx`; `error` when no response arrived (no
    /// answer within `--api-request-timeout-seconds`, a connection failure,
    /// or, on the controllers' fenced client, a write stopped on the wire
    /// because leadership was lost); `cancelled` when the caller stopped
    /// waiting first.
    pub code: &'static str,
}

/// How a timed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status arrived.
    Status(u16),
    /// No response: an error or the guard's timeout.
    NoAnswer,
    /// The caller dropped the request before it ended.
    Cancelled,
}

impl Labels {
    /// The labels of a request to `path` with `method` that ended with
    /// `outcome`. Pure.
    pub fn of(method: &Method, path: &str, outcome: Outcome) -> Self {
        let (resource, named) = resource_of(path);
        let verb = match (method.as_str(), named, resource.as_str()) {
            (method, _, "other") => method.to_string(),
            ("GET", false, _) => "LIST".to_string(),
            ("DELETE", false, _) => "DELETECOLLECTION".to_string(),
            (other, _, _) => other.to_string(),
        };
        let code = match outcome {
            Outcome::NoAnswer => "error",
            Outcome::Cancelled => "cancelled",
            Outcome::Status(200..=299) => "2xx",
            Outcome::Status(300..=399) => "3xx",
            Outcome::Status(400..=499) => "4xx",
            Outcome::Status(_) => "5xx",
        };
        Labels {
            verb,
            resource,
            code,
        }
    }
}

/// One request being timed: reports to `observe` when dropped, with
/// `outcome` as set by then (`Cancelled` unless the request ended).
pub struct Timing {
    /// Where the duration goes.
    pub observe: RequestObserver,
    /// The request's method.
    pub method: Method,
    /// The request's path.
    pub path: String,
    /// When the request entered the stack.
    pub start: tokio::time::Instant,
    /// How it ended, once it did.
    pub outcome: Outcome,
}

impl Drop for Timing {
    fn drop(&mut self) {
        let labels = Labels::of(&self.method, &self.path, self.outcome);
        (self.observe)(&labels, self.start.elapsed());
    }
}

/// The resource (with its subresource, if any) a request path addresses,
/// and whether it names one object. Pure.
pub fn resource_of(path: &str) -> (String, bool) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return ("other".to_string(), false),
    };
    // `namespaces/<ns>/<resource>...` is a namespaced resource; a bare
    // `namespaces`, `namespaces/<ns>` or a namespace's own subresource is
    // the namespaces resource itself.
    let rest = match rest {
        ["namespaces", _namespace, "status" | "finalize"] => rest,
        ["namespaces", _namespace, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    match rest {
        [] => ("other".to_string(), false),
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_is_read_without_namespace_or_name() {
        let cases = [
            ("/api/v1/namespaces/a/pods/p", ("pods", true)),
            ("/api/v1/namespaces/a/pods", ("pods", false)),
            ("/api/v1/pods", ("pods", false)),
            ("/api/v1/namespaces/a/pods/p/status", ("pods/status", true)),
            ("/api/v1/namespaces/a", ("namespaces", true)),
            ("/api/v1/namespaces", ("namespaces", false)),
            ("/api/v1/namespaces/a/status", ("namespaces/status", true)),
            (
                "/api/v1/namespaces/a/finalize",
                ("namespaces/finalize", true),
            ),
            (
                "/apis/agents.x-k8s.io/v1alpha1/namespaces/a/sandboxes/s/status",
                ("sandboxes/status", true),
            ),
            (
                "/apis/coordination.k8s.io/v1/namespaces/op/leases/l",
                ("leases", true),
            ),
            (
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/w",
                ("mutatingwebhookconfigurations", true),
            ),
            ("/version", ("other", false)),
            ("/apis", ("other", false)),
            ("/apis/agents.x-k8s.io/v1alpha1", ("other", false)),
        ];
        for (path, (resource, named)) in cases {
            assert_eq!(resource_of(path), (resource.to_string(), named), "{path}");
        }
    }

    #[test]
    fn verbs_follow_the_api_server_s_spelling_and_codes_are_classes() {
        use Outcome::*;
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/a/pods",
                Status(200),
                ("LIST", "pods", "2xx"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods/p",
                Status(404),
                ("GET", "pods", "4xx"),
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/a/pods/p",
                Status(409),
                ("PATCH", "pods", "4xx"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/pods",
                Status(503),
                ("DELETECOLLECTION", "pods", "5xx"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/a/services",
                NoAnswer,
                ("POST", "services", "error"),
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/o/leases/l",
                Cancelled,
                ("PUT", "leases", "cancelled"),
            ),
            // Discovery is not a list of anything.
            (
                Method::GET,
                "/apis/agents.x-k8s.io/v1alpha1",
                Status(200),
                ("GET", "other", "2xx"),
            ),
        ];
        for (method, path, outcome, (verb, resource, code)) in cases {
            let l = Labels::of(&method, path, outcome);
            assert_eq!(
                (l.verb.as_str(), l.resource.as_str(), l.code),
                (verb, resource, code),
                "{path}"
            );
        }
    }
}
