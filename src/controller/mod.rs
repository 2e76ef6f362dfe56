//! The three controllers and what they share.
//!
//! Flow (the seed's diagram):
//! 1. [`warmpool`] keeps `spec.replicas` idle Pods of a template, owned by the
//!    pool and labelled with the pool and the template hash.
//! 2. [`claim`] creates a deny-ingress NetworkPolicy for a claim and, alongside,
//!    takes an idle Pod over with ONE write conditioned on its resourceVersion
//!    ([`takeover::steal_patch`]) and creates the Sandbox with the
//!    `agents.x-k8s.io/pod-name` annotation; with no usable Pod it creates the
//!    Sandbox without it (cold path).
//! 3. [`sandbox`] adopts the named Pod (again a conditioned write) or creates
//!    one, creates the headless Service and reports `Ready`.
//! 4. The pool sees a Pod leave (the steal's watch event) and creates the
//!    replacement at once.
//!
//! All state lives in the API server (labels, annotations, ownerReferences);
//! the in-memory parts ([`reservations::Reservations`], [`warmpool::Expectations`])
//! only prevent wasted writes and are safe to lose on restart.

pub mod admit;
pub mod cache;
pub mod claim;
pub mod context;
pub mod critical;
pub mod errors;
pub mod index;
pub mod janitor;
pub mod leader;
pub mod lean_pod;
pub mod memo;
pub mod ownership;
pub mod pod_patch;
pub mod pod_state;
pub mod policy_hold;
pub mod policy_name;
pub mod policy_owners;
pub mod repoint;
pub mod reservations;
pub mod retry;
pub mod run;
pub mod runner;
pub mod sandbox;
pub mod status_write;
pub mod takeover;
#[cfg(test)]
mod test_pod;
pub mod timeline;
pub mod triggers;
pub mod warmpool;

pub use context::{
    Config, Context, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NetworkPolicyMode, Triggers,
};
pub(crate) use errors::kube_err;
pub use errors::{
    ERROR_REQUEUE, Error, Result, api_status, is_already_exists, is_conflict, is_lost_race,
    is_not_found, is_unprocessable, kube_error_class,
};
pub use memo::WriteMemo;
pub use ownership::Created;
pub(crate) use ownership::create_owned;
pub use ownership::{controller_ref, controller_uid};
pub use pod_state::{is_terminating, live_target, pod_has_ended, pod_ips, pod_is_ready};
pub use runner::{Action, QueueReport};
pub(crate) use status_write::write_status;
pub use timeline::timeline;
