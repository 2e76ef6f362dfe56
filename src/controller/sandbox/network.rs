//! A standalone Sandbox's NetworkPolicy: the policy file's denied egress
//! ranges apply to every sandbox, not only to claimed and idle ones.
//!
//! A claim's Sandbox is covered by the claim's policy (or its template's),
//! and an idle Pod by its pool's. A Sandbox created directly (the seed's AIO
//! example) had none, so the code in it could reach what
//! `network.denyEgressCIDRs` is there to keep sandboxes from (the cloud's
//! instance metadata and credentials at 169.254.169.254): a tenant allowed
//! to create Sandboxes but not Pods could step around the deny list by not
//! using a claim. Now such a Sandbox gets `<sandbox>-sandbox-egress`,
//! controlled by the Sandbox, selecting the `agents.x-k8s.io/sandbox=<sandbox>`
//! label its Pod carries, as the policy file's `network.standalonePolicy`
//! says:
//! - `egress` (the default): egress everywhere except the denied ranges,
//!   ingress left as the cluster has it (a standalone Sandbox has no
//!   template saying what may reach it, and its user reaches it through its
//!   Service: the AIO example's browser and editor); no policy at all with
//!   an empty deny list (it would only allow);
//! - `isolated`: the same, and all ingress denied (with an empty deny list,
//!   a policy on ingress only);
//! - `none`: no policy (one made earlier is deleted).
//!
//! Guarantees:
//! - made before the Sandbox's Pod is created or adopted: until it exists
//!   no Pod is started, and the Sandbox says why (`Ready=False`, reason
//!   `NameConflict` when a policy of that name is not the Sandbox's, which is
//!   never used; `NetworkPolicyFailed` for any other failure; tried again
//!   every 10 s). Everything else the reconcile does (expiry, pause, status)
//!   goes on;
//! - the Sandbox's Pod becomes a co-owner (not controller) of the policy
//!   once the cache shows both, or when the policy is made or found while
//!   the Pod exists: the garbage collector deletes an object only when all
//!   its owners are gone, and a Pod object stays until its containers have
//!   stopped, so deleting the Sandbox (background, the default, or orphan)
//!   does not lift the policy from a Pod still running out its grace
//!   period. Foreground deletion would (the collector deletes the Pod in
//!   the foreground too, and the policy, whose owners both wait on their
//!   dependents, at once), so the policy is made with the hold of
//!   [`crate::controller::policy_hold`]: deleted, it stays until no Pod it
//!   covers exists. A policy kept by a terminating Pod keeps the name: a
//!   new Sandbox of the same name waits (`NameConflict`) until that Pod is
//!   gone;
//! - checked in the NetworkPolicy cache (no request) on later reconciles,
//!   replaced when the network section changes (a policy-file reload reaches
//!   it at the next reconcile or resync), made again once deleted (the
//!   cache's deletion event wakes the Sandbox; a deleted policy is held
//!   until its Pod is gone, see `policy_hold`, so that is once the Sandbox
//!   has no Pod left).
//!
//! Which Sandbox counts as a claim's is decided from what the operator
//! wrote ([`coverage`]): a controller reference to the SandboxClaim of the
//! Sandbox's own name (the claim's policy, or its template's, covers its
//! Pod). A Sandbox whose claim reference was removed while the claim lives
//! is still covered by the claim's policy as long as its live Pod carries
//! the claim label of the Sandbox's name (which only the operator may
//! write) and the policy cache shows that policy controlled by a claim; it
//! is looked at again every 10 s, and gets its own once that ends. Any
//! other Sandbox gets its own, including one whose claim was deleted with
//! `--cascade=orphan` (the claim's policy is then nobody's): it is a
//! standalone Sandbox from then on, and its egress is the standalone one
//! (everywhere but the deny list, which policies add to whatever the old
//! claim's policy allows).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::admission::{Cidr, NetworkRules, StandalonePolicy, restrict_egress};
use crate::api::{CLAIM_LABEL, ConditionUpdate, FIELD_MANAGER, SANDBOX_LABEL, Sandbox, reason};
use crate::controller::claim::same_policy_spec;
use crate::controller::ownership::{Created, controller_of_kind};
use crate::controller::policy_hold::{HOLD_FINALIZER, is_held, lift_and_delete};
use crate::controller::policy_name::policy_name_taken;
use crate::controller::policy_owners::{add_pod_owners, missing_pod_owners};
use crate::controller::{
    Context, Error, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Result, controller_ref, controller_uid,
    create_owned, is_terminating, kube_err,
};

