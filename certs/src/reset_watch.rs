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
//!   configuration name): repairs that wrote a configuration and follow
//!   each other closely are spaced 1 s, 2 s, 4 s, ... apart, up to the
//!   check interval (60 s at most), with one warning. Only repairs that
//!   wrote count: a pass that found nothing to write (a late event of a
//!   reset an earlier pass already repaired, a newer CA another replica
//!   published) is no sign of a fight. A writing repair that starts more
//!   than twice the current spacing plus 10 s after the previous one ends
//!   the fight: repairs are immediate again.
//! - **A failed repair** (an API error) is retried 1 s, 2 s, 4 s, ... later,
//!   up to the check interval, until a pass succeeds; failures are not a
//!   fight and leave its spacing alone. Before any pass has succeeded
//!   (nothing published yet to compare with), a configuration seen after a
//!   failed pass also brings the retry forward from the next check.
//! - **A failing watch** is retried with kube's default backoff (0.8 s,
//!   doubling to 30 s); each kind of failure is logged once (a warning)
//!   until that watch works again, and the periodic pass still runs
//!   meanwhile. Nothing here ends the process.
//! - **A forbidden watch** (403: RBAC without `list` and `watch` on that
//!   configuration, as with custom RBAC or a newer image on an older chart)
//!   is not retried: that watch ends, with one warning that immediate
//!   repair of that configuration is off and the periodic pass still
//!   repairs it. (kube-runtime logs its own warning for that one 403.)
//!
//! [`CertManager::ensure`]: crate::CertManager::ensure

use std::{collections::BTreeSet, time::Duration};

use futures::{Stream, StreamExt, stream, stream::BoxStream};
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
/// A writing repair this long after the previous one (plus twice the
/// current spacing) is not part of a fight: the spacing starts over.
const QUIET: Duration = Duration::from_secs(10);
/// Writing repairs in a row, each close to the one before, from which a
/// fight is worth a warning (their spacing is then 8 s, unless the check
/// interval is shorter).
const FIGHT_WARNING: u32 = 4;
/// The first retry of a failed pass; doubled at each further failure, up
/// to the check interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

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
    /// The API server refused (403) to list or watch `object`: that watch
    /// has ended.
    Forbidden {
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
    pub(crate) fn of<K: WebhookConfiguration>(object: String, mut configuration: K) -> Self {
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
    merge(mutating.chain(validating))
}

/// The watches merged into one stream that never ends: a watch that ends
/// (forbidden) is dropped and the others go on; with none left, or none at
/// all, the stream stays pending.
fn merge(
    watches: impl IntoIterator<Item = BoxStream<'static, Report>>,
) -> BoxStream<'static, Report> {
    stream::select_all(watches).chain(stream::pending()).boxed()
}

fn watch_one<K>(client: &Client, name: &str) -> BoxStream<'static, Report>
where
    K: WebhookConfiguration + Send + 'static,
{
    let object = format!("{} {name}", <K as k8s_openapi::Resource>::KIND);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // After an error the watcher is polled again only after a backoff
    // (0.8 s doubling to 30 s, reset once it has worked for 2 min).
    reports(
        object,
        watcher(Api::<K>::all(client.clone()), config).default_backoff(),
    )
}

/// The reports of one configuration's watch `events`. It ends right after
/// reporting a 403 ([`Report::Forbidden`]), without polling `events` again:
/// the watcher would retry it forever, and kube-runtime warns at each retry
/// refused with 403.
fn reports<K, S>(object: String, events: S) -> BoxStream<'static, Report>
where
    K: WebhookConfiguration + Send + 'static,
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
{
    stream::unfold(Some(events.boxed()), move |events| {
        let object = object.clone();
        async move {
            let mut events = events?;
            loop {
                let report = match events.next().await? {
                    Ok(watcher::Event::Apply(configuration))
                    | Ok(watcher::Event::InitApply(configuration)) => {
                        Report::Seen(Seen::of(object, configuration))
                    }
                    Ok(watcher::Event::InitDone) => Report::Listed { object },
                    Ok(watcher::Event::Init | watcher::Event::Delete(_)) => continue,
                    Err(error) if is_forbidden(&error) => {
                        return Some((Report::Forbidden { object, error }, None));
                    }
                    Err(error) => Report::Failed { object, error },
                };
                return Some((report, Some(events)));
            }
        }
    })
    .boxed()
}

