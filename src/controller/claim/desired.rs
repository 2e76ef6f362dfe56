//! The objects a claim creates, as they should be: its NetworkPolicy, its
//! Sandbox and the Sandbox's headless Service. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
    NetworkPolicySpec as K8sNetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::admission::{Cidr, restrict_egress};
use crate::api::{
    ADMITTED_AT_ANNOTATION, CLAIM_UID_LABEL, NetworkPolicySpec, POD_NAME_ANNOTATION, SANDBOX_LABEL,
    Sandbox, SandboxClaim, SandboxSpec, SandboxTemplate, TEMPLATE_LABEL,
};
use crate::controller::sandbox::headless_service;
use crate::controller::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, Result, controller_ref};

/// Which pools a claim may take Pods from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChoice {
    /// Never use a pool.
    None,
    /// Any pool of the template.
    Any,
    /// Only this pool.
    Named(String),
}

/// Reads the claim's `warmpool` field.
pub fn pool_choice(claim: &SandboxClaim) -> PoolChoice {
    match claim.spec.warm_pool.as_deref() {
        None | Some("") | Some("default") => PoolChoice::Any,
        Some("none") => PoolChoice::None,
        Some(name) => PoolChoice::Named(name.to_string()),
    }
}

fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())])
}

/// Name of a claim's NetworkPolicy.
pub fn network_policy_name(claim: &str) -> String {
    format!("{claim}-sandbox")
}

/// The NetworkPolicy of a claim: deny all ingress to its Pod unless the
/// template's `rules` allow some; egress as they say, minus the policy
/// file's denied ranges (`deny`). No rules (a template without any, or one
/// deleted before the claim got its policy): all ingress denied.
pub fn desired_network_policy(
    claim: &SandboxClaim,
    rules: Option<&NetworkPolicySpec>,
    deny: &[Cidr],
) -> Result<NetworkPolicy> {
    let name = claim.name_any();
    let policy_name = network_policy_name(&name);
    template_rules_policy(claim, policy_name, (SANDBOX_LABEL, name), rules, deny)
}

/// The NetworkPolicy of a claim whose template is gone: all ingress and
/// all egress denied (the template's rules are not known any more).
pub fn lockdown_network_policy(claim: &SandboxClaim) -> Result<NetworkPolicy> {
    let name = claim.name_any();
    Ok(sandbox_network_policy(
        network_policy_name(&name),
        claim.namespace(),
        (SANDBOX_LABEL, name),
        Vec::new(),
        Some(Vec::new()),
        controller_ref(claim)?,
    ))
}

/// The NetworkPolicy `name`, owned by `owner`, that gives the Pods labelled
/// `selector` a template's `rules`: their ingress (none: deny all) and their
/// egress minus the denied ranges (`deny`).
fn template_rules_policy<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: String,
    selector: (&str, String),
    rules: Option<&NetworkPolicySpec>,
    deny: &[Cidr],
) -> Result<NetworkPolicy> {
    let egress = NetworkPolicySpec::allowed_egress(rules);
    let rules = rules.cloned().unwrap_or_default();
    Ok(sandbox_network_policy(
        name,
        owner.namespace(),
        selector,
        rules.ingress.unwrap_or_default(),
        restrict_egress(egress, deny),
        controller_ref(owner)?,
    ))
}

/// A NetworkPolicy for the Pods labelled `selector`: the `ingress` rules
/// (none: deny all ingress) and, when `egress` is set, the `Egress` type
/// with those rules (no egress section otherwise, as before egress
/// filtering existed). Pure.
pub(crate) fn sandbox_network_policy(
    name: String,
    namespace: Option<String>,
    selector: (&str, String),
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
    owner: OwnerReference,
) -> NetworkPolicy {
    let mut policy_types = vec!["Ingress".to_string()];
    if egress.is_some() {
        policy_types.push("Egress".into());
    }
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name),
            namespace,
            labels: Some(managed_labels()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(K8sNetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(selector.0.to_string(), selector.1)])),
                ..Default::default()
            }),
            policy_types: Some(policy_types),
            ingress: Some(ingress),
            egress,
        }),
    }
}

/// The Sandbox of a claim, served by `pod` (warm) or by a new Pod (cold).
pub fn desired_sandbox(
    claim: &SandboxClaim,
    template: &SandboxTemplate,
    pod: Option<&str>,
) -> Result<Sandbox> {
    let mut annotations = BTreeMap::new();
    if let Some(pod) = pod {
        annotations.insert(POD_NAME_ANNOTATION.to_string(), pod.to_string());
    }
    // Carried over so each step of the claim's way to Ready can be timed.
    if let Some(admitted) = claim.annotations().get(ADMITTED_AT_ANNOTATION) {
        annotations.insert(ADMITTED_AT_ANNOTATION.to_string(), admitted.clone());
    }
    Ok(Sandbox {
        metadata: ObjectMeta {
            name: Some(claim.name_any()),
            namespace: claim.namespace(),
            annotations: (!annotations.is_empty()).then_some(annotations),
            labels: Some({
                let mut labels = managed_labels();
                labels.insert(
                    TEMPLATE_LABEL.to_string(),
                    claim.spec.sandbox_template_ref.name.clone(),
                );
                labels
            }),
            owner_references: Some(vec![controller_ref(claim)?]),
            ..Default::default()
        },
        spec: SandboxSpec {
            pod_template: template.spec.pod_template.clone(),
            // Warm Pods were started without per-claim volumes.
            volume_claim_templates: if pod.is_some() {
                None
            } else {
                template.spec.volume_claim_templates.clone()
            },
            ..Default::default()
        },
        status: None,
    })
}

