//! A pool whose template is deleted while its idle Pods still exist.

use std::time::Duration;

use crate::harness::*;

/// The pool reports `TemplateNotFound` with the members it still has
/// (`replicas`, `readyReplicas`) and is not `Exhausted` while Ready idle
/// Pods of it exist. Before, it said `replicas: 0, readyReplicas: 0` and
/// `Exhausted=True` next to its live Pods.
#[tokio::test]
async fn a_pool_without_its_template_reports_the_members_it_has() {
    let fake = fake_with_pool(3);
    let _kubelet = kubelet(&fake, Duration::from_millis(2));
    let mut operator = Operator::start(&fake, "op").await;
    operator.run();
    operator.sees_idle(3).await;
    fake.delete(&template_path()).expect("delete the template");
    let condition = |pool: &serde_json::Value, kind: &str| {
        pool["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
            .unwrap_or_default()
    };
    wait_until("the pool says TemplateNotFound", || {
        fake.get(&pool_path())
            .is_some_and(|p| condition(&p, "Ready")["reason"] == "TemplateNotFound")
    })
    .await;
    let pool = fake.get(&pool_path()).unwrap();
    let status = &pool["status"];
    assert_eq!(
        (
            status["replicas"].as_i64(),
            status["readyReplicas"].as_i64()
        ),
        (Some(3), Some(3)),
        "{status}"
    );
    assert_eq!(condition(&pool, "Exhausted")["status"], "False", "{status}");
}
