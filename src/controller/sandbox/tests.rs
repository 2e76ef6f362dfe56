//! Unit tests of the pure parts: plan, status and desired objects.
use super::*;
use crate::api::{ADOPTABLE_LABEL, CLAIM_UID_LABEL, ShutdownPolicy};
use crate::api::{PodTemplate, SandboxSpec, reason};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use std::time::Duration;

fn sandbox() -> Sandbox {
    let mut s = Sandbox::new(
        "sbx",
        SandboxSpec {
            pod_template: PodTemplate {
                metadata: None,
                spec: PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        image: Some("i".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            },
            ..Default::default()
        },
    );
    s.metadata.namespace = Some("ns".into());
    s.metadata.uid = Some("sbx-uid".into());
    s
}

/// A Sandbox that names the Pod `pod` for adoption.
fn naming(pod: &str) -> Sandbox {
    let mut s = sandbox();
    s.annotations_mut()
        .insert(POD_NAME_ANNOTATION.into(), pod.into());
    s
}

/// A controller reference to the `kind` named `name` with `uid`.
fn controlled_by(kind: &str, name: &str, uid: &str) -> Option<Vec<OwnerReference>> {
    Some(vec![crate::controller::test_pod::controller(
        kind, name, uid,
    )])
}

/// Controlled by this Sandbox (`sbx-uid`), else by a claim of that uid.
fn owned_by(uid: &str) -> Option<Vec<OwnerReference>> {
    let kind = if uid == "sbx-uid" {
        "Sandbox"
    } else {
        "SandboxClaim"
    };
    controlled_by(kind, "owner", uid)
}

fn pod(name: &str, owner: Option<&str>) -> Arc<Pod> {
    let mut pod = crate::controller::test_pod::named(name, "1");
    pod.metadata.owner_references = owner.and_then(owned_by);
    Arc::new(pod)
}

/// The plan for `sandbox` at [`now`] with these Pods.
fn plan_at_now(sandbox: &Sandbox, owned: Vec<Arc<Pod>>, named: Option<Arc<Pod>>) -> Plan {
    plan(&Observed {
        sandbox,
        owned,
        named,
        now: now(),
    })
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_000_000).unwrap()
}

#[test]
fn fresh_sandbox_creates_a_pod() {
    let s = sandbox();
    let p = plan_at_now(&s, vec![], None);
    assert_eq!(p.steps, vec![Step::CreatePod]);
}

#[test]
fn a_held_start_drops_create_and_adopt_and_says_why_unless_something_comes_first() {
    let conflict = || ConditionUpdate::ready(false, reason::NAME_CONFLICT, "policy taken");
    let s = sandbox();
    let mut p = plan_at_now(&s, vec![], None);
    p.hold_pod_start(conflict());
    assert!(p.steps.is_empty());
    assert_eq!(p.blocked.unwrap().reason, reason::NAME_CONFLICT);
    // Adoption is a start too.
    let s = naming("free");
    let mut consenting = (*pod("free", None)).clone();
    consenting
        .labels_mut()
        .insert(ADOPTABLE_LABEL.into(), "true".into());
    let mut p = plan_at_now(&s, vec![], Some(Arc::new(consenting)));
    assert!(matches!(p.steps.as_slice(), [Step::Adopt { .. }]), "{p:?}");
    p.hold_pod_start(conflict());
    assert!(p.steps.is_empty());
    // The held adoption is not "taking over a Pod" any more.
    assert_eq!(p.blocked.unwrap().reason, reason::NAME_CONFLICT);
    // A pause says so first, and its deletions still happen.
    let mut paused = sandbox();
    paused.spec.replicas = Some(0);
    let mut p = plan_at_now(&paused, vec![pod("sbx", Some("sbx-uid"))], None);
    let steps = p.steps.clone();
    let reason = p.blocked.clone().unwrap().reason;
    p.hold_pod_start(conflict());
    assert_eq!((p.steps, p.blocked.unwrap().reason), (steps, reason));
}

