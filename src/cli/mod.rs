//! `sandbox-operator claim ...`: claim a sandbox from a shell script.
//!
//! - `claim create --template T [--namespace N] [--wait] [--timeout S] [-o table|wide|json|yaml]`
//!   creates a SandboxClaim; with `--wait` it watches that one claim until
//!   Ready and prints the connection facts (Pod, IPs, Service FQDN, launch
//!   type) and the latency, as measured by the operator and by the client.
//! - `claim delete NAME [--namespace N] [--wait]` deletes it (its Sandbox,
//!   Pod, Service and NetworkPolicy follow by garbage collection).
//!
//! Exit codes, for scripts: **0** done; **1** the claim failed (its `Ready`
//! reason, e.g. `TemplateNotFound`, is on stderr), timed out (stderr says
//! whether it was starting cold and its last condition), was deleted while
//! waiting, or `delete` found no such claim; **2** bad usage, or the API
//! server refused or failed a request (e.g. an admission denial naming the
//! field, or an unknown namespace); **130 / 143** interrupted by SIGINT /
//! SIGTERM. A claim that may exist when `create` fails or is interrupted is
//! deleted (by the name the command picked, and its uid once known) unless
//! `--keep-on-failure`.

pub mod claim;
pub mod facts;
pub mod run_args;

use std::cell::RefCell;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use kube::Api;

use crate::api::SandboxClaim;
use claim::{ClaimError, Cleaned, CreateRequest};
use facts::{ClaimFacts, Format, render};

/// Exit codes, printed under `--help`.
const EXIT_CODES: &str = "Exit codes: 0 done; 1 the claim failed (its Ready reason on stderr), timed out \
(stderr names the last condition and whether it was starting cold), was deleted while waiting, or \
delete found no such claim; 2 bad usage, or the API server refused or failed a request (or gave no \
answer to the create within --timeout); 130 / 143 interrupted by SIGINT / SIGTERM (the claim is \
deleted unless --keep-on-failure).";

/// `claim` subcommands.
#[derive(Subcommand, Debug)]
pub enum ClaimCommand {
    /// Create a SandboxClaim; with --wait, wait until Ready and print how to reach it.
    #[command(after_help = EXIT_CODES)]
    Create(CreateArgs),
    /// Delete a SandboxClaim (and through it its Sandbox, Pod and Service).
    #[command(after_help = EXIT_CODES)]
    Delete(DeleteArgs),
}

