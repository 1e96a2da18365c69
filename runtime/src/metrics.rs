//! Counters a protocol handler exports for the node's `/metrics` (see
//! [`crate::ProtocolHandler::metrics`]). The runtime only carries them: a handler keeps
//! its own atomics and reports a snapshot when a scrape asks, so nothing is formatted or
//! allocated on the handler's paths.

/// Whether a value only grows (since the handler was built) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// One exported value: a metric name (without the node's `alknet_` prefix), its help
/// text, labels and value. Several samples with one name and different labels form one
/// metric family; the name, help and kind must agree across them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerMetric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub labels: Vec<(&'static str, &'static str)>,
    pub value: u64,
}

impl HandlerMetric {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            name,
            help,
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value,
        }
    }

    pub fn gauge(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            kind: MetricKind::Gauge,
            ..Self::counter(name, help, value)
        }
    }

    pub fn with_label(mut self, key: &'static str, value: &'static str) -> Self {
        self.labels.push((key, value));
        self
    }
}