#[test]
fn owned_pod_means_nothing_to_do() {
    let s = sandbox();
    let p = plan_at_now(&s, vec![pod("sbx", Some("sbx-uid"))], None);
    assert!(p.steps.is_empty());
}

#[test]
fn two_owned_pods_create_nothing_and_report() {
    let s = sandbox();
    let p = plan_at_now(
        &s,
        vec![pod("a", Some("sbx-uid")), pod("b", Some("sbx-uid"))],
        None,
    );
    assert!(!p.steps.contains(&Step::CreatePod));
    assert_eq!(p.blocked.unwrap().reason, reason::MULTIPLE_PODS);
}

#[test]
fn adopts_only_stolen_or_consenting_pods() {
    let mut s = naming("warm-1");
    // The claim's Sandbox: named after the claim.
    s.metadata.owner_references = controlled_by("SandboxClaim", "sbx", "claim-uid");
    let adopts = |named: Pod| plan_at_now(&s, vec![], Some(Arc::new(named)));
    let with_labels = |owner: Option<&str>, labels: &[(&str, &str)]| {
        let mut p = (*pod("warm-1", owner)).clone();
        let map = p.metadata.labels.get_or_insert_with(Default::default);
        for (k, v) in labels {
            map.insert(k.to_string(), v.to_string());
        }
        p
    };
    let adopt = vec![Step::Adopt {
        name: "warm-1".into(),
    }];
    // Stolen by this Sandbox's claim: controller AND claim-uid label.
    let stolen = with_labels(
        Some("claim-uid"),
        &[
            (CLAIM_UID_LABEL, "claim-uid"),
            (crate::api::CLAIM_LABEL, "sbx"),
        ],
    );
    assert_eq!(adopts(stolen.clone()).steps, adopt);
    // A Sandbox of another name with a controller reference to that claim
    // (possible without the ownership guard) is not the claim's: no.
    let mut forged = s.clone();
    forged.metadata.name = Some("forged".into());
    let p = plan_at_now(&forged, vec![], Some(Arc::new(stolen)));
    assert!(
        !p.steps.iter().any(|s| matches!(s, Step::Adopt { .. })),
        "{p:?}"
    );
    // The claim as controller but without its uid label: not a steal.
    let p = adopts(with_labels(Some("claim-uid"), &[]));
    assert_eq!(p.blocked.unwrap().reason, reason::POD_OWNED_ELSEWHERE);
    // Unowned: only with the owner's opt-in label, and only by a Sandbox
    // no claim controls (a claim's Sandbox names the Pod its claim stole:
    // unowned, it lost its owner on the way).
    let consenting = with_labels(None, &[(ADOPTABLE_LABEL, "true")]);
    let mut standalone = s.clone();
    standalone.metadata.owner_references = None;
    let standalone_plan = plan_at_now(&standalone, vec![], Some(Arc::new(consenting.clone())));
    assert_eq!(standalone_plan.steps, adopt);
    let p = adopts(consenting);
    assert!(!p.steps.iter().any(|s| matches!(s, Step::Adopt { .. })));
    let blocked = p.blocked.unwrap();
    assert_eq!(blocked.reason, reason::POD_OWNED_ELSEWHERE);
    assert!(
        blocked
            .message
            .contains("adopts only the Pod its claim holds"),
        "{}",
        blocked.message
    );
    // Without the label, the standalone Sandbox names what is missing.
    let p = plan_at_now(&standalone, vec![], Some(Arc::new(with_labels(None, &[]))));
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::Adopt { .. } | Step::CreatePod))
    );
    let blocked = p.blocked.unwrap();
    assert_eq!(blocked.reason, reason::POD_OWNED_ELSEWHERE);
    assert!(
        blocked.message.contains(ADOPTABLE_LABEL),
        "{}",
        blocked.message
    );
    // Another claim's Pod, whatever its labels say: never taken; this
    // Sandbox's claim repairs it (see the next test).
    let foreign = with_labels(Some("other"), &[(CLAIM_UID_LABEL, "claim-uid")]);
    let p = adopts(foreign);
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::Adopt { .. } | Step::CreatePod))
    );
    assert!(p.quiet);
}

