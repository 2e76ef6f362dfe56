//! Starting the admission webhook inside `run`: certificates (self-managed in
//! a Secret, or files from cert-manager), optional registration by URL for
//! local clusters, and the HTTPS server. Every replica serves the webhook,
//! leader or not.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::{Api, Client};
use sandbox_certs::{CertManager, CertManagerConfig, PkiSettings};
use sandbox_webhook::{AdmissionHandler, CertStore, ServerConfig};
use tokio::sync::watch;
use tracing::{info, warn};

use super::config as webhook_config;
use crate::metrics::Metrics;

/// Settings of the webhook (from `run`'s flags).
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// HTTPS listen address.
    pub addr: SocketAddr,
    /// Namespace of the operator (certificate Secret, excluded from admission).
    pub operator_namespace: String,
    /// Name of both webhook configurations.
    pub config_name: String,
    /// Service name the serving certificate is issued for.
    pub service: String,
    /// More names (DNS or IP) for the self-managed serving certificate.
    pub cert_hosts: Vec<String>,
    /// Secret holding the self-managed PKI.
    pub cert_secret: String,
    /// cert-manager mode: read `tls.crt`/`tls.key` from here instead.
    pub cert_dir: Option<PathBuf>,
    /// Register URL-based configurations pointing here (local clusters).
    pub register_url: Option<String>,
    /// Let the operator's own Sandbox creates skip the URL-registered
    /// webhooks when it runs as a ServiceAccount (see
    /// [`webhook_config::match_conditions`]).
    pub skip_own_sandbox_creates: bool,
    /// When registering by URL: claim CREATEs skip the validating webhook
    /// (the mutating one validates them).
    pub claim_creates_in_one_call: bool,
    /// Limit admission to one namespace (set with `--namespace`).
    pub only_namespace: Option<String>,
    /// Time between certificate checks.
    pub cert_check_interval: Duration,
    /// Serving certificate lifetime.
    pub cert_validity: Duration,
    /// Renew this long before expiry.
    pub cert_rotate_before: Duration,
}

/// A running webhook; [`WebhookHandle::stop`] unregisters URL-based
/// configurations this process created.
pub struct WebhookHandle {
    client: Client,
    registered: Option<webhook_config::Registered>,
}

impl WebhookHandle {
    /// Removes the URL-based configurations (graceful shutdown only), each
    /// only if it is still the one this process wrote (see
    /// [`webhook_config::unregister`]).
    pub async fn stop(self) {
        if let Some(registered) = &self.registered {
            webhook_config::unregister(&self.client, registered).await;
        }
    }
}

