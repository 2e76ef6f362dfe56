//! Issue 4: the sandbox controller against the real API server and KWOK.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::common::{Operator, TestNs, wait_for, wait_until};
use sandbox_operator::api::{
    ADOPTABLE_LABEL, POD_NAME_ANNOTATION, READY, SANDBOX_LABEL, Sandbox, SandboxClaim, is_true,
};

/// A fresh namespace with the operator running in it, and its Sandbox API.
async fn with_operator(prefix: &str) -> (TestNs, Operator, Api<Sandbox>) {
    let ns = TestNs::new(prefix).await;
    let operator = ns.operator(&[]).await;
    let sandboxes = ns.api();
    (ns, operator, sandboxes)
}

/// Creates a Sandbox `name` that names the Pod `pod` for adoption.
async fn create_naming(sandboxes: &Api<Sandbox>, name: &str, pod: &str) {
    let mut named = sandbox(name, json!({}));
    named.metadata.annotations = Some(BTreeMap::from([(
        POD_NAME_ANNOTATION.to_string(),
        pod.to_string(),
    )]));
    sandboxes
        .create(&PostParams::default(), &named)
        .await
        .unwrap();
}

/// Waits until the Sandbox `name` says its named Pod is owned elsewhere.
async fn refused_as_owned_elsewhere(sandboxes: &Api<Sandbox>, name: &str) -> Sandbox {
    wait_for(sandboxes, name, Duration::from_secs(30), |s| {
        reason(s) == "PodOwnedElsewhere"
    })
    .await
}

