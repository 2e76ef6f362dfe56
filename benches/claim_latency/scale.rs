//! `--scale N` (not in CI): the operator's cost with a large idle pool. A
//! pool of N Pods (small limits, so they fit the one fake Node) is filled
//! and waited for (bounded by `--scale-timeout-s`); then the operator's RSS
//! and its CPU while idle are read, and a short warm-sequential of 50
//! claims runs with the floor interleaved, as in the quick bench.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::apiserver;
use crate::environment::Environment;
use crate::floor::Floor;
use crate::scenarios::warm_sequential;
use crate::settings::Settings;

/// Seconds over which idle CPU is measured once the pool is full.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Runs the scale scenario; Err names what did not finish in time.
pub async fn run(env: &Environment, floor: &mut Floor, s: &Settings) -> Result<(), String> {
    let n = s.pool;
    let (cpu_start, started) = (env.operator.cpu_ms(), Instant::now());
    env.create_pool(n, s.delay_ms, true).await;
    fill(env, n, Duration::from_secs(s.scale_timeout_s)).await?;
    let fill_s = started.elapsed().as_secs_f64();
    let fill_cpu_ms = env.operator.cpu_ms() - cpu_start;
    let rss_full = env.operator.rss_mib();
    let idle_before = env.operator.cpu_ms();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_cpu_ms_per_s = (env.operator.cpu_ms() - idle_before) / IDLE_WINDOW.as_secs_f64();
    let rss_idle = env.operator.rss_mib();
    let counts = (s.warm_sequential.max(1), s.floor_per_gap, s.floor_block);
    let warm = warm_sequential(env, floor, counts, n).await;
    floor.sample(s.floor_block).await;
    let f = floor.summary();
    let (rss_end, rss_peak) = (env.operator.rss_mib(), env.operator.rss_peak_mib());
    let w = &warm.scenario;
    println!(
        "\n--scale {n}: a pool of {n} idle Pods (simulated start-up {} ms), ownership guard: {}",
        s.delay_ms,
        env.guard.label()
    );
    println!("  filled (all Ready)                 {fill_s:>10.1} s");
    println!(
        "  operator CPU to fill               {:>10.1} ms ({:.2} ms per Pod)",
        fill_cpu_ms,
        fill_cpu_ms / n as f64
    );
    println!(
        "  operator RSS, pool full            {rss_full:>10.1} MiB   (target < 150 MiB at 5,000)"
    );
    println!(
        "  operator CPU while idle            {idle_cpu_ms_per_s:>10.2} ms/s over {} s",
        IDLE_WINDOW.as_secs()
    );
    println!("  operator RSS after idle            {rss_idle:>10.1} MiB");
    println!(
        "  warm-sequential ({} claims)        p50 {:.1} ms, p99 {:.1} ms; write_rtt p50 {:.1} ms ({} samples): p50 {:.2} x, p99 {:.2} x (targets 3 x, 6 x)",
        w.claims,
        w.p50_ms,
        w.p99_ms,
        f.rtt_p50_ms,
        f.rtt_samples,
        w.p50_ms / f.rtt_p50_ms.max(1e-9),
        w.p99_ms / f.rtt_p50_ms.max(1e-9)
    );
    println!(
        "  operator CPU per warm claim        {:>10.2} ms   (target <= 1 ms)",
        warm.cost.cpu_ms
    );
    println!(
        "  operator writes per warm claim     {:>10.2}",
        warm.cost.operator_writes
    );
    for (key, per_claim) in warm
        .cost
        .writes_by_resource
        .iter()
        .filter(|(k, _)| apiserver::is_operator_write(k))
    {
        println!("    {key:<34} {per_claim:>6.2}");
    }
    println!("  operator RSS at the end            {rss_end:>10.1} MiB");
    println!("  operator RSS peak (VmHWM)          {rss_peak:>10.1} MiB");
    let report = json!({
        "idle_pods": n, "ownership_guard": env.guard.label(), "fill_s": fill_s, "fill_operator_cpu_ms": fill_cpu_ms,
        "operator_rss_mib_full": rss_full, "operator_rss_mib_after_idle": rss_idle, "operator_rss_mib": rss_end,
        "operator_rss_peak_mib": rss_peak,
        "operator_idle_cpu_ms_per_s": idle_cpu_ms_per_s,
        "operator_cpu_ms_per_warm_claim": warm.cost.cpu_ms,
        "writes_per_warm_claim": warm.cost.operator_writes,
        "writes_by_resource": warm.cost.writes_by_resource,
        "write_rtt_p50_ms": f.rtt_p50_ms, "write_rtt_p99_ms": f.rtt_p99_ms,
        "warm_sequential": w,
    });
    let path = env.bench_dir.join("claim-latency-scale.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("wrote {}", path.display());
    Ok(())
}

/// Waits until `n` idle Pods are Ready, printing progress every 10 s.
async fn fill(env: &Environment, n: usize, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let step = Duration::from_secs(10).min(timeout.saturating_sub(started.elapsed()));
        if env.claims.wait_idle_within(n, step).await {
            return Ok(());
        }
        let ready = env.claims.idle_ready();
        if started.elapsed() >= timeout {
            return Err(format!(
                "--scale {n}: only {ready} of {n} idle Pods Ready after {} s (--scale-timeout-s); stopping",
                timeout.as_secs()
            ));
        }
        eprintln!(
            "  --scale: {ready}/{n} idle Pods Ready after {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
}
