//! The four custom resources of the operator and the label/annotation keys
//! that tie their children together.
//!
//! The JSON shape follows the upstream agent-sandbox v0.1 API, so manifests
//! written for it (and the seed's AIO Sandbox YAML) apply unchanged. Every CRD
//! is generated from these types (`sandbox-operator crd`), never written by
//! hand.
//!
//! | kind | group | role |
//! |---|---|---|
//! | [`Sandbox`] | `agents.x-k8s.io` | one sandbox: pod template, volumes, lifecycle |
//! | [`SandboxTemplate`] | `extensions.agents.x-k8s.io` | a reusable pod template |
//! | [`SandboxClaim`] | `extensions.agents.x-k8s.io` | a user's request for a sandbox |
//! | [`SandboxWarmPool`] | `extensions.agents.x-k8s.io` | keeps idle pre-started Pods of a template |
//!
//! One module a kind (`sandbox`, `template`, `claim`, `pool`), the
//! Pod template parts they share (`pod_template`), label/annotation keys
//! (`keys`), conditions (`conditions`) and their reasons (`reason`);
//! everything but the reasons is re-exported here, so `crate::api::X` names
//! every type and `crate::api::reason::X` every reason.

#[macro_use]
mod kind;

mod claim;
mod conditions;
pub mod dns;
mod keys;
mod pod_template;
mod pool;
pub mod reason;
mod sandbox;
mod template;

pub use claim::*;
pub use conditions::*;
pub use keys::*;
pub use pod_template::*;
pub use pool::*;
pub use sandbox::*;
pub use template::*;

use kube::CustomResourceExt;

/// All CRDs of the operator, in install order.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        Sandbox::crd(),
        SandboxTemplate::crd(),
        SandboxClaim::crd(),
        SandboxWarmPool::crd(),
    ]
}

/// All CRDs as one multi-document YAML stream (what `sandbox-operator crd` prints).
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| {
            format!(
                "---\n{}",
                serde_yaml::to_string(crd).expect("a CRD always serializes to YAML")
            )
        })
        .collect()
}
