//! Choosing and taking over idle warm Pods.
//!
//! Candidate selection is a pure function over the Pod cache
//! ([`select_candidates`]). Two reconciles of this process never pick the same
//! candidate because each pick is recorded in [`Reservations`] before the
//! write (a claim's repair steals the Pod its Sandbox names whatever the
//! reservations say: see `claim::repair`); two processes may pick the same
//! Pod, and then the API server's resourceVersion precondition in
//! [`steal_patch`] lets exactly one win, whoever picked it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use serde_json::json;

use super::reservations::Reservations;
use super::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, is_terminating, pod_is_ready};
use crate::api::{
    CLAIM_LABEL, CLAIM_UID_LABEL, ORIGIN_POOL_LABEL, POOL_LABEL, SANDBOX_LABEL, SANDBOX_UID_LABEL,
    TEMPLATE_HASH_LABEL, TEMPLATE_LABEL,
};

/// What makes an idle Pod usable for a claim.
#[derive(Clone, Debug)]
pub struct Criteria<'a> {
    /// Namespace of the claim.
    pub namespace: &'a str,
    /// Template the claim asks for.
    pub template: &'a str,
    /// Current hash of that template; Pods of older hashes are not served.
    pub template_hash: &'a str,
    /// Restrict to one pool (the claim's `warmpool` names one).
    pub pool: Option<&'a str>,
    /// Uid of each live pool of the namespace made from `template`, by name
    /// (from the pool cache): a Pod is a candidate only if its controller
    /// ownerReference is the pool its label names, with that uid. Labels
    /// alone never qualify a Pod, nor put it in another template's pool.
    pub pool_uids: &'a HashMap<String, String>,
    /// Spreads the choice: claims hash Pods differently, so concurrent claims
    /// (in this or another process) rarely race for the same Pod.
    pub spread_key: &'a str,
}

/// Whether `pod` is an idle, Ready, current Pod matching `criteria`, and
/// controlled by the live pool its label names.
pub fn is_candidate(pod: &Pod, criteria: &Criteria<'_>) -> bool {
    is_idle_member(pod, criteria) && pod_is_ready(pod)
}

/// Whether `pod` is an idle, current Pod matching `criteria`, controlled by
/// the live pool its label names, that is still starting: not Ready, not
/// ended, not reported Unschedulable, and with no sign that its start went
/// wrong ([`start_went_wrong`]).
/// A claim takes such a Pod only when no idle Pod is Ready: it is further
/// along than a Pod started for the claim from nothing would be.
pub fn is_starting_candidate(pod: &Pod, criteria: &Criteria<'_>) -> bool {
    is_idle_member(pod, criteria)
        && !pod_is_ready(pod)
        && !super::pod_has_ended(pod)
        && super::warmpool::members::unschedulable_message(pod).is_none()
        && !start_went_wrong(pod)
}

/// Whether a container of `pod` (init containers included) restarted, or
/// waits on an error a retry rarely cures (an image that cannot be pulled,
/// a configuration that cannot be built, a crash loop). A claim does not
/// wait on such a start; its own cold Pod may land better. Pure.
pub fn start_went_wrong(pod: &Pod) -> bool {
    const STUCK: [&str; 6] = [
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    ];
    let Some(status) = &pod.status else {
        return false;
    };
    let containers = status.container_statuses.iter().flatten();
    let inits = status.init_container_statuses.iter().flatten();
    containers.chain(inits).any(|c| {
        c.restart_count > 0
            || c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                .is_some_and(|r| STUCK.contains(&r))
    })
}

/// What both kinds of candidate share: an idle, current Pod matching
/// `criteria`, controlled by the live pool its label names, not
/// terminating.
fn is_idle_member(pod: &Pod, criteria: &Criteria<'_>) -> bool {
    let labels = pod.labels();
    let Some(pool) = labels.get(POOL_LABEL) else {
        return false;
    };
    let owned_by_pool =
        super::ownership::controller_of_kind(pod.owner_references(), "SandboxWarmPool")
            .is_some_and(|o| o.name == *pool && criteria.pool_uids.get(pool) == Some(&o.uid));
    owned_by_pool
        && pod.namespace().as_deref() == Some(criteria.namespace)
        && criteria.pool.is_none_or(|p| p == pool)
        && labels.get(TEMPLATE_LABEL).map(String::as_str) == Some(criteria.template)
        && labels.get(TEMPLATE_HASH_LABEL).map(String::as_str) == Some(criteria.template_hash)
        && !labels.contains_key(CLAIM_LABEL)
        && !is_terminating(pod)
}

