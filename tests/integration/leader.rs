//! Issue 18 point 3: leader election survives a frozen leader. Two operator
//! processes elect on one Lease; the leader is frozen (SIGSTOP) past the
//! lease; the standby takes over and serves claims; the old leader is
//! resumed (SIGCONT) and must write NOTHING: every object of the namespace
//! keeps its resourceVersion, the Lease stays with the new leader, and the
//! old process exits with code 1 (client-go's OnStoppedLeading). No claim is
//! served twice, before or after.
//!
//! Runs on the shared control plane: it only freezes its own processes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::common::{TestNs, kubeconfig, wait_until_ok};
use crate::faults::harness::{self, OperatorProc};
use crate::faults::invariants;
use sandbox_operator::api::{Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};

const POOL: usize = 3;
const LEASE: &str = "operator-leader";
/// Short timings so the test takes seconds: others take over after 8 s
/// without an observed change; the leader gives up 6 s after its last
/// successful renewal started (room for a loaded CI machine).
const LEASE_SECONDS: u64 = 8;

fn args(ns: &str) -> Vec<String> {
    [
        "--leader-elect=true",
        "--lease-namespace",
        ns,
        "--lease-name",
        LEASE,
        "--lease-duration-seconds",
        &LEASE_SECONDS.to_string(),
        "--lease-renew-deadline-seconds",
        "6",
        "--lease-retry-period-seconds",
        "1",
        // The webhook runs on every replica whatever the Lease says, so it is
        // left out here: this test is about what the controllers write.
        "--webhook=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn holder(client: &Client, ns: &str) -> (Option<String>, i32) {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(LEASE)
        .await
        .ok()
        .flatten();
    let spec = lease.and_then(|l| l.spec).unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
}

async fn wait_holder(client: &Client, ns: &str, who: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    let ok = wait_until_ok(timeout, || async {
        holder(client, ns).await.0.as_deref() == Some(who)
    })
    .await;
    assert!(
        ok,
        "{who} does not hold the Lease after {timeout:?}: {:?}",
        holder(client, ns).await
    );
    start.elapsed()
}

/// `kind/name` -> resourceVersion of every object in the namespace the
/// operator could write (the Lease aside: the new leader renews it).
async fn snapshot(client: &Client, ns: &str) -> BTreeMap<String, String> {
    async fn add<K>(out: &mut BTreeMap<String, String>, client: &Client, ns: &str, kind: &str)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let list = Api::<K>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing {kind}: {e}"));
        for obj in list.items {
            out.insert(
                format!("{kind}/{}", obj.name_any()),
                obj.resource_version().unwrap_or_default(),
            );
        }
    }
    let mut out = BTreeMap::new();
    add::<Pod>(&mut out, client, ns, "Pod").await;
    add::<Service>(&mut out, client, ns, "Service").await;
    add::<NetworkPolicy>(&mut out, client, ns, "NetworkPolicy").await;
    add::<ConfigMap>(&mut out, client, ns, "ConfigMap").await;
    add::<Event>(&mut out, client, ns, "Event").await;
    add::<Sandbox>(&mut out, client, ns, "Sandbox").await;
    add::<SandboxClaim>(&mut out, client, ns, "SandboxClaim").await;
    add::<SandboxWarmPool>(&mut out, client, ns, "SandboxWarmPool").await;
    add::<SandboxTemplate>(&mut out, client, ns, "SandboxTemplate").await;
    out
}

/// Waits until nothing in the namespace changes for 3 s.
async fn quiet(client: &Client, ns: &str) -> BTreeMap<String, String> {
    let start = Instant::now();
    let mut last = snapshot(client, ns).await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = snapshot(client, ns).await;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(3) {
            return last;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "namespace {ns} never went quiet"
        );
    }
}

#[tokio::test]
async fn a_frozen_leader_is_replaced_and_writes_nothing_after_it_resumes() {
    let ns = TestNs::new("leader").await;
    let client = ns.client.clone();
    let kubeconfig = kubeconfig();
    let mut a = OperatorProc::spawn(&kubeconfig, &ns.name, "leader-a", &args(&ns.name));
    a.wait_ready().await;
    wait_holder(&client, &ns.name, "leader-a", Duration::from_secs(30)).await;
    let b = OperatorProc::spawn(&kubeconfig, &ns.name, "leader-b", &args(&ns.name));
    b.wait_ready().await;
    harness::template_and_pool(&client, &ns.name, POOL as i32, 200).await;
    invariants::settle(&client, &ns.name, 0, POOL, Duration::from_secs(60)).await;
    harness::burst(client.clone(), ns.name.clone(), "before", 0..4).await;
    invariants::settle(&client, &ns.name, 4, POOL, Duration::from_secs(60)).await;
    assert_eq!(
        holder(&client, &ns.name).await.0.as_deref(),
        Some("leader-a")
    );

    // Freeze the leader in the middle of a burst (some claims half served);
    // the standby must take over and finish them.
    let during = tokio::spawn(harness::burst(
        client.clone(),
        ns.name.clone(),
        "during",
        0..5,
    ));
    tokio::time::sleep(Duration::from_millis(60)).await;
    a.signal("STOP");
    let frozen = Instant::now();
    during.await.expect("burst");
    let takeover = wait_holder(&client, &ns.name, "leader-b", Duration::from_secs(30)).await;
    invariants::settle(&client, &ns.name, 9, POOL, Duration::from_secs(60)).await;
    println!(
        "leader-b took the Lease {takeover:.1?} after leader-a froze (lease {LEASE_SECONDS} s) \
         and served the claims created meanwhile"
    );
    assert!(
        takeover >= Duration::from_secs(LEASE_SECONDS - 1),
        "took over before the lease could have expired: {takeover:?}"
    );
    let before = quiet(&client, &ns.name).await;
    let (_, transitions) = holder(&client, &ns.name).await;

    // Resume the old leader: it must stop without writing.
    let frozen_for = frozen.elapsed();
    a.signal("CONT");
    let status = a.wait_exit(Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = snapshot(&client, &ns.name).await;
    let log = a.log_text();
    let refused = log.matches("write refused: not leading").count();
    let abandoned = log
        .matches("write abandoned on the wire: not leading")
        .count();
    println!(
        "leader-a resumed after {frozen_for:.1?} frozen: exit {status:?}, {refused} writes refused by the fence, \
         {abandoned} abandoned on the wire (fence closed after they entered the client)"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the resumed old leader exits with code 1; log:\n{log}"
    );
    assert!(
        log.contains("leadership lost"),
        "the old leader says why it stopped:\n{log}"
    );
    let changed: Vec<_> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .chain(before.iter().filter(|(k, _)| !after.contains_key(*k)))
        .collect();
    assert!(
        changed.is_empty(),
        "objects changed after the old leader resumed (nothing else was writing): {changed:?}"
    );
    assert_eq!(
        holder(&client, &ns.name).await,
        (Some("leader-b".to_string()), transitions),
        "the Lease stayed with leader-b"
    );

    // The new leader keeps serving; still no Pod serves two claims.
    harness::burst(client.clone(), ns.name.clone(), "after", 0..3).await;
    invariants::settle(&client, &ns.name, 12, POOL, Duration::from_secs(60)).await;
    drop(b);
}
