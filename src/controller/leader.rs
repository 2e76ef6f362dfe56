//! Leader election on a `coordination.k8s.io/v1` Lease, with the timing
//! rules of client-go's `leaderelection` package.
//!
//! Expected flow: [`LeaderElector::acquire`] blocks until this process holds
//! the Lease; [`LeaderElector::keep`] then renews it every retry period and
//! reports loss through a watch channel; [`LeaderElector::release`] clears
//! the holder on graceful shutdown so a standby takes over at once.
//!
//! Guarantees:
//! - Expiry is judged on this process's own monotonic clock: a candidate
//!   remembers when it last *observed a change* of the Lease record (holder,
//!   times, duration, resourceVersion) and takes the Lease only when nothing
//!   changed for `leaseDurationSeconds` since. The holder's `renewTime` is
//!   never compared with the local wall clock, so clock skew cannot make two
//!   holders.
//! - The holder stops leading when it has not renewed within
//!   `renew_deadline` (< `lease_duration`), counted from the START of its
//!   last successful renewal: another candidate saw that renewal at or after
//!   that instant and waits a full lease duration from then, so the holder
//!   gives up `lease_duration - renew_deadline` before anyone can take over.
//! - The [`Fence`] closes at that same deadline; the controllers' API client
//!   refuses every write once it is closed (see [`crate::client`]), so a
//!   process that was frozen (SIGSTOP, a long GC-like stall, a suspended VM)
//!   past its deadline writes nothing after it resumes, even before its
//!   renewal task has run.
//! - Every write to the Lease is conditioned on the resourceVersion read.
//!
//! Caveats: a write that passed the fence check and was then frozen before
//! it reached the wire can still land late (the same window client-go has);
//! ownership writes stay safe regardless, because each is conditioned on the
//! resourceVersion it read.

mod fence;
mod rules;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

pub use fence::Fence;
use rules::Observer;
pub use rules::{LeaseDecision, LeaseRecord, decide};

use super::{is_already_exists, is_conflict};

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process's identity (e.g. the Pod name).
    pub identity: String,
    /// How long others wait, from their last observed change, before taking
    /// the Lease over.
    pub lease_duration: Duration,
    /// How long the holder keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// Checks the timing rules: `retry_period < renew_deadline < lease_duration`.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--lease-renew-deadline-seconds ({:?}) must be shorter than --lease-duration-seconds ({:?}): \
                 the holder must stop before others may take the Lease",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--lease-retry-period-seconds ({:?}) must be shorter than --lease-renew-deadline-seconds ({:?}): \
                 at least one renewal must fit before the deadline",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}
/// Holds, renews and releases the Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    observed: Arc<Mutex<Observer>>,
    fence: Fence,
    /// The renewal task [`keep`](Self::keep) started, which
    /// [`release`](Self::release) stops first.
    renewal: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
}