#[test]
fn waits_quietly_while_the_claims_steal_is_in_flight() {
    let mut s = naming("warm-1");
    s.metadata.owner_references = controlled_by("SandboxClaim", "c", "claim-uid");
    let mut idle = (*pod("warm-1", None)).clone();
    idle.metadata.owner_references = controlled_by("SandboxWarmPool", "pool", "pool-uid");
    let p = plan_at_now(&s, vec![], Some(Arc::new(idle)));
    assert!(p.quiet, "no status write, no Event while the steal lands");
    assert!(p.steps.is_empty());
}

#[test]
fn a_claims_sandbox_leaves_a_pod_another_claim_won_to_its_claims_repair() {
    let mut s = naming("warm-1");
    s.metadata.owner_references = controlled_by("SandboxClaim", "c", "claim-uid");
    // Won by another claim, then adopted by that claim's Sandbox.
    for (kind, owner) in [
        ("SandboxClaim", "other-claim"),
        ("Sandbox", "other-sandbox"),
    ] {
        let mut won = (*pod("warm-1", None)).clone();
        won.metadata.owner_references = controlled_by(kind, owner, "other-uid");
        let p = plan_at_now(&s, vec![], Some(Arc::new(won)));
        assert!(p.quiet, "{kind}: no status write, no Event");
        assert!(p.steps.is_empty(), "{kind}: {:?}", p.steps);
    }
}

#[test]
fn missing_named_pod_falls_back_to_a_new_pod() {
    let s = naming("gone");
    let p = plan_at_now(&s, vec![], None);
    assert!(p.steps.contains(&Step::CreatePod));
}

#[test]
fn a_claims_sandbox_drops_a_gone_name_before_it_starts_a_pod() {
    let mut s = naming("gone");
    s.metadata.owner_references = controlled_by("SandboxClaim", "sbx", "claim-uid");
    let p = plan_at_now(&s, vec![], None);
    assert!(p.steps.contains(&Step::Unname), "{:?}", p.steps);
    assert!(!p.steps.contains(&Step::CreatePod), "{:?}", p.steps);
}

#[test]
fn paused_deletes_the_pod_and_expired_deletes_per_policy() {
    let mut s = sandbox();
    s.spec.replicas = Some(0);
    let p = plan_at_now(&s, vec![pod("sbx", Some("sbx-uid"))], None);
    assert_eq!(
        p.steps,
        vec![Step::DeletePod {
            name: "sbx".into(),
            uid: "uid-sbx".into()
        }]
    );
    assert_eq!(p.blocked.unwrap().reason, reason::PAUSED);

    let mut s = sandbox();
    s.spec.shutdown_time = Some(Time(jiff::Timestamp::from_second(999_000).unwrap()));
    s.spec.shutdown_policy = Some(ShutdownPolicy::Delete);
    let p = plan_at_now(&s, vec![], None);
    assert_eq!(p.steps, vec![Step::DeleteSandbox]);
}

#[test]
fn future_shutdown_schedules_one_wake_up() {
    let mut s = sandbox();
    s.spec.shutdown_time = Some(Time(jiff::Timestamp::from_second(1_000_010).unwrap()));
    let p = plan_at_now(&s, vec![], None);
    let wake = p.requeue_after.unwrap();
    assert!(
        wake >= Duration::from_secs(10) && wake < Duration::from_secs(11),
        "{wake:?}"
    );
}

