//! The pool's own NetworkPolicy, so idle Pods are isolated from the moment
//! they exist, not only once a claim takes them.
//!
//! In the default `--claim-network-policy per-claim` mode each pool gets one
//! policy, `sandbox-pool-<pool>`, controlled by the pool (garbage-collected
//! with it): no ingress rule (deny all ingress) and the template's egress
//! minus the policy file's `network.denyEgressCIDRs`. It selects the
//! origin-pool label, which the pool puts on every Pod it creates and the
//! steal keeps: a stolen Pod stays covered while the claim's own policy is
//! being created beside the steal, so there is no moment without one. The
//! selection adds the pool's egress allowances (its template's, as it is
//! now) to whatever else selects a Pod: so only the operator may give a Pod
//! that label (the ownership guard's rule 3), and a claimed Pod keeps the
//! union of its claim's and its pool's current rules (the README's "known
//! limit": editing the template widens it). In `per-template` mode the
//! template's policy (it selects the template label, which every pool Pod
//! carries) covers idle Pods, so the pool makes sure that one exists instead.
//!
//! Guarantees: [`ensure`] runs before the pool creates any Pod in a
//! reconcile, and an error from it stops every create (the pool reports
//! it; a `NameConflict` waits for the next resync, any other error is
//! retried with the controller's backoff); the policy is
//! created with [`create_owned`], so a foreign object of that name is a
//! `NameConflict` and never used; a policy this process made or checked is
//! remembered (per pool uid, template uid and generation, and deny list,
//! no expiry), so resyncs send no request and build nothing, and a changed
//! deny list or template egress is written once. The pool's idle Pods go
//! with it but run out their grace period, so the policy carries the hold
//! of [`crate::controller::policy_hold`] (from its creation; one patch for
//! a policy made by a version without it): deleted, it stays until no Pod
//! the pool controls is left.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::super::claim::{ensure_template_policy, same_policy_spec};
use super::super::ownership::{Created, create_owned};
use super::super::policy_hold::{HOLD_FINALIZER, has_hold, lift_and_delete, with_hold};
use super::super::{
    Context, Error, NetworkPolicyMode, Result, controller_ref, is_terminating, kube_err,
};
use crate::admission::{Cidr, restrict_egress};
use crate::api::reason;
use crate::api::{FIELD_MANAGER, ORIGIN_POOL_LABEL, SandboxTemplate, SandboxWarmPool};
use crate::controller::claim::sandbox_network_policy;

/// Name of a pool's NetworkPolicy.
pub fn pool_network_policy_name(pool: &str) -> String {
    format!("sandbox-pool-{pool}")
}

/// The NetworkPolicy of a pool: deny all ingress to its Pods, egress as
/// the template says minus `deny`. Owned by the pool. Pure.
pub fn desired_pool_network_policy(
    pool: &SandboxWarmPool,
    template: &SandboxTemplate,
    deny: &[Cidr],
) -> Result<NetworkPolicy> {
    let egress =
        crate::api::NetworkPolicySpec::allowed_egress(template.spec.network_policy.as_ref());
    Ok(sandbox_network_policy(
        pool_network_policy_name(&pool.name_any()),
        pool.namespace(),
        (ORIGIN_POOL_LABEL, pool.name_any()),
        Vec::new(),
        restrict_egress(egress, deny),
        controller_ref(pool)?,
    ))
}

/// Makes sure the policy covering the pool's Pods exists. Until it does
/// (an error), no Pod may be created: see [`blocker`] for the condition.
pub(super) async fn ensure(
    ctx: &Context,
    pool: &SandboxWarmPool,
    template: &SandboxTemplate,
    key: &str,
) -> Result<()> {
    let deny = ctx.config.policy.current().network.deny_egress();
    match ctx.config.claim_network_policy {
        NetworkPolicyMode::PerClaim => ensure_pool_policy(ctx, pool, template, &deny, key).await,
        NetworkPolicyMode::PerTemplate => {
            let fingerprint = json!({
                "template": template.meta().uid,
                "generation": template.meta().generation,
                "deny": deny.iter().map(ToString::to_string).collect::<Vec<_>>(),
            });
            if ctx.expectations.network_policy_done(key, &fingerprint) {
                return Ok(());
            }
            ensure_template_policy(ctx, template).await?;
            if remove_the_lockdown(ctx, pool, key).await? {
                ctx.expectations.network_policy_made(key, fingerprint);
            }
            Ok(())
        }
    }
}