/// Sets `spec.replicas` of the Sandbox `name` (1 runs it, 0 pauses it).
async fn set_replicas(sandboxes: &Api<Sandbox>, name: &str, replicas: i32) {
    sandboxes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// Waits until the Sandbox owns exactly one Pod and it is not the one
/// with uid `old`.
async fn replaced(ns: &TestNs, sandbox: &Sandbox, old: &Option<String>) {
    wait_until(Duration::from_secs(30), || async {
        let pods = owned_pods(ns, sandbox).await;
        pods.len() == 1 && pods[0].uid() != *old
    })
    .await;
}

fn is_ready(s: &Sandbox) -> bool {
    s.status
        .as_ref()
        .is_some_and(|st| is_true(&st.conditions, READY))
}

fn reason(s: &Sandbox) -> String {
    s.status
        .as_ref()
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == READY))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// One `volumeClaimTemplates` entry: a 1 GiB ReadWriteOnce PVC named `data`.
fn data_volume() -> serde_json::Value {
    json!([{"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}])
}

/// Creates Sandbox `name` with the default spec and waits (30 s at most)
/// until it is Ready.
async fn ready_sandbox(sandboxes: &Api<Sandbox>, name: &str) -> Sandbox {
    sandboxes
        .create(&PostParams::default(), &sandbox(name, json!({})))
        .await
        .unwrap();
    wait_for(sandboxes, name, Duration::from_secs(30), is_ready).await
}

fn sandbox(name: &str, extra_spec: serde_json::Value) -> Sandbox {
    let mut spec =
        json!({"podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

async fn owned_pods(ns: &TestNs, sandbox: &Sandbox) -> Vec<Pod> {
    let pods: Api<Pod> = ns.api();
    pods.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == sandbox.meta().uid.as_ref())
        })
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The standalone Sandbox `s` has its own policy, which keeps it from the
/// denied egress ranges and leaves ingress alone (the user reaches the
/// workbench through the Service).
async fn assert_egress_only_policy(ns: &TestNs, s: &Sandbox) {
    let policy = ns
        .api::<k8s_openapi::api::networking::v1::NetworkPolicy>()
        .get(&format!("{}-sandbox-egress", s.name_any()))
        .await
        .unwrap();
    assert!(
        policy
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == s.uid().as_ref())
    );
    let policy = policy.spec.unwrap();
    assert_eq!(policy.policy_types, Some(vec!["Egress".to_string()]));
    assert_eq!(
        policy.pod_selector.unwrap().match_labels.unwrap()[SANDBOX_LABEL],
        s.name_any()
    );
}

#[tokio::test]
async fn seed_aio_sandbox_becomes_ready_with_pod_and_headless_service() {
    let ns = TestNs::new("sbx-aio").await;
    let _op = ns.operator(&[]).await;
    ns.create_yaml("examples/aio-sandbox.yaml").await;
    let sandboxes: Api<Sandbox> = ns.api();
    let s = wait_for(
        &sandboxes,
        "aio-sandbox-example",
        Duration::from_secs(30),
        is_ready,
    )
    .await;
    let status = s.status.clone().unwrap();
    assert_eq!(
        status.service_fqdn.as_deref(),
        Some(format!("aio-sandbox-example.{}.svc.cluster.local", ns.name).as_str())
    );
    assert_eq!(status.replicas, 1);

    let pods = owned_pods(&ns, &s).await;
    assert_eq!(pods.len(), 1, "exactly one Pod");
    let pod = &pods[0];
    let container = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.name, "aio-sandbox");
    assert_eq!(
        container.image.as_deref(),
        Some("runzhliu/sandbox-openclaw-opencode:1.0.0.152")
    );
    let limits = crate::fixtures::limits_of(container);
    assert_eq!(limits["memory"].0, "8Gi");
    assert_eq!(limits["cpu"].0, "4");
    let owner = &pod.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Sandbox", Some(true))
    );
    assert_eq!(
        pod.labels().get("sandbox").map(String::as_str),
        Some("aio-sandbox-example")
    );

    let services: Api<Service> = ns.api();
    let svc = services.get("aio-sandbox-example").await.unwrap();
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    let selector = spec.selector.unwrap();
    let all: Vec<Pod> = ns.list::<Pod>().await;
    let selected: Vec<String> = all
        .iter()
        .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
        .map(|p| p.name_any())
        .collect();
    assert_eq!(
        selected,
        vec![pod.name_any()],
        "the Service selects exactly the sandbox Pod"
    );
    assert_egress_only_policy(&ns, &s).await;
    let out = ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "sandbox/aio-sandbox-example",
        "--timeout=5s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn volume_claim_templates_become_mounted_pvcs() {
    let (ns, _op, sandboxes) = with_operator("sbx-pvc").await;
    let s = sandbox("withdata", json!({"volumeClaimTemplates": data_volume()}));
    sandboxes.create(&PostParams::default(), &s).await.unwrap();
    let s = wait_for(&sandboxes, "withdata", Duration::from_secs(30), |s| {
        s.status.as_ref().is_some_and(|st| st.pod_name.is_some())
    })
    .await;
    let pvc = ns
        .api::<PersistentVolumeClaim>()
        .get("data-withdata")
        .await
        .expect("PVC created");
    assert_eq!(pvc.owner_references()[0].uid, s.uid().unwrap());
    let pod = ns.api::<Pod>().get("withdata").await.unwrap();
    let volumes = pod.spec.unwrap().volumes.unwrap();
    let data = volumes
        .iter()
        .find(|v| v.name == "data")
        .expect("volume named after the template");
    assert_eq!(
        data.persistent_volume_claim.as_ref().unwrap().claim_name,
        "data-withdata"
    );
}

#[tokio::test]
async fn pause_and_resume_keep_service_and_pvc() {
    let (ns, _op, sandboxes) = with_operator("sbx-pause").await;
    let s = sandbox("p", json!({"volumeClaimTemplates": data_volume()}));
    sandboxes.create(&PostParams::default(), &s).await.unwrap();
    let s = wait_for(&sandboxes, "p", Duration::from_secs(30), is_ready).await;
    let first_uid = owned_pods(&ns, &s).await[0].uid();
    let running = s.status.clone().unwrap();
    assert!(
        running.pod_ip.is_some() && running.pod_ips.is_some(),
        "{running:?}"
    );
    assert!(template_outdated(&s).is_none(), "{:?}", s.status);

    // A template edit leaves the running Pod alone, and the status says so
    // (before, it said nothing: the edit seemed applied).
    sandboxes
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podTemplate": {"spec": {"containers": [
                {"name": "c", "image": "busybox:edited"}]}}}})),
        )
        .await
        .unwrap();
    let edited = wait_for(&sandboxes, "p", Duration::from_secs(30), |s| {
        template_outdated(s).is_some()
    })
    .await;
    let message = template_outdated(&edited).unwrap();
    assert!(
        message.contains("Pod p") && message.contains("spec.replicas"),
        "{message}"
    );
    assert!(is_ready(&edited), "the running Pod still serves");
    assert_eq!(owned_pods(&ns, &edited).await[0].uid(), first_uid);

    set_replicas(&sandboxes, "p", 0).await;
    // Paused, it names no IP any more: not `podIP`, not `podIPs` (before,
    // `podIPs` kept the gone Pod's addresses, which another Pod may get).
    let paused = wait_for(&sandboxes, "p", Duration::from_secs(30), |s| {
        let status = s.status.clone().unwrap_or_default();
        reason(s) == "Paused" && status.pod_ip.is_none() && status.pod_ips.is_none()
    })
    .await;
    wait_until(Duration::from_secs(30), || async {
        ns.api::<Pod>().get_opt("p").await.unwrap().is_none()
    })
    .await;
    assert_eq!(paused.status.unwrap().replicas, 0);
    assert!(
        ns.api::<Service>().get_opt("p").await.unwrap().is_some(),
        "Service kept while paused"
    );
    assert!(
        ns.api::<PersistentVolumeClaim>()
            .get_opt("data-p")
            .await
            .unwrap()
            .is_some(),
        "PVC kept while paused"
    );

    set_replicas(&sandboxes, "p", 1).await;
    let s = wait_for(&sandboxes, "p", Duration::from_secs(30), is_ready).await;
    let pods = owned_pods(&ns, &s).await;
    assert_eq!(pods.len(), 1);
    assert_ne!(pods[0].uid(), first_uid, "a new Pod after resume");
    // The new Pod is made from the edited template, and nothing is left to say.
    let image = pods[0].spec.as_ref().unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("busybox:edited"));
    let s = wait_for(&sandboxes, "p", Duration::from_secs(30), |s| {
        template_outdated(s).is_none()
    })
    .await;
    assert!(is_ready(&s));
}

