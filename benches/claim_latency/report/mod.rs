//! What the bench found, as numbers: per-scenario latency, the API write
//! floor and the ratios to it, writes per claim, operator CPU and memory.
//! Pure: turns observations into the printed table and the JSON file.
//!
//! Ratios to the floor (the targets are phrased this way; they are
//! reported, never asserted):
//! - warm-sequential `p50_over_write_rtt` and `p99_over_write_rtt`: the
//!   claim's p50 and p99 each divided by the write_rtt **p50**;
//! - each burst's `all_ready_over_floor`: its all-Ready time divided by the
//!   time the API server needs for the writes the burst involves, which is
//!   `writes_needed / write_throughput`, where `writes_needed` = claims x the
//!   operator writes per warm claim measured in warm-sequential (its Events
//!   and the refill included), and `write_throughput` was measured with
//!   bursts of as many patches as the warm burst's writes (`floor`). For the
//!   overflow burst this understates the work (cold claims write more and
//!   wait the simulated start-up; its three times more writes are also set
//!   against a throughput measured with the warm burst's count), so its
//!   ratio has no target;
//! - `all_ready_over_floor_pool_sized`: the same against the pool-sized
//!   bursts' throughput (one patch per claim, earlier rounds' figure): their
//!   fixed latency is counted once per pool-sized burst, about eight times
//!   per claim burst, so it is the lower, flattering ratio, kept for comparison;
//! - `all_ready_over_rounds`: all-Ready time / (the sequential writes on a
//!   warm claim's path, [`SEQUENTIAL_WRITES_PER_WARM_CLAIM`], x the
//!   write_rtt p50): against a burst whose claims all went side by side at
//!   the speed of one claim alone, with no throughput limit.
//!
//! Two more, without targets, to read the others by: `warm_p99_over_write_rtt_p99`
//! (the claim's tail against one bare write's own tail in the same run),
//! and the API server's CPU per warm claim against its CPU per bare floor
//! patch (`apiserver_cpu_ms_per_warm_claim`, `apiserver_cpu_ms_per_floor_write`),
//! which shows how many writes' worth of API server work a claim is.

use std::collections::BTreeMap;
use std::time::Instant;

use sandbox_operator::api::LaunchType;
use serde::Serialize;
use serde_json::{Value, json};

use crate::floor;
use crate::stats::{self, ratio};

/// Sequential writes on a warm claim's critical path: the claim's create,
/// round one (the steal and the writes beside it, side by side), round two
/// (the Ready status write); see the `timeline` legs.
pub const SEQUENTIAL_WRITES_PER_WARM_CLAIM: f64 = 3.0;

/// Rounded to three decimals, as the JSON carries figures.
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A burst's all-Ready time (ms) against the floor: the time `writes` take
/// at `throughput_per_s` (`None` without a throughput or writes).
pub fn over_throughput(all_ready_ms: f64, writes: f64, throughput_per_s: f64) -> Option<f64> {
    ratio(writes, throughput_per_s).and_then(|floor_s| ratio(all_ready_ms, floor_s * 1000.0))
}

/// A burst's all-Ready time (ms) against the sequential writes of one warm
/// claim's path at the write_rtt p50 (`None` without a write_rtt).
pub fn over_rounds(all_ready_ms: f64, rtt_p50_ms: f64) -> Option<f64> {
    ratio(all_ready_ms, SEQUENTIAL_WRITES_PER_WARM_CLAIM * rtt_p50_ms)
}

