//! The plain-HTTP admin port: `/metrics`, `/healthz`, `/readyz`, and the
//! [`Health`] record behind the two probes.
//!
//! `/readyz` is 200 once the replica serves admission (standbys included).
//! `/healthz` (liveness) is 200 unless the process is wedged, judged from
//! two signals the controllers report:
//! - a watch (one per cache) that has been failing for longer than
//!   [`HealthThresholds::watch_broken`] without a single good event since
//!   ([`Health::watch_event`] / [`Health::watch_error`]);
//! - a reconcile that started and has not finished for longer than
//!   [`HealthThresholds::reconcile_stuck`] ([`Health::reconcile_started`]
//!   returns a guard that marks the end when dropped).
//!
//! An idle controller is healthy: no work is not a stall. A short API
//! outage is healthy too: the thresholds default to minutes, so a restart
//! only comes when waiting has stopped helping. The decision is the pure
//! function [`assess`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// When `/healthz` starts failing.
#[derive(Clone, Copy, Debug)]
pub struct HealthThresholds {
    /// A watch failing for longer than this makes the process unhealthy.
    pub watch_broken: Duration,
    /// A reconcile running for longer than this makes the process unhealthy.
    pub reconcile_stuck: Duration,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            watch_broken: Duration::from_secs(120),
            reconcile_stuck: Duration::from_secs(300),
        }
    }
}

/// A watch that has been failing since `since`.
#[derive(Clone, Debug)]
pub struct BrokenWatch {
    /// Name of the cache (e.g. `pods`).
    pub cache: String,
    /// First error after the last good event.
    pub since: Instant,
    /// The latest error, for the message.
    pub last_error: String,
}

/// Readiness and liveness shared by the controllers and the admin server.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    thresholds: HealthThresholds,
    broken_watches: Mutex<HashMap<String, BrokenWatch>>,
    in_flight: Mutex<HashMap<u64, (&'static str, Instant)>>,
    next_reconcile: AtomicU64,
}

impl Health {
    /// A record judged with `thresholds`.
    pub fn new(thresholds: HealthThresholds) -> Self {
        Health {
            thresholds,
            ..Default::default()
        }
    }

    /// Marks the process ready (caches synced, controllers running).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The watch of `cache` delivered an event (or re-listed): it works.
    pub fn watch_event(&self, cache: &str) {
        let mut broken = self.broken_watches.lock().expect("health lock");
        if !broken.is_empty() {
            broken.remove(cache);
        }
    }

    /// The watch of `cache` failed; it counts as broken from the first
    /// failure after its last good event.
    pub fn watch_error(&self, cache: &str, error: &dyn std::fmt::Display) {
        let mut broken = self.broken_watches.lock().expect("health lock");
        let entry = broken
            .entry(cache.to_string())
            .or_insert_with(|| BrokenWatch {
                cache: cache.to_string(),
                since: Instant::now(),
                last_error: String::new(),
            });
        entry.last_error = error.to_string();
    }

    /// A reconcile of `controller` starts; it ends when the guard drops.
    pub fn reconcile_started(self: &Arc<Self>, controller: &'static str) -> InFlight {
        let id = self.next_reconcile.fetch_add(1, Ordering::Relaxed);
        self.in_flight
            .lock()
            .expect("health lock")
            .insert(id, (controller, Instant::now()));
        InFlight {
            health: self.clone(),
            id,
        }
    }

    /// `Ok` when live, else every reason it is not.
    pub fn liveness(&self) -> Result<(), Vec<String>> {
        let watches: Vec<BrokenWatch> = self
            .broken_watches
            .lock()
            .expect("health lock")
            .values()
            .cloned()
            .collect();
        let oldest = self.oldest_reconciles();
        assess(Instant::now(), &watches, &oldest, self.thresholds)
    }

    /// The oldest in-flight reconcile start per controller.
    fn oldest_reconciles(&self) -> Vec<(&'static str, Instant)> {
        let mut oldest: HashMap<&'static str, Instant> = HashMap::new();
        for (controller, started) in self.in_flight.lock().expect("health lock").values() {
            let entry = oldest.entry(controller).or_insert(*started);
            if *started < *entry {
                *entry = *started;
            }
        }
        oldest.into_iter().collect()
    }
}

/// Marks one reconcile as running; dropping it marks the end.
pub struct InFlight {
    health: Arc<Health>,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.health
            .in_flight
            .lock()
            .expect("health lock")
            .remove(&self.id);
    }
}