/// In `per-template` mode the template's policy is the only one covering
/// the pool's idle Pods, and it goes with the template: a pool whose
/// template is missing gets a policy of its own under its policy's name,
/// denying all ingress and all egress to its Pods (the origin-pool label),
/// with the hold (its idle Pods go with the pool but run out their grace
/// period). One of that name found with another spec (a per-claim pool
/// policy, from before a mode switch) is replaced. Once the template is
/// back, [`ensure`] deletes it (an Egress-type policy with no rule would
/// cut off the egress an Ingress-only template policy leaves open).
/// Nothing in `per-claim` mode, where the pool's own policy stays.
/// Remembered like the pool's policy (with whether it carries the hold), so
/// a pool waiting for its template sends one create.
pub(super) async fn lock_down_without_template(
    ctx: &Context,
    pool: &SandboxWarmPool,
    key: &str,
) -> Result<()> {
    if ctx.config.claim_network_policy != NetworkPolicyMode::PerTemplate {
        return Ok(());
    }
    let listed = ctx.network_policies_listed();
    let fingerprint = lockdown_fingerprint(pool, listed);
    if ctx.expectations.network_policy_done(key, &fingerprint) {
        return Ok(());
    }
    let lockdown = with_hold(
        sandbox_network_policy(
            pool_network_policy_name(&pool.name_any()),
            pool.namespace(),
            (ORIGIN_POOL_LABEL, pool.name_any()),
            Vec::new(),
            Some(Vec::new()),
            controller_ref(pool)?,
        ),
        listed,
    );
    let policies: Api<NetworkPolicy> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    if let Created::Existing(mut existing) =
        create_owned(&policies, &lockdown, "NetworkPolicy").await?
        && (!same_policy_spec(existing.spec.as_ref(), lockdown.spec.as_ref())
            || (listed && !has_hold(&existing) && !is_terminating(&existing)))
    {
        // Ours (create_owned checked the controller) but not the lockdown:
        // replaced, conditioned on the version read.
        let add_hold = listed && !has_hold(&existing);
        replace_spec(
            &policies,
            &mut existing,
            lockdown.spec,
            add_hold,
            "lock down the pool's NetworkPolicy",
        )
        .await?;
    }
    ctx.expectations.network_policy_made(key, fingerprint);
    Ok(())
}

/// Replaces the spec of `existing` (one of the pool's, as read) with
/// `spec`, adding the hold when `add_hold`; conditioned on the version
/// read (a replace carries it).
async fn replace_spec(
    policies: &Api<NetworkPolicy>,
    existing: &mut NetworkPolicy,
    spec: Option<k8s_openapi::api::networking::v1::NetworkPolicySpec>,
    add_hold: bool,
    what: &'static str,
) -> Result<()> {
    existing.spec = spec;
    if add_hold {
        existing.finalizers_mut().push(HOLD_FINALIZER.into());
    }
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    policies
        .replace(&existing.name_any(), &params, existing)
        .await
        .map_err(kube_err(what))?;
    Ok(())
}

/// The memo fingerprint of a pool's lockdown (see
/// [`lock_down_without_template`]).
fn lockdown_fingerprint(pool: &SandboxWarmPool, hold: bool) -> serde_json::Value {
    json!({"lockdown": pool.meta().uid, "hold": hold})
}

