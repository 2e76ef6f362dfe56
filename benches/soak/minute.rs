//! One row of the soak's table: what one minute cost the operator (RSS, CPU)
//! and the API server (CPU, when it is a local process), what it served (claims, warm/cold, latency), with the operator's
//! in-memory table sizes at the minute's end. Pure, unit-tested in the
//! `soak-logic` test target.

use crate::stats::{percentile, sorted};

/// One served claim.
pub struct Served {
    pub warm: bool,
    pub latency_ms: f64,
}

/// One reading of the operator.
pub struct Sample {
    pub rss_mib: f64,
    pub cpu_ms: f64,
    /// The local API server's CPU so far; `None` when it is not local.
    pub apiserver_cpu_ms: Option<f64>,
    pub tables: Vec<(String, i64)>,
}

impl Sample {
    /// `table=n` pairs, in the operator's order.
    pub fn tables_line(&self) -> String {
        self.tables
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `sandbox_operator_tracked_entries` of a metrics text, in order.
pub fn tracked_entries(metrics: &str) -> Vec<(String, i64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("sandbox_operator_tracked_entries{table=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(t, v)| (t.to_string(), v.trim().parse().unwrap_or(-1)))
        .collect()
}

/// The figures of one minute.
pub struct Minute {
    pub index: usize,
    pub rss_mib: f64,
    pub cpu_ms: f64,
    /// The API server's CPU in the minute, every client's work included.
    pub apiserver_cpu_ms: Option<f64>,
    pub served: usize,
    pub warm: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub tables: String,
    /// Less than a minute: the claims still in flight when creation stopped.
    pub partial: bool,
}

impl Minute {
    /// The minute between two samples, with the claims served in it.
    pub fn new(index: usize, before: &Sample, after: &Sample, served: Vec<Served>) -> Minute {
        let latencies = sorted(&served.iter().map(|s| s.latency_ms).collect::<Vec<_>>());
        Minute {
            index,
            rss_mib: after.rss_mib,
            cpu_ms: after.cpu_ms - before.cpu_ms,
            apiserver_cpu_ms: after
                .apiserver_cpu_ms
                .zip(before.apiserver_cpu_ms)
                .map(|(a, b)| a - b),
            served: served.len(),
            warm: served.iter().filter(|s| s.warm).count(),
            p50_ms: percentile(&latencies, 50.0),
            p99_ms: percentile(&latencies, 99.0),
            tables: after.tables_line(),
            partial: false,
        }
    }

    pub fn header() -> String {
        format!(
            "{:>3} {:>8} {:>8} {:>13} {:>6} {:>5} {:>5} {:>8} {:>8}  tracked entries (table=n)",
            "min",
            "rss MiB",
            "cpu ms",
            "api ms/claim",
            "served",
            "warm",
            "cold",
            "p50 ms",
            "p99 ms"
        )
    }

    /// The API server's CPU per claim served in the minute (creation,
    /// deletion and the refills of the claims of the minute, roughly), as
    /// printed: `n/a` without a local API server or a claim.
    pub fn apiserver_per_claim(&self) -> String {
        match self.apiserver_cpu_ms {
            Some(ms) if self.served > 0 => format!("{:.1}", ms / self.served as f64),
            _ => "n/a".into(),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{:>3} {:>8.1} {:>8.0} {:>13} {:>6} {:>5} {:>5} {:>8.1} {:>8.1}  {}",
            self.index,
            self.rss_mib,
            self.cpu_ms,
            self.apiserver_per_claim(),
            self.served,
            self.warm,
            self.served - self.warm,
            self.p50_ms,
            self.p99_ms,
            self.tables
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_entries_are_read_from_the_exposition() {
        let text = "# HELP x\nsandbox_operator_tracked_entries{table=\"backoff\"} 0\n\
                    sandbox_operator_leader 1\nsandbox_operator_tracked_entries{table=\"write_memo\"} 12\n";
        assert_eq!(
            tracked_entries(text),
            vec![("backoff".to_string(), 0), ("write_memo".to_string(), 12)]
        );
    }

    #[test]
    fn a_minute_counts_warm_and_cold_and_cpu_between_samples() {
        let before = Sample {
            rss_mib: 20.0,
            cpu_ms: 1000.0,
            apiserver_cpu_ms: Some(5000.0),
            tables: vec![],
        };
        let after = Sample {
            rss_mib: 21.0,
            cpu_ms: 1600.0,
            apiserver_cpu_ms: Some(5300.0),
            tables: vec![("backoff".into(), 0), ("write_memo".into(), 7)],
        };
        let served = vec![
            Served {
                warm: true,
                latency_ms: 30.0,
            },
            Served {
                warm: true,
                latency_ms: 10.0,
            },
            Served {
                warm: false,
                latency_ms: 1200.0,
            },
        ];
        let m = Minute::new(1, &before, &after, served);
        assert_eq!((m.served, m.warm, m.partial), (3, 2, false));
        assert_eq!(m.cpu_ms, 600.0);
        // 300 ms of API server CPU over 3 claims.
        assert_eq!(m.apiserver_per_claim(), "100.0");
        let remote = Sample {
            apiserver_cpu_ms: None,
            ..after
        };
        let no_figure = Minute::new(2, &before, &remote, vec![]);
        assert_eq!(no_figure.apiserver_per_claim(), "n/a");
        assert_eq!((m.p50_ms, m.p99_ms), (30.0, 1200.0));
        assert!(m.line().ends_with("backoff=0 write_memo=7"), "{}", m.line());
        assert!(Minute::header().starts_with("min"));
    }
}
