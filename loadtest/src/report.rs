//! What a run measured, as a text table for people or one JSON line for scripts.

use std::fmt::Write as _;

use crate::harness::Tally;
use crate::server::EngineCounters;

/// Latency quantiles reported, with their labels.
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];

/// One run of one workload against one server.
pub struct Measurement {
    pub workload: &'static str,
    /// Server kind or address, and the shape of the run.
    pub description: String,
    /// Seconds the headline rate is computed over.
    pub seconds: f64,
    pub tally: Tally,
    /// Server CPU seconds over the measured window, when the server is our child.
    pub server_cpu_s: Option<f64>,
    /// Server context switches (all threads) over the window.
    pub server_context_switches: Option<u64>,
    /// The engine's datagram counters over the window (alknet only).
    pub server_io: Option<EngineCounters>,
    /// Server resident memory growth per connection (idle), bytes.
    pub rss_per_connection: Option<f64>,
}

impl Measurement {
    /// The figure this workload is judged by, and its unit.
    pub fn headline(&self) -> (f64, &'static str) {
        let t = &self.tally;
        match self.workload {
            "bulk" | "ssh-cat" => (
                t.bytes as f64 * 8.0 / self.seconds.max(1e-9) / 1e9,
                "Gbit/s",
            ),
            "handshake" => (t.operations as f64 / self.seconds, "handshakes/s"),
            "sftp-get" | "sftp-put" => (t.bytes as f64 / self.seconds.max(1e-9) / 1e6, "MB/s"),
            "sftp-get-files" | "sftp-put-files" => {
                (t.operations as f64 / self.seconds.max(1e-9), "files/s")
            }
            "idle" => (self.rss_per_connection.unwrap_or(f64::NAN), "bytes/conn"),
            _ => (t.operations as f64 / self.seconds, "req/s"),
        }
    }

    /// The headline per server CPU-second (requests, handshakes or Gbit per CPU-second):
    /// on a box whose cores the client shares, the measure of the engine itself.
    pub fn per_server_cpu(&self) -> Option<f64> {
        let cpu = self.server_cpu_s.filter(|c| *c > 0.0)?;
        match self.workload {
            "idle" => None,
            _ => Some(self.headline().0 * self.seconds / cpu),
        }
    }

