//! Claim arrivals as the pool controller sees them: from the Sandbox cache.
//!
//! Every claim creates exactly one Sandbox, owned by the claim (controller
//! ownerReference), from its template's pod template; one served from a pool
//! carries the `agents.x-k8s.io/pod-name` annotation. So a scan of the cache
//! finds each claim's arrival (its `admitted-at` stamp, else the Sandbox's
//! creation time), its template (the pod template hash) and, with the
//! claim's status for a pool Pod taken while still starting (a miss), its
//! launch type ([`served_warm`]). The
//! claim controller may also report claims directly through
//! [`crate::sizing::Sizing::record_claim`]; both count a claim once (by uid).
//!
//! Cost: at most one scan per second per process; only Sandboxes created
//! since the previous scan (with slack for cache lag) whose claim is not
//! counted yet are hashed.

use std::collections::HashMap;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::super::Context;
use crate::api::{
    LaunchType, POD_NAME_ANNOTATION, Sandbox, SandboxClaimStatus, TEMPLATE_LABEL, pod_template_hash,
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
    /// Its Sandbox names a pool Pod (a hit, unless the claim took that Pod
    /// still starting: see [`served_warm`]).
    pub warm: bool,
    /// Arrival, seconds since the epoch.
    pub at: f64,
}

/// The claim behind a Sandbox, if a claim controls it. Pure.
pub fn observed_claim(sandbox: &Sandbox) -> Option<ObservedClaim> {
    let owner = crate::controller::ownership::controller_of_kind(
        sandbox.owner_references(),
        "SandboxClaim",
    )?;
    let annotations = sandbox.annotations();
    let at = crate::api::admission_stamp(&sandbox.metadata)
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
    // Hash -> templates, per namespace, for templates that have a pool.
    let mut by_hash: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (namespace, template) in ctx.sizing.tracked_templates() {
        if let Some(t) = ctx
            .caches
            .templates
            .get(&ObjectRef::new(&template).within(&namespace))
        {
            by_hash
                .entry((
                    namespace,
                    ctx.template_facts
                        .facts(&t, ctx.config.policy.current())
                        .hash,
                ))
                .or_default()
                .push(template);
        }
    }
    if by_hash.is_empty() {
        return;
    }
    for sandbox in ctx.caches.sandboxes.state() {
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
        let namespace = sandbox.namespace().unwrap_or_default();
        if ctx.sizing.has_counted(&namespace, &claim.claim_uid) {
            continue;
        }
        let cached_claim = ctx
            .caches
            .claims
            .get(&ObjectRef::new(&sandbox.name_any()).within(&namespace))
            .filter(|c| c.uid().as_deref() == Some(claim.claim_uid.as_str()));
        // A claim that may not use a pool (`warmpool: none`, or a Sandbox
        // with volume claims a pool Pod lacks) is cold by design: no miss
        // (see `claim::serve`).
        let pool_allowed = cached_claim.as_ref().is_none_or(|c| {
            crate::controller::claim::pool_choice(c) != crate::controller::claim::PoolChoice::None
        }) && sandbox.spec.volume_claim_templates.is_none();
        if !pool_allowed {
            continue;
        }
        let claim_status = cached_claim.and_then(|c| c.status.clone());
        let Some(warm) = served_warm(claim.warm, claim_status.as_ref()) else {
            continue;
        };
        let hash = pod_template_hash(&sandbox.spec.pod_template);
        let Some(templates) = by_hash.get(&(namespace.clone(), hash)) else {
            continue;
        };
        if let Some(template) = template_of(ctx, &sandbox, &namespace, templates) {
            ctx.sizing.record_claim_at(
                &namespace,
                &template,
                &claim.claim_uid,
                warm,
                claim.at,
                now,
            );
        }
    }
}

/// Whether a claim whose Sandbox names a Pod (`named`) or not was a hit:
/// one naming a Pod is, unless its claim says `Cold` (it took a pool Pod
/// still starting, see `claim::serve`); until the claim says anything it is
/// not decided (`None`: a later scan, or the claim controller's own report,
/// counts it). A Sandbox naming no Pod is a miss. Pure.
pub fn served_warm(named: bool, claim: Option<&SandboxClaimStatus>) -> Option<bool> {
    if !named {
        return Some(false);
    }
    let launch = claim?.launch_type?;
    Some(launch == LaunchType::Warm)
}

/// The template of a claim's Sandbox among the templates whose pod template
/// it matches: the only one, or for a warm claim the template label of the
/// Pod it took. A cold claim of two identical templates is not attributed
/// (the claim controller's direct report is exact).
fn template_of(
    ctx: &Context,
    sandbox: &Sandbox,
    namespace: &str,
    templates: &[String],
) -> Option<String> {
    let pod = sandbox
        .annotations()
        .get(POD_NAME_ANNOTATION)
        .and_then(|pod| ctx.caches.pods.get(&ObjectRef::new(pod).within(namespace)));
    pick_template(
        templates,
        pod.as_ref()
            .and_then(|p| p.labels().get(TEMPLATE_LABEL))
            .map(String::as_str),
    )
}

/// The only candidate template, else the one the taken Pod was made from.
/// Pure.
pub fn pick_template(templates: &[String], pod_template_label: Option<&str>) -> Option<String> {
    if let [only] = templates {
        return Some(only.clone());
    }
    let label = pod_template_label?;
    templates.iter().find(|t| *t == label).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ADMITTED_AT_ANNOTATION;
    use crate::controller::warmpool::test_objects::{owner, string_map};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn sandbox(kind: &str, annotations: &[(&str, &str)]) -> Sandbox {
        Sandbox {
            metadata: ObjectMeta {
                name: Some("s".into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(1000).unwrap())),
                annotations: Some(string_map(annotations)),
                owner_references: Some(vec![owner(kind, "c", "claim-uid", true)]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_pool_pod_taken_while_starting_is_a_miss_once_the_claim_says_so() {
        let said = |launch| SandboxClaimStatus {
            launch_type: launch,
            ..Default::default()
        };
        assert_eq!(served_warm(false, None), Some(false));
        assert_eq!(
            served_warm(true, Some(&said(Some(LaunchType::Warm)))),
            Some(true)
        );
        assert_eq!(
            served_warm(true, Some(&said(Some(LaunchType::Cold)))),
            Some(false)
        );
        assert_eq!(served_warm(true, Some(&said(None))), None);
        assert_eq!(
            served_warm(true, None),
            None,
            "undecided until the claim says"
        );
    }

    #[test]
    fn identical_templates_are_told_apart_by_the_taken_pod_only() {
        let one = ["a".to_string()];
        assert_eq!(pick_template(&one, None), Some("a".into()));
        let two = ["a".to_string(), "b".to_string()];
        assert_eq!(pick_template(&two, Some("b")), Some("b".into()));
        assert_eq!(pick_template(&two, None), None);
        assert_eq!(pick_template(&two, Some("c")), None);
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
