//! Which metric series name a cluster object, and removing the series of
//! objects that are gone, so per-object series stay bounded over churn.

use std::collections::{HashMap, HashSet};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{GaugeVec, HistogramVec, IntCounterVec};

/// The pools and templates (namespace, name) that exist, from the
/// controllers' caches.
#[derive(Default, Debug)]
pub struct LiveObjects {
    /// (namespace, name) of every pool.
    pub pools: HashSet<(String, String)>,
    /// (namespace, name) of every template.
    pub templates: HashSet<(String, String)>,
}

impl LiveObjects {
    /// Whether every object a series' labels name still exists: a series
    /// with `namespace` and `pool` names that pool, with `namespace` and
    /// `template` that template (every per-object series carries its
    /// namespace; one without names any of that name). Pure.
    pub fn holds(&self, labels: &HashMap<String, String>) -> bool {
        let known = |set: &HashSet<(String, String)>, key: &str| match (
            labels.get("namespace"),
            labels.get(key),
        ) {
            (Some(ns), Some(name)) => set.contains(&(ns.clone(), name.clone())),
            (None, Some(name)) => set.iter().any(|(_, n)| n == name),
            _ => true,
        };
        known(&self.pools, "pool") && known(&self.templates, "template")
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