#[test]
fn status_reports_fqdn_selector_and_ready() {
    let s = sandbox();
    let mut p = (*pod("sbx", Some("sbx-uid"))).clone();
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        pod_ip: Some("10.0.0.9".into()),
        ..crate::controller::test_pod::ready_status()
    });
    let st = compute_status(&s, Some(&p), None, "cluster.local", now());
    assert_eq!(st.service_fqdn.as_deref(), Some("sbx.ns.svc.cluster.local"));
    assert_eq!(st.selector.as_deref(), Some("agents.x-k8s.io/sandbox=sbx"));
    assert_eq!(st.replicas, 1);
    assert!(crate::api::is_true(&st.conditions, "Ready"));
    assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.9"));
    // With a Service under its name that is someone else's, the Sandbox is
    // not Ready and says why, while still reporting its running Pod (the
    // reconcile leaves the Service out of the status).
    let conflict = crate::api::ConditionUpdate::ready(
        false,
        crate::api::reason::NAME_CONFLICT,
        "Service sbx exists and is not controlled by Sandbox sbx",
    );
    let st = compute_status(&s, Some(&p), Some(&conflict), "cluster.local", now());
    assert_eq!((st.pod_ip.as_deref(), st.replicas), (Some("10.0.0.9"), 1));
    assert!(!crate::api::is_true(&st.conditions, "Ready"));
    let ready = crate::api::find_condition(&st.conditions, "Ready").unwrap();
    assert_eq!(ready.reason, "NameConflict");
    // A refused Service (a quota) says so and keeps the running Pod
    // reported too.
    let quota = crate::api::ConditionUpdate::ready(
        false,
        crate::api::reason::QUOTA_EXCEEDED,
        "create Service sbx: exceeded quota",
    );
    let st = compute_status(&s, Some(&p), Some(&quota), "cluster.local", now());
    assert_eq!((st.pod_ip.as_deref(), st.replicas), (Some("10.0.0.9"), 1));
    let ready = crate::api::find_condition(&st.conditions, "Ready").unwrap();
    assert_eq!(ready.reason, "QuotaExceeded");
}

#[test]
fn a_pod_of_an_earlier_pod_template_is_reported_until_it_is_replaced() {
    use crate::api::{POD_TEMPLATE_APPLIED, TEMPLATE_HASH_LABEL, find_condition};
    let mut s = sandbox();
    s.metadata.generation = Some(1);
    let spec = s.spec.pod_template.spec.clone();
    let mut p = desired_pod(&s, spec, None).unwrap();
    p.status = Some(crate::controller::test_pod::ready_status());
    // Made from the current template: nothing to say.
    let st = compute_status(&s, Some(&p), None, "cluster.local", now());
    assert!(find_condition(&st.conditions, POD_TEMPLATE_APPLIED).is_none());
    // The template is edited (a new generation): the running Pod is kept
    // and the status says it is of the earlier template.
    s.status = Some(st);
    s.metadata.generation = Some(2);
    s.spec.pod_template.spec.containers[0].image = Some("i:2".into());
    let st = compute_status(&s, Some(&p), None, "cluster.local", now());
    let c = find_condition(&st.conditions, POD_TEMPLATE_APPLIED).expect("reported");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "PodTemplateChanged")
    );
    assert!(
        c.message.contains("Pod sbx") && c.message.contains("spec.replicas"),
        "{}",
        c.message
    );
    assert!(crate::api::is_true(&st.conditions, "Ready"), "still Ready");
    // A later reconcile of the same generation keeps saying it.
    s.status = Some(st);
    let st = compute_status(&s, Some(&p), None, "cluster.local", now());
    assert!(find_condition(&st.conditions, POD_TEMPLATE_APPLIED).is_some());
    // Edited back: nothing to say again.
    s.status = Some(st);
    s.metadata.generation = Some(3);
    s.spec.pod_template.spec.containers[0].image = Some("i".into());
    let st = compute_status(&s, Some(&p), None, "cluster.local", now());
    assert!(find_condition(&st.conditions, POD_TEMPLATE_APPLIED).is_none());
    // A Pod without the operator's hash (an older version's) is not judged.
    s.spec.pod_template.spec.containers[0].image = Some("i:3".into());
    s.metadata.generation = Some(4);
    p.labels_mut().remove(TEMPLATE_HASH_LABEL);
    let st = compute_status(&s, Some(&p), None, "cluster.local", now());
    assert!(find_condition(&st.conditions, POD_TEMPLATE_APPLIED).is_none());
    // Paused (no live Pod): nothing to say.
    let st = compute_status(&s, None, None, "cluster.local", now());
    assert!(find_condition(&st.conditions, POD_TEMPLATE_APPLIED).is_none());
}

