//! The claim scenarios and where the floor is sampled between them:
//!
//! 1. floor block (the API server's CPU per bare patch is taken over it);
//!    **warm-sequential**: one claim at a time on a pool with idle Ready
//!    Pods, `floor_per_gap` write round trips before each claim; API writes
//!    (the API server's counters), operator and API server CPU and webhook
//!    timing are taken over this scenario, refill included;
//! 2. floor block; **cold-sequential**: `warmpool: none` forces a new Pod;
//! 3. (not in the demo) the floor's extra probe Pods (one per write of the
//!    warm burst), throughput bursts, floor block, **warm-burst** (pool
//!    size claims at once on a full pool), floor block, **overflow-burst**
//!    (3 x pool size), floor block, **paced-overflow** (2 x pool size claims,
//!    one every start delay / (2 x pool size): twice what the pool refills
//!    in a start delay, so the later half finds the refills of the first
//!    still starting), floor block, throughput bursts again.

use std::time::Duration;

use crate::apiserver;
use crate::environment::Environment;
use crate::floor::Floor;
use crate::queue;
use crate::report::{Report, Scenario, WarmCost};
use crate::settings::Settings;

/// What warm-sequential measured: latency and cost.
pub struct WarmSequential {
    pub scenario: Scenario,
    pub cost: WarmCost,
}

/// A floor block of `floor_block` patches, then `claims` warm claims one
/// at a time, `floor_per_gap` floor samples before each; the counters are
/// read once the pool has refilled to `pool`.
pub async fn warm_sequential(
    env: &Environment,
    floor: &mut Floor,
    (claims, floor_per_gap, floor_block): (usize, usize, usize),
    pool: usize,
) -> WarmSequential {
    let apiserver_cpu = ApiServerCpu::after_floor_block(env, floor, floor_block).await;
    let scrape = apiserver::metrics(&env.client).await;
    let (writes_before, webhook_before) = (
        apiserver::writes(&scrape),
        apiserver::webhook_buckets(&scrape),
    );
    let operator_before = env.operator.metrics().await;
    let (floor_before, cpu_before) = (floor.patches_sent(), env.operator.cpu_ms());
    let mut names = Vec::new();
    for i in 0..claims {
        env.claims.wait_idle(1).await;
        floor.sample(floor_per_gap).await;
        let name = format!("ws-{i}");
        env.claims.create(name.clone(), false).await;
        env.claims
            .wait_ready(std::slice::from_ref(&name), Duration::from_secs(60))
            .await;
        names.push(name);
    }
    // Let the refills and their status updates land before reading the counters.
    env.claims.wait_idle(pool).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_ms = env.operator.cpu_ms() - cpu_before;
    let operator_after = env.operator.metrics().await;
    let watch_events = apiserver::per_claim(
        &apiserver::watch_events(&operator_before),
        &apiserver::watch_events(&operator_after),
        claims,
    );
    let reconciles = apiserver::per_claim(
        &apiserver::reconciles(&operator_before),
        &apiserver::reconciles(&operator_after),
        claims,
    );
    let scrape = apiserver::metrics(&env.client).await;
    let own_patches = (floor.patches_sent() - floor_before) as f64;
    let writes_by_resource = apiserver::writes_per_claim(
        &writes_before,
        &apiserver::writes(&scrape),
        own_patches,
        claims,
    );
    let (webhook_within_5ms, webhook_p99) =
        apiserver::webhook_latency(&webhook_before, &apiserver::webhook_buckets(&scrape));
    let operator_events =
        apiserver::operator_events(&env.client, &env.ns).await as f64 / claims.max(1) as f64;
    let operator_writes = writes_by_resource
        .iter()
        .filter(|(k, _)| apiserver::is_operator_write(k))
        .map(|(_, v)| v)
        .sum::<f64>()
        + operator_events;
    WarmSequential {
        scenario: env.claims.scenario("warm-sequential", &names),
        cost: WarmCost {
            all_writes: writes_by_resource.values().sum(),
            writes_by_resource,
            operator_writes,
            operator_events,
            cpu_ms: cpu_ms / claims.max(1) as f64,
            apiserver_cpu_ms: apiserver_cpu.per_claim(env, own_patches, claims),
            apiserver_cpu_ms_per_write: apiserver_cpu.per_write,
            watch_events,
            reconciles,
            webhook_within_5ms,
            webhook_p99,
        },
    }
}

