//! The no-double-assignment check, as a pure function of what the bench
//! saw: every claim state its claim watch delivered during the run (claim
//! uid, the Pod its status names, Ready or not), then the claims and Pods
//! listed at the end.
//!
//! Flagged:
//! - a Pod named by two different claims (by uid) at any moment of the run;
//! - a claim whose Pod changed after it said Ready (it names another Pod
//!   than the one it was Ready on);
//! - at the end, a Ready claim that names no Pod, whose Pod is gone or
//!   terminating, or whose Pod does not carry its `agents.x-k8s.io/claim-uid`
//!   label (the Pod serves another claim, or none);
//! - at the end, a live Pod that carries both the pool label and a claim label
//!   (taken, yet still offered as idle).
//!
//! A claim's status names its Pod by name only (no uid): names identify
//! Pods here because pool Pods have generated names and a claim's own Pod
//! is named after its claim, which is never reused within a run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One state of a claim as the watch delivered it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sighting {
    pub claim_uid: String,
    pub claim: String,
    pub pod: Option<String>,
    pub ready: bool,
}

/// A Pod as listed at the end.
#[derive(Clone, Debug, Default)]
pub struct EndPod {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub terminating: bool,
}

#[derive(Default)]
struct Track {
    name: String,
    /// The Pod the claim named when first seen Ready.
    ready_on: Option<String>,
    /// Flagged already (once per claim).
    changed: bool,
}

/// Everything seen so far, and what it broke.
#[derive(Default)]
pub struct History {
    claims: HashMap<String, Track>,
    /// Pod name -> uid -> name of each claim that named it.
    pods: BTreeMap<String, BTreeMap<String, String>>,
    changes: Vec<String>,
}

impl History {
    /// Records one claim state; a change of Pod after Ready is noted at once.
    pub fn observe(&mut self, s: &Sighting) {
        let track = self.claims.entry(s.claim_uid.clone()).or_default();
        track.name = s.claim.clone();
        if let Some(pod) = &s.pod {
            self.pods
                .entry(pod.clone())
                .or_default()
                .insert(s.claim_uid.clone(), s.claim.clone());
            match &track.ready_on {
                Some(before) if before != pod && !track.changed => {
                    track.changed = true;
                    self.changes.push(format!(
                        "claim {} (uid {}) was Ready on Pod {before}, then named Pod {pod}",
                        s.claim, s.claim_uid
                    ));
                }
                None if s.ready => track.ready_on = Some(pod.clone()),
                _ => {}
            }
        }
    }