/// Binds the port, obtains certificates, registers (if asked) and serves.
pub async fn start(
    settings: WebhookSettings,
    client: Client,
    metrics: Arc<Metrics>,
    handler: Arc<dyn AdmissionHandler>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<WebhookHandle> {
    if settings.cert_dir.is_none() {
        crate::cli::run_args::check_cert_timings(
            settings.cert_validity,
            settings.cert_rotate_before,
            settings.cert_check_interval,
        )
        .map_err(anyhow::Error::msg)?;
    }
    if settings.register_url.is_some() {
        // Before anything writes to configurations of that name (the
        // certificate manager injects its caBundle into them).
        webhook_config::check_ours(&client, &settings.config_name)
            .await
            .map_err(|e| anyhow::anyhow!("--register-webhook-url: {e}"))?;
    }
    let listener = sandbox_webhook::bind(settings.addr).await?;
    let store = match &settings.cert_dir {
        Some(dir) => {
            let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
            let store = CertStore::from_files(&cert, &key).map_err(|e| cert_dir_error(dir, e))?;
            tokio::spawn(
                store
                    .clone()
                    .watch_files(cert, key, Duration::from_secs(10)),
            );
            tokio::spawn(follow_served_expiry(
                store.clone(),
                metrics.certificate_expiry.clone(),
                Duration::from_secs(10),
            ));
            store
        }
        None => self_managed(&settings, &client, &metrics, stop.clone()).await?,
    };

    let mut registered = None;
    if let Some(url) = &settings.register_url {
        let ca = match &settings.cert_dir {
            Some(dir) => ca_bundle_from_dir(dir)?,
            None => ca_bundle_from_secret(&client, &settings).await?,
        };
        let user = if settings.skip_own_sandbox_creates {
            own_username(&client).await
        } else {
            None
        };
        match &user {
            Some(user) if webhook_config::is_service_account(user) => info!(
                user,
                "the operator's own Sandbox creates skip the webhooks (admitted in-process)"
            ),
            Some(user) => info!(
                user,
                "not a ServiceAccount: the operator's own Sandbox creates go through the webhooks"
            ),
            None => {}
        }
        let target = webhook_config::ByUrl {
            name: &settings.config_name,
            base_url: url,
            ca_bundle: &ca,
            operator_namespace: &settings.operator_namespace,
            only: settings.only_namespace.as_deref(),
            operator_user: user.as_deref(),
            claim_creates_in_one_call: settings.claim_creates_in_one_call,
        };
        let applied = webhook_config::register_by_url(&client, &target)
            .await
            .map_err(|e| {
                anyhow::anyhow!("registering the webhook configurations by URL {url}: {e}")
            })?;
        info!(url, name = %settings.config_name, "registered webhook configurations by URL");
        registered = Some(applied);
    }

    let mut shutdown = stop.clone();
    tokio::spawn(async move {
        let served = sandbox_webhook::serve(
            listener,
            ServerConfig::default(),
            handler,
            store,
            async move {
                let _ = shutdown.wait_for(|s| *s).await;
            },
        )
        .await;
        if let Err(error) = served {
            warn!(%error, "the webhook server stopped with an error");
        }
    });
    info!(addr = %settings.addr, "admission webhook listening");
    Ok(WebhookHandle { client, registered })
}

/// The username the API server knows this process by (a SelfSubjectReview),
/// or `None` when it cannot tell (then no webhook call is skipped).
async fn own_username(client: &Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = SelfSubjectReview {
        metadata: Default::default(),
        status: None,
    };
    match Api::<SelfSubjectReview>::all(client.clone())
        .create(&Default::default(), &review)
        .await
    {
        Ok(answer) => answer
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username),
        Err(error) => {
            warn!(%error, "SelfSubjectReview failed: the operator's own Sandbox creates go through the webhooks");
            None
        }
    }
}

/// Adds `hosts` (IP addresses or DNS names; brackets around an IPv6
/// address are dropped) to the serving certificate's names, once each.
fn add_cert_hosts(pki: &mut PkiSettings, hosts: &[String]) {
    for host in hosts
        .iter()
        .map(|h| h.trim().trim_start_matches('[').trim_end_matches(']'))
    {
        if host.is_empty() {
            continue;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) if !pki.ip_addresses.contains(&ip) => pki.ip_addresses.push(ip),
            Ok(_) => {}
            Err(_) if !pki.dns_names.iter().any(|n| n == host) => {
                pki.dns_names.push(host.to_string())
            }
            Err(_) => {}
        }
    }
}

