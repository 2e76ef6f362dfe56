//! The operator binary run like the chart's Deployment: a release installed
//! with webhooks by URL on 127.0.0.1 (`LocalRelease`), the binary started
//! with the Deployment's own arguments and a token of the chart's
//! ServiceAccount (`ChartOperator`), readers of its log and metrics, and
//! the claim/pool objects its runs create through the webhooks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::api::PostParams;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use super::helm::{
    documents, find, helm_cluster, helm_install, operator_args, policy_config_map, run, succeed,
};
use super::install::uninstall_and_check;
use crate::common::{TestNs, free_port, http_get, operator_command, repo, wait_until_ok};
use crate::fixtures::{
    claim_of, create, listening_agent_pod, pool, service_account_kubeconfig, template_of,
};
use sandbox_operator::api::{ADMITTED_AT_ANNOTATION, SandboxClaim};

/// The operator binary started with the Deployment's own arguments (only the
/// listen addresses and the policy path made local) and the chart's RBAC.
fn start_like_the_deployment(
    docs: &[Yaml],
    ns: &TestNs,
    kubeconfig: &Path,
    metrics_port: u16,
    webhook_port: u16,
    log: &Path,
    env: &[(&str, &str)],
) -> tokio::process::Child {
    let policy = policy_config_map(docs);
    let policy_file = repo().join(format!("target/test-logs/{}-policy.yaml", ns.name));
    std::fs::write(
        &policy_file,
        policy["data"]["policy.yaml"].as_str().unwrap(),
    )
    .unwrap();
    let args: Vec<String> = operator_args(docs)
        .into_iter()
        .map(|arg| match arg.split_once('=') {
            Some(("--metrics-addr", _)) => format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            Some(("--webhook-addr", _)) => format!("--webhook-addr=127.0.0.1:{webhook_port}"),
            Some(("--policy-file", _)) => format!("--policy-file={}", policy_file.display()),
            _ => arg,
        })
        .collect();
    let file = std::fs::File::create(log).unwrap();
    operator_command(kubeconfig, file)
        .args(&args)
        .env("POD_NAME", format!("{}-local", ns.name))
        .env("POD_NAMESPACE", &ns.name)
        .envs(env.iter().copied())
        .spawn()
        .expect("start the operator binary")
}

/// A release installed for an operator that runs on this machine: webhooks
/// registered by URL on 127.0.0.1, watch and admission scoped to the test's
/// namespace (the release namespace too). Uninstalled (best effort) when
/// dropped unless [`LocalRelease::uninstall`] ran.
pub(super) struct LocalRelease {
    pub(super) name: String,
    namespace: String,
    /// The installed manifest, every document parsed.
    pub(super) docs: Vec<Yaml>,
    uninstalled: bool,
}

impl LocalRelease {
    pub(super) fn install(ns: &TestNs, webhook_port: u16, extra: &[&str]) -> LocalRelease {
        let name = ns.name.clone();
        succeed(
            helm_install(&name, &ns.name)
                .args([
                    "--set",
                    &format!("webhook.url=https://127.0.0.1:{webhook_port}"),
                    "--set",
                    &format!("controller.watchNamespace={}", ns.name),
                ])
                .args(extra),
        );
        let docs = documents(&succeed(helm_cluster().args([
            "get",
            "manifest",
            &name,
            "--namespace",
            &ns.name,
        ])));
        LocalRelease {
            name,
            namespace: ns.name.clone(),
            docs,
            uninstalled: false,
        }
    }

    pub(super) fn name_of(&self, kind: &str) -> String {
        find(&self.docs, kind)["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The value of `--flag=` in the Deployment's args.
    pub(super) fn flag(&self, flag: &str) -> String {
        let prefix = format!("{flag}=");
        operator_args(&self.docs)
            .into_iter()
            .find_map(|arg| arg.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("the Deployment has no {flag}"))
    }

    pub(super) fn uninstall(mut self) {
        self.uninstalled = true;
        uninstall_and_check(&self.name, &self.namespace);
    }
}

impl Drop for LocalRelease {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ =
                run(helm_cluster().args(["uninstall", &self.name, "--namespace", &self.namespace]));
        }
    }
}