/// The usable Pods for a claim, best first, skipping reserved ones.
///
/// The order is a per-claim hash of the Pod uid (rendezvous hashing): stable
/// for one claim, different between claims, so a burst of claims fans out
/// over the pool instead of all racing for the oldest Pod.
pub fn select_candidates<'p>(
    pods: impl IntoIterator<Item = &'p Arc<Pod>>,
    criteria: &Criteria<'_>,
    reservations: &Reservations,
) -> Vec<Arc<Pod>> {
    let mut found: Vec<(u64, Arc<Pod>)> = pods
        .into_iter()
        .filter(|pod| is_candidate(pod, criteria))
        .filter(|pod| !reservations.is_reserved(&pod_key(pod)))
        .map(|pod| (spread(criteria.spread_key, pod), Arc::clone(pod)))
        .collect();
    found.sort_unstable_by_key(|(rank, _)| *rank);
    found.into_iter().map(|(_, pod)| pod).collect()
}

/// The starting Pods a claim may take when no idle Pod is Ready
/// ([`is_starting_candidate`]), skipping reserved ones: those already on a
/// node first, then the oldest first (the furthest along is likely the
/// first Ready). Concurrent claims of one
/// process take different ones (each reserves its pick); two processes may
/// pick the same, and the steal's precondition lets one win.
pub fn select_starting<'p>(
    pods: impl IntoIterator<Item = &'p Arc<Pod>>,
    criteria: &Criteria<'_>,
    reservations: &Reservations,
) -> Vec<Arc<Pod>> {
    let mut found: Vec<Arc<Pod>> = pods
        .into_iter()
        .filter(|pod| is_starting_candidate(pod, criteria))
        .filter(|pod| !reservations.is_reserved(&pod_key(pod)))
        .cloned()
        .collect();
    found.sort_by(|a, b| {
        let unplaced = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none();
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        unplaced(a)
            .cmp(&unplaced(b))
            .then_with(|| created(a).cmp(&created(b)))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    found
}

fn spread(key: &str, pod: &Pod) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    pod.metadata.uid.hash(&mut hasher);
    hasher.finish()
}

/// `namespace/name` of a Pod.
pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The JSON patch that hands an idle pool Pod to a claim.
///
/// Guarantee: the first operation tests `metadata.resourceVersion` against
/// the version that was read, so the API server applies the patch only if
/// nobody changed the Pod since (otherwise it answers 409/422 and nothing is
/// written). Of any number of concurrent steals of one Pod, at most one wins.
/// The patch makes the claim the controller owner, removes the pool label
/// (the Pod leaves the pool, which triggers the refill), and adds the claim
/// and sandbox labels (the Sandbox is named after the claim, so its Service
/// and the claim's NetworkPolicy select the Pod from this moment on).
pub fn steal_patch(
    pod: &Pod,
    claim_name: &str,
    claim_uid: &str,
    owner: OwnerReference,
) -> Option<json_patch::Patch> {
    let resource_version = pod.resource_version()?;
    let pool = pod.labels().get(POOL_LABEL)?.clone();
    let ops = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "add", "path": "/metadata/ownerReferences", "value": [owner]},
        {"op": "remove", "path": label_path(POOL_LABEL)},
        {"op": "add", "path": label_path(ORIGIN_POOL_LABEL), "value": pool},
        {"op": "add", "path": label_path(CLAIM_LABEL), "value": claim_name},
        {"op": "add", "path": label_path(CLAIM_UID_LABEL), "value": claim_uid},
        {"op": "add", "path": label_path(SANDBOX_LABEL), "value": claim_name},
    ]);
    Some(serde_json::from_value(ops).expect("static patch shape"))
}

/// The JSON patch by which a Sandbox adopts a Pod (after a steal, or a Pod
/// named in its annotation).
///
/// Guarantee: like [`steal_patch`], it applies only to the exact version that
/// was read (first op tests `metadata.resourceVersion`), so a Pod that changed
/// owner in between is never taken.
pub fn adopt_patch(
    pod: &Pod,
    sandbox_name: &str,
    owner: OwnerReference,
) -> Option<json_patch::Patch> {
    let resource_version = pod.resource_version()?;
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}),
        json!({"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}),
    ];
    if pod.metadata.labels.is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
    }
    ops.push(json!({"op": "add", "path": label_path(SANDBOX_LABEL), "value": sandbox_name}));
    ops.push(json!({"op": "add", "path": label_path(SANDBOX_UID_LABEL), "value": owner.uid}));
    ops.push(json!({"op": "add", "path": label_path(MANAGED_BY_LABEL), "value": MANAGED_BY_VALUE}));
    Some(serde_json::from_value(serde_json::Value::Array(ops)).expect("static patch shape"))
}