/// Name of a standalone Sandbox's NetworkPolicy.
pub fn standalone_policy_name(sandbox: &str) -> String {
    format!("{sandbox}-sandbox-egress")
}

/// The memo key of a standalone Sandbox's policy write (see [`ensure`]).
pub(crate) fn standalone_policy_key(sandbox_uid: &str) -> String {
    format!("sandbox-policy/{sandbox_uid}")
}

/// What covers a Sandbox's Pods, as far as its own policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// The Sandbox of the claim of its name (its controller): the claim's
    /// policy, or its template's.
    Claim,
    /// Not its claim's any more (its reference was removed), but its live
    /// Pod still carries the claim label of the Sandbox's name and that
    /// claim's policy is in place: covered by it for now, looked at again
    /// (see [`POLICY_RECHECK`](super::POLICY_RECHECK)).
    DetachedClaim,
    /// Anything else: the Sandbox needs its own.
    Own,
}

/// What covers the Sandbox's Pods (see the module docs): `claim_policy`
/// says whether the policy cache shows `<sandbox>-sandbox` controlled by a
/// SandboxClaim (asked only for a Sandbox no claim controls, so a claim's
/// Sandbox costs no lookup). Pure.
pub fn coverage(
    sandbox: &Sandbox,
    pods: &[Arc<Pod>],
    claim_policy: impl FnOnce() -> bool,
) -> Coverage {
    let name = sandbox.name_any();
    if controller_of_kind(sandbox.owner_references(), "SandboxClaim")
        .is_some_and(|c| c.name == name)
    {
        return Coverage::Claim;
    }
    let claimed_pod = pods
        .iter()
        .any(|p| !is_terminating(p.as_ref()) && p.labels().get(CLAIM_LABEL) == Some(&name));
    if claimed_pod && claim_policy() {
        Coverage::DetachedClaim
    } else {
        Coverage::Own
    }
}

/// Whether the policy cache shows the policy of the claim `name`
/// controlled by a SandboxClaim.
fn claim_policy_in_place(ctx: &Context, namespace: &str, name: &str) -> bool {
    ctx.caches
        .network_policies
        .get(
            &ObjectRef::new(&crate::controller::claim::network_policy_name(name)).within(namespace),
        )
        .is_some_and(|p| controller_of_kind(p.owner_references(), "SandboxClaim").is_some())
}

/// The policy of a standalone Sandbox as `mode` and `deny` say, for the
/// Pods labelled with the Sandbox's name, or `None` when it should have
/// none (see the module docs). Pure.
pub fn desired_standalone_policy(
    sandbox: &Sandbox,
    deny: &[Cidr],
    mode: StandalonePolicy,
) -> Result<Option<NetworkPolicy>> {
    let egress = restrict_egress(None, deny);
    let (policy_types, ingress) = match (mode, &egress) {
        (StandalonePolicy::None, _) | (StandalonePolicy::Egress, None) => return Ok(None),
        (StandalonePolicy::Egress, Some(_)) => (vec!["Egress"], None),
        (StandalonePolicy::Isolated, None) => (vec!["Ingress"], Some(Vec::new())),
        (StandalonePolicy::Isolated, Some(_)) => (vec!["Ingress", "Egress"], Some(Vec::new())),
    };
    let name = sandbox.name_any();
    Ok(Some(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(standalone_policy_name(&name)),
            namespace: sandbox.namespace(),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            owner_references: Some(vec![controller_ref(sandbox)?]),
            // Kept until its Pod is gone, whatever the deletion's propagation.
            finalizers: Some(vec![HOLD_FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(SANDBOX_LABEL.to_string(), name)])),
                ..Default::default()
            }),
            policy_types: Some(policy_types.into_iter().map(String::from).collect()),
            ingress,
            egress,
        }),
    }))
}

/// What [`ensure`] leaves the reconcile with.
#[derive(Debug)]
pub(super) enum Ensured {
    /// In place, or none needed: nothing to do.
    Done,
    /// Look again within [`POLICY_RECHECK`](super::POLICY_RECHECK): covered
    /// by a detached claim's policy for now, or a write failed while the
    /// Pod already runs (logged; the Sandbox's status is left alone).
    Recheck,
    /// No Pod may be started, for this reason (tried again as for `Recheck`).
    Hold(ConditionUpdate),
    /// No new Pod may be created, for this reason, but a stolen one may be
    /// adopted (it stays under its pool's policy until the claim's exists);
    /// nothing changes when the plan creates none.
    HoldCreate(ConditionUpdate),
}

