//! The warm path leg by leg, for the admins' histogram
//! `sandbox_operator_warm_claim_leg_seconds{leg}`: the same three legs the
//! bench reads from its `timeline` log, measured on every claim served
//! warm in one reconcile.
//! - `reconcile_start`: from the webhook's admission stamp (the
//!   `agents.x-k8s.io/admitted-at` annotation, taken while the webhook
//!   answers) to the claim's first reconcile, which serves it: the rest of
//!   the webhook's answer, the API server's commit and watch delivery, then
//!   the operator's work queue. Left out without the stamp, for a claim
//!   that already has a status (an earlier reconcile could not serve it: a
//!   missing template, a refused Sandbox), and when the webhook's replica
//!   has a clock ahead of the leader's (a negative time).
//! - `round_one`: the template lookup, the pick and round one's four
//!   writes side by side.
//! - `round_two`: from round one's end to the claim's first Ready written
//!   by this reconcile (with the repoint after a lost steal, when there was
//!   one). A Ready write refused as stale, or failed, is not observed: a
//!   later reconcile writes it, outside these legs.

use std::time::{Duration, Instant};

use crate::api::{SandboxClaim, admission_stamp};
use crate::metrics::Metrics;

/// One claim's legs, as far as it has gone.
pub(super) struct Legs {
    /// Admission to this reconcile, when the claim carries the stamp.
    reconcile_start: Option<Duration>,
    started: Instant,
    round_one: Option<(Duration, Instant)>,
}

impl Legs {
    /// Starts the clock of a claim's serving reconcile.
    pub(super) fn start(claim: &SandboxClaim) -> Legs {
        let first_reconcile = claim.status.is_none();
        let reconcile_start = first_reconcile
            .then(|| admission_stamp(&claim.metadata))
            .flatten()
            .and_then(|admitted| {
                Duration::try_from(jiff::Timestamp::now().duration_since(admitted)).ok()
            });
        Legs {
            reconcile_start,
            started: Instant::now(),
            round_one: None,
        }
    }

    /// Round one's writes have all returned.
    pub(super) fn round_one_done(&mut self) {
        let now = Instant::now();
        self.round_one = Some((now - self.started, now));
    }

    /// The Ready status was written: the legs go to the histogram (only a
    /// claim whose round one was timed here).
    pub(super) fn ready_written(&self, metrics: &Metrics) {
        let Some((round_one, ended)) = self.round_one else {
            return;
        };
        let legs = [
            ("reconcile_start", self.reconcile_start),
            ("round_one", Some(round_one)),
            ("round_two", Some(ended.elapsed())),
        ];
        for (leg, took) in legs {
            if let Some(took) = took {
                metrics
                    .warm_claim_leg_seconds
                    .with_label_values(&[leg])
                    .observe(took.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ADMITTED_AT_ANNOTATION;
    use kube::ResourceExt;

    fn count(metrics: &Metrics, leg: &str) -> u64 {
        metrics
            .warm_claim_leg_seconds
            .with_label_values(&[leg])
            .get_sample_count()
    }

    #[test]
    fn the_legs_go_out_only_once_round_one_was_timed() {
        let metrics = Metrics::new();
        let mut claim = SandboxClaim::new("c", Default::default());
        let mut legs = Legs::start(&claim);
        legs.ready_written(&metrics);
        assert_eq!(count(&metrics, "round_one"), 0, "no round one: nothing");
        legs.round_one_done();
        legs.ready_written(&metrics);
        assert_eq!(count(&metrics, "round_one"), 1);
        assert_eq!(count(&metrics, "round_two"), 1);
        assert_eq!(count(&metrics, "reconcile_start"), 0, "no admission stamp");
        let admitted = jiff::Timestamp::now() - jiff::SignedDuration::from_millis(40);
        claim
            .annotations_mut()
            .insert(ADMITTED_AT_ANNOTATION.to_string(), admitted.to_string());
        let mut legs = Legs::start(&claim);
        legs.round_one_done();
        legs.ready_written(&metrics);
        let start = metrics
            .warm_claim_leg_seconds
            .with_label_values(&["reconcile_start"]);
        assert_eq!(start.get_sample_count(), 1);
        assert!(
            start.get_sample_sum() >= 0.040,
            "{}",
            start.get_sample_sum()
        );
        // A claim an earlier reconcile gave a status (it could not serve
        // it then): its admission is not this reconcile's start.
        claim.status = Some(Default::default());
        let mut legs = Legs::start(&claim);
        legs.round_one_done();
        legs.ready_written(&metrics);
        assert_eq!(start.get_sample_count(), 1, "no second reconcile_start");
        assert_eq!(count(&metrics, "round_one"), 3);
    }
}
