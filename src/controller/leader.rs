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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

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

/// The instant until which this process may write as the leader; closed
/// (in the past) when it does not lead. Cheap to clone; all clones share it.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    until: Arc<Mutex<Option<Instant>>>,
}

impl Fence {
    /// Whether writes are allowed at `now`.
    pub fn is_open_at(&self, now: Instant) -> bool {
        self.until
            .lock()
            .expect("fence lock")
            .is_some_and(|until| now < until)
    }

    /// Whether writes are allowed now.
    pub fn is_open(&self) -> bool {
        self.is_open_at(Instant::now())
    }

    /// The deadline, if the fence was ever opened.
    pub fn deadline(&self) -> Option<Instant> {
        *self.until.lock().expect("fence lock")
    }

    /// Moves the deadline to `until` (never backwards).
    pub fn extend_to(&self, until: Instant) {
        let mut current = self.until.lock().expect("fence lock");
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
    }

    /// Closes the fence for good.
    pub fn close(&self) {
        *self.until.lock().expect("fence lock") = Some(Instant::now() - Duration::from_millis(1));
    }
}

/// The parts of a Lease whose change proves its holder is alive.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// `spec.holderIdentity` (empty when released).
    pub holder: String,
    /// `spec.leaseDurationSeconds`.
    pub duration_seconds: Option<i32>,
    /// `spec.renewTime` as written by the holder (compared, never evaluated).
    pub renew_time: Option<String>,
    /// `spec.acquireTime`.
    pub acquire_time: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
}

impl LeaseRecord {
    /// The record of a Lease as read.
    pub fn of(lease: &Lease) -> LeaseRecord {
        let spec = lease.spec.clone().unwrap_or_default();
        let time = |t: Option<MicroTime>| t.map(|t| t.0.to_string());
        LeaseRecord {
            holder: spec.holder_identity.unwrap_or_default(),
            duration_seconds: spec.lease_duration_seconds,
            renew_time: time(spec.renew_time),
            acquire_time: time(spec.acquire_time),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What to do with the Lease as read. Pure.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No Lease yet: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Released, or unchanged for a full lease duration: take it.
    Take,
    /// Someone else holds it and was seen alive within the lease duration.
    Wait,
}

/// Decides from the Lease record whether `identity` may hold it at `now`,
/// given when this process last saw the record change (`observed_at`) and
/// the duration to assume when the record carries none. Pure.
pub fn decide(
    record: Option<&LeaseRecord>,
    identity: &str,
    observed_at: Instant,
    now: Instant,
    default_duration: Duration,
) -> LeaseDecision {
    let Some(record) = record else {
        return LeaseDecision::Create;
    };
    if record.holder == identity {
        return LeaseDecision::Renew;
    }
    if record.holder.is_empty() {
        return LeaseDecision::Take;
    }
    let duration = record
        .duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(default_duration, Duration::from_secs);
    if now.saturating_duration_since(observed_at) >= duration {
        LeaseDecision::Take
    } else {
        LeaseDecision::Wait
    }
}

/// What this process last saw of the Lease, and since when (monotonic clock).
#[derive(Debug, Default)]
struct Observer {
    last: Option<(Option<LeaseRecord>, Instant)>,
}

impl Observer {
    /// Records `record` as seen at `now`; returns since when it is unchanged.
    fn see(&mut self, record: Option<&LeaseRecord>, now: Instant) -> Instant {
        match &self.last {
            Some((seen, at)) if seen.as_ref() == record => *at,
            _ => {
                self.last = Some((record.cloned(), now));
                now
            }
        }
    }
}

/// Holds, renews and releases the Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    observed: Arc<Mutex<Observer>>,
    fence: Fence,
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
        tokio::spawn(async move {
            let reason = this.renew_until_lost().await;
            this.fence.close();
            warn!(reason, "stopped leading");
            let _ = tx.send(false);
        });
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
    /// expiry. Conditioned on the version read; losing that race is fine.
    pub async fn release(&self) {
        self.fence.close();
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
            Ok(_) => info!("released the leader Lease"),
            Err(error) => warn!(%error, "could not release the leader Lease"),
        }
    }
}

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

    fn record(holder: &str, rv: &str) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            duration_seconds: Some(15),
            renew_time: Some("2030-01-01T00:00:00Z".into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    #[test]
    fn missing_released_and_own_leases() {
        let now = Instant::now();
        assert_eq!(decide(None, "me", now, now, LEASE), LeaseDecision::Create);
        assert_eq!(
            decide(Some(&record("me", "1")), "me", now, now, LEASE),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&record("", "1")), "me", now, now, LEASE),
            LeaseDecision::Take
        );
    }

    #[test]
    fn expiry_counts_from_the_local_observation_not_the_renew_time() {
        let seen = Instant::now();
        // The holder's renewTime is far in the future (a skewed clock): it
        // does not matter, only how long the record stayed unchanged here.
        let other = record("you", "7");
        assert_eq!(
            decide(
                Some(&other),
                "me",
                seen,
                seen + Duration::from_secs(14),
                LEASE
            ),
            LeaseDecision::Wait
        );
        assert_eq!(
            decide(Some(&other), "me", seen, seen + LEASE, LEASE),
            LeaseDecision::Take
        );
        // The record's own duration wins over the local default.
        let short = LeaseRecord {
            duration_seconds: Some(3),
            ..other.clone()
        };
        assert_eq!(
            decide(
                Some(&short),
                "me",
                seen,
                seen + Duration::from_secs(3),
                LEASE
            ),
            LeaseDecision::Take
        );
        let broken = LeaseRecord {
            duration_seconds: Some(0),
            ..other
        };
        assert_eq!(
            decide(
                Some(&broken),
                "me",
                seen,
                seen + Duration::from_secs(3),
                LEASE
            ),
            LeaseDecision::Wait
        );
    }

    #[test]
    fn a_changed_record_restarts_the_observation() {
        let mut observer = Observer::default();
        let t0 = Instant::now();
        let first = record("you", "1");
        assert_eq!(observer.see(Some(&first), t0), t0);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(observer.see(Some(&first), later), t0, "unchanged: kept");
        let renewed = record("you", "2");
        assert_eq!(observer.see(Some(&renewed), later), later, "changed: reset");
        assert_eq!(
            observer.see(None, later + LEASE),
            later + LEASE,
            "deleted: reset"
        );
    }

    #[tokio::test]
    async fn fence_opens_forward_only_and_closes() {
        let fence = Fence::default();
        let now = Instant::now();
        assert!(!fence.is_open_at(now), "closed until a renewal opens it");
        fence.extend_to(now + Duration::from_secs(10));
        assert!(fence.is_open_at(now + Duration::from_secs(9)));
        assert!(!fence.is_open_at(now + Duration::from_secs(10)));
        fence.extend_to(now + Duration::from_secs(5));
        assert!(
            fence.is_open_at(now + Duration::from_secs(9)),
            "never moves back"
        );
        fence.close();
        assert!(!fence.is_open());
    }

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
