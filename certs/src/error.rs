//! The crate's single error type.

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while issuing, storing or publishing the
/// webhook's certificates.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Error {
    /// rcgen could not generate a key or sign a certificate.
    #[error("failed to generate a key pair or certificate")]
    Generate(#[source] rcgen::Error),

    /// A PEM block could not be decoded.
    #[error("invalid PEM")]
    Pem(#[source] x509_parser::error::PEMError),

    /// A PEM block holds something that is not an X.509 certificate.
    #[error("invalid X.509 certificate")]
    Certificate(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),

    /// A PEM block holds something else than a certificate.
    #[error("PEM block of type {label:?} instead of CERTIFICATE")]
    NotCertificatePem {
        /// The block's type, from its `-----BEGIN` line.
        label: String,
    },

    /// A PEM text holds no certificate at all.
    #[error("no certificate found in the PEM text")]
    NoCertificate,

    /// A date is outside what a certificate can carry.
    #[error("validity period out of range")]
    TimeOutOfRange,

    /// A Kubernetes API call failed.
    #[error("failed to {action}")]
    Kube {
        /// What was attempted, naming the object, e.g. `create Secret ns/name`.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// The API server returned an object without `metadata.resourceVersion`,
    /// so a conditioned write is impossible.
    #[error("{object} has no resourceVersion")]
    MissingResourceVersion {
        /// The object read.
        object: String,
    },

    /// Other writers kept changing the object between our read and write.
    #[error("gave up on {object} after {attempts} conflicting writes")]
    Contention {
        /// The object that kept changing.
        object: String,
        /// How many writes were attempted.
        attempts: usize,
    },
}

impl Error {
    /// A short, stable name for metric labels and structured logs.
    pub fn label(&self) -> &'static str {
        self.into()
    }

    /// The error and its chain of causes on one line, for logs.
    pub fn describe(&self) -> String {
        std::iter::successors(Some(self as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ")
    }

    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

/// Whether a client error is the API server's 409 for a create that lost the
/// race (`AlreadyExists`) or an update that lost it (`Conflict`).
pub(crate) fn is_conflict(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            status.code == 409 || status.is_conflict() || status.is_already_exists()
        }
        _ => false,
    }
}

/// Whether a client error is the API server's 404.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}
