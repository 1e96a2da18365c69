//! The run's summary, as text for people or one JSON line for scripts.

use std::fmt::Write as _;

use alknet_runtime::WorkerStatsSnapshot;

use crate::rr::{Errors, Outcome, Plan};

/// Latency quantiles reported, with their labels.
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];

/// Everything printed at the end of a run.
pub struct Summary {
    target: String,
    in_process_workers: Option<u16>,
    client_threads: usize,
    connections: usize,
    connected: u64,
    streams: usize,
    size: usize,
    duration_s: f64,
    warmup_s: f64,
    /// Requests completed in the measured window.
    pub requests: u64,
    errors: Errors,
    /// (label, µs) for each of [`QUANTILES`], then the maximum.
    latency_us: Vec<(&'static str, u64)>,
    server: Option<WorkerStatsSnapshot>,
    client: WorkerStatsSnapshot,
    first_connect_error: Option<String>,
}

impl Summary {
    pub fn new(plan: &Plan, outcome: &Outcome, server: Option<WorkerStatsSnapshot>) -> Self {
        let h = &outcome.latency;
        let mut latency_us: Vec<_> = QUANTILES
            .iter()
            .map(|(label, q)| (*label, h.value_at_quantile(*q)))
            .collect();
        latency_us.push(("max", h.max()));
        Self {
            target: plan.target_addr().to_string(),
            in_process_workers: plan.in_process_workers,
            client_threads: plan.client_threads,
            connections: plan.connections,
            connected: outcome.connected,
            streams: plan.streams,
            size: plan.size,
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            requests: h.len(),
            errors: outcome.errors,
            latency_us,
            server,
            client: outcome.client,
            first_connect_error: outcome.first_connect_error.clone(),
        }
    }

    fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.duration_s
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let server = match self.in_process_workers {
            Some(w) => format!(" (in-process, {w} workers)"),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "rr {}{server}: {} client threads, {}/{} connections x {} streams, {} B each way, \
             {} s measured after {} s warm-up",
            self.target,
            self.client_threads,
            self.connected,
            self.connections,
            self.streams,
            self.size,
            self.duration_s,
            self.warmup_s,
        );
        let _ = writeln!(
            s,
            "requests    {} ({:.1} req/s)",
            self.requests,
            self.requests_per_sec()
        );
        let e = &self.errors;
        let _ = writeln!(
            s,
            "errors      {} (connect {}, open {}, write {}, read {}, mismatch {}, timeout {})",
            e.total(),
            e.connect,
            e.open,
            e.write,
            e.read,
            e.mismatch,
            e.timeout
        );
        if let Some(why) = &self.first_connect_error {
            let _ = writeln!(s, "            first connect error: {why}");
        }
        let lat: Vec<String> = self
            .latency_us
            .iter()
            .map(|(l, v)| format!("{l} {v}"))
            .collect();
        let _ = writeln!(s, "latency us  {}", lat.join("  "));
        if let Some(srv) = &self.server {
            let _ = writeln!(
                s,
                "server      {} (whole run: handshakes and warm-up included)",
                stats_text(srv)
            );
        }
        let _ = writeln!(s, "client      {}", stats_text(&self.client));
        s
    }

    /// One JSON object on one line. Every string is an address or a fixed label, except the
    /// connect error, which is escaped.
    pub fn json(&self) -> String {
        let e = &self.errors;
        let latency: Vec<String> = self
            .latency_us
            .iter()
            .map(|(l, v)| format!("\"{l}\":{v}"))
            .collect();
        let server = self.server.as_ref().map_or("null".into(), stats_json);
        let workers = self
            .in_process_workers
            .map_or("null".into(), |w| w.to_string());
        let connect_error = self
            .first_connect_error
            .as_deref()
            .map_or("null".into(), json_string);
        format!(
            "{{\"scenario\":\"rr\",\"target\":\"{}\",\"in_process_workers\":{workers},\
             \"client_threads\":{},\"connections\":{},\"connected\":{},\"streams\":{},\
             \"size\":{},\"duration_s\":{},\"warmup_s\":{},\"requests\":{},\
             \"requests_per_sec\":{:.1},\"errors\":{},\"errors_by_kind\":{{\"connect\":{},\
             \"open\":{},\"write\":{},\"read\":{},\"mismatch\":{},\"timeout\":{}}},\
             \"first_connect_error\":{connect_error},\"latency_us\":{{{}}},\"server\":{server},\
             \"client\":{}}}",
            self.target,
            self.client_threads,
            self.connections,
            self.connected,
            self.streams,
            self.size,
            self.duration_s,
            self.warmup_s,
            self.requests,
            self.requests_per_sec(),
            e.total(),
            e.connect,
            e.open,
            e.write,
            e.read,
            e.mismatch,
            e.timeout,
            latency.join(","),
            stats_json(&self.client),
        )
    }
}

fn stats_text(s: &WorkerStatsSnapshot) -> String {
    format!(
        "datagrams sent {}, received {}, send_calls {}",
        s.datagrams_sent, s.datagrams_received, s.send_calls
    )
}

fn stats_json(s: &WorkerStatsSnapshot) -> String {
    format!(
        "{{\"datagrams_sent\":{},\"datagrams_received\":{},\"send_calls\":{}}}",
        s.datagrams_sent, s.datagrams_received, s.send_calls
    )
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
