//! The admission webhook's PKI: a self-signed CA, a serving certificate it
//! signs, one Secret that holds both, and the CA published as `caBundle`.
//!
//! Layers, from pure to cluster-facing:
//!
//! - [`pki`](WebhookPki): generate a CA and serving certificate with rcgen,
//!   read expiry dates with x509-parser, and decide what is due for renewal
//!   ([`plan_renewal`], [`needs_rotation`]). No I/O; unit tested.
//! - [`load_or_create`] and [`rotate`]: the Secret, written only under
//!   optimistic concurrency so every replica ends up with the same PKI; a
//!   new CA keeps the CAs the caller last knew in the trust bundle.
//! - [`inject_ca_bundle`]: the trust bundle on every entry of the webhook
//!   configurations.
//! - [`CertManager`]: the loop that runs the above periodically and hands
//!   new serving pairs to the HTTPS server without a restart; it also
//!   watches the webhook configurations and runs at once when something
//!   else reset their `caBundle` (`reset_watch`).
//!
//! ```no_run
//! # async fn run(client: kube::Client) -> sandbox_certs::Result<()> {
//! use sandbox_certs::{CertManager, CertManagerConfig, PkiSettings};
//! let mut manager = CertManager::new(client, CertManagerConfig {
//!     namespace: "sandbox-system".into(),
//!     secret_name: "sandbox-operator-webhook-tls".into(),
//!     settings: PkiSettings::for_service("sandbox-operator-webhook", "sandbox-system"),
//!     mutating_webhooks: vec!["sandbox-operator".into()],
//!     validating_webhooks: vec!["sandbox-operator".into()],
//!     check_interval: std::time::Duration::from_secs(60),
//! });
//! let first_pair = manager.ensure().await?;
//! // build the server's key store from first_pair, then:
//! // A handover that fails (Err) is offered again at the next pass.
//! tokio::spawn(manager.run(
//!     |cert, key| { let _ = (cert, key); Ok::<(), std::convert::Infallible>(()) },
//!     std::future::pending(),
//! ));
//! # Ok(()) }
//! ```

mod ca_bundle;
mod error;
mod manager;
mod pki;
mod reset_watch;
mod secret;

pub use ca_bundle::{Injection, inject_ca_bundle};
pub use error::{Error, Result};
pub use manager::{CertExpiry, CertManager, CertManagerConfig};
pub use pki::{
    IssuedCertificate, PkiSettings, Renewal, WebhookPki, generate_ca, issue_serving,
    needs_rotation, not_after, not_after_der, plan_renewal,
};
pub use secret::{
    CA_BUNDLE_KEY, CA_CERT_KEY, CA_KEY_KEY, StoredPki, TLS_CERT_KEY, TLS_KEY_KEY, load_or_create,
    rotate,
};
