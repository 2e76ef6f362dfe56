//! End-to-end claim latency: warm path vs cold path, on the real local
//! control plane with KWOK simulating a cold start, and the operator running
//! as in production (its own process, webhook registered by URL), measured
//! against the floor of the same run: the round trip and the throughput of
//! plain API writes on the same control plane, sampled between the claims.
//!
//! Measures claim create -> Ready from this client's clock through a watch,
//! for four scenarios (warm-sequential, cold-sequential, warm-burst,
//! overflow-burst), counts API writes per warm claim from the API server's
//! own `apiserver_request_total`, reads the operator's CPU and memory from
//! `/proc`, checks from its claim watch that no Pod ever served two claims,
//! prints a table and
//! writes `target/bench/claim-latency.json` and `.svg`.
//!
//! `cargo bench --bench claim-latency -- [--quick|--demo|--scale [N]] [--pool N]
//! [--delay-ms D] [--warm N] [--cold N] [--floor-per-gap N]
//! [--network-policy per-claim|per-template] [--scale-timeout-s S]
//! [--operator-as-admin] [--no-ownership-guard]`
//!
//! Modules: `settings` (flags), `environment` (namespace, operator, pool),
//! `identity` (the operator's ServiceAccount and token), `guard` (the
//! ownership guard, on as the chart installs it),
//! `operator` (the child process), `child_env` (what it must not inherit),
//! `claims` (create, watch), `assignments` (the no-double-assignment check),
//! `demo` (`make demo`'s verdict: warm claims served Warm, cold ones Cold),
//! `floor` (write_rtt, write_throughput), `scenarios`, `scale`,
//! `apiserver` (its counters), `procstat` (/proc), `report` (table, JSON,
//! ratios), `timeline` (the operator's step log), `plot` (SVG), `stats`.

// Checked with cfg(test) but without a harness, the modules' unit tests
// compile here unused: they run in the `bench-logic` test target (unit.rs).
#![cfg_attr(test, allow(dead_code, unused_imports))]

mod apiserver;
mod assignments;
mod child_env;
mod claims;
mod delivery;
mod demo;
mod environment;
mod floor;
mod guard;
mod identity;
mod operator;
mod plot;
mod procstat;
mod queue;
mod report;
mod scale;
mod scenarios;
mod settings;
mod stats;
mod timeline;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use environment::Environment;
use floor::Floor;
use report::Report;
use settings::{Mode, Settings};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let s = settings::parse(&args).unwrap_or_else(|problem| {
        eprintln!("claim-latency: {problem}");
        std::process::exit(2);
    });
    let options = operator::Options {
        network_policy: s.network_policy.clone(),
        max_pool_replicas: matches!(s.mode, Mode::Scale(_)).then_some(s.pool),
        as_admin: s.operator_as_admin,
        without_ownership_guard: !s.ownership_guard,
    };
    let env = Environment::up(&options).await;
    // Whatever fails below, the operator is stopped and the namespace
    // deleted: on Ctrl-C too (caught from here on, so a second one does not
    // cut the clean-up short), where before the namespace stayed.
    let outcome = tokio::select! {
        outcome = AssertUnwindSafe(measure(&env, &s)).catch_unwind() => Some(outcome),
        _ = tokio::signal::ctrl_c() => None,
    };
    if outcome.is_none() {
        eprintln!(
            "interrupted: stopping the operator and deleting namespace {}",
            env.ns
        );
    }
    env.down().await;
    match outcome {
        None => std::process::exit(130),
        Some(Ok(None)) => {}
        Some(Ok(Some(problem))) => {
            eprintln!("FAILED: {problem}");
            std::process::exit(1);
        }
        Some(Err(_)) => {
            eprintln!("FAILED: the bench stopped on the error above (namespace deleted)");
            std::process::exit(1);
        }
    }
}

/// Runs the mode's scenarios and publishes them; Some(problem) when a check failed.
async fn measure(env: &Environment, s: &Settings) -> Option<String> {
    // Throughput bursts need one probe per claim of the warm burst; the
    // demo and the scale run measure no throughput.
    let probes = if s.mode == Mode::Full { s.pool } else { 1 };
    let mut floor = Floor::create(&env.client, &env.ns, probes).await;
    match s.mode {
        Mode::Scale(_) => scale::run(env, &mut floor, s).await.err(),
        Mode::Full | Mode::Demo => {
            let report = scenarios::run(env, &mut floor, s).await;
            publish(env, s, &report);
            let mut problems = Vec::new();
            if report.double_assignments > 0 {
                problems.push(format!("{} double assignments", report.double_assignments));
            }
            if s.mode == Mode::Demo {
                problems.extend(demo_verdict(env, s));
            }
            (!problems.is_empty()).then(|| problems.join("; "))
        }
    }
}

/// The demo's claims in table order: warm-sequential (`ws-`), then
/// cold-sequential (`cs-`).
fn demo_claims(s: &Settings) -> Vec<String> {
    let warm = (0..s.warm_sequential).map(|i| format!("ws-{i}"));
    let cold = (0..s.cold_sequential).map(|i| format!("cs-{i}"));
    warm.chain(cold).collect()
}

/// `make demo` fails unless every warm claim was served Warm and every
/// cold one Cold (`demo`): Some(problem) naming the claims that were not.
fn demo_verdict(env: &Environment, s: &Settings) -> Option<String> {
    let observed = env.claims.observations(&demo_claims(s));
    let wrong = demo::wrong_launches(observed.iter().map(|o| (o.name.as_str(), o.launch)));
    (!wrong.is_empty()).then(|| {
        format!(
            "launch types not as the demo means them: {}",
            wrong.join(", ")
        )
    })
}

/// Prints the table (or the demo's per-claim table) and writes JSON and SVG.
fn publish(env: &Environment, s: &Settings, report: &Report) {
    if s.mode == Mode::Demo {
        print!("{}", demo_table(env, s, report));
    } else {
        print!("{}", report.table());
    }
    let name = if s.mode == Mode::Demo {
        "demo"
    } else {
        "claim-latency"
    };
    let json = serde_json::to_string_pretty(&report.json()).unwrap();
    std::fs::write(env.bench_dir.join(format!("{name}.json")), json).unwrap();
    std::fs::write(
        env.bench_dir.join(format!("{name}.svg")),
        plot::svg(&report.scenarios),
    )
    .unwrap();
    println!("wrote target/bench/{name}.json and target/bench/{name}.svg");
}

/// `make demo`: every claim with its launch type and time to Ready.
fn demo_table(env: &Environment, s: &Settings, report: &Report) -> String {
    let mut out = format!(
        "\n{:<10} {:<12} {:>12}\n",
        "claim", "launch type", "ready (ms)"
    );
    for o in env.claims.observations(&demo_claims(s)) {
        out += &format!(
            "{:<10} {:<12} {:>12.1}\n",
            o.name,
            o.launch.map_or("?", |l| l.as_str()),
            o.ready.duration_since(o.start).as_secs_f64() * 1000.0
        );
    }
    out + &format!(
        "\nwarm p50 {:.1} ms vs cold p50 {:.1} ms (simulated cold start {} ms); double assignments: {}\n",
        report.scenarios[0].p50_ms,
        report.scenarios[1].p50_ms,
        s.delay_ms,
        report.double_assignments
    )
}
