use super::*;

/// The next object the queue starts, without its reason.
fn next(q: &mut Queue<&'static str>, limit: usize) -> Option<&'static str> {
    q.next_to_start(limit).map(|(object, _, _)| object)
}

/// The next object the queue starts and its reason, without its wait.
fn next_with_reason(q: &mut Queue<&'static str>) -> Option<(&'static str, Reason)> {
    q.next_to_start(0)
        .map(|(object, reason, _)| (object, reason))
}

/// A report on series of a registry of its own.
fn test_report() -> QueueReport {
    let gauge = |name: &str| Gauge::new(name, "test").expect("valid gauge");
    QueueReport {
        wait: Histogram::with_opts(prometheus::HistogramOpts::new("wait", "test"))
            .expect("valid histogram"),
        waiting: gauge("waiting"),
        running: gauge("running"),
    }
}

#[tokio::test]
async fn a_start_reports_the_wait_since_it_was_due_and_the_gauges_follow() {
    let (mut q, report) = (Queue::new(), test_report());
    q.wake("a");
    q.wake("b");
    let (_, _, a_waited) = q.next_to_start(1).expect("a starts");
    q.report(&report);
    assert_eq!((report.waiting.get(), report.running.get()), (1.0, 1.0));
    // b is due but the one slot is a's.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(q.next_to_start(1).is_none());
    q.finished("a", Action::await_change());
    let (object, _, b_waited) = q.next_to_start(1).expect("b starts");
    assert_eq!(object, "b");
    assert!(
        b_waited >= Duration::from_millis(30) && a_waited < b_waited,
        "b waited for the slot: {b_waited:?}, a did not: {a_waited:?}"
    );
    // A wake-up while b runs makes a rerun, due when b's run ends (not
    // when the wake-up came).
    q.wake("b");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let ended = Instant::now();
    q.finished("b", Action::await_change());
    let (_, reason, rerun_waited) = q.next_to_start(1).expect("b once more");
    assert_eq!(reason, Reason::Rerun);
    assert!(rerun_waited <= ended.elapsed(), "{rerun_waited:?}");
    q.finished("b", Action::await_change());
    q.report(&report);
    assert_eq!((report.waiting.get(), report.running.get()), (0.0, 0.0));
}

#[tokio::test]
async fn each_start_names_what_queued_it_the_first_cause_winning() {
    let mut q = Queue::new();
    q.wake("a");
    assert_eq!(next_with_reason(&mut q), Some(("a", Reason::Woken)));
    q.wake("a");
    q.finished("a", Action::await_change());
    assert_eq!(next_with_reason(&mut q), Some(("a", Reason::Rerun)));
    q.finished("a", Action::requeue(Duration::from_millis(40)));
    q.wake("b");
    assert_eq!(next_with_reason(&mut q), Some(("b", Reason::Woken)));
    q.failed("b", Action::requeue(Duration::from_millis(10)));
    let mut expired = Vec::new();
    while expired.len() < 2 {
        let object = q.timers.next().await.expect("two timers").into_inner();
        q.expired(object);
        expired.push(next_with_reason(&mut q).expect("the expired object starts"));
    }
    // Either may expire first on a loaded machine; each keeps its reason.
    expired.sort_by_key(|(object, _)| *object);
    assert_eq!(expired, [("a", Reason::Requeue), ("b", Reason::Retry)]);
}

#[test]
fn a_wake_up_while_queued_is_absorbed_and_while_running_runs_it_once_more() {
    let mut q = Queue::new();
    q.wake("a");
    q.wake("b");
    q.wake("a");
    assert_eq!(next(&mut q, 0), Some("a"));
    q.wake("a");
    q.wake("a");
    assert_eq!(next(&mut q, 0), Some("b"), "a runs: not started twice");
    assert_eq!(next(&mut q, 0), None);
    q.finished("a", Action::requeue(Duration::from_secs(60)));
    assert_eq!(next(&mut q, 0), Some("a"), "once more, now");
    assert!(q.deadlines.is_empty(), "the rerun returns its own action");
    q.finished("a", Action::await_change());
    q.finished("b", Action::await_change());
    assert_eq!(next(&mut q, 0), None);
    assert!(q.running.is_empty() && q.again.is_empty() && q.in_ready.is_empty());
}

#[tokio::test]
async fn a_requeue_is_set_when_a_reconcile_ends_and_a_wake_up_for_now_drops_it() {
    let mut q = Queue::new();
    q.wake("a");
    assert_eq!(next(&mut q, 0), Some("a"));
    q.finished("a", Action::requeue(Duration::from_secs(30)));
    assert_eq!(q.timers.len(), 1);
    assert_eq!(next(&mut q, 0), None, "not before its time");
    q.wake("a");
    assert!(q.deadlines.is_empty() && q.timers.is_empty());
    assert_eq!(next(&mut q, 0), Some("a"));
}

#[tokio::test]
async fn a_requeue_years_away_is_capped_instead_of_panicking_the_timer_queue() {
    // A user can set an expiry years ahead; the timer queue's wheel holds
    // about two years and panics beyond.
    let mut q = Queue::new();
    q.wake("a");
    assert_eq!(next(&mut q, 0), Some("a"));
    q.finished(
        "a",
        Action::requeue(Duration::from_secs(3 * 365 * 24 * 3600)),
    );
    let (_, at, _) = q.deadlines["a"];
    assert!(at <= Instant::now() + MAX_REQUEUE);
    q.wake("b");
    assert_eq!(next(&mut q, 0), Some("b"));
    q.finished("b", Action::requeue(Duration::MAX));
    assert_eq!(q.timers.len(), 2);
}

#[test]
fn at_most_the_limit_runs_at_once_the_rest_wait_in_order() {
    let mut q = Queue::new();
    for name in ["a", "b", "c"] {
        q.wake(name);
    }
    assert_eq!(next(&mut q, 2), Some("a"));
    assert_eq!(next(&mut q, 2), Some("b"));
    assert_eq!(next(&mut q, 2), None);
    q.finished("a", Action::await_change());
    assert_eq!(next(&mut q, 2), Some("c"));
}

mod run {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;
    use tokio::sync::{Notify, mpsc};

    use super::super::*;

    fn config_map(name: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.name = Some(name.into());
        object.metadata.namespace = Some("ns".into());
        object
    }

    fn store(names: &[&str]) -> Store<ConfigMap> {
        let mut writer = Writer::<ConfigMap>::default();
        for name in names {
            writer.apply_watcher_event(&Event::Apply(config_map(name)));
        }
        writer.as_reader()
    }

    fn wake(tx: &mpsc::UnboundedSender<ObjectRef<ConfigMap>>, name: &str) {
        tx.send(ObjectRef::new(name).within("ns"))
            .expect("runner alive");
    }

    /// What the reconciles saw: the order they started in, and the most
    /// reconciles of one object at once.
    #[derive(Default)]
    struct Seen {
        started: Vec<String>,
        now: HashMap<String, usize>,
        most_at_once: usize,
        errors: usize,
    }

    /// Marks a reconcile of object `.1` as over when dropped.
    struct Over(Arc<Mutex<Seen>>, String);

    impl Drop for Over {
        fn drop(&mut self) {
            *self.0.lock().unwrap().now.get_mut(&self.1).unwrap() -= 1;
        }
    }

    /// A runner over objects `a` (its reconcile waits for `gate`) and `b`
    /// (its reconcile fails; the error policy requeues it after 20 ms).
    struct Harness {
        seen: Arc<Mutex<Seen>>,
        gate: Arc<Notify>,
        tx: mpsc::UnboundedSender<ObjectRef<ConfigMap>>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        runner: tokio::task::JoinHandle<()>,
        report: QueueReport,
    }

    impl Harness {
        fn start() -> Harness {
            let (seen, gate) = (
                Arc::new(Mutex::new(Seen::default())),
                Arc::new(Notify::new()),
            );
            let (tx, rx) = mpsc::unbounded_channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (seen_r, gate_r, seen_e) = (seen.clone(), gate.clone(), seen.clone());
            let reconcile = move |obj: Arc<ConfigMap>| {
                let (seen, gate) = (seen_r.clone(), gate_r.clone());
                async move {
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    {
                        let mut s = seen.lock().unwrap();
                        s.started.push(name.clone());
                        let n = s.now.entry(name.clone()).or_default();
                        *n += 1;
                        let n = *n;
                        s.most_at_once = s.most_at_once.max(n);
                    }
                    // Counts the run as over when it ends or is dropped.
                    let _over = Over(seen.clone(), name.clone());
                    if name == "a" {
                        gate.notified().await;
                    }
                    match name.as_str() {
                        "b" => Err("b fails"),
                        _ => Ok(Action::await_change()),
                    }
                }
            };
            let on_error = move |_, _: &&str| {
                seen_e.lock().unwrap().errors += 1;
                Action::requeue(Duration::from_millis(20))
            };
            let stopped = async move {
                let _ = stopped.await;
            };
            let report = super::test_report();
            let settings = Settings {
                name: "test",
                concurrency: 0,
                report: report.clone(),
            };
            let runs = run(
                settings,
                store(&["a", "b"]),
                tokio_stream_of(rx),
                reconcile,
                on_error,
                stopped,
            );
            Harness {
                seen,
                gate,
                tx,
                stop: Some(stop),
                runner: tokio::spawn(runs),
                report,
            }
        }

        fn runs_of(&self, name: &str) -> usize {
            let seen = self.seen.lock().unwrap();
            seen.started.iter().filter(|n| *n == name).count()
        }
    }

    #[tokio::test]
    async fn one_reconcile_per_object_at_a_time_wake_ups_absorbed_errors_requeued() {
        let h = Harness::start();
        wake(&h.tx, "a");
        // Not in the cache: skipped, and the runner goes on (below).
        wake(&h.tx, "gone");
        settle().await;
        // Woken three times while it runs: once more after, not three.
        for _ in 0..3 {
            wake(&h.tx, "a");
        }
        settle().await;
        assert_eq!(h.seen.lock().unwrap().started, ["a"], "not twice at once");
        assert_eq!(h.report.running.get(), 1.0, "a runs");
        assert_eq!(h.report.wait.get_sample_count(), 1, "a's start");
        h.gate.notify_one();
        settle().await;
        h.gate.notify_one();
        settle().await;
        assert_eq!(h.seen.lock().unwrap().started, ["a", "a"]);
        // An error is requeued by the policy's delay (20 ms).
        wake(&h.tx, "b");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let b_runs = h.runs_of("b");
        // Every 20 ms over 200 ms: at least a retry, and not a busy loop.
        assert!(
            (2..=11).contains(&b_runs),
            "b retried after its error's delay: {b_runs} runs"
        );
        // The last run's error may not have reached the policy yet.
        let errors = h.seen.lock().unwrap().errors;
        assert!(errors == b_runs || errors + 1 == b_runs, "{errors} errors");
        assert_eq!(h.seen.lock().unwrap().most_at_once, 1);
    }

    #[tokio::test]
    async fn shutdown_starts_nothing_and_waits_for_a_running_reconcile() {
        let mut h = Harness::start();
        wake(&h.tx, "b");
        wake(&h.tx, "a");
        settle().await;
        // Woken while it runs: it would run once more, but the runner stops.
        wake(&h.tx, "a");
        settle().await;
        let _ = h.stop.take().expect("not stopped yet").send(());
        settle().await;
        assert!(!h.runner.is_finished(), "a still runs");
        let started = h.seen.lock().unwrap().started.len();
        wake(&h.tx, "b");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            h.seen.lock().unwrap().started.len(),
            started,
            "no reconcile starts after shutdown (b's retry timer, a new wake-up)"
        );
        h.gate.notify_one();
        let report = h.report.clone();
        tokio::time::timeout(Duration::from_secs(5), h.runner)
            .await
            .expect("the runner ends")
            .expect("no panic");
        assert_eq!(report.running.get(), 0.0, "nothing runs after the runner");
        assert_eq!(report.waiting.get(), 0.0, "nothing waits to start");
    }

    #[tokio::test]
    async fn an_aborted_runner_aborts_its_running_reconciles() {
        let h = Harness::start();
        wake(&h.tx, "a");
        settle().await;
        assert_eq!(h.seen.lock().unwrap().now["a"], 1, "a runs");
        h.runner.abort();
        settle().await;
        assert_eq!(
            h.seen.lock().unwrap().now["a"],
            0,
            "a's reconcile went with its runner"
        );
    }

    /// Lets every ready task run.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    fn tokio_stream_of<T: Send + 'static>(
        rx: mpsc::UnboundedReceiver<T>,
    ) -> impl Stream<Item = T> + Unpin {
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
            .boxed()
    }
}