async fn self_managed(
    settings: &WebhookSettings,
    client: &Client,
    metrics: &Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<CertStore> {
    let mut pki = PkiSettings::for_service(&settings.service, &settings.operator_namespace);
    pki.ip_addresses.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    add_cert_hosts(&mut pki, &settings.cert_hosts);
    pki.serving_validity = settings.cert_validity;
    pki.rotate_before = settings.cert_rotate_before;
    let mut manager = CertManager::new(
        client.clone(),
        CertManagerConfig {
            namespace: settings.operator_namespace.clone(),
            secret_name: settings.cert_secret.clone(),
            settings: pki,
            mutating_webhooks: vec![settings.config_name.clone()],
            validating_webhooks: vec![settings.config_name.clone()],
            check_interval: settings.cert_check_interval,
        },
    );
    let first = manager.ensure().await.map_err(|e| {
        // With its causes (the API server's or the connection's answer).
        anyhow::Error::new(e).context(format!(
            "obtaining the webhook certificate (Secret {}/{})",
            settings.operator_namespace, settings.cert_secret
        ))
    })?;
    let store = CertStore::from_pem(&first.cert_pem, &first.key_pem).map_err(|e| {
        anyhow::anyhow!(
            "the webhook serving pair (keys tls.crt and tls.key) of Secret {}/{} could not be loaded: {}",
            settings.operator_namespace,
            settings.cert_secret,
            e.describe()
        )
    })?;
    // The gauge follows the certificate actually served, not the Secret's:
    // a pair the server refused to load must not look renewed.
    tokio::spawn(follow_served_expiry(
        store.clone(),
        metrics.certificate_expiry.clone(),
        settings.cert_check_interval.min(Duration::from_secs(10)),
    ));
    let updater = store.clone();
    let mut shutdown = stop;
    tokio::spawn(manager.run(
        move |cert, key| {
            updater.update(cert, key).map_err(|e| e.describe())?;
            info!("webhook serving certificate reloaded");
            Ok::<(), String>(())
        },
        async move {
            let _ = shutdown.wait_for(|s| *s).await;
        },
    ));
    Ok(store)
}

/// Checks, before any cluster call, that `--cert-dir` holds a pair the
/// server can load and, when registering by URL, a readable `ca.crt`: the
/// same loads as [`start`] makes later (which re-reads them, as they may
/// be renewed meanwhile).
pub fn check_cert_dir(dir: &std::path::Path, register_by_url: bool) -> anyhow::Result<()> {
    CertStore::from_files(&dir.join("tls.crt"), &dir.join("tls.key"))
        .map_err(|e| cert_dir_error(dir, e))?;
    if register_by_url {
        ca_bundle_from_dir(dir)?;
    }
    Ok(())
}

/// `--cert-dir` whose pair cannot be loaded: the error with its causes, so
/// the OS's reason shows (`No such file or directory`, `Is a directory`).
/// Before (found by review) only `failed to read DIR/tls.crt` did.
fn cert_dir_error(dir: &std::path::Path, error: sandbox_webhook::Error) -> anyhow::Error {
    anyhow::Error::new(error).context(format!(
        "loading the webhook certificate from --cert-dir {}",
        dir.display()
    ))
}

/// cert-manager mode with registration by URL: the CA to register as the
/// configurations' `caBundle`, from `ca.crt` next to `tls.crt`. It must be
/// there and hold a certificate; an empty `caBundle` would make the API
/// server refuse every call (or trust nothing it can verify).
fn ca_bundle_from_dir(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("ca.crt");
    let rule = "--register-webhook-url with --cert-dir registers this file as the caBundle, \
                so it must hold the CA certificate that signed tls.crt";
    let ca = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {} ({rule}): {e}", path.display()))?;
    if let Err(e) = sandbox_certs::not_after(&ca) {
        anyhow::bail!(
            "{} holds no readable certificate ({rule}): {}",
            path.display(),
            e.describe()
        );
    }
    Ok(ca)
}

async fn ca_bundle_from_secret(
    client: &Client,
    settings: &WebhookSettings,
) -> anyhow::Result<String> {
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        client.clone(),
        &settings.operator_namespace,
    )
    .get(&settings.cert_secret)
    .await
    .map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "reading the caBundle to register from Secret {}/{}",
            settings.operator_namespace, settings.cert_secret
        ))
    })?;
    let data = secret.data.unwrap_or_default();
    let bundle = data
        .get("ca-bundle.crt")
        .or_else(|| data.get("ca.crt"))
        .ok_or_else(|| anyhow::anyhow!("Secret {} has no ca.crt", settings.cert_secret))?;
    Ok(String::from_utf8(bundle.0.clone())?)
}

