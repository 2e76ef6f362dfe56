//! Unit tests of the claim's pure parts.
use super::*;
use crate::api::reason;
use crate::api::{
    ADMITTED_AT_ANNOTATION, POD_NAME_ANNOTATION, SANDBOX_LABEL, SandboxClaimSpec, SandboxSpec,
    SandboxStatus, SandboxTemplate, SandboxTemplateRef, SandboxTemplateSpec,
};
use crate::controller::sandbox::compute_status;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

fn claim(warm_pool: Option<&str>) -> SandboxClaim {
    let mut c = SandboxClaim::new(
        "c1",
        SandboxClaimSpec {
            sandbox_template_ref: SandboxTemplateRef { name: "t".into() },
            lifecycle: None,
            warm_pool: warm_pool.map(Into::into),
        },
    );
    c.metadata.namespace = Some("ns".into());
    c.metadata.uid = Some("claim-uid".into());
    c
}

#[test]
fn pool_choice_follows_the_v01_field() {
    assert_eq!(pool_choice(&claim(None)), PoolChoice::Any);
    assert_eq!(pool_choice(&claim(Some("default"))), PoolChoice::Any);
    assert_eq!(pool_choice(&claim(Some("none"))), PoolChoice::None);
    assert_eq!(
        pool_choice(&claim(Some("fast"))),
        PoolChoice::Named("fast".into())
    );
}

#[test]
fn sandbox_is_owned_by_the_claim_and_annotated_only_when_warm() {
    let template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
    let warm = desired_sandbox(&claim(None), &template, Some("pod-1")).unwrap();
    assert_eq!(
        warm.annotations()
            .get(POD_NAME_ANNOTATION)
            .map(String::as_str),
        Some("pod-1")
    );
    assert_eq!(
        warm.metadata.owner_references.as_ref().unwrap()[0].uid,
        "claim-uid"
    );
    assert_eq!(warm.name_any(), "c1");
    let cold = desired_sandbox(&claim(None), &template, None).unwrap();
    assert!(cold.annotations().get(POD_NAME_ANNOTATION).is_none());
}

#[test]
fn network_policy_denies_all_ingress_by_default() {
    let template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
    let np =
        desired_network_policy(&claim(None), template.spec.network_policy.as_ref(), &[]).unwrap();
    let spec = np.spec.unwrap();
    assert_eq!(spec.ingress, Some(vec![]));
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()[SANDBOX_LABEL],
        "c1"
    );
}

#[test]
fn status_mirrors_sandbox_and_records_launch_type_once() {
    let c = claim(None);
    let mut s = Sandbox::new("c1", SandboxSpec::default());
    s.annotations_mut()
        .insert(POD_NAME_ANNOTATION.into(), "warm-1".into());
    s.status = Some(SandboxStatus {
        pod_name: Some("warm-1".into()),
        conditions: vec![Condition {
            type_: READY.into(),
            status: "True".into(),
            reason: "PodReady".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }],
        ..Default::default()
    });
    let now = jiff::Timestamp::from_second(100).unwrap();
    let st = mirror_status(&c, &s, now);
    assert_eq!(st.launch_type, Some(LaunchType::Warm));
    assert!(is_true(&st.conditions, READY));
    assert_eq!(st.ready_time, Some(Time(now)));
    let mut c2 = c.clone();
    c2.status = Some(st.clone());
    let later = mirror_status(&c2, &s, jiff::Timestamp::from_second(200).unwrap());
    assert_eq!(later, st, "a second reconcile changes nothing");
}

#[test]
fn admitted_at_prefers_the_webhook_stamp() {
    let mut c = claim(None);
    c.annotations_mut().insert(
        ADMITTED_AT_ANNOTATION.into(),
        "2026-01-01T00:00:00.123456789Z".into(),
    );
    assert_eq!(admitted_at(&c).unwrap().subsec_nanosecond(), 123_456_789);
}

fn ready_pod(name: &str) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.into());
    pod.metadata.namespace = Some("ns".into());
    pod.status = Some(PodStatus {
        pod_ip: Some("10.0.0.7".into()),
        ..crate::controller::test_pod::ready_status()
    });
    pod
}

