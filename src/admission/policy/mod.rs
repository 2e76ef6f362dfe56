//! The admission policy: defaults, ceilings, allow-lists and profile, as
//! configuration rather than code.
//!
//! A policy is a YAML document (see `default-policy.yaml` next to this file,
//! which is also the built-in default). [`Policy::from_yaml`] parses and then
//! checks it; both steps report the offending field, for example
//! `ceilings.memory: "64Qi" is not a Kubernetes quantity`.
//!
//! At run time the webhook reads the policy through a [`PolicyStore`]. A
//! reload swaps the whole policy atomically, so a review sees either the old
//! or the new policy, never a mix; a reload that fails keeps the last good
//! policy in place.

mod amounts;
mod names;
mod network;
mod store;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use amounts::{
    Ceilings, ComputeResource, DefaultLimits, DefaultRequests, ResourceDefaults, TolerationRule,
};
pub use network::{
    Cidr, DEFAULT_DENY_EGRESS, NetworkRules, StandalonePolicy, everywhere_except, restrict_egress,
};
pub use store::PolicyStore;

#[cfg(test)]
use super::quantity::Quantity;

/// The policy text compiled into the binary; parses to [`Policy::default`].
pub const DEFAULT_POLICY_YAML: &str = include_str!("../default-policy.yaml");

/// What admission defaults and enforces.
///
/// Every field has a default, so a policy file lists only what it changes;
/// unknown fields are an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Policy {
    /// Pod Security level enforced on top of the other rules.
    pub profile: Profile,
    /// Resources given to containers that set none.
    pub defaults: ResourceDefaults,
    /// The largest request or limit of one container.
    pub ceilings: Ceilings,
    /// Capabilities containers may add, without the `CAP_` prefix.
    pub allowed_capabilities: Vec<String>,
    /// `runtimeClassName` given to pod templates that set none.
    pub default_runtime_class_name: Option<String>,
    /// Runtime classes pod templates may use; `None` allows any.
    pub allowed_runtime_classes: Option<Vec<String>>,
    /// The largest `spec.replicas` of a SandboxWarmPool.
    pub max_pool_replicas: i32,
    /// `automountServiceAccountToken` for pod templates that do not set it;
    /// `true` leaves the field unset.
    pub automount_service_account_token: bool,
    /// Stamp `agents.x-k8s.io/admitted-at` on new SandboxClaims (any value
    /// the user wrote is replaced; with `false` it is removed).
    pub stamp_claims: bool,
    /// Service accounts pod templates may name (`serviceAccountName`).
    pub allowed_service_accounts: Vec<String>,
    /// Tolerations pod templates may carry; empty refuses every toleration.
    pub allowed_tolerations: Vec<TolerationRule>,
    /// Extended resources (any name but cpu, memory, ephemeral-storage, such
    /// as `nvidia.com/gpu`) containers may request.
    pub allowed_extended_resources: Vec<String>,
    /// Volume sources pod templates may use (`emptyDir`, `secret`, ...), at
    /// any profile; by default the Pod Security restricted set, so network
    /// and node-local volumes (nfs, iscsi, ...) are refused even at
    /// baseline.
    pub allowed_volume_types: Vec<String>,
    /// Priority classes pod templates may name in `priorityClassName`;
    /// empty refuses every class (a class decides which Pods the scheduler
    /// preempts to make room). `priority` itself is always refused.
    pub allowed_priority_classes: Vec<String>,
    /// Whether pod templates may use dynamic resource allocation
    /// (`spec.resourceClaims`, `containers[].resources.claims`); devices
    /// allocated that way bypass `allowedExtendedResources`, so the default
    /// is `false`.
    pub allow_resource_claims: bool,
    /// Sandbox networking: address ranges no sandbox may reach.
    pub network: NetworkRules,
    /// Not configuration but a fact about the cluster, carried with the
    /// policy so that the webhook and the controllers judge by one snapshot:
    /// whether `hostUsers: false` may relax Pod Security (unknown until the
    /// operator found out; see [`PolicyStore::set_user_namespaces`]).
    #[serde(skip)]
    pub user_namespaces: super::user_namespaces::UserNamespaces,
}