/// Keeps the expiry gauge on the certificate the server is serving now,
/// checked every `interval`: with certificates from files (cert-manager)
/// the store reloads a renewed pair by itself, and the gauge must follow
/// it, or the expiry alert fires for a certificate long replaced.
async fn follow_served_expiry(store: CertStore, gauge: prometheus::Gauge, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Some(der) = store.current().cert.first()
            && let Ok(not_after) = sandbox_certs::not_after_der(der)
        {
            gauge.set(not_after.as_second() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A webhook registered by URL is checked against the URL's host: IPs
    /// and names go to their own lists, once each.
    #[test]
    fn extra_hosts_join_the_certificate_names() {
        let mut pki = PkiSettings::for_service("svc", "ns");
        pki.ip_addresses.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        add_cert_hosts(
            &mut pki,
            &[
                "10.0.0.5".into(),
                "[fd00::1]".into(),
                "webhook.example.com".into(),
                "127.0.0.1".into(),
                "svc".into(),
                " ".into(),
            ],
        );
        assert_eq!(
            pki.ip_addresses,
            ["127.0.0.1", "10.0.0.5", "fd00::1"]
                .map(|ip| ip.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        assert_eq!(pki.dns_names.last().unwrap(), "webhook.example.com");
        assert_eq!(pki.dns_names.iter().filter(|n| *n == "svc").count(), 1);
    }

    #[test]
    fn registering_by_url_needs_a_readable_ca_next_to_the_files() {
        let dir = std::env::temp_dir().join(format!("sandbox-ca-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let error = ca_bundle_from_dir(&dir).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("cannot read {}", dir.join("ca.crt").display())),
            "{error}"
        );
        assert!(
            error.contains("--register-webhook-url with --cert-dir"),
            "{error}"
        );
        std::fs::write(dir.join("ca.crt"), "").unwrap();
        let error = ca_bundle_from_dir(&dir).unwrap_err().to_string();
        assert!(error.contains("holds no readable certificate"), "{error}");
        let (cert, _, _) = pair(10);
        std::fs::write(dir.join("ca.crt"), &cert).unwrap();
        assert_eq!(ca_bundle_from_dir(&dir).unwrap(), cert);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The OS's reason shows, for a missing directory and for a file
    /// that is a directory.
    #[test]
    fn an_unreadable_cert_dir_keeps_its_reason() {
        let missing = std::path::Path::new("/nonexistent-107");
        let error = CertStore::from_files(&missing.join("tls.crt"), &missing.join("tls.key"))
            .err()
            .unwrap();
        let text = format!("{:#}", cert_dir_error(missing, error));
        assert_eq!(
            text,
            "loading the webhook certificate from --cert-dir /nonexistent-107: failed to read \
             /nonexistent-107/tls.crt: No such file or directory (os error 2)"
        );
        let dir = std::env::temp_dir().join(format!("sandbox-cert-dir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tls.crt")).unwrap();
        let error = CertStore::from_files(&dir.join("tls.crt"), &dir.join("tls.key"))
            .err()
            .unwrap();
        let text = format!("{:#}", cert_dir_error(&dir, error));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text.ends_with(": Is a directory (os error 21)"), "{text}");
    }

    /// A self-signed pair valid for `days` days from now, and its expiry.
    fn pair(days: u64) -> (String, String, f64) {
        let ca = sandbox_certs::generate_ca(
            "follow",
            Duration::from_secs(24 * 3600 * days),
            jiff::Timestamp::now(),
        )
        .unwrap();
        (ca.cert_pem, ca.key_pem, ca.not_after.as_second() as f64)
    }

    #[tokio::test]
    async fn the_expiry_gauge_follows_a_pair_reloaded_from_files() {
        let (cert, key, first) = pair(10);
        let store = CertStore::from_pem(&cert, &key).unwrap();
        let gauge = prometheus::Gauge::new("expiry", "test").unwrap();
        tokio::spawn(follow_served_expiry(
            store.clone(),
            gauge.clone(),
            Duration::from_millis(10),
        ));
        let settles_on = |want: f64| {
            let gauge = gauge.clone();
            async move {
                for _ in 0..500 {
                    if gauge.get() == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("the gauge shows {}, not {want}", gauge.get());
            }
        };
        settles_on(first).await;
        // Renewed (as cert-manager does): the store reloads, the gauge follows.
        let (cert, key, renewed) = pair(90);
        assert_ne!(first, renewed);
        store.update(&cert, &key).unwrap();
        settles_on(renewed).await;
    }
}
