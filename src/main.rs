//! The `sandbox-operator` binary: `run`, `crd`, `policy check`, `pool advise`, `claim`, `version`.

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::{error, info};

use sandbox_operator::admin::{self, Health, HealthThresholds};
use sandbox_operator::admission::{PolicyStore, SandboxAdmission};
use sandbox_operator::cli::run_args::{self, RunArgs};
use sandbox_operator::client::{self as api_client, ClientTimeouts};
use sandbox_operator::controller::leader::{LeaderConfig, LeaderElector};
use sandbox_operator::controller::run::run_controllers;
use sandbox_operator::controller::{Config, Context, Triggers};
use sandbox_operator::log_pipe;
use sandbox_operator::metrics::Metrics;
use sandbox_operator::webhook::runtime::{self as webhook_runtime, WebhookSettings};

#[derive(Parser, Debug)]
#[command(
    name = "sandbox-operator",
    version,
    about = "Warm-pool sandboxes for AI agents on Kubernetes",
    long_about = "Runs the Sandbox, SandboxClaim and SandboxWarmPool controllers and the admission webhook.\n\
                  Every flag of `run` can also be set with the environment variable shown in its help."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controllers (and the webhook when enabled). A flag given
    /// twice takes its last value (the chart's `controller.extraArgs` come
    /// after the flags it renders, so they override them).
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Print every CRD as YAML on stdout.
    Crd,
    /// Admission policy tools.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Warm pool tools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Print the version.
    Version,
    /// Claim a sandbox from the command line (exit 0 ok, 1 claim failed or timed out, 2 usage or API error).
    #[command(subcommand)]
    Claim(sandbox_operator::cli::ClaimCommand),
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Offline: print the patch the mutating webhook would apply to each
    /// object of the files and every denial; exit code 1 on any denial, 2 on
    /// an unreadable file or policy.
    Check {
        /// YAML files with one or more objects each.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Policy file (default: the built-in policy).
        #[arg(long)]
        policy: Option<std::path::PathBuf>,
        /// Judge `hostUsers: false` as on a cluster that supports user
        /// namespaces or not: offline there is no cluster to ask, so by
        /// default it relaxes nothing, as in the operator until it knows.
        #[arg(long, value_enum, default_value_t = OfflineUserNamespaces::Disabled)]
        user_namespaces: OfflineUserNamespaces,
    },
}

/// `policy check --user-namespaces`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OfflineUserNamespaces {
    /// The API server keeps hostUsers and its Pod Security relaxes for it
    /// (Kubernetes 1.35+ by default).
    Enabled,
    /// hostUsers: false relaxes no check.
    Disabled,
}

#[derive(Subcommand, Debug)]
enum PoolCommand {
    /// Offline: the pool size for a target hit ratio (a claim that finds no
    /// idle Pod takes the oldest starting one, see `sizing::model`) and a
    /// table of size -> predicted hit ratio; exit code 2 on bad input.
    Advise {
        /// Claim arrival rate, COUNT/UNIT with UNIT s, min or h (e.g. 120/min).
        #[arg(long)]
        rate: String,
        /// Refill time of one Pod (created -> Ready), e.g. 8s, 1500ms, 2m.
        #[arg(long)]
        refill: String,
        /// Target hit ratio, strictly between 0 and 1.
        #[arg(long, default_value = "0.99")]
        target: String,
    },
}