/// Deletes the pool's lockdown (see [`lock_down_without_template`]) once
/// its template is back: under the pool's policy name, controlled by this
/// pool, as the policy cache shows it, or, when this process made one the
/// cache may not show yet, as the API server does. The hold is lifted
/// first (see [`lift_and_delete`]). `Ok(true)` when none is left; the
/// caller remembers the template's policy as done only then, so a lockdown
/// that changed meanwhile is looked at again.
async fn remove_the_lockdown(ctx: &Context, pool: &SandboxWarmPool, key: &str) -> Result<bool> {
    let namespace = pool.namespace().unwrap_or_default();
    let name = pool_network_policy_name(&pool.name_any());
    let ours = |p: &NetworkPolicy| {
        super::super::controller_uid(&p.metadata) == pool.meta().uid.as_deref()
            && !is_terminating(p)
    };
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let cached = ctx
        .caches
        .network_policies
        .get(&kube::runtime::reflector::ObjectRef::new(&name).within(&namespace))
        .filter(|p| ours(p));
    let made_one = [true, false].into_iter().any(|hold| {
        ctx.expectations
            .network_policy_done(key, &lockdown_fingerprint(pool, hold))
    });
    let lockdown = match cached {
        Some(p) => Some(p.as_ref().clone()),
        None if made_one => policies
            .get_opt(&name)
            .await
            .map_err(kube_err("read the pool's lockdown NetworkPolicy"))?
            .filter(|p| ours(p)),
        None => None,
    };
    match lockdown {
        Some(lockdown) => lift_and_delete(&policies, &lockdown).await,
        None => Ok(true),
    }
}

/// The condition a failed [`ensure`] gives the pool: `NameConflict` when
/// another owner holds the name, else `NetworkPolicyFailed`.
pub(super) fn blocker(error: &Error) -> (&'static str, String) {
    let reason = match error {
        Error::NameConflict { .. } => reason::NAME_CONFLICT,
        _ => reason::NETWORK_POLICY_FAILED,
    };
    (
        reason,
        format!("no Pod is created until the pool's NetworkPolicy exists: {error}"),
    )
}

/// What the pool's desired policy is made of: the pool, its template's
/// version (the API server bumps a template's generation with every change
/// of its spec) and the deny list. Cheap, so a reconcile with nothing new
/// neither builds nor serialises the policy. Pure.
fn pool_policy_fingerprint(
    pool: &SandboxWarmPool,
    template: &SandboxTemplate,
    deny: &[Cidr],
    hold: bool,
) -> serde_json::Value {
    json!({
        "pool": pool.meta().uid,
        "template": template.meta().uid,
        "generation": template.meta().generation,
        "deny": deny.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "hold": hold,
    })
}