    /// The unit of [`Self::per_server_cpu`].
    pub fn per_server_cpu_unit(&self) -> &'static str {
        match self.workload {
            "bulk" | "ssh-cat" => "Gbit per server CPU-s",
            "handshake" => "handshakes per server CPU-s",
            "sftp-get" | "sftp-put" => "MB per server CPU-s",
            "sftp-get-files" | "sftp-put-files" => "files per server CPU-s",
            _ => "req per server CPU-s",
        }
    }

    /// Server CPU microseconds per operation (request, handshake, transfer).
    pub fn server_us_per_op(&self) -> Option<f64> {
        let cpu = self.server_cpu_s?;
        (self.tally.operations > 0).then(|| cpu * 1e6 / self.tally.operations as f64)
    }

    fn per_op(&self, n: u64) -> f64 {
        n as f64 / self.tally.operations.max(1) as f64
    }

    pub fn p99_us(&self) -> u64 {
        self.tally.latency.value_at_quantile(0.99)
    }

    fn latency(&self) -> Vec<(&'static str, u64)> {
        let h = &self.tally.latency;
        let mut v: Vec<_> = QUANTILES
            .iter()
            .map(|(l, q)| (*l, h.value_at_quantile(*q)))
            .collect();
        v.push(("max", h.max()));
        v
    }

    fn cpu_percent(&self, cpu_s: f64) -> f64 {
        100.0 * cpu_s / self.seconds.max(1e-9)
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let (value, unit) = self.headline();
        let t = &self.tally;
        let _ = writeln!(s, "{} {}", self.workload, self.description);
        let _ = writeln!(s, "  result      {value:.3} {unit}");
        let _ = writeln!(
            s,
            "  operations  {} in {:.2} s, {} payload bytes, {} connections",
            t.operations, self.seconds, t.bytes, t.connected
        );
        let errors: Vec<String> = t.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "  errors      {} ({})",
            t.errors_total(),
            errors.join(", ")
        );
        if let Some(why) = &t.first_error {
            let _ = writeln!(s, "              first: {why}");
        }
        if !t.latency.is_empty() {
            let lat: Vec<String> = self
                .latency()
                .iter()
                .map(|(l, v)| format!("{l} {v}"))
                .collect();
            let _ = writeln!(s, "  latency us  {}", lat.join("  "));
        }
        let _ = write!(s, "  cpu         client {:.0}%", self.cpu_percent(t.cpu_s));
        if let Some(c) = self.server_cpu_s {
            let _ = write!(s, ", server {:.0}%", self.cpu_percent(c));
        }
        let _ = writeln!(s, " (100% = one core)");
        if let (Some(e), Some(us)) = (self.per_server_cpu(), self.server_us_per_op()) {
            let _ = writeln!(
                s,
                "  efficiency  {e:.3} {}, {us:.2} us server CPU per operation",
                self.per_server_cpu_unit()
            );
        }
        if let Some(cs) = self.server_context_switches {
            let _ = writeln!(
                s,
                "  server      context switches {cs} ({:.4} per operation)",
                self.per_op(cs)
            );
        }
        if let Some(io) = &self.server_io {
            let _ = writeln!(
                s,
                "  server io   per operation: datagrams received {:.3} sent {:.3}, send calls {:.3} in {:.3} system calls; forwarded between workers {}",
                self.per_op(io.datagrams_received),
                self.per_op(io.datagrams_sent),
                self.per_op(io.send_calls),
                self.per_op(io.send_syscalls),
                io.forwarded
            );
            if io.handshakes_v2 > 0 {
                let _ = writeln!(
                    s,
                    "  server quic handshakes in QUIC v2: {} of {} accepted",
                    io.handshakes_v2, io.connections_accepted
                );
            }
            if io.handshakes_resumed > 0 {
                let _ = writeln!(
                    s,
                    "  server tls  handshakes resumed {} of {} accepted",
                    io.handshakes_resumed, io.connections_accepted
                );
            }
        }
        let c = &t.client;
        // all zero only where nothing counted them (`--client quinn`: quinn's endpoint)
        if c.datagrams_sent + c.datagrams_received + c.send_calls > 0 {
            let _ = writeln!(
                s,
                "  client io   datagrams sent {} received {}, send calls {} in {} system calls",
                c.datagrams_sent, c.datagrams_received, c.send_calls, c.send_syscalls
            );
        }
        s
    }

    pub fn json(&self) -> String {
        let (value, unit) = self.headline();
        let t = &self.tally;
        let errors: Vec<String> = t
            .errors
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        let latency: Vec<String> = self
            .latency()
            .iter()
            .map(|(l, v)| format!("\"{l}\":{v}"))
            .collect();
        let server_cpu = self
            .server_cpu_s
            .map_or("null".into(), |c| format!("{:.1}", self.cpu_percent(c)));
        let rss = self
            .rss_per_connection
            .map_or("null".into(), |r| format!("{r:.0}"));
        let opt = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.3}"));
        let count = |v: Option<u64>| v.map_or("null".into(), |v| v.to_string());
        let io = self.server_io;
        format!(
            "{{\"workload\":\"{}\",\"description\":{},\"result\":{value:.3},\"unit\":\"{unit}\",\
             \"operations\":{},\"seconds\":{:.3},\"bytes\":{},\"connections\":{},\"errors\":{{{}}},\
             \"latency_us\":{{{}}},\"client_cpu_percent\":{:.1},\"server_cpu_percent\":{server_cpu},\
             \"rss_per_connection\":{rss},\"per_server_cpu_s\":{},\"server_us_per_op\":{},\
             \"server_context_switches\":{},\"server_datagrams_received\":{},\
             \"server_datagrams_sent\":{},\"server_send_calls\":{},\"forwarded\":{}}}",
            self.workload,
            json_string(&self.description),
            t.operations,
            self.seconds,
            t.bytes,
            t.connected,
            errors.join(","),
            latency.join(","),
            self.cpu_percent(t.cpu_s),
            opt(self.per_server_cpu()),
            opt(self.server_us_per_op()),
            count(self.server_context_switches),
            count(io.map(|c| c.datagrams_received)),
            count(io.map(|c| c.datagrams_sent)),
            count(io.map(|c| c.send_calls)),
            count(io.map(|c| c.forwarded)),
        )
    }
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
pub fn json_string(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