/// mimalloc instead of glibc's malloc: the operator decodes a stream of
/// watch events into short-lived buffers, which fragmented glibc's heap
/// (about a quarter of the operator's CPU in malloc/free at 5,000 Pods,
/// and RSS that the freed buffers kept).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Errors are printed as one readable chain ("what failed: why"), never
    // as a backtrace, whatever RUST_BACKTRACE says; exit code 2.
    match dispatch(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Crd => print!("{}", sandbox_operator::api::crds_yaml()),
        Command::Version => println!("sandbox-operator {}", env!("CARGO_PKG_VERSION")),
        Command::Claim(command) => return Ok(sandbox_operator::cli::run(command)),
        Command::Policy(PolicyCommand::Check {
            files,
            policy,
            user_namespaces,
        }) => {
            use sandbox_operator::admission::UserNamespaces;
            let user_namespaces = match user_namespaces {
                OfflineUserNamespaces::Enabled => UserNamespaces::Supported,
                OfflineUserNamespaces::Disabled => UserNamespaces::Unsupported,
            };
            let admitted = sandbox_operator::admission::run_policy_check(
                &files,
                policy.as_deref(),
                user_namespaces,
            )?;
            if !admitted {
                return Ok(std::process::ExitCode::from(1));
            }
        }
        Command::Pool(PoolCommand::Advise {
            rate,
            refill,
            target,
        }) => {
            use sandbox_operator::sizing::advise;
            let (rate, refill, target) = advise::parse_all(&rate, &refill, &target)?;
            let advice = advise::advise(rate, refill, target);
            print!("{}", advise::render(&advice, rate, refill, target));
        }
        Command::Run(args) => {
            let logs = log_pipe::init(&args.log_format);
            // The blocking pool runs the webhook's reviews (one each, see
            // `webhook::server`) and name lookups: a few threads serve
            // them, queued beyond that, rather than one thread (and one
            // allocator heap) per review of a burst.
            let runtime = match args.runtime_threads {
                1 => tokio::runtime::Builder::new_current_thread()
                    .max_blocking_threads(BLOCKING_THREADS)
                    .enable_all()
                    .build()?,
                0 => tokio::runtime::Builder::new_multi_thread()
                    .max_blocking_threads(BLOCKING_THREADS)
                    .enable_all()
                    .build()?,
                n => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(usize::from(n))
                    .max_blocking_threads(BLOCKING_THREADS)
                    .enable_all()
                    .build()?,
            };
            let outcome = runtime.block_on(run(*args));
            // The last lines (why it stopped) are written before exit.
            logs.drain(log_pipe::EXIT_DRAIN);
            outcome?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (identity, leader) = check_flags(&args)?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(HealthThresholds {
        watch_broken: Duration::from_secs(args.health_watch_broken_seconds),
        reconcile_stuck: Duration::from_secs(args.health_reconcile_stuck_seconds),
    }));
    let (stop_tx, stop_rx) = watch::channel(false);

    // Policy first: a bad policy file stops the start with a clear error.
    let policy = load_policy(&args, &metrics)?;
    serve_admin(&args, &metrics, &health, &stop_rx).await?;
    let clients = ApiClients::connect(&args, &metrics).await?;
    let config = controller_config(&args, &identity, &policy)?;
    if args.register_ownership_guard {
        register_ownership_guard(&clients.unfenced).await?;
    }
    // The policy file is followed with or without the webhook: the
    // controllers apply the policy too (pool cap, egress deny list, the
    // Sandboxes and Pods they create).
    policy.current().network.warn_unless_metadata_denied();
    if let Some(path) = &args.policy_file {
        follow_policy_file(path, &policy, &metrics);
    }
    settle_user_namespaces(&args, &clients.unfenced, &policy).await;
    // The webhook serves on every replica, leader or not.
    let webhook = if args.webhook {
        Some(start_webhook(&args, &policy, &clients.unfenced, &metrics, &stop_rx).await?)
    } else {
        None
    };

    // Ready = this replica serves admission (standbys too); whether it runs
    // the controllers is the `leader` gauge.
    health.set_ready(true);
    stop_on_signal(stop_tx.clone());

    let elector = leader.map(|config| LeaderElector::new(clients.unfenced.clone(), config));
    // The controllers' client refuses writes once leadership is lost.
    let controller_client = clients.for_controllers(elector.as_ref(), &metrics)?;
    if let Some(elector) = &elector
        && !acquire_lease(elector, &stop_rx).await
    {
        // A take may have landed before the stop: give it back
        // (release checks that we hold it).
        step_down(Some(elector), webhook).await;
        return Ok(());
    }
    metrics.leader.set(1);

    let started = start_controllers(controller_client, config, &metrics, &health, &stop_rx).await;
    let (ctx, triggers) = match started {
        Some(Ok(started)) => started,
        stopped_or_failed => {
            metrics.leader.set(0);
            step_down(elector.as_ref(), webhook).await;
            return match stopped_or_failed {
                Some(Err(error)) => Err(error),
                _ => Ok(()),
            };
        }
    };
    info!(
        identity,
        leader_election = args.leader_elect,
        "controllers running"
    );
    run_controllers(ctx, triggers, stop_rx.clone()).await;
    metrics.leader.set(0);
    step_down(elector.as_ref(), webhook).await;
    info!("stopped");
    Ok(())
}

/// Checks the flags before any cluster call; gives the identity and the election settings.
fn check_flags(args: &RunArgs) -> anyhow::Result<(String, Option<LeaderConfig>)> {
    // Flag checks first: a bad setting stops the start with a clear error,
    // before any cluster call.
    args.check().map_err(anyhow::Error::msg)?;
    if args.webhook
        && let Some(dir) = &args.cert_dir
    {
        webhook_runtime::check_cert_dir(dir, args.register_webhook_url.is_some())?;
    }
    let identity = identity(args)?;
    let leader = args
        .leader_elect
        .then(|| leader_config(args, &identity))
        .transpose()?;
    Ok((identity, leader))
}

