//! Prometheus metrics: the engine's per-worker counters (read at scrape time from the
//! runtime's snapshots), this front end's requests by route, status and protocol, and the
//! standard `process_*` metrics (see `process_metrics.rs`). Encoded by `prometheus-client`
//! (OpenMetrics text, which Prometheus scrapes as is).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use alknet_runtime::{HandlerMetric, MetricKind, NodeStatus, OperationStats};

use crate::process_metrics::{OpenFds, ProcessStats};
use crate::request_counts::RequestCounts;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route pattern (`/api/call/{operationId}`), or "unmatched".
    pub route: String,
    pub status: u16,
    /// "HTTP/1.1", "HTTP/2", "HTTP/3" (a constant: no allocation per request).
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlpnLabel {
    alpn: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlpnStreamLabels {
    alpn: String,
    /// "bidi" or "uni".
    dir: &'static str,
    /// "peer" (the client opened it) or "local" (the handler did).
    initiator: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

/// Live counters of the HTTP front end. A clone counts into the same counters (a reloaded
/// [`crate::HttpState`] keeps them).
#[derive(Default, Clone)]
pub struct HttpMetrics {
    /// Requests answered by route, status and protocol: counted per thread, summed at
    /// scrape (see `request_counts.rs`).
    pub requests: RequestCounts,
    /// Server-Sent Event streams open now (bounded by `sse_max_streams`).
    pub sse_open: Gauge,
    /// SSE topic subscribers closed for falling `sse_queue_events` behind.
    pub sse_lagged: Counter,
    /// `process_open_fds`, counted off the worker.
    pub open_fds: Arc<OpenFds>,
}

/// Worker counters that are gauges (values that go down), by field name.
const GAUGES: &[&str] = &["tcp_open"];

impl HttpMetrics {
    pub fn count(&self, route: &str, status: u16, protocol: &'static str) {
        self.requests.count(route, status, protocol);
    }

    /// Every request counted, summed (the dashboard's request rate).
    pub fn requests_total(&self) -> u64 {
        self.requests.total()
    }

    /// The exposition text for a scrape, from what the caller read: the node's status,
    /// the call node's stats and the process (no IO here).
    pub fn encode(
        &self,
        status: Option<&NodeStatus>,
        calls: Option<OperationStats>,
        process: Option<&ProcessStats>,
    ) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("alknet");
        // `alknet_build_info{version} 1`, as Prometheus' own `*_build_info`: which version
        // each node of a fleet runs, and when it changed
        registry.register(
            "build",
            "the alknet version this node runs",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        if let Some(calls) = calls {
            let requests = Counter::<u64>::default();
            requests.inc_by(calls.requests);
            registry.register(
                "call_requests",
                "call operations requested (alknet/call and HTTP)",
                requests,
            );
            let responses = Counter::<u64>::default();
            responses.inc_by(calls.responses);
            registry.register(
                "call_responses",
                "call operations answered with a result",
                responses,
            );
            let errors = Family::<CodeLabel, Counter>::default();
            for (code, n) in calls.errors {
                errors
                    .get_or_create(&CodeLabel {
                        code: code.as_str().to_string(),
                    })
                    .inc_by(n);
            }
            registry.register(
                "call_errors",
                "call operations failed, by call error code",
                errors,
            );
        }
        let requests = Family::<RequestLabels, Counter>::default();
        for (key, n) in self.requests.snapshot() {
            requests
                .get_or_create(&RequestLabels {
                    route: key.route,
                    status: key.status,
                    protocol: key.protocol,
                })
                .inc_by(n);
        }
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, status and protocol",
            requests,
        );
        registry.register(
            "http_sse_streams_open",
            "Server-Sent Event streams open (topic subscriptions and streaming calls)",
            self.sse_open.clone(),
        );
        registry.register(
            "http_sse_lagged",
            "SSE topic subscribers closed with event: lagged (fell sse_queue_events behind)",
            self.sse_lagged.clone(),
        );
        if let Some(status) = status {
            let per_worker = status.worker_stats();
            if let Some(first) = per_worker.first() {
                for (name, _) in first.named() {
                    let help = format!("engine worker counter {name} (see runtime/src/stats.rs)");
                    if GAUGES.contains(&name) {
                        let family = Family::<WorkerLabel, Gauge>::default();
                        for (i, s) in per_worker.iter().enumerate() {
                            let v = s.named().into_iter().find(|(n, _)| *n == name);
                            family
                                .get_or_create(&WorkerLabel {
                                    worker: i.to_string(),
                                })
                                .set(v.map_or(0, |(_, v)| i64::try_from(v).unwrap_or(i64::MAX)));
                        }
                        registry.register(format!("worker_{name}"), help, family);
                    } else {
                        let family = Family::<WorkerLabel, Counter>::default();
                        for (i, s) in per_worker.iter().enumerate() {
                            let v = s.named().into_iter().find(|(n, _)| *n == name);
                            family
                                .get_or_create(&WorkerLabel {
                                    worker: i.to_string(),
                                })
                                .inc_by(v.map_or(0, |(_, v)| v));
                        }
                        registry.register(format!("worker_{name}"), help, family);
                    }
                }
            }
            let alpn_open = Family::<AlpnLabel, Gauge>::default();
            let alpn_accepted = Family::<AlpnLabel, Counter>::default();
            let alpn_streams = Family::<AlpnStreamLabels, Counter>::default();
            for c in status.alpn_connections() {
                let s = c.streams;
                for (dir, initiator, n) in [
                    ("bidi", "peer", s.peer_bidi),
                    ("uni", "peer", s.peer_uni),
                    ("bidi", "local", s.local_bidi),
                    ("uni", "local", s.local_uni),
                ] {
                    alpn_streams
                        .get_or_create(&AlpnStreamLabels {
                            alpn: c.alpn.clone(),
                            dir,
                            initiator,
                        })
                        .inc_by(n);
                }
                let label = AlpnLabel { alpn: c.alpn };
                alpn_open
                    .get_or_create(&label)
                    .set(i64::try_from(c.open).unwrap_or(i64::MAX));
                alpn_accepted.get_or_create(&label).inc_by(c.accepted);
            }
            registry.register(
                "alpn_connections_open",
                "QUIC connections open, by ALPN",
                alpn_open,
            );
            registry.register(
                "alpn_connections_accepted",
                "QUIC connections handed to a handler since start, by ALPN",
                alpn_accepted,
            );
            registry.register(
                "alpn_streams",
                "Streams opened since start on each ALPN's connections (QUIC streams; a TLS/TCP connection's one stream), by direction and by who opened them",
                alpn_streams,
            );
            register_handler_metrics(&mut registry, status.handler_metrics());
            let open = Gauge::<i64>::default();
            open.set(i64::try_from(status.open_connections()).unwrap_or(i64::MAX));
            registry.register(
                "quic_connections_open",
                "QUIC connections open across all workers",
                open,
            );
            let draining = Gauge::<i64>::default();
            draining.set(i64::from(status.draining()));
            registry.register(
                "draining",
                "1 while the node drains for shutdown, else 0",
                draining,
            );
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &registry)?;
        if let Some(process) = process {
            // unprefixed: the names every client library exports, which dashboards expect
            prometheus_client::encoding::text::encode_registry(
                &mut out,
                &process_registry(process),
            )?;
        }
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// The standard `process_*` metrics of one reading.
fn process_registry(p: &ProcessStats) -> Registry {
    let mut registry = Registry::default();
    let cpu = Counter::<f64, AtomicU64>::default();
    cpu.inc_by(p.cpu_seconds);
    registry.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        cpu,
    );
    let gauges: [(&str, &str, Option<f64>); 5] = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            Some(p.resident_bytes as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            Some(p.virtual_bytes as f64),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            Some(p.start_time_seconds),
        ),
        (
            "process_open_fds",
            "Number of open file descriptors",
            p.open_fds.map(|n| n as f64),
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors",
            p.max_fds.map(|n| n as f64),
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            let g = Gauge::<f64, AtomicU64>::default();
            g.set(v);
            registry.register(name, help, g);
        }
    }
    registry
}

/// The handlers' own counters ([`alknet_runtime::ProtocolHandler::metrics`]): one family
/// per name, one sample per label set, in the order the handlers reported them.
fn register_handler_metrics(registry: &mut Registry, samples: Vec<HandlerMetric>) {
    type Labels = Vec<(&'static str, &'static str)>;
    let mut families: Vec<(&'static str, &'static str, MetricKind)> = Vec::new();
    for m in &samples {
        if !families.iter().any(|(name, _, _)| *name == m.name) {
            families.push((m.name, m.help, m.kind));
        }
    }
    for (name, help, kind) in families {
        let of_family: Vec<&HandlerMetric> = samples
            .iter()
            .filter(|m| m.name == name && m.kind == kind)
            .collect();
        // a single unlabelled sample is a plain metric (a family would print `name{}`)
        if let [m] = of_family[..] {
            if m.labels.is_empty() {
                match kind {
                    MetricKind::Counter => {
                        let c = Counter::<u64>::default();
                        c.inc_by(m.value);
                        registry.register(name, help, c);
                    }
                    MetricKind::Gauge => {
                        let g = Gauge::<i64>::default();
                        g.set(i64::try_from(m.value).unwrap_or(i64::MAX));
                        registry.register(name, help, g);
                    }
                }
                continue;
            }
        }
        match kind {
            MetricKind::Counter => {
                let family = Family::<Labels, Counter>::default();
                for m in of_family {
                    family.get_or_create(&m.labels).inc_by(m.value);
                }
                registry.register(name, help, family);
            }
            MetricKind::Gauge => {
                let family = Family::<Labels, Gauge>::default();
                for m in of_family {
                    family
                        .get_or_create(&m.labels)
                        .set(i64::try_from(m.value).unwrap_or(i64::MAX));
                }
                registry.register(name, help, family);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_metrics_become_one_family_per_name_with_labelled_samples() {
        let samples = vec![
            HandlerMetric::counter("ssh_channels_opened", "opened", 3)
                .with_label("type", "session"),
            HandlerMetric::gauge("ssh_sessions_open", "open now", 2),
            HandlerMetric::counter("ssh_channels_opened", "opened", 1)
                .with_label("type", "direct-tcpip"),
        ];
        let mut registry = Registry::with_prefix("alknet");
        register_handler_metrics(&mut registry, samples);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("# TYPE alknet_ssh_channels_opened counter"),
            "{text}"
        );
        assert!(
            text.contains("alknet_ssh_channels_opened_total{type=\"session\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("alknet_ssh_channels_opened_total{type=\"direct-tcpip\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE alknet_ssh_sessions_open gauge"),
            "{text}"
        );
        assert!(text.contains("alknet_ssh_sessions_open 2"), "{text}");
        assert_eq!(
            text.matches("# TYPE alknet_ssh_channels_opened ").count(),
            1
        );
    }
}
