//! The metric definitions of [`Metrics::new`](super::Metrics::new), group by
//! group: each metric's name, help, labels and buckets. The groups register
//! their metrics in the order `Metrics::new` calls them.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::{FAST_BUCKETS, LATENCY_BUCKETS, name, registered};

/// Builds the operator's metrics and registers each in one registry.
pub(super) struct Define<'a> {
    registry: &'a Registry,
}

/// The process-wide gauges: certificate expiry, leader and build info.
pub(super) struct Process {
    pub(super) certificate_expiry: Gauge,
    pub(super) leader: IntGauge,
    pub(super) build_info: IntGaugeVec,
}

/// A claim's way to Ready: its latency, its result, steals and exhausted pools.
pub(super) struct ClaimPath {
    pub(super) claim_ready_seconds: HistogramVec,
    pub(super) warm_claim_leg_seconds: HistogramVec,
    pub(super) claims: IntCounterVec,
    pub(super) steal_attempts: IntCounterVec,
    pub(super) steal_conflicts: IntCounterVec,
    pub(super) pool_exhausted: IntCounterVec,
}

/// A warm pool's idle Pods and the time to create them.
pub(super) struct PoolReplicas {
    pub(super) pool_desired: GaugeVec,
    pub(super) pool_ready: GaugeVec,
    pub(super) pool_idle: GaugeVec,
    pub(super) replenish_seconds: HistogramVec,
    pub(super) off_path_wait_seconds: HistogramVec,
}

/// The controllers' work: watch events, reconciles and their work queues.
pub(super) struct ControllerWork {
    pub(super) watch_events: IntCounterVec,
    pub(super) reconciles: IntCounterVec,
    pub(super) reconcile_errors: IntCounterVec,
    pub(super) reconcile_seconds: HistogramVec,
    pub(super) queue_wait_seconds: HistogramVec,
    pub(super) queue_depth: GaugeVec,
    pub(super) reconciles_running: GaugeVec,
}

/// The webhook's admission reviews and the API server's answer times.
pub(super) struct WebhookAndApi {
    pub(super) admission_requests: IntCounterVec,
    pub(super) admission_rejections: IntCounterVec,
    pub(super) admission_seconds: HistogramVec,
    pub(super) api_request_seconds: HistogramVec,
}

/// A warm pool's sizing figures: recommendation, hit ratios, rates, refill, bursts.
pub(super) struct PoolSizing {
    pub(super) pool_recommended: GaugeVec,
    pub(super) pool_predicted_hit_ratio: GaugeVec,
    pub(super) pool_observed_hit_ratio: GaugeVec,
    pub(super) pool_target_hit_ratio: GaugeVec,
    pub(super) pool_claim_rate: GaugeVec,
    pub(super) pool_refill_seconds: GaugeVec,
    pub(super) pool_burst_claims: GaugeVec,
}

/// The policy file's reloads and whether the policy in force is the file.
pub(super) struct PolicyFile {
    pub(super) policy_reloads: IntCounterVec,
    pub(super) policy_file_current: IntGauge,
}

impl<'a> Define<'a> {
    /// A definer that registers every metric it builds in `registry`.
    pub(super) fn new(registry: &'a Registry) -> Self {
        Define { registry }
    }

    /// Builds and registers a histogram vector with these buckets.
    fn histogram(&self, short: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
        let h = HistogramVec::new(
            HistogramOpts::new(name(short), help).buckets(buckets.to_vec()),
            labels,
        )
        .expect("valid histogram definition");
        registered(self.registry, h)
    }

