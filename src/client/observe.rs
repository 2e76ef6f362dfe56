//! How long the API server takes to answer this process, request by
//! request: the production counterpart of the bench's write floor.
//!
//! The bench shows that a warm claim's time is mostly API server time (a
//! claim's path holds three sequential writes; see the README's
//! "Performance"). In a cluster, an admin who sees claims slow down needs
//! to tell "the operator is slow" from "the API server is slow"; the
//! `sandbox_operator_api_request_duration_seconds` histogram, which
//! [`super::Guard`] feeds through a [`RequestObserver`], answers that: claim
//! Ready p50 over the p50 of the operator's own writes is the bench's
//! headline ratio, live.
//!
//! What is timed: every request the guard bounds (everything but a watch),
//! from the moment it enters the stack until its response head arrives, or
//! until it fails. A fenced write refused before sending is not timed (no
//! request was made). Labels are bounded by construction: the verb as the
//! API server's own `apiserver_request_total` spells it, the resource (and
//! subresource) read from the request path without namespace or object name,
//! and the status class.

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
    /// `2xx`, `3xx`, `4xx`, `5xx`, or `error` when no response arrived
    /// (connection failure, timeout).
    pub code: &'static str,
}

impl Labels {
    /// The labels of a request to `path` with `method` that ended with
    /// `status` (`None`: no response). Pure.
    pub fn of(method: &Method, path: &str, status: Option<u16>) -> Self {
        let (resource, named) = resource_of(path);
        let verb = match (method.as_str(), named) {
            ("GET", false) => "LIST".to_string(),
            ("DELETE", false) => "DELETECOLLECTION".to_string(),
            (other, _) => other.to_string(),
        };
        let code = match status {
            None => "error",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(_) => "5xx",
        };
        Labels {
            verb,
            resource,
            code,
        }
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
    // `namespaces` or `namespaces/<ns>` is the namespaces resource itself.
    let rest = match rest {
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
        let l = Labels::of(&Method::GET, "/api/v1/namespaces/a/pods", Some(200));
        assert_eq!((l.verb.as_str(), l.code), ("LIST", "2xx"));
        let l = Labels::of(&Method::GET, "/api/v1/namespaces/a/pods/p", Some(404));
        assert_eq!((l.verb.as_str(), l.code), ("GET", "4xx"));
        let l = Labels::of(&Method::PATCH, "/api/v1/namespaces/a/pods/p", Some(409));
        assert_eq!(
            (l.verb.as_str(), l.resource.as_str(), l.code),
            ("PATCH", "pods", "4xx")
        );
        let l = Labels::of(&Method::DELETE, "/api/v1/namespaces/a/pods", Some(503));
        assert_eq!((l.verb.as_str(), l.code), ("DELETECOLLECTION", "5xx"));
        let l = Labels::of(&Method::POST, "/api/v1/namespaces/a/services", None);
        assert_eq!((l.verb.as_str(), l.code), ("POST", "error"));
    }
}
