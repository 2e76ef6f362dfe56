//! Unit tests of the reset watch: what counts as a reset, the repairs' timing, failures.
use futures::FutureExt;
use futures::executor::block_on;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhook;

use super::*;

pub(crate) fn configuration(bundles: &[Option<&str>]) -> ValidatingWebhookConfiguration {
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

pub(crate) fn seen(bundles: &[Option<&str>]) -> Seen {
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
    assert_eq!(
        repairs.reset_seen(start),
        Some((start + DEBOUNCE, Wait::Debounce))
    );
    assert_eq!(repairs.due(), Some(start + DEBOUNCE));
    // Later resets of the burst join it, without postponing it.
    assert_eq!(repairs.reset_seen(start + Duration::from_millis(100)), None);
    assert_eq!(repairs.due(), Some(start + DEBOUNCE));
    repairs.started(start + DEBOUNCE);
    assert_eq!(repairs.due(), None);
    assert_eq!(repairs.pass_succeeded(true), None);
    assert_eq!(repairs.due(), None);
}

/// Another writer resets the bundle right after every repair, `n`
/// times; each repair writes. Returns the gaps between repairs and the
/// warnings.
fn fight(repairs: &mut Repairs, now: &mut Instant, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut gaps = Vec::new();
    let mut warnings = Vec::new();
    let mut last = None;
    for _ in 0..n {
        repairs.reset_seen(*now);
        *now = repairs.due().unwrap();
        repairs.started(*now);
        warnings.extend(repairs.pass_succeeded(true));
        if let Some(last) = last {
            gaps.push(now.duration_since(last));
        }
        last = Some(*now);
        *now += Duration::from_millis(20);
    }
    (gaps, warnings)
}

#[test]
fn repairs_that_keep_coming_are_spaced_and_a_quiet_period_resets_that() {
    let mut now = Instant::now();
    let mut repairs = Repairs::new(Duration::from_secs(60));
    let (gaps, warnings) = fight(&mut repairs, &mut now, 10);
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
    // A delayed repair says so.
    assert_eq!(repairs.reset_seen(now).unwrap().1, Wait::Spacing);
    repairs.started(repairs.due().unwrap());
    repairs.pass_succeeded(true);
    // Quiet for long enough (twice the spacing plus 10 s): the next
    // reset is repaired at once again.
    now = repairs.last.unwrap() + secs(60 * 2 + 10);
    assert_eq!(
        repairs.reset_seen(now),
        Some((now + DEBOUNCE, Wait::Debounce))
    );
    repairs.started(now + DEBOUNCE);
    repairs.pass_succeeded(true);
    assert_eq!(repairs.spacing, Duration::ZERO);
}

#[test]
fn the_spacing_never_exceeds_the_check_interval() {
    let mut now = Instant::now();
    let mut repairs = Repairs::new(Duration::from_secs(3));
    let (_, warnings) = fight(&mut repairs, &mut now, 10);
    assert_eq!(repairs.spacing, Duration::from_secs(3));
    assert_eq!(
        warnings,
        [Duration::from_secs(3)],
        "a fight is still reported"
    );
}

/// Review: failed repairs went through the fight logic (spacing 1, 2,
/// 4, 8 s, then the warning that another process keeps resetting the
/// bundle), and a real reset after them waited for that spacing.
#[test]
fn failed_repairs_back_off_on_their_own_and_are_no_fight() {
    let secs = |s: u64| Duration::from_secs(s);
    let mut repairs = Repairs::new(secs(20));
    let mut now = Instant::now();
    repairs.reset_seen(now);
    let mut retries = Vec::new();
    for _ in 0..7 {
        now = repairs.due().expect("a failed repair is retried");
        repairs.started(now);
        let failed_at = now + Duration::from_millis(100);
        let retry_at = repairs.pass_failed(failed_at);
        assert_eq!(repairs.due(), Some(retry_at));
        retries.push(retry_at.duration_since(failed_at));
        // A reset seen meanwhile joins the retry.
        assert_eq!(repairs.reset_seen(failed_at), None);
    }
    assert_eq!(
        retries,
        [
            secs(1),
            secs(2),
            secs(4),
            secs(8),
            secs(16),
            secs(20),
            secs(20)
        ],
        "1 s doubling, up to the check interval"
    );
    assert_eq!(
        (repairs.spacing, repairs.close_in_a_row, repairs.last),
        (Duration::ZERO, 0, None),
        "failures are no fight"
    );
    now = repairs.due().unwrap();
    repairs.started(now);
    assert_eq!(repairs.pass_succeeded(true), None, "no fight warning");
    assert!(!repairs.failing());
    // The next reset, a while later, is repaired at once.
    now += secs(1);
    assert_eq!(
        repairs.reset_seen(now),
        Some((now + DEBOUNCE, Wait::Debounce))
    );
    // And the backoff starts over.
    repairs.started(now + DEBOUNCE);
    let failed_at = now + secs(1);
    assert_eq!(repairs.pass_failed(failed_at), failed_at + secs(1));
}

/// A failed periodic pass schedules nothing by itself (the next check
/// retries it), but a reset seen then waits for the retry's backoff.
#[test]
fn a_reset_after_a_failed_periodic_pass_waits_for_the_backoff() {
    let mut repairs = Repairs::new(Duration::from_secs(60));
    let start = Instant::now();
    let retry_at = repairs.pass_failed(start);
    assert_eq!(repairs.due(), None);
    assert!(repairs.failing());
    assert_eq!(
        repairs.reset_seen(start + Duration::from_millis(10)),
        Some((retry_at, Wait::Retry))
    );
    repairs.pass_succeeded(false);
    assert_eq!(repairs.due(), None);
}

/// Review: every repair counted toward a fight, also passes that wrote
/// nothing (the late event of a reset an earlier pass already
/// repaired, a CA another replica published): three re-applies of the
/// chart 5 s apart, each repaired by one pass plus a no-op pass for a
/// late event, reached the warning.
#[test]
fn only_repairs_that_wrote_count_toward_a_fight() {
    let secs = |s: u64| Duration::from_secs(s);
    let start = Instant::now();
    let mut repairs = Repairs::new(secs(60));
    let mut warnings = Vec::new();
    let mut delays = Vec::new();
    for reapply in 0..3 {
        let at = start + secs(5 * reapply);
        for (seen, wrote) in [(at, true), (at + Duration::from_millis(200), false)] {
            let (due, _) = repairs.reset_seen(seen).unwrap();
            delays.push(due.duration_since(seen));
            repairs.started(due);
            warnings.extend(repairs.pass_succeeded(wrote));
        }
    }
    assert_eq!(warnings, Vec::<Duration>::new(), "no fight");
    // Each re-apply is repaired at once (its late event waits for the
    // spacing of the writing repairs, 5 s apart: still close).
    let repairs_of_resets: Vec<Duration> = delays.iter().copied().step_by(2).collect();
    assert_eq!(repairs_of_resets, [DEBOUNCE; 3], "every re-apply at once");
    assert_eq!(repairs.close_in_a_row, 2);
}

/// Events of a watch: `first`, then a panic if polled again.
fn events_then_panic(
    first: Vec<watcher::Result<watcher::Event<ValidatingWebhookConfiguration>>>,
) -> impl Stream<Item = watcher::Result<watcher::Event<ValidatingWebhookConfiguration>>> + Send + 'static
{
    stream::iter(first).chain(stream::poll_fn(|_| -> std::task::Poll<Option<_>> {
        panic!("the watch was polled again after a 403")
    }))
}

fn status(code: u16) -> Box<kube::core::Status> {
    kube::core::Status::failure("refused", "Refused")
        .with_code(code)
        .boxed()
}

/// Review: without list/watch RBAC the watcher retried forever, and
/// kube-runtime warned at every retry.
#[test]
fn a_forbidden_watch_ends_and_the_others_go_on() {
    let forbidden = reports(
        "ValidatingWebhookConfiguration a".into(),
        events_then_panic(vec![
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status(
                500,
            )))),
            Ok(watcher::Event::InitApply(configuration(&[None]))),
            Err(watcher::Error::WatchStartFailed(kube::Error::Api(status(
                403,
            )))),
        ]),
    );
    let reports_seen: Vec<Report> = block_on(forbidden.collect());
    let kinds: Vec<&str> = reports_seen
        .iter()
        .map(|report| match report {
            Report::Seen(_) => "seen",
            Report::Listed { .. } => "listed",
            Report::Failed { .. } => "failed",
            Report::Forbidden { .. } => "forbidden",
        })
        .collect();
    assert_eq!(kinds, ["failed", "seen", "forbidden"]);

    // Merged: the forbidden watch ends, the other goes on, and the
    // merged stream stays pending rather than ending.
    let mut merged = merge([
        reports(
            "ValidatingWebhookConfiguration a".into(),
            events_then_panic(vec![Err(watcher::Error::InitialListFailed(
                kube::Error::Api(status(403)),
            ))]),
        ),
        reports(
            "ValidatingWebhookConfiguration b".into(),
            stream::iter([Ok(watcher::Event::Apply(configuration(&[None])))])
                .chain(stream::pending()),
        ),
    ]);
    let mut objects: Vec<String> = (0..2)
        .map(|_| match block_on(merged.next()).unwrap() {
            Report::Forbidden { object, .. } => format!("forbidden {object}"),
            Report::Seen(seen) => format!("seen {}", seen.object),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    objects.sort();
    assert_eq!(
        objects,
        [
            "forbidden ValidatingWebhookConfiguration a",
            "seen ValidatingWebhookConfiguration b",
        ]
    );
    assert!(merged.next().now_or_never().is_none(), "still pending");
    // With no watch left at all, too.
    let mut none_left = merge([reports(
        "ValidatingWebhookConfiguration a".into(),
        events_then_panic(vec![Err(watcher::Error::WatchError(status(403)))]),
    )]);
    assert!(matches!(
        block_on(none_left.next()),
        Some(Report::Forbidden { .. })
    ));
    assert!(none_left.next().now_or_never().is_none(), "still pending");
}

#[test]
fn failures_are_named_by_stage_and_code() {
    let forbidden = kube::Error::Api(status(403));
    assert_eq!(
        failure_kind(&watcher::Error::InitialListFailed(forbidden)),
        "initial list 403"
    );
    assert_eq!(
        failure_kind(&watcher::Error::NoResourceVersion),
        "no resourceVersion"
    );
    let mut log = FailureLog::default();
    let gone = || watcher::Error::WatchError(status(410));
    log.failed("x", &gone());
    assert!(log.logged.is_empty(), "an expired watch is routine");
    log.failed("x", &watcher::Error::NoResourceVersion);
    log.failed("x", &watcher::Error::NoResourceVersion);
    log.failed("y", &watcher::Error::NoResourceVersion);
    assert_eq!(log.logged.len(), 2);
    log.working("x");
    assert_eq!(log.logged.len(), 1);
}