/// Whether the API server refused the list or watch with 403.
fn is_forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 403,
        watcher::Error::WatchError(status) => status.code == 403,
        _ => false,
    }
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

    /// The watch of `object` was refused (403) and has ended: one warning,
    /// its last. `check_interval` is that of the periodic pass.
    pub(crate) fn forbidden(
        &mut self,
        object: &str,
        error: &watcher::Error,
        check_interval: Duration,
    ) {
        self.logged.retain(|(logged, _)| logged != object);
        tracing::warn!(
            %object,
            error = %describe(error),
            "not allowed to list or watch the webhook configuration (RBAC lacks list and watch on \
             it): immediate repair of its caBundle is off, and no longer tried; the periodic \
             certificate check (every {check_interval:?}, --cert-check-seconds) still repairs it"
        );
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

/// Why a scheduled repair waits longer than the debounce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Only the debounce: the repair is immediate.
    Debounce,
    /// Repairs are spaced out: the configurations keep being reset.
    Spacing,
    /// The last pass failed: the retry's backoff.
    Retry,
}

/// When the next repair runs: debounced, spaced out while writing repairs
/// keep coming, and backed off while passes fail (see the module docs).
#[derive(Debug)]
pub(crate) struct Repairs {
    /// A repair is scheduled for then.
    due: Option<Instant>,
    /// The repair pass under way started then.
    running: Option<Instant>,
    /// When the last repair that wrote a configuration started.
    last: Option<Instant>,
    /// The least time from one writing repair to the next; zero outside a
    /// fight.
    spacing: Duration,
    /// The most `spacing` grows to.
    max_spacing: Duration,
    /// Writing repairs in a row that each came close to the one before.
    close_in_a_row: u32,
    /// The most a retry waits.
    check_interval: Duration,
    /// Passes failed since the last success.
    failures: u32,
    /// No retry of a failed pass before then.
    retry_at: Option<Instant>,
}

impl Repairs {
    /// No repair due; spacing and retries at most `check_interval` (and
    /// spacing at most 60 s).
    pub(crate) fn new(check_interval: Duration) -> Self {
        Self {
            due: None,
            running: None,
            last: None,
            spacing: Duration::ZERO,
            max_spacing: MAX_SPACING.min(check_interval),
            close_in_a_row: 0,
            check_interval,
            failures: 0,
            retry_at: None,
        }
    }

    /// When the scheduled repair is due, if one is.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Whether the last pass failed (and none succeeded since).
    pub(crate) fn failing(&self) -> bool {
        self.failures > 0
    }

    /// A reset was seen at `now`: schedules a repair unless one already is
    /// (this reset then joins it). Returns when the repair it scheduled
    /// runs and what, besides the debounce, it waits for.
    pub(crate) fn reset_seen(&mut self, now: Instant) -> Option<(Instant, Wait)> {
        if self.due.is_some() {
            return None;
        }
        let mut at = (now + DEBOUNCE, Wait::Debounce);
        if let Some(last) = self.last
            && last + self.spacing > at.0
        {
            at = (last + self.spacing, Wait::Spacing);
        }
        if let Some(retry_at) = self.retry_at
            && retry_at > at.0
        {
            at = (retry_at, Wait::Retry);
        }
        self.due = Some(at.0);
        Some(at)
    }

    /// The scheduled repair starts at `now`.
    pub(crate) fn started(&mut self, now: Instant) {
        self.due = None;
        self.running = Some(now);
    }

    /// A pass succeeded: it read the configurations after every reset seen
    /// so far and wrote what they lacked, so no repair is due, and failures
    /// are over. `wrote`: whether it changed a configuration. Only a repair
    /// that did counts toward a fight: returns the new spacing when this
    /// is the [`FIGHT_WARNING`]th such repair in a row to come close to
    /// the one before (worth one warning per fight).
    pub(crate) fn pass_succeeded(&mut self, wrote: bool) -> Option<Duration> {
        self.due = None;
        self.failures = 0;
        self.retry_at = None;
        let started = self.running.take().filter(|_| wrote)?;
        let before = self.spacing;
        let close = self
            .last
            .is_some_and(|last| started.duration_since(last) < before * 2 + QUIET);
        if close {
            self.spacing = (before * 2).max(MIN_SPACING).min(self.max_spacing);
            self.close_in_a_row += 1;
        } else {
            self.spacing = Duration::ZERO;
            self.close_in_a_row = 0;
        }
        self.last = Some(started);
        (self.close_in_a_row == FIGHT_WARNING).then_some(self.spacing)
    }

    /// A pass failed at `now`: the next retry waits 1 s, 2 s, 4 s, ... (up
    /// to the check interval) from now. A failed repair is retried then; a
    /// failed periodic pass only when a reset is seen (or at the next
    /// check). The fight's state is left alone. Returns when the retry is
    /// allowed.
    pub(crate) fn pass_failed(&mut self, now: Instant) -> Instant {
        let backoff = FIRST_RETRY
            .saturating_mul(1 << self.failures.min(20))
            .min(self.check_interval);
        self.failures = self.failures.saturating_add(1);
        let retry_at = now + backoff;
        self.retry_at = Some(retry_at);
        if self.running.take().is_some() {
            self.due = Some(retry_at);
        } else if let Some(due) = &mut self.due {
            *due = (*due).max(retry_at);
        }
        retry_at
    }
}

#[cfg(test)]
pub(crate) mod tests;
