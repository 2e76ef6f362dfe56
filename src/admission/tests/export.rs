//! `admit_pod_template` (and `check_pod_template`, its denials), what the
//! controllers run before creating a Pod: the same defaulting and
//! validation as the webhook, over the typed template.

use crate::admission::{Policy, check_pod_template};
use crate::api::Sandbox;

fn seed_template() -> crate::api::PodTemplate {
    let sandbox: Sandbox =
        serde_yaml::from_str(include_str!("../../../examples/aio-sandbox.yaml")).unwrap();
    sandbox.spec.pod_template
}

#[test]
fn the_seed_template_passes_under_both_profiles_after_defaulting() {
    assert_eq!(check_pod_template(&Policy::default(), &seed_template()), []);
    let restricted = Policy::from_yaml("profile: restricted").unwrap();
    assert_eq!(check_pod_template(&restricted, &seed_template()), []);
}

#[test]
fn a_template_the_policy_forbids_is_reported_with_field_paths() {
    let mut template = seed_template();
    template.spec.host_network = Some(true);
    template.spec.node_name = Some("node-1".into());
    let labels = template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default();
    labels.insert("agents.x-k8s.io/warm-pool".into(), "someone-elses".into());
    let denials: Vec<String> = check_pod_template(&Policy::default(), &template)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(denials.len(), 3, "{denials:?}");
    assert!(denials[0].starts_with("spec.podTemplate.metadata.labels[agents.x-k8s.io/warm-pool]"));
    assert!(
        denials[1]
            .starts_with("spec.podTemplate.spec.hostNetwork: sharing the host's network namespace")
    );
    assert!(denials[2].starts_with("spec.podTemplate.spec.nodeName: is not allowed"));
    // A stricter policy of the moment applies to a template admitted earlier.
    let tight = Policy::from_yaml("ceilings: {memory: 4Gi}").unwrap();
    let denials = check_pod_template(&tight, &seed_template());
    assert_eq!(
        denials[0].to_string(),
        "spec.podTemplate.spec.containers[0].resources.limits.memory: 8Gi exceeds the maximum 4Gi"
    );
}

#[test]
fn the_admitted_template_carries_the_defaults_the_check_counted_on() {
    // A bare template (as stored with the webhook off) passes the restricted
    // profile only with the policy's defaults; the template the controllers
    // build Pods from must carry them.
    let bare: crate::api::PodTemplate = serde_json::from_value(serde_json::json!({
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    let restricted = Policy::from_yaml("profile: restricted").unwrap();
    let admitted = crate::admission::admit_pod_template(&restricted, &bare).unwrap();
    let spec = serde_json::to_value(&admitted.spec).unwrap();
    let container = &spec["containers"][0];
    let context = &container["securityContext"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{spec:#}");
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{spec:#}"
    );
    assert_eq!(context["allowPrivilegeEscalation"], false, "{spec:#}");
    assert_eq!(context["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(
        container["resources"]["limits"]["memory"].is_string(),
        "{spec:#}"
    );
    assert_eq!(spec["automountServiceAccountToken"], false, "{spec:#}");
    // Without those defaults the same template is refused: a Pod built from
    // the stored template instead would break the profile the check passed.
    let stored = serde_json::to_value(&bare).unwrap();
    let refused = crate::admission::validate::check_pod_template_value(
        &restricted,
        &stored,
        &["spec", "podTemplate"],
    );
    assert!(!refused.denials.is_empty());
}

#[test]
fn claim_templates_that_pick_or_copy_a_volume_are_refused_before_the_claims_are_made() {
    let templates: Vec<crate::api::PersistentVolumeClaimTemplate> =
        serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "ok"}, "spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}},
            {"metadata": {"name": "copy"}, "spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "dataSource": {"kind": "PersistentVolumeClaim", "name": "someone-elses"}}}
        ]))
        .unwrap();
    let denials: Vec<String> =
        crate::admission::check_volume_claim_templates(&Policy::default(), &templates)
            .iter()
            .map(ToString::to_string)
            .collect();
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert!(
        denials[0].starts_with("spec.volumeClaimTemplates[1].spec.dataSource: fills the claim"),
        "{denials:?}"
    );
    assert!(
        crate::admission::check_volume_claim_templates(&Policy::default(), &templates[..1])
            .is_empty()
    );
    // A policy without persistentVolumeClaim volumes refuses any claim
    // template: the Sandbox's Pod would mount it as one.
    let mut no_claims = Policy::default();
    no_claims
        .allowed_volume_types
        .retain(|t| t != "persistentVolumeClaim");
    let denials: Vec<String> =
        crate::admission::check_volume_claim_templates(&no_claims, &templates[..1])
            .iter()
            .map(ToString::to_string)
            .collect();
    assert_eq!(
        denials,
        [format!(
            "spec.volumeClaimTemplates: each claim template is mounted as a persistentVolumeClaim \
             volume, which is not in allowedVolumeTypes ({})",
            no_claims.allowed_volume_types.join(", ")
        )]
    );
    assert!(crate::admission::check_volume_claim_templates(&no_claims, &[]).is_empty());
}