/// Reads `--policy-file` (else the built-in policy) and exports the policy file gauge.
fn load_policy(args: &RunArgs, metrics: &Metrics) -> anyhow::Result<PolicyStore> {
    let policy = match &args.policy_file {
        Some(path) => PolicyStore::from_file(path).map_err(|e| policy_file_error(path, e))?,
        None => PolicyStore::default(),
    };
    if args.policy_file.is_some() {
        // Exported from the first scrape on (it reads 1: the file was read).
        metrics.follow_policy_file();
    }
    Ok(policy)
}

/// Binds the admin port (`--metrics-addr`) and serves it until the stop.
async fn serve_admin(
    args: &RunArgs,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    stop_rx: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let admin_listener = admin::bind(args.metrics_addr).await?;
    tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        health.clone(),
        stop_rx.clone(),
    ));
    Ok(())
}

/// The API server's settings from the flags and the client without a fence.
struct ApiClients {
    kube_config: kube::Config,
    request_timeout: Duration,
    /// Unfenced: the Lease and the webhook (served by every replica).
    unfenced: kube::Client,
}

impl ApiClients {
    /// Finds the cluster (`--kubeconfig` or in-cluster) and builds the unfenced client.
    async fn connect(args: &RunArgs, metrics: &Arc<Metrics>) -> anyhow::Result<Self> {
        let request_timeout = Duration::from_secs(args.api_request_timeout_seconds);
        let kube_config = api_client::infer_config(
            args.kubeconfig.as_deref(),
            ClientTimeouts {
                connect: Duration::from_secs(args.api_connect_timeout_seconds),
                request: request_timeout,
            },
        )
        .await?;
        let unfenced = api_client::build(
            kube_config.clone(),
            request_timeout,
            None,
            Some(metrics.api_observer()),
        )?;
        Ok(ApiClients {
            kube_config,
            request_timeout,
            unfenced,
        })
    }

    /// The controllers' client: fenced by the elector's Lease, else the unfenced one.
    fn for_controllers(
        &self,
        elector: Option<&LeaderElector>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<kube::Client> {
        Ok(match elector {
            Some(elector) => api_client::build(
                self.kube_config.clone(),
                self.request_timeout,
                Some(elector.fence()),
                Some(metrics.api_observer()),
            )?,
            None => self.unfenced.clone(),
        })
    }
}

/// The controllers' settings from the flags; logs the namespaces left alone.
fn controller_config(
    args: &RunArgs,
    identity: &str,
    policy: &PolicyStore,
) -> anyhow::Result<Config> {
    let config = Config {
        cluster_domain: args.cluster_domain.clone(),
        max_pool_replicas: args.max_pool_replicas,
        pool_create_parallelism: usize::try_from(args.pool_create_parallelism)?,
        rollout_batch: usize::try_from(args.rollout_batch)?,
        events: args.events,
        concurrency: args.concurrency,
        identity: identity.to_string(),
        namespace: args.namespace.clone(),
        resync: Duration::from_secs(args.resync_seconds),
        claim_network_policy: args.claim_network_policy,
        defer_off_path: Duration::from_millis(args.defer_off_path_ms),
        policy: policy.clone(),
        // The same namespaces the webhook configurations exclude.
        excluded_namespaces: match &args.namespace {
            Some(_) => Vec::new(),
            None => vec!["kube-system".to_string(), args.operator_namespace.clone()],
        },
    };

    if !config.excluded_namespaces.is_empty() {
        tracing::info!(
            excluded = ?config.excluded_namespaces,
            "sandbox objects in these namespaces are left alone (admission skips them too); --namespace watches one namespace and excludes none"
        );
    }
    Ok(config)
}

/// Applies the ownership guard's ValidatingAdmissionPolicy (`--register-ownership-guard`).
async fn register_ownership_guard(client: &kube::Client) -> anyhow::Result<()> {
    sandbox_operator::webhook::guard::register(client)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "--register-ownership-guard: applying ValidatingAdmissionPolicy sandbox-operator-ownership-guard failed (needs Kubernetes 1.30+ and the right to create it; run with --register-ownership-guard=false to skip): {error:#}"
            )
        })?;
    info!("ownership guard applied (ValidatingAdmissionPolicy sandbox-operator-ownership-guard)");
    Ok(())
}

