//! The flags of `sandbox-operator run`, each also read from the environment
//! variable its help names.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;

use crate::admission::UserNamespacesSetting;
use crate::api::dns::{is_dns_name, is_dns1123_label, is_dns1123_subdomain};
use crate::controller::NetworkPolicyMode;

/// Default of `--lease-name`.
const LEASE_NAME: &str = "sandbox-operator-leader";
/// Default of `--webhook-config-name`.
const WEBHOOK_CONFIG_NAME: &str = "sandbox-operator";
/// Default of `--webhook-service`.
const WEBHOOK_SERVICE: &str = "sandbox-operator-webhook";
/// Default of `--cert-secret`.
const CERT_SECRET: &str = "sandbox-operator-webhook-tls";
/// The largest `--cert-validity-hours` and `--cert-rotate-before-hours`:
/// ten years, the lifetime of the self-managed CA
/// (`sandbox_certs::PkiSettings::for_service`), which a serving certificate
/// it signs must not outlive. Before (found by review) any `u64` was taken,
/// and the conversion to seconds overflowed: a panic in debug builds, a
/// silently wrong lifetime in release builds.
pub const MAX_CERT_HOURS: u64 = 87_600;

/// `sandbox-operator run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Kubeconfig file to use instead of KUBECONFIG or the in-cluster configuration.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Address of the plain-HTTP admin port (/metrics, /healthz, /readyz).
    #[arg(long, env = "SANDBOX_METRICS_ADDR", default_value = "127.0.0.1:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a Lease; only the leader runs the controllers.
    #[arg(long, env = "SANDBOX_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "SANDBOX_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "SANDBOX_LEASE_NAME", default_value = LEASE_NAME)]
    pub lease_name: String,
    /// Seconds other replicas wait, from the last change they saw of the Lease, before taking it over.
    #[arg(long, env = "SANDBOX_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_duration_seconds: u64,
    /// Seconds the leader keeps leading without a successful renewal; then it exits (code 1). Must be shorter than the lease duration [default: two thirds of it, 10 of 15].
    #[arg(long, env = "SANDBOX_LEASE_RENEW_DEADLINE_SECONDS", value_parser = clap::value_parser!(u64).range(1..=299))]
    pub lease_renew_deadline_seconds: Option<u64>,
    /// Seconds between attempts to acquire or renew the Lease. Must be shorter than the renew deadline [default: a fifth of it, 2 of 10].
    #[arg(long, env = "SANDBOX_LEASE_RETRY_PERIOD_SECONDS", value_parser = clap::value_parser!(u64).range(1..=298))]
    pub lease_retry_period_seconds: Option<u64>,
    /// Seconds to connect (TCP + TLS) to the API server.
    #[arg(long, env = "SANDBOX_API_CONNECT_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub api_connect_timeout_seconds: u64,
    /// Seconds any API request but a watch may take before it fails and is retried.
    #[arg(long, env = "SANDBOX_API_REQUEST_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub api_request_timeout_seconds: u64,
    /// /healthz fails when a watch has been failing for longer than this many seconds.
    #[arg(long, env = "SANDBOX_HEALTH_WATCH_BROKEN_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub health_watch_broken_seconds: u64,
    /// /healthz fails when one reconcile has been running for longer than this many seconds.
    #[arg(long, env = "SANDBOX_HEALTH_RECONCILE_STUCK_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub health_reconcile_stuck_seconds: u64,
    /// Identity of this process (Events, Lease holder). Defaults to the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Cluster DNS domain used in status.serviceFQDN.
    #[arg(long, env = "SANDBOX_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Largest number of idle Pods one pool keeps, whatever its spec says.
    #[arg(long, env = "SANDBOX_MAX_POOL_REPLICAS", default_value_t = 1000, value_parser = clap::value_parser!(i32).range(0..))]
    pub max_pool_replicas: i32,
    /// Pod creates one pool runs in parallel.
    #[arg(long, env = "SANDBOX_POOL_CREATE_PARALLELISM", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub pool_create_parallelism: u64,
    /// Outdated idle Pods replaced at a time after a template change.
    #[arg(long, env = "SANDBOX_ROLLOUT_BATCH", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rollout_batch: u64,
    /// Publish Kubernetes Events (turn off for very high claim rates).
    #[arg(long, env = "SANDBOX_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub events: bool,
    /// Reconciles run at once per controller; the rest wait (see
    /// sandbox_operator_queue_depth and _queue_wait_seconds).
    #[arg(long, env = "SANDBOX_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SANDBOX_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Seconds between periodic resyncs of every object (jittered +-10%): the
    /// safety net against a missed watch event.
    #[arg(long, env = "SANDBOX_RESYNC_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub resync_seconds: u64,
    /// NetworkPolicy that closes a claimed Pod's ingress: `per-claim` (one
    /// per claim, the seed's design) or `per-template` (one per template,
    /// covering its idle, stolen and cold Pods: one write less per claim).
    #[arg(long, env = "SANDBOX_CLAIM_NETWORK_POLICY", value_enum, default_value_t = NetworkPolicyMode::PerClaim)]
    pub claim_network_policy: NetworkPolicyMode,
    /// At most how many milliseconds the adoption of a just-stolen Pod and a
    /// pool's refill creates wait for the claims this process is serving to
    /// write Ready, so the API server spends its time on their critical
    /// path first (0: never wait).
    #[arg(long, env = "SANDBOX_DEFER_OFF_PATH_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=5000))]
    pub defer_off_path_ms: u64,
    /// Threads that run the operator's async work (controllers, watches,
    /// webhook, metrics): 1 (the default) runs all of it on one thread,
    /// with no wake-ups across threads (about a sixth less CPU per claim in
    /// the bench, latency unchanged); 0 one per CPU; N that many.
    #[arg(long, env = "SANDBOX_RUNTIME_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub runtime_threads: u16,
    /// Serve the admission webhook (every replica serves it, leader or not).
    #[arg(long, env = "SANDBOX_WEBHOOK", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook: bool,
    /// HTTPS address of the admission webhook.
    #[arg(long, env = "SANDBOX_WEBHOOK_ADDR", default_value = "127.0.0.1:9443")]
    pub webhook_addr: SocketAddr,
    /// Namespace the operator runs in (certificate Secret; excluded from admission).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub operator_namespace: String,
    /// Name of both the Mutating- and the ValidatingWebhookConfiguration (caBundle is injected into them).
    #[arg(long, env = "SANDBOX_WEBHOOK_CONFIG_NAME", default_value = WEBHOOK_CONFIG_NAME)]
    pub webhook_config_name: String,
    /// Service in front of the webhook (names in the self-managed serving certificate).
    #[arg(long, env = "SANDBOX_WEBHOOK_SERVICE", default_value = WEBHOOK_SERVICE)]
    pub webhook_service: String,
    /// More names for the self-managed serving certificate, comma-separated
    /// (DNS names or IP addresses): the host of a webhook registered by URL
    /// (the chart's `webhook.url` adds it), which the API server checks the
    /// certificate against. 127.0.0.1 and the Service's names are always in.
    #[arg(long, env = "SANDBOX_WEBHOOK_CERT_HOSTS", value_delimiter = ',')]
    pub webhook_cert_hosts: Vec<String>,
    /// Secret holding the self-managed webhook CA and serving certificate.
    #[arg(long, env = "SANDBOX_CERT_SECRET", default_value = CERT_SECRET)]
    pub cert_secret: String,
    /// Read tls.crt/tls.key (and ca.crt) from this directory instead of managing certificates (cert-manager).
    #[arg(long, env = "SANDBOX_CERT_DIR")]
    pub cert_dir: Option<std::path::PathBuf>,
    /// Lifetime of self-managed serving certificates, in hours: at most
    /// 87600 (ten years, the lifetime of the CA that signs them).
    #[arg(long, env = "SANDBOX_CERT_VALIDITY_HOURS", default_value_t = 8760, value_parser = clap::value_parser!(u64).range(1..=MAX_CERT_HOURS))]
    pub cert_validity_hours: u64,
    /// Renew the serving certificate this many hours before it expires
    /// (capped at half the validity; at most 87600). Must be at least twice
    /// --cert-check-seconds.
    #[arg(long, env = "SANDBOX_CERT_ROTATE_BEFORE_HOURS", default_value_t = 720, value_parser = clap::value_parser!(u64).range(0..=MAX_CERT_HOURS))]
    pub cert_rotate_before_hours: u64,
    /// Seconds between certificate checks (rotation, caBundle repair).
    #[arg(long, env = "SANDBOX_CERT_CHECK_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub cert_check_seconds: u64,
    /// Register URL-based webhook configurations pointing at this base URL (local clusters only), e.g. https://127.0.0.1:9443.
    #[arg(long, env = "SANDBOX_REGISTER_WEBHOOK_URL")]
    pub register_webhook_url: Option<String>,
    /// When registering by URL and running as a ServiceAccount: let the operator's own Sandbox creates skip the webhooks (they are defaulted and validated in-process; see README "Admission").
    #[arg(long, env = "SANDBOX_WEBHOOK_SKIP_OWN_SANDBOX_CREATES", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook_skip_own_sandbox_creates: bool,
    /// When registering by URL: claim CREATEs skip the validating webhook; the mutating webhook, called anyway for the admission stamp, validates them with the same rules (one webhook call per claim create).
    #[arg(long, env = "SANDBOX_WEBHOOK_CLAIM_CREATES_IN_ONE_CALL", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook_claim_creates_in_one_call: bool,
    /// Apply the ownership guard (a ValidatingAdmissionPolicy: only the operator may add ownerReferences to its kinds) at start-up; the Helm chart installs it instead.
    #[arg(long, env = "SANDBOX_REGISTER_OWNERSHIP_GUARD", default_value_t = false, action = clap::ArgAction::Set)]
    pub register_ownership_guard: bool,
    /// Admission policy file (YAML); reloaded when it changes. Built-in defaults when unset.
    #[arg(long, env = "SANDBOX_POLICY_FILE")]
    pub policy_file: Option<std::path::PathBuf>,
    /// Whether `hostUsers: false` relaxes Pod Security's runAsNonRoot,
    /// runAsUser and baseline procMount checks, as Kubernetes 1.35+ does:
    /// only on a cluster whose API server keeps the field (it drops it when
    /// its UserNamespacesSupport gate is off, the default before 1.33, and
    /// the Pod then runs in the node's user namespace). `auto` finds out at
    /// start with a dry-run Pod create (hostUsers: false, in the watched
    /// namespace, else the operator's own) and the server version; until it
    /// knows, or if it cannot, nothing is relaxed. `enabled` says the
    /// cluster keeps the field and its Pod Security relaxes for it (1.33 or
    /// 1.34 with UserNamespacesPodSecurityStandards on, or where the probe
    /// cannot run); `disabled` says it does not.
    #[arg(long, env = "SANDBOX_USER_NAMESPACES", value_enum, default_value_t = UserNamespacesSetting::Auto)]
    pub user_namespaces: UserNamespacesSetting,
    /// Log format: text or json.
    #[arg(long, env = "SANDBOX_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl RunArgs {
    /// Every rule of the flags that needs no cluster, each where the value
    /// is used (the Lease's flags with `--leader-elect`, the webhook's with
    /// `--webhook`, the self-managed certificate's without `--cert-dir`):
    /// object names and namespaces as Kubernetes requires them for their
    /// kind, the cluster domain, the webhook URL and certificate hosts, and
    /// the certificate timings ([`check_cert_timings`]). The first rule
    /// broken is returned, naming the flag, the value and the rule. `run`
    /// calls it before anything else, so a bad value stops the start before
    /// any cluster call; before (found by review) such values were found
    /// out by the API server, or not at all (a certificate name).
    pub fn check(&self) -> Result<(), String> {
        check_namespace(
            "--operator-namespace",
            &self.operator_namespace,
            "it holds the certificate Secret and is excluded from admission",
        )?;
        if let Some(namespace) = &self.namespace {
            check_namespace(
                "--namespace",
                namespace,
                "the only namespace watched (leave the flag unset to watch all of them)",
            )?;
        }
        check_subdomain(
            "--cluster-domain",
            &self.cluster_domain,
            "a DNS domain such as cluster.local",
            "it ends every status.serviceFQDN",
        )?;
        if self.leader_elect {
            check_namespace(
                "--lease-namespace",
                &self.lease_namespace,
                "the leader Lease lives there",
            )?;
            check_subdomain(
                "--lease-name",
                &self.lease_name,
                "a Lease name",
                "the leader Lease is created under it",
            )?;
        }
        if self.webhook {
            check_subdomain(
                "--webhook-config-name",
                &self.webhook_config_name,
                "a webhook configuration name",
                "the caBundle is injected into, or the webhooks registered as, the configurations of that name",
            )?;
            if let Some(url) = &self.register_webhook_url {
                check_webhook_url(url)?;
            }
            if self.cert_dir.is_none() {
                check_service_name(&self.webhook_service)?;
                check_subdomain(
                    "--cert-secret",
                    &self.cert_secret,
                    "a Secret name",
                    "the self-managed CA and serving certificate are stored in it",
                )?;
                check_cert_hosts(&self.webhook_cert_hosts)?;
                self.check_cert_timings()?;
            }
        }
        Ok(())
    }

    /// `--cert-validity-hours` as a duration.
    pub fn cert_validity(&self) -> Duration {
        hours(self.cert_validity_hours)
    }

    /// `--cert-rotate-before-hours` as a duration.
    pub fn cert_rotate_before(&self) -> Duration {
        hours(self.cert_rotate_before_hours)
    }

    /// Checks the self-managed certificate timings against each other; see
    /// [`check_cert_timings`].
    pub fn check_cert_timings(&self) -> Result<(), String> {
        check_cert_timings(
            self.cert_validity(),
            self.cert_rotate_before(),
            Duration::from_secs(self.cert_check_seconds),
        )
    }
}