/// Makes sure a standalone Sandbox's policy is as the policy file says (see
/// the module docs), given the Pods the Sandbox owns.
pub(super) async fn ensure(
    ctx: &Context,
    sandbox: &Sandbox,
    namespace: &str,
    uid: &str,
    pods: &[Arc<Pod>],
) -> Ensured {
    let claim_policy = || claim_policy_in_place(ctx, namespace, &sandbox.name_any());
    match coverage(sandbox, pods, claim_policy) {
        Coverage::Claim => return claim_policy_replacing(ctx, sandbox, namespace, pods),
        Coverage::DetachedClaim => return Ensured::Recheck,
        Coverage::Own => {}
    }
    let (reason, why) = match ensure_policy(ctx, sandbox, namespace, uid, pods).await {
        Ok(None) => return Ensured::Done,
        Ok(Some(held)) => held,
        Err(error) => {
            tracing::warn!(%error, "the Sandbox's NetworkPolicy could not be written");
            (reason::NETWORK_POLICY_FAILED, error.to_string())
        }
    };
    if pods.iter().any(|p| !is_terminating(p.as_ref())) {
        // Its Pod runs already: what was written before still stands.
        tracing::warn!(%why, "the Sandbox's NetworkPolicy is not as the policy file says");
        return Ensured::Recheck;
    }
    Ensured::Hold(ConditionUpdate::ready(
        false,
        reason,
        format!("no Pod is started until the Sandbox's NetworkPolicy exists: {why}"),
    ))
}

/// A claim's Sandbox with no running Pod whose claim's policy is held (it
/// was deleted while a Pod ran, and goes once that Pod is gone): no new
/// Pod starts under it until it is made again. `Done` otherwise, with one
/// cache lookup only when no Pod runs.
fn claim_policy_replacing(
    ctx: &Context,
    sandbox: &Sandbox,
    namespace: &str,
    pods: &[Arc<Pod>],
) -> Ensured {
    if pods.iter().any(|p| !is_terminating(p.as_ref())) {
        return Ensured::Done;
    }
    let name = crate::controller::claim::network_policy_name(&sandbox.name_any());
    let claim_uid = controller_uid(&sandbox.metadata);
    let per_claim =
        ctx.config.claim_network_policy == crate::controller::NetworkPolicyMode::PerClaim;
    let cached = ctx
        .caches
        .network_policies
        .get(&ObjectRef::new(&name).within(namespace));
    let not_made = || {
        (
            reason::NETWORK_POLICY_REPLACING,
            format!("NetworkPolicy {name} is not made yet"),
        )
    };
    let held = match &cached {
        Some(policy) => held_without_a_running_pod(policy, pods)
            .map(|why| (reason::NETWORK_POLICY_REPLACING, why))
            .or_else(|| {
                policy_name_taken(policy, claim_uid, per_claim)
                    .map(|(taken, why)| (taken.reason(), why))
            }),
        // Waited for a policy to go: no Pod before the claim's own is made
        // (the claim makes it when the old one's deletion wakes it, and its
        // creation wakes this Sandbox). (Per-claim mode only: in
        // per-template mode the claim makes no policy of its own.)
        None => (per_claim && waiting_for_the_claims_policy(sandbox)).then(not_made),
    };
    let hold = |(reason, why): (&'static str, String)| {
        ConditionUpdate::ready(
            false,
            reason,
            format!("no Pod is started until the claim's NetworkPolicy is in place: {why}"),
        )
    };
    match held {
        Some(held) => Ensured::Hold(hold(held)),
        // Not made at all (refused: a quota, a permission; or a repair, a
        // lost Pod or a pause sending the Sandbox cold before the claim made
        // it): no Pod is created before it either, since a cold Pod has no
        // pool's policy to fall back on; a stolen Pod may still be adopted
        // (it keeps its pool's until the claim's exists). Found by review:
        // only the wait above held the create, and a refused policy let a
        // cold Pod start with none.
        None if per_claim && cached.is_none() => Ensured::HoldCreate(hold(not_made())),
        // Per template: the claim's cold Pod is covered by its template's
        // policy alone, which selects the template label taken from the
        // claim (`claim_template`). No Pod is created while either is
        // unknown here.
        // The claim's own policy (deny all: it made one when the template
        // and its policy were deleted) covers the Pod instead.
        None if !per_claim
            && cached.as_ref().is_some_and(|p| {
                controller_uid(&p.metadata).is_some() && controller_uid(&p.metadata) == claim_uid
            }) =>
        {
            Ensured::Done
        }
        None if !per_claim => match template_policy_missing(ctx, sandbox, namespace) {
            Some(why) => Ensured::HoldCreate(ConditionUpdate::ready(
                false,
                reason::NETWORK_POLICY_REPLACING,
                format!("no Pod is started until its template's NetworkPolicy is in place: {why}"),
            )),
            None => Ensured::Done,
        },
        None => Ensured::Done,
    }
}

