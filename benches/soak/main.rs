//! `make soak` (not in CI): claims created and deleted at a steady rate for
//! a fixed time against one operator, on the local control plane (started
//! when needed). Prints per minute the operator's RSS and CPU, the claims
//! served (warm/cold), their latency p50/p99 and the operator's
//! `sandbox_operator_tracked_entries` tables; at the end the objects left
//! after the deletes (must be 0) and the latency drift (last minute's p50
//! over the first's). Exits 1 when anything leaked or latency drifted more
//! than `SOAK_MAX_DRIFT`. Stops by itself.
//!
//! Settings (environment): `SOAK_MINUTES` (10), `SOAK_RATE` claims/s (5),
//! `SOAK_HOLD_S` seconds each claim lives once Ready (5), `SOAK_POOL` (20),
//! `SOAK_DELAY_MS` simulated Pod start-up (1000), `SOAK_MAX_DRIFT` (2.0).
//!
//! The stage (namespace, operator child, claim watch, pool) is the
//! claim-latency bench's own modules, included by path.

// Modules shared with the claim-latency bench carry unit tests of their own
// (run by `bench-logic`); here only their code is used.
#![allow(dead_code)]
#![cfg_attr(test, allow(unused_imports))]

#[path = "../claim_latency/apiserver.rs"]
mod apiserver;
#[path = "../claim_latency/assignments.rs"]
mod assignments;
#[path = "../claim_latency/child_env.rs"]
mod child_env;
#[path = "../claim_latency/claims.rs"]
mod claims;
#[path = "../claim_latency/delivery.rs"]
mod delivery;
#[path = "../claim_latency/environment.rs"]
mod environment;
#[path = "../claim_latency/floor.rs"]
mod floor;
#[path = "../claim_latency/guard.rs"]
mod guard;
#[path = "../claim_latency/identity.rs"]
mod identity;
#[path = "../claim_latency/operator.rs"]
mod operator;
#[path = "../claim_latency/procstat.rs"]
mod procstat;
#[path = "../claim_latency/queue.rs"]
mod queue;
#[path = "../claim_latency/report/mod.rs"]
mod report;
#[path = "../claim_latency/stats.rs"]
mod stats;
#[path = "../claim_latency/timeline.rs"]
mod timeline;

mod minute;
mod probe;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use kube::api::{Api, DeleteParams};

use sandbox_operator::api::SandboxClaim;

use environment::Environment;
use minute::{Minute, Served};

/// The soak's settings, from the environment.
struct Settings {
    minutes: u64,
    rate: f64,
    hold: Duration,
    pool: usize,
    delay_ms: u64,
    max_drift: f64,
}

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("soak: {name}={v} is not a valid value");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let s = Settings {
            minutes: setting("SOAK_MINUTES", 10),
            rate: setting("SOAK_RATE", 5.0),
            hold: Duration::from_secs_f64(setting("SOAK_HOLD_S", 5.0)),
            pool: setting("SOAK_POOL", 20),
            delay_ms: setting("SOAK_DELAY_MS", 1000),
            max_drift: setting("SOAK_MAX_DRIFT", 2.0),
        };
        if s.minutes == 0 || !(s.rate > 0.0 && s.rate <= 50.0) || s.pool == 0 {
            eprintln!("soak: SOAK_MINUTES >= 1, 0 < SOAK_RATE <= 50 and SOAK_POOL >= 1 please");
            std::process::exit(2);
        }
        s
    }
}

#[tokio::main]
async fn main() {
    let s = Settings::from_env();
    let env = Environment::up(&operator::Options::default()).await;
    let outcome = AssertUnwindSafe(soak(&env, &s)).catch_unwind().await;
    env.down().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(problem)) => {
            eprintln!("FAILED: {problem}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("FAILED: the soak stopped on the error above (namespace deleted)");
            std::process::exit(1);
        }
    }
}

