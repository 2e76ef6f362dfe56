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
//! controlled by the Sandbox (garbage-collected with it), selecting the
//! `agents.x-k8s.io/sandbox=<sandbox>` label its Pod carries:
//! - egress everywhere except the denied ranges (with an empty list,
//!   everywhere);
//! - ingress as the policy file's `network.standaloneIngress` says: `open`
//!   (the default) leaves it as the cluster has it (no `Ingress` type): a
//!   standalone Sandbox has no template saying what may reach it, and its
//!   user reaches it through its Service (the AIO example's browser and
//!   editor); `deny` denies all of it;
//! - made before the Sandbox's Pod is created or adopted: until it exists
//!   no Pod is started (an error is retried with the controller's backoff;
//!   a policy of that name controlled by anything else is never used, and
//!   the Sandbox says `Ready=False`, reason `NameConflict`);
//! - checked in the NetworkPolicy cache (no request) on later reconciles,
//!   replaced when the deny list changes (a policy-file reload reaches it
//!   at the next reconcile or resync), made again at once when deleted
//!   (the cache's deletion event wakes the Sandbox).
//!
//! Which Sandbox counts as a claim's is decided from ownership the operator
//! wrote: a controller reference to a SandboxClaim of the Sandbox's own name
//! (the claim's policy selects that name). Any other Sandbox gets its own.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::admission::{Cidr, NetworkRules, StandaloneIngress, restrict_egress};
use crate::api::{FIELD_MANAGER, SANDBOX_LABEL, Sandbox};
use crate::controller::claim::same_policy_spec;
use crate::controller::ownership::{Created, controller_of_kind};
use crate::controller::{
    Context, Error, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Result, controller_ref, controller_uid,
    create_owned, kube_err,
};

/// Name of a standalone Sandbox's NetworkPolicy.
pub fn standalone_policy_name(sandbox: &str) -> String {
    format!("{sandbox}-sandbox-egress")
}

/// The memo key of a standalone Sandbox's policy write (see [`ensure`]).
pub(crate) fn standalone_policy_key(sandbox_uid: &str) -> String {
    format!("sandbox-policy/{sandbox_uid}")
}

/// Whether the Sandbox needs a policy of its own: it is not the Sandbox of
/// the claim that controls it (a claim's Sandbox has the claim's name).
/// Pure.
pub fn needs_own_policy(sandbox: &Sandbox) -> bool {
    controller_of_kind(sandbox.owner_references(), "SandboxClaim")
        .is_none_or(|claim| claim.name != sandbox.name_any())
}

/// The policy of a standalone Sandbox, for the Pods labelled with the
/// Sandbox's name: egress everywhere but `deny`; all ingress denied when
/// `ingress` says so, else untouched. Pure.
pub fn desired_standalone_policy(
    sandbox: &Sandbox,
    deny: &[Cidr],
    ingress: StandaloneIngress,
) -> Result<NetworkPolicy> {
    let name = sandbox.name_any();
    let (mut policy_types, ingress) = match ingress {
        StandaloneIngress::Open => (Vec::new(), None),
        StandaloneIngress::Deny => (vec!["Ingress".to_string()], Some(Vec::new())),
    };
    policy_types.push("Egress".to_string());
    // No rules: egress everywhere but the denied ranges; with none denied,
    // one empty rule, which allows all egress.
    let egress =
        restrict_egress(None, deny).unwrap_or_else(|| vec![NetworkPolicyEgressRule::default()]);
    Ok(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(standalone_policy_name(&name)),
            namespace: sandbox.namespace(),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            owner_references: Some(vec![controller_ref(sandbox)?]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(SANDBOX_LABEL.to_string(), name)])),
                ..Default::default()
            }),
            policy_types: Some(policy_types),
            ingress,
            egress: Some(egress),
        }),
    })
}

