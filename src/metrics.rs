//! Prometheus metrics: one [`Registry`] owned by [`Metrics`], which hangs off
//! the shared controller context (no globals, so tests build their own).
//!
//! Every name carries the `sandbox_operator_` prefix, base units and the
//! `_total` / `_seconds` suffixes; `promtool check metrics` is clean on the
//! exposition (checked by an integration test).

use std::collections::HashMap;
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

mod series;

pub use series::LiveObjects;
use series::{PerObject, drop_series, series};

const PREFIX: &str = "sandbox_operator";

/// Claim-to-Ready buckets: fine below 100 ms (the warm path), coarse up to a
/// minute (slow cold starts).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25,
    0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Buckets for short in-process work (reconcile, admission).
const FAST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// All metrics of the operator.
pub struct Metrics {
    registry: Registry,
    /// Claim creation (admission timestamp when stamped) to Ready.
    pub claim_ready_seconds: HistogramVec,
    /// A warm claim's critical path, by leg (see `controller::claim::legs`).
    pub warm_claim_leg_seconds: HistogramVec,
    /// Claims served, by result (`warm`, `cold`, `expired`).
    pub claims: IntCounterVec,
    /// Conditioned takeover writes on idle warm Pods.
    pub steal_attempts: IntCounterVec,
    /// Takeovers lost to another writer (409 / failed JSON-patch test).
    pub steal_conflicts: IntCounterVec,
    /// Claims that went cold because their pool had no usable idle Pod.
    pub pool_exhausted: IntCounterVec,
    /// Desired idle Pods per pool.
    pub pool_desired: GaugeVec,
    /// Idle Ready Pods per pool.
    pub pool_ready: GaugeVec,
    /// Idle Pods (Ready or not) per pool.
    pub pool_idle: GaugeVec,
    /// Time to create a pool's Pods, every one it creates (refills, first
    /// fill, scale-ups, rollouts): from the start of the create batch until
    /// the API server answered the Pod's create (`stage="created"`), and
    /// from the Pod's created-at stamp until the pool's reconcile that saw
    /// it Ready for the first time (`stage="ready"`).
    pub replenish_seconds: HistogramVec,
    /// Time off-path work waited for claims in flight, by work (`adopt`,
    /// `refill`); see `controller::critical`.
    pub off_path_wait_seconds: HistogramVec,
    /// Watch events applied to the caches, by cache and event.
    pub watch_events: IntCounterVec,
    /// Reconciles per controller.
    pub reconciles: IntCounterVec,
    /// Failed reconciles per controller and error label.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile duration per controller.
    pub reconcile_seconds: HistogramVec,
    /// Time from a reconcile's due moment to its start, per controller.
    pub queue_wait_seconds: HistogramVec,
    /// Objects due and waiting for a reconcile slot, per controller.
    pub queue_depth: GaugeVec,
    /// Reconciles running, per controller.
    pub reconciles_running: GaugeVec,
    /// Admission requests by kind, operation, endpoint and decision.
    pub admission_requests: IntCounterVec,
    /// Admission handling time by kind and endpoint.
    pub admission_seconds: HistogramVec,
    /// Admission requests refused before the policy saw them (body too
    /// large, bad JSON, overload, timeout, a handler panic), by endpoint and
    /// reason.
    pub admission_rejections: IntCounterVec,
    /// The API server's answer time to this process's requests (watches
    /// excepted), by verb, resource and outcome (status class, `error`,
    /// `cancelled`).
    pub api_request_seconds: HistogramVec,
    /// Unix time at which the webhook serving certificate expires.
    pub certificate_expiry: Gauge,
    /// 1 while this process holds the leader Lease (or runs without election).
    pub leader: IntGauge,
    /// Constant 1 labelled with the version.
    pub build_info: prometheus::IntGaugeVec,
    /// Reloads of the policy file, by outcome (`reloaded`, `refused`).
    pub policy_reloads: IntCounterVec,
    /// 1 while the policy in force is the policy file as last read, 0 after
    /// a refused reload (the previous policy stays); absent without a file.
    pub policy_file_current: IntGauge,
    /// Recommended idle Pods per pool (Erlang B at the peak claim rate).
    pub pool_recommended: GaugeVec,
    /// Predicted hit ratio per pool at its current size and load.
    pub pool_predicted_hit_ratio: GaugeVec,
    /// Observed hit ratio of a pool's template over the last 5 minutes.
    pub pool_observed_hit_ratio: GaugeVec,
    /// Target hit ratio of a pool.
    pub pool_target_hit_ratio: GaugeVec,
    /// Claim arrival rate of a pool's template, by window (1m, 5m, 15m, peak).
    pub pool_claim_rate: GaugeVec,
    /// Mean refill time of a pool.
    pub pool_refill_seconds: GaugeVec,
    /// Most claims of a pool's template within one refill time.
    pub pool_burst_claims: GaugeVec,
}

