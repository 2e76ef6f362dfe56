//! Whether a claim's NetworkPolicy name is free for the claim: an earlier
//! claim's policy of the same name, still held while its Pod stops, or a
//! lasting one (someone else's, or one an orphaning deletion left), selects
//! the claim's Pods too (the same labels) under rules that are not the
//! claim's, so nothing of the claim is taken or started while it is there
//! (see `claim::serve` and the Sandbox's `network`).

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;

use super::policy_hold::is_pod_ref;
use super::{controller_uid, is_terminating};

/// How the NetworkPolicy name of a claim is taken by another object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameTaken {
    /// By an earlier claim's policy of the same name on its way out
    /// (terminating, or kept by a Pod owner while that Pod stops): its
    /// deletion wakes the claim (`NetworkPolicyReplacing`).
    Going,
    /// By a policy that is not going away (a foreign one, or one an
    /// orphaned claim left): `NameConflict` until someone deletes it.
    Lasting,
}

impl NameTaken {
    /// The reason a claim or its Sandbox says while the name is taken.
    pub fn reason(self) -> &'static str {
        match self {
            NameTaken::Going => crate::api::reason::NETWORK_POLICY_REPLACING,
            NameTaken::Lasting => crate::api::reason::NAME_CONFLICT,
        }
    }
}

/// Whether, and how, `policy` (the one under a claim's policy name) keeps
/// that name from the claim `claim_uid`, with a message naming it. It
/// selects the claim's Pods too (the same labels) under another claim's
/// rules, or someone else's, so nothing of the claim may be taken or
/// started while it is there. In `per_claim` mode any policy another
/// controls (or none does) takes the name; in per-template mode, where the
/// claim makes no policy of its own, only one on its way out keeps its Pods
/// waiting (a lasting one adds its rules, as any policy may). Pure.
pub fn policy_name_taken(
    policy: &NetworkPolicy,
    claim_uid: Option<&str>,
    per_claim: bool,
) -> Option<(NameTaken, String)> {
    if controller_uid(&policy.metadata) == claim_uid {
        return None;
    }
    let name = policy.name_any();
    // Controlled by an earlier claim (the name is the claim's): the garbage
    // collector deletes it once it sees that claim gone.
    let earlier_claims = policy
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "SandboxClaim");
    if is_terminating(policy) || earlier_claims || policy.owner_references().iter().any(is_pod_ref)
    {
        return Some((
            NameTaken::Going,
            format!(
                "NetworkPolicy {name} is an earlier claim's of the same name, kept while its Pod stops; this claim's is made once it is gone"
            ),
        ));
    }
    per_claim.then(|| {
        (
            NameTaken::Lasting,
            format!(
                "NetworkPolicy {name} exists and is not this claim's (another controls it, or none does, as after an orphaning deletion); the claim's policy is made under that name, so nothing is taken or started until it is deleted"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_pod::{controller, pod_owner};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    /// A policy named `s-sandbox-egress`, owned by `owners`.
    fn policy(owners: Vec<OwnerReference>) -> NetworkPolicy {
        let mut p: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s-sandbox-egress", "namespace": "ns", "resourceVersion": "7"}
        }))
        .unwrap();
        p.metadata.owner_references = Some(owners);
        p
    }

    #[test]
    fn a_claims_policy_name_is_taken_by_any_other_policy_in_per_claim_mode() {
        let mine = policy(vec![controller("SandboxClaim", "c", "claim-2")]);
        assert_eq!(policy_name_taken(&mine, Some("claim-2"), true), None);
        // An earlier claim's, deleted and held: going, in either mode.
        let mut earlier = policy(vec![controller("SandboxClaim", "c", "claim-1")]);
        earlier.metadata.deletion_timestamp = Some(Time(Default::default()));
        for per_claim in [true, false] {
            assert_eq!(
                policy_name_taken(&earlier, Some("claim-2"), per_claim).map(|t| t.0),
                Some(NameTaken::Going)
            );
        }
        // Still controlled by an earlier claim of the name (the garbage
        // collector has not marked it yet): going, not a lasting conflict.
        let not_yet = policy(vec![controller("SandboxClaim", "c", "claim-1")]);
        assert_eq!(
            policy_name_taken(&not_yet, Some("claim-2"), true).map(|t| t.0),
            Some(NameTaken::Going)
        );
        // Kept by its cold Pod (the claim gone): going.
        let kept = policy(vec![pod_owner("u1")]);
        assert_eq!(
            policy_name_taken(&kept, Some("claim-2"), true).map(|t| t.0),
            Some(NameTaken::Going)
        );
        // Left by an orphaning deletion, or someone else's: lasting, and
        // only in per-claim mode (the claim makes no policy of its own in
        // per-template mode).
        let left = policy(Vec::new());
        let (taken, why) = policy_name_taken(&left, Some("claim-2"), true).unwrap();
        assert_eq!(taken, NameTaken::Lasting);
        assert!(
            why.contains("s-sandbox-egress") && why.contains("not this claim's"),
            "{why}"
        );
        assert_eq!(policy_name_taken(&left, Some("claim-2"), false), None);
    }
}