/// The message of the Sandbox's `PodTemplateApplied=False` condition, when
/// it shows one.
fn template_outdated(s: &Sandbox) -> Option<String> {
    let c = s
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "PodTemplateApplied")?;
    (c.status == "False" && c.reason == "PodTemplateChanged").then(|| c.message.clone())
}

#[tokio::test]
async fn shutdown_time_deletes_the_sandbox_and_its_children() {
    let (ns, _op, sandboxes) = with_operator("sbx-expire").await;
    // metav1.Time has second precision: use a whole second.
    let deadline = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 8).unwrap();
    let s = sandbox(
        "short",
        json!({"shutdownTime": deadline.to_string(), "volumeClaimTemplates": data_volume()}),
    );
    sandboxes.create(&PostParams::default(), &s).await.unwrap();
    wait_for(&sandboxes, "short", Duration::from_secs(30), is_ready).await;
    wait_until(Duration::from_secs(20), || async {
        sandboxes.get_opt("short").await.unwrap().is_none()
    })
    .await;
    assert!(
        jiff::Timestamp::now() >= deadline,
        "deleted before the deadline"
    );
    // Children go by ownerReference garbage collection.
    wait_until(Duration::from_secs(90), || async {
        ns.api::<Pod>().get_opt("short").await.unwrap().is_none()
            && ns
                .api::<Service>()
                .get_opt("short")
                .await
                .unwrap()
                .is_none()
            && ns
                .api::<PersistentVolumeClaim>()
                .get_opt("data-short")
                .await
                .unwrap()
                .is_none()
    })
    .await;
}

