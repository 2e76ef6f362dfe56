//! Issue 13, point 7: the chart's NetworkPolicy for the operator renders
//! from its values (webhook port open, admin port from the namespace or the
//! configured scraper, off when disabled) and is accepted by the API server.

use std::time::Instant;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::helm::render;
use crate::common::TestNs;

/// `helm template` of the chart with `args`, every document as JSON.
fn render_json(args: &[&str]) -> Vec<Value> {
    render(args)
        .into_iter()
        .map(|doc| serde_json::to_value(doc).expect("YAML reads as JSON"))
        .collect()
}

/// The rendered `kind` named `name`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

#[tokio::test]
async fn the_charts_operator_network_policy_follows_its_values_and_is_accepted() {
    let started = Instant::now();
    // Defaults: webhook port open, admin port 8080 from the release
    // namespace only.
    let docs = render_json(&[]);
    let policy = find(&docs, "NetworkPolicy", "rel-sandbox-operator");
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2);
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": 9443, "protocol": "TCP"}])
    );
    assert!(ingress[0].get("from").is_none(), "webhook open to all");
    assert_eq!(
        ingress[1]["ports"],
        json!([{"port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(ingress[1]["from"], json!([{"podSelector": {}}]));
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "controller"
    );

    // A configured scraper and admin address: the flag, the container port,
    // the Service and the policy move together.
    let docs = render_json(&[
        "--set",
        "metrics.address=0.0.0.0:9090",
        "--set-json",
        r#"networkPolicy.metricsFrom.namespaceSelector={"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}"#,
        "--set-json",
        r#"networkPolicy.metricsFrom.podSelector={"matchLabels":{"app.kubernetes.io/name":"prometheus"}}"#,
    ]);
    let policy = find(&docs, "NetworkPolicy", "rel-sandbox-operator").clone();
    let admin = &policy["spec"]["ingress"][1];
    assert_eq!(admin["ports"], json!([{"port": 9090, "protocol": "TCP"}]));
    assert_eq!(
        admin["from"],
        json!([{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
        }])
    );
    let container = &find(&docs, "Deployment", "rel-sandbox-operator")["spec"]["template"]["spec"]
        ["containers"][0];
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--metrics-addr=0.0.0.0:9090"))
    );
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "metrics", "containerPort": 9090, "protocol": "TCP"}))
    );
    assert_eq!(
        find(&docs, "Service", "rel-sandbox-operator-metrics")["spec"]["ports"][0]["port"],
        9090
    );
    // Off: no policy.
    let docs = render_json(&["--set", "networkPolicy.enabled=false"]);
    assert!(!docs.iter().any(|d| d["kind"] == "NetworkPolicy"));

    // The rendered object is valid for the real API server.
    let ns = TestNs::new("net-chart").await;
    let mut object: NetworkPolicy = serde_json::from_value(policy).unwrap();
    object.metadata.namespace = Some(ns.name.clone());
    let created = ns
        .api::<NetworkPolicy>()
        .create(&PostParams::default(), &object)
        .await
        .expect("the API server accepts the chart's NetworkPolicy");
    assert_eq!(created.spec, object.spec);
    eprintln!("chart_network_policy: {:?}", started.elapsed());
}
