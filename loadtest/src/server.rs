//! The servers under test, each in its own process so both get the same treatment: the
//! harness re-executes itself as `alknet-loadtest serve --kind …`, reads the address and
//! certificate fingerprint the child prints, samples its CPU and memory from /proc, and
//! stops it by closing its stdin.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_runtime::tls::{ClientAuth, TlsIdentity};
use alknet_runtime::{AlpnRegistry, EngineConfig, Fingerprint, Limits};

/// How long a child server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child may take to exit after its stdin closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Alknet's engine (`alknet/echo` and `perf` handlers).
    Alknet,
    /// quinn 0.11 + tokio as `quinn-perf server` runs it (current-thread runtime, quinn's
    /// transport defaults): the strongest baseline, the one comparisons use.
    Quinn,
    /// The former baseline: quinn 0.11 on a tokio multi-thread runtime with `--workers`
    /// threads and Alknet's limits. Weaker; kept to show the difference in one run.
    QuinnMt,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Alknet => "alknet",
            Kind::Quinn => "quinn",
            Kind::QuinnMt => "quinn-mt",
        })
    }
}

/// Set by the parent for sftp workloads: the fingerprint of the client certificate the
/// alknet child serves `alknet/sftp` to.
const SFTP_CLIENT_ENV: &str = "ALKNET_LOADTEST_SFTP_CLIENT";
/// The identity that certificate names (its files are under `<root>/loadtest-sftp/`).
const SFTP_IDENTITY: &str = "loadtest-sftp";

/// The alknet child's SFTP root: on tmpfs (`/dev/shm`) where there is one, as the
/// measure script's files are, so the disk is not what is measured.
fn sftp_root() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    parent.join(format!("alknet-loadtest-sftp-{}", std::process::id()))
}

/// How long the parent waits for a `stats` answer.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// The server certificate's key type (both servers take the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256 (rcgen's default, quinn-perf's and `alknet serve`'s generated one).
    #[default]
    EcdsaP256,
    /// Ed25519 (what a node served from the key vault presents).
    Ed25519,
}

impl KeyType {
    fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Ed25519 => "ed25519",
        }
    }

    pub fn generate(self) -> Result<TlsIdentity, String> {
        match self {
            KeyType::EcdsaP256 => TlsIdentity::generate_self_signed(&[]),
            KeyType::Ed25519 => TlsIdentity::generate_ed25519(&[]),
        }
        .map_err(|e| e.to_string())
    }
}

/// A server child process.
pub struct ServerProc {
    child: Child,
    kind: Kind,
    lines: std::sync::mpsc::Receiver<String>,
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
}

