//! Repairing at once, not at the next pass, a `caBundle` that something
//! else reset.
//!
//! With `failurePolicy: Fail`, a configuration whose `caBundle` is empty or
//! wrong makes the API server refuse every write of our resources, and
//! others do reset it: `helm upgrade --force` replaces the configurations,
//! and a GitOps tool re-applies the chart's, which render no `caBundle`.
//! The periodic pass would repair it only up to one check interval later.
//! So [`CertManager::run`](crate::CertManager::run) also watches the
//! configurations it injects into, each by its name (one watch per name
//! and kind, with a `metadata.name=` field selector, the form RBAC limited
//! by `resourceNames` allows for list and watch), and when one shows a
//! `caBundle` (on any entry) other than the bundle this process last
//! published, it runs its pass ([`CertManager::ensure`]) at once. It acts on
//! exactly the configurations the pass injects into (the same names), on
//! nothing else.
//!
//! Guards, so that the watch cannot cause a storm of writes:
//!
//! - **No loop.** The event of our own write shows the bundle we published
//!   and is ignored; and a pass compares before it writes (a configuration
//!   whose every entry carries the bundle is not written). A pass reads the
//!   Secret first, so a replica whose bundle is older than the one another
//!   replica just published (after a new CA) adopts the newer one instead of
//!   writing its own back.
//! - **Bursts** (both configurations replaced, several events each): every
//!   reset seen within [`DEBOUNCE`] of the first is repaired by one pass.
//! - **A fight** with another writer that keeps setting a different bundle
//!   (say a second process injecting another CA under the same
//!   configuration name): repairs that follow each other closely are spaced
//!   1 s, 2 s, 4 s, ... apart, up to the check interval (60 s at most),
//!   with one warning; one quiet period and repairs are immediate again.
//! - **A failing watch** is retried with kube's default backoff (0.8 s,
//!   doubling to 30 s); each kind of failure is logged once (a warning)
//!   until that watch works again, and the periodic pass still runs
//!   meanwhile. Nothing here ends the process. (kube-runtime itself also
//!   warns at each retry refused with 403, as for every watch of the
//!   operator: RBAC without `list` and `watch` on the configurations.)
//!
//! [`CertManager::ensure`]: crate::CertManager::ensure

use std::{collections::BTreeSet, time::Duration};

use futures::{StreamExt, stream, stream::BoxStream};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::time::Instant;

use crate::ca_bundle::{WebhookConfiguration, carries};

/// Resets seen within this time of the first are repaired by one pass.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(150);
/// The spacing of repairs once they follow each other closely.
const MIN_SPACING: Duration = Duration::from_secs(1);
/// The most repairs are ever spaced (less when the check interval is).
const MAX_SPACING: Duration = Duration::from_secs(60);
/// A repair this long after the previous one (plus twice the current
/// spacing) is not part of a fight: the spacing starts over.
const QUIET: Duration = Duration::from_secs(10);
/// Repairs in a row, each close to the one before, from which a fight is
/// worth a warning (their spacing is then 8 s, unless the check interval is
/// shorter).
const FIGHT_WARNING: u32 = 4;

/// What the watches report.
#[derive(Debug)]
pub(crate) enum Report {
    /// A configuration as it is now (listed, created or changed).
    Seen(Seen),
    /// A (re-)list of `object` succeeded, whether it exists or not.
    Listed {
        /// `Kind name`.
        object: String,
    },
    /// The watch of `object` failed; it is retried after a backoff.
    Failed {
        /// `Kind name`.
        object: String,
        /// The watcher's error.
        error: watcher::Error,
    },
}

/// One configuration as a watch delivered it.
#[derive(Debug)]
pub(crate) struct Seen {
    /// `Kind name`, as [`crate::Injection`] names it.
    pub(crate) object: String,
    /// The client config of each of its entries.
    client_configs: Vec<WebhookClientConfig>,
}

impl Seen {
    fn of<K: WebhookConfiguration>(object: String, mut configuration: K) -> Self {
        let client_configs = configuration
            .client_configs()
            .into_iter()
            .map(|config| config.clone())
            .collect();
        Self {
            object,
            client_configs,
        }
    }

