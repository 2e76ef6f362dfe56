//! Unit tests of the pool member counts kept per watch event.
use super::*;
use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn key() -> GroupKey {
    ("ns".into(), "pool".into(), "pool-uid".into())
}

fn member(ready: bool, terminating: bool, ended: bool, hash: &str) -> Member {
    Member {
        uid: "u".into(),
        resource_version: "1".into(),
        ready,
        terminating,
        ended,
        template: Some("t".into()),
        hash: Some(hash.into()),
        created: None,
        unschedulable: None,
        created_at: None,
        ever_ready: false,
    }
}

/// The counts recomputed by a pass over all members: what the running
/// counts must always equal (`hash` is a [`current_key`]).
fn brute(members: &HashMap<String, Member>, hash: &str, excluded: &HashSet<String>) -> PoolCounts {
    let live: Vec<&Member> = members
        .iter()
        .filter(|(n, m)| m.live() && !excluded.contains(*n))
        .map(|(_, m)| m)
        .collect();
    let current: Vec<&&Member> = live
        .iter()
        .filter(|m| {
            !m.ended
                && m.template.is_some()
                && m.hash.is_some()
                && format!(
                    "{}/{}",
                    m.template.as_deref().unwrap(),
                    m.hash.as_deref().unwrap()
                ) == hash
        })
        .collect();
    let stuck: BTreeMap<&String, &String> = members
        .iter()
        .filter_map(|(n, m)| Some((n, m.unschedulable.as_ref()?)))
        .collect();
    PoolCounts {
        idle: live.len(),
        current: current.len(),
        ready: current.iter().filter(|m| m.ready).count(),
        members: members.len(),
        unschedulable: stuck.len(),
        unschedulable_example: stuck
            .iter()
            .next()
            .map(|(n, m)| ((*n).clone(), (*m).clone())),
    }
}

#[test]
fn running_counts_equal_a_full_pass_after_any_sequence_of_events() {
    let mut groups = Groups::default();
    let mut truth: HashMap<String, Member> = HashMap::new();
    // A deterministic pseudo-random walk over 12 Pods and 2000 events.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let r = next();
        let name = format!("p{}", r % 12);
        if r % 7 == 0 {
            assert_eq!(groups.take(&key(), &name), truth.remove(&name).is_some());
        } else {
            let mut m = member(
                r & 0x100 != 0,
                r & 0x200 != 0,
                r & 0x400 != 0,
                if r & 0x800 != 0 { "h1" } else { "h2" },
            );
            m.unschedulable = (r & 0x1000 != 0).then(|| format!("msg {name}"));
            // Another template of the same pod template (same hash), or
            // none: never current for template `t`.
            m.template = match r & 0x6000 {
                0x2000 => Some("u".into()),
                0x4000 => None,
                _ => Some("t".into()),
            };
            groups.put(&key(), &name, m.clone());
            truth.insert(name, m);
        }
        let excluded: HashSet<String> = [format!("p{}", next() % 12)].into();
        for hash in ["t/h1", "t/h2", "u/h1", "h1"] {
            assert_eq!(
                groups.counts(&key(), hash, &excluded),
                brute(&truth, hash, &excluded)
            );
        }
        assert_eq!(
            groups.live_members(&key(), &excluded).len(),
            brute(&truth, "h1", &excluded).idle
        );
    }
}

#[test]
fn only_decision_changes_wake_the_pool() {
    let mut groups = Groups::default();
    assert!(
        groups.put(&key(), "a", member(false, false, false, "h")),
        "new member"
    );
    let mut newer = member(false, false, false, "h");
    newer.resource_version = "2".into();
    assert!(!groups.put(&key(), "a", newer), "resourceVersion alone");
    assert!(
        groups.put(&key(), "a", member(true, false, false, "h")),
        "turned Ready"
    );
    assert!(
        groups.put(&key(), "a", member(true, true, false, "h")),
        "terminating"
    );
    let mut renamed = member(true, true, false, "h");
    renamed.template = Some("other".into());
    assert!(
        groups.put(&key(), "a", renamed),
        "another template label: current no more"
    );
    assert!(groups.take(&key(), "a"));
    assert!(!groups.take(&key(), "a"), "not a member any more");
    assert_eq!(groups.sizes().0, 0, "an empty group is dropped");
}