/// Reloads the policy file when it changes, counting reloads and refusals.
fn follow_policy_file(path: &std::path::Path, policy: &PolicyStore, metrics: &Arc<Metrics>) {
    let observed = metrics.clone();
    tokio::spawn(policy.clone().watch_file(
        path.to_path_buf(),
        Duration::from_secs(5),
        move |taken| {
            observed
                .policy_reloads
                .with_label_values(&[if taken { "reloaded" } else { "refused" }])
                .inc();
            observed.policy_file_current.set(i64::from(taken));
        },
    ));
}

/// Settles whether `hostUsers: false` may relax Pod Security, before the webhook serves.
async fn settle_user_namespaces(args: &RunArgs, client: &kube::Client, policy: &PolicyStore) {
    // Whether hostUsers: false may relax Pod Security: found out (or set)
    // before the webhook serves. Probed where the operator may create Pods:
    // the watched namespace, else its own (the ClusterRole covers it).
    sandbox_operator::admission::user_namespaces::settle(
        args.user_namespaces,
        client,
        args.namespace
            .clone()
            .unwrap_or_else(|| args.operator_namespace.clone()),
        policy,
    )
    .await;
}

/// Starts the admission webhook (served by every replica, leader or not).
async fn start_webhook(
    args: &RunArgs,
    policy: &PolicyStore,
    client: &kube::Client,
    metrics: &Arc<Metrics>,
    stop_rx: &watch::Receiver<bool>,
) -> anyhow::Result<webhook_runtime::WebhookHandle> {
    let handler = Arc::new(SandboxAdmission::new(policy.clone()).with_metrics(metrics.clone()));
    webhook_runtime::start(
        webhook_settings(args),
        client.clone(),
        metrics.clone(),
        handler,
        stop_rx.clone(),
    )
    .await
}

/// The webhook's settings from the flags.
fn webhook_settings(args: &RunArgs) -> WebhookSettings {
    WebhookSettings {
        addr: args.webhook_addr,
        operator_namespace: args.operator_namespace.clone(),
        config_name: args.webhook_config_name.clone(),
        service: args.webhook_service.clone(),
        cert_hosts: args.webhook_cert_hosts.clone(),
        cert_secret: args.cert_secret.clone(),
        cert_dir: args.cert_dir.clone(),
        register_url: args.register_webhook_url.clone(),
        skip_own_sandbox_creates: args.webhook_skip_own_sandbox_creates,
        claim_creates_in_one_call: args.webhook_claim_creates_in_one_call,
        only_namespace: args.namespace.clone(),
        cert_check_interval: Duration::from_secs(args.cert_check_seconds),
        cert_validity: args.cert_validity(),
        cert_rotate_before: args.cert_rotate_before(),
    }
}

/// Sends the stop on Ctrl-C or SIGTERM.
fn stop_on_signal(stop_tx: watch::Sender<bool>) {
    // Ctrl-C / SIGTERM: stop controllers, release the Lease, exit.
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
}

/// Waits for the Lease (false when the stop comes first), then exits the process if it is lost.
async fn acquire_lease(elector: &LeaderElector, stop_rx: &watch::Receiver<bool>) -> bool {
    let mut stop = stop_rx.clone();
    tokio::select! {
        _ = elector.acquire() => {}
        _ = stop.wait_for(|s| *s) => return false,
    }
    let mut lost = elector.keep();
    let mut stopping = stop_rx.clone();
    tokio::spawn(async move {
        tokio::select! {
            // A graceful stop releases the Lease itself (below).
            _ = stopping.wait_for(|stop| *stop) => {}
            Ok(_) = lost.wait_for(|held| !*held) => {
                // Like client-go's OnStoppedLeading: the fence already
                // refuses writes; exit so a fresh process starts clean.
                error!("leadership lost: exiting (code 1)");
                log_pipe::drain_installed();
                std::process::exit(1);
            }
        }
    });
    true
}

/// Starts the controllers' caches; None when the stop comes first.
async fn start_controllers(
    client: kube::Client,
    config: Config,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    stop_rx: &watch::Receiver<bool>,
) -> Option<anyhow::Result<(Arc<Context>, Triggers)>> {
    // The caches' first lists may hang (API trouble): a stop meanwhile, or
    // a failed start, still gives the Lease back.
    let mut stop = stop_rx.clone();
    tokio::select! {
        started = Context::start(client, config, metrics.clone(), health.clone()) => Some(started),
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// The end of `run`, however it comes: gives the Lease back (when held),
/// then stops the webhook (draining the reviews in flight).
async fn step_down(
    elector: Option<&LeaderElector>,
    webhook: Option<webhook_runtime::WebhookHandle>,
) {
    if let Some(elector) = elector {
        elector.release().await;
    }
    if let Some(webhook) = webhook {
        webhook.stop().await;
    }
}

/// Threads of the runtime's blocking pool (see `Command::Run`).
const BLOCKING_THREADS: usize = 8;

/// This process's identity: `--identity` (env `POD_NAME`), else the host
/// name, else one made of the process id; a blank one given is refused
/// ([`run_args::check_identity`]), a blank `HOSTNAME` is skipped.
fn identity(args: &RunArgs) -> anyhow::Result<String> {
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|host| !host.trim().is_empty())
            .unwrap_or_else(|| format!("sandbox-operator-{}", std::process::id()))
    });
    run_args::check_identity(&identity).map_err(anyhow::Error::msg)?;
    Ok(identity)
}