/// One claim: created at `start`, first seen Ready at `ready`.
pub struct Observation {
    pub name: String,
    pub start: Instant,
    pub ready: Instant,
    pub warm: bool,
    pub launch: Option<LaunchType>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Scenario {
    pub name: String,
    pub claims: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub all_ready_ms: f64,
    pub warm: usize,
    pub cold: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_over_write_rtt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_over_write_rtt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_needed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_ready_over_floor: Option<f64>,
    /// The same against the pool-sized bursts' throughput (earlier rounds' figure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_ready_over_floor_pool_sized: Option<f64>,
    /// All-Ready time / (sequential writes on a warm claim's path x write_rtt p50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_ready_over_rounds: Option<f64>,
    /// Bursts and paced-overflow: claims served by a pool Pod (the operator's
    /// timeline shows a steal), Ready or still starting when taken; the
    /// rest started a Pod of their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_pods_taken: Option<usize>,
    #[serde(skip)]
    pub samples: Vec<f64>,
}

impl Scenario {
    pub fn from_observations(name: &str, observations: &[Observation]) -> Scenario {
        let samples: Vec<f64> = observations
            .iter()
            .map(|o| o.ready.duration_since(o.start).as_secs_f64() * 1000.0)
            .collect();
        let first = observations.iter().map(|o| o.start).min();
        let last = observations.iter().map(|o| o.ready).max();
        let sorted = stats::sorted(&samples);
        let warm = observations.iter().filter(|o| o.warm).count();
        Scenario {
            name: name.into(),
            claims: observations.len(),
            p50_ms: stats::percentile(&sorted, 50.0),
            p95_ms: stats::percentile(&sorted, 95.0),
            p99_ms: stats::percentile(&sorted, 99.0),
            max_ms: sorted.last().copied().unwrap_or(0.0),
            all_ready_ms: match (first, last) {
                (Some(f), Some(l)) => l.duration_since(f).as_secs_f64() * 1000.0,
                _ => 0.0,
            },
            warm,
            cold: observations.len() - warm,
            samples,
            ..Scenario::default()
        }
    }

    fn is_burst(&self) -> bool {
        self.name.ends_with("-burst")
    }
}

/// What a warm claim costs, per claim over warm-sequential (the refill
/// included).
#[derive(Default)]
pub struct WarmCost {
    /// API writes by `"<resource> <VERB>"`, every client.
    pub writes_by_resource: BTreeMap<String, f64>,
    /// The operator's writes, its Events included.
    pub operator_writes: f64,
    pub operator_events: f64,
    pub all_writes: f64,
    pub cpu_ms: f64,
    /// The API server's CPU per claim (the bench's floor patches taken
    /// out, background work included), and per bare floor patch; `None`
    /// when the API server is not a local process (`/proc`).
    pub apiserver_cpu_ms: Option<f64>,
    pub apiserver_cpu_ms_per_write: Option<f64>,
    /// Watch events the operator applied, by `"<cache> <event>"`.
    pub watch_events: BTreeMap<String, f64>,
    /// Reconciles the operator ran, by controller.
    pub reconciles: BTreeMap<String, f64>,
    /// Share of the claims' webhook calls answered within 5 ms.
    pub webhook_within_5ms: f64,
    /// The webhook latency bucket that holds the 99th percentile.
    pub webhook_p99: String,
}

/// Everything one full (or quick) run measured.
#[derive(Default)]
pub struct Report {
    pub pool: usize,
    pub delay_ms: u64,
    pub network_policy: Option<String>,
    /// The ownership guard's state, as `guard::Guard::label` prints it.
    pub ownership_guard: String,
    pub scenarios: Vec<Scenario>,
    pub floor: floor::Summary,
    pub floor_refused: usize,
    /// What a warm claim cost, over warm-sequential.
    pub warm: WarmCost,
    pub rss_mib: f64,
    /// The operator's peak resident memory over the run (VmHWM).
    pub rss_peak_mib: f64,
    pub double_assignments: usize,
    pub breakdown: Vec<crate::timeline::Step>,
    /// The claim controller's critical path in three legs, if logged.
    pub legs: Option<crate::timeline::Legs>,
    /// The claims' first watch event, the bench's watch against the operator's.
    pub delivery: Option<crate::delivery::Delivery>,
    /// Per scenario, each controller's wait for a free reconcile slot.
    pub queue_waits: Vec<(String, BTreeMap<String, crate::queue::Wait>)>,
}

impl Report {
    /// Sets the ratios of every scenario to the floor of this run.
    pub fn apply_floor(&mut self) {
        let rtt = self.floor.rtt_p50_ms;
        let writes_per_claim = self.warm.operator_writes;
        for s in &mut self.scenarios {
            if s.name == "warm-sequential" {
                s.p50_over_write_rtt = ratio(s.p50_ms, rtt);
                s.p99_over_write_rtt = ratio(s.p99_ms, rtt);
            } else if s.is_burst() {
                s.all_ready_over_rounds = over_rounds(s.all_ready_ms, rtt);
                if writes_per_claim > 0.0 {
                    let writes = s.claims as f64 * writes_per_claim;
                    s.writes_needed = Some(writes);
                    s.all_ready_over_floor =
                        over_throughput(s.all_ready_ms, writes, self.floor.throughput_per_s);
                    s.all_ready_over_floor_pool_sized = over_throughput(
                        s.all_ready_ms,
                        writes,
                        self.floor.throughput_pool_sized_per_s,
                    );
                }
            }
        }
    }

