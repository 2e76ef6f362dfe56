//! HTTPS transport for Kubernetes admission webhooks.
//!
//! This crate knows how admission reaches a process, not what to admit. The
//! flow of one review:
//!
//! 1. The API server opens a TLS connection. [`serve`] accepts it, and the
//!    handshake takes the serving key pair from a [`CertStore`] (TLS 1.3 or
//!    1.2, the `ring` provider, ALPN `h2` or `http/1.1`).
//! 2. It POSTs an `admission.k8s.io/v1` AdmissionReview to `/mutate` or
//!    `/validate`. The body is read under a size limit, a deadline and a
//!    budget of bytes buffered across all requests (counting the bytes
//!    received, not the length announced), and decoded; anything malformed
//!    is answered with a 4xx and a message that names the problem, and
//!    never reaches the policy.
//! 3. The request goes to the [`AdmissionHandler`] the operator plugged in,
//!    whose answer is wrapped in an AdmissionReview carrying the request's
//!    `uid`. [`AdmissionHandler::observe`] then sees the outcome, for metrics.
//!
//! Certificates rotate underneath a running server: whoever manages them
//! calls [`CertStore::update`] (or lets [`CertStore::watch_files`] follow a
//! mounted Secret), and the next handshake uses the new pair.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use sandbox_webhook::{AdmissionHandler, CertStore, ServerConfig};
//! # async fn run(policy: Arc<dyn AdmissionHandler>, cert: &str, key: &str) -> sandbox_webhook::Result<()> {
//! let listener = sandbox_webhook::bind("0.0.0.0:9443".parse().unwrap()).await?;
//! let certs = CertStore::from_pem(cert, key)?;
//! let shutdown = async { tokio::signal::ctrl_c().await.ok(); };
//! sandbox_webhook::serve(listener, ServerConfig::default(), policy, certs, shutdown).await
//! # }
//! ```

mod error;
mod handler;
mod review;
mod server;
mod tls;

pub use error::{Error, Result};
pub use handler::{AdmissionHandler, Answered, Endpoint};
pub use server::{ServerConfig, bind, serve};
pub use tls::CertStore;

/// The admission types handlers work with, re-exported from kube.
pub use kube::core::admission;