#[test]
fn warm_ready_write_carries_every_connection_fact() {
    let mut c = claim(None);
    c.annotations_mut()
        .insert(ADMITTED_AT_ANNOTATION.into(), "2026-01-01T00:00:00Z".into());
    let now = jiff::Timestamp::from_second(1_767_225_600 + 2).unwrap();
    let st = warm_ready_status(
        &c,
        &ready_pod("pool-abc"),
        Some("pool".into()),
        "cluster.local",
        now,
    );
    assert!(is_true(&st.conditions, READY));
    let sandbox = st.sandbox.clone().unwrap();
    assert_eq!(sandbox.name.as_deref(), Some("c1"));
    assert_eq!(sandbox.pod_ips, Some(vec!["10.0.0.7".to_string()]));
    assert_eq!(sandbox.service.as_deref(), Some("c1"));
    assert_eq!(
        sandbox.service_fqdn.as_deref(),
        Some("c1.ns.svc.cluster.local")
    );
    assert_eq!(st.pod_name.as_deref(), Some("pool-abc"));
    assert_eq!(st.launch_type, Some(LaunchType::Warm));
    assert_eq!(st.warm_pool.as_deref(), Some("pool"));
    assert_eq!(st.time_to_ready_seconds, Some(2.0));
}

#[test]
fn the_sandbox_catching_up_costs_no_second_claim_write() {
    let mut c = claim(None);
    let pod = ready_pod("pool-abc");
    let t0 = jiff::Timestamp::from_second(100).unwrap();
    let st = warm_ready_status(&c, &pod, Some("pool".into()), "cluster.local", t0);
    c.status = Some(st.clone());

    // The Sandbox as created, before its controller wrote anything.
    let mut s = Sandbox::new("c1", SandboxSpec::default());
    s.metadata.namespace = Some("ns".into());
    s.annotations_mut()
        .insert(POD_NAME_ANNOTATION.into(), "pool-abc".into());
    let t1 = jiff::Timestamp::from_second(101).unwrap();
    assert_eq!(
        mirror_status(&c, &s, t1),
        st,
        "no status yet: nothing to mirror"
    );

    // Adopting: still settling on the same Pod, the claim stays Ready.
    let adopting = crate::api::ConditionUpdate::ready(false, reason::ADOPTING, "taking over");
    s.status = Some(compute_status(
        &s,
        None,
        Some(&adopting),
        "cluster.local",
        t1,
    ));
    assert_eq!(mirror_status(&c, &s, t1), st);

    // Ready with the adopted Pod: the mirror computes exactly what was written.
    s.status = Some(compute_status(&s, Some(&pod), None, "cluster.local", t1));
    assert_eq!(
        mirror_status(&c, &s, jiff::Timestamp::from_second(102).unwrap()),
        st
    );

    // A real failure afterwards is reported.
    let mut failed = pod.clone();
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    s.status = Some(compute_status(&s, Some(&failed), None, "cluster.local", t1));
    let after = mirror_status(&c, &s, jiff::Timestamp::from_second(103).unwrap());
    assert!(!is_true(&after.conditions, READY));
}