    fn scenario(&self, name: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// The network policy mode the operator ran with, as printed.
    pub fn network_policy_label(&self) -> String {
        self.network_policy
            .clone()
            .unwrap_or_else(|| "operator default (per-claim)".into())
    }

    pub fn json(&self) -> Value {
        let round = round3;
        let mut v = self.json_main();
        // Outside `json_main`'s one macro call, whose size is at the macro's
        // recursion limit.
        let more = [
            (
                "write_throughput_burst_patches",
                json!(self.floor.throughput_patches),
            ),
            (
                "write_throughput_pool_sized_per_s",
                json!(round(self.floor.throughput_pool_sized_per_s)),
            ),
            (
                "write_throughput_pool_sized_burst_patches",
                json!(self.floor.throughput_pool_sized_patches),
            ),
            ("operator_rss_peak_mib", json!(round(self.rss_peak_mib))),
        ];
        for (key, value) in more {
            v[key] = value;
        }
        v
    }

    fn json_main(&self) -> Value {
        let round = round3;
        json!({
            "pool_size": self.pool,
            "cold_start_delay_ms": self.delay_ms,
            "network_policy": self.network_policy_label(),
            "ownership_guard": self.ownership_guard,
            "write_rtt_p50_ms": round(self.floor.rtt_p50_ms),
            "write_rtt_p99_ms": round(self.floor.rtt_p99_ms),
            "warm_p99_over_write_rtt_p99": self.scenario("warm-sequential")
                .and_then(|w| ratio(w.p99_ms, self.floor.rtt_p99_ms)),
            "write_rtt_samples": self.floor.rtt_samples,
            "write_rtt_refused": self.floor_refused,
            "write_throughput_per_s": round(self.floor.throughput_per_s),
            "write_throughput_runs": self.floor.throughput_runs,
            "writes_per_warm_claim": (self.warm.operator_writes * 100.0).round() / 100.0,
            "writes_per_warm_claim_all_actors": (self.warm.all_writes * 100.0).round() / 100.0,
            "operator_events_per_warm_claim": self.warm.operator_events,
            "writes_by_resource": self.warm.writes_by_resource,
            "operator_deletes_per_warm_claim": round(self.other_activity().0),
            "namespace_deletions_in_window": self.other_activity().1.round(),
            "operator_cpu_ms_per_warm_claim": round(self.warm.cpu_ms),
            "apiserver_cpu_ms_per_warm_claim": self.warm.apiserver_cpu_ms.map(round),
            "apiserver_cpu_ms_per_floor_write": self.warm.apiserver_cpu_ms_per_write.map(round),
            // null when the operator does not export the counter.
            "watch_events_per_warm_claim": (!self.warm.watch_events.is_empty())
                .then(|| round(self.warm.watch_events.values().sum())),
            "watch_events_by_cache": self.warm.watch_events.iter()
                .map(|(k, v)| (k.clone(), round(*v)))
                .collect::<BTreeMap<_, _>>(),
            "reconciles_per_warm_claim": self.warm.reconciles.iter()
                .map(|(k, v)| (k.clone(), round(*v)))
                .collect::<BTreeMap<_, _>>(),
            "operator_rss_mib": round(self.rss_mib),
            "double_assignments": self.double_assignments,
            "webhook_calls_within_5ms": self.warm.webhook_within_5ms,
            "webhook_p99_bucket": self.warm.webhook_p99,
            "warm_path_breakdown_ms": self.breakdown.iter()
                .map(|s| json!({
                    "step": s.step,
                    "median_ms_since_admission": s.p50_ms,
                    "p90_ms_since_admission": s.p90_ms,
                }))
                .collect::<Vec<_>>(),
            "warm_path_legs": self.legs.as_ref().map(|l| json!({
                "claims": l.claims,
                "reconcile_start_ms": l.start.p50_ms,
                "round_one_ms": l.round_one.p50_ms,
                "round_two_ms": l.round_two.p50_ms,
                "reconcile_start_p90_ms": l.start.p90_ms,
                "round_one_p90_ms": l.round_one.p90_ms,
                "round_two_p90_ms": l.round_two.p90_ms,
                "reconcile_start_over_write_rtt": ratio(l.start.p50_ms, self.floor.rtt_p50_ms),
                "round_one_over_write_rtt": ratio(l.round_one.p50_ms, self.floor.rtt_p50_ms),
                "round_two_over_write_rtt": ratio(l.round_two.p50_ms, self.floor.rtt_p50_ms),
            })),
            "claim_watch_delivery": self.delivery,
            "queue_wait_by_scenario": self.queue_waits.iter()
                .cloned()
                .collect::<BTreeMap<_, _>>(),
            "scenarios": self.scenarios,
        })
    }

    /// The whole printed report of a full or quick run.
    pub fn table(&self) -> String {
        let mut out = format!(
            "\nclaim create -> Ready (client clock, watch), pool {} Pods, simulated cold start {} ms, NetworkPolicy: {}, ownership guard: {}\n",
            self.pool,
            self.delay_ms,
            self.network_policy_label(),
            self.ownership_guard
        );
        out += &scenario_table(&self.scenarios);
        if let (Some(warm), Some(cold)) = (
            self.scenario("warm-sequential"),
            self.scenario("cold-sequential"),
        ) {
            out += &format!(
                "warm/cold p50 ratio: {:.3} ({:.1}x faster)\n",
                warm.p50_ms / cold.p50_ms.max(0.001),
                cold.p50_ms / warm.p50_ms.max(0.001)
            );
        }
        out += &self.floor_lines();
        out += &self.targets_table();
        out += &self.writes_lines();
        out += &format!(
            "webhook calls as timed by the API server (warm-sequential): {:.1}% within 5 ms, p99 <= {} (bucket bound)\n",
            self.warm.webhook_within_5ms * 100.0,
            self.warm.webhook_p99
        );
        out += "\nwarm path, step by step (ms since the API server admitted the claim, warm-sequential):\n";
        out += &format!("  {:<32} {:>8} {:>8}\n", "step", "median", "p90");
        for s in &self.breakdown {
            out += &format!("  {:<32} {:>8.1} {:>8.1}\n", s.step, s.p50_ms, s.p90_ms);
        }
        out += &self.legs_lines();
        out += &self
            .delivery
            .as_ref()
            .map(|d| d.lines())
            .unwrap_or_default();
        out += &crate::queue::lines(&self.queue_waits);
        out
    }

    /// The critical path's legs, in ms and in write floors.
    fn legs_lines(&self) -> String {
        let Some(l) = &self.legs else {
            return String::new();
        };
        let over = |ms: f64| {
            ratio(ms, self.floor.rtt_p50_ms).map_or_else(|| "-".into(), |x| format!("{x:.2} x"))
        };
        let mut out = format!(
            "critical path, leg by leg (each leg measured claim by claim, over {} warm claims; x = write_rtt p50):\n  {:<32} {:>8} {:>8} {:>8}\n",
            l.claims, "leg", "median", "x", "p90"
        );
        for (name, leg) in [
            ("admission -> reconcile starts", l.start),
            ("round one (four writes at once)", l.round_one),
            ("round two (the Ready write)", l.round_two),
        ] {
            out += &format!(
                "  {:<32} {:>8.1} {:>8} {:>8.1}\n",
                name,
                leg.p50_ms,
                over(leg.p50_ms),
                leg.p90_ms
            );
        }
        out
    }

    fn floor_lines(&self) -> String {
        let f = &self.floor;
        format!(
            "\nAPI write floor (same run, same control plane):\n  write_rtt        p50 {:.1} ms, p99 {:.1} ms ({} resourceVersion-conditioned Pod label patches interleaved with the claims; {} refused, not counted)\n  write_throughput {:.0} writes/s (median of {} bursts of {} bare Pod label patches sent at once, one per Pod: the warm burst's writes)\n                   {:.0} writes/s pool-sized (bursts of {}, one per claim: earlier rounds' figure)\n",
            f.rtt_p50_ms,
            f.rtt_p99_ms,
            f.rtt_samples,
            self.floor_refused,
            f.throughput_per_s,
            f.throughput_runs,
            f.throughput_patches,
            f.throughput_pool_sized_per_s,
            f.throughput_pool_sized_patches,
        )
    }

    fn targets_table(&self) -> String {
        let times = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2} x"));
        let mut rows: Vec<(String, String, String)> = Vec::new();
        if let Some(w) = self.scenario("warm-sequential") {
            rows.push((
                "warm-sequential p50 / write_rtt p50".into(),
                times(w.p50_over_write_rtt),
                "<= 3 x".into(),
            ));
            rows.push((
                "warm-sequential p99 / write_rtt p50".into(),
                times(w.p99_over_write_rtt),
                "<= 6 x".into(),
            ));
            rows.push((
                "warm-sequential p99 / write_rtt p99".into(),
                times(ratio(w.p99_ms, self.floor.rtt_p99_ms)),
                format!(
                    "none (one bare write's own p99 is {} its p50 here)",
                    times(ratio(self.floor.rtt_p99_ms, self.floor.rtt_p50_ms))
                ),
            ));
        }
        for s in self.scenarios.iter().filter(|s| s.is_burst()) {
            let target = match s.name.as_str() {
                "warm-burst" => format!(
                    "<= 1.5 x (pool 100); {:.0} writes at the throughput",
                    s.writes_needed.unwrap_or(0.0)
                ),
                _ => "none (cold claims wait the start-up)".into(),
            };
            rows.push((
                format!("{} all Ready / floor", s.name),
                times(s.all_ready_over_floor),
                target,
            ));
            rows.push((
                "  (/ pool-sized floor)".into(),
                times(s.all_ready_over_floor_pool_sized),
                "none (earlier rounds' figure: the burst's fixed latency counted per claim)".into(),
            ));
            rows.push((
                format!("  (/ {SEQUENTIAL_WRITES_PER_WARM_CLAIM:.0} x write_rtt p50)"),
                times(s.all_ready_over_rounds),
                "none (one claim's sequential writes, no throughput limit)".into(),
            ));
        }
        rows.push((
            "operator writes per warm claim".into(),
            format!("{:.2}", self.warm.operator_writes),
            "<= 7".into(),
        ));
        rows.push((
            "operator CPU per warm claim".into(),
            format!("{:.2} ms", self.warm.cpu_ms),
            "<= 1 ms".into(),
        ));
        rows.push((
            "operator RSS at the end".into(),
            format!("{:.1} MiB", self.rss_mib),
            "< 150 MiB at 5,000 idle Pods (--scale)".into(),
        ));
        rows.push((
            "operator RSS peak (VmHWM)".into(),
            format!("{:.1} MiB", self.rss_peak_mib),
            "none".into(),
        ));
        rows.push((
            "double assignments".into(),
            self.double_assignments.to_string(),
            "0".into(),
        ));
        let mut out = format!(
            "\n{:<40} {:>12}   target (reported, not asserted)\n",
            "against the floor", "measured"
        );
        for (what, measured, target) in rows {
            out += &format!("  {what:<38} {measured:>12}   {target}\n");
        }
        out
    }