/// `--policy-file` that cannot be used: the policy's error with its causes
/// (the OS's reason for an unreadable file, which names the file itself).
/// Before (found by review) the error was rebuilt from its text and the
/// reason lost: `cannot read policy file /tmp` without `Is a directory`.
fn policy_file_error(
    path: &std::path::Path,
    error: sandbox_operator::admission::PolicyError,
) -> anyhow::Error {
    let context = match &error {
        sandbox_operator::admission::PolicyError::Read { .. } => "--policy-file".to_string(),
        _ => format!("--policy-file {}", path.display()),
    };
    anyhow::Error::new(error).context(context)
}

/// The election settings from the flags, checked against the timing rules
/// and the identity rule.
fn leader_config(args: &RunArgs, identity: &str) -> anyhow::Result<LeaderConfig> {
    run_args::check_identity(identity).map_err(anyhow::Error::msg)?;
    // Unset timings follow the lease as client-go's defaults do (15/10/2 s).
    let lease_duration = Duration::from_secs(args.lease_duration_seconds);
    let renew_deadline = args
        .lease_renew_deadline_seconds
        .map_or(lease_duration * 2 / 3, Duration::from_secs);
    let retry_period = args
        .lease_retry_period_seconds
        .map_or(renew_deadline / 5, Duration::from_secs);
    let config = LeaderConfig {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.to_string(),
        lease_duration,
        renew_deadline,
        retry_period,
    };
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["sandbox-operator", "run"].iter().chain(args)).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not the run command");
        };
        *args
    }

    /// An empty holderIdentity means a released Lease: two replicas with
    /// an empty identity would both lead.
    #[test]
    fn a_blank_identity_gets_no_leader_config() {
        let args = run_args(&[]);
        for identity in ["", "  "] {
            let error = leader_config(&args, identity).unwrap_err().to_string();
            assert!(
                error.starts_with("--identity (POD_NAME) must not be empty"),
                "{error}"
            );
        }
        let config = leader_config(&args, "operator-0").unwrap();
        assert_eq!(config.identity, "operator-0");
        let error = identity(&run_args(&["--identity="]))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("--identity (POD_NAME)"), "{error}");
        assert_eq!(identity(&run_args(&["--identity=pod-a"])).unwrap(), "pod-a");
    }

    /// The OS's reason shows (`Is a directory`), the flag is named, and
    /// the file once.
    #[test]
    fn an_unreadable_policy_file_keeps_its_reason() {
        let dir = std::env::temp_dir();
        let error = PolicyStore::from_file(&dir).unwrap_err();
        let text = format!("{:#}", policy_file_error(&dir, error));
        assert!(
            text.starts_with("--policy-file: cannot read policy file "),
            "{text}"
        );
        assert!(text.contains("Is a directory"), "{text}");
        assert_eq!(
            text.matches(&*dir.display().to_string()).count(),
            1,
            "{text}"
        );
        let file = dir.join(format!("policy-107-{}.yaml", std::process::id()));
        std::fs::write(&file, "nonsense: [").unwrap();
        let error = PolicyStore::from_file(&file).unwrap_err();
        let text = format!("{:#}", policy_file_error(&file, error));
        std::fs::remove_file(&file).unwrap();
        assert!(
            text.starts_with(&format!("--policy-file {}: ", file.display())),
            "{text}"
        );
    }

    /// The chart renders its flags, then `controller.extraArgs`: a flag
    /// given again there takes its last value rather than stopping the
    /// operator with "cannot be used multiple times".
    #[test]
    fn a_run_flag_given_twice_takes_its_last_value() {
        let cli = Cli::try_parse_from([
            "sandbox-operator",
            "run",
            "--concurrency=8",
            "--concurrency=64",
        ])
        .expect("a repeated flag parses");
        let Command::Run(args) = cli.command else {
            panic!("not the run command");
        };
        assert_eq!(args.concurrency, 64);
    }
}