macro_rules! engine_counters {
    ($($(#[$doc:meta])* $name:ident <- $field:ident),* $(,)?) => {
        /// The engine's own counters, summed over its workers (alknet only: the baseline
        /// has no equivalent). Read twice, at the start and the end of the measured window.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct EngineCounters {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl EngineCounters {
            fn from_stats(t: &alknet_runtime::WorkerStatsSnapshot) -> Self {
                Self { $($name: t.$field,)* }
            }

            /// The `stats …` line the alknet child prints.
            fn line(&self) -> String {
                let mut line = String::from("stats");
                $(line.push_str(&format!(" {}={}", stringify!($name), self.$name));)*
                line
            }

            fn parse(line: &str) -> Option<Self> {
                let mut c = Self::default();
                for pair in line.strip_prefix("stats ")?.split_whitespace() {
                    let (k, v) = pair.split_once('=')?;
                    let v: u64 = v.parse().ok()?;
                    match k {
                        $(stringify!($name) => c.$name = v,)*
                        _ => return None,
                    }
                }
                Some(c)
            }

            pub fn since(&self, earlier: &Self) -> Self {
                Self { $($name: self.$name.saturating_sub(earlier.$name),)* }
            }
        }
    };
}

engine_counters! {
    datagrams_received <- datagrams_received,
    datagrams_sent <- datagrams_sent,
    send_calls <- send_calls,
    /// `sendmsg` and `sendmmsg` calls (a pass's transmits for one socket share one).
    send_syscalls <- send_syscalls,
    /// Datagrams a worker received for a connection another worker owns.
    forwarded <- forwarded_out,
    connections_accepted <- connections_accepted,
    /// Handshakes that resumed a TLS session (`handshake --resumption`).
    handshakes_resumed <- handshakes_resumed,
    /// Handshakes completed in QUIC v2 (`--quic-version v2`).
    handshakes_v2 <- handshakes_v2,
    retries_sent <- retries_sent,
    /// Initials dropped unanswered: their source prefix was over its rate.
    refused_rate <- refused_rate,
    refused_source <- refused_source,
    refused_handshakes <- refused_handshakes,
    /// `max_connections` or draining.
    refused_capacity <- connections_refused,
}

/// `[admission]` of the harness's alknet server: the defaults, or with
/// ALKNET_NEW_CONNECTIONS_PER_SECOND=N (flood runs) a per-prefix rate of N with a burst of
/// one second's worth.
fn flood_admission() -> alknet_runtime::AdmissionLimits {
    let rate: Option<u32> = std::env::var("ALKNET_NEW_CONNECTIONS_PER_SECOND")
        .ok()
        .and_then(|v| v.parse().ok());
    match rate {
        Some(n) => alknet_runtime::AdmissionLimits {
            new_connections_per_second: n,
            new_connection_burst: n.max(1),
            ..alknet_runtime::AdmissionLimits::default()
        },
        None => alknet_runtime::AdmissionLimits::default(),
    }
}

impl ServerProc {
    /// Starts `kind` with `workers` threads on 127.0.0.1 (ephemeral port).
    pub fn spawn(kind: Kind, workers: usize, key: KeyType) -> Result<Self, String> {
        Self::spawn_with(kind, workers, key, None)
    }

    /// [`Self::spawn`]; alknet with `sftp_client` also serves `alknet/sftp` (files on
    /// tmpfs, in a directory of its own removed when it stops) to the client certificate
    /// with that fingerprint, with the engine's own loopback packet size.
    pub fn spawn_with(
        kind: Kind,
        workers: usize,
        key: KeyType,
        sftp_client: Option<Fingerprint>,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut command = Command::new(exe);
        if let Some(fp) = sftp_client {
            // no quinn baseline to match: the engine's own loopback packets, as a node
            // serves `alknet connect` (see `engine_limits`)
            command
                .env(SFTP_CLIENT_ENV, fp.to_string())
                .env("ALKNET_LOOPBACK_MTU", "1");
        }
        let mut child = command
            .args([
                "serve",
                "--kind",
                &kind.to_string(),
                "--workers",
                &workers.to_string(),
                "--tls-key",
                key.name(),
            ])
            .env(
                crate::alloc::CHILD_ALLOCATOR_ENV,
                crate::alloc::for_child(kind == Kind::Alknet),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {kind} server: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut addr, mut fingerprint) = (None, None);
        let give_up = Instant::now() + START_TIMEOUT;
        while addr.is_none() || fingerprint.is_none() {
            let left = give_up.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .map_err(|_| format!("{kind} server did not start"))?;
            if let Some(a) = line.strip_prefix("listening ") {
                addr = Some(
                    a.trim()
                        .parse()
                        .map_err(|e| format!("address {a:?}: {e}"))?,
                );
            } else if let Some(f) = line.strip_prefix("fingerprint ") {
                fingerprint = Some(
                    f.trim()
                        .parse()
                        .map_err(|e| format!("fingerprint {f:?}: {e}"))?,
                );
            }
        }
        let (Some(addr), Some(fingerprint)) = (addr, fingerprint) else {
            return Err("server did not report its address".into());
        };
        Ok(Self {
            child,
            kind,
            lines: rx,
            addr,
            fingerprint,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the child for its engine counters (`None` for the baselines, which keep none).
    pub fn counters(&mut self) -> Option<EngineCounters> {
        if self.kind != Kind::Alknet {
            return None;
        }
        let stdin = self.child.stdin.as_mut()?;
        stdin.write_all(b"stats\n").ok()?;
        stdin.flush().ok()?;
        let give_up = Instant::now() + STATS_TIMEOUT;
        loop {
            let line = self
                .lines
                .recv_timeout(give_up.saturating_duration_since(Instant::now()))
                .ok()?;
            if let Some(c) = EngineCounters::parse(&line) {
                return Some(c);
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let give_up = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < give_up {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    Some(alknet_runtime::proc_stat::ProcStat::read(pid)?.cpu_seconds())
}

/// Context switches (voluntary + involuntary) of all of a process's threads, from
/// /proc/PID/task/*/status. Threads that exited before the call are not counted, so take
/// differences only while the server's threads all live.
pub fn context_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(status) = std::fs::read_to_string(task.ok()?.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}

/// Resident memory of a process in bytes, from /proc/PID/status.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The limits alknet's server and the load generator's client run with: the engine's
/// defaults, except that loopback paths keep the 1472-byte packets of every other path
/// (`loopback_max_udp_payload_size` = `max_udp_payload_size`). The comparisons are of
/// engines at the same packet size: the quinn baseline, as `quinn-perf server` runs it, never
/// probes past 1452 bytes, and 64 KiB loopback packets would measure the packet size, not
/// the engine. `ALKNET_LOOPBACK_MTU=1` keeps the engine's default (64 KiB on loopback).
/// `ALKNET_MTU_PROBE_AFTER_PACKETS=N` sets `mtu_probe_after_packets` (0: path MTU discovery
/// right after the handshake, as before that limit existed), for an A/B of one build.
pub fn engine_limits() -> Limits {
    let mut limits = Limits::default();
    if std::env::var("ALKNET_LOOPBACK_MTU").map_or(true, |v| v != "1") {
        limits.loopback_max_udp_payload_size = limits.max_udp_payload_size;
    }
    if let Some(n) = std::env::var("ALKNET_MTU_PROBE_AFTER_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        limits.mtu_probe_after_packets = n;
    }
    limits
}

/// The child side: run a server until stdin closes, after printing `listening ADDR` and
/// `fingerprint HEX` on stdout.
pub fn serve(kind: Kind, workers: usize, key: KeyType) -> Result<(), String> {
    match kind {
        Kind::Quinn | Kind::QuinnMt => crate::baseline::run(crate::baseline::BaselineOptions {
            listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            flavor: if kind == Kind::Quinn {
                crate::baseline::Flavor::PerfServer
            } else {
                crate::baseline::Flavor::MultiThread
            },
            threads: workers,
            limits: Limits::default(),
            identity: key.generate()?,
        }),
        Kind::Alknet => {
            let mut registry = AlpnRegistry::new();
            registry
                .register(Arc::new(alknet_echo::EchoHandler))
                .map_err(|e| e.to_string())?;
            registry
                .register(Arc::new(alknet_call::CallAdapter::new(
                    alknet_call::default_registry().map_err(|e| e.to_string())?,
                )))
                .map_err(|e| e.to_string())?;
            registry
                .register(Arc::new(alknet_perf::PerfHandler))
                .map_err(|e| e.to_string())?;
            registry
                .register(Arc::new(
                    alknet_http::h3::H3Handler::new(
                        crate::h3::router(),
                        alknet_http::h3::H3Limits::default(),
                    )
                    // as a node serves h3 by default: sessions reach alknet/echo
                    .with_webtransport(alknet_http::h3::WebTransportConfig::default()),
                ))
                .map_err(|e| e.to_string())?;
            let host_key = alknet_ssh::generate_ed25519().map_err(|e| e.to_string())?;
            registry
                .register(Arc::new(
                    alknet_ssh::SshAdapter::new(
                        host_key,
                        alknet_ssh::SshConfig::default(),
                        workers,
                    )
                    .map_err(|e| e.to_string())?,
                ))
                .map_err(|e| e.to_string())?;
            // the ssh workloads' fixed key may run commands (see ssh.rs)
            let loadtest_key = crate::ssh::loadtest_key();
            let mut identities = vec![alknet_runtime::IdentityEntry {
                name: "loadtest".into(),
                fingerprints: vec![
                    alknet_ssh::key_fingerprint(loadtest_key.public_key()).to_string()
                ],
                tokens: vec![],
                scopes: vec!["ssh:exec".into()],
            }];
            // sftp workloads: their client certificate may read and write
            let sftp_client = std::env::var(SFTP_CLIENT_ENV).ok();
            let sftp_root = sftp_root();
            if let Some(fp) = &sftp_client {
                identities.push(alknet_runtime::IdentityEntry {
                    name: SFTP_IDENTITY.into(),
                    fingerprints: vec![fp.clone()],
                    tokens: vec![],
                    scopes: vec![
                        alknet_sftp::SCOPE_READ.into(),
                        alknet_sftp::SCOPE_WRITE.into(),
                    ],
                });
                std::fs::create_dir_all(&sftp_root)
                    .map_err(|e| format!("sftp root {}: {e}", sftp_root.display()))?;
                registry
                    .register(Arc::new(alknet_sftp::SftpAlpn::new(
                        sftp_root.clone(),
                        alknet_sftp::SftpConfig::default(),
                        Arc::new(move || alknet_ssh::bridge::TokioBridge::start(workers)),
                    )))
                    .map_err(|e| e.to_string())?;
            }
            let provider = alknet_runtime::ConfigIdentityProvider::new(&identities)
                .map_err(|e| e.to_string())?;
            let config = EngineConfig {
                listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
                workers,
                // The load generator always shares this machine's cores, which is what
                // pinning is wrong for (see PinWorkers): not pinned unless
                // ALKNET_PIN_WORKERS says so (1, 0 or auto).
                pin_workers: std::env::var("ALKNET_PIN_WORKERS")
                    .ok()
                    .and_then(|v| alknet_runtime::PinWorkers::parse(&v))
                    .unwrap_or(alknet_runtime::PinWorkers::Always(false)),
                server_id: 0,
                limits: engine_limits(),
                tls: key.generate()?,
                // a certificate is asked for only when one is expected: the request is
                // part of every handshake the other workloads measure
                client_auth: if sftp_client.is_some() {
                    ClientAuth::Optional
                } else {
                    ClientAuth::None
                },
                // ALKNET_KERNEL_STEERING=0 measures the plain 4-tuple hash instead
                kernel_steering: std::env::var("ALKNET_KERNEL_STEERING").map_or(true, |v| v != "0"),
                // ALKNET_SESSION_TICKETS=single-use measures rustls' session cache instead
                // of host-key tickets
                handshake: alknet_runtime::HandshakePolicy {
                    session_tickets: match std::env::var("ALKNET_SESSION_TICKETS").as_deref() {
                        Ok("single-use") => alknet_runtime::SessionTickets::SingleUse,
                        _ => alknet_runtime::SessionTickets::Auto,
                    },
                    ..alknet_runtime::HandshakePolicy::default()
                },
                admission: flood_admission(),
                qlog_dir: None,
                quic_host_key: None,
            };
            // TLS over TCP on the same port: `[tcp] stream_alpns`' defaults (alknet/echo
            // among them) for `--transport tcp`
            let tcp = alknet_runtime::TcpSetup::default();
            let server =
                alknet_runtime::start_with_tcp(config, registry, Arc::new(provider), Some(tcp))
                    .map_err(|e| e.to_string())?;
            println!("listening {}", server.local_addr());
            println!("fingerprint {}", server.fingerprint());
            // the parent asks for counters with a `stats` line and stops us by closing stdin
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if line.trim() == "stats" {
                    let c = EngineCounters::from_stats(&server.total_stats());
                    println!("{}", c.line());
                }
            }
            server.shutdown_trigger().immediate();
            server.join();
            if sftp_client.is_some() {
                let _ = std::fs::remove_dir_all(&sftp_root);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EngineCounters;

    #[test]
    fn counters_round_trip_through_their_line() {
        let c = EngineCounters {
            datagrams_received: 1,
            datagrams_sent: 22,
            send_calls: 333,
            retries_sent: 7,
            ..EngineCounters::default()
        };
        assert_eq!(EngineCounters::parse(&c.line()), Some(c));
        assert_eq!(EngineCounters::parse("stats bogus=1"), None);
        assert_eq!(EngineCounters::parse("listening 1.2.3.4:5"), None);
    }
}