/// `count` hours; never overflows (the flags are bounded by
/// [`MAX_CERT_HOURS`] anyway).
fn hours(count: u64) -> Duration {
    Duration::from_secs(count.saturating_mul(3600))
}

/// The identity (`--identity`, env `POD_NAME`, else the host name) must
/// not be blank: it is the Lease's holderIdentity, where an empty holder
/// means "released" (`controller::leader::rules::decide`), so every replica
/// with an empty identity would take the Lease and lead at once; and it is
/// the reportingInstance of the Events.
pub fn check_identity(identity: &str) -> Result<(), String> {
    if identity.trim().is_empty() {
        return Err(format!(
            "--identity (POD_NAME) must not be empty or only whitespace (it is {identity:?}): it is \
             this replica's Lease holderIdentity, and an empty holder means a released Lease, so every \
             replica with it would lead at once (unset both to use the host name)"
        ));
    }
    Ok(())
}

const LABEL_RULE: &str = "at most 63 lowercase letters, digits or '-', starting and ending with \
                          a letter or digit";
const SUBDOMAIN_RULE: &str = "at most 253 lowercase letters, digits, '-' or '.', each \
                              dot-separated part starting and ending with a letter or digit";

fn check_namespace(flag: &str, value: &str, why: &str) -> Result<(), String> {
    if is_dns1123_label(value) {
        return Ok(());
    }
    Err(format!(
        "{flag} ({value:?}) must be a namespace name, a DNS-1123 label ({LABEL_RULE}): {why}"
    ))
}