/// The local API server's CPU (`/proc`): its cost per bare patch over a
/// floor block, and its reading when the claims start. `None` throughout
/// when the API server is not a local process.
struct ApiServerCpu {
    per_write: Option<f64>,
    start: Option<f64>,
}

impl ApiServerCpu {
    /// Takes a floor block of `n` patches and times the API server over it.
    async fn after_floor_block(env: &Environment, floor: &mut Floor, n: usize) -> Self {
        let (before, sent) = (env.apiserver_cpu_ms(), floor.patches_sent());
        floor.sample(n).await;
        let start = env.apiserver_cpu_ms();
        let patches = (floor.patches_sent() - sent) as f64;
        ApiServerCpu {
            per_write: before.zip(start).map(|(b, e)| (e - b) / patches.max(1.0)),
            start,
        }
    }

    /// Per claim since the start, with the bench's `own_patches` (at the
    /// per-patch cost) taken out.
    fn per_claim(&self, env: &Environment, own_patches: f64, claims: usize) -> Option<f64> {
        let (now, start, per_write) = (env.apiserver_cpu_ms()?, self.start?, self.per_write?);
        Some((now - start - own_patches * per_write) / claims.max(1) as f64)
    }
}

/// `claims` cold claims, one at a time.
async fn cold_sequential(env: &Environment, claims: usize) -> Scenario {
    let mut names = Vec::new();
    for i in 0..claims {
        let name = format!("cs-{i}");
        env.claims.create(name.clone(), true).await;
        env.claims
            .wait_ready(std::slice::from_ref(&name), Duration::from_secs(120))
            .await;
        names.push(name);
    }
    env.claims.scenario("cold-sequential", &names)
}

/// `claims` claims created at once (the pool full before), named `<prefix>-<i>`.
async fn burst(
    env: &Environment,
    name: &str,
    prefix: &str,
    claims: usize,
    pool: usize,
) -> Scenario {
    env.claims.wait_idle(pool).await;
    let names: Vec<String> = (0..claims).map(|i| format!("{prefix}-{i}")).collect();
    env.claims.create_all(&names).await;
    env.claims
        .wait_ready(&names, Duration::from_secs(300))
        .await;
    env.claims.scenario(name, &names)
}

/// `claims` claims (the pool full before), named `<prefix>-<i>`, created
/// one every `spacing`.
async fn paced(
    env: &Environment,
    (name, prefix): (&str, &str),
    claims: usize,
    pool: usize,
    spacing: Duration,
) -> Scenario {
    env.claims.wait_idle(pool).await;
    let names: Vec<String> = (0..claims).map(|i| format!("{prefix}-{i}")).collect();
    let mut tick = tokio::time::interval(spacing);
    for n in &names {
        tick.tick().await;
        env.claims.create(n.clone(), false).await;
    }
    env.claims
        .wait_ready(&names, Duration::from_secs(300))
        .await;
    env.claims.scenario(name, &names)
}

/// Timed bursts of bare patches with the pool full and idle, as the claim
/// bursts start: each run one pool-sized and one writes-sized burst (see
/// `floor`), after one untimed warm-up run that opens the connections
/// (each time: the client's idle connections may have closed since).
async fn throughput(env: &Environment, floor: &mut Floor, s: &Settings) {
    env.claims.wait_idle(s.pool).await;
    floor.throughput_run(true).await;
    for _ in 0..s.throughput_runs {
        floor.throughput_run(false).await;
    }
}