/// One claim's life: created, Ready, held, deleted.
async fn lifecycle(env: &Environment, name: String, hold: Duration) -> Served {
    env.claims.create(name.clone(), false).await;
    env.claims
        .wait_ready(std::slice::from_ref(&name), Duration::from_secs(120))
        .await;
    let observation = env
        .claims
        .observations(std::slice::from_ref(&name))
        .remove(0);
    tokio::time::sleep(hold).await;
    Api::<SandboxClaim>::namespaced(env.client.clone(), &env.ns)
        .delete(&name, &DeleteParams::background())
        .await
        .expect("delete claim");
    Served {
        warm: observation.warm,
        latency_ms: observation
            .ready
            .duration_since(observation.start)
            .as_secs_f64()
            * 1000.0,
    }
}

async fn soak(env: &Environment, s: &Settings) -> Result<(), String> {
    let probe = probe::Probe::find(env)?;
    env.create_pool(s.pool, s.delay_ms, false).await;
    env.claims.wait_idle(s.pool).await;
    println!(
        "soak: {} min at {}/s, each claim held {:.0} s, pool {}, simulated start-up {} ms, ownership guard: {} (namespace {})",
        s.minutes,
        s.rate,
        s.hold.as_secs_f64(),
        s.pool,
        s.delay_ms,
        env.guard.label(),
        env.ns
    );
    println!("{}", Minute::header());
    let length = Duration::from_secs(s.minutes * 60);
    let started = Instant::now();
    let mut creating = tokio::time::interval(Duration::from_secs_f64(1.0 / s.rate));
    creating.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut minutes = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(60),
    );
    let mut inflight = futures::stream::FuturesUnordered::new();
    let (mut rows, mut current, mut next_id) = (Vec::new(), Vec::new(), 0u64);
    let mut last = probe.sample(env).await;
    loop {
        let creating_open = started.elapsed() < length;
        tokio::select! {
            _ = creating.tick(), if creating_open => {
                inflight.push(lifecycle(env, format!("s-{next_id}"), s.hold));
                next_id += 1;
            }
            Some(served) = inflight.next() => current.push(served),
            _ = minutes.tick(), if creating_open || !inflight.is_empty() => {
                let now = probe.sample(env).await;
                let row = Minute::new(rows.len() + 1, &last, &now, std::mem::take(&mut current));
                println!("{}", row.line());
                rows.push(row);
                last = now;
            }
            else => break,
        }
    }
    if !current.is_empty() {
        let now = probe.sample(env).await;
        let mut row = Minute::new(rows.len() + 1, &last, &now, current);
        row.partial = true;
        println!("{} (partial)", row.line());
        rows.push(row);
    }
    finish(env, &probe, s, &rows, next_id).await
}

/// Leaked objects and drift after the last claim was deleted.
async fn finish(
    env: &Environment,
    probe: &probe::Probe,
    s: &Settings,
    rows: &[Minute],
    created: u64,
) -> Result<(), String> {
    let leaked = probe.wait_for_no_leaks(env, Duration::from_secs(120)).await;
    let end = probe.sample(env).await;
    let served: usize = rows.iter().map(|r| r.served).sum();
    println!(
        "\n{created} claims created, {served} served and deleted; objects left after the deletes: {leaked}"
    );
    println!("tables at the end (pool still up): {}", end.tables_line());
    let full: Vec<&Minute> = rows.iter().filter(|r| r.served > 0 && !r.partial).collect();
    let drift = match (full.first(), full.last()) {
        (Some(first), Some(last)) if first.p50_ms > 0.0 => last.p50_ms / first.p50_ms,
        _ => f64::NAN,
    };
    println!(
        "latency drift: last full minute p50 / first minute p50 = {drift:.2} (limit {:.1})",
        s.max_drift
    );
    let mut problems = Vec::new();
    if leaked.total() > 0 {
        problems.push(format!("leaked objects: {leaked}"));
    }
    if drift.is_nan() || drift > s.max_drift {
        problems.push(format!("latency drifted x{drift:.2}"));
    }
    if served as u64 != created {
        problems.push(format!("{created} claims created but {served} served"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
