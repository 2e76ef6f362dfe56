//! Giving up the leader Lease while a renewal is under way.

use std::time::Duration;

use sandbox_fakeapi::FakeApiServer;
use sandbox_operator::controller::leader::{LeaderConfig, LeaderElector};

use crate::harness::NS;

/// A release while the renewal task's Lease read is on its way: the
/// renewal must not land after the release and take the Lease again (the
/// standby would then wait out the whole Lease), nor reopen the fence.
/// Before, the release did not stop the renewal task: its read, answered
/// after the release, found the Lease free and took it.
#[tokio::test]
async fn a_release_stops_the_renewal_first() {
    let fake = FakeApiServer::default();
    let elector = LeaderElector::new(
        fake.client(),
        LeaderConfig {
            namespace: NS.into(),
            name: "lease".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(200),
        },
    );
    elector.acquire().await;
    let _leading = elector.keep();
    // The renewal's next read of the Lease (about 200 ms from now) is held
    // for 400 ms; the release comes while it is held.
    fake.delay_next(
        1,
        |r| r.method == "GET" && r.path.ends_with("/leases/lease"),
        Duration::from_millis(400),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    elector.release().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lease = fake
        .get(&format!(
            "/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/lease"
        ))
        .expect("the Lease");
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "the Lease is held again after the release: {lease:#}"
    );
    assert!(!elector.fence().is_open(), "the fence opened again");
}
