//! The pure rules of leader election: what a Lease record says, when this
//! process may take it (judged only from when it last saw the record
//! change, on its own monotonic clock), and the record of those changes.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use tokio::time::Instant;

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
pub(super) struct Observer {
    last: Option<(Option<LeaseRecord>, Instant)>,
}

impl Observer {
    /// Records `record` as seen at `now`; returns since when it is unchanged.
    pub(super) fn see(&mut self, record: Option<&LeaseRecord>, now: Instant) -> Instant {
        match &self.last {
            Some((seen, at)) if seen.as_ref() == record => *at,
            _ => {
                self.last = Some((record.cloned(), now));
                now
            }
        }
    }
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
}
