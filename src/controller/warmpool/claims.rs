//! Claim arrivals as the pool controller sees them: from the Sandbox cache.
//!
//! Every claim creates exactly one Sandbox, owned by the claim (controller
//! ownerReference), from its template's pod template; a warm one carries the
//! `agents.x-k8s.io/pod-name` annotation. So a scan of the cache finds each
//! claim's arrival (its `admitted-at` stamp, else the Sandbox's creation
//! time), its launch type and its template (the pod template hash). The
//! claim controller may also report claims directly through
//! [`crate::sizing::Sizing::record_claim`]; both count a claim once (by uid).
//!
//! Cost: at most one scan per second per process; only Sandboxes created
//! since the previous scan (with slack for cache lag) are hashed.

use std::collections::HashMap;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::super::Context;
use crate::api::{
    ADMITTED_AT_ANNOTATION, POD_NAME_ANNOTATION, Sandbox, SandboxTemplateSpec, template_hash,
};
use crate::sizing::epoch_seconds;
use crate::sizing::tracker::HORIZON_SECONDS;

/// Scans at most this often (seconds).
const SCAN_INTERVAL: f64 = 1.0;
/// Sandboxes created this long before the previous scan are looked at again
/// (the cache may show them late).
const CACHE_SLACK: f64 = 30.0;

/// One claim as found in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedClaim {
    /// Uid of the claim (the Sandbox's controller owner).
    pub claim_uid: String,
    /// Served from a pool.
    pub warm: bool,
    /// Arrival, seconds since the epoch.
    pub at: f64,
}

/// The claim behind a Sandbox, if a claim controls it. Pure.
pub fn observed_claim(sandbox: &Sandbox) -> Option<ObservedClaim> {
    let owner = sandbox
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "SandboxClaim")?;
    let annotations = sandbox.annotations();
    let at = annotations
        .get(ADMITTED_AT_ANNOTATION)
        .and_then(|v| v.parse::<jiff::Timestamp>().ok())
        .or_else(|| sandbox.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    Some(ObservedClaim {
        claim_uid: owner.uid.clone(),
        warm: annotations.contains_key(POD_NAME_ANNOTATION),
        at: epoch_seconds(at),
    })
}

/// Feeds the claims the Sandbox cache shows into the sizing state (when a
/// scan is due).
pub fn scan(ctx: &Context, now: f64) {
    let Some(previous) = ctx.sizing.begin_scan(now, SCAN_INTERVAL) else {
        return;
    };
    let since = if previous == 0.0 {
        now - HORIZON_SECONDS
    } else {
        previous - CACHE_SLACK
    };
    // Hash -> template, per namespace, for templates that have a pool.
    let mut by_hash: HashMap<(String, String), String> = HashMap::new();
    for (namespace, template) in ctx.sizing.tracked_templates() {
        if let Some(t) = ctx
            .templates
            .get(&ObjectRef::new(&template).within(&namespace))
        {
            by_hash.insert((namespace, template_hash(&t.spec)), template);
        }
    }
    if by_hash.is_empty() {
        return;
    }
    for sandbox in ctx.sandboxes.state() {
        let created = sandbox
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| epoch_seconds(t.0))
            .unwrap_or(0.0);
        if created < since {
            continue;
        }
        let Some(claim) = observed_claim(&sandbox) else {
            continue;
        };
        let spec = SandboxTemplateSpec {
            pod_template: sandbox.spec.pod_template.clone(),
            ..Default::default()
        };
        let namespace = sandbox.namespace().unwrap_or_default();
        if let Some(template) = by_hash.get(&(namespace.clone(), template_hash(&spec))) {
            ctx.sizing.record_claim_at(
                &namespace,
                template,
                &claim.claim_uid,
                claim.warm,
                claim.at,
                now,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use kube::api::ObjectMeta;

    fn sandbox(kind: &str, annotations: &[(&str, &str)]) -> Sandbox {
        Sandbox {
            metadata: ObjectMeta {
                name: Some("s".into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(1000).unwrap())),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                owner_references: Some(vec![OwnerReference {
                    kind: kind.into(),
                    name: "c".into(),
                    uid: "claim-uid".into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn warm_and_cold_claims_from_their_sandboxes() {
        let warm = observed_claim(&sandbox(
            "SandboxClaim",
            &[
                (POD_NAME_ANNOTATION, "pool-abc"),
                (ADMITTED_AT_ANNOTATION, "1970-01-01T00:16:40.5Z"),
            ],
        ))
        .unwrap();
        assert_eq!(warm.claim_uid, "claim-uid");
        assert!(warm.warm);
        assert_eq!(warm.at, 1000.5);
        let cold = observed_claim(&sandbox("SandboxClaim", &[])).unwrap();
        assert!(!cold.warm);
        assert_eq!(cold.at, 1000.0);
        // A Sandbox a user created directly is not a claim.
        assert_eq!(observed_claim(&sandbox("Deployment", &[])), None);
    }
}