#[test]
fn a_claim_on_a_starting_pool_pod_says_so_and_stays_cold_until_ready() {
    let mut c = claim(None);
    c.annotations_mut()
        .insert(ADMITTED_AT_ANNOTATION.into(), "2026-01-01T00:00:00Z".into());
    let mut pod = ready_pod("pool-abc");
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
    pod.labels_mut()
        .insert(crate::api::ORIGIN_POOL_LABEL.into(), "pool".into());
    let t0 = jiff::Timestamp::from_second(1_767_225_600 + 1).unwrap();
    let st = starting_status(&c, &pod, "cluster.local", t0);
    let ready = crate::api::find_condition(&st.conditions, READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SandboxNotReady")
    );
    assert!(
        ready
            .message
            .contains("pool-abc of pool pool is still starting"),
        "{}",
        ready.message
    );
    assert_eq!(st.launch_type, Some(LaunchType::Cold));
    assert_eq!(st.pod_name.as_deref(), Some("pool-abc"));
    assert_eq!(st.warm_pool.as_deref(), Some("pool"));
    assert_eq!(
        st.sandbox.as_ref().unwrap().service_fqdn.as_deref(),
        Some("c1.ns.svc.cluster.local")
    );
    assert!(st.ready_time.is_none() && st.time_to_ready_seconds.is_none());
    c.status = Some(st.clone());

    // The Sandbox as created, then adopting: nothing new to say, no write.
    let mut s = Sandbox::new("c1", SandboxSpec::default());
    s.metadata.namespace = Some("ns".into());
    s.annotations_mut()
        .insert(POD_NAME_ANNOTATION.into(), "pool-abc".into());
    assert_eq!(mirror_status(&c, &s, t0), st);
    let adopting = crate::api::ConditionUpdate::ready(false, reason::ADOPTING, "taking over");
    s.status = Some(compute_status(
        &s,
        None,
        Some(&adopting),
        "cluster.local",
        t0,
    ));
    assert_eq!(mirror_status(&c, &s, t0), st);

    // Adopted, still starting: the Sandbox's word, still cold.
    s.status = Some(compute_status(&s, Some(&pod), None, "cluster.local", t0));
    let pending = mirror_status(&c, &s, t0);
    assert!(!is_true(&pending.conditions, READY));
    assert_eq!(pending.launch_type, Some(LaunchType::Cold));
    c.status = Some(pending);

    // Ready: cold, timed from admission.
    let t1 = jiff::Timestamp::from_second(1_767_225_600 + 3).unwrap();
    s.status = Some(compute_status(
        &s,
        Some(&ready_pod("pool-abc")),
        None,
        "cluster.local",
        t1,
    ));
    let done = mirror_status(&c, &s, t1);
    assert!(is_true(&done.conditions, READY));
    assert_eq!(done.launch_type, Some(LaunchType::Cold));
    assert_eq!(done.time_to_ready_seconds, Some(3.0));
    assert_eq!(done.warm_pool.as_deref(), Some("pool"));

    // A Sandbox naming that Pod for a claim that never said "starting" is
    // warm, as before.
    let mut warm = claim(None);
    warm.status = None;
    assert_eq!(
        mirror_status(&warm, &s, t1).launch_type,
        Some(LaunchType::Warm)
    );
}

#[test]
fn failures_keep_what_the_claim_showed_and_name_the_reason() {
    let c = claim(None);
    let st = failed_status(
        &c,
        reason::NAME_CONFLICT,
        "Sandbox c1 exists".into(),
        jiff::Timestamp::UNIX_EPOCH,
    );
    let ready = crate::api::find_condition(&st.conditions, READY).unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "NameConflict");
    assert_eq!(ready.message, "Sandbox c1 exists");
}

#[test]
fn template_policy_selects_every_pod_of_the_template_and_denies_ingress() {
    let mut template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
    template.metadata.namespace = Some("ns".into());
    template.metadata.uid = Some("template-uid".into());
    let policy = desired_template_network_policy(&template, &[]).unwrap();
    assert_eq!(policy.name_any(), template_network_policy_name("t"));
    assert_eq!(policy.owner_references()[0].uid, "template-uid");
    let spec = policy.spec.unwrap();
    assert_eq!(spec.ingress, Some(vec![]));
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()[crate::api::TEMPLATE_LABEL],
        "t"
    );
    // The claim's Sandbox carries the template label, for its cold Pod.
    let sandbox = desired_sandbox(&claim(None), &template, None).unwrap();
    assert_eq!(sandbox.labels()[crate::api::TEMPLATE_LABEL], "t");
}

#[test]
fn a_kept_surplus_pod_is_looked_at_within_the_recheck_or_at_an_earlier_expiry() {
    let no_expiry = Requeue { expiry: None };
    assert_eq!(
        no_expiry.within(SURPLUS_RECHECK),
        Action::requeue(SURPLUS_RECHECK)
    );
    let soon = Duration::from_millis(200);
    assert_eq!(
        Requeue { expiry: Some(soon) }.within(SURPLUS_RECHECK),
        Action::requeue(soon)
    );
    let later = Duration::from_secs(3600);
    assert_eq!(
        Requeue {
            expiry: Some(later)
        }
        .within(SURPLUS_RECHECK),
        Action::requeue(SURPLUS_RECHECK)
    );
    // A Ready claim with no expiry otherwise waits for a change.
    assert_eq!(no_expiry.until_ready(true), Action::await_change());
}

