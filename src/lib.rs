//! sandbox-operator: isolated sandboxes for AI agents, served from warm pools
//! of pre-started Pods.
//!
//! - [`api`]: the CRD types and the label/annotation keys.
//! - [`controller`]: the sandbox, claim and warm-pool controllers.
//! - [`metrics`]: the Prometheus registry held in the shared context.
//! - [`admin`]: the plain-HTTP `/metrics`, `/healthz`, `/readyz` port.
//! - [`admission`]: the defaulting and validation policy (pure functions).
//! - [`webhook`]: the webhook configurations and serving inside `run`.
//! - [`cli`]: `claim create` / `claim delete` for scripts.
//! - [`client`]: the API clients (timeouts, the leader write fence).
//! - [`sizing`]: warm-pool sizing (the hit-ratio model, measurements, recommendation).
//! - [`log_pipe`]: log output written by a thread of its own.

pub mod admin;
pub mod admission;
pub mod api;
pub mod cli;
pub mod client;
pub mod controller;
pub mod log_pipe;
pub mod metrics;
pub mod sizing;
pub mod webhook;
