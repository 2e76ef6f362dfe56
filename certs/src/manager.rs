//! The loop that keeps the webhook's certificates valid and published.
//!
//! Every pass ([`CertManager::ensure`]): read the Secret (creating it on
//! the first run), renew what [`plan_renewal`] says is due, write the trust
//! bundle into the webhook configurations, and hand the serving pair to the
//! HTTPS server if it changed ([`CertManager::run`]). A handover the server
//! refuses is retried at the next pass; the server keeps its current pair
//! meanwhile.
//!
//! What the ordering does and does not guarantee. This replica writes the
//! bundle to the configurations before it hands its server a pair signed
//! by a new CA, but the API server applies a configuration change only
//! once its own watch delivers it (usually well under a second, with no
//! upper bound), so calls made in that gap can still be checked against the
//! previous bundle. Other replicas reload the new pair only at their next
//! pass (up to [`CertManagerConfig::check_interval`]), so every bundle this
//! crate writes keeps the CAs that may still be served:
//!
//! - a scheduled CA renewal keeps the previous CA until it expires;
//! - a new CA made because the Secret was deleted or unusable keeps the
//!   still-valid CAs this process last loaded ([`CertManager::current`])
//!   and those still readable in the unusable Secret. A process that has
//!   not loaded the PKI yet (just started) and finds no Secret knows no
//!   previous CA: replicas serving one are then refused (with
//!   `failurePolicy: Fail`) until their next pass.
//!
//! Passes repeat every [`CertManagerConfig::check_interval`], which picks
//! up a rotation done by another replica. A failed pass is logged and
//! retried at the next tick; the server keeps its current, still valid,
//! pair meanwhile.
//!
//! A `caBundle` that something else reset (`helm upgrade --force`
//! replacing the configurations, a GitOps tool re-applying the chart's,
//! which render none) is repaired at once: [`CertManager::run`] watches the
//! configurations it injects into, by name, and runs a pass as soon as one
//! shows a bundle other than the one it last published (debounced, spaced
//! out if another writer keeps resetting it, never triggered by its own
//! write, a failed repair retried after 1 s, 2 s, 4 s, ... up to the check
//! interval; see `reset_watch.rs`). The periodic pass stays as the
//! backstop, for instance while that watch fails or is forbidden (RBAC
//! without `list` and `watch` on the configurations: then a reset is
//! repaired up to one check interval later).
//!
//! Caveat: replicas publish the bundle they last read from the Secret. A
//! replica that read the Secret just before another replaced the CA can
//! publish the older bundle once more. The watch of the replica that
//! published the newer bundle sees that at once and its pass (which reads
//! the Secret) puts the newer bundle back, within a second or so; the
//! stale replica's own watch makes it re-read the Secret and adopt the
//! newer CA, writing nothing. Without the watch, the configurations are
//! corrected by the next pass of a replica holding the newer CA, up to one
//! check interval later. Scheduled CA replacements are years apart.

use std::{future::Future, pin::pin, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use kube::Client;
use tokio::sync::watch;

use crate::{
    Injection, IssuedCertificate, PkiSettings, Renewal, Result, StoredPki, inject_ca_bundle,
    load_or_create, plan_renewal,
    reset_watch::{self, FailureLog, Repairs, Report, Wait},
    rotate,
};

/// Where the PKI lives and where its CA is published.
#[derive(Clone, Debug)]
pub struct CertManagerConfig {
    /// Namespace of the Secret (the operator's own).
    pub namespace: String,
    /// Name of the Secret holding `ca.crt`, `ca.key`, `tls.crt`, `tls.key`.
    pub secret_name: String,
    /// What to issue and when to renew.
    pub settings: PkiSettings,
    /// MutatingWebhookConfigurations whose entries get the `caBundle`.
    pub mutating_webhooks: Vec<String>,
    /// ValidatingWebhookConfigurations whose entries get the `caBundle`.
    pub validating_webhooks: Vec<String>,
    /// Time between passes.
    pub check_interval: Duration,
}

/// Ends of validity of the current certificates, in Unix seconds; zero
/// until the first successful pass. Meant for gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CertExpiry {
    /// `notAfter` of the serving certificate.
    pub serving_not_after: i64,
    /// `notAfter` of the CA certificate.
    pub ca_not_after: i64,
}

/// Keeps the webhook PKI valid, stored and published; see the module docs.
pub struct CertManager {
    client: Client,
    config: CertManagerConfig,
    current: Option<StoredPki>,
    expiry: watch::Sender<CertExpiry>,
}

impl CertManager {
    /// A manager that has not looked at the cluster yet.
    pub fn new(client: Client, config: CertManagerConfig) -> Self {
        Self {
            client,
            config,
            current: None,
            expiry: watch::Sender::new(CertExpiry::default()),
        }
    }

    /// Follows the expiry of the current certificates.
    pub fn expiry(&self) -> watch::Receiver<CertExpiry> {
        self.expiry.subscribe()
    }

    /// The PKI as of the last successful pass.
    pub fn current(&self) -> Option<&StoredPki> {
        self.current.as_ref()
    }

