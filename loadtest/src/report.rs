//! What a run measured, as a text table for people or one JSON line for scripts.

use std::fmt::Write as _;

use crate::harness::Tally;

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
            "idle" => (self.rss_per_connection.unwrap_or(f64::NAN), "bytes/conn"),
            _ => (t.operations as f64 / self.seconds, "req/s"),
        }
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
        let c = &t.client;
        let _ = writeln!(
            s,
            "  client io   datagrams sent {} received {}, send calls {}",
            c.datagrams_sent, c.datagrams_received, c.send_calls
        );
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
        format!(
            "{{\"workload\":\"{}\",\"description\":{},\"result\":{value:.3},\"unit\":\"{unit}\",\
             \"operations\":{},\"seconds\":{:.3},\"bytes\":{},\"connections\":{},\"errors\":{{{}}},\
             \"latency_us\":{{{}}},\"client_cpu_percent\":{:.1},\"server_cpu_percent\":{server_cpu},\
             \"rss_per_connection\":{rss}}}",
            self.workload,
            json_string(&self.description),
            t.operations,
            self.seconds,
            t.bytes,
            t.connected,
            errors.join(","),
            latency.join(","),
            self.cpu_percent(t.cpu_s),
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
