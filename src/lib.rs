//! sandbox-operator: isolated sandboxes for AI agents, served from warm pools
//! of pre-started Pods.
//!
//! - [`api`]: the CRD types and the label/annotation keys.
//! - [`controller`]: the sandbox, claim and warm-pool controllers.
//! - [`admission`]: the defaulting and validation policy (pure functions).
//! - [`metrics`]: the Prometheus registry held in the shared context.

pub mod api;