    fn writes_lines(&self) -> String {
        let mut out = format!(
            "\nAPI writes per warm claim: {:.2} by the operator, its Events included ({:.2}); {:.2} by every client (the claim create, KWOK, scheduler, controller-manager; the bench's floor patches taken out)\n",
            self.warm.operator_writes, self.warm.operator_events, self.warm.all_writes
        );
        for (k, v) in &self.warm.writes_by_resource {
            if crate::apiserver::is_operator_write(k) {
                out += &format!("  {k:<40} {v:>6.2}\n");
            } else if *v >= 0.05 {
                out += &format!("  {k:<40} {v:>6.2}   (not the operator)\n");
            }
        }
        out += "  (other clients' writes under 0.05 per claim: in the JSON)\n";
        let (deletes, namespaces) = self.other_activity();
        if deletes > 0.0 {
            out += &format!(
                "  of the operator's count, DELETE: {deletes:.2} per claim. The API server's counters are cluster-wide: on a shared control plane other clients' deletions land here too ({namespaces:.0} namespaces deleted in the window, plus the objects of namespaces deleted before it); on a private one they are the operator's own\n"
            );
        }
        if let (Some(claim), Some(write)) = (
            self.warm.apiserver_cpu_ms,
            self.warm.apiserver_cpu_ms_per_write,
        ) {
            out += &format!(
                "API server CPU per warm claim: {claim:.1} ms, {:.1} times a bare floor patch's {write:.2} ms (from /proc; the floor's patches taken out, background work included)\n",
                ratio(claim, write).unwrap_or(0.0),
            );
        }
        out += &format!(
            "watch events the operator applied per warm claim: {:.2}\n",
            self.warm.watch_events.values().sum::<f64>()
        );
        for (k, v) in &self.warm.watch_events {
            out += &format!("  {k:<40} {v:>6.2}\n");
        }
        out += &format!(
            "reconciles the operator ran per warm claim: {:.2}\n",
            self.warm.reconciles.values().sum::<f64>()
        );
        for (k, v) in &self.warm.reconciles {
            out += &format!("  {k:<40} {v:>6.2}\n");
        }
        out + &format!("double assignments: {}\n", self.double_assignments)
    }