fn check_subdomain(flag: &str, value: &str, what: &str, why: &str) -> Result<(), String> {
    if is_dns1123_subdomain(value) {
        return Ok(());
    }
    Err(format!(
        "{flag} ({value:?}) must be {what}, a DNS-1123 subdomain ({SUBDOMAIN_RULE}): {why}"
    ))
}

/// A Service name: a DNS-1123 label. Kubernetes wants a DNS-1035 label
/// (no leading digit) unless `RelaxedServiceNameValidation` is on (beta
/// from 1.36), so a leading digit (`helm install 2024-ops`) is left to the
/// API server (found by the second read).
fn check_service_name(value: &str) -> Result<(), String> {
    if is_dns1123_label(value) {
        return Ok(());
    }
    Err(format!(
        "--webhook-service ({value:?}) must be a Service name, a DNS-1123 label (at most 63 \
         lowercase letters, digits or '-', starting and ending with a letter or digit): the \
         serving certificate is issued for that Service's names"
    ))
}

/// Each host of `--webhook-cert-hosts`, as the certificate gets it (trimmed,
/// brackets around an IPv6 address dropped, empty ones skipped; see
/// `webhook::runtime`), must be an IP address or a DNS name.
fn check_cert_hosts(hosts: &[String]) -> Result<(), String> {
    for host in hosts {
        let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
        if bare.is_empty() || bare.parse::<IpAddr>().is_ok() || is_dns_name(bare) {
            continue;
        }
        return Err(format!(
            "--webhook-cert-hosts ({host:?}) must be IP addresses or DNS names (dot-separated \
             parts of at most 63 letters, digits or '-', neither starting nor ending with '-', \
             optionally after \"*.\"), comma-separated: each goes into the serving certificate, \
             which the API server checks the webhook URL's host against"
        ));
    }
    Ok(())
}