/// JSON pointer to a label key (`/` escaped as `~1`).
pub fn label_path(key: &str) -> String {
    format!(
        "/metadata/labels/{}",
        key.replace('~', "~0").replace('/', "~1")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn pod(name: &str, pool: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut labels = BTreeMap::new();
        labels.insert(POOL_LABEL.to_string(), pool.to_string());
        labels.insert(TEMPLATE_LABEL.to_string(), "tmpl".to_string());
        labels.insert(TEMPLATE_HASH_LABEL.to_string(), hash.to_string());
        let base = crate::controller::test_pod::named(name, "7");
        Arc::new(Pod {
            metadata: ObjectMeta {
                labels: Some(labels),
                owner_references: Some(vec![OwnerReference {
                    api_version: "extensions.agents.x-k8s.io/v1alpha1".into(),
                    kind: "SandboxWarmPool".into(),
                    name: pool.into(),
                    uid: format!("pool-uid-{pool}"),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..base.metadata
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(if ready { "Running" } else { "Pending" }.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn criteria<'a>(key: &'a str) -> Criteria<'a> {
        let pool_uids: &'static HashMap<String, String> = Box::leak(Box::new(
            ["p", "p1", "p2", "pool"]
                .iter()
                .map(|p| (p.to_string(), format!("pool-uid-{p}")))
                .collect(),
        ));
        Criteria {
            namespace: "ns",
            template: "tmpl",
            template_hash: "h1",
            pool: None,
            pool_uids,
            spread_key: key,
        }
    }

    #[test]
    fn labels_alone_never_make_a_candidate() {
        // A Pod a namespace user created with every label of an idle pool
        // Pod, but no ownerReference, or one naming the pool with a wrong
        // uid, or a pool that no longer exists.
        let mut unowned = (*pod("a", "p", "h1", true)).clone();
        unowned.metadata.owner_references = None;
        let mut wrong_uid = (*pod("b", "p", "h1", true)).clone();
        wrong_uid.metadata.owner_references.as_mut().unwrap()[0].uid = "forged".into();
        let gone_pool = (*pod("c", "deleted-pool", "h1", true)).clone();
        let mut not_controller = (*pod("d", "p", "h1", true)).clone();
        not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        let pods = vec![
            Arc::new(unowned),
            Arc::new(wrong_uid),
            Arc::new(gone_pool),
            Arc::new(not_controller),
        ];
        assert!(select_candidates(&pods, &criteria("c"), &Reservations::default()).is_empty());
        let good = vec![pod("e", "p", "h1", true)];
        assert_eq!(
            select_candidates(&good, &criteria("c"), &Reservations::default()).len(),
            1
        );
    }

    #[test]
    fn only_ready_current_idle_pods_are_candidates() {
        let pods = vec![
            pod("a", "p", "h1", true),
            pod("b", "p", "h0", true),
            pod("c", "p", "h1", false),
        ];
        let got = select_candidates(&pods, &criteria("claim"), &Reservations::default());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name_any(), "a");
    }

    #[test]
    fn a_starting_pod_is_taken_only_when_its_start_looks_sound_placed_and_oldest_first() {
        use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let created = |name: &str, second: i64| {
            let mut p = (*pod(name, "p", "h1", false)).clone();
            p.metadata.creation_timestamp =
                Some(Time(jiff::Timestamp::from_second(second).unwrap()));
            p
        };
        let container = |restarts: i32, waiting: Option<&str>| ContainerStatus {
            name: "c".into(),
            restart_count: restarts,
            state: waiting.map(|r| ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(r.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let with = |mut p: Pod, c: ContainerStatus| {
            p.status.as_mut().unwrap().container_statuses = Some(vec![c]);
            p
        };
        let mut failed = created("failed", 1);
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut placed = created("placed", 40);
        placed.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: Some("node-0".into()),
            ..Default::default()
        });
        let mut unschedulable = created("unschedulable", 1);
        unschedulable.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/1 nodes are available".into()),
            ..Default::default()
        }]);
        let mut terminating = created("terminating", 1);
        terminating.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let pods: Vec<Arc<Pod>> = [
            created("young", 30),
            created("old", 10),
            with(
                created("pulling", 20),
                container(0, Some("ContainerCreating")),
            ),
            with(created("restarted", 5), container(1, None)),
            with(
                created("crashing", 5),
                container(0, Some("CrashLoopBackOff")),
            ),
            with(
                created("no-image", 5),
                container(0, Some("ImagePullBackOff")),
            ),
            failed,
            terminating,
            placed,
            unschedulable,
            (*pod("ready", "p", "h1", true)).clone(),
            (*pod("outdated", "p", "h0", false)).clone(),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let names = |got: Vec<Arc<Pod>>| got.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        let reservations = Reservations::default();
        assert_eq!(
            names(select_starting(&pods, &criteria("c"), &reservations)),
            ["placed", "old", "pulling", "young"],
            "sound starts of the current hash, those on a node first, then the oldest; Ready ones are the other kind"
        );
        assert!(reservations.try_reserve("ns/old"));
        assert_eq!(
            names(select_starting(&pods, &criteria("c"), &reservations)),
            ["placed", "pulling", "young"],
            "a Pod another claim of this process picked is skipped"
        );
        assert_eq!(
            names(select_candidates(&pods, &criteria("c"), &reservations)),
            ["ready"]
        );
    }

    #[test]
    fn terminating_and_claimed_pods_are_skipped() {
        let mut terminating = (*pod("a", "p", "h1", true)).clone();
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let mut claimed = (*pod("b", "p", "h1", true)).clone();
        claimed.labels_mut().insert(CLAIM_LABEL.into(), "x".into());
        let pods = vec![Arc::new(terminating), Arc::new(claimed)];
        assert!(select_candidates(&pods, &criteria("c"), &Reservations::default()).is_empty());
    }

    #[test]
    fn reserved_pods_are_skipped_and_explicit_pool_is_respected() {
        let pods = vec![pod("a", "p1", "h1", true), pod("b", "p2", "h1", true)];
        let reservations = Reservations::default();
        assert!(reservations.try_reserve("ns/a"));
        assert!(!reservations.try_reserve("ns/a"));
        let got = select_candidates(&pods, &criteria("c"), &reservations);
        assert_eq!(got.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["b"]);
        let mut only_p1 = criteria("c");
        only_p1.pool = Some("p1");
        assert!(select_candidates(&pods, &only_p1, &reservations).is_empty());
        reservations.release("ns/a");
        assert_eq!(select_candidates(&pods, &only_p1, &reservations).len(), 1);
    }

    #[test]
    fn different_claims_spread_over_the_pool() {
        let pods: Vec<_> = (0..50)
            .map(|i| pod(&format!("p{i}"), "p", "h1", true))
            .collect();
        let firsts: std::collections::HashSet<String> = (0..20)
            .map(|i| {
                let key = format!("claim-{i}");
                select_candidates(&pods, &criteria(&key), &Reservations::default())[0].name_any()
            })
            .collect();
        assert!(firsts.len() > 5, "first choices should differ: {firsts:?}");
    }

    #[test]
    fn steal_patch_tests_resource_version_first() {
        let p = pod("a", "pool", "h1", true);
        let owner = OwnerReference {
            api_version: "extensions.agents.x-k8s.io/v1alpha1".into(),
            kind: "SandboxClaim".into(),
            name: "c".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let patch = steal_patch(&p, "c", "u", owner).unwrap();
        let v = serde_json::to_value(&patch).unwrap();
        assert_eq!(v[0]["op"], "test");
        assert_eq!(v[0]["path"], "/metadata/resourceVersion");
        assert_eq!(v[0]["value"], "7");
        assert_eq!(v[2]["op"], "remove");
        assert_eq!(v[2]["path"], "/metadata/labels/agents.x-k8s.io~1warm-pool");
        // Applying it to the Pod as read gives the expected result.
        let mut doc = serde_json::to_value(&*p).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["labels"][CLAIM_LABEL], "c");
        assert!(doc["metadata"]["labels"].get(POOL_LABEL).is_none());
        assert_eq!(
            doc["metadata"]["ownerReferences"][0]["kind"],
            "SandboxClaim"
        );
        // ...and to a newer version it fails (the API server answers 422).
        let mut newer = serde_json::to_value(&*p).unwrap();
        newer["metadata"]["resourceVersion"] = json!("8");
        assert!(json_patch::patch(&mut newer, &patch).is_err());
    }

    #[test]
    fn adopt_patch_creates_missing_labels() {
        let mut p = (*pod("a", "pool", "h1", true)).clone();
        p.metadata.labels = None;
        let owner = OwnerReference {
            name: "s".into(),
            uid: "u".into(),
            ..Default::default()
        };
        let patch = adopt_patch(&p, "s", owner).unwrap();
        let mut doc = serde_json::to_value(&p).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["labels"][SANDBOX_LABEL], "s");
    }
}
