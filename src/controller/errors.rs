//! The controllers' error type and the classifiers of API errors.
//!
//! Every reconcile error carries a class ([`Error::class`]: conflict,
//! forbidden, invalid, not_found, timeout, quota, name_conflict, other) used
//! as the metric label and to pick the condition a user sees.

use std::time::Duration;

/// Errors of a reconcile. A lost steal race is not an error (it is counted
/// and the next candidate is tried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes API call failed: {context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An object the operator needs exists under the expected name but is
    /// controlled by something else; it is never used.
    #[error("{kind} {name} exists but is not controlled by {owner}: it is left alone")]
    NameConflict {
        /// Kind of the existing object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Who should have controlled it (kind and name).
        owner: String,
    },
    /// The admission policy refuses an object the operator was about to
    /// create (checked in-process, see [`super::admit`]); nothing is written.
    #[error("{kind} {name} is refused by the admission policy: {message}")]
    PolicyDenied {
        /// Kind of the refused object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Every denial as `path: rule`.
        message: String,
    },
    /// An object lacks something the controller needs (name, namespace, uid).
    #[error("object is incomplete: {0}")]
    Incomplete(&'static str),
    /// Serializing an object or patch failed.
    #[error("serialization failed: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// Class of the error, for the `reconcile_errors_total` metric label and
    /// for the condition reason a user sees.
    pub fn class(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => kube_error_class(source),
            Error::NameConflict { .. } => "name_conflict",
            Error::PolicyDenied { .. } => "invalid",
            Error::Incomplete(_) => "incomplete",
            Error::Serialize(_) => "serialize",
        }
    }

    /// Same as [`Error::class`] (kept for the metrics call sites).
    pub fn metric_label(&self) -> &'static str {
        self.class()
    }

    /// The message the API server (or the webhook through it) gave, if any.
    pub fn api_message(&self) -> Option<&str> {
        match self {
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } => Some(status.message.as_str()),
            _ => None,
        }
    }
}

/// Class of a client error: conflict, forbidden, quota, invalid, not_found,
/// timeout or other.
pub fn kube_error_class(err: &kube::Error) -> &'static str {
    match err {
        kube::Error::Api(status) => match status.code {
            409 => "conflict",
            403 if status.message.contains("exceeded quota") => "quota",
            403 => "forbidden",
            400 | 422 => "invalid",
            404 => "not_found",
            408 | 504 => "timeout",
            _ => "other",
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => "timeout",
        _ => "other",
    }
}

/// Adds context to a kube error.
pub(crate) fn kube_err(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let context = context.into();
    move |source| Error::Kube { context, source }
}

/// Result of a reconcile.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// HTTP status of an API error, if it is one.
pub fn api_status(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Whether the error means "someone else wrote first" on a plain write:
/// 409 Conflict (a resourceVersion or uid precondition failed).
pub fn is_conflict(err: &kube::Error) -> bool {
    api_status(err) == Some(409)
}

/// Whether a conditioned JSON patch certainly lost its race (409). The API
/// server answers a failed `test` operation with the same bare 422
/// ("the server rejected our request due to an error in our request") as an
/// invalid patch, so a 422 is told apart by re-reading the object: see
/// [`super::pod_patch::patch_if_unchanged`].
pub fn is_lost_race(err: &kube::Error) -> bool {
    api_status(err) == Some(409)
}

/// Whether the error is 422 Unprocessable Entity (a failed `test`, or an
/// invalid request).
pub fn is_unprocessable(err: &kube::Error) -> bool {
    api_status(err) == Some(422)
}

/// Whether the error is 404 Not Found.
pub fn is_not_found(err: &kube::Error) -> bool {
    api_status(err) == Some(404)
}

/// Whether the error is 409 AlreadyExists on a create.
pub fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Requeue delay after a failed reconcile.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(2);

/// How a refusal of the API server reads in an object's `Ready` condition:
/// its reason, `invalid` as `invalid_reason`, and a message naming what
/// was refused and why; `None` for an error that is not a refusal the
/// object's owner can act on (a timeout, a conflict: retried quietly).
pub fn refusal(error: &Error, invalid_reason: &'static str) -> Option<(&'static str, String)> {
    use crate::api::reason;
    let reason = match error.class() {
        "name_conflict" => reason::NAME_CONFLICT,
        "invalid" => invalid_reason,
        "forbidden" => reason::FORBIDDEN,
        "quota" => reason::QUOTA_EXCEEDED,
        _ => return None,
    };
    let message = match error {
        Error::Kube { context, .. } => format!(
            "{context}: {}",
            error.api_message().unwrap_or("refused by the API server")
        ),
        other => other.to_string(),
    };
    Some((reason, message))
}