/// The template a claim's Sandbox serves: its claim's
/// `spec.sandboxTemplateRef.name` (immutable), from the claim cache, the
/// claim found by the name and uid of the Sandbox's controller reference.
/// Never the Sandbox's own template label, which its user may edit. `None`
/// for a standalone Sandbox, or while the claim is not in the cache.
pub(super) fn claim_template(ctx: &Context, sandbox: &Sandbox) -> Option<String> {
    let owner = controller_of_kind(sandbox.owner_references(), "SandboxClaim")?;
    let namespace = sandbox.namespace()?;
    let claim = ctx
        .caches
        .claims
        .get(&ObjectRef::new(&owner.name).within(&namespace))?;
    (claim.uid().as_deref() == Some(owner.uid.as_str()))
        .then(|| claim.spec.sandbox_template_ref.name.clone())
}

/// Why a claim's Sandbox may not create a Pod in per-template mode: its
/// claim is not in the cache (so its template is unknown), or the
/// template's NetworkPolicy is not, or is not the template's own.
fn template_policy_missing(ctx: &Context, sandbox: &Sandbox, namespace: &str) -> Option<String> {
    let Some(template) = claim_template(ctx, sandbox) else {
        return Some("its claim is not known yet".to_owned());
    };
    let name = crate::controller::claim::template_network_policy_name(&template);
    let policy = ctx
        .caches
        .network_policies
        .get(&ObjectRef::new(&name).within(namespace));
    // Controlled by the template itself (its uid, from the template cache),
    // not by any reference of that kind: decided from what the operator
    // wrote, never from the name alone.
    let template_uid = ctx
        .caches
        .templates
        .get(&ObjectRef::new(&template).within(namespace))
        .and_then(|t| t.uid());
    match policy {
        Some(policy)
            if template_uid.is_some()
                && controller_of_kind(policy.owner_references(), "SandboxTemplate")
                    .map(|owner| Some(&owner.uid))
                    == Some(template_uid.as_ref()) =>
        {
            None
        }
        Some(_) => Some(format!(
            "NetworkPolicy {name} is not controlled by SandboxTemplate {template}"
        )),
        None => Some(format!("NetworkPolicy {name} is not made yet")),
    }
}

/// Why no new Pod may start under `policy` (the Sandbox's own, or its
/// claim's): it was deleted and is held, and no Pod of the Sandbox runs, so
/// it goes once the last one is gone and is made again then; a Pod started
/// now could find it gone. Pure.
fn held_without_a_running_pod(policy: &NetworkPolicy, pods: &[Arc<Pod>]) -> Option<String> {
    (is_held(policy) && !pods.iter().any(|p| !is_terminating(p.as_ref()))).then(|| {
        format!(
            "NetworkPolicy {} was deleted and is held until the Sandbox's last Pod is gone; it is made again then",
            policy.name_any()
        )
    })
}

/// Whether the Sandbox's Ready condition says it waits for its claim's
/// NetworkPolicy (`NetworkPolicyReplacing`). Pure.
pub fn waiting_for_the_claims_policy(sandbox: &Sandbox) -> bool {
    sandbox.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == crate::api::READY && c.reason == reason::NETWORK_POLICY_REPLACING)
    })
}

