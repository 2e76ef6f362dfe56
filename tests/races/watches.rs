//! Each kind is watched once per operator. The claim, Sandbox and pool
//! controllers reconcile from the shared caches (woken by their triggers),
//! so no object is decoded and stored twice, and the claim path and the
//! pool controller cannot see different sets of pools: with a watch of its
//! own, the pool controller once filled a pool that the claim path's cache,
//! still backing off after a 410 at startup, did not have, and a claim
//! made then was served cold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;
use sandbox_fakeapi::Moment;

#[tokio::test]
async fn each_kind_is_watched_once_and_the_pool_fills_from_the_shared_cache() {
    let (fake, _operator, _kubelet) = one_warm_claim(2).await;

    let mut watches: BTreeMap<String, usize> = BTreeMap::new();
    for request in fake.log() {
        let is_watch = request
            .query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1");
        if request.method == "GET" && is_watch {
            let resource = request.path.rsplit('/').next().unwrap_or_default();
            *watches.entry(resource.to_owned()).or_default() += 1;
        }
    }
    for kind in [
        "pods",
        "sandboxes",
        "services",
        "sandboxwarmpools",
        "sandboxtemplates",
        "sandboxclaims",
    ] {
        assert_eq!(
            watches.get(kind).copied().unwrap_or_default(),
            1,
            "{kind} is watched once by the one operator (watches: {watches:?})"
        );
    }
}

/// A warm claim's Service (created by the claim, owned by it) deleted by
/// hand comes back at once, not at the next resync (30 s here): its
/// deletion wakes the claim. And one deleted while the Service watch is
/// down (the watch resumes too late and re-lists) comes back too: the
/// re-list hands the trigger the whole object that went away, whose owner
/// says which claim to wake.
#[tokio::test]
async fn a_deleted_service_wakes_its_claim_even_across_a_relist() {
    let (fake, _operator, _kubelet) = one_warm_claim(2).await;
    let uid = |fake: &sandbox_fakeapi::FakeApiServer| {
        fake.get(&service_path("c"))
            .map(|s| s["metadata"]["uid"].clone())
    };
    // The Sandbox's own Ready (after its adoption) is the last event that
    // wakes the claim by itself; from then on only the delete can.
    wait_until("the Sandbox is Ready", || {
        ready_in_api(&fake, &sandbox_path("c"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = uid(&fake).expect("the claim made its Service");

    fake.delete(&service_path("c")).expect("delete the Service");
    wait_until("the Service is back after a seen delete", || {
        uid(&fake).is_some_and(|u| u != first)
    })
    .await;
    let second = uid(&fake).unwrap();

    // Hold the Service watch's reconnect until the delete happened and
    // the history is compacted: the watch cannot see the delete and must
    // re-list (410).
    let gate = Arc::new(tokio::sync::Notify::new());
    let held = gate.clone();
    fake.hook(
        Moment::OnArrival,
        1,
        |r| {
            r.is_watch()
                && r.resource
                    .as_ref()
                    .is_some_and(|p| p.collection.resource == "services")
        },
        move |_| {
            let held = held.clone();
            async move { held.notified().await }
        },
    );
    fake.close_watches();
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.delete(&service_path("c"))
        .expect("delete the Service again");
    fake.compact();
    gate.notify_one();
    wait_until("the Service is back after a delete in a watch gap", || {
        uid(&fake).is_some_and(|u| u != second)
    })
    .await;
}

/// A claim woken while its cache is behind (its own Ready not seen yet, the
/// Sandbox this process just created not seen yet) waits for those events
/// instead of serving again: each of round one's creates is sent once.
/// The claims and Sandboxes watches go blind from the moment the Sandbox
/// create arrives until well after the Ready write, while the Service
/// watch, whose event wakes the claim, stays up. Before, that wake served
/// the claim a second time: three more POSTs, each answered AlreadyExists.
#[tokio::test]
async fn a_claim_woken_before_its_cache_catches_up_does_not_serve_twice() {
    let (fake, _operator, _kubelet) = full_pool(1).await;

    // The pool's own creates (its Pods, its NetworkPolicy) come before.
    let posts = |resource: &str| {
        fake.log()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with(&format!("/{resource}")))
            .count()
    };
    let before: Vec<usize> = ["sandboxes", "services", "networkpolicies"]
        .iter()
        .map(|r| posts(r))
        .collect();

    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (held, blinder) = (gate.clone(), fake.clone());
    fake.hook(
        Moment::OnArrival,
        1,
        |r| r.is("POST", "sandboxes"),
        move |_| {
            let (held, blinder) = (held.clone(), blinder.clone());
            async move {
                // The next reconnects of the claims and Sandboxes watches
                // wait for the gate; every watch is closed now.
                blinder.hook(
                    Moment::OnArrival,
                    2,
                    |r| {
                        r.is_watch()
                            && r.resource.as_ref().is_some_and(|p| {
                                ["sandboxclaims", "sandboxes"]
                                    .contains(&p.collection.resource.as_str())
                            })
                    },
                    move |_| {
                        let held = held.clone();
                        async move {
                            let _ = held.acquire().await;
                        }
                    },
                );
                blinder.close_watches();
            }
        },
    );
    create_claim(&fake, "c");
    wait_until("the claim is Ready in the API", || {
        ready_in_api(&fake, &claim_path("c"))
    })
    .await;
    // Room for the reconcile the Service's event woke (its cache is still
    // blind to the claim's Ready and to the Sandbox).
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.add_permits(2);
    wait_until("the claim is served warm", || {
        check_invariants(&fake)
            .get("c")
            .is_some_and(|(launch, _)| launch == "warm")
    })
    .await;
    for (resource, before) in ["sandboxes", "services", "networkpolicies"]
        .iter()
        .zip(before)
    {
        assert_eq!(posts(resource) - before, 1, "{resource} created once");
    }
}
