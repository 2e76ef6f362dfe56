//! The flags of `sandbox-operator run`, each also read from the environment
//! variable its help names.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::admission::UserNamespacesSetting;
use crate::controller::NetworkPolicyMode;

/// Default of `--lease-name`.
const LEASE_NAME: &str = "sandbox-operator-leader";
/// Default of `--webhook-config-name`.
const WEBHOOK_CONFIG_NAME: &str = "sandbox-operator";
/// Default of `--webhook-service`.
const WEBHOOK_SERVICE: &str = "sandbox-operator-webhook";
/// Default of `--cert-secret`.
const CERT_SECRET: &str = "sandbox-operator-webhook-tls";

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
    /// Lifetime of self-managed serving certificates, in hours.
    #[arg(long, env = "SANDBOX_CERT_VALIDITY_HOURS", default_value_t = 8760, value_parser = clap::value_parser!(u64).range(1..))]
    pub cert_validity_hours: u64,
    /// Renew the serving certificate this many hours before it expires
    /// (capped at half the validity). Must be at least twice
    /// --cert-check-seconds.
    #[arg(long, env = "SANDBOX_CERT_ROTATE_BEFORE_HOURS", default_value_t = 720, value_parser = clap::value_parser!(u64).range(0..))]
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
    /// Checks the self-managed certificate timings against each other; see
    /// [`check_cert_timings`].
    pub fn check_cert_timings(&self) -> Result<(), String> {
        check_cert_timings(
            Duration::from_secs(self.cert_validity_hours.saturating_mul(3600)),
            Duration::from_secs(self.cert_rotate_before_hours.saturating_mul(3600)),
            Duration::from_secs(self.cert_check_seconds),
        )
    }
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
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn timings(args: &[&str]) -> Result<(), String> {
        let cli = Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).unwrap();
        cli.run.check_cert_timings()
    }

    #[test]
    fn user_namespaces_are_found_out_unless_set() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
                .map(|cli| cli.run.user_namespaces)
        };
        assert_eq!(parse(&[]).unwrap(), UserNamespacesSetting::Auto);
        assert_eq!(
            parse(&["--user-namespaces", "enabled"]).unwrap(),
            UserNamespacesSetting::Enabled
        );
        assert_eq!(
            parse(&["--user-namespaces=disabled"]).unwrap(),
            UserNamespacesSetting::Disabled
        );
        assert!(parse(&["--user-namespaces", "yes"]).is_err());
    }

    #[test]
    fn the_default_certificate_timings_are_valid() {
        assert_eq!(timings(&[]), Ok(()));
        // What the integration tests and the chart's tests pass.
        assert_eq!(timings(&["--cert-check-seconds", "1"]), Ok(()));
    }

    #[test]
    fn a_renewal_window_shorter_than_two_checks_is_refused() {
        let error = timings(&["--cert-rotate-before-hours", "0"]).unwrap_err();
        assert!(
            error.starts_with(
                "--cert-rotate-before-hours (0 h) must be at least twice --cert-check-seconds (60 s)"
            ),
            "{error}"
        );
        let error = timings(&[
            "--cert-rotate-before-hours",
            "1",
            "--cert-check-seconds",
            "1801",
        ])
        .unwrap_err();
        assert!(
            error.contains("at least twice --cert-check-seconds (1801 s)"),
            "{error}"
        );
        assert_eq!(
            timings(&[
                "--cert-rotate-before-hours",
                "1",
                "--cert-check-seconds",
                "1800"
            ]),
            Ok(())
        );
        // The cap at half the validity counts.
        let error = timings(&[
            "--cert-validity-hours",
            "2",
            "--cert-rotate-before-hours",
            "1",
            "--cert-check-seconds",
            "1801",
        ])
        .unwrap_err();
        assert!(error.contains("at least twice"), "{error}");
        let error = timings(&[
            "--cert-validity-hours",
            "3",
            "--cert-rotate-before-hours",
            "2",
            "--cert-check-seconds",
            "3000",
        ])
        .unwrap_err();
        assert!(
            error.contains("capped at half of --cert-validity-hours (3 h) to 5400 s"),
            "{error}"
        );
    }

    #[test]
    fn a_short_validity_alone_is_valid_its_window_capped_at_half() {
        // The default window (720 h) is longer than the validity: the cap
        // at half the validity applies, as it always did.
        assert_eq!(timings(&["--cert-validity-hours", "24"]), Ok(()));
        assert_eq!(
            timings(&[
                "--cert-validity-hours",
                "24",
                "--cert-rotate-before-hours",
                "24"
            ]),
            Ok(())
        );
    }
}