/// Liveness verdict at `now`. Pure: every reason is one line naming the
/// signal, how long, and the threshold (and its flag) it passed.
pub fn assess(
    now: Instant,
    broken_watches: &[BrokenWatch],
    oldest_reconciles: &[(&'static str, Instant)],
    thresholds: HealthThresholds,
) -> Result<(), Vec<String>> {
    let mut reasons: Vec<String> = broken_watches
        .iter()
        .filter(|w| now.saturating_duration_since(w.since) > thresholds.watch_broken)
        .map(|w| {
            format!(
                "watch {}: failing for {}s (threshold {}s, --health-watch-broken-seconds): {}",
                w.cache,
                now.saturating_duration_since(w.since).as_secs(),
                thresholds.watch_broken.as_secs(),
                w.last_error
            )
        })
        .collect();
    reasons.extend(
        oldest_reconciles
            .iter()
            .filter(|(_, started)| {
                now.saturating_duration_since(*started) > thresholds.reconcile_stuck
            })
            .map(|(controller, started)| {
                format!(
                    "controller {controller}: a reconcile has run for {}s (threshold {}s, \
                     --health-reconcile-stuck-seconds)",
                    now.saturating_duration_since(*started).as_secs(),
                    thresholds.reconcile_stuck.as_secs()
                )
            }),
    );
    reasons.sort();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// Binds the admin port (fails fast with the address on error).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the admin (metrics) address {addr}: {e}"))
}

/// Serves the admin endpoints until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin server listening");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => { warn!(%error, "admin accept failed"); continue; }
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (metrics, health) = (metrics.clone(), health.clone());
                async move { Ok::<_, Infallible>(route(&req, &metrics, &health)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String, content_type: &str| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served here\n".into(),
            "text/plain",
        );
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            metrics.encode(),
            "text/plain; version=0.0.4",
        ),
        "/healthz" | "/livez" => match health.liveness() {
            Ok(()) => text(StatusCode::OK, "ok\n".into(), "text/plain"),
            Err(reasons) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy:\n{}\n", reasons.join("\n")),
                "text/plain",
            ),
        },
        "/readyz" if health.is_ready() => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced yet\n".into(),
            "text/plain",
        ),
        other => text(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {other} (try /metrics, /healthz, /readyz)\n"),
            "text/plain",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn thresholds() -> HealthThresholds {
        HealthThresholds {
            watch_broken: secs(60),
            reconcile_stuck: secs(300),
        }
    }

    fn broken(cache: &str, since: Instant) -> BrokenWatch {
        BrokenWatch {
            cache: cache.into(),
            since,
            last_error: "connection refused".into(),
        }
    }

    #[test]
    fn short_outages_and_idle_controllers_are_healthy() {
        let t0 = Instant::now();
        assert_eq!(assess(t0, &[], &[], thresholds()), Ok(()));
        let now = t0 + secs(60);
        assert_eq!(
            assess(now, &[broken("pods", t0)], &[("claim", t0)], thresholds()),
            Ok(())
        );
    }

    #[test]
    fn a_long_broken_watch_fails_with_its_error() {
        let t0 = Instant::now();
        let reasons = assess(t0 + secs(61), &[broken("pods", t0)], &[], thresholds()).unwrap_err();
        assert_eq!(
            reasons,
            vec![
                "watch pods: failing for 61s (threshold 60s, --health-watch-broken-seconds): \
                 connection refused"
                    .to_string()
            ]
        );
    }

    #[test]
    fn a_stuck_reconcile_fails_naming_its_controller() {
        let t0 = Instant::now();
        let reasons = assess(t0 + secs(301), &[], &[("sandbox", t0)], thresholds()).unwrap_err();
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].starts_with("controller sandbox: a reconcile has run for 301s"));
    }

    #[test]
    fn the_record_tracks_errors_recoveries_and_reconciles() {
        let health = Arc::new(Health::new(HealthThresholds {
            watch_broken: Duration::ZERO,
            reconcile_stuck: Duration::ZERO,
        }));
        assert_eq!(health.liveness(), Ok(()));
        health.watch_error("pods", &"boom");
        std::thread::sleep(Duration::from_millis(2));
        let reasons = health.liveness().unwrap_err();
        assert!(reasons[0].contains("watch pods") && reasons[0].ends_with("boom"));
        health.watch_event("pods");
        assert_eq!(health.liveness(), Ok(()), "a good event clears it");
        let guard = health.reconcile_started("pool");
        std::thread::sleep(Duration::from_millis(2));
        assert!(health.liveness().unwrap_err()[0].contains("controller pool"));
        drop(guard);
        assert_eq!(
            health.liveness(),
            Ok(()),
            "a finished reconcile is forgotten"
        );
    }
}