/// The operator binary run like the release's Deployment with the chart's
/// ServiceAccount token; killed when dropped.
pub(super) struct ChartOperator {
    pub(super) child: tokio::process::Child,
    metrics_port: u16,
    webhook_port: u16,
    log: PathBuf,
    /// Its Lease identity (POD_NAME).
    pub(super) identity: String,
}

impl ChartOperator {
    /// Starts it and waits until /readyz answers 200.
    pub(super) async fn start(
        release: &LocalRelease,
        ns: &TestNs,
        webhook_port: u16,
    ) -> ChartOperator {
        Self::start_with_env(release, ns, webhook_port, &[]).await
    }

    /// [`Self::start`] with `env` added to the Deployment's environment.
    pub(super) async fn start_with_env(
        release: &LocalRelease,
        ns: &TestNs,
        webhook_port: u16,
        env: &[(&str, &str)],
    ) -> ChartOperator {
        let service_account = release.name_of("ServiceAccount");
        let sa_kubeconfig = service_account_kubeconfig(ns, &service_account);
        // Not the webhook's port (two free_port calls may return one port).
        let metrics_port = loop {
            let port = free_port();
            if port != webhook_port {
                break port;
            }
        };
        let log = repo().join(format!("target/test-logs/{}-operator.log", ns.name));
        let child = start_like_the_deployment(
            &release.docs,
            ns,
            &sa_kubeconfig,
            metrics_port,
            webhook_port,
            &log,
            env,
        );
        let op = ChartOperator {
            child,
            metrics_port,
            webhook_port,
            log,
            identity: format!("{}-local", ns.name),
        };
        let ready = wait_until_ok(Duration::from_secs(90), || async {
            http_get(&format!("http://127.0.0.1:{metrics_port}/readyz"))
                .await
                .is_ok_and(|(code, _)| code == 200)
        })
        .await;
        assert!(
            ready,
            "the operator, run as the chart's ServiceAccount, did not become ready; log:\n{}",
            op.log()
        );
        op
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status code of `/healthz` (0 when it does not answer).
    pub(super) async fn healthz(&self) -> u16 {
        http_get(&format!("http://127.0.0.1:{}/healthz", self.metrics_port))
            .await
            .map_or(0, |(code, _)| code)
    }

    pub(super) async fn metrics(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The serial of the certificate a fresh TLS handshake on the webhook
    /// port presents (`serial=...`), or "" when none.
    pub(super) fn served_serial(&self) -> String {
        let out = run(Command::new("sh").arg("-c").arg(format!(
            "openssl s_client -connect 127.0.0.1:{} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            self.webhook_port
        )));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Log lines that show the API server refusing the operator something.
pub(super) fn forbidden_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            line.to_ascii_lowercase().contains("forbidden")
                || line.contains("code: 403")
                || line.contains("\"code\":403")
        })
        .collect()
}

/// `sandbox_operator_reconcile_errors_total` series with a non-zero value.
pub(super) fn reconcile_errors(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("sandbox_operator_reconcile_errors_total"))
        .filter(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_none_or(|v| v != 0.0)
        })
        .collect()
}

/// A template whose Pods (an `agent` container listening on 8080) start
/// after 300 ms (KWOK) and a pool of `replicas` of it, both named `name`
/// (through the webhooks).
pub(super) async fn create_template_and_pool(ns: &TestNs, name: &str, replicas: i32) {
    create(ns, &template_of(name, listening_agent_pod(300))).await;
    create(ns, &pool(name, name, replicas)).await;
}

/// Creates a claim on `template` (through the webhooks) and checks that the
/// mutating webhook stamped it.
pub(super) async fn create_claim(
    ns: &TestNs,
    name: &str,
    template: &str,
    warmpool: Option<&str>,
) -> Result<(), String> {
    let mut spec = serde_json::json!({"sandboxTemplateRef": {"name": template}});
    if let Some(warmpool) = warmpool {
        spec["warmpool"] = Json::from(warmpool);
    }
    let created = ns
        .api::<SandboxClaim>()
        .create(&PostParams::default(), &claim_of(name, spec))
        .await
        .map_err(|e| e.to_string())?;
    assert!(
        created
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ADMITTED_AT_ANNOTATION)),
        "claim {name} was not mutated by the webhook: {:?}",
        created.metadata.annotations
    );
    Ok(())
}
