//! `compare`: the same workload against alknet and the quinn baseline, each started fresh
//! with the same worker/thread count, alternating A B A B so drift on a shared machine
//! hits both alike; medians per server and the ratio alknet/quinn.

use std::fmt::Write as _;

use crate::report::Measurement;
use crate::server::Kind;

/// Medians of several rounds of one server.
#[derive(Debug, Clone, Copy)]
pub struct Medians {
    pub headline: f64,
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
    let _ = writeln!(
        s,
        "  {:<8} {:>16} {:>10} {:>8}  rounds",
        "server", unit, "p99 us", "errors"
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
            "  {:<8} {:>16.1} {:>10} {:>8}  [{}]",
            kind.to_string(),
            m.headline,
            m.p99_us,
            m.errors,
            rounds.join(", ")
        );
        by_kind.push((*kind, m));
    }
    let get = |k: Kind| by_kind.iter().find(|(kind, _)| *kind == k).map(|(_, m)| *m);
    if let (Some(a), Some(q)) = (get(Kind::Alknet), get(Kind::Quinn)) {
        let _ = writeln!(s, "  ratio alknet/quinn: {:.2}x", a.headline / q.headline);
        if a.p99_us > 0 && q.p99_us > 0 {
            let _ = writeln!(
                s,
                "  p99 alknet/quinn:   {:.2}x",
                a.p99_us as f64 / q.p99_us as f64
            );
        }
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
