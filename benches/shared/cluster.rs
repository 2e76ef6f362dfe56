//! What every bench that runs the operator needs from the local control
//! plane: a client with the operator's CRDs applied, a fresh namespace, and
//! a free port on 127.0.0.1. Included with `#[path]` by `claim_latency`
//! (and through it `soak`) and `pool_sizing`.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::json;

/// A client from `kubeconfig`, after the CRDs are applied (server-side) and
/// given a second to be served.
pub async fn client_with_crds(kubeconfig: &Path) -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in sandbox_operator::api::crds() {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("sandbox-operator-bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    client
}

/// Creates a namespace named `<prefix>-<6 random hex digits>` and returns
/// its name.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let ns = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    ns
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