/// `--register-webhook-url`: what the API server accepts as a webhook's
/// `clientConfig.url` once a path is appended (https, a host, no user,
/// query or fragment), with a host that is an IP address or DNS name.
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    let refuse = |rule: &str| {
        Err(format!(
            "--register-webhook-url ({url:?}) must be an https:// URL with a host, and no user, \
             query or fragment, e.g. https://127.0.0.1:9443: {rule}"
        ))
    };
    if url.contains(['?', '#']) {
        return refuse(
            "the webhook paths are appended to it, so it cannot carry a query or fragment",
        );
    }
    let Ok(uri) = url.parse::<http::Uri>() else {
        return refuse("it does not parse as a URL");
    };
    if !uri
        .scheme_str()
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https"))
    {
        return refuse("the API server calls webhooks over HTTPS only");
    }
    let Some(authority) = uri.authority() else {
        return refuse("it has no host");
    };
    if authority.as_str().contains('@') {
        return refuse("the API server refuses a webhook URL with user information");
    }
    // `Authority::port` drops a port that is not a u16: read it here.
    let port = authority.as_str()[authority.host().len()..].strip_prefix(':');
    if port.is_some_and(|port| !port.parse::<u16>().is_ok_and(|port| port > 0)) {
        return refuse("its port must be a number from 1 to 65535");
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
        return refuse("its host must be an IP address or a DNS name");
    }
    Ok(())
}