/// How strict the Pod Security rules are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Every check of the Pod Security Standards baseline level (see
    /// [`crate::admission::pss::CHECKS`]): no privileged containers, host
    /// namespaces, hostPath, hostPort, probe hosts, extra capabilities,
    /// unsafe sysctls, Unmasked procMount, custom SELinux or unconfined
    /// AppArmor and seccomp.
    #[default]
    Baseline,
    /// Every check of the Pod Security Standards restricted level: baseline
    /// plus non-root users, every capability dropped, no privilege
    /// escalation, a seccomp profile and only the safe volume types; the
    /// mutating webhook sets `runAsNonRoot: true` and `capabilities.drop:
    /// [ALL]` where they are missing. No service account token is mounted.
    Restricted,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            profile: Profile::Baseline,
            defaults: ResourceDefaults::default(),
            ceilings: Ceilings::default(),
            allowed_capabilities: super::pss::BASELINE_CAPABILITIES.map(String::from).to_vec(),
            default_runtime_class_name: None,
            allowed_runtime_classes: None,
            max_pool_replicas: 1000,
            automount_service_account_token: false,
            stamp_claims: true,
            allowed_service_accounts: vec!["default".to_owned()],
            allowed_tolerations: Vec::new(),
            allowed_extended_resources: Vec::new(),
            allowed_volume_types: super::pss::ALLOWED_VOLUME_TYPES.map(String::from).to_vec(),
            allowed_priority_classes: Vec::new(),
            allow_resource_claims: false,
            network: NetworkRules::default(),
            user_namespaces: Default::default(),
        }
    }
}

/// Why a policy was not loaded.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read policy file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key or a value of the wrong
    /// type; the message starts with the field path.
    #[error(transparent)]
    Syntax(#[from] serde_yaml::Error),
    /// A reload read the policy file as zero bytes: a file caught while it
    /// is rewritten (`>` truncates it first) reads so, and taking it for
    /// the built-in policy would swap in a looser policy unannounced. (At
    /// start an empty file is the built-in policy.)
    #[error(
        "policy file {} is empty (0 bytes): a reload takes an empty file for one caught while it is \
         rewritten and keeps the previous policy; write {{}} to reload the built-in policy",
        path.display()
    )]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// The policy parsed but breaks a rule, e.g. a default above a ceiling.
    #[error("{field}: {rule}")]
    Invalid {
        /// The offending field, e.g. `defaults.limits.cpu`.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
}

impl PolicyError {
    /// A short, stable name for logs and metric labels.
    pub fn label(&self) -> &'static str {
        self.into()
    }

    fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        PolicyError::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// Capability names compare without `CAP_` and case-insensitively, as the
/// container runtimes treat them.
pub(crate) fn normalize_capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    match upper.strip_prefix("CAP_") {
        Some(bare) => bare.to_owned(),
        None => upper,
    }
}

impl Policy {
    /// Parses and checks a policy. An empty document is the default policy.
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyError> {
        let policy = serde_yaml::from_str::<Option<Policy>>(text)?.unwrap_or_default();
        policy.check()?;
        Ok(policy)
    }