    /// One pass: load or create the Secret, renew what is due, publish the
    /// trust bundle. Returns the serving pair the server should present.
    ///
    /// Call it once before starting the HTTPS server to get its first pair.
    /// Webhook configurations that do not exist yet are logged and filled
    /// in by a later pass (under [`run`](Self::run), as soon as its watch
    /// sees them created); API errors fail the pass.
    pub async fn ensure(&mut self) -> Result<IssuedCertificate> {
        self.pass().await.map(|(serving, _)| serving)
    }

    /// [`ensure`](Self::ensure), also returning what it did to the webhook
    /// configurations.
    async fn pass(&mut self) -> Result<(IssuedCertificate, Injection)> {
        let CertManagerConfig {
            namespace,
            secret_name,
            settings,
            ..
        } = &self.config;
        let now = Timestamp::now();
        let remembered = self.current.as_ref().map(|stored| &stored.pki);
        let mut stored = load_or_create(
            &self.client,
            namespace,
            secret_name,
            remembered,
            settings,
            now,
        )
        .await?;
        // Normally one round; a lost race adopts the winner's PKI, which is
        // then planned again.
        for _round in 0..3 {
            let renewal = plan_renewal(&stored.pki, settings, now);
            if renewal == Renewal::NotDue {
                break;
            }
            stored = rotate(
                &self.client,
                namespace,
                secret_name,
                &stored,
                renewal,
                settings,
                now,
            )
            .await?;
        }

        let injection = inject_ca_bundle(
            &self.client,
            &self.config.mutating_webhooks,
            &self.config.validating_webhooks,
            &stored.pki.ca_bundle,
        )
        .await?;
        if !injection.missing.is_empty() {
            tracing::warn!(
                missing = ?injection.missing,
                "webhook configurations not found; their caBundle will be set once they exist"
            );
        }

        self.expiry.send_replace(CertExpiry {
            serving_not_after: stored.pki.serving.not_after.as_second(),
            ca_not_after: stored.pki.ca.not_after.as_second(),
        });
        let serving = stored.pki.serving.clone();
        self.current = Some(stored);
        Ok((serving, injection))
    }

    /// Repeats [`ensure`](Self::ensure) every check interval until
    /// `shutdown` completes, calling `on_serving_pair(cert_pem, key_pem)`
    /// whenever the serving pair differs from the one last handed out
    /// (including by an earlier `ensure`), typically
    /// `|cert, key| store.update(cert, key)`. A handover that returns an
    /// error is logged and counts as not done: the pair is offered again at
    /// the next pass (by then usually replaced, since a pair the server
    /// cannot load makes the Secret unusable).
    ///
    /// Meanwhile it watches the webhook configurations it injects into and
    /// runs a pass at once (150 ms after the first change it sees) when
    /// one no longer carries the bundle it last published on every entry,
    /// retrying a failed one after 1 s, 2 s, 4 s, ... (up to the check
    /// interval); see the module docs.
    pub async fn run<F, E>(mut self, on_serving_pair: F, shutdown: impl Future<Output = ()>)
    where
        F: Fn(&str, &str) -> std::result::Result<(), E>,
        E: std::fmt::Display,
    {
        let interval = self.config.check_interval;
        let mut handed_out = self
            .current
            .as_ref()
            .map(|stored| stored.pki.serving.cert_pem.clone());
        let first_pass = match handed_out {
            // The caller just ran a pass; wait a full interval.
            Some(_) => tokio::time::Instant::now() + interval,
            None => tokio::time::Instant::now(),
        };
        let mut ticker = tokio::time::interval_at(first_pass, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = pin!(shutdown);
        let mut reports = reset_watch::watch(
            &self.client,
            &self.config.mutating_webhooks,
            &self.config.validating_webhooks,
        );
        let mut repairs = Repairs::new(interval);
        let mut failures = FailureLog::default();
        loop {
            let due = repairs.due();
            let repair = tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => false,
                () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)),
                    if due.is_some() => true,
                Some(report) = reports.next() => {
                    let published = self.current.as_ref().map(|stored| stored.pki.ca_bundle.as_str());
                    judge(
                        published,
                        report,
                        &mut repairs,
                        &mut failures,
                        interval,
                        tokio::time::Instant::now(),
                    );
                    continue;
                }
            };
            if repair {
                repairs.started(tokio::time::Instant::now());
            }
            let outcome = tokio::select! {
                () = &mut shutdown => return,
                outcome = self.pass() => outcome,
            };
            let Some(serving) = take_outcome(outcome, repair, &mut repairs, interval) else {
                continue;
            };
            if handed_out.as_deref() != Some(serving.cert_pem.as_str()) {
                match on_serving_pair(&serving.cert_pem, &serving.key_pem) {
                    Ok(()) => handed_out = Some(serving.cert_pem),
                    Err(error) => tracing::warn!(
                        %error,
                        "the server did not take the new webhook serving pair, offering it again in {interval:?}"
                    ),
                }
            }
        }
    }
}

