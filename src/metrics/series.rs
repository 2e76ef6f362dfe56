//! Which metric series name a cluster object, and removing the series of
//! objects that are gone, so per-object series stay bounded over churn.

use std::collections::{HashMap, HashSet};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{GaugeVec, HistogramVec, IntCounterVec};

/// The pools (namespace, name) and templates (name) that exist, from the
/// controllers' caches.
#[derive(Default, Debug)]
pub struct LiveObjects {
    /// (namespace, name) of every pool.
    pub pools: HashSet<(String, String)>,
    /// Names of every template (any namespace: the series carry no namespace).
    pub templates: HashSet<String>,
}

impl LiveObjects {
    /// Whether every object a series' labels name still exists. A series
    /// with `namespace` and `pool` names that pool; `pool` alone (counters)
    /// a pool of that name in any namespace; `template` a template name.
    /// Pure.
    pub fn holds(&self, labels: &HashMap<String, String>) -> bool {
        let pool_ok = match (labels.get("namespace"), labels.get("pool")) {
            (Some(ns), Some(pool)) => self.pools.contains(&(ns.clone(), pool.clone())),
            (None, Some(pool)) => self.pools.iter().any(|(_, p)| p == pool),
            _ => true,
        };
        let template_ok = labels
            .get("template")
            .is_none_or(|t| self.templates.contains(t));
        pool_ok && template_ok
    }
}

pub(super) struct PerObject<'a> {
    pub(super) gauges: Vec<&'a GaugeVec>,
    pub(super) counters: Vec<&'a IntCounterVec>,
    pub(super) histograms: Vec<&'a HistogramVec>,
}

fn labels_of(metric: &prometheus::proto::Metric) -> HashMap<String, String> {
    metric
        .get_label()
        .iter()
        .map(|l| (l.name().to_string(), l.value().to_string()))
        .collect()
}

pub(super) fn series<T: MetricVecBuilder>(vec: &MetricVec<T>) -> usize {
    vec.collect().iter().map(|f| f.get_metric().len()).sum()
}

/// Removes the series of `vec` whose labels `gone` selects; returns how many.
pub(super) fn drop_series<T: MetricVecBuilder>(
    vec: &MetricVec<T>,
    gone: &dyn Fn(&HashMap<String, String>) -> bool,
) -> usize {
    let mut dropped = 0;
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels = labels_of(metric);
            if gone(&labels) {
                let refs: HashMap<&str, &str> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if vec.remove(&refs).is_ok() {
                    dropped += 1;
                }
            }
        }
    }
    dropped
}