    /// Reads, parses and checks a policy file. An empty file is the
    /// default policy (see [`PolicyStore::reload_from_file`] for a reload).
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        Policy::from_yaml(&read_policy_file(path)?)
    }

    /// Checks the rules a policy must satisfy to be usable: defaults within
    /// ceilings, default requests within default limits, no negative
    /// amounts and no fraction of a byte (memory, ephemeral-storage), a
    /// non-empty runtime class allow-list that contains the default class,
    /// runtime class, service account and priority class names that are
    /// DNS-1123 subdomains, Linux capability names, known volume types,
    /// extended resource names the API server takes (`example.com/gpu`,
    /// `hugepages-2Mi`; not cpu, memory, ephemeral-storage), toleration
    /// rules with the API's operators and effects, canonical deny-list
    /// CIDRs, a non-negative pool cap. The first rule broken is the error,
    /// naming the field (with its index in a list) and the rule.
    pub fn check(&self) -> Result<(), PolicyError> {
        self.check_amounts()?;
        self.check_names()?;
        self.network
            .check()
            .map_err(|(field, rule)| PolicyError::invalid(field, rule))?;
        if self.max_pool_replicas < 0 {
            return Err(PolicyError::invalid(
                "maxPoolReplicas",
                format!("{} must not be negative", self.max_pool_replicas),
            ));
        }
        Ok(())
    }

    /// The amounts: none negative, memory in whole bytes, requests within
    /// limits, defaults within the ceilings.
    fn check_amounts(&self) -> Result<(), PolicyError> {
        for resource in ComputeResource::ALL {
            let name = resource.as_str();
            let request = self.defaults.requests.get(resource);
            let limit = self.defaults.limits.get(resource);
            let ceiling = self.ceilings.get(resource);
            for (field, amount) in [
                ("defaults.requests", request),
                ("defaults.limits", limit),
                ("ceilings", ceiling),
            ] {
                if let Some(amount) = amount
                    && amount.is_negative()
                {
                    return Err(PolicyError::invalid(
                        format!("{field}.{name}"),
                        format!("{amount} must not be negative"),
                    ));
                }
                if resource == ComputeResource::Memory
                    && let Some(rule) = amount.and_then(|a| amounts::fraction_of_byte_rule(a, name))
                {
                    return Err(PolicyError::invalid(format!("{field}.{name}"), rule));
                }
            }
            if let (Some(request), Some(limit)) = (request, limit)
                && request > limit
            {
                return Err(PolicyError::invalid(
                    format!("defaults.requests.{name}"),
                    format!("{request} exceeds defaults.limits.{name} {limit}"),
                ));
            }
            if let Some(ceiling) = ceiling {
                for (field, amount) in [("defaults.limits", limit), ("defaults.requests", request)]
                {
                    if let Some(amount) = amount
                        && amount > ceiling
                    {
                        return Err(PolicyError::invalid(
                            format!("{field}.{name}"),
                            format!("{amount} exceeds ceilings.{name} {ceiling}"),
                        ));
                    }
                }
            }
        }
        if let Some(amount) = &self.ceilings.ephemeral_storage {
            if amount.is_negative() {
                return Err(PolicyError::invalid(
                    "ceilings.ephemeral-storage",
                    format!("{amount} must not be negative"),
                ));
            }
            if let Some(rule) = amounts::fraction_of_byte_rule(amount, "ephemeral-storage") {
                return Err(PolicyError::invalid("ceilings.ephemeral-storage", rule));
            }
        }
        Ok(())
    }

    /// The names and list entries, each as the API server would check it
    /// in a Pod (see `names`).
    fn check_names(&self) -> Result<(), PolicyError> {
        for (index, capability) in self.allowed_capabilities.iter().enumerate() {
            let field = format!("allowedCapabilities[{index}]");
            if normalize_capability(capability).is_empty() {
                return Err(PolicyError::invalid(field, "must not be empty"));
            }
            if let Some(rule) = names::capability_rule(capability) {
                return Err(PolicyError::invalid(field, rule));
            }
        }
        if let Some(allowed) = &self.allowed_runtime_classes {
            if allowed.is_empty() {
                return Err(PolicyError::invalid(
                    "allowedRuntimeClasses",
                    "must not be empty; use null to allow any runtime class",
                ));
            }
            check_names("allowedRuntimeClasses", allowed, |name| {
                names::object_name_rule(name, "RuntimeClass")
            })?;
        }
        if let Some(default) = &self.default_runtime_class_name {
            if default.is_empty() {
                return Err(PolicyError::invalid(
                    "defaultRuntimeClassName",
                    "must not be empty; use null for no default",
                ));
            }
            if let Some(rule) = names::object_name_rule(default, "RuntimeClass") {
                return Err(PolicyError::invalid("defaultRuntimeClassName", rule));
            }
            if let Some(allowed) = &self.allowed_runtime_classes
                && !allowed.contains(default)
            {
                return Err(PolicyError::invalid(
                    "defaultRuntimeClassName",
                    format!("{default:?} is not in allowedRuntimeClasses"),
                ));
            }
        }
        type NameRule = fn(&str) -> Option<String>;
        let lists: [(&str, &[String], NameRule); 4] = [
            (
                "allowedServiceAccounts",
                &self.allowed_service_accounts,
                |name| names::object_name_rule(name, "ServiceAccount"),
            ),
            (
                "allowedExtendedResources",
                &self.allowed_extended_resources,
                names::extended_resource_rule,
            ),
            (
                "allowedVolumeTypes",
                &self.allowed_volume_types,
                names::volume_type_rule,
            ),
            (
                "allowedPriorityClasses",
                &self.allowed_priority_classes,
                |name| names::object_name_rule(name, "PriorityClass"),
            ),
        ];
        for (field, list, rule) in lists {
            check_names(field, list, rule)?;
        }
        for (index, toleration) in self.allowed_tolerations.iter().enumerate() {
            if let Some((key, rule)) = toleration.problem() {
                return Err(PolicyError::invalid(
                    format!("allowedTolerations[{index}].{key}"),
                    rule,
                ));
            }
        }
        Ok(())
    }

    /// Whether `name` is in the capability allow-list.
    pub fn allows_capability(&self, name: &str) -> bool {
        let name = normalize_capability(name);
        self.allowed_capabilities
            .iter()
            .any(|allowed| normalize_capability(allowed) == name)
    }
}

/// The text of a policy file.
fn read_policy_file(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Checks each entry of the list `field`: not blank, then `rule`; the error
/// names the entry by its index, e.g. `allowedVolumeTypes[1]`.
fn check_names(
    field: &str,
    list: &[String],
    rule: impl Fn(&str) -> Option<String>,
) -> Result<(), PolicyError> {
    for (index, name) in list.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(PolicyError::invalid(
                format!("{field}[{index}]"),
                "must not be empty",
            ));
        }
        if let Some(rule) = rule(name) {
            return Err(PolicyError::invalid(format!("{field}[{index}]"), rule));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
