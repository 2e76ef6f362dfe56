//! A claim whose template does not exist yet.

use crate::harness::*;

/// A claim made before its template says `TemplateNotFound` and then waits
/// for the template's creation, which wakes it (its own re-check is 60 s
/// away, longer than `wait_until` waits), instead of asking the API server
/// for the template every 5 s; and once it said so, it asks no more.
#[tokio::test]
async fn a_claim_waiting_for_its_template_is_woken_by_its_creation() {
    let fake = fake_with_pool(1);
    let template = fake.delete(&template_path()).expect("the template");
    let _kubelet = kubelet(&fake, std::time::Duration::from_millis(2));
    let mut operator = Operator::start(&fake, "a").await;
    operator.run();
    create_claim(&fake, "c");
    let reason = || {
        fake.get(&claim_path("c"))
            .and_then(|c| ready(&c))
            .map(|(_, reason)| reason)
    };
    wait_until("the claim says TemplateNotFound", || {
        reason().as_deref() == Some("TemplateNotFound")
    })
    .await;
    let template_gets = || {
        fake.log()
            .iter()
            .filter(|l| l.method == "GET" && l.path == template_path())
            .count()
    };
    let asked = template_gets();
    // Woken meanwhile (here by a label someone adds), it reads the cache
    // alone.
    let claims: kube::Api<sandbox_operator::api::SandboxClaim> =
        kube::Api::namespaced(fake.client(), NS);
    claims
        .patch(
            "c",
            &Default::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"nudge": "1"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(template_gets(), asked, "asked the API server again");
    fake.insert(&template_path(), template);
    wait_until("the claim is Ready", || {
        ready_in_api(&fake, &claim_path("c"))
    })
    .await;
}