/// The headless Service of a claim's Sandbox, created by the claim alongside
/// the Sandbox (so it exists before the claim says Ready) and owned by the
/// claim. It selects the Sandbox and claim-uid labels that the steal (warm)
/// or the Sandbox controller (cold) puts on the Pod.
pub fn desired_service(claim: &SandboxClaim, template: &SandboxTemplate) -> Result<Service> {
    let owner = controller_ref(claim)?;
    let uid = owner.uid.clone();
    headless_service(
        &claim.name_any(),
        claim.namespace(),
        &template.spec.pod_template.spec,
        owner,
        (CLAIM_UID_LABEL, uid),
    )
}

/// Name of a template's NetworkPolicy.
pub fn template_network_policy_name(template: &str) -> String {
    format!("sandbox-template-{template}")
}

/// The NetworkPolicy of a template: the template's ingress rules (none:
/// deny all ingress) and egress rules minus the policy file's denied ranges,
/// for every Pod labelled with the template, i.e. its idle pool Pods, the
/// Pods claims stole from them and the cold Pods of its claims. Owned by the
/// template.
pub fn desired_template_network_policy(
    template: &SandboxTemplate,
    deny: &[Cidr],
) -> Result<NetworkPolicy> {
    let name = template.name_any();
    let policy_name = template_network_policy_name(&name);
    template_rules_policy(
        template,
        policy_name,
        (TEMPLATE_LABEL, name),
        template.spec.network_policy.as_ref(),
        deny,
    )
}

/// Whether two NetworkPolicy specs mean the same (the API server drops an
/// empty rule list, which still means "deny all"). Pure; used by the claim
/// and the pool controllers before replacing a policy they own.
pub fn same_policy_spec(
    a: Option<&K8sNetworkPolicySpec>,
    b: Option<&K8sNetworkPolicySpec>,
) -> bool {
    let normal = |s: Option<&K8sNetworkPolicySpec>| {
        s.cloned().map(|mut s| {
            if s.ingress.as_ref().is_some_and(Vec::is_empty) {
                s.ingress = None;
            }
            if s.egress.as_ref().is_some_and(Vec::is_empty) {
                s.egress = None;
            }
            s
        })
    };
    normal(a) == normal(b)
}

#[cfg(test)]
mod network_policy_tests {
    use super::*;
    use crate::api::{SandboxClaimSpec, SandboxTemplateRef, SandboxTemplateSpec};

    fn deny() -> Vec<Cidr> {
        ["169.254.0.0/16", "fd00:ec2::254/128"]
            .iter()
            .map(|c| Cidr::parse(c).unwrap())
            .collect()
    }

    fn except_lists(policy: &NetworkPolicy) -> Vec<(String, Option<Vec<String>>)> {
        let spec = policy.spec.as_ref().unwrap();
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()])
        );
        spec.egress.as_ref().unwrap()[0]
            .to
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| {
                let block = p.ip_block.as_ref().unwrap();
                (block.cidr.clone(), block.except.clone())
            })
            .collect()
    }

    /// Template `t` and claim `c1` of it, in namespace `ns`.
    fn template_and_claim() -> (SandboxTemplate, SandboxClaim) {
        let mut template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
        template.metadata.namespace = Some("ns".into());
        template.metadata.uid = Some("template-uid".into());
        let mut claim = SandboxClaim::new(
            "c1",
            SandboxClaimSpec {
                sandbox_template_ref: SandboxTemplateRef { name: "t".into() },
                ..Default::default()
            },
        );
        claim.metadata.namespace = Some("ns".into());
        claim.metadata.uid = Some("claim-uid".into());
        (template, claim)
    }

    #[test]
    fn claim_and_template_policies_except_the_denied_ranges_per_family() {
        let (template, claim) = template_and_claim();
        let expected = vec![
            (
                "0.0.0.0/0".to_string(),
                Some(vec!["169.254.0.0/16".to_string()]),
            ),
            (
                "::/0".to_string(),
                Some(vec!["fd00:ec2::254/128".to_string()]),
            ),
        ];
        let claim_policy =
            desired_network_policy(&claim, template.spec.network_policy.as_ref(), &deny()).unwrap();
        assert_eq!(except_lists(&claim_policy), expected);
        assert_eq!(claim_policy.spec.as_ref().unwrap().ingress, Some(vec![]));
        let template_policy = desired_template_network_policy(&template, &deny()).unwrap();
        assert_eq!(except_lists(&template_policy), expected);
        // No deny list: exactly as before egress filtering (no Egress type).
        let open =
            desired_network_policy(&claim, template.spec.network_policy.as_ref(), &[]).unwrap();
        let spec = open.spec.unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        assert_eq!(spec.egress, None);
    }

    /// A template whose `networkPolicy` leaves egress out allows none (as
    /// upstream agent-sandbox does); one without `networkPolicy` keeps
    /// egress everywhere but the denied ranges.
    #[test]
    fn a_network_policy_without_egress_denies_all_egress() {
        let (_, claim) = template_and_claim();
        let ingress_only = NetworkPolicySpec {
            ingress: Some(vec![NetworkPolicyIngressRule::default()]),
            egress: None,
        };
        for deny in [deny(), Vec::new()] {
            let spec = desired_network_policy(&claim, Some(&ingress_only), &deny)
                .unwrap()
                .spec
                .unwrap();
            assert_eq!(
                spec.policy_types,
                Some(vec!["Ingress".to_string(), "Egress".to_string()]),
                "deny list {deny:?}"
            );
            assert_eq!(spec.egress, Some(vec![]), "deny list {deny:?}");
            assert_eq!(spec.ingress.map(|i| i.len()), Some(1));
        }
        let open = desired_network_policy(&claim, None, &deny())
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(
            open.egress.map(|e| e.len()),
            Some(1),
            "everywhere but the deny list"
        );
    }
}