#[tokio::test]
async fn adoption_takes_unowned_pods_and_refuses_foreign_ones() {
    let ns = TestNs::new("sbx-adopt").await;
    let _op = ns.operator(&[]).await;
    let pods: Api<Pod> = ns.api();
    let bare = |name: &str, owner: Option<(&str, String)>| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {ADOPTABLE_LABEL: "true"},
                "ownerReferences": owner.map(|(n, uid)| vec![json!({
                "apiVersion": "v1", "kind": "ConfigMap", "name": n, "uid": uid, "controller": true})])},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap()
    };
    pods.create(&PostParams::default(), &bare("pre-made", None))
        .await
        .unwrap();
    let cm = ns
        .api::<ConfigMap>()
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("someone".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &bare("foreign", Some(("someone", cm.uid().unwrap()))),
    )
    .await
    .unwrap();

    let sandboxes: Api<Sandbox> = ns.api();
    create_naming(&sandboxes, "adopter", "pre-made").await;
    let s = wait_for(&sandboxes, "adopter", Duration::from_secs(30), is_ready).await;
    assert_eq!(
        s.status.as_ref().unwrap().pod_name.as_deref(),
        Some("pre-made")
    );
    let owned = owned_pods(&ns, &s).await;
    assert_eq!(
        owned.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["pre-made"],
        "adopted, no second Pod"
    );
    assert_eq!(
        owned[0].labels().get(SANDBOX_LABEL).map(String::as_str),
        Some("adopter")
    );

    create_naming(&sandboxes, "thief", "foreign").await;
    refused_as_owned_elsewhere(&sandboxes, "thief").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let foreign = pods.get("foreign").await.unwrap();
    assert_eq!(
        foreign.owner_references()[0].uid,
        cm.uid().unwrap(),
        "foreign Pod untouched"
    );
    assert!(
        pods.get_opt("thief").await.unwrap().is_none(),
        "no Pod created for a refused adoption"
    );

    // An unowned Pod without its owner's opt-in label is never adopted.
    let mut unlabelled = bare("no-consent", None);
    unlabelled.metadata.labels = None;
    pods.create(&PostParams::default(), &unlabelled)
        .await
        .unwrap();
    create_naming(&sandboxes, "taker", "no-consent").await;
    let refused = refused_as_owned_elsewhere(&sandboxes, "taker").await;
    let message = refused.status.unwrap().conditions[0].message.clone();
    assert!(message.contains(ADOPTABLE_LABEL), "{message}");
    let untouched = pods.get("no-consent").await.unwrap();
    assert!(
        untouched.owner_references().is_empty(),
        "unowned Pod left alone"
    );

    // An offered Pod that breaks the policy's Pod Security level (here the
    // host network, refused at baseline) is not adopted: the Sandbox says
    // why, and the Pod is left as it was. Before (found by review), it was
    // adopted and reported Ready.
    let mut hostile = bare("host-net", None);
    hostile.spec.as_mut().unwrap().host_network = Some(true);
    pods.create(&PostParams::default(), &hostile).await.unwrap();
    create_naming(&sandboxes, "lax", "host-net").await;
    let refused = wait_for(&sandboxes, "lax", Duration::from_secs(30), |s| {
        reason(s) == "PolicyViolation"
    })
    .await;
    let message = refused.status.unwrap().conditions[0].message.clone();
    assert!(
        message.contains("host-net") && message.contains("spec.hostNetwork"),
        "{message}"
    );
    assert!(
        pods.get("host-net")
            .await
            .unwrap()
            .owner_references()
            .is_empty(),
        "the offered Pod is not adopted"
    );
}

#[tokio::test]
async fn pod_deleted_from_outside_is_recreated() {
    let (ns, _op, sandboxes) = with_operator("sbx-recreate").await;
    let s = ready_sandbox(&sandboxes, "r").await;
    let old = owned_pods(&ns, &s).await[0].uid();
    ns.api::<Pod>()
        .delete("r", &Default::default())
        .await
        .unwrap();
    replaced(&ns, &s, &old).await;
    wait_for(&sandboxes, "r", Duration::from_secs(30), |s| {
        is_ready(s) && s.status.as_ref().unwrap().replicas == 1
    })
    .await;
}

