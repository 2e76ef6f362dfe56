//! PersistentVolumeClaim templates of a Sandbox or SandboxTemplate
//! (`spec.volumeClaimTemplates[i].spec`): the operator creates these claims
//! with its own identity, so a template may not pick the volume a claim
//! binds to, neither by name (`volumeName`, pre-binding to one
//! PersistentVolume) nor by label (`selector`, binding to static volumes),
//! nor fill it from another claim or a snapshot (`dataSource`,
//! `dataSourceRef`: a copy made with the operator's rights). The claims are
//! provisioned or bound by the cluster like any other.

use serde_json::{Map, Value};

use super::super::field::{FieldPath, optional, optional_object};
use super::Validator;

impl Validator<'_> {
    /// No `volumeName`, `selector`, `dataSource` or `dataSourceRef` in any
    /// claim template's spec; and none at all when the policy's
    /// `allowedVolumeTypes` leaves out `persistentVolumeClaim`: the
    /// Sandbox's Pod mounts each claim as such a volume, added after its
    /// pod template was checked (found by review: the Pod carried a volume
    /// type the policy refuses).
    pub(super) fn volume_claim_templates(
        &mut self,
        spec: &Map<String, Value>,
        spec_path: &FieldPath,
    ) {
        let has_templates = spec
            .get("volumeClaimTemplates")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty());
        if has_templates
            && !self
                .policy
                .allowed_volume_types
                .iter()
                .any(|t| t == "persistentVolumeClaim")
        {
            self.deny(
                &spec_path.key("volumeClaimTemplates"),
                format!(
                    "each claim template is mounted as a persistentVolumeClaim volume, which is not in \
                     allowedVolumeTypes ({})",
                    self.policy.allowed_volume_types.join(", ")
                ),
            );
        }
        for (claim_path, claim_spec) in
            self.item_fields(spec, "volumeClaimTemplates", "spec", spec_path)
        {
            if let Some(Some(volume)) =
                self.ok(optional::<&str>(claim_spec, "volumeName", &claim_path))
                && !volume.is_empty()
            {
                self.deny(
                    &claim_path.key("volumeName"),
                    format!(
                        "{volume:?} pre-binds the claim to a PersistentVolume: the operator creates \
                         claims with its own identity and will not bind a claim to a volume the template picks"
                    ),
                );
            }
            for key in ["dataSource", "dataSourceRef"] {
                if let Some(Some(_)) = self.ok(optional_object(claim_spec, key, &claim_path)) {
                    self.deny(
                        &claim_path.key(key),
                        "fills the claim from another volume or snapshot: the operator creates claims \
                         with its own identity and will not copy data the requester may not be able to read",
                    );
                }
            }
            if let Some(Some(_)) = self.ok(optional_object(claim_spec, "selector", &claim_path)) {
                self.deny(
                    &claim_path.key("selector"),
                    "binds the claim to existing PersistentVolumes by label: the operator creates \
                     claims with its own identity and will not bind a claim to a volume the template picks",
                );
            }
        }
    }
}

/// Checks a Sandbox's claim templates (given as JSON, the Sandbox's
/// `spec.volumeClaimTemplates`) with the rule above: the Sandbox controller
/// runs it before it creates the claims, so a Sandbox stored without the
/// webhook cannot pick a volume either.
pub(crate) fn check_volume_claim_templates_value(
    policy: &super::super::Policy,
    templates: &Value,
) -> super::Verdict {
    let mut validator = Validator::new(policy);
    let mut spec = Map::new();
    spec.insert("volumeClaimTemplates".into(), templates.clone());
    validator.volume_claim_templates(&spec, &FieldPath::root().key("spec"));
    validator.verdict
}
