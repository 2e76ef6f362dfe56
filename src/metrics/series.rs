//! Which metric series name a cluster object (pool, template), and how
//! many there are.

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{GaugeVec, HistogramVec, IntCounterVec};

pub(super) struct PerObject<'a> {
    pub(super) gauges: Vec<&'a GaugeVec>,
    pub(super) counters: Vec<&'a IntCounterVec>,
    pub(super) histograms: Vec<&'a HistogramVec>,
}

pub(super) fn series<T: MetricVecBuilder>(vec: &MetricVec<T>) -> usize {
    vec.collect().iter().map(|f| f.get_metric().len()).sum()
}