#[tokio::test]
async fn an_evicted_pod_is_replaced_and_the_sandbox_says_so() {
    let (ns, _op, sandboxes) = with_operator("sbx-evict").await;
    let s = ready_sandbox(&sandboxes, "e").await;
    let old = owned_pods(&ns, &s).await[0].uid();
    // What the kubelet writes when it evicts a Pod.
    ns.api::<Pod>()
        .patch_status(
            "e",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed", "reason": "Evicted",
                "message": "The node was low on resource: memory."}})),
        )
        .await
        .unwrap();
    // The Sandbox says so (a condition or an Event), then runs on a new Pod.
    replaced(&ns, &s, &old).await;
    wait_for(&sandboxes, "e", Duration::from_secs(30), is_ready).await;
    wait_until(Duration::from_secs(20), || async {
        ns.api::<k8s_openapi::api::events::v1::Event>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PodEvicted"))
    })
    .await;
}

/// A Pod the kubelet stopped for a node shutdown (phase Failed, reason
/// `Terminated`, a `DisruptionTarget` condition): the Sandbox's process did
/// not choose to exit, so it is replaced like an evicted one. Before, only
/// `Evicted` and `NodeLost` were, and a node's reboot left the Sandbox
/// `PodFailed` for good.
#[tokio::test]
async fn a_pod_stopped_by_a_node_shutdown_is_replaced() {
    let (ns, _op, sandboxes) = with_operator("sbx-shutdown").await;
    let s = ready_sandbox(&sandboxes, "n").await;
    let old = owned_pods(&ns, &s).await[0].uid();
    ns.api::<Pod>()
        .patch_status(
            "n",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed", "reason": "Terminated",
                "message": "Pod was terminated in response to imminent node shutdown.",
                "conditions": [{"type": "DisruptionTarget", "status": "True",
                    "reason": "TerminationByKubelet"}]}})),
        )
        .await
        .unwrap();
    replaced(&ns, &s, &old).await;
    wait_for(&sandboxes, "n", Duration::from_secs(30), is_ready).await;
}

/// The name of the Sandbox's volume claim is held by a claim that is not
/// its own (left by an orphaning deletion of an earlier Sandbox of the
/// name, whose tenant's data it holds): no Pod starts, and the Sandbox says
/// why in its Ready condition. Before, the refusal was only logged and the
/// Sandbox had no status at all.
#[tokio::test]
async fn a_sandbox_whose_volume_claim_name_is_taken_says_so() {
    let (ns, _op, sandboxes) = with_operator("sbx-pvc-taken").await;
    let leftover: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data-taken"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    ns.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &leftover)
        .await
        .unwrap();
    let s = sandbox("taken", json!({"volumeClaimTemplates": data_volume()}));
    sandboxes.create(&PostParams::default(), &s).await.unwrap();
    let s = wait_for(&sandboxes, "taken", Duration::from_secs(20), |s| {
        reason(s) == "NameConflict"
    })
    .await;
    let message = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == READY)
        .unwrap()
        .message;
    assert!(message.contains("data-taken"), "{message}");
    assert!(
        ns.api::<Pod>().get_opt("taken").await.unwrap().is_none(),
        "no Pod without its own volume claim"
    );
}