impl LeaderElector {
    /// An elector for the Lease `config.namespace/config.name`. `client`
    /// must not be fenced (the Lease writes are what opens the fence).
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Arc::default(),
            fence: Fence::default(),
            renewal: Arc::default(),
        }
    }

    /// The fence this elector opens while it leads and closes when it stops.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Records `record` as seen now; returns since when it is unchanged.
    fn observe(&self, record: Option<&LeaseRecord>) -> Instant {
        self.observed
            .lock()
            .expect("observed lock")
            .see(record, Instant::now())
    }

    /// One round: read, decide, write conditioned on what was read. Returns
    /// whether we hold the Lease afterwards; on success the fence moves to
    /// the start of this round plus the renew deadline.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let started = Instant::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let record = current.as_ref().map(LeaseRecord::of);
        let observed_at = self.observe(record.as_ref());
        let decision = decide(
            record.as_ref(),
            &self.config.identity,
            observed_at,
            Instant::now(),
            self.config.lease_duration,
        );
        let written = match (current, decision) {
            (_, LeaseDecision::Wait) => return Ok(false),
            (None, _) => match self
                .api
                .create(&PostParams::default(), &self.new_lease())
                .await
            {
                Ok(lease) => lease,
                Err(e) if is_already_exists(&e) => return Ok(false),
                Err(e) => return Err(e),
            },
            (Some(lease), decision) => {
                let lease = self.updated(lease, decision == LeaseDecision::Take);
                // `replace` carries metadata.resourceVersion: conditioned.
                match self
                    .api
                    .replace(&lease.name_any(), &PostParams::default(), &lease)
                    .await
                {
                    Ok(lease) => lease,
                    Err(e) if is_conflict(&e) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
        };
        self.observe(Some(&LeaseRecord::of(&written)));
        self.fence.extend_to(started + self.config.renew_deadline);
        Ok(true)
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn new_lease(&self) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.lease_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        }
    }

    fn updated(&self, mut lease: Lease, take: bool) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        let lease_seconds = self.lease_seconds();
        let spec = lease.spec.get_or_insert_with(Default::default);
        if take {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(lease_seconds);
        spec.renew_time = Some(now);
        lease
    }

    /// Blocks until the Lease is ours. Each round is bounded by the renew
    /// deadline so a hung API server cannot stall it.
    pub async fn acquire(&self) {
        info!(lease = %self.config.name, identity = %self.config.identity, "waiting for leadership");
        loop {
            match tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew())
                .await
            {
                Ok(Ok(true)) => {
                    info!(identity = %self.config.identity, "became leader");
                    return;
                }
                Ok(Ok(false)) => {}
                Ok(Err(error)) => warn!(%error, "leader election round failed"),
                Err(_) => warn!("leader election round timed out"),
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
    }

    /// Renews every retry period in the background. The channel turns
    /// `false` (and the fence closes) when another process holds the Lease or
    /// when no renewal succeeded before the renew deadline; no renewal is
    /// attempted after the deadline.
    pub fn keep(&self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(true);
        let this = self.clone();
        let task = tokio::spawn(async move {
            let reason = this.renew_until_lost().await;
            this.fence.close();
            warn!(reason, "stopped leading");
            let _ = tx.send(false);
        });
        *self.renewal.lock().expect("renewal lock") = Some(task.abort_handle());
        rx
    }

    async fn renew_until_lost(&self) -> &'static str {
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let Some(remaining) = self
                .fence
                .deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
                .filter(|r| !r.is_zero())
            else {
                return "renew deadline passed";
            };
            match tokio::time::timeout(remaining, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return "the Lease is held by another process",
                Ok(Err(error)) => warn!(%error, "renewing the leader Lease failed; retrying"),
                Err(_) => return "renewal did not finish before the renew deadline",
            }
        }
    }

    /// Gives the Lease up so a standby can take over without waiting for
    /// expiry: stops the renewal task first (a renewal racing the release
    /// used to win it, keeping the Lease held for its whole duration, or
    /// take the Lease again after it was given up, and reopen the fence),
    /// closes the fence for good, then clears the holder, conditioned on
    /// the version read; a conflict (a renewal that was already on the wire
    /// landed first) is read again, at most [`RELEASE_TRIES`] times.
    /// Bounded by the renew deadline: a stop while the API server hangs
    /// must leave the process its grace period to drain the webhook.
    pub async fn release(&self) {
        if let Some(renewal) = self.renewal.lock().expect("renewal lock").take() {
            renewal.abort();
        }
        self.fence.close();
        if tokio::time::timeout(self.config.renew_deadline, self.clear_holder())
            .await
            .is_err()
        {
            warn!("could not release the leader Lease: no answer before the renew deadline");
        }
    }

    /// Clears the holder of the Lease, when it is this process (see
    /// [`release`](Self::release)).
    async fn clear_holder(&self) {
        for _ in 0..RELEASE_TRIES {
            let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
                return;
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.acquire_time = None;
            match self
                .api
                .replace(&lease.name_any(), &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    info!("released the leader Lease");
                    return;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => {
                    warn!(%error, "could not release the leader Lease");
                    return;
                }
            }
        }
        warn!("could not release the leader Lease: it kept changing");
    }
}

/// How often [`LeaderElector::release`] reads the Lease again after a
/// conflict.
const RELEASE_TRIES: usize = 3;

/// `period` plus up to 20 % random jitter, so candidates do not retry in step.
fn jittered(period: Duration) -> Duration {
    let nanos = u64::try_from(period.as_nanos() / 5).unwrap_or(u64::MAX);
    let extra = if nanos == 0 {
        0
    } else {
        u64::from(std::process::id()).wrapping_mul(0x9E37_79B9)
            ^ u64::from(jiff::Timestamp::now().subsec_nanosecond().unsigned_abs())
    };
    period + Duration::from_nanos(extra % nanos.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn timing_rules_are_checked() {
        assert!(config().validate().is_ok());
        let late = LeaderConfig {
            renew_deadline: LEASE,
            ..config()
        };
        assert!(
            late.validate()
                .unwrap_err()
                .contains("--lease-renew-deadline-seconds")
        );
        let slow = LeaderConfig {
            retry_period: Duration::from_secs(10),
            ..config()
        };
        assert!(
            slow.validate()
                .unwrap_err()
                .contains("--lease-retry-period-seconds")
        );
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(2) && d < Duration::from_millis(2400));
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    fn config() -> LeaderConfig {
        LeaderConfig {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "me".into(),
            lease_duration: LEASE,
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}