/// Makes sure a standalone Sandbox's policy is in place (see the module
/// docs). `Ok(Some(why))` when a policy of that name is not this Sandbox's:
/// no Pod may be started then. `Ok(None)` for a claim's Sandbox.
pub(super) async fn ensure(
    ctx: &Context,
    sandbox: &Sandbox,
    namespace: &str,
    uid: &str,
) -> Result<Option<String>> {
    if !needs_own_policy(sandbox) {
        return Ok(None);
    }
    let rules: NetworkRules = ctx.config.policy.current().network.clone();
    let deny = rules.deny_egress();
    let desired = desired_standalone_policy(sandbox, &deny, rules.standalone_ingress)?;
    let name = standalone_policy_name(&sandbox.name_any());
    let key = standalone_policy_key(uid);
    let cached = ctx
        .caches
        .network_policies
        .get(&ObjectRef::new(&name).within(namespace));
    if let Some(cached) = cached
        && controller_uid(&cached.metadata) == Some(uid)
        && same_policy_spec(cached.spec.as_ref(), desired.spec.as_ref())
    {
        ctx.written.forget(&key);
        return Ok(None);
    }
    let fingerprint = json!([rules.deny_egress_cidrs, rules.standalone_ingress]);
    if ctx.written.recently_wrote(&key, &fingerprint) {
        return Ok(None);
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    match create_owned(&policies, &desired, "NetworkPolicy").await {
        Ok(Created::Existing(mut existing))
            if !same_policy_spec(existing.spec.as_ref(), desired.spec.as_ref()) =>
        {
            // Ours (create_owned checked the controller) but from an older
            // deny list: replace the spec, conditioned on the version read.
            existing.spec = desired.spec;
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            policies
                .replace(&name, &params, &existing)
                .await
                .map_err(kube_err("update the Sandbox's NetworkPolicy"))?;
        }
        Ok(_) => {}
        Err(error @ Error::NameConflict { .. }) => return Ok(Some(error.to_string())),
        Err(error) => return Err(error),
    }
    ctx.written.record(&key, fingerprint);
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SandboxSpec;
    use crate::controller::test_pod::controller;

    fn sandbox(name: &str, owner: Option<(&str, &str)>) -> Sandbox {
        let mut sandbox = Sandbox::new(name, SandboxSpec::default());
        sandbox.metadata.namespace = Some("ns".into());
        sandbox.metadata.uid = Some(format!("uid-{name}"));
        sandbox.metadata.owner_references =
            owner.map(|(kind, owner)| vec![controller(kind, owner, &format!("uid-{owner}"))]);
        sandbox
    }

    #[test]
    fn only_a_claims_own_sandbox_goes_without_a_policy_of_its_own() {
        assert!(needs_own_policy(&sandbox("s", None)));
        assert!(!needs_own_policy(&sandbox(
            "c",
            Some(("SandboxClaim", "c"))
        )));
        // Controlled by a claim of another name: that claim's policy selects
        // its own name, not this Sandbox's Pod.
        assert!(needs_own_policy(&sandbox("s", Some(("SandboxClaim", "c")))));
        // Another controller kind (or a look-alike outside our group) is no claim.
        assert!(needs_own_policy(&sandbox("s", Some(("Deployment", "s")))));
    }

    #[test]
    fn the_policy_limits_egress_only_and_selects_the_sandbox_label() {
        let deny = [Cidr::parse("169.254.0.0/16").unwrap()];
        let policy =
            desired_standalone_policy(&sandbox("aio", None), &deny, StandaloneIngress::Open)
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
        // Nothing denied: one rule allowing all egress, never a deny-all.
        let open =
            desired_standalone_policy(&sandbox("aio", None), &[], StandaloneIngress::Open).unwrap();
        assert_eq!(
            open.spec.unwrap().egress,
            Some(vec![NetworkPolicyEgressRule::default()])
        );
    }

    #[test]
    fn the_policy_file_may_deny_a_standalone_sandbox_all_ingress() {
        let deny = [Cidr::parse("169.254.0.0/16").unwrap()];
        let closed =
            desired_standalone_policy(&sandbox("aio", None), &deny, StandaloneIngress::Deny)
                .unwrap()
                .spec
                .unwrap();
        assert_eq!(
            closed.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()])
        );
        assert_eq!(closed.ingress, Some(vec![]));
        assert!(closed.egress.is_some());
    }
}
