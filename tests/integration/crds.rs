//! Issue 3: the generated CRDs on a real API server.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;

use crate::common::{TestNs, kubectl, wait_for};
use sandbox_operator::api::{Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};

#[tokio::test]
async fn crds_are_established_listed_by_category_and_scalable() {
    let ns = TestNs::new("crds").await;
    for file in [
        "examples/template.yaml",
        "examples/warmpool.yaml",
        "examples/claim.yaml",
        "examples/aio-sandbox.yaml",
    ] {
        ns.create_yaml(file).await;
    }
    let out = ns.kubectl(&["get", "agents", "-o", "name"]);
    assert!(
        out.status.success(),
        "kubectl get agents: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "sandbox.agents.x-k8s.io/",
        "sandboxtemplate.extensions",
        "sandboxclaim.extensions",
        "sandboxwarmpool.extensions",
    ] {
        assert!(
            listed.contains(kind),
            "{kind} missing from `kubectl get agents`:\n{listed}"
        );
    }
    for short in ["sbx", "sbt", "sbc", "swp"] {
        let out = ns.kubectl(&["get", short]);
        assert!(
            out.status.success(),
            "kubectl get {short}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = ns.kubectl(&["scale", "swp/aio-pool", "--replicas=3"]);
    assert!(
        out.status.success(),
        "kubectl scale: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ns.kubectl(&["scale", "swp/aio-pool", "--replicas=7"]);
    assert!(
        out.status.success(),
        "kubectl scale: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pools: Api<SandboxWarmPool> = ns.api();
    wait_for(&pools, "aio-pool", Duration::from_secs(10), |p| {
        p.spec.replicas == 7
    })
    .await;
}

#[tokio::test]
async fn seed_yaml_and_v01_shapes_are_accepted_and_round_trip() {
    let ns = TestNs::new("roundtrip").await;
    let mut created = Vec::new();
    for file in [
        "examples/aio-sandbox.yaml",
        "examples/template.yaml",
        "examples/warmpool.yaml",
        "examples/claim.yaml",
    ] {
        created.extend(ns.create_yaml(file).await);
    }
    // Round trip: what the API server stored, read through the Rust types and
    // serialized again, is identical (no field lost or renamed).
    for obj in created {
        let stored = ns
            .dynamic_api(&obj)
            .get(&obj.metadata.name.clone().unwrap())
            .await
            .expect("read back");
        let raw = serde_json::to_value(&stored).unwrap();
        let kind = stored.types.as_ref().unwrap().kind.clone();
        let again = match kind.as_str() {
            "Sandbox" => {
                serde_json::to_value(serde_json::from_value::<Sandbox>(raw.clone()).unwrap())
            }
            "SandboxTemplate" => serde_json::to_value(
                serde_json::from_value::<SandboxTemplate>(raw.clone()).unwrap(),
            ),
            "SandboxWarmPool" => serde_json::to_value(
                serde_json::from_value::<SandboxWarmPool>(raw.clone()).unwrap(),
            ),
            "SandboxClaim" => {
                serde_json::to_value(serde_json::from_value::<SandboxClaim>(raw.clone()).unwrap())
            }
            other => panic!("unexpected kind {other}"),
        }
        .unwrap();
        assert_eq!(raw, again, "{kind} does not round-trip");
    }
}

fn refused(out: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a refusal, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "refusal does not mention {needle:?}:\n{stderr}"
        );
    }
}

fn kubectl_create(ns: &TestNs, yaml: &str) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("sbx-{}-{}.yaml", ns.name, rand::random::<u32>()));
    std::fs::write(&path, yaml).unwrap();
    let out = ns.kubectl(&["create", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
    out
}

const POD: &str = "podTemplate:\n    spec:\n      containers: [{name: c, image: busybox}]";

#[tokio::test]
async fn invalid_objects_are_refused_with_the_field_named() {
    let ns = TestNs::new("invalid").await;
    refused(
        &kubectl_create(
            &ns,
            &format!(
                "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {{name: two}}\nspec:\n  replicas: 2\n  {POD}\n"
            ),
        ),
        &["spec.replicas", "less than or equal to 1"],
    );
    refused(
        &kubectl_create(
            &ns,
            "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {name: nopod}\nspec: {replicas: 1}\n",
        ),
        &["spec.podTemplate", "Required"],
    );
    refused(
        &kubectl_create(
            &ns,
            "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxWarmPool\nmetadata: {name: neg}\nspec: {replicas: -1, sandboxTemplateRef: {name: t}}\n",
        ),
        &["spec.replicas", "greater than or equal to 0"],
    );
    refused(
        &kubectl_create(
            &ns,
            "apiVersion: extensions.agents.x-k8s.io/v1alpha1\nkind: SandboxClaim\nmetadata: {name: noref}\nspec: {}\n",
        ),
        &["spec.sandboxTemplateRef", "Required"],
    );

    // volumeClaimTemplates cannot change after creation.
    let yaml = format!(
        "apiVersion: agents.x-k8s.io/v1alpha1\nkind: Sandbox\nmetadata: {{name: vols}}\nspec:\n  {POD}\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    );
    assert!(kubectl_create(&ns, &yaml).status.success());
    let sandboxes: Api<DynamicObject> = ns.dynamic_api(&serde_yaml::from_str(&yaml).unwrap());
    let err = sandboxes
        .patch("vols", &PatchParams::default(), &Patch::Merge(json!({"spec": {"volumeClaimTemplates": [
            {"metadata": {"name": "other"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}}
        ]}})))
        .await
        .expect_err("changing volumeClaimTemplates must be refused");
    let text = err.to_string();
    assert!(
        text.contains("spec.volumeClaimTemplates") && text.contains("immutable"),
        "{text}"
    );
    let err = sandboxes
        .patch(
            "vols",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"volumeClaimTemplates": null}})),
        )
        .await
        .expect_err("removing volumeClaimTemplates must be refused");
    assert!(err.to_string().contains("immutable"), "{err}");
    let _ = kubectl(&["version"]);
}