#[test]
fn every_requeue_ends_at_the_expiry() {
    let soon = Duration::from_secs(3);
    let expiring = Requeue { expiry: Some(soon) };
    assert_eq!(
        expiring.by_expiry(Action::requeue(Duration::from_secs(60))),
        Action::requeue(soon)
    );
    assert_eq!(
        expiring.by_expiry(Action::await_change()),
        Action::requeue(soon)
    );
    let sooner = Action::requeue(Duration::from_secs(1));
    assert_eq!(expiring.by_expiry(sooner), sooner);
    let no_expiry = Requeue { expiry: None };
    assert_eq!(
        no_expiry.by_expiry(Action::await_change()),
        Action::await_change()
    );
}

/// A claim's Service selects its Pod by the claim's uid too: a Pod left
/// behind by an orphaning delete keeps the name label, never the uid.
#[test]
fn the_claims_service_selects_by_name_and_claim_uid() {
    let template = SandboxTemplate::new("t", SandboxTemplateSpec::default());
    let service = desired_service(&claim(None), &template).unwrap();
    let selector = service.spec.unwrap().selector.unwrap();
    assert_eq!(
        selector,
        std::collections::BTreeMap::from([
            (SANDBOX_LABEL.to_string(), "c1".to_string()),
            (
                crate::api::CLAIM_UID_LABEL.to_string(),
                "claim-uid".to_string()
            ),
        ])
    );
}

