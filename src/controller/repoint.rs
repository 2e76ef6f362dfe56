//! Pointing a Sandbox's `agents.x-k8s.io/pod-name` at a Pod, or at none.
//!
//! Two controllers write that annotation: the claim controller (after a lost
//! steal, or a repair) and the Sandbox controller (when the named Pod is
//! gone, before it starts a Pod of its own). Guarantee: every such write is
//! ONE merge patch conditioned on the resourceVersion the writer decided
//! from, so of two writers that decided on the same version only one lands
//! and the other decides again on fresh data; neither can start a Pod for a
//! name the other has just replaced.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use super::{Result, kube_err};
use crate::api::{POD_NAME_ANNOTATION, Sandbox};

/// Points `sandbox` at `pod` (`None` removes the annotation: cold path),
/// conditioned on `sandbox`'s resourceVersion; a 409 comes back as the
/// error. Returns the Sandbox as written.
pub async fn point_sandbox_at(
    client: &kube::Client,
    sandbox: &Sandbox,
    pod: Option<&str>,
) -> Result<Sandbox> {
    let api: Api<Sandbox> =
        Api::namespaced(client.clone(), &sandbox.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": sandbox.resource_version(),
            "annotations": { POD_NAME_ANNOTATION: pod },
        }
    });
    api.patch(
        &sandbox.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(kube_err(format!(
        "point Sandbox {} at Pod {}",
        sandbox.name_any(),
        pod.unwrap_or("(none)")
    )))
}