    /// (DELETEs within the operator's count, per claim; namespaces deleted
    /// in the window): a sign that other clients shared the control plane.
    pub fn other_activity(&self) -> (f64, f64) {
        let claims = self.scenario("warm-sequential").map_or(0, |s| s.claims) as f64;
        let deletes = self
            .warm
            .writes_by_resource
            .iter()
            .filter(|(k, _)| k.ends_with(" DELETE") && crate::apiserver::is_operator_write(k))
            .map(|(_, v)| v)
            .sum();
        let namespaces = self
            .warm
            .writes_by_resource
            .get("namespaces DELETE")
            .copied()
            .unwrap_or(0.0)
            * claims;
        (deletes, namespaces)
    }
}

/// The latency table of the scenarios.
pub fn scenario_table(scenarios: &[Scenario]) -> String {
    let mut out = format!(
        "{:<16} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9}\n",
        "scenario",
        "claims",
        "warm",
        "cold",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "all ready ms",
        "pool Pods"
    );
    for sc in scenarios {
        out += &format!(
            "{:<16} {:>6} {:>6} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>12.1} {:>9}\n",
            sc.name,
            sc.claims,
            sc.warm,
            sc.cold,
            sc.p50_ms,
            sc.p95_ms,
            sc.p99_ms,
            sc.max_ms,
            sc.all_ready_ms,
            sc.pool_pods_taken
                .map_or_else(|| "-".to_string(), |n| n.to_string())
        );
    }
    out += "(pool Pods: claims served by a pool Pod, Ready or still starting when taken; \
            a cold claim on one waited for a start already under way)\n";
    out
}

#[cfg(test)]
mod tests;