    /// Every violation, the end state (`claims` as listed, observed too;
    /// `pods`) included; empty when none.
    pub fn violations(
        &mut self,
        claims: &[Sighting],
        pods: &[EndPod],
        (pool_label, claim_label, claim_uid_label): (&str, &str, &str),
    ) -> Vec<String> {
        for c in claims {
            self.observe(c);
        }
        let mut out = Vec::new();
        for (pod, by) in &self.pods {
            if by.len() > 1 {
                let names: BTreeSet<String> = by
                    .iter()
                    .map(|(uid, n)| format!("{n} (uid {uid})"))
                    .collect();
                out.push(format!(
                    "Pod {pod} was named by {} claims: {}",
                    by.len(),
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        out.extend(self.changes.iter().cloned());
        let live: HashMap<&str, &EndPod> = pods
            .iter()
            .filter(|p| !p.terminating)
            .map(|p| (p.name.as_str(), p))
            .collect();
        for c in claims.iter().filter(|c| c.ready) {
            let Some(pod) = &c.pod else {
                out.push(format!("claim {} is Ready but names no Pod", c.claim));
                continue;
            };
            match live.get(pod.as_str()) {
                None => out.push(format!(
                    "claim {} is Ready on Pod {pod}, which is gone or terminating",
                    c.claim
                )),
                Some(p) => {
                    let label = p.labels.get(claim_uid_label);
                    if label != Some(&c.claim_uid) {
                        out.push(format!(
                            "claim {} (uid {}) is Ready on Pod {pod}, whose {claim_uid_label} label is {label:?}",
                            c.claim, c.claim_uid
                        ));
                    }
                }
            }
        }
        for p in live.values() {
            if p.labels.contains_key(pool_label) && p.labels.contains_key(claim_label) {
                out.push(format!(
                    "Pod {} carries both {pool_label} and {claim_label}",
                    p.name
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: (&str, &str, &str) = ("pool", "claim", "claim-uid");

    fn seen(uid: &str, pod: Option<&str>, ready: bool) -> Sighting {
        Sighting {
            claim_uid: uid.into(),
            claim: format!("name-{uid}"),
            pod: pod.map(String::from),
            ready,
        }
    }

    fn pod(name: &str, labels: &[(&str, &str)]) -> EndPod {
        EndPod {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminating: false,
        }
    }

    /// Two claims served by their own Pods, seen through their steps.
    fn clean() -> (History, Vec<Sighting>, Vec<EndPod>) {
        let mut h = History::default();
        for s in [
            seen("u1", None, false),
            seen("u2", None, false),
            seen("u1", Some("pool-a"), false),
            seen("u1", Some("pool-a"), true),
            seen("u2", Some("pool-b"), true),
            seen("u1", Some("pool-a"), true),
        ] {
            h.observe(&s);
        }
        let end = vec![
            seen("u1", Some("pool-a"), true),
            seen("u2", Some("pool-b"), true),
        ];
        let pods = vec![
            pod("pool-a", &[("claim", "name-u1"), ("claim-uid", "u1")]),
            pod("pool-b", &[("claim", "name-u2"), ("claim-uid", "u2")]),
            pod("pool-c", &[("pool", "bench")]),
        ];
        (h, end, pods)
    }

    #[test]
    fn a_clean_run_has_no_violation() {
        let (mut h, end, pods) = clean();
        assert_eq!(h.violations(&end, &pods, LABELS), Vec::<String>::new());
    }

    #[test]
    fn a_pod_named_by_two_claims_during_the_run_is_flagged_though_the_end_is_clean() {
        let (_, end, pods) = clean();
        // u2 named pool-a for a while (two claims on one Pod) before it was
        // Ready on pool-b: the end state alone shows nothing.
        let mut h = History::default();
        for s in [
            seen("u1", Some("pool-a"), true),
            seen("u2", Some("pool-a"), false),
            seen("u2", Some("pool-b"), true),
        ] {
            h.observe(&s);
        }
        let v = h.violations(&end, &pods, LABELS);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].starts_with(
                "Pod pool-a was named by 2 claims: name-u1 (uid u1), name-u2 (uid u2)"
            ),
            "{v:?}"
        );
    }

    #[test]
    fn a_pod_that_changed_after_ready_is_flagged_once() {
        let (mut h, _, pods) = clean();
        h.observe(&seen("u1", Some("pool-c"), true));
        h.observe(&seen("u1", Some("pool-d"), true));
        let end = vec![
            seen("u1", Some("pool-a"), true),
            seen("u2", Some("pool-b"), true),
        ];
        let v = h.violations(&end, &pods, LABELS);
        let changes: Vec<_> = v
            .iter()
            .filter(|m| m.contains("was Ready on Pod pool-a"))
            .collect();
        assert_eq!(changes.len(), 1, "{v:?}");
    }

    #[test]
    fn a_pod_named_before_ready_may_change_without_a_flag() {
        // Not Ready yet on pool-x, then Ready on pool-a: no Pod was shared.
        let mut h = History::default();
        h.observe(&seen("u1", Some("pool-x"), false));
        let end = vec![seen("u1", Some("pool-a"), true)];
        let pods = vec![pod("pool-a", &[("claim-uid", "u1")])];
        assert!(h.violations(&end, &pods, LABELS).is_empty());
    }

    #[test]
    fn at_the_end_a_ready_claim_s_pod_must_exist_and_carry_its_uid() {
        let (mut h, end, mut pods) = clean();
        pods[1]
            .labels
            .insert("claim-uid".into(), "someone-else".into());
        let v = h.violations(&end, &pods, LABELS);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("claim name-u2 (uid u2) is Ready on Pod pool-b"),
            "{v:?}"
        );

        let (mut h, end, mut pods) = clean();
        pods.remove(0);
        let v = h.violations(&end, &pods, LABELS);
        assert_eq!(
            v,
            vec!["claim name-u1 is Ready on Pod pool-a, which is gone or terminating"]
        );

        let (mut h, mut end, pods) = clean();
        end[0].pod = None;
        let v = h.violations(&end, &pods, LABELS);
        assert_eq!(v, vec!["claim name-u1 is Ready but names no Pod"]);
    }

    #[test]
    fn a_taken_pod_still_offered_by_the_pool_is_flagged() {
        let (mut h, end, mut pods) = clean();
        pods[0].labels.insert("pool".into(), "bench".into());
        let v = h.violations(&end, &pods, LABELS);
        assert_eq!(v, vec!["Pod pool-a carries both pool and claim"]);
        // A terminating one is on its way out.
        let (mut h, end, mut pods) = clean();
        pods[0].labels.insert("pool".into(), "bench".into());
        pods[0].terminating = true;
        assert_eq!(
            h.violations(&end, &pods, LABELS).len(),
            1,
            "its claim lost it"
        );
    }
}