/// The rules between `--cert-validity-hours`, `--cert-rotate-before-hours`
/// and `--cert-check-seconds` (self-managed certificates):
///
/// - the renewal window as applied (capped at half the validity, so a
///   window longer than the validity never makes every fresh certificate
///   due: `--cert-validity-hours 24` alone, with the default 720 h window,
///   stays valid; a second review found a first version refusing it) must be
///   at least two check intervals, so a check falls inside it with one to
///   spare for a failed pass, and the API server never meets an expired
///   certificate. `0` (renew only at expiry) is refused by this rule.
pub fn check_cert_timings(
    validity: Duration,
    rotate_before: Duration,
    check_interval: Duration,
) -> Result<(), String> {
    let hours = |d: Duration| d.as_secs() / 3600;
    let window = rotate_before.min(validity / 2);
    if window < check_interval.saturating_mul(2) {
        let capped = if window < rotate_before {
            format!(
                ", capped at half of --cert-validity-hours ({} h) to {} s",
                hours(validity),
                window.as_secs()
            )
        } else {
            String::new()
        };
        return Err(format!(
            "--cert-rotate-before-hours ({} h{capped}) must be at least twice --cert-check-seconds \
             ({} s): the certificate is renewed at the first check inside that window, and with a \
             shorter one the API server can meet an expired certificate (lower \
             --cert-check-seconds or raise --cert-rotate-before-hours)",
            hours(rotate_before),
            check_interval.as_secs()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
