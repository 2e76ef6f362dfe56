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
    Encoder, Gauge, GaugeVec, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

mod define;
mod series;

use define::Define;
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
    /// Recommended idle Pods per pool (the sizing model at the peak claim rate).
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
        let define = Define::new(&registry);
        // The groups register their metrics in this order.
        let process = define.process();
        let claim = define.claim_path();
        let replicas = define.pool_replicas();
        let work = define.controller_work();
        let webhook = define.webhook_and_api();
        let sizing = define.pool_sizing();
        let policy = define.policy_file();
        Metrics {
            claim_ready_seconds: claim.claim_ready_seconds,
            warm_claim_leg_seconds: claim.warm_claim_leg_seconds,
            claims: claim.claims,
            steal_attempts: claim.steal_attempts,
            steal_conflicts: claim.steal_conflicts,
            pool_exhausted: claim.pool_exhausted,
            pool_desired: replicas.pool_desired,
            pool_ready: replicas.pool_ready,
            pool_idle: replicas.pool_idle,
            replenish_seconds: replicas.replenish_seconds,
            off_path_wait_seconds: replicas.off_path_wait_seconds,
            watch_events: work.watch_events,
            reconciles: work.reconciles,
            reconcile_errors: work.reconcile_errors,
            reconcile_seconds: work.reconcile_seconds,
            queue_wait_seconds: work.queue_wait_seconds,
            queue_depth: work.queue_depth,
            reconciles_running: work.reconciles_running,
            admission_requests: webhook.admission_requests,
            admission_rejections: webhook.admission_rejections,
            admission_seconds: webhook.admission_seconds,
            api_request_seconds: webhook.api_request_seconds,
            pool_recommended: sizing.pool_recommended,
            pool_predicted_hit_ratio: sizing.pool_predicted_hit_ratio,
            pool_observed_hit_ratio: sizing.pool_observed_hit_ratio,
            pool_target_hit_ratio: sizing.pool_target_hit_ratio,
            pool_claim_rate: sizing.pool_claim_rate,
            pool_refill_seconds: sizing.pool_refill_seconds,
            pool_burst_claims: sizing.pool_burst_claims,
            policy_reloads: policy.policy_reloads,
            policy_file_current: policy.policy_file_current,
            certificate_expiry: process.certificate_expiry,
            leader: process.leader,
            build_info: process.build_info,
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