    /// Builds and registers a counter vector.
    fn counter(&self, short: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name(short), help), labels)
            .expect("valid counter definition");
        registered(self.registry, c)
    }

    /// Builds and registers a gauge vector.
    fn gauge(&self, short: &str, help: &str, labels: &[&str]) -> GaugeVec {
        let g = GaugeVec::new(Opts::new(name(short), help), labels).expect("valid gauge");
        registered(self.registry, g)
    }

    /// Registers the certificate expiry, leader and build info gauges.
    pub(super) fn process(&self) -> Process {
        let certificate_expiry = registered(
            self.registry,
            Gauge::new(
                name("webhook_certificate_expiry_timestamp_seconds"),
                "Unix time at which the webhook serving certificate expires.",
            )
            .expect("valid gauge"),
        );
        let leader = registered(
            self.registry,
            IntGauge::new(
                name("leader"),
                "1 while this process holds the leader Lease (or runs without leader election), else 0.",
            )
            .expect("valid gauge"),
        );
        let build_info = IntGaugeVec::new(
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
        let build_info = registered(self.registry, build_info);
        Process {
            certificate_expiry,
            leader,
            build_info,
        }
    }

    /// Registers the claim path metrics: latency, legs, results, steals, exhaustion.
    pub(super) fn claim_path(&self) -> ClaimPath {
        ClaimPath {
            claim_ready_seconds: self.histogram(
                "claim_ready_duration_seconds",
                "Time from a claim's admission until it was Ready, by namespace, launch type and template.",
                &["namespace", "launch_type", "template"],
                LATENCY_BUCKETS,
            ),
            warm_claim_leg_seconds: self.histogram(
                "warm_claim_leg_seconds",
                "A warm claim's critical path leg by leg, for claims served warm in one reconcile: reconcile_start (the webhook's admission stamp to the claim's first reconcile: the API server's commit and watch delivery, then the work queue), round_one (the pick and the steal, Sandbox, Service and NetworkPolicy written side by side), round_two (to the Ready status this reconcile wrote; refused or failed writes are left out).",
                &["leg"],
                LATENCY_BUCKETS,
            ),
            claims: self.counter(
                "claims_total",
                "Claims that reached a final state, by result (warm, cold, expired).",
                &["result"],
            ),
            steal_attempts: self.counter(
                "steal_attempts_total",
                "Conditioned takeover writes attempted on idle warm Pods, by namespace and pool.",
                &["namespace", "pool"],
            ),
            steal_conflicts: self.counter(
                "steal_conflicts_total",
                "Takeover writes that lost the race to another writer, by namespace and pool.",
                &["namespace", "pool"],
            ),
            pool_exhausted: self.counter(
                "pool_exhausted_total",
                "Claims served cold because no pool of their template had a usable idle Pod, by namespace and template.",
                &["namespace", "template"],
            ),
        }
    }

    /// Registers the metrics of a pool's idle Pods and of creating them.
    pub(super) fn pool_replicas(&self) -> PoolReplicas {
        PoolReplicas {
            pool_desired: self.gauge(
                "pool_desired_replicas",
                "Idle Pods a warm pool should keep.",
                &["namespace", "pool"],
            ),
            pool_ready: self.gauge(
                "pool_ready_replicas",
                "Idle Pods of a warm pool that are Ready.",
                &["namespace", "pool"],
            ),
            pool_idle: self.gauge(
                "pool_idle_replicas",
                "Idle Pods of a warm pool (Ready or starting).",
                &["namespace", "pool"],
            ),
            replenish_seconds: self.histogram(
                "pool_replenish_duration_seconds",
                "Time to create a warm pool's Pods (refills, first fill, scale-ups, rollouts), by namespace and pool: from the start of the pool's create batch until the API server answered each create (stage=created), and from a Pod's created-at stamp until the pool's reconcile that saw it Ready for the first time (stage=ready).",
                &["namespace", "pool", "stage"],
                LATENCY_BUCKETS,
            ),
            off_path_wait_seconds: self.histogram(
                "off_path_wait_seconds",
                "Time an adoption (work=adopt) or a pool refill (work=refill) waited for claims this process was serving to write Ready.",
                &["work"],
                FAST_BUCKETS,
            ),
        }
    }

    /// Registers the watch, reconcile and work queue metrics.
    pub(super) fn controller_work(&self) -> ControllerWork {
        ControllerWork {
            watch_events: self.counter(
                "watch_events_total",
                "Watch events applied to the operator's caches, by cache (pods, pools, services, networkpolicies, sandboxes, templates, claims) and event (applied, deleted, listed: the first list and each re-list).",
                &["cache", "event"],
            ),
            reconciles: self.counter(
                "reconcile_total",
                "Reconciles run, by controller.",
                &["controller"],
            ),
            reconcile_errors: self.counter(
                "reconcile_errors_total",
                "Reconciles that failed, by controller and error.",
                &["controller", "error"],
            ),
            reconcile_seconds: self.histogram(
                "reconcile_duration_seconds",
                "Reconcile duration, by controller.",
                &["controller"],
                FAST_BUCKETS,
            ),
            queue_wait_seconds: self.histogram(
                "queue_wait_seconds",
                "Time from when the work queue took a reconcile's cause (a watch event's wake-up, its expired requeue, the end of the run of the same object it waited behind) until the reconcile started, by controller; long waits mean every slot (--concurrency) was busy.",
                &["controller"],
                FAST_BUCKETS,
            ),
            queue_depth: self.gauge(
                "queue_depth",
                "Objects due for a reconcile and waiting for a free slot, by controller.",
                &["controller"],
            ),
            reconciles_running: self.gauge(
                "reconciles_running",
                "Reconciles running now, by controller (at most --concurrency each).",
                &["controller"],
            ),
        }
    }

    /// Registers the admission and API request metrics.
    pub(super) fn webhook_and_api(&self) -> WebhookAndApi {
        WebhookAndApi {
            admission_requests: self.counter(
                "admission_requests_total",
                "Admission reviews answered, by kind, operation, endpoint and decision.",
                &["kind", "operation", "endpoint", "allowed"],
            ),
            admission_rejections: self.counter(
                "admission_rejections_total",
                "Admission requests refused before the policy saw them, by endpoint and reason (body_too_large, invalid_json, overloaded, timeout, handler_panicked, ...): the API server then applies the webhook's failurePolicy.",
                &["endpoint", "reason"],
            ),
            admission_seconds: self.histogram(
                "admission_duration_seconds",
                "Time to answer an admission review, by kind and endpoint.",
                &["kind", "endpoint"],
                FAST_BUCKETS,
            ),
            api_request_seconds: self.histogram(
                "api_request_duration_seconds",
                "Time the API server took to answer this process's requests (watches excepted), by verb, resource and outcome: status class, `error` (no answer) or `cancelled` (the caller stopped waiting).",
                &["verb", "resource", "code"],
                LATENCY_BUCKETS,
            ),
        }
    }

    /// Registers the pool sizing gauges (recommendation, hit ratios, rates).
    pub(super) fn pool_sizing(&self) -> PoolSizing {
        PoolSizing {
            pool_recommended: self.gauge(
                "pool_recommended_replicas",
                "Idle Pods recommended for a warm pool's target hit ratio at its peak claim rate.",
                &["namespace", "pool"],
            ),
            pool_predicted_hit_ratio: self.gauge(
                "pool_predicted_hit_ratio",
                "Hit ratio predicted for a warm pool at its current size and 5-minute claim rate (a miss takes the oldest starting Pod: P(Poisson(rate x refill) < size)).",
                &["namespace", "pool"],
            ),
            pool_observed_hit_ratio: self.gauge(
                "pool_observed_hit_ratio",
                "Warm share of the claims of a pool's template over the last 5 minutes.",
                &["namespace", "pool"],
            ),
            pool_target_hit_ratio: self.gauge(
                "pool_target_hit_ratio",
                "Target hit ratio of a warm pool (spec.autoscaling.targetHitRatio, spec.targetHitRatio or 0.99).",
                &["namespace", "pool"],
            ),
            pool_claim_rate: self.gauge(
                "pool_claim_rate_per_second",
                "Claims per second of a pool's template, by window (1m, 5m, 15m, peak = busiest minute of the lookback).",
                &["namespace", "pool", "window"],
            ),
            pool_refill_seconds: self.gauge(
                "pool_refill_mean_seconds",
                "Mean time from a replacement Pod's creation to Ready (last 256 refills of the pool).",
                &["namespace", "pool"],
            ),
            pool_burst_claims: self.gauge(
                "pool_burst_claims",
                "Most claims of a pool's template that arrived within one refill time during the lookback.",
                &["namespace", "pool"],
            ),
        }
    }

    /// Registers the policy reload counter; builds the policy file gauge unregistered.
    pub(super) fn policy_file(&self) -> PolicyFile {
        // Registered only when a policy file is followed
        // ([`Metrics::follow_policy_file`]): exported as 0 without one, it
        // would fire `SandboxPolicyFileRefused` for nothing.
        let policy_file_current = IntGauge::new(
            name("policy_file_current"),
            "1 while the admission policy in force is the policy file as last read; 0 after a refused reload (the previous policy stays in force).",
        )
        .expect("valid gauge");
        PolicyFile {
            policy_reloads: self.counter(
                "policy_reloads_total",
                "Reloads of the admission policy file after a change, by outcome (reloaded, refused: the previous policy stays in force).",
                &["outcome"],
            ),
            policy_file_current,
        }
    }
}
