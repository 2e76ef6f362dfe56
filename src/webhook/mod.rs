//! The admission webhook inside the operator process: its
//! Mutating/ValidatingWebhookConfigurations ([`config`]) and starting it
//! inside `run` with certificates and optional registration by URL
//! ([`runtime`]). The transport is the `sandbox-webhook` crate; the policy
//! it serves is [`crate::admission`].

pub mod config;
pub mod guard;
pub mod runtime;
