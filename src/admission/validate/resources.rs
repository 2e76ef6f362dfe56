//! Resources, of each container and of the pod as a whole (pod-level
//! `spec.resources`): amounts parse and are not negative; cpu, memory and
//! ephemeral-storage stay under the policy's ceilings; extended resources
//! (anything else, such as `nvidia.com/gpu` or `hugepages-2Mi`) only from
//! the allow-list; no request above its limit; a container's missing cpu or
//! memory limit is warned about. Dynamic resource allocation
//! (`spec.resourceClaims`, `resources.claims` of a container or of the pod)
//! only when the policy allows resource claims.
//!
//! The ceilings bound pod-level amounts as they stand: no pod-level request
//! or limit may exceed what the policy allows one container. A ceiling is
//! the most a single container may be given, and a container without a
//! limit of its own may use the whole pod-level limit, so a larger pod-level
//! amount would hand one container more than the ceiling (and a pod-level
//! request of 200 cpu reserves a node as surely as a container's would).
//! Containers that need more together than one ceiling keep their own
//! per-container amounts, each under the ceiling.

use serde_json::{Map, Value};

use super::super::field::{FieldPath, List, optional, optional_object};
use super::super::policy::ComputeResource;
use super::super::quantity::Quantity;
use super::Validator;

/// The resources every node has; any other name is an extended resource.
const STANDARD_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// The rule a resource claim breaks while the policy does not allow them.
const RESOURCE_CLAIMS_RULE: &str = "is not allowed while allowResourceClaims is false: \
     devices allocated through dynamic resource allocation bypass allowedExtendedResources";

impl Validator<'_> {
    /// A container's `resources`: the checks of [`Self::resource_amounts`],
    /// no resource claims unless allowed, and a warning per missing cpu or
    /// memory limit.
    pub(super) fn resources(&mut self, container: &Map<String, Value>, container_path: &FieldPath) {
        let (resources_path, resources) = self.object_field(container, "resources", container_path);
        if let Some(resources) = resources {
            self.container_resource_claims(resources, &resources_path);
        }
        let limits = self.resource_amounts(resources, &resources_path);
        for resource in ComputeResource::ALL {
            let name = resource.as_str();
            if !limits.iter().any(|(key, _)| key == name)
                && !self.pod_limits.iter().any(|key| key == name)
            {
                self.warn(
                    &resources_path.key("limits").key(name),
                    format_args!("is not set, so the container's {name} is unbounded"),
                );
            }
        }
    }

    /// The pod-level `resources` of a pod spec (a budget its containers
    /// share): the same checks as a container's, against the same ceilings
    /// (see the module documentation), and no `claims` unless resource
    /// claims are allowed. Nothing is warned about when it is absent: the
    /// containers' own limits bound them; a resource it limits is not
    /// warned about in a container without its own limit.
    pub(super) fn pod_resources(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        let (resources_path, resources) = self.object_field(spec, "resources", path);
        if let Some(resources) = resources {
            self.no_resource_claims(resources, "claims", &resources_path);
        }
        let limits = self.resource_amounts(resources, &resources_path);
        self.pod_limits = limits.into_iter().map(|(name, _)| name).collect();
    }

    /// The checks every `resources` gets, a container's or the pod's:
    /// amounts parse and are not negative, cpu, memory and
    /// ephemeral-storage stay under their ceilings, extended resources come
    /// from `allowedExtendedResources`, and no request exceeds its limit.
    /// Returns the parsed limits.
    fn resource_amounts(
        &mut self,
        resources: Option<&Map<String, Value>>,
        resources_path: &FieldPath,
    ) -> Vec<(String, Quantity)> {
        let requests = self.quantities(resources, "requests", resources_path);
        let limits = self.quantities(resources, "limits", resources_path);
        let find = |amounts: &[(String, Quantity)], name: &str| {
            amounts
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, quantity)| quantity.clone())
        };

        for name in STANDARD_RESOURCES {
            let Some(ceiling) = self.policy.ceilings.get_named(name) else {
                continue;
            };
            for (section, amounts) in [("limits", &limits), ("requests", &requests)] {
                if let Some(amount) = find(amounts, name)
                    && amount > *ceiling
                {
                    self.deny(
                        &resources_path.key(section).key(name),
                        format!("{amount} exceeds the maximum {ceiling}"),
                    );
                }
            }
        }
        for (section, amounts) in [("limits", &limits), ("requests", &requests)] {
            for (name, _) in amounts {
                if !STANDARD_RESOURCES.contains(&name.as_str())
                    && !self
                        .policy
                        .allowed_extended_resources
                        .iter()
                        .any(|allowed| allowed == name)
                {
                    self.deny(
                        &resources_path.key(section).key(name.clone()),
                        format!("{name} is not in allowedExtendedResources"),
                    );
                }
            }
        }
        for (name, request) in &requests {
            if let Some(limit) = find(&limits, name)
                && *request > limit
            {
                self.deny(
                    &resources_path.key("requests").key(name.clone()),
                    format!("{request} exceeds the limit {limit}"),
                );
            }
        }
        limits
    }

    /// A pod template claims no devices through dynamic resource allocation
    /// (a non-empty `spec.resourceClaims`) unless `allowResourceClaims` is
    /// true: DRA devices are not counted against `allowedExtendedResources`.
    pub(super) fn pod_resource_claims(&mut self, spec: &Map<String, Value>, path: &FieldPath) {
        self.no_resource_claims(spec, "resourceClaims", path);
    }

    /// A container uses no resource claims (a non-empty `resources.claims`)
    /// unless `allowResourceClaims` is true, as for the pod's own (its
    /// `spec.resourceClaims` and pod-level `resources.claims`).
    fn container_resource_claims(
        &mut self,
        resources: &Map<String, Value>,
        resources_path: &FieldPath,
    ) {
        self.no_resource_claims(resources, "claims", resources_path);
    }

    fn no_resource_claims(
        &mut self,
        object: &Map<String, Value>,
        key: &'static str,
        path: &FieldPath,
    ) {
        if !self.policy.allow_resource_claims
            && let Some(Some(claims)) = self.ok(optional::<List>(object, key, path))
            && !claims.is_empty()
        {
            self.deny(&path.key(key), RESOURCE_CLAIMS_RULE);
        }
    }

    /// The parsed amounts of `resources.<section>`; unparsable or negative
    /// amounts are denied and left out.
    fn quantities(
        &mut self,
        resources: Option<&Map<String, Value>>,
        section: &'static str,
        resources_path: &FieldPath,
    ) -> Vec<(String, Quantity)> {
        let Some(Some(amounts)) = resources.map(|r| {
            self.ok(optional_object(r, section, resources_path))
                .flatten()
        }) else {
            return Vec::new();
        };
        let section_path = resources_path.key(section);
        let mut parsed = Vec::with_capacity(amounts.len());
        for (name, value) in amounts {
            let path = section_path.key(name.clone());
            match Quantity::from_json(value) {
                Ok(quantity) if quantity.is_negative() => {
                    self.deny(&path, format!("{quantity} must not be negative"));
                }
                Ok(quantity) => parsed.push((name.clone(), quantity)),
                Err(error) => self.deny(&path, error.to_string()),
            }
        }
        parsed
    }
}