/// Flags of `claim create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The SandboxTemplate to claim a sandbox of.
    #[arg(long, short = 't')]
    pub template: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Claim name (default: `<template>-` plus a random suffix).
    #[arg(long)]
    pub name: Option<String>,
    /// `spec.warmpool`: `default` (any pool of the template), `none` (always cold) or a pool name.
    #[arg(long)]
    pub warm_pool: Option<String>,
    /// Wait until the claim is Ready (exit 1 if it fails or times out).
    #[arg(long)]
    pub wait: bool,
    /// Seconds --wait waits at most.
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    pub timeout: f64,
    /// Keep a claim that failed or timed out under --wait (default: delete it).
    #[arg(long)]
    pub keep_on_failure: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Flags of `claim delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The claim's name.
    pub name: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Wait until the claim is gone.
    #[arg(long)]
    pub wait: bool,
    /// Seconds --wait waits at most.
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    pub timeout: f64,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() && s <= 86_400.0 => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds in (0, 86400]")),
    }
}

/// Runs a `claim` subcommand on its own runtime; prints the result on
/// stdout, a failure on stderr, and returns the documented exit code.
pub fn run(command: ClaimCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match command {
            ClaimCommand::Create(args) => create(args).await,
            ClaimCommand::Delete(args) => delete(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

async fn claims_api(namespace: Option<String>) -> Result<(Api<SandboxClaim>, String), ClaimError> {
    let client = claim::client().await?;
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_string());
    Ok((Api::namespaced(client, &namespace), namespace))
}

async fn create(args: CreateArgs) -> Result<ExitCode, ClaimError> {
    let (api, namespace) = claims_api(args.namespace.clone()).await?;
    // The claim that may exist: its name (set before each POST) and, once
    // the create answered, its uid. Whatever ends this command early (a
    // failure, a timeout, SIGINT or SIGTERM) deletes it by them, unless
    // --keep-on-failure.
    let sent = RefCell::new(None);
    let made = RefCell::new(None);
    let outcome = tokio::select! {
        result = create_and_wait(&api, &namespace, &args, &sent, &made) => Ended::Done(result),
        signal = interrupted() => Ended::Interrupted(signal),
    };
    let claim = sent.borrow().clone();
    let uid = made.borrow().clone();
    let clean_up = |why: String| async move {
        let Some(claim) = claim else { return };
        let name = &claim.name;
        if args.keep_on_failure {
            eprintln!("{why}: kept SandboxClaim {namespace}/{name} (--keep-on-failure)");
            return;
        }
        let deleting = claim::clean_up(&api, &namespace, &claim, uid);
        match tokio::time::timeout(CLEAN_UP_WITHIN, deleting).await {
            Ok(Ok(Cleaned::Deleted)) => eprintln!(
                "{why}: deleted SandboxClaim {namespace}/{name} (--keep-on-failure keeps it)"
            ),
            Ok(Ok(Cleaned::Gone)) => {
                eprintln!("{why}: no SandboxClaim {namespace}/{name} of this command's exists")
            }
            Ok(Ok(Cleaned::NotOurs)) => eprintln!(
                "{why}: SandboxClaim {namespace}/{name} was made by another request: left alone"
            ),
            Ok(Err(e)) => eprintln!("{why}: could not delete SandboxClaim {namespace}/{name}: {e}"),
            Err(_) => eprintln!(
                "{why}: could not delete SandboxClaim {namespace}/{name}: no answer within {}s",
                CLEAN_UP_WITHIN.as_secs()
            ),
        }
    };
    match outcome {
        Ended::Done(Ok(code)) => Ok(code),
        Ended::Done(Err(error)) => {
            clean_up("failed".into()).await;
            Err(error)
        }
        Ended::Interrupted(signal) => {
            eprintln!("error: interrupted by {}", signal.name());
            clean_up(format!("interrupted by {}", signal.name())).await;
            Ok(ExitCode::from(signal.exit_code()))
        }
    }
}

/// How long the clean-up delete of a failed or interrupted create waits
/// for the API server at most.
const CLEAN_UP_WITHIN: Duration = Duration::from_secs(10);

/// How `claim create` ended.
enum Ended {
    Done(Result<ExitCode, ClaimError>),
    Interrupted(Signal),
}

/// A signal that ends `claim create` early.
#[derive(Clone, Copy)]
enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// 128 plus the signal's number, as shells report it.
    fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

/// Resolves at the first SIGINT or SIGTERM (never, for one that cannot be
/// listened for).
async fn interrupted() -> Signal {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = interrupt => Signal::Interrupt,
        () = terminate => Signal::Terminate,
    }
}

/// The create and, with --wait, the wait, all within --timeout; prints the
/// result. `sent` and `made` say which claim may exist (see [`create`]).
async fn create_and_wait(
    api: &Api<SandboxClaim>,
    namespace: &str,
    args: &CreateArgs,
    sent: &RefCell<Option<claim::Sent>>,
    made: &RefCell<Option<String>>,
) -> Result<ExitCode, ClaimError> {
    let request = CreateRequest {
        template: args.template.clone(),
        name: args.name.clone(),
        warm_pool: args.warm_pool.clone(),
    };
    let started = Instant::now();
    let timeout = Duration::from_secs_f64(args.timeout);
    let creating = claim::create(api, namespace, &request, sent);
    let created = match tokio::time::timeout(timeout, creating).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(ClaimError::NoAnswer {
                namespace: namespace.into(),
                name: sent
                    .borrow()
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                timeout,
            });
        }
    };
    *made.borrow_mut() = created.metadata.uid.clone();
    if !args.wait {
        *sent.borrow_mut() = None;
        print!("{}", render(&ClaimFacts::of(&created, None), args.output));
        return Ok(ExitCode::SUCCESS);
    }
    let facts = claim::wait_ready(api, &created, started, timeout).await?;
    *sent.borrow_mut() = None;
    print!("{}", render(&facts, args.output));
    Ok(ExitCode::SUCCESS)
}

async fn delete(args: DeleteArgs) -> Result<ExitCode, ClaimError> {
    let (api, namespace) = claims_api(args.namespace).await?;
    if !claim::delete(&api, &namespace, &args.name, None).await? {
        eprintln!("SandboxClaim {namespace}/{} not found", args.name);
        return Ok(ExitCode::from(1));
    }
    if args.wait {
        claim::wait_deleted(
            &api,
            &namespace,
            &args.name,
            Duration::from_secs_f64(args.timeout),
        )
        .await?;
    }
    println!("sandboxclaim {namespace}/{} deleted", args.name);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: ClaimCommand,
    }

    #[test]
    fn create_flags_parse_and_bad_values_are_usage_errors() {
        let cli = Cli::try_parse_from([
            "x",
            "create",
            "-t",
            "aio",
            "-n",
            "agents",
            "--wait",
            "--timeout",
            "2.5",
            "-o",
            "json",
        ])
        .unwrap();
        let ClaimCommand::Create(args) = cli.command else {
            panic!("create expected");
        };
        assert_eq!(
            (args.template.as_str(), args.namespace.as_deref()),
            ("aio", Some("agents"))
        );
        assert!(args.wait && !args.keep_on_failure);
        assert_eq!((args.timeout, args.output), (2.5, Format::Json));
        for bad in [
            vec!["x", "create"],
            vec!["x", "create", "-t", "aio", "--timeout", "0"],
            vec!["x", "create", "-t", "aio", "-o", "xml"],
            vec!["x", "delete"],
        ] {
            let error = Cli::try_parse_from(&bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn exit_codes_separate_claim_failures_from_api_errors() {
        let failed = ClaimError::Deleted {
            namespace: "n".into(),
            name: "c".into(),
        };
        assert_eq!(failed.exit_code(), 1);
        let timeout = ClaimError::Timeout {
            namespace: "n".into(),
            name: "c".into(),
            timeout: Duration::from_secs(2),
            condition: Some(Box::new(facts::ReadyCondition {
                status: "False".into(),
                reason: "SandboxNotReady".into(),
                message: "Pod c is Pending".into(),
            })),
            launch_type: Some("cold".into()),
        };
        assert_eq!(timeout.exit_code(), 1);
        assert_eq!(
            timeout.to_string(),
            "SandboxClaim n/c not Ready after 2s while starting cold: \
             last condition Ready=False SandboxNotReady: Pod c is Pending"
        );
        let rejected = ClaimError::Rejected {
            namespace: "n".into(),
            code: 400,
            reason: "BadRequest".into(),
            message: "spec.sandboxTemplateRef.name: bad".into(),
        };
        assert_eq!(rejected.exit_code(), 2);
        let denied = ClaimError::Rejected {
            namespace: "n".into(),
            code: 400,
            reason: String::new(),
            message: "denied".into(),
        };
        assert_eq!(
            denied.to_string(),
            "SandboxClaim create in namespace n rejected (400): denied"
        );
    }

    #[test]
    fn claim_object_is_named_and_a_picked_name_is_a_valid_start() {
        let request = CreateRequest {
            template: "aio".into(),
            name: None,
            warm_pool: Some("none".into()),
        };
        let claim = claim::claim_object(&request, "aio-x2b4c", "token");
        assert!(claim::made_by(&claim, "token") && !claim::made_by(&claim, "other"));
        assert_eq!(claim.metadata.name.as_deref(), Some("aio-x2b4c"));
        assert_eq!(claim.metadata.generate_name, None);
        assert_eq!(claim.spec.warm_pool.as_deref(), Some("none"));
        assert_eq!(claim::name_prefix("aio"), "aio-");
        assert_eq!(claim::name_prefix("py3.12"), "py3-12-");
        assert_eq!(claim::name_prefix("3d-render"), "c-3d-render-");
        assert_eq!(claim::name_prefix("Big_Template."), "big-template-");
        let long = claim::name_prefix(&"a".repeat(70));
        assert_eq!(long.len(), 58, "room for five characters in 63");
        assert!(long.ends_with("a-"));
    }
}