#[test]
fn desired_pod_mounts_volume_claims_and_is_owned() {
    let mut s = sandbox();
    s.spec.volume_claim_templates = Some(vec![crate::api::PersistentVolumeClaimTemplate {
        metadata: crate::api::EmbeddedObjectMetadata {
            name: Some("data".into()),
            ..Default::default()
        },
        spec: Default::default(),
    }]);
    let p = desired_pod(&s, s.spec.pod_template.spec.clone(), None).unwrap();
    let vols = p.spec.unwrap().volumes.unwrap();
    assert_eq!(
        vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
        "data-sbx"
    );
    assert_eq!(p.metadata.owner_references.unwrap()[0].uid, "sbx-uid");
    assert_eq!(
        desired_pvcs(&s).unwrap()[0].metadata.name.as_deref(),
        Some("data-sbx")
    );
}

#[test]
fn reserved_keys_from_the_template_never_reach_the_pod() {
    let mut s = sandbox();
    s.spec.pod_template.metadata = Some(crate::api::PodMetadata {
        labels: Some(
            [
                ("agents.x-k8s.io/sandbox", "someone-else"),
                ("app.kubernetes.io/managed-by", "sandbox-operator"),
                ("agents.x-k8s.io/warm-pool", "pool"),
                ("team", "a"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        annotations: Some(
            [("extensions.agents.x-k8s.io/x", "y"), ("note", "kept")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    });
    let pod = desired_pod(&s, s.spec.pod_template.spec.clone(), None).unwrap();
    let labels = pod.metadata.labels.unwrap();
    assert_eq!(
        labels["agents.x-k8s.io/sandbox"], "sbx",
        "ours, not the template's"
    );
    assert!(!labels.contains_key("agents.x-k8s.io/warm-pool"));
    assert_eq!(labels["team"], "a");
    let annotations = pod.metadata.annotations.unwrap();
    assert!(!annotations.contains_key("extensions.agents.x-k8s.io/x"));
    assert_eq!(annotations["note"], "kept");
}

#[test]
fn a_pod_that_failed_for_its_node_is_replaced() {
    let s = sandbox();
    let failed = |reason: &str, disrupted: bool| {
        let mut p = (*pod("sbx", Some("sbx-uid"))).clone();
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Failed".into()),
            reason: Some(reason.into()),
            conditions: disrupted.then(|| {
                vec![k8s_openapi::api::core::v1::PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some("TerminationByKubelet".into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        Arc::new(p)
    };
    for (reason, disrupted) in [
        ("Terminated", true),
        ("NodeShutdown", false),
        ("Shutdown", false),
    ] {
        let plan = plan_at_now(&s, vec![failed(reason, disrupted)], None);
        assert!(
            plan.steps
                .iter()
                .any(|s| matches!(s, Step::DeletePod { .. })),
            "{reason} (disrupted: {disrupted}) is replaced"
        );
    }
    // Its own exit, a kubelet's refusal at start (its replacement may be
    // refused again at once), or `Terminated` without the kubelet's
    // condition: reported, not replaced.
    for reason in [
        "Error",
        "OutOfcpu",
        "UnexpectedAdmissionError",
        "Terminated",
    ] {
        let plan = plan_at_now(&s, vec![failed(reason, false)], None);
        assert!(plan.steps.is_empty(), "{reason} is reported, not replaced");
    }
}

#[test]
fn an_evicted_pod_is_replaced_and_a_failed_one_reported() {
    let s = sandbox();
    let with_status = |phase: &str, reason: Option<&str>| {
        let mut p = (*pod("sbx", Some("sbx-uid"))).clone();
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some(phase.into()),
            reason: reason.map(Into::into),
            ..Default::default()
        });
        Arc::new(p)
    };
    let evicted = plan_at_now(&s, vec![with_status("Failed", Some("Evicted"))], None);
    assert!(
        evicted
            .steps
            .iter()
            .any(|s| matches!(s, Step::DeletePod { .. }))
    );
    assert_eq!(evicted.blocked.unwrap().reason, reason::POD_EVICTED);
    let crashed = plan_at_now(&s, vec![with_status("Failed", Some("Error"))], None);
    assert!(
        crashed.steps.is_empty(),
        "an exited process is reported, not replaced"
    );
}

#[test]
fn a_claims_cold_pod_carries_the_claims_name_and_uid() {
    let mut s = sandbox();
    s.metadata.owner_references = controlled_by("SandboxClaim", "sbx", "claim-uid");
    // The Sandbox's own template label is its user's to edit: the Pod's
    // comes from the claim's template, given by the caller.
    s.labels_mut()
        .insert(crate::api::TEMPLATE_LABEL.into(), "edited".into());
    let labels = desired_pod(&s, s.spec.pod_template.spec.clone(), Some("tmpl"))
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(labels[crate::api::CLAIM_LABEL], "sbx");
    assert_eq!(
        labels[CLAIM_UID_LABEL], "claim-uid",
        "the hold on the claim's policy covers the Pod from its creation"
    );
    assert_eq!(labels[crate::api::TEMPLATE_LABEL], "tmpl");
    let unknown = desired_pod(&s, s.spec.pod_template.spec.clone(), None)
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert!(
        !unknown.contains_key(crate::api::TEMPLATE_LABEL),
        "never the Sandbox's label"
    );
    // A standalone Sandbox's Pod serves no claim.
    let plain = sandbox();
    let labels = desired_pod(&plain, plain.spec.pod_template.spec.clone(), None)
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert!(!labels.contains_key(crate::api::CLAIM_LABEL));
    assert!(!labels.contains_key(CLAIM_UID_LABEL));
}

/// A standalone Sandbox's Service selects its Pod by the Sandbox's uid as
/// well as its name, and every Pod the Sandbox creates or adopts carries
/// that uid: a Pod left by an orphaning delete never joins a later
/// Sandbox's Service of the same name.
#[test]
fn the_service_selects_the_sandboxs_uid_which_its_pods_carry() {
    use crate::api::{SANDBOX_LABEL, SANDBOX_UID_LABEL};
    let s = sandbox();
    let selector = desired_service(&s).unwrap().spec.unwrap().selector.unwrap();
    assert_eq!(selector[SANDBOX_LABEL], "sbx");
    assert_eq!(selector[SANDBOX_UID_LABEL], "sbx-uid");
    let pod = desired_pod(&s, s.spec.pod_template.spec.clone(), None).unwrap();
    let labels = pod.metadata.labels.unwrap();
    assert!(
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the Pod it creates matches: {labels:?}"
    );
    let mut adoptable = crate::controller::test_pod::named("mine", "3");
    adoptable.metadata.labels = Some([(ADOPTABLE_LABEL.to_string(), "true".to_string())].into());
    let patch = crate::controller::takeover::adopt_patch(
        &adoptable,
        "sbx",
        crate::controller::controller_ref(&s).unwrap(),
    )
    .unwrap();
    let mut value = serde_json::to_value(&adoptable).unwrap();
    json_patch::patch(&mut value, &patch).unwrap();
    assert!(
        selector
            .iter()
            .all(|(k, v)| value["metadata"]["labels"][k].as_str() == Some(v.as_str())),
        "a Pod it adopts matches: {}",
        value["metadata"]["labels"]
    );
}

/// A Pod that has ended keeps its name in the status (for its user to
/// inspect) but not its IPs: the kubelet released them, and another Pod may
/// hold them now. Before (found by review), a Failed Pod's IPs stayed in
/// `podIP`/`podIPs`, and an evicted Pod held by a finalizer put them back
/// as PodTerminating.
#[test]
fn an_ended_pod_is_named_without_its_ips() {
    let s = sandbox();
    let with_status = |phase: &str, reason: Option<&str>, terminating: bool| {
        let mut p = (*pod("sbx", Some("sbx-uid"))).clone();
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some(phase.into()),
            reason: reason.map(Into::into),
            pod_ip: Some("10.0.0.9".into()),
            pod_ips: Some(vec![k8s_openapi::api::core::v1::PodIP {
                ip: "10.0.0.9".into(),
            }]),
            ..Default::default()
        });
        if terminating {
            p.metadata.deletion_timestamp = Some(Time(now()));
        }
        p
    };
    for (phase, reason, terminating, expected) in [
        ("Failed", Some("Error"), false, reason::POD_FAILED),
        ("Succeeded", None, false, reason::POD_SUCCEEDED),
        ("Failed", Some("Evicted"), true, reason::POD_TERMINATING),
    ] {
        let p = with_status(phase, reason, terminating);
        let st = compute_status(&s, Some(&p), None, "cluster.local", now());
        let ready = crate::api::find_condition(&st.conditions, "Ready").unwrap();
        assert_eq!(ready.reason, expected, "{phase} {reason:?}");
        assert_eq!(st.pod_name.as_deref(), Some("sbx"), "{phase} {reason:?}");
        assert_eq!(
            (st.pod_ip, st.pod_ips, st.replicas),
            (None, None, 0),
            "{phase} {reason:?}"
        );
    }
    // A Pod that is terminating but still runs holds its IP until it stops.
    let p = with_status("Running", None, true);
    let st = compute_status(&s, Some(&p), None, "cluster.local", now());
    assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.9"));
}

/// The template check does not trust the stored status: a
/// `PodTemplateApplied=False` someone removed (through the status
/// subresource) at the same generation, for the same Pod, comes back.
/// Before (found by review), the check was skipped then, and the condition
/// never came back.
#[test]
fn a_removed_template_condition_comes_back() {
    use crate::api::{POD_TEMPLATE_APPLIED, find_condition};
    let mut s = sandbox();
    s.metadata.generation = Some(1);
    let spec = s.spec.pod_template.spec.clone();
    let mut p = desired_pod(&s, spec, None).unwrap();
    p.status = Some(crate::controller::test_pod::ready_status());
    s.status = Some(compute_status(&s, Some(&p), None, "cluster.local", now()));
    s.metadata.generation = Some(2);
    s.spec.pod_template.spec.containers[0].image = Some("i:2".into());
    let mut st = compute_status(&s, Some(&p), None, "cluster.local", now());
    assert!(find_condition(&st.conditions, POD_TEMPLATE_APPLIED).is_some());
    // Stripped from the stored status, Ready left at this generation.
    st.conditions.retain(|c| c.type_ != POD_TEMPLATE_APPLIED);
    s.status = Some(st);
    let st = compute_status(&s, Some(&p), None, "cluster.local", now());
    let c = find_condition(&st.conditions, POD_TEMPLATE_APPLIED).expect("reported again");
    assert_eq!(c.reason, reason::POD_TEMPLATE_CHANGED);
}

/// The Pod a create found under the Sandbox's name (after a restart, say)
/// is used as read, status included, when the Sandbox controls it; not
/// otherwise. Before (found by review), the desired Pod (no status) was
/// used: a Ready Pod was reported PodPending with no IP.
#[test]
fn a_pod_found_by_a_create_is_reported_as_read_if_ours() {
    use crate::controller::Created;
    let s = sandbox();
    let mut found = (*pod("sbx", Some("sbx-uid"))).clone();
    found.status = Some(k8s_openapi::api::core::v1::PodStatus {
        pod_ip: Some("10.0.0.9".into()),
        ..crate::controller::test_pod::ready_status()
    });
    let used = super::act::created_pod(&s, Created::Existing(found.clone())).unwrap();
    let st = compute_status(&s, Some(&used), None, "cluster.local", now());
    assert!(crate::api::is_true(&st.conditions, "Ready"));
    assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.9"));
    // Controlled by anything else: never used.
    let mut foreign = found;
    foreign.metadata.owner_references = owned_by("claim-uid");
    assert!(super::act::created_pod(&s, Created::Existing(foreign.clone())).is_err());
    assert!(super::act::created_pod(&s, Created::New(foreign)).is_err());
}
