//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Expected flow: [`LeaderElector::acquire`] blocks until this process holds
//! the Lease, then [`LeaderElector::keep`] renews it in the background and
//! reports loss through a watch channel; [`LeaderElector::release`] clears the
//! holder on graceful shutdown so a standby takes over at once.
//!
//! Guarantees: every write to the Lease is a replace carrying the
//! resourceVersion that was read, so two candidates can never both believe
//! they took it in the same round.
//!
//! Caveats: leadership is advisory between renewals; the controllers stay
//! race-free without it (every ownership write is conditioned), the Lease
//! only avoids duplicated work.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
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
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
}

/// Holds, renews and releases the Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
}

/// What to do with the Lease as read. Pure.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Take,
    /// Someone else holds a valid Lease.
    Wait,
}

/// Decides from the Lease spec whether `identity` may hold it at `now`. Pure.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: jiff::Timestamp) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Take;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => LeaseDecision::Renew,
        None | Some("") => LeaseDecision::Take,
        Some(_) => {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            match renewed {
                Some(at) if at + jiff::SignedDuration::from_secs(duration) > now => {
                    LeaseDecision::Wait
                }
                _ => LeaseDecision::Take,
            }
        }
    }
}

impl LeaderElector {
    /// An elector for the Lease `config.namespace/config.name`.
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// One round: read, decide, write conditioned. Returns whether we hold
    /// the Lease afterwards.
    pub async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            now,
        );
        let lease_seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(15);
        match (current, decision) {
            (_, LeaseDecision::Wait) => Ok(false),
            (None, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(lease_seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_already_exists(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            (Some(mut lease), decision) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                if decision == LeaseDecision::Take {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(lease_seconds);
                spec.renew_time = Some(MicroTime(now));
                // `replace` carries metadata.resourceVersion: conditioned.
                match self
                    .api
                    .replace(&lease.name_any(), &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Blocks until the Lease is ours.
    pub async fn acquire(&self) {
        info!(lease = %self.config.name, identity = %self.config.identity, "waiting for leadership");
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    info!(identity = %self.config.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election round failed"),
            }
            tokio::time::sleep(self.config.renew_every).await;
        }
    }

    /// Renews in the background; the channel turns `false` when the Lease
    /// could not be renewed before it expired.
    pub fn keep(&self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(true);
        let this = self.clone();
        tokio::spawn(async move {
            let mut last_renewal = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(this.config.renew_every).await;
                match this.try_hold().await {
                    Ok(true) => last_renewal = tokio::time::Instant::now(),
                    Ok(false) => {
                        warn!("lost the leader Lease to another holder");
                        let _ = tx.send(false);
                        return;
                    }
                    Err(error) => {
                        warn!(%error, "renewing the leader Lease failed");
                        if last_renewal.elapsed() >= this.config.lease_duration {
                            let _ = tx.send(false);
                            return;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }

    /// Gives the Lease up so a standby can take over without waiting for
    /// expiry. Conditioned on the version read; losing that race is fine.
    pub async fn release(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(jiff::Timestamp::from_second(renewed).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn lease_decisions() {
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        assert_eq!(decide(None, "me", now), LeaseDecision::Take);
        assert_eq!(
            decide(Some(&spec(Some("me"), 990)), "me", now),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&spec(Some("you"), 990)), "me", now),
            LeaseDecision::Wait
        );
        assert_eq!(
            decide(Some(&spec(Some("you"), 900)), "me", now),
            LeaseDecision::Take
        );
        assert_eq!(
            decide(Some(&spec(None, 999)), "me", now),
            LeaseDecision::Take
        );
    }
}
