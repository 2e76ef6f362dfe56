//! Pod-level resources (`spec.resources`, a budget the containers share)
//! against the real API server: the defaults the operator adds before it
//! creates a Pod must leave such a Pod valid (Kubernetes refuses a container
//! limit above the pod-level limit, and container requests adding up to
//! more than the pod-level request).

use std::time::Duration;

use kube::api::Api;
use serde_json::json;

use crate::common::{TestNs, wait_for};
use crate::fixtures::{create, ready_condition};
use crate::trust::user_sandbox;
use sandbox_operator::api::Sandbox;

#[tokio::test]
async fn a_sandbox_with_a_pod_level_budget_gets_its_pod() {
    let ns = TestNs::new("pod-budget").await;
    let _op = ns.operator(&[]).await;
    // A pod-level cpu limit below the default container limit (2), and a
    // pod-level memory request below the sum of two default container
    // requests (2 x 128Mi); both containers left bare.
    let sandbox = user_sandbox(
        json!({"name": "budget"}),
        json!({
            "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "200Mi"}},
            "containers": [
                {"name": "a", "image": "busybox"},
                {"name": "b", "image": "busybox"}
            ]
        }),
    );
    create(&ns, &sandbox).await;
    let sandboxes: Api<Sandbox> = ns.api();
    let ready = wait_for(&sandboxes, "budget", Duration::from_secs(30), |s| {
        ready_condition(s).is_some_and(|c| c.status == "True")
    })
    .await;
    let pod_name = ready.status.unwrap().pod_name.expect("a Pod named");
    let pod = ns
        .api::<k8s_openapi::api::core::v1::Pod>()
        .get(&pod_name)
        .await
        .unwrap();
    let spec = pod.spec.unwrap();
    let budget = serde_json::to_value(spec.resources.unwrap()).unwrap();
    assert_eq!(budget["limits"]["cpu"], "500m");
    assert_eq!(budget["requests"]["memory"], "200Mi");
    for container in &spec.containers {
        let own = serde_json::to_value(&container.resources).unwrap();
        assert!(
            own["limits"].get("cpu").is_none() && own["requests"].get("memory").is_none(),
            "container {} got a default the budget names: {own}",
            container.name
        );
    }
}