fn name(short: &str) -> String {
    format!("{PREFIX}_{short}")
}

impl Metrics {
    /// Builds every metric and registers it in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let histogram = |short: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name(short), help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("valid histogram definition");
            registered(&registry, h)
        };
        let counter = |short: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name(short), help), labels)
                .expect("valid counter definition");
            registered(&registry, c)
        };
        let gauge = |short: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name(short), help), labels).expect("valid gauge");
            registered(&registry, g)
        };

        let certificate_expiry = registered(
            &registry,
            Gauge::new(
                name("webhook_certificate_expiry_timestamp_seconds"),
                "Unix time at which the webhook serving certificate expires.",
            )
            .expect("valid gauge"),
        );
        let leader = registered(
            &registry,
            IntGauge::new(
                name("leader"),
                "1 while this process holds the leader Lease (or runs without leader election), else 0.",
            )
            .expect("valid gauge"),
        );
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                name("build_info"),
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .expect("valid gauge");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let build_info = registered(&registry, build_info);
        // Registered only when a policy file is followed
        // ([`Metrics::follow_policy_file`]): exported as 0 without one, it
        // would fire `SandboxPolicyFileRefused` for nothing.
        let policy_file_current = IntGauge::new(
            name("policy_file_current"),
            "1 while the admission policy in force is the policy file as last read; 0 after a refused reload (the previous policy stays in force).",
        )
        .expect("valid gauge");

        Metrics {
            claim_ready_seconds: histogram(
                "claim_ready_duration_seconds",
                "Time from a claim's admission until it was Ready, by namespace, launch type and template.",
                &["namespace", "launch_type", "template"],
                LATENCY_BUCKETS,
            ),
            warm_claim_leg_seconds: histogram(
                "warm_claim_leg_seconds",
                "A warm claim's critical path leg by leg, for claims served warm in one reconcile: reconcile_start (the webhook's admission stamp to the claim's first reconcile: the API server's commit and watch delivery, then the work queue), round_one (the pick and the steal, Sandbox, Service and NetworkPolicy written side by side), round_two (to the Ready status this reconcile wrote; refused or failed writes are left out).",
                &["leg"],
                LATENCY_BUCKETS,
            ),
            claims: counter(
                "claims_total",
                "Claims that reached a final state, by result (warm, cold, expired).",
                &["result"],
            ),
            steal_attempts: counter(
                "steal_attempts_total",
                "Conditioned takeover writes attempted on idle warm Pods, by namespace and pool.",
                &["namespace", "pool"],
            ),
            steal_conflicts: counter(
                "steal_conflicts_total",
                "Takeover writes that lost the race to another writer, by namespace and pool.",
                &["namespace", "pool"],
            ),
            pool_exhausted: counter(
                "pool_exhausted_total",
                "Claims served cold because no pool of their template had a usable idle Pod, by namespace and template.",
                &["namespace", "template"],
            ),
            pool_desired: gauge(
                "pool_desired_replicas",
                "Idle Pods a warm pool should keep.",
                &["namespace", "pool"],
            ),
            pool_ready: gauge(
                "pool_ready_replicas",
                "Idle Pods of a warm pool that are Ready.",
                &["namespace", "pool"],
            ),
            pool_idle: gauge(
                "pool_idle_replicas",
                "Idle Pods of a warm pool (Ready or starting).",
                &["namespace", "pool"],
            ),
            replenish_seconds: histogram(
                "pool_replenish_duration_seconds",
                "Time to create a warm pool's Pods (refills, first fill, scale-ups, rollouts), by namespace and pool: from the start of the pool's create batch until the API server answered each create (stage=created), and from a Pod's created-at stamp until the pool's reconcile that saw it Ready for the first time (stage=ready).",
                &["namespace", "pool", "stage"],
                LATENCY_BUCKETS,
            ),
            off_path_wait_seconds: histogram(
                "off_path_wait_seconds",
                "Time an adoption (work=adopt) or a pool refill (work=refill) waited for claims this process was serving to write Ready.",
                &["work"],
                FAST_BUCKETS,
            ),
            watch_events: counter(
                "watch_events_total",
                "Watch events applied to the operator's caches, by cache (pods, pools, services, networkpolicies, sandboxes, templates, claims) and event (applied, deleted, listed: the first list and each re-list).",
                &["cache", "event"],
            ),
            reconciles: counter(
                "reconcile_total",
                "Reconciles run, by controller.",
                &["controller"],
            ),
            reconcile_errors: counter(
                "reconcile_errors_total",
                "Reconciles that failed, by controller and error.",
                &["controller", "error"],
            ),
            reconcile_seconds: histogram(
                "reconcile_duration_seconds",
                "Reconcile duration, by controller.",
                &["controller"],
                FAST_BUCKETS,
            ),
            queue_wait_seconds: histogram(
                "queue_wait_seconds",
                "Time from when the work queue took a reconcile's cause (a watch event's wake-up, its expired requeue, the end of the run of the same object it waited behind) until the reconcile started, by controller; long waits mean every slot (--concurrency) was busy.",
                &["controller"],
                FAST_BUCKETS,
            ),
            queue_depth: gauge(
                "queue_depth",
                "Objects due for a reconcile and waiting for a free slot, by controller.",
                &["controller"],
            ),
            reconciles_running: gauge(
                "reconciles_running",
                "Reconciles running now, by controller (at most --concurrency each).",
                &["controller"],
            ),
            admission_requests: counter(
                "admission_requests_total",
                "Admission reviews answered, by kind, operation, endpoint and decision.",
                &["kind", "operation", "endpoint", "allowed"],
            ),
            admission_rejections: counter(
                "admission_rejections_total",
                "Admission requests refused before the policy saw them, by endpoint and reason (body_too_large, invalid_json, overloaded, timeout, handler_panicked, ...): the API server then applies the webhook's failurePolicy.",
                &["endpoint", "reason"],
            ),
            admission_seconds: histogram(
                "admission_duration_seconds",
                "Time to answer an admission review, by kind and endpoint.",
                &["kind", "endpoint"],
                FAST_BUCKETS,
            ),
            api_request_seconds: histogram(
                "api_request_duration_seconds",
                "Time the API server took to answer this process's requests (watches excepted), by verb, resource and outcome: status class, `error` (no answer) or `cancelled` (the caller stopped waiting).",
                &["verb", "resource", "code"],
                LATENCY_BUCKETS,
            ),
            pool_recommended: gauge(
                "pool_recommended_replicas",
                "Idle Pods recommended for a warm pool's target hit ratio at its peak claim rate.",
                &["namespace", "pool"],
            ),
            pool_predicted_hit_ratio: gauge(
                "pool_predicted_hit_ratio",
                "Hit ratio predicted (Erlang B) for a warm pool at its current size and 5-minute claim rate.",
                &["namespace", "pool"],
            ),
            pool_observed_hit_ratio: gauge(
                "pool_observed_hit_ratio",
                "Warm share of the claims of a pool's template over the last 5 minutes.",
                &["namespace", "pool"],
            ),
            pool_target_hit_ratio: gauge(
                "pool_target_hit_ratio",
                "Target hit ratio of a warm pool (spec.autoscaling.targetHitRatio, spec.targetHitRatio or 0.99).",
                &["namespace", "pool"],
            ),
            pool_claim_rate: gauge(
                "pool_claim_rate_per_second",
                "Claims per second of a pool's template, by window (1m, 5m, 15m, peak = busiest minute of the lookback).",
                &["namespace", "pool", "window"],
            ),
            pool_refill_seconds: gauge(
                "pool_refill_mean_seconds",
                "Mean time from a replacement Pod's creation to Ready (last 256 refills of the pool).",
                &["namespace", "pool"],
            ),
            pool_burst_claims: gauge(
                "pool_burst_claims",
                "Most claims of a pool's template that arrived within one refill time during the lookback.",
                &["namespace", "pool"],
            ),
            policy_reloads: counter(
                "policy_reloads_total",
                "Reloads of the admission policy file after a change, by outcome (reloaded, refused: the previous policy stays in force).",
                &["outcome"],
            ),
            policy_file_current,
            certificate_expiry,
            leader,
            build_info,
            registry,
        }
    }

    /// Exports `policy_file_current`, at 1: the policy file was read at
    /// start. Called once, when the operator follows a policy file.
    pub fn follow_policy_file(&self) {
        if self
            .registry
            .register(Box::new(self.policy_file_current.clone()))
            .is_ok()
        {
            self.policy_file_current.set(1);
        }
    }

    /// The registry, for the `/metrics` endpoint.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Registers `sandbox_operator_tracked_entries{table}`: the sizes of the
    /// operator's in-memory tables, read by `sample` at each scrape (so the
    /// figures are never stale). Fails when it is registered already.
    pub fn register_tracked_entries(&self, sample: Sampler) -> prometheus::Result<()> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                name("tracked_entries"),
                "Entries held in one of the operator's in-memory tables (caches, indexes, reservations, expectations, backoff, write memo, sizing), by table; read at scrape time.",
            ),
            &["table"],
        )
        .expect("valid gauge");
        self.registry
            .register(Box::new(SampledGauge { gauge, sample }))
    }

    /// The series labelled with one object (pool, template) of the cluster.
    fn per_object(&self) -> PerObject<'_> {
        PerObject {
            gauges: vec![
                &self.pool_desired,
                &self.pool_ready,
                &self.pool_idle,
                &self.pool_recommended,
                &self.pool_predicted_hit_ratio,
                &self.pool_observed_hit_ratio,
                &self.pool_target_hit_ratio,
                &self.pool_claim_rate,
                &self.pool_refill_seconds,
                &self.pool_burst_claims,
            ],
            counters: vec![
                &self.steal_attempts,
                &self.steal_conflicts,
                &self.pool_exhausted,
            ],
            histograms: vec![&self.claim_ready_seconds, &self.replenish_seconds],
        }
    }

    /// Removes every series labelled with a pool or template that `live`
    /// does not hold (the object was deleted); returns how many.
    pub fn drop_series_of_gone(&self, live: &LiveObjects) -> usize {
        let gone = |labels: &HashMap<String, String>| !live.holds(labels);
        let o = self.per_object();
        o.gauges
            .iter()
            .map(|v| drop_series(v, &gone))
            .sum::<usize>()
            + o.counters
                .iter()
                .map(|v| drop_series(v, &gone))
                .sum::<usize>()
            + o.histograms
                .iter()
                .map(|v| drop_series(v, &gone))
                .sum::<usize>()
    }

    /// Number of series labelled with a pool or template.
    pub fn object_series(&self) -> usize {
        let o = self.per_object();
        o.gauges.iter().map(|v| series(v)).sum::<usize>()
            + o.counters.iter().map(|v| series(v)).sum::<usize>()
            + o.histograms.iter().map(|v| series(v)).sum::<usize>()
    }

    /// The observer that feeds [`Metrics::api_request_seconds`], for the
    /// API clients' guard layer.
    pub fn api_observer(self: &std::sync::Arc<Self>) -> crate::client::RequestObserver {
        let metrics = self.clone();
        std::sync::Arc::new(move |labels, elapsed| {
            metrics
                .api_request_seconds
                .with_label_values(&[&labels.verb, &labels.resource, labels.code])
                .observe(elapsed.as_secs_f64());
        })
    }

    /// The series a controller's work queue reports to.
    pub fn queue_report(&self, controller: &str) -> crate::controller::QueueReport {
        crate::controller::QueueReport {
            wait: self.queue_wait_seconds.with_label_values(&[controller]),
            waiting: self.queue_depth.with_label_values(&[controller]),
            running: self.reconciles_running.with_label_values(&[controller]),
        }
    }

    /// Starts timing one reconcile; the returned guard records count and
    /// duration when dropped.
    pub fn reconcile_timer(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.with_label_values(&[controller]).inc();
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads (table, entries) pairs at scrape time.
pub type Sampler = Box<dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync>;

/// A gauge vector filled by its sampler each time it is collected.
struct SampledGauge {
    gauge: IntGaugeVec,
    sample: Sampler,
}

impl Collector for SampledGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge.reset();
        for (table, entries) in (self.sample)() {
            self.gauge.with_label_values(&[table]).set(entries);
        }
        self.gauge.collect()
    }
}

/// Drop guard recording a reconcile's duration.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_seconds
            .with_label_values(&[self.controller])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// Registers `metric` and gives it back; a name used twice is a bug.
fn registered<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric name");
    metric
}

#[cfg(test)]
mod tests;
