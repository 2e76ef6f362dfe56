use super::*;

#[test]
fn a_wake_up_while_queued_is_absorbed_and_while_running_runs_it_once_more() {
    let mut q = Queue::new();
    q.wake("a");
    q.wake("b");
    q.wake("a");
    assert_eq!(q.next_to_start(0), Some("a"));
    q.wake("a");
    q.wake("a");
    assert_eq!(q.next_to_start(0), Some("b"), "a runs: not started twice");
    assert_eq!(q.next_to_start(0), None);
    q.finished("a", Action::requeue(Duration::from_secs(60)));
    assert_eq!(q.next_to_start(0), Some("a"), "once more, now");
    assert!(q.deadlines.is_empty(), "the rerun returns its own action");
    q.finished("a", Action::await_change());
    q.finished("b", Action::await_change());
    assert_eq!(q.next_to_start(0), None);
    assert!(q.running.is_empty() && q.again.is_empty() && q.in_ready.is_empty());
}

#[tokio::test]
async fn a_requeue_keeps_the_earliest_deadline_and_a_wake_up_for_now_drops_it() {
    let mut q = Queue::new();
    let now = Instant::now();
    q.wake_at("a", now + Duration::from_secs(30));
    q.wake_at("a", now + Duration::from_secs(10));
    q.wake_at("a", now + Duration::from_secs(20));
    assert_eq!(q.deadlines["a"].1, now + Duration::from_secs(10));
    assert_eq!(q.timers.len(), 1);
    q.wake("a");
    assert!(q.deadlines.is_empty() && q.timers.is_empty());
    assert_eq!(q.next_to_start(0), Some("a"));
}

#[tokio::test]
async fn a_requeue_years_away_is_capped_instead_of_panicking_the_timer_queue() {
    // A user can set an expiry years ahead; the timer queue's wheel holds
    // about two years and panics beyond.
    let mut q = Queue::new();
    q.wake("a");
    assert_eq!(q.next_to_start(0), Some("a"));
    q.finished(
        "a",
        Action::requeue(Duration::from_secs(3 * 365 * 24 * 3600)),
    );
    let (_, at) = q.deadlines["a"];
    assert!(at <= Instant::now() + MAX_REQUEUE);
    q.wake_at(
        "b",
        Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600),
    );
    assert_eq!(q.timers.len(), 2);
}

#[test]
fn at_most_the_limit_runs_at_once_the_rest_wait_in_order() {
    let mut q = Queue::new();
    for name in ["a", "b", "c"] {
        q.wake(name);
    }
    assert_eq!(q.next_to_start(2), Some("a"));
    assert_eq!(q.next_to_start(2), Some("b"));
    assert_eq!(q.next_to_start(2), None);
    q.finished("a", Action::await_change());
    assert_eq!(q.next_to_start(2), Some("c"));
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
    }

    #[tokio::test]
    async fn one_reconcile_per_object_at_a_time_wake_ups_absorbed_errors_requeued() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let gate = Arc::new(Notify::new());
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let errors = Arc::new(Mutex::new(0));
        let (seen_r, gate_r, errors_r) = (seen.clone(), gate.clone(), errors.clone());
        let runner = tokio::spawn(run(
            "test",
            store(&["a", "b"]),
            tokio_stream_of(rx),
            0,
            move |obj: Arc<ConfigMap>| {
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
                    if name == "a" {
                        gate.notified().await;
                    }
                    *seen.lock().unwrap().now.get_mut(&name).unwrap() -= 1;
                    if name == "b" {
                        Err("b fails")
                    } else {
                        Ok(Action::await_change())
                    }
                }
            },
            move |_, _: &&str| {
                *errors_r.lock().unwrap() += 1;
                Action::requeue(Duration::from_millis(20))
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        wake(&tx, "a");
        // Not in the cache: skipped, and the runner goes on (below).
        wake(&tx, "gone");
        settle().await;
        // Woken three times while it runs: once more after, not three.
        for _ in 0..3 {
            wake(&tx, "a");
        }
        settle().await;
        assert_eq!(seen.lock().unwrap().started, ["a"], "not twice at once");
        gate.notify_one();
        settle().await;
        gate.notify_one();
        settle().await;
        assert_eq!(seen.lock().unwrap().started, ["a", "a"]);
        // An error is requeued by the policy's delay (20 ms).
        wake(&tx, "b");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let b_runs = seen
            .lock()
            .unwrap()
            .started
            .iter()
            .filter(|n| *n == "b")
            .count();
        // Every 20 ms over 200 ms: at least a retry, and not a busy loop.
        assert!(
            (2..=11).contains(&b_runs),
            "b retried after its error's delay: {b_runs} runs"
        );
        // The last run's error may not have reached the policy yet.
        let errors = *errors.lock().unwrap();
        assert!(errors == b_runs || errors + 1 == b_runs, "{errors} errors");
        assert_eq!(seen.lock().unwrap().most_at_once, 1);
        // Shutdown waits for a running reconcile and starts none.
        wake(&tx, "a");
        settle().await;
        let _ = stop_tx.send(());
        settle().await;
        assert!(!runner.is_finished(), "a still runs");
        let started = seen.lock().unwrap().started.len();
        wake(&tx, "b");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            seen.lock().unwrap().started.len(),
            started,
            "no reconcile starts after shutdown (b's retry timer, a new wake-up)"
        );
        gate.notify_one();
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("the runner ends")
            .expect("no panic");
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
