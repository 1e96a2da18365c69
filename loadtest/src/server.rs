//! The servers under test, each in its own process so both get the same treatment: the
//! harness re-executes itself as `alknet-loadtest serve --kind …`, reads the address and
//! certificate fingerprint the child prints, samples its CPU and memory from /proc, and
//! stops it by closing its stdin.

use std::io::{BufRead, BufReader, Read};
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
    /// quinn 0.11 + tokio multi-thread, serving the same protocols.
    Quinn,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Alknet => "alknet",
            Kind::Quinn => "quinn",
        })
    }
}

/// A server child process.
pub struct ServerProc {
    child: Child,
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
}

impl ServerProc {
    /// Starts `kind` with `workers` threads on 127.0.0.1 (ephemeral port).
    pub fn spawn(kind: Kind, workers: usize) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--kind",
                &kind.to_string(),
                "--workers",
                &workers.to_string(),
            ])
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
            addr,
            fingerprint,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may contain spaces: fields start after the last ')'
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks > 0.0).then(|| (utime + stime) / ticks)
}

/// Resident memory of a process in bytes, from /proc/PID/status.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The child side: run a server until stdin closes, after printing `listening ADDR` and
/// `fingerprint HEX` on stdout.
pub fn serve(kind: Kind, workers: usize) -> Result<(), String> {
    match kind {
        Kind::Quinn => crate::baseline::run(crate::baseline::BaselineOptions {
            listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            threads: workers,
            limits: Limits::default(),
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
            let provider =
                alknet_runtime::ConfigIdentityProvider::new(&[alknet_runtime::IdentityEntry {
                    name: "loadtest".into(),
                    fingerprints: vec![
                        alknet_ssh::key_fingerprint(loadtest_key.public_key()).to_string()
                    ],
                    tokens: vec![],
                    scopes: vec!["ssh:exec".into()],
                }])
                .map_err(|e| e.to_string())?;
            let config = EngineConfig {
                listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
                workers,
                // ALKNET_PIN_WORKERS=0: let the scheduler place workers (client and server
                // share this machine's cores, unlike a production server)
                pin_workers: std::env::var("ALKNET_PIN_WORKERS").map_or(true, |v| v != "0"),
                server_id: 0,
                limits: Limits::default(),
                tls: TlsIdentity::generate_self_signed(&[]).map_err(|e| e.to_string())?,
                client_auth: ClientAuth::None,
                // ALKNET_KERNEL_STEERING=0 measures the plain 4-tuple hash instead
                kernel_steering: std::env::var("ALKNET_KERNEL_STEERING").map_or(true, |v| v != "0"),
            };
            let server = alknet_runtime::start(config, registry, Arc::new(provider))
                .map_err(|e| e.to_string())?;
            println!("listening {}", server.local_addr());
            println!("fingerprint {}", server.fingerprint());
            // the parent stops us by closing our stdin
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            server.shutdown_trigger().immediate();
            server.join();
            Ok(())
        }
    }
}