async fn ensure_pool_policy(
    ctx: &Context,
    pool: &SandboxWarmPool,
    template: &SandboxTemplate,
    deny: &[Cidr],
    key: &str,
) -> Result<()> {
    // Idle Pods go with their pool but run out their grace period: the
    // policy holds until they are gone (once the policy cache has listed,
    // so that something can lift it; a pool policy without the hold in
    // that cache wakes its pool, which then puts it on).
    let hold = ctx.network_policies_listed();
    let fingerprint = pool_policy_fingerprint(pool, template, deny, hold);
    if ctx.expectations.network_policy_done(key, &fingerprint) {
        return Ok(());
    }
    let mut desired = desired_pool_network_policy(pool, template, deny)?;
    if hold {
        desired.finalizers_mut().push(HOLD_FINALIZER.into());
    }
    let policies: Api<NetworkPolicy> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    if let Created::Existing(mut existing) =
        create_owned(&policies, &desired, "NetworkPolicy").await?
    {
        let add_hold = hold && !has_hold(&existing) && !is_terminating(&existing);
        if !same_policy_spec(existing.spec.as_ref(), desired.spec.as_ref()) {
            // Ours (create_owned checked the controller) but from an older
            // deny list or template: replace the spec (and put the hold on),
            // conditioned on the version read.
            replace_spec(
                &policies,
                &mut existing,
                desired.spec.clone(),
                add_hold,
                "update the pool's NetworkPolicy",
            )
            .await?;
        } else if add_hold {
            // Made by a version without the hold (or before the policy cache
            // listed). The policy is in place either way: a refused patch is
            // only logged, and Pods are still made.
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let patch = json!({"metadata": {"finalizers": [HOLD_FINALIZER]}});
            if let Err(error) = policies
                .patch(&desired.name_any(), &params, &Patch::Strategic(patch))
                .await
            {
                tracing::warn!(%error, "the hold could not be put on the pool's NetworkPolicy");
            }
        }
    }
    ctx.expectations.network_policy_made(key, fingerprint);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{NetworkPolicySpec as TemplateRules, SandboxTemplateSpec};
    use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyEgressRule, NetworkPolicyPeer};

    fn pool() -> SandboxWarmPool {
        let mut pool = SandboxWarmPool::new("p1", Default::default());
        pool.metadata.namespace = Some("ns".into());
        pool.metadata.uid = Some("pool-uid".into());
        pool
    }

    fn deny() -> Vec<Cidr> {
        vec![Cidr::parse("169.254.0.0/16").unwrap()]
    }

    #[test]
    fn the_pool_policy_denies_ingress_and_metadata_egress_for_its_pods() {
        let template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
        let policy = desired_pool_network_policy(&pool(), &template, &deny()).unwrap();
        assert_eq!(policy.name_any(), "sandbox-pool-p1");
        assert_eq!(policy.namespace().as_deref(), Some("ns"));
        let owner = &policy.owner_references()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("pool-uid", Some(true))
        );
        let spec = policy.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[ORIGIN_POOL_LABEL],
            "p1"
        );
        assert_eq!(spec.ingress, Some(vec![]));
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()])
        );
        let to = spec.egress.unwrap()[0].to.clone().unwrap();
        assert_eq!(
            to[0].ip_block.as_ref().unwrap().except,
            Some(vec!["169.254.0.0/16".to_string()])
        );
        assert_eq!(to[1].ip_block.as_ref().unwrap().cidr, "::/0");
    }

    #[test]
    fn template_ingress_never_opens_idle_pods_and_egress_is_narrowed() {
        let mut template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
        template.spec.network_policy = Some(TemplateRules {
            ingress: Some(vec![Default::default()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: "169.254.169.254/32".into(),
                        except: None,
                    }),
                    ..Default::default()
                }]),
                ports: None,
            }]),
        });
        let spec = desired_pool_network_policy(&pool(), &template, &deny())
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(spec.ingress, Some(vec![]));
        // The only egress rule pointed into the denied range: deny all egress.
        assert_eq!(spec.egress, Some(vec![]));
        // Without a deny list the template's egress is kept as written.
        let open = desired_pool_network_policy(&pool(), &template, &[]).unwrap();
        assert_eq!(open.spec.unwrap().egress.unwrap().len(), 1);
    }

    #[test]
    fn the_policy_is_rebuilt_when_the_pool_template_or_deny_list_changes() {
        let mut template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
        template.metadata.uid = Some("t-uid".into());
        template.metadata.generation = Some(1);
        let base = pool_policy_fingerprint(&pool(), &template, &deny(), true);
        assert_eq!(
            base,
            pool_policy_fingerprint(&pool(), &template, &deny(), true)
        );
        let mut edited = template.clone();
        edited.metadata.generation = Some(2);
        let mut replaced = template.clone();
        replaced.metadata.uid = Some("t-uid-2".into());
        let mut other_pool = pool();
        other_pool.metadata.uid = Some("pool-uid-2".into());
        for changed in [
            pool_policy_fingerprint(&pool(), &edited, &deny(), true),
            pool_policy_fingerprint(&pool(), &replaced, &deny(), true),
            pool_policy_fingerprint(&pool(), &template, &[], true),
            pool_policy_fingerprint(&other_pool, &template, &deny(), true),
            // Made before the policy cache listed: looked at again once it has.
            pool_policy_fingerprint(&pool(), &template, &deny(), false),
        ] {
            assert_ne!(changed, base);
        }
    }

    #[test]
    fn specs_compare_modulo_dropped_empty_lists() {
        let template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
        let a = desired_pool_network_policy(&pool(), &template, &[])
            .unwrap()
            .spec;
        let mut b = a.clone();
        b.as_mut().unwrap().ingress = None;
        assert!(same_policy_spec(a.as_ref(), b.as_ref()));
        let c = desired_pool_network_policy(&pool(), &template, &deny())
            .unwrap()
            .spec;
        assert!(!same_policy_spec(a.as_ref(), c.as_ref()));
    }
}
