//! Issue 2: the local control plane behaves like a real cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::common::{TestNs, kubectl, wait_for, wait_until};

fn pod(name: &str, delay_ms: Option<u64>) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "annotations": delay_ms.map(|d| serde_json::json!({"sandbox.test/start-delay-ms": d.to_string()})).unwrap_or(serde_json::json!({})),
        },
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn pod_start_delay_annotation_is_honoured() {
    let ns = TestNs::new("cp-delay").await;
    let pods: Api<Pod> = ns.api();
    let start = Instant::now();
    pods.create(&PostParams::default(), &pod("fast", None))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("slow", Some(3000)))
        .await
        .unwrap();
    wait_for(&pods, "fast", Duration::from_secs(20), ready).await;
    let fast = start.elapsed();
    wait_for(&pods, "slow", Duration::from_secs(20), ready).await;
    let slow = start.elapsed();
    println!("fast pod Ready after {fast:?}, 3000 ms pod after {slow:?}");
    assert!(
        slow >= Duration::from_millis(2900),
        "delayed pod was Ready too early: {slow:?}"
    );
    assert!(
        slow < Duration::from_secs(10),
        "delayed pod took far too long: {slow:?}"
    );
    // The two bounds above would also hold if the annotation were ignored and the
    // control plane had a cluster-wide start delay near 3 s: the Pod without the
    // annotation must be Ready well before the one with it.
    assert!(
        fast + Duration::from_secs(2) < slow,
        "the Pod without the start-delay annotation (Ready after {fast:?}) was not Ready \
         well before the one with 3000 ms (Ready after {slow:?}): the annotation is not \
         what delays it"
    );
    pods.delete("slow", &Default::default()).await.unwrap();
    wait_until(Duration::from_secs(20), || async {
        pods.get_opt("slow").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn owner_reference_garbage_collection_works() {
    let ns = TestNs::new("cp-gc").await;
    let cms: Api<ConfigMap> = ns.api();
    let owner = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("dependent".into()),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: "owner".into(),
                    uid: owner.uid().unwrap(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    cms.delete("owner", &Default::default()).await.unwrap();
    wait_until(Duration::from_secs(60), || async {
        cms.get_opt("dependent").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn rbac_refuses_a_service_account_without_rights() {
    let ns = TestNs::new("cp-rbac").await;
    let sas: Api<ServiceAccount> = ns.api();
    sas.create(
        &PostParams::default(),
        &ServiceAccount {
            metadata: ObjectMeta {
                name: Some("nobody".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let out = kubectl(&[
        "auth",
        "can-i",
        "list",
        "pods",
        "-n",
        &ns.name,
        &format!("--as=system:serviceaccount:{}:nobody", ns.name),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    let out = kubectl(&[
        "get",
        "pods",
        "-n",
        &ns.name,
        &format!("--as=system:serviceaccount:{}:nobody", ns.name),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = Arc::new(());
}