#[tokio::test]
async fn killed_controller_converges_without_duplicates() {
    let ns = TestNs::new("sbx-crash").await;
    // Controller crash test: no webhook (creates must not depend on the
    // killed process; webhook availability is tested on its own).
    let op = ns.operator(&["--webhook=false"]).await;
    let sandboxes: Api<Sandbox> = ns.api();
    let creator = {
        let sandboxes = sandboxes.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                sandboxes
                    .create(
                        &PostParams::default(),
                        &sandbox(&format!("s{i}"), json!({})),
                    )
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    op.kill().await;
    creator.await.unwrap();
    let _op = ns.operator(&["--webhook=false"]).await;
    wait_until(Duration::from_secs(90), || async {
        let list = sandboxes.list(&Default::default()).await.unwrap().items;
        list.len() == 50 && list.iter().all(is_ready)
    })
    .await;
    let pods: Vec<Pod> = ns.list::<Pod>().await;
    let mut per_sandbox: HashMap<String, usize> = HashMap::new();
    for p in &pods {
        if let Some(owner) = p.owner_references().iter().find(|o| o.kind == "Sandbox") {
            *per_sandbox.entry(owner.name.clone()).or_default() += 1;
        }
    }
    assert_eq!(pods.len(), 50, "exactly 50 Pods");
    assert_eq!(per_sandbox.len(), 50);
    assert!(
        per_sandbox.values().all(|n| *n == 1),
        "a Sandbox owns more than one Pod: {per_sandbox:?}"
    );
}

/// The addresses the Sandbox `s` reports: `podIP` and `podIPs`.
fn addresses(s: &Sandbox) -> (Option<String>, Option<Vec<String>>) {
    let status = s.status.clone().unwrap_or_default();
    (status.pod_ip, status.pod_ips)
}

/// A Pod whose process exited (phase Failed, reason Error: as under
/// restartPolicy Never, or past activeDeadlineSeconds) is reported and left
/// for its user to inspect, by name, but not by IP: the kubelet released
/// the IP, which another tenant's Pod may be given. Before (found by
/// review), the Sandbox (and so its claim) kept the ended Pod's IPs.
#[tokio::test]
async fn a_pod_that_ended_is_named_without_its_ips() {
    let (ns, _op, sandboxes) = with_operator("sbx-ended").await;
    let s = ready_sandbox(&sandboxes, "f").await;
    let old = owned_pods(&ns, &s).await[0].uid();
    let (ip, ips) = addresses(&s);
    assert!(ip.is_some() && ips.is_some(), "{:?}", s.status);
    ns.api::<Pod>()
        .patch_status(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed", "reason": "Error",
                "message": "container c exited with code 1"}})),
        )
        .await
        .unwrap();
    let ended = wait_for(&sandboxes, "f", Duration::from_secs(30), |s| {
        reason(s) == "PodFailed"
    })
    .await;
    assert_eq!(
        addresses(&ended),
        (None, None),
        "an ended Pod's IPs are still reported: {:?}",
        ended.status
    );
    let status = ended.status.unwrap();
    assert_eq!(status.pod_name.as_deref(), Some("f"), "still named");
    assert_eq!(status.replicas, 0);
    // The Pod itself still lists the IP (the test proves something), and
    // is left as it is.
    let pod = ns.api::<Pod>().get("f").await.unwrap();
    assert_eq!(pod.uid(), old);
    assert!(pod.status.unwrap().pod_ip.is_some());
}

/// An evicted Pod that a finalizer keeps after the Sandbox deleted it
/// (phase Failed, terminating) is reported as terminating, by name, but not
/// by IP. Before (found by review), the reconcile after the delete put the
/// evicted Pod's IP back, with PodTerminating, until the Pod went. The Pod
/// is left unscheduled (a nodeSelector no node has), so KWOK, which clears
/// the finalizers of the Pods on its node, leaves it alone; the test plays
/// the kubelet's part.
#[tokio::test]
async fn an_evicted_pod_held_by_a_finalizer_is_named_without_its_ips() {
    let (ns, _op, sandboxes) = with_operator("sbx-evict-held").await;
    let held = sandbox(
        "h",
        json!({"podTemplate": {"spec": {"nodeSelector": {"sandbox.test/nowhere": "true"},
            "containers": [{"name": "c", "image": "busybox"}]}}}),
    );
    sandboxes
        .create(&PostParams::default(), &held)
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    wait_until(Duration::from_secs(30), || async {
        pods.get_opt("h").await.unwrap().is_some()
    })
    .await;
    let _release = crate::common::Held::on(&ns, "pod", "h");
    // Running and Ready, as a kubelet would say.
    pods.patch_status(
        "h",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "podIP": "10.244.250.7",
            "podIPs": [{"ip": "10.244.250.7"}],
            "conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
    )
    .await
    .unwrap();
    let s = wait_for(&sandboxes, "h", Duration::from_secs(30), |s| {
        is_ready(s) && addresses(s).0.is_some()
    })
    .await;
    let old = owned_pods(&ns, &s).await[0].uid();
    // Evicted: the Sandbox deletes it, and the finalizer keeps it.
    pods.patch_status(
        "h",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}})),
    )
    .await
    .unwrap();
    let terminating = wait_for(&sandboxes, "h", Duration::from_secs(30), |s| {
        reason(s) == "PodTerminating"
    })
    .await;
    assert_eq!(
        addresses(&terminating),
        (None, None),
        "an evicted Pod's IPs are reported again: {:?}",
        terminating.status
    );
    assert_eq!(
        terminating.status.unwrap().pod_name.as_deref(),
        Some("h"),
        "still named"
    );
    let pod = pods.get("h").await.unwrap();
    assert!(pod.metadata.deletion_timestamp.is_some());
    assert!(pod.status.unwrap().pod_ip.is_some());
    // Released, it goes and a new Pod is started.
    drop(_release);
    wait_until(Duration::from_secs(30), || async {
        pods.get_opt("h")
            .await
            .unwrap()
            .is_some_and(|p| p.uid() != old)
    })
    .await;
}

