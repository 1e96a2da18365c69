//! `compare`: the same workload against alknet and the baselines, each started fresh with
//! the same worker/thread count, alternating A B A B so drift on a shared machine hits
//! all alike; medians per server and the ratios alknet/baseline of throughput, of
//! efficiency (the headline per server CPU-second) and of p99 latency.

use std::fmt::Write as _;

use crate::report::Measurement;
use crate::server::Kind;

/// Medians of several rounds of one server.
#[derive(Debug, Clone, Copy)]
pub struct Medians {
    pub headline: f64,
    /// Median of the headline per server CPU-second (NaN when not measured).
    pub per_server_cpu: f64,
    pub p99_us: u64,
    pub errors: u64,
}

pub fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn medians(runs: &[Measurement]) -> Medians {
    let mut p99: Vec<u64> = runs.iter().map(Measurement::p99_us).collect();
    p99.sort_unstable();
    Medians {
        headline: median_f64(runs.iter().map(|m| m.headline().0).collect()),
        per_server_cpu: median_f64(runs.iter().filter_map(|m| m.per_server_cpu()).collect()),
        p99_us: p99.get(p99.len() / 2).copied().unwrap_or(0),
        errors: runs.iter().map(|m| m.tally.errors_total()).sum(),
    }
}

/// The comparison table.
pub fn table(workload: &str, unit: &str, results: &[(Kind, Vec<Measurement>)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "compare {workload}: median of {} rounds",
        results.first().map_or(0, |r| r.1.len())
    );
    let eff_unit = results
        .first()
        .and_then(|r| r.1.first())
        .map_or("per server CPU-s", |m| m.per_server_cpu_unit());
    let _ = writeln!(s, "  efficiency = {eff_unit}");
    let _ = writeln!(
        s,
        "  {:<9} {:>16} {:>14} {:>10} {:>8}  rounds",
        "server", unit, "efficiency", "p99 us", "errors"
    );
    let mut by_kind = Vec::new();
    for (kind, runs) in results {
        let m = medians(runs);
        let rounds: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.1}", r.headline().0))
            .collect();
        let _ = writeln!(
            s,
            "  {:<9} {:>16.1} {:>14.1} {:>10} {:>8}  [{}]",
            kind.to_string(),
            m.headline,
            m.per_server_cpu,
            m.p99_us,
            m.errors,
            rounds.join(", ")
        );
        by_kind.push((*kind, m));
    }
    let Some(a) = by_kind
        .iter()
        .find(|(kind, _)| *kind == Kind::Alknet)
        .map(|(_, m)| *m)
    else {
        return s;
    };
    for (kind, q) in by_kind.iter().filter(|(kind, _)| *kind != Kind::Alknet) {
        let _ = writeln!(
            s,
            "  ratio alknet/{kind}: throughput {:.2}x, efficiency {:.2}x, p99 {}",
            a.headline / q.headline,
            a.per_server_cpu / q.per_server_cpu,
            if a.p99_us > 0 && q.p99_us > 0 {
                format!("{:.2}x", a.p99_us as f64 / q.p99_us as f64)
            } else {
                "n/a".into()
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::median_f64;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median_f64(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_f64(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median_f64(vec![]).is_nan());
    }
}