#[test]
fn a_member_of_another_template_with_the_same_hash_is_not_current() {
    // Pool pointed from template `a` to `b`, a copy of it (same hash): the
    // Pods labelled `a` serve no claim of `b`, so they are outdated.
    let mut groups = Groups::default();
    let mut of_a = member(true, false, false, "h");
    of_a.template = Some("a".into());
    groups.put(&key(), "x", of_a.clone());
    let mut of_b = of_a.clone();
    of_b.template = Some("b".into());
    groups.put(&key(), "y", of_b.clone());
    let none = HashSet::new();
    let counts = groups.counts(&key(), &current_key("b", "h"), &none);
    assert_eq!((counts.idle, counts.current, counts.ready), (2, 1, 1));
    assert!(of_b.is_current(&current_key("b", "h")));
    assert!(!of_a.is_current(&current_key("b", "h")));
    assert!(!of_b.is_current(&current_key("b", "h2")));
    assert!(!of_b.is_current("b"), "a key without a hash");
    // A pending delete of the current one leaves it out.
    let excluded: HashSet<String> = ["y".to_string()].into();
    let counts = groups.counts(&key(), &current_key("b", "h"), &excluded);
    assert_eq!((counts.idle, counts.current, counts.ready), (1, 0, 0));
}

#[test]
fn a_member_turning_ready_is_queued_once_as_a_refill() {
    let mut groups = Groups::default();
    // First seen already Ready (e.g. at start-up): not a refill we saw.
    groups.put(&key(), "old", member(true, false, false, "h"));
    let mut starting = member(false, false, false, "h");
    starting.uid = "new-uid".into();
    groups.put(&key(), "new", starting.clone());
    let mut ready = starting.clone();
    ready.ready = true;
    groups.put(&key(), "new", ready.clone());
    groups.put(&key(), "new", ready);
    let refills = groups.take_refills("ns", "pool");
    assert_eq!(refills.len(), 1);
    assert_eq!(refills[0].uid, "new-uid");
    assert!(groups.take_refills("ns", "pool").is_empty(), "drained");
    assert_eq!(groups.retain_refills(|_, _| false), 0);
}

#[test]
fn a_member_ready_again_after_a_flap_is_no_refill() {
    let mut groups = Groups::default();
    let mut pod = member(false, false, false, "h");
    pod.uid = "flapping".into();
    for ready in [false, true, false, true, false, true] {
        let mut seen = pod.clone();
        seen.ready = ready;
        groups.put(&key(), "p", seen);
    }
    assert_eq!(
        groups.take_refills("ns", "pool").len(),
        1,
        "only the first turn to Ready is a refill"
    );
}

fn pod(labels: &[(&str, &str)], owner: &str, ready: bool) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("p".into());
    p.metadata.namespace = Some("ns".into());
    p.metadata.uid = Some("pod-uid".into());
    p.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(5).unwrap()));
    p.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    p.metadata.annotations = Some(
        [(
            CREATED_AT_ANNOTATION.to_string(),
            "1970-01-01T00:00:04Z".to_string(),
        )]
        .into(),
    );
    p.metadata.owner_references = Some(vec![crate::controller::test_pod::controller(
        "SandboxWarmPool",
        "pool",
        owner,
    )]);
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![
            PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            },
            PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/1 nodes are available".into()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    });
    p
}

#[test]
fn a_pod_is_grouped_by_namespace_pool_label_and_controller_uid() {
    let p = pod(
        &[(POOL_LABEL, "pool"), (TEMPLATE_HASH_LABEL, "h")],
        "pool-uid",
        true,
    );
    let (group, m) = Member::of(&p).unwrap();
    assert_eq!(group, key());
    assert!(m.ready && !m.terminating && !m.ended);
    assert_eq!(m.hash.as_deref(), Some("h"));
    assert_eq!(m.template, None, "no template label");
    assert_eq!(m.unschedulable.as_deref(), Some("0/1 nodes are available"));
    assert_eq!(m.created_at, Some(jiff::Timestamp::from_second(4).unwrap()));
    // No pool label (stolen): no group, whatever its owner.
    assert!(Member::of(&pod(&[], "pool-uid", true)).is_none());
    // Labelled for the pool but controlled by something else: another group.
    let (other, _) = Member::of(&pod(&[(POOL_LABEL, "pool")], "someone", true)).unwrap();
    assert_ne!(other, key());
}

#[test]
fn a_replacement_starts_until_it_has_been_ready_even_if_it_ended() {
    let mut groups = Groups::default();
    let current = current_key("t", "h1");
    groups.put(&key(), "starting", member(false, false, false, "h1"));
    groups.put(&key(), "exited", member(false, false, true, "h1"));
    groups.put(&key(), "ready", member(true, false, false, "h1"));
    groups.put(&key(), "old", member(false, false, false, "h0"));
    groups.put(&key(), "going", member(false, true, false, "h1"));
    // Ready once, then not: it served its turn in the batch.
    groups.put(&key(), "was-ready", member(true, false, false, "h1"));
    groups.put(&key(), "was-ready", member(false, false, false, "h1"));
    let starting = |name: &str| groups.is_starting(&key(), name, &current);
    assert!(starting("starting"));
    assert!(starting("exited"), "an exited replacement holds its place");
    for name in ["ready", "old", "going", "was-ready", "unknown"] {
        assert!(!starting(name), "{name}");
    }
}