/// Takes in what the configuration watches report at `now`: a
/// configuration without the bundle this process last `published`
/// schedules a repair. Before the first successful pass nothing was
/// published: the first pass runs at once, and once it failed, any
/// configuration seen brings its retry forward (after the backoff) from the
/// next check.
fn judge(
    published: Option<&str>,
    report: Report,
    repairs: &mut Repairs,
    failures: &mut FailureLog,
    check_interval: Duration,
    now: tokio::time::Instant,
) {
    match report {
        Report::Seen(seen) => {
            failures.working(&seen.object);
            let reset = match published {
                Some(published) => seen.differs_from(published),
                None => repairs.failing(),
            };
            if !reset {
                return;
            }
            let object = &seen.object;
            match repairs.reset_seen(now) {
                // Joins the repair already scheduled.
                None => {}
                Some((_, Wait::Debounce)) => tracing::debug!(
                    %object,
                    "a webhook configuration lacks the published caBundle, checking it now"
                ),
                Some((at, Wait::Spacing)) => tracing::info!(
                    %object,
                    "a webhook configuration lacks the published caBundle again; repairs are spaced \
                     out while it keeps being reset, repairing it in {:?}",
                    at.duration_since(now)
                ),
                Some((at, Wait::Retry)) => tracing::info!(
                    %object,
                    "a webhook configuration may lack the caBundle; the last certificate pass \
                     failed, retrying it in {:?}",
                    at.duration_since(now)
                ),
            }
        }
        Report::Listed { object } => failures.working(&object),
        Report::Failed { object, error } => failures.failed(&object, &error),
        Report::Forbidden { object, error } => {
            failures.forbidden(&object, &error, check_interval);
        }
    }
}

/// Takes in a pass's outcome: logs what a repair did, or why the pass
/// failed and when it is retried, and tells `repairs`; gives the serving
/// pair when the pass worked.
fn take_outcome(
    outcome: Result<(IssuedCertificate, Injection)>,
    repair: bool,
    repairs: &mut Repairs,
    interval: Duration,
) -> Option<IssuedCertificate> {
    match outcome {
        Ok((serving, injection)) => {
            let wrote = !injection.changed.is_empty();
            if repair && wrote {
                tracing::info!(
                    objects = ?injection.changed,
                    "caBundle reset by another writer, put back"
                );
            } else if repair {
                tracing::debug!(
                    "no webhook configuration lacked the caBundle (already repaired, or \
                     another replica published a newer CA)"
                );
            }
            if let Some(spacing) = repairs.pass_succeeded(repair && wrote) {
                tracing::warn!(
                    "the webhook configurations' caBundle keeps being reset; repairs are now \
                     at least {spacing:?} apart (is another process injecting another CA \
                     under the same configuration names?)"
                );
            }
            Some(serving)
        }
        Err(error) => {
            let now = tokio::time::Instant::now();
            let retry_at = repairs.pass_failed(now);
            if repair {
                tracing::warn!(
                    error = %error.describe(),
                    "repairing the webhook configurations' caBundle failed, retrying in {:?}",
                    retry_at.duration_since(now)
                );
            } else {
                tracing::warn!(
                    error = %error.describe(),
                    "webhook certificate pass failed, retrying in {interval:?} (sooner if a \
                     configuration's caBundle is seen reset)"
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reset_watch::tests::seen;

    const MINUTE: Duration = Duration::from_secs(60);

    /// Review: before any pass succeeded, reports were ignored, so a first
    /// pass that failed inside `run` was retried only a full check
    /// interval later, whatever the watch saw.
    #[test]
    fn a_configuration_seen_after_a_failed_first_pass_brings_the_retry_forward() {
        let start = tokio::time::Instant::now();
        let mut repairs = Repairs::new(MINUTE);
        let mut failures = FailureLog::default();
        // No pass yet: the first one runs at once anyway.
        judge(
            None,
            Report::Seen(seen(&[None])),
            &mut repairs,
            &mut failures,
            MINUTE,
            start,
        );
        assert_eq!(repairs.due(), None);
        // The first pass fails.
        let retry_at = repairs.pass_failed(start);
        let now = start + Duration::from_millis(100);
        judge(
            None,
            Report::Seen(seen(&[None])),
            &mut repairs,
            &mut failures,
            MINUTE,
            now,
        );
        assert_eq!(repairs.due(), Some(retry_at), "retried after the backoff");
        assert!(retry_at < start + MINUTE);
    }

    #[test]
    fn only_a_configuration_without_the_published_bundle_is_a_reset() {
        let now = tokio::time::Instant::now();
        let mut repairs = Repairs::new(MINUTE);
        let mut failures = FailureLog::default();
        let published = Some("PEM");
        judge(
            published,
            Report::Seen(seen(&[Some("PEM")])),
            &mut repairs,
            &mut failures,
            MINUTE,
            now,
        );
        assert_eq!(repairs.due(), None, "our own write");
        judge(
            published,
            Report::Seen(seen(&[Some("PEM"), None])),
            &mut repairs,
            &mut failures,
            MINUTE,
            now,
        );
        assert_eq!(repairs.due(), Some(now + reset_watch::DEBOUNCE));
    }
}
