//! Each kind is watched once per operator. The Sandbox and pool
//! controllers reconcile from the shared caches (woken by their triggers),
//! so no object is decoded and stored twice, and the claim path and the
//! pool controller cannot see different sets of pools: with a watch of its
//! own, the pool controller once filled a pool that the claim path's cache,
//! still backing off after a 410 at startup, did not have, and a claim
//! made then was served cold.

use std::collections::BTreeMap;

use crate::harness::*;

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
