//! The claim's NetworkPolicy, made (or made again) by its reconcile: the
//! warm path's round one makes it beside the steal (`serve`); this is the
//! check every later reconcile does, and the remake after a deletion.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::desired::{desired_network_policy, lockdown_network_policy, network_policy_name};
use super::serve::ensure_template_policy;
use crate::api::SandboxClaim;
use crate::controller::policy_hold::{has_hold, with_hold};
use crate::controller::policy_name::{NameTaken, policy_name_taken};
use crate::controller::policy_owners::add_pod_owners;
use crate::controller::{
    Context, Created, NetworkPolicyMode, Result, create_owned, is_terminating,
};

/// Makes sure the claim's NetworkPolicy (or its template's, in per-template
/// mode) exists; remembered once made, so a served claim costs no request
/// (per template and 30 s at most in per-template mode, where a served
/// claim checks again: its template's policy goes when the template is
/// deleted, and a template made again under the same name needs its own).
///
/// With the template gone (deleted before the claim got its policy, or,
/// in per-template mode, taking its policy with it), the claim gets its own
/// policy denying all ingress and all egress: nothing the template allowed
/// is known any more, and since policies only add allowances, a template
/// made again later still gets its rules through its own policy.
/// Before any Ready it is made; once `ready`, the policy cache answers
/// (no request) unless a deletion woke this reconcile, and until that
/// cache has listed a Ready claim does not check.
pub(super) async fn ensure_network_policy(
    ctx: &Context,
    claim: &SandboxClaim,
    namespace: &str,
    ready: bool,
    cold: &[Arc<Pod>],
) -> Result<()> {
    if ready
        && ctx.config.claim_network_policy == NetworkPolicyMode::PerClaim
        && !ctx.network_policies_listed()
    {
        return Ok(());
    }
    let [made_key, lockdown_key] = policy_memo_keys(&claim.uid().unwrap_or_default());
    // The claim's own policy (made from its template, or the lockdown one:
    // both under its name) in the cache, controlled by this claim: in place.
    // Another controller falls through to the create, which names it.
    if ctx.config.claim_network_policy == NetworkPolicyMode::PerClaim
        && ctx
            .network_policy_controller(namespace, &network_policy_name(&claim.name_any()))
            .flatten()
            == claim.uid()
    {
        ctx.written.forget(&made_key);
        ctx.written.forget(&lockdown_key);
        put_the_hold_on(ctx, claim, namespace).await;
        return Ok(());
    }
    let template_name = &claim.spec.sandbox_template_ref.name;
    let template = ctx.template_or_get(namespace, template_name).await?;
    if let (NetworkPolicyMode::PerTemplate, Some(template)) =
        (ctx.config.claim_network_policy, &template)
    {
        return ensure_template_policy(ctx, template).await;
    }
    let key = match &template {
        Some(_) => made_key,
        None => lockdown_key,
    };
    if ctx
        .written
        .recently_wrote(&key, &serde_json::Value::Bool(true))
    {
        return Ok(());
    }
    let deny = ctx.config.policy.current().network.deny_egress();
    let policy = match &template {
        Some(template) => {
            desired_network_policy(claim, template.spec.network_policy.as_ref(), &deny)?
        }
        None => {
            tracing::warn!(template = %template_name, "the claim's template is gone: its NetworkPolicy denies all ingress and egress");
            lockdown_network_policy(claim)?
        }
    };
    // With the hold: a Pod stolen for the claim or started cold for it
    // (both labelled with its uid) may outlive it. Made again while a cold
    // Pod of an older version runs (deleted, say): that Pod is a co-owner
    // from the start (see `cold_pod`).
    let policy = with_hold(
        crate::controller::policy_owners::with_pod_owners(policy, cold),
        ctx.network_policies_listed(),
    );
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    if let Created::Existing(existing) = create_owned(&policies, &policy, "NetworkPolicy").await?
        && let Err(error) =
            add_pod_owners(&policies, &existing, cold, ctx.network_policies_listed()).await
    {
        // Found rather than made (the cache had not shown it): its cold Pod
        // becomes a co-owner now; refused, at the next reconcile.
        tracing::warn!(%error, "the cold Pod could not be made a co-owner of the claim's NetworkPolicy");
    }
    ctx.written.record(&key, serde_json::Value::Bool(true));
    Ok(())
}

/// Puts the hold on the claim's policy when the policy cache shows it
/// without (made before the cache had listed, or by a version without the
/// hold; the policy trigger wakes the claim for it): one strategic merge
/// patch, once. A refused patch is logged and tried again at the claim's
/// next reconcile; the policy is in place either way.
async fn put_the_hold_on(ctx: &Context, claim: &SandboxClaim, namespace: &str) {
    let Some(policy) = ctx
        .caches
        .network_policies
        .get(&ObjectRef::new(&network_policy_name(&claim.name_any())).within(namespace))
        .filter(|p| !has_hold(p) && !is_terminating(p.as_ref()))
    else {
        return;
    };
    if !ctx.network_policies_listed() {
        return;
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    if let Err(error) = add_pod_owners(&policies, &policy, &[], true).await {
        tracing::warn!(%error, "the hold could not be put on the claim's NetworkPolicy");
    }
}

/// Why the claim may not be served yet: the policy cache shows the policy
/// of its name taken by an earlier claim of that name and on its way out
/// (see [`policy_name_taken`]). A Pod stolen or started now would
/// run under that claim's rules, and the claim's own policy could not be
/// made until it is gone. One cache lookup; `None` before the cache has
/// listed.
pub(super) fn earlier_claims_policy(
    ctx: &Context,
    claim: &SandboxClaim,
    namespace: &str,
    claim_uid: &str,
) -> Option<(NameTaken, String)> {
    ctx.caches
        .network_policies
        .get(&ObjectRef::new(&network_policy_name(&claim.name_any())).within(namespace))
        .and_then(|policy| {
            policy_name_taken(
                &policy,
                Some(claim_uid),
                ctx.config.claim_network_policy == NetworkPolicyMode::PerClaim,
            )
        })
}

/// The memo keys of the NetworkPolicy of claim `claim_uid`: made from its
/// template, and the lockdown one (template gone). Both are forgotten when
/// the policy is deleted (see `triggers::network_policy_trigger`).
pub(crate) fn policy_memo_keys(claim_uid: &str) -> [String; 2] {
    [
        format!("network-policy/{claim_uid}"),
        format!("network-policy-lockdown/{claim_uid}"),
    ]
}
