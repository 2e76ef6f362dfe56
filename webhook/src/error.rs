//! The crate's single error type.
//!
//! Two families share it: failures to start or configure the server
//! (returned from [`serve`](crate::serve) and the certificate functions), and
//! reasons a request was refused (turned into an HTTP status and a plain-text
//! message, see [`Error::status_code`]). Each variant has a short
//! [`label`](Error::label) for metrics.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use http::StatusCode;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the webhook transport.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Error {
    /// The listening socket could not be bound.
    #[error("failed to bind the webhook server to {address}")]
    Bind {
        /// The address that was asked for.
        address: SocketAddr,
        /// Why the operating system refused.
        #[source]
        source: std::io::Error,
    },

    /// The bound listener could not report its address.
    #[error("failed to read the local address of the webhook listener")]
    LocalAddress(#[source] std::io::Error),

    /// A certificate or key file could not be read.
    #[error("failed to read {path}")]
    ReadFile {
        /// The file that was read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The certificate PEM could not be parsed.
    #[error("invalid certificate PEM")]
    CertificatePem(#[source] rustls::pki_types::pem::Error),

    /// The certificate PEM holds no `CERTIFICATE` block.
    #[error("the certificate PEM contains no certificate")]
    NoCertificate,

    /// The key PEM holds no private key, or it could not be parsed.
    #[error("invalid or missing private key PEM")]
    PrivateKeyPem(#[source] rustls::pki_types::pem::Error),

    /// The private key is unsupported or does not belong to the certificate.
    #[error("the private key is unsupported or does not match the certificate")]
    KeyPair(#[source] rustls::Error),

    /// The rustls server configuration could not be built.
    #[error("failed to build the TLS server configuration")]
    TlsConfig(#[source] rustls::Error),

    /// The request body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },

    /// The request body could not be read from the connection.
    #[error("failed to read the request body")]
    ReadBody(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The request body is not JSON.
    #[error("request body is not valid JSON")]
    InvalidJson(#[source] serde_json::Error),

    /// The body is JSON but not an `admission.k8s.io/v1` `AdmissionReview`.
    #[error(
        "expected kind AdmissionReview with apiVersion admission.k8s.io/v1, \
         got kind {kind:?} with apiVersion {api_version:?}"
    )]
    UnsupportedReview {
        /// The `apiVersion` found in the body (empty when absent).
        api_version: String,
        /// The `kind` found in the body (empty when absent).
        kind: String,
    },

    /// The AdmissionReview has no `request` to answer.
    #[error("the AdmissionReview has no request")]
    MissingRequest,

    /// The `request` of the AdmissionReview does not have the expected
    /// shape, or lacks a member its operation needs (see
    /// `review::decode_review`).
    #[error("malformed AdmissionReview request: {field}: {reason}")]
    MalformedRequest {
        /// The member at fault, as a path from the review (`request.uid`,
        /// `request.oldObject`), or `request` itself.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The request was not answered within the configured time.
    #[error("the request was not completed within {0:?}")]
    Timeout(Duration),

    /// Too many requests were in flight for longer than the request timeout.
    #[error("too many admission requests in flight, try again")]
    Overloaded,

    /// The request bodies being received or answered fill the budget of
    /// buffered bytes for longer than the request timeout.
    #[error(
        "the server is already buffering {budget} bytes of request bodies, \
         the most it holds at once; try again"
    )]
    BodyBudgetExhausted {
        /// The budget in bytes.
        budget: usize,
    },

    /// The admission handler panicked.
    #[error("the admission handler failed unexpectedly")]
    HandlerPanicked,

    /// The answer could not be serialised.
    #[error("failed to encode the AdmissionReview response")]
    EncodeResponse(#[source] serde_json::Error),
}

impl Error {
    /// A short, stable name for metric labels and structured logs.
    pub fn label(&self) -> &'static str {
        self.into()
    }

    /// The HTTP status a refused request is answered with.
    ///
    /// Client mistakes map to 4xx, server-side trouble to 5xx; errors that
    /// only happen outside a request map to 500.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ReadBody(_)
            | Error::InvalidJson(_)
            | Error::UnsupportedReview { .. }
            | Error::MissingRequest
            | Error::MalformedRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Overloaded | Error::BodyBudgetExhausted { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error and its chain of causes on one line, for answers and logs.
    pub fn describe(&self) -> String {
        std::iter::successors(Some(self as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ")
    }
}