/// Every scenario of a full, quick or demo run, with the floor interleaved.
pub async fn run(env: &Environment, floor: &mut Floor, s: &Settings) -> Report {
    env.create_pool(s.pool, s.delay_ms, false).await;
    env.claims.wait_idle(s.pool).await;
    let counts = (s.warm_sequential, s.floor_per_gap, s.floor_block);
    let mut queue = QueueWaits::start(env).await;
    let warm = warm_sequential(env, floor, counts, s.pool).await;
    queue.scenario_ended(env, "warm-sequential").await;
    floor.sample(s.floor_block).await;
    queue.restart(env).await;
    let cold = cold_sequential(env, s.cold_sequential).await;
    queue.scenario_ended(env, "cold-sequential").await;
    let mut scenarios = vec![warm.scenario.clone(), cold];
    if s.mode == crate::settings::Mode::Full {
        // As many patches as the warm burst's writes, at the writes per
        // warm claim warm-sequential just measured.
        floor
            .size_bursts(crate::floor::burst_patches(
                s.pool,
                warm.cost.operator_writes,
            ))
            .await;
        throughput(env, floor, s).await;
        floor.sample(s.floor_block).await;
        for (name, prefix, claims) in [
            ("warm-burst", "wb", s.pool),
            ("overflow-burst", "ob", 3 * s.pool),
        ] {
            queue.restart(env).await;
            scenarios.push(burst(env, name, prefix, claims, s.pool).await);
            queue.scenario_ended(env, name).await;
            floor.sample(s.floor_block).await;
        }
        queue.restart(env).await;
        let claims = 2 * s.pool;
        // At least 1 ms: `--delay-ms 0` (or `--pool 0`) must not divide by
        // zero or make a zero-period interval.
        let spacing = (Duration::from_millis(s.delay_ms)
            / u32::try_from(claims.max(1)).unwrap_or(u32::MAX))
        .max(Duration::from_millis(1));
        scenarios.push(paced(env, ("paced-overflow", "po"), claims, s.pool, spacing).await);
        queue.scenario_ended(env, "paced-overflow").await;
        floor.sample(s.floor_block).await;
        throughput(env, floor, s).await;
    }
    // The operator's `timeline` lines, read once for the breakdown and the legs.
    let timeline = std::fs::read_to_string(&env.operator.log_path).unwrap_or_default();
    for scenario in &mut scenarios {
        let prefix = match scenario.name.as_str() {
            "warm-burst" => "wb-",
            "overflow-burst" => "ob-",
            "paced-overflow" => "po-",
            _ => continue,
        };
        scenario.pool_pods_taken = Some(crate::timeline::pool_pods_taken(&timeline, prefix));
    }
    let warm_names: Vec<String> = (0..s.warm_sequential).map(|i| format!("ws-{i}")).collect();
    let mut report = Report {
        pool: s.pool,
        delay_ms: s.delay_ms,
        network_policy: s.network_policy.clone(),
        ownership_guard: env.guard.label().to_string(),
        scenarios,
        floor: floor.summary(),
        floor_refused: floor.refused,
        warm: warm.cost,
        rss_mib: env.operator.rss_mib(),
        rss_peak_mib: env.operator.rss_peak_mib(),
        double_assignments: env.claims.double_assignments().await,
        breakdown: crate::timeline::from_text(&timeline, "ws-"),
        legs: crate::timeline::legs_from_text(&timeline, "ws-"),
        delivery: crate::delivery::Delivery::of(
            &env.claims.delivered(&warm_names),
            &crate::timeline::first_events(&timeline, "ws-"),
        ),
        queue_waits: queue.waits,
    };
    report.apply_floor();
    report
}

/// The operator's queue waits, scenario by scenario (see `queue`).
struct QueueWaits {
    since: queue::Buckets,
    waits: Vec<(String, std::collections::BTreeMap<String, queue::Wait>)>,
}

impl QueueWaits {
    async fn start(env: &Environment) -> QueueWaits {
        QueueWaits {
            since: queue::buckets(&env.operator.metrics().await),
            waits: Vec::new(),
        }
    }

    /// Starts counting afresh (what ran in between is not a scenario's).
    async fn restart(&mut self, env: &Environment) {
        self.since = queue::buckets(&env.operator.metrics().await);
    }

    async fn scenario_ended(&mut self, env: &Environment, name: &str) {
        let now = queue::buckets(&env.operator.metrics().await);
        self.waits
            .push((name.to_string(), queue::between(&self.since, &now)));
        self.since = now;
    }
}
