//! The `SandboxWarmPool` kind (`extensions.agents.x-k8s.io/v1alpha1`): how
//! many idle, pre-started Pods of a template to keep, optional autoscaling,
//! and the status the warm-pool controller writes (sizes, rates, conditions).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::SandboxTemplateRef;

agents_kind! {
    kube(
        group = "extensions.agents.x-k8s.io", kind = "SandboxWarmPool", status = "SandboxWarmPoolStatus", shortname = "swp",
        doc = "A pool of idle, pre-started Pods of one template, taken over by claims.",
        printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
        printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
        printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredReplicas"),
        printcolumn(name = "Recommended", type_ = "integer", json_path = ".status.recommendedReplicas"),
        scale(spec_replicas_path = ".spec.replicas", status_replicas_path = ".status.replicas", label_selector_path = ".status.selector"),
    )
    /// Keeps `replicas` idle, pre-started Pods of a template.
    pub struct SandboxWarmPoolSpec {
        /// Number of idle Pods to keep.
        #[schemars(range(min = 0))]
        pub replicas: i32,
        /// The template the Pods are made from.
        pub sandbox_template_ref: SandboxTemplateRef,
        /// Hit ratio (warm share of claims) that `status.recommendedReplicas`
        /// aims at; default 0.99. `autoscaling.targetHitRatio` wins when set.
        #[schemars(range(min = 0.01, max = 0.9999))]
        pub target_hit_ratio: Option<f64>,
        /// Opt-in: keep the pool at the recommended size within bounds. Absent:
        /// the pool keeps `spec.replicas` (and the scale subresource, HPA or KEDA
        /// drive it as before).
        pub autoscaling: Option<PoolAutoscaling>,
    }
}

api_object! {
    /// Autoscaling of a warm pool from its measured claim traffic.
    ///
    /// While set, `spec.replicas` is not used (the effective size is
    /// `status.desiredReplicas`); do not point an HPA at the same pool.
    pub struct PoolAutoscaling {
        /// Fewest idle Pods to keep.
        #[schemars(range(min = 0))]
        pub min_replicas: i32,
        /// Most idle Pods to keep (the operator's pool cap applies on top).
        #[schemars(range(min = 0))]
        pub max_replicas: i32,
        /// Target hit ratio; default 0.99.
        #[schemars(range(min = 0.01, max = 0.9999))]
        pub target_hit_ratio: Option<f64>,
        /// The pool shrinks only when the peak that sized it is older than this;
        /// default 300.
        #[schemars(range(min = 0, max = 3600))]
        pub scale_down_delay_seconds: Option<i32>,
    }
}

api_object! {
    /// The observed state of a [`SandboxWarmPool`].
    pub struct SandboxWarmPoolStatus {
        /// Idle Pods that belong to the pool.
        #[serde(default)]
        pub replicas: i32,
        /// Idle Pods that are Ready.
        #[serde(default)]
        pub ready_replicas: i32,
        /// Label selector of the pool's Pods (scale subresource).
        pub selector: Option<String>,
        /// Hash of the template the pool's Pods are made from.
        pub template_hash: Option<String>,
        /// Idle Pods the pool keeps now: `spec.replicas` (capped), or the
        /// autoscaled size.
        pub desired_replicas: Option<i32>,
        /// What the pool measured and recommends (flattened into the status).
        #[serde(flatten)]
        pub sizing: PoolSizing,
        /// `Ready`, `Exhausted` and (with autoscaling) `Autoscaling` conditions.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub conditions: Vec<Condition>,
    }
}

api_object! {
    /// The sizing figures of a pool's status, written by the pool controller
    /// from its measurements (see `sandbox-operator pool advise`).
    pub struct PoolSizing {
        /// Size for the target hit ratio at the peak claim rate (a claim that
        /// finds no idle Pod takes the oldest starting one, so a pool of `n`
        /// serves warm the claims with fewer than `n` others within one refill
        /// time), never below the size that would have served the target share
        /// of the lookback's claims (the last 4096 kept) warm as they came
        /// (bursts included).
        pub recommended_replicas: Option<i32>,
        /// Hit ratio predicted for the current size at the 5-minute claim rate.
        pub predicted_hit_ratio: Option<f64>,
        /// Warm share of the template's claims over the last 5 minutes.
        pub observed_hit_ratio: Option<f64>,
        /// Claims of the template per minute (5-minute window).
        pub claim_rate_per_minute: Option<f64>,
        /// Mean refill time (replacement created -> Ready) of the last 256
        /// refills, in seconds.
        pub refill_seconds: Option<f64>,
    }
}