    /// Whether an entry lacks `ca_bundle` (has none, an empty one or
    /// another): exactly when a pass would write this configuration.
    pub(crate) fn differs_from(&self, ca_bundle: &str) -> bool {
        !self
            .client_configs
            .iter()
            .all(|config| carries(config, ca_bundle))
    }
}

/// Watches the named configurations, each on its own (a `metadata.name`
/// field selector), merged into one stream that never ends.
pub(crate) fn watch(
    client: &Client,
    mutating_names: &[String],
    validating_names: &[String],
) -> BoxStream<'static, Report> {
    let mutating = mutating_names
        .iter()
        .map(|name| watch_one::<MutatingWebhookConfiguration>(client, name));
    let validating = validating_names
        .iter()
        .map(|name| watch_one::<ValidatingWebhookConfiguration>(client, name));
    stream::select_all(mutating.chain(validating))
        // No names: nothing to watch, and nothing ends either.
        .chain(stream::pending())
        .boxed()
}

fn watch_one<K>(client: &Client, name: &str) -> BoxStream<'static, Report>
where
    K: WebhookConfiguration + Send + 'static,
{
    let object = format!("{} {name}", <K as k8s_openapi::Resource>::KIND);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(Api::<K>::all(client.clone()), config)
        // After an error the watcher is polled again only after a backoff
        // (0.8 s doubling to 30 s, reset once it has worked for 2 min).
        .default_backoff()
        .filter_map(move |event| {
            let object = object.clone();
            std::future::ready(match event {
                Ok(watcher::Event::Apply(configuration))
                | Ok(watcher::Event::InitApply(configuration)) => {
                    Some(Report::Seen(Seen::of(object, configuration)))
                }
                Ok(watcher::Event::InitDone) => Some(Report::Listed { object }),
                Ok(watcher::Event::Init | watcher::Event::Delete(_)) => None,
                Err(error) => Some(Report::Failed { object, error }),
            })
        })
        .boxed()
}

/// Logs each kind of watch failure once per watch until it works again.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    /// `(object, kind)` already logged.
    logged: BTreeSet<(String, String)>,
}

impl FailureLog {
    /// A failure: a warning the first time its kind is seen for `object`,
    /// at debug level after that.
    pub(crate) fn failed(&mut self, object: &str, error: &watcher::Error) {
        let kind = failure_kind(error);
        let error = describe(error);
        if kind == "watch error 410" {
            // The version the watch resumed from is too old: the watcher
            // lists again. Routine on a long-lived watch.
            tracing::debug!(%object, %error, "webhook configuration watch expired, listing again");
        } else if self.logged.insert((object.to_owned(), kind)) {
            tracing::warn!(
                %object,
                %error,
                "watching the webhook configuration failed, retrying with backoff; a reset caBundle \
                 is repaired by the periodic certificate check meanwhile (further failures of this \
                 kind are logged at debug level until the watch works)"
            );
        } else {
            tracing::debug!(%object, %error, "watching the webhook configuration failed again");
        }
    }

    /// The watch of `object` delivered: failures of any kind are logged
    /// again.
    pub(crate) fn working(&mut self, object: &str) {
        let before = self.logged.len();
        self.logged.retain(|(logged, _)| logged != object);
        if self.logged.len() != before {
            tracing::info!(%object, "watching the webhook configuration works again");
        }
    }
}

/// The variant of a watcher error and, for an answer of the API server, its
/// code: `initial list 403`, `watch start`, `watch error 410`, ...
fn failure_kind(error: &watcher::Error) -> String {
    let (stage, source) = match error {
        watcher::Error::InitialListFailed(source) => ("initial list", source),
        watcher::Error::WatchStartFailed(source) => ("watch start", source),
        watcher::Error::WatchFailed(source) => ("watch", source),
        watcher::Error::WatchError(status) => return format!("watch error {}", status.code),
        watcher::Error::NoResourceVersion => return "no resourceVersion".into(),
    };
    match source {
        kube::Error::Api(status) => format!("{stage} {}", status.code),
        _ => stage.into(),
    }
}