/// A `PodTemplateApplied=False` condition someone removed through the
/// status subresource comes back at the next reconcile: the check does
/// not take the stored status as the operator's own last word. Before
/// (found by review), it never came back while the Pod and the generation
/// stayed.
#[tokio::test]
async fn a_removed_template_condition_comes_back() {
    let (_ns, _op, sandboxes) = with_operator("sbx-tmpl-cond").await;
    ready_sandbox(&sandboxes, "t").await;
    sandboxes
        .patch(
            "t",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podTemplate": {"spec": {"containers": [
                {"name": "c", "image": "busybox:edited"}]}}}})),
        )
        .await
        .unwrap();
    let edited = wait_for(&sandboxes, "t", Duration::from_secs(30), |s| {
        template_outdated(s).is_some()
    })
    .await;
    // Only the other conditions are kept (a merge patch replaces the list).
    let kept: Vec<_> = edited
        .status
        .unwrap()
        .conditions
        .into_iter()
        .filter(|c| c.type_ != "PodTemplateApplied")
        .collect();
    sandboxes
        .patch_status(
            "t",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": kept}})),
        )
        .await
        .unwrap();
    wait_for(&sandboxes, "t", Duration::from_secs(20), |s| {
        template_outdated(s).is_some()
    })
    .await;
}

/// The create of a Pod the cache does not show finds it under the
/// Sandbox's name (as after a restart, before the cache shows it); here the
/// Sandbox's Ready Pod drops out of the operator's cache, which selects
/// the Pods it manages by their managed-by label. The status follows the
/// Pod found, controlled by this Sandbox: still Ready, with its IP. Before
/// (found by review), it followed the Pod the create sent, which has no
/// status: PodPending, with no IP.
#[tokio::test]
async fn a_pod_found_by_its_create_is_reported_as_it_is() {
    let (ns, _op, sandboxes) = with_operator("sbx-found").await;
    let s = ready_sandbox(&sandboxes, "g").await;
    let ip = addresses(&s).0.expect("an IP");
    let old = owned_pods(&ns, &s).await[0].uid();
    ns.api::<Pod>()
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "app.kubernetes.io/managed-by": null}}})),
        )
        .await
        .unwrap();
    // The cache's deletion wakes the Sandbox at once; every status seen
    // meanwhile is the Pod's.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        let s = sandboxes.get("g").await.unwrap();
        assert!(
            is_ready(&s) && addresses(&s).0.as_deref() == Some(ip.as_str()),
            "the found Pod is not reported as it is: {:?}",
            s.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pods = owned_pods(&ns, &s).await;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].uid(), old, "the same Pod");
}

/// A validating webhook that refuses every UPDATE of a Sandbox in one
/// namespace, as a webhook that is down does (nothing listens at its URL,
/// failurePolicy Fail: the API server answers 500); deleted when dropped.
struct SandboxUpdatesFail {
    name: String,
}