/// [`ensure`]'s work; `Ok(Some((reason, why)))` when no new Pod may start:
/// the name is taken by another object, or the policy was deleted and is
/// held until the Sandbox's last Pod is gone.
async fn ensure_policy(
    ctx: &Context,
    sandbox: &Sandbox,
    namespace: &str,
    uid: &str,
    pods: &[Arc<Pod>],
) -> Result<Option<(&'static str, String)>> {
    let rules: NetworkRules = ctx.config.policy.current().network.clone();
    let desired =
        desired_standalone_policy(sandbox, &rules.deny_egress(), rules.standalone_policy)?;
    let name = standalone_policy_name(&sandbox.name_any());
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let ours = ctx
        .caches
        .network_policies
        .get(&ObjectRef::new(&name).within(namespace))
        .filter(|cached| controller_uid(&cached.metadata) == Some(uid));
    let Some(mut desired) = desired else {
        // None wanted: nothing to wait for before a Pod starts, so a refused
        // delete is only logged (and tried again at the next reconcile).
        if let Some(ours) = ours
            && let Err(error) = lift_and_delete(&policies, &ours).await
        {
            tracing::warn!(%error, "the Sandbox's NetworkPolicy, no longer wanted, could not be deleted");
        }
        return Ok(None);
    };
    let key = standalone_policy_key(uid);
    if let Some(why) = ours
        .as_ref()
        .and_then(|o| held_without_a_running_pod(o, pods))
    {
        return Ok(Some((reason::NETWORK_POLICY_REPLACING, why)));
    }
    if let Some(ours) = ours.filter(|o| same_policy_spec(o.spec.as_ref(), desired.spec.as_ref())) {
        ctx.written.forget(&key);
        // The policy is in place: a refused patch is logged and tried again
        // at the next reconcile, and holds nothing.
        if let Err(error) = add_pod_owners(&policies, &ours, pods, true).await {
            tracing::warn!(%error, "the Pod could not be made a co-owner of the Sandbox's NetworkPolicy");
        }
        return Ok(None);
    }
    let fingerprint = json!([rules.deny_egress_cidrs, rules.standalone_policy]);
    if ctx.written.recently_wrote(&key, &fingerprint) {
        return Ok(None);
    }
    if !ctx.network_policies_listed() {
        // Nothing could lift the hold while the policy cache cannot list
        // (its RBAC rule missing, say): without it the policy would stay
        // terminating once deleted.
        desired.metadata.finalizers = None;
    }
    // Made again while its Pod runs (deleted, say): the Pod is a co-owner
    // from the start.
    let pod_owners = missing_pod_owners(&desired, pods);
    desired.owner_references_mut().extend(pod_owners);
    match create_owned(&policies, &desired, "NetworkPolicy").await {
        Ok(Created::Existing(mut existing)) => {
            if !same_policy_spec(existing.spec.as_ref(), desired.spec.as_ref()) {
                // Ours (create_owned checked the controller) but from an
                // older network section: replace the spec, conditioned on
                // the version read (its owners, the Pod among them, stay).
                existing.spec = desired.spec;
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                existing = policies
                    .replace(&name, &params, &existing)
                    .await
                    .map_err(kube_err("update the Sandbox's NetworkPolicy"))?;
            }
            // Found rather than made (the cache had not shown it): its Pod
            // becomes a co-owner now, not at a reconcile that may not come.
            add_pod_owners(&policies, &existing, pods, ctx.network_policies_listed()).await?;
        }
        Ok(Created::New(_)) => {}
        Err(error @ Error::NameConflict { .. }) => {
            return Ok(Some((reason::NAME_CONFLICT, error.to_string())));
        }
        Err(error) => return Err(error),
    }
    ctx.written.record(&key, fingerprint);
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SandboxSpec;
    use crate::controller::test_pod::{controller, named};

    fn sandbox(name: &str, owner: Option<(&str, &str)>) -> Sandbox {
        let mut sandbox = Sandbox::new(name, SandboxSpec::default());
        sandbox.metadata.namespace = Some("ns".into());
        sandbox.metadata.uid = Some(format!("uid-{name}"));
        sandbox.metadata.owner_references =
            owner.map(|(kind, owner)| vec![controller(kind, owner, &format!("uid-{owner}"))]);
        sandbox
    }

    fn pod(labels: &[(&str, &str)]) -> Arc<Pod> {
        let mut pod = named("p", "1");
        pod.metadata.uid = Some("pod-uid".into());
        for (k, v) in labels {
            pod.labels_mut().insert((*k).into(), (*v).into());
        }
        Arc::new(pod)
    }

    fn deny() -> [Cidr; 1] {
        [Cidr::parse("169.254.0.0/16").unwrap()]
    }

    fn spec_of(mode: StandalonePolicy, deny: &[Cidr]) -> Option<NetworkPolicySpec> {
        desired_standalone_policy(&sandbox("aio", None), deny, mode)
            .unwrap()
            .map(|p| p.spec.unwrap())
    }

    #[test]
    fn no_pod_starts_under_a_held_policy_unless_one_runs() {
        let mut policy = NetworkPolicy::default();
        policy.metadata.name = Some("s-sandbox-egress".into());
        policy.metadata.finalizers = Some(vec![HOLD_FINALIZER.into()]);
        assert_eq!(
            held_without_a_running_pod(&policy, &[]),
            None,
            "not deleted"
        );
        policy.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert!(
            held_without_a_running_pod(&policy, &[])
                .is_some_and(|w| w.contains("s-sandbox-egress"))
        );
        let running = Arc::new(named("s", "1"));
        assert_eq!(held_without_a_running_pod(&policy, &[running]), None);
    }

    #[test]
    fn only_a_claims_sandbox_or_its_detached_pod_goes_without_a_policy_of_its_own() {
        let own =
            |s: &Sandbox, pods: &[Arc<Pod>], claim_policy: bool| coverage(s, pods, || claim_policy);
        assert_eq!(own(&sandbox("s", None), &[], true), Coverage::Own);
        assert_eq!(own(&sandbox("s", None), &[pod(&[])], true), Coverage::Own);
        let claims = sandbox("c", Some(("SandboxClaim", "c")));
        assert_eq!(own(&claims, &[], false), Coverage::Claim);
        // Controlled by a claim of another name: that claim's policy selects
        // its own name, not this Sandbox's Pod.
        assert_eq!(
            own(&sandbox("s", Some(("SandboxClaim", "c"))), &[], true),
            Coverage::Own
        );
        // Another controller kind is no claim.
        assert_eq!(
            own(&sandbox("s", Some(("Deployment", "s"))), &[], true),
            Coverage::Own
        );
        // A claim's Pod whose Sandbox lost its claim reference: covered by
        // the claim's policy while the cache shows it controlled by a claim.
        let claimed = pod(&[(CLAIM_LABEL, "c")]);
        let detached = sandbox("c", None);
        assert_eq!(
            own(&detached, std::slice::from_ref(&claimed), true),
            Coverage::DetachedClaim
        );
        assert_eq!(
            own(&detached, std::slice::from_ref(&claimed), false),
            Coverage::Own
        );
        // Another claim's Pod (adopted after its claim was orphaned) is not
        // covered by a policy selecting this Sandbox's name.
        assert_eq!(
            own(&sandbox("x", None), std::slice::from_ref(&claimed), true),
            Coverage::Own
        );
        // Nor is one on its way out.
        let mut leaving = (*claimed).clone();
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        assert_eq!(own(&detached, &[Arc::new(leaving)], true), Coverage::Own);
    }

    #[test]
    fn egress_mode_limits_egress_only_and_selects_the_sandbox_label() {
        let policy =
            desired_standalone_policy(&sandbox("aio", None), &deny(), StandalonePolicy::Egress)
                .unwrap()
                .unwrap();
        assert_eq!(policy.name_any(), "aio-sandbox-egress");
        let owner = &policy.owner_references()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-aio", Some(true))
        );
        let spec = policy.spec.unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Egress".to_string()]));
        assert_eq!(spec.ingress, None);
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[SANDBOX_LABEL],
            "aio"
        );
        let to = spec.egress.unwrap()[0].to.clone().unwrap();
        let v4 = to[0].ip_block.as_ref().unwrap();
        assert_eq!(
            (v4.cidr.as_str(), v4.except.clone()),
            ("0.0.0.0/0", Some(vec!["169.254.0.0/16".to_string()]))
        );
        // Nothing denied: nothing to say, and a policy would only allow.
        assert_eq!(spec_of(StandalonePolicy::Egress, &[]), None);
    }

    #[test]
    fn isolated_mode_denies_all_ingress_and_none_mode_makes_nothing() {
        let closed = spec_of(StandalonePolicy::Isolated, &deny()).unwrap();
        assert_eq!(
            closed.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()])
        );
        assert_eq!(closed.ingress, Some(vec![]));
        assert!(closed.egress.is_some());
        // With nothing denied it says nothing about egress.
        let ingress_only = spec_of(StandalonePolicy::Isolated, &[]).unwrap();
        assert_eq!(ingress_only.policy_types, Some(vec!["Ingress".to_string()]));
        assert_eq!(ingress_only.egress, None);
        assert_eq!(spec_of(StandalonePolicy::None, &deny()), None);
    }
}