/// The error and its causes on one line.
fn describe(error: &watcher::Error) -> String {
    std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// When the next repair runs: debounced, and spaced out while resets keep
/// coming (see the module docs).
#[derive(Debug)]
pub(crate) struct Repairs {
    /// A repair is scheduled for then.
    due: Option<Instant>,
    /// When the last repair started.
    last: Option<Instant>,
    /// The least time from one repair to the next; zero outside a fight.
    spacing: Duration,
    /// The most `spacing` grows to.
    max_spacing: Duration,
    /// Repairs in a row that each came close to the one before.
    close_in_a_row: u32,
}

impl Repairs {
    /// No repair due; spacing at most `check_interval` (and 60 s).
    pub(crate) fn new(check_interval: Duration) -> Self {
        Self {
            due: None,
            last: None,
            spacing: Duration::ZERO,
            max_spacing: MAX_SPACING.min(check_interval),
            close_in_a_row: 0,
        }
    }

    /// When the scheduled repair is due, if one is.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// A reset was seen at `now`: schedules a repair unless one already is
    /// (this reset then joins it). Returns whether it scheduled one.
    pub(crate) fn reset_seen(&mut self, now: Instant) -> bool {
        if self.due.is_some() {
            return false;
        }
        let debounced = now + DEBOUNCE;
        let spaced = self.last.map_or(debounced, |last| last + self.spacing);
        self.due = Some(debounced.max(spaced));
        true
    }

    /// The scheduled repair starts at `now`. Returns the new spacing when
    /// this is the [`FIGHT_WARNING`]th repair in a row to come close to
    /// the one before (worth one warning per fight).
    pub(crate) fn started(&mut self, now: Instant) -> Option<Duration> {
        self.due = None;
        let before = self.spacing;
        let close = self
            .last
            .is_some_and(|last| now.duration_since(last) < before * 2 + QUIET);
        if close {
            self.spacing = (before * 2).max(MIN_SPACING).min(self.max_spacing);
            self.close_in_a_row += 1;
        } else {
            self.spacing = Duration::ZERO;
            self.close_in_a_row = 0;
        }
        self.last = Some(now);
        (self.close_in_a_row == FIGHT_WARNING).then_some(self.spacing)
    }

    /// The repair that started failed: tried again once the spacing allows
    /// (the periodic pass may come first).
    pub(crate) fn failed(&mut self, now: Instant) {
        self.reset_seen(now);
    }

    /// A pass succeeded: it read the configurations after every reset seen
    /// so far and wrote what they lacked, so no repair is due.
    pub(crate) fn pass_done(&mut self) {
        self.due = None;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhook;

    use super::*;

    fn configuration(bundles: &[Option<&str>]) -> ValidatingWebhookConfiguration {
        ValidatingWebhookConfiguration {
            webhooks: Some(
                bundles
                    .iter()
                    .map(|bundle| ValidatingWebhook {
                        client_config: WebhookClientConfig {
                            ca_bundle: bundle.map(|b| ByteString(b.as_bytes().to_vec())),
                            ..WebhookClientConfig::default()
                        },
                        ..ValidatingWebhook::default()
                    })
                    .collect(),
            ),
            ..ValidatingWebhookConfiguration::default()
        }
    }

    fn seen(bundles: &[Option<&str>]) -> Seen {
        Seen::of(
            "ValidatingWebhookConfiguration x".into(),
            configuration(bundles),
        )
    }

    /// Missing, empty or another bundle on any entry is a reset; our own
    /// bundle on every entry (the event of our own write) is not.
    #[test]
    fn a_reset_is_any_entry_without_the_published_bundle() {
        assert!(!seen(&[Some("PEM"), Some("PEM")]).differs_from("PEM"));
        assert!(seen(&[Some("PEM"), None]).differs_from("PEM"));
        assert!(seen(&[Some(""), Some("PEM")]).differs_from("PEM"));
        assert!(seen(&[Some("OTHER")]).differs_from("PEM"));
        // No entries: nothing a pass would write.
        assert!(!seen(&[]).differs_from("PEM"));
    }

    #[test]
    fn resets_in_a_burst_make_one_repair_after_the_debounce() {
        let start = Instant::now();
        let mut repairs = Repairs::new(Duration::from_secs(60));
        assert!(repairs.reset_seen(start));
        assert_eq!(repairs.due(), Some(start + DEBOUNCE));
        // Later resets of the burst join it, without postponing it.
        assert!(!repairs.reset_seen(start + Duration::from_millis(100)));
        assert_eq!(repairs.due(), Some(start + DEBOUNCE));
        assert_eq!(repairs.started(start + DEBOUNCE), None);
        assert_eq!(repairs.due(), None);
    }

    #[test]
    fn repairs_that_keep_coming_are_spaced_and_a_quiet_period_resets_that() {
        let mut now = Instant::now();
        let mut repairs = Repairs::new(Duration::from_secs(60));
        let mut gaps = Vec::new();
        let mut warnings = Vec::new();
        let mut last = None;
        // Another writer resets the bundle right after every repair.
        for _ in 0..10 {
            repairs.reset_seen(now);
            now = repairs.due().unwrap();
            if let Some(spacing) = repairs.started(now) {
                warnings.push(spacing);
            }
            if let Some(last) = last {
                gaps.push(now.duration_since(last));
            }
            last = Some(now);
            now += Duration::from_millis(20);
        }
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(
            gaps,
            [
                DEBOUNCE + Duration::from_millis(20),
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(32),
                secs(60),
                secs(60),
            ]
        );
        assert_eq!(warnings, [secs(8)], "one warning per fight");
        // Quiet for long enough: the next reset is repaired at once again.
        now += secs(60 * 2 + 10);
        repairs.reset_seen(now);
        assert_eq!(repairs.due(), Some(now + DEBOUNCE));
        repairs.started(now + DEBOUNCE);
        assert_eq!(repairs.spacing, Duration::ZERO);
    }

    #[test]
    fn the_spacing_never_exceeds_the_check_interval() {
        let mut now = Instant::now();
        let mut repairs = Repairs::new(Duration::from_secs(3));
        let mut warnings = Vec::new();
        for _ in 0..10 {
            repairs.reset_seen(now);
            now = repairs.due().unwrap();
            warnings.extend(repairs.started(now));
        }
        assert_eq!(repairs.spacing, Duration::from_secs(3));
        assert_eq!(
            warnings,
            [Duration::from_secs(3)],
            "a fight is still reported"
        );
    }

    #[test]
    fn a_failed_repair_is_retried_once_spaced_and_a_pass_clears_it() {
        let start = Instant::now();
        let mut repairs = Repairs::new(Duration::from_secs(60));
        repairs.reset_seen(start);
        repairs.started(start + DEBOUNCE);
        repairs.failed(start + Duration::from_millis(300));
        assert_eq!(
            repairs.due(),
            Some(start + Duration::from_millis(450)),
            "first retry after the debounce"
        );
        repairs.pass_done();
        assert_eq!(repairs.due(), None);
    }

    #[test]
    fn failures_are_named_by_stage_and_code() {
        let forbidden = kube::Error::Api(
            kube::core::Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        assert_eq!(
            failure_kind(&watcher::Error::InitialListFailed(forbidden)),
            "initial list 403"
        );
        assert_eq!(
            failure_kind(&watcher::Error::NoResourceVersion),
            "no resourceVersion"
        );
        let mut log = FailureLog::default();
        let gone = || {
            watcher::Error::WatchError(
                kube::core::Status::failure("too old", "Expired")
                    .with_code(410)
                    .boxed(),
            )
        };
        log.failed("x", &gone());
        assert!(log.logged.is_empty(), "an expired watch is routine");
        log.failed("x", &watcher::Error::NoResourceVersion);
        log.failed("x", &watcher::Error::NoResourceVersion);
        log.failed("y", &watcher::Error::NoResourceVersion);
        assert_eq!(log.logged.len(), 2);
        log.working("x");
        assert_eq!(log.logged.len(), 1);
    }
}