impl SandboxUpdatesFail {
    /// Installs it for `ns` and waits until the API server applies it.
    async fn install(ns: &TestNs, sandboxes: &Api<Sandbox>, sandbox: &str) -> Self {
        let name = format!("sandbox-test-down-{}", ns.name);
        let port = crate::common::free_port();
        let config: k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration =
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "webhooks": [{"name": "down.sandbox.test", "admissionReviewVersions": ["v1"],
                    "clientConfig": {"url": format!("https://127.0.0.1:{port}/down")},
                    "failurePolicy": "Fail", "sideEffects": "None", "timeoutSeconds": 2,
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}},
                    "rules": [{"apiGroups": ["agents.x-k8s.io"], "apiVersions": ["*"],
                        "operations": ["UPDATE"], "resources": ["sandboxes"],
                        "scope": "Namespaced"}]}]
            }))
            .unwrap();
        Api::all(ns.client.clone())
            .create(&PostParams::default(), &config)
            .await
            .unwrap();
        let guard = SandboxUpdatesFail { name };
        let start = std::time::Instant::now();
        for probe in 0.. {
            let annotation =
                json!({"metadata": {"annotations": {"sandbox.test/probe": probe.to_string()}}});
            let patched = sandboxes
                .patch(sandbox, &PatchParams::default(), &Patch::Merge(annotation))
                .await;
            if patched.is_err() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the failing webhook was never applied"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        guard
    }
}

impl Drop for SandboxUpdatesFail {
    fn drop(&mut self) {
        let _ = crate::common::kubectl(&[
            "delete",
            "--ignore-not-found",
            "validatingwebhookconfiguration",
            &self.name,
        ]);
    }
}

/// A claim's Sandbox whose Pod is force-deleted while every update of the
/// Sandbox fails (its webhook down) cannot drop the gone Pod's name from
/// its annotation, but its status stops naming that Pod and its IP, and it
/// is not Ready. Before (found by review), the failed write returned before
/// any status was recorded: the Sandbox went on naming the gone Pod, with
/// its IP (which another Pod may get), Ready, for as long as the webhook
/// was down.
#[tokio::test]
async fn a_sandbox_whose_pod_is_gone_says_so_while_its_writes_fail() {
    let (ns, _op) = crate::trust::namespace_with_a_ready_pool("sbx-gone-down").await;
    let claim = crate::fixtures::claim_when_ready(&ns, "w", Duration::from_secs(60)).await;
    let taken = claim.status.unwrap().pod_name.expect("a warm Pod");
    let sandboxes: Api<Sandbox> = ns.api();
    wait_for(&sandboxes, "w", Duration::from_secs(30), |s| {
        is_ready(s) && s.status.as_ref().unwrap().pod_name.as_ref() == Some(&taken)
    })
    .await;
    let down = SandboxUpdatesFail::install(&ns, &sandboxes, "w").await;
    ns.api::<Pod>()
        .delete(
            &taken,
            &kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let podless = wait_for(&sandboxes, "w", Duration::from_secs(20), |s| {
        let status = s.status.clone().unwrap_or_default();
        status.pod_name.as_ref() != Some(&taken) && status.pod_ip.is_none()
    })
    .await;
    assert!(!is_ready(&podless), "{:?}", podless.status);
    assert_eq!(addresses(&podless), (None, None));
    assert_eq!(
        podless.annotations().get(POD_NAME_ANNOTATION),
        Some(&taken),
        "the updates still fail: the test proves something"
    );
    // What clients read, the claim, says so too (found by the second
    // read: it waited through `CreatingPod` as settling, Ready on the gone
    // Pod for the whole outage).
    let claims: Api<SandboxClaim> = ns.api();
    let claim = wait_for(&claims, "w", Duration::from_secs(20), |c| {
        let status = c.status.clone().unwrap_or_default();
        !status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            && status.pod_name.as_ref() != Some(&taken)
    })
    .await;
    let status = claim.status.unwrap();
    assert!(
        status
            .sandbox
            .as_ref()
            .and_then(|s| s.pod_ips.as_ref())
            .is_none(),
        "{status:?}"
    );
    // The webhook back, the Sandbox is served again.
    drop(down);
    wait_for(&sandboxes, "w", Duration::from_secs(60), |s| {
        is_ready(s) && s.status.as_ref().unwrap().pod_name.as_ref() != Some(&taken)
    })
    .await;
}