/// A named Pod still its pool's is left to a steal that may be in flight
/// for the settle time after the Sandbox's creation; a Pod no pool controls
/// is not waited for.
#[test]
fn a_repair_waits_for_a_steal_in_flight_only_while_it_can_land() {
    use crate::controller::test_pod::{controller, named};
    let created = jiff::Timestamp::from_second(1_000_000).unwrap();
    let mut sandbox = Sandbox::new("c1", SandboxSpec::default());
    sandbox.metadata.creation_timestamp = Some(Time(created));
    let mut pooled = named("p1", "7");
    pooled.metadata.owner_references = Some(vec![controller("SandboxWarmPool", "pool", "pu")]);
    let at = |seconds: i64| created + jiff::SignedDuration::from_secs(seconds);
    let wait = |pod: &Pod, seconds| repair::settling(&sandbox, pod, at(seconds));
    assert_eq!(wait(&pooled, 0), Some(repair::STEAL_SETTLE));
    assert_eq!(wait(&pooled, 50), Some(std::time::Duration::from_secs(10)));
    assert_eq!(
        wait(&pooled, 60 - 1),
        Some(std::time::Duration::from_secs(1)),
        "at least a second"
    );
    assert_eq!(wait(&pooled, 60), None, "the steal can no longer land");
    let mut crashing = pooled.clone();
    crashing.status = Some(
        serde_json::from_value(serde_json::json!({
            "phase": "Running",
            "containerStatuses": [{"name": "c", "ready": false, "restartCount": 3, "image": "i",
                "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
        }))
        .unwrap(),
    );
    assert_eq!(
        wait(&crashing, 0),
        None,
        "no steal lands on a Pod whose start went wrong"
    );
    let mut taken = pooled.clone();
    taken.metadata.owner_references = Some(vec![controller("SandboxClaim", "other", "ou")]);
    assert_eq!(
        wait(&taken, 0),
        None,
        "a Pod someone else holds moves the Sandbox"
    );
    let mut loose = pooled;
    loose.metadata.owner_references = None;
    assert_eq!(wait(&loose, 0), None);
}

/// A warm claim, Ready on `pool-abc`, and its Sandbox Ready on that Pod.
fn ready_warm_claim() -> (SandboxClaim, Sandbox) {
    let mut c = claim(None);
    let pod = ready_pod("pool-abc");
    let t0 = jiff::Timestamp::from_second(100).unwrap();
    c.status = Some(warm_ready_status(
        &c,
        &pod,
        Some("pool".into()),
        "cluster.local",
        t0,
    ));
    let mut s = Sandbox::new("c1", SandboxSpec::default());
    s.metadata.namespace = Some("ns".into());
    s.annotations_mut()
        .insert(POD_NAME_ANNOTATION.into(), "pool-abc".into());
    s.status = Some(compute_status(&s, Some(&pod), None, "cluster.local", t0));
    (c, s)
}

#[test]
fn a_failure_without_a_sandbox_names_no_pod_and_keeps_how_it_was_served() {
    let (c, _) = ready_warm_claim();
    let before = c.status.clone().unwrap();
    let st = failed_without_sandbox(
        &c,
        reason::TEMPLATE_NOT_FOUND,
        "SandboxTemplate t does not exist".into(),
        jiff::Timestamp::from_second(200).unwrap(),
    );
    let ready = crate::api::find_condition(&st.conditions, READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "TemplateNotFound")
    );
    assert!(st.sandbox.is_none() && st.pod_name.is_none(), "{st:?}");
    assert_eq!(st.launch_type, Some(LaunchType::Warm));
    assert_eq!(st.warm_pool.as_deref(), Some("pool"));
    assert_eq!(st.ready_time, before.ready_time);
    assert_eq!(st.time_to_ready_seconds, before.time_to_ready_seconds);
    // A failure while the Sandbox exists keeps what it shows.
    let kept = failed_status(
        &c,
        reason::QUOTA_EXCEEDED,
        "quota".into(),
        jiff::Timestamp::from_second(200).unwrap(),
    );
    assert_eq!(kept.pod_name.as_deref(), Some("pool-abc"));
}

#[test]
fn a_claim_keeps_its_launch_type_once_ready() {
    let (mut c, mut s) = ready_warm_claim();
    let served = c.status.clone().unwrap();
    // Paused: the Pod is gone; resumed: the Sandbox dropped the name and
    // started a Pod of its own.
    let t1 = jiff::Timestamp::from_second(300).unwrap();
    s.annotations_mut().remove(POD_NAME_ANNOTATION);
    let paused = crate::api::ConditionUpdate::ready(false, reason::PAUSED, "paused");
    s.status = Some(compute_status(&s, None, Some(&paused), "cluster.local", t1));
    let st = mirror_status(&c, &s, t1);
    assert!(!is_true(&st.conditions, READY));
    assert_eq!(st.launch_type, Some(LaunchType::Warm));
    c.status = Some(st);
    let mut own = ready_pod("c1");
    own.status.as_mut().unwrap().pod_ip = Some("10.0.0.9".into());
    s.status = Some(compute_status(&s, Some(&own), None, "cluster.local", t1));
    let st = mirror_status(&c, &s, t1);
    assert!(is_true(&st.conditions, READY));
    assert_eq!(st.pod_name.as_deref(), Some("c1"));
    assert_eq!(st.launch_type, Some(LaunchType::Warm), "{st:?}");
    assert_eq!(st.warm_pool.as_deref(), Some("pool"));
    assert_eq!(st.ready_time, served.ready_time);
    assert_eq!(st.time_to_ready_seconds, served.time_to_ready_seconds);

    // Served again after its Sandbox was deleted: still how it was first.
    let mut again = claim(None);
    again.status = Some(st);
    let pod = ready_pod("pool-xyz");
    let warm = warm_ready_status(&again, &pod, Some("other".into()), "cluster.local", t1);
    assert_eq!(
        (warm.launch_type, warm.warm_pool.as_deref()),
        (Some(LaunchType::Warm), Some("pool"))
    );
    let mut starting = pod.clone();
    starting.status = Some(PodStatus::default());
    let st = starting_status(&again, &starting, "cluster.local", t1);
    assert_eq!(
        (st.launch_type, st.warm_pool.as_deref()),
        (Some(LaunchType::Warm), Some("pool"))
    );
}

#[test]
fn a_sandbox_being_deleted_makes_its_claim_not_ready_with_no_pod() {
    let (c, mut s) = ready_warm_claim();
    let t1 = jiff::Timestamp::from_second(300).unwrap();
    assert_eq!(mirror_status(&c, &s, t1), c.status.clone().unwrap());
    s.metadata.deletion_timestamp = Some(Time(t1));
    let st = mirror_status(&c, &s, t1);
    let ready = crate::api::find_condition(&st.conditions, READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SandboxNotReady")
    );
    assert!(ready.message.contains("being deleted"), "{}", ready.message);
    assert!(st.pod_name.is_none(), "{st:?}");
    let sandbox = st.sandbox.clone().unwrap();
    assert_eq!(sandbox.name.as_deref(), Some("c1"));
    assert!(sandbox.pod_ips.is_none() && sandbox.service_fqdn.is_none());
    assert_eq!(st.launch_type, Some(LaunchType::Warm));
}
