//! Benchmarks of Alknet's hot paths that need no network.
//!
//! Criterion benches live in `benches/`; the callgrind workload (`alknet-workload`, run by
//! `callgrind-gate.sh`) in `src/bin/`. Both drive the server's packet path through
//! [`pair`], an in-memory server worker and client.

pub mod alpn;
pub mod pair;
pub mod valgrind;
