//! The one resourceVersion-conditioned Pod patch, shared by the claim's
//! steal and the Sandbox's adoption.
//!
//! Guarantee: exactly one write, never retried here; a lost race is told
//! apart from a refused patch by one re-read, and the re-read copy goes
//! back to the caller, which decides what to do with it.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use super::lean_pod::LeanPod;
use super::takeover::adopt_patch;
use super::{Error, controller_ref};
use super::{Result, is_lost_race, is_not_found, is_unprocessable, kube_err};
use crate::api::Sandbox;

/// What a resourceVersion-conditioned Pod patch came to.
#[derive(Debug)]
pub enum Conditioned {
    /// Written: the Pod as the API server answered.
    Written(Pod),
    /// Someone changed the Pod first (409, gone, or a 422 after which the
    /// Pod is found changed): the Pod as re-read, `None` when it is gone.
    Lost(Option<Pod>),
}

/// Sends `patch`, a JSON patch of `pod` whose first operation tests the
/// resourceVersion it was computed from ([`super::takeover::steal_patch`], [`super::takeover::adopt_patch`]).
///
/// The API server answers a failed `test` with the same bare 422 as an
/// invalid patch, so after a 409 or 422 the Pod is read once: a 422 on a
/// Pod that did not change means the patch itself was refused, an error
/// naming `what` (the write, e.g. "steal") and the Pod, instead of a
/// "conflict" that would burn candidates. Otherwise the race was lost and
/// the fresh copy comes back for the caller to judge. Exactly one write,
/// never retried here.
pub async fn patch_if_unchanged(
    api: &Api<Pod>,
    pod: &Pod,
    patch: json_patch::Patch,
    what: &str,
) -> Result<Conditioned> {
    let name = pod.name_any();
    let params = PatchParams::default();
    // Answers are decoded as the Pod cache keeps Pods (`LeanPod`): every
    // caller reads only kept fields (name, labels, owners, resourceVersion,
    // Ready, IPs, node).
    let namespace = api
        .namespace()
        .ok_or(super::Error::Incomplete("a namespaced Pod API"))?
        .to_string();
    let api: Api<LeanPod> = Api::namespaced(api.clone().into_client(), &namespace);
    match api.patch(&name, &params, &Patch::<()>::Json(patch)).await {
        Ok(written) => Ok(Conditioned::Written(written.into_pod())),
        Err(e) if is_not_found(&e) => Ok(Conditioned::Lost(None)),
        Err(e) if is_lost_race(&e) || is_unprocessable(&e) => {
            let fresh = api
                .get_opt(&name)
                .await
                .map_err(kube_err(format!("re-read pod {name}")))?
                .map(LeanPod::into_pod);
            match fresh {
                Some(fresh)
                    if is_unprocessable(&e)
                        && fresh.resource_version() == pod.resource_version() =>
                {
                    Err(kube_err(format!("{what} pod {name}"))(e))
                }
                fresh => Ok(Conditioned::Lost(fresh)),
            }
        }
        Err(e) => Err(kube_err(format!("{what} pod {name}"))(e)),
    }
}

/// Takes over `pod` for the Sandbox. Returns the Pod as written, or, when
/// the Pod changed since it was read (someone else wrote first), what a
/// fresh read found ([`Conditioned::Lost`]).
///
/// Guarantee: ONE write, conditioned on the resourceVersion read
/// ([`adopt_patch`]); a Pod owned by anything other than this Sandbox's
/// claim is never passed here (the Sandbox's `may_adopt` decides, for the
/// fresh copy too before it is tried).
pub async fn adopt(pods: &Api<Pod>, pod: &Pod, sandbox: &Sandbox) -> Result<Conditioned> {
    let patch = adopt_patch(pod, &sandbox.name_any(), controller_ref(sandbox)?)
        .ok_or(Error::Incomplete("pod resourceVersion"))?;
    patch_if_unchanged(pods, pod, patch, "adopt").await
}
