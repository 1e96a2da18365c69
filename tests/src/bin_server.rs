//! The real `alknet serve` binary as a child process: embedded default config, a fresh
//! data directory, a free loopback port, its log lines on a channel.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{alknet_bin, ChildLines};

/// A running `alknet serve`; killed when dropped.
pub struct BinServer {
    child: Child,
    pub port: u16,
    pub data_dir: tempfile::TempDir,
    log: ChildLines,
    /// How it was started, for [`Self::crash_and_restart`].
    command: Command,
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts [`BinServer::launch`] makes when its port was taken meanwhile.
const BIND_RETRIES: usize = 5;

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

impl BinServer {
    /// `alknet serve` with no config file and 2 workers, waiting until it serves.
    pub fn start() -> Self {
        Self::launch(None, &[], &[])
    }

    /// `alknet serve --config FILE` with `config` as the file's text (written into the
    /// fresh data directory), 2 workers, waiting until it serves.
    pub fn start_with_config(config: &str) -> Self {
        Self::launch(Some(config), &[], &[])
    }

    /// [`BinServer::start_with_config`] with more `alknet serve` arguments.
    pub fn start_with_config_and_args(config: &str, args: &[&str]) -> Self {
        Self::launch(Some(config), &[], args)
    }

    /// [`Self::start`] (the embedded default config) with `env` set for the server process.
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::launch(None, env, &[])
    }

    /// As [`Self::start_with_config`], with `env` set for the server process (e.g. a
    /// `PATH` without `git`).
    pub fn start_with_config_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(Some(config), env, &[])
    }

    /// [`Self::start`] listening on `[::]` (IPv6 and, through mapped addresses, IPv4);
    /// [`Self::addr`] stays `127.0.0.1:PORT`.
    pub fn start_dual_stack() -> Self {
        Self::launch_on("[::]", None, &[], &[])
    }

    fn launch(config: Option<&str>, env: &[(&str, &str)], extra: &[&str]) -> Self {
        Self::launch_on("127.0.0.1", config, env, extra)
    }

    fn launch_on(host: &str, config: Option<&str>, env: &[(&str, &str)], extra: &[&str]) -> Self {
        // a port probed free can be taken by a parallel test before the server binds it:
        // start again on another one
        let mut last = String::new();
        for _ in 0..BIND_RETRIES {
            match Self::try_launch(host, config, env, extra) {
                Ok(server) => return server,
                Err(log) if log.contains("already in use") => last = log,
                Err(log) => panic!("alknet serve did not start; its log:\n{log}"),
            }
        }
        panic!("alknet serve found its port taken {BIND_RETRIES} times; last log:\n{last}");
    }

    /// [`Self::start_with_config`] with a config naming a port of its own (e.g. a classic
    /// DNS listener's): `config(port)` for a port free for UDP and TCP, tried again on
    /// another port if a parallel test took it before the server bound it.
    pub fn start_with_port_config(config: impl Fn(u16) -> String) -> (Self, u16) {
        let mut last = String::new();
        for _ in 0..BIND_RETRIES {
            let port = crate::dns::free_port_pair();
            match Self::try_start_with_config(&config(port)) {
                Ok(server) => return (server, port),
                Err(log) if log.contains("already in use") => last = log,
                Err(log) => panic!("alknet serve did not start; its log:\n{log}"),
            }
        }
        panic!("alknet serve found its ports taken {BIND_RETRIES} times; last log:\n{last}");
    }

    /// `alknet serve` with `config` as [`Self::start_with_config`], or, if it exits before
    /// serving, `Err` with its log (e.g. a port named in `config` was taken meanwhile).
    pub fn try_start_with_config(config: &str) -> Result<Self, String> {
        Self::try_launch("127.0.0.1", Some(config), &[], &[])
    }

    fn try_launch(
        host: &str,
        config: Option<&str>,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Result<Self, String> {
        let data_dir = tempfile::tempdir().expect("tempdir");
        // free for TCP too: the server's TLS-over-TCP listener takes the same port
        let port = crate::dns::free_port_pair();
        let mut command = Command::new(alknet_bin());
        command.args([
            "serve",
            "--listen",
            &format!("{host}:{port}"),
            "--workers",
            "2",
        ]);
        if let Some(text) = config {
            let path = data_dir.path().join("config.toml");
            std::fs::write(&path, text).expect("write config");
            command.arg("--config").arg(path);
        }
        command.args(extra);
        command.envs(env.iter().copied());
        command
            .env("ALKNET_DATA_DIR", data_dir.path())
            .env("ALKNET_LOG", "info")
            .stderr(Stdio::piped());
        let (child, log) = Self::spawn(&mut command);
        let server = Self {
            child,
            port,
            data_dir,
            log,
            command,
        };
        match server.log_until("alknet serving") {
            Ok(_) => Ok(server),
            Err(seen) => Err(seen.join("\n")),
        }
    }

    fn spawn(command: &mut Command) -> (Child, ChildLines) {
        let mut child = command.spawn().expect("spawn alknet serve");
        let log = ChildLines::read(child.stderr.take().expect("stderr"));
        (child, log)
    }

    /// Kills the server with SIGKILL (a crash: nothing is drained or closed) and starts
    /// the same command again, on the same port and data directory, waiting until it
    /// serves; returns what the new process logged until then.
    pub fn crash_and_restart(&mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, log) = Self::spawn(&mut self.command);
        self.child = child;
        self.log = log;
        self.log_until("alknet serving").unwrap_or_else(|seen| {
            panic!(
                "alknet serve did not start again; its log:\n{}",
                seen.join("\n")
            )
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Log lines up to and including the first containing `needle` (20 s at most).
    pub fn wait_for_log(&self, needle: &str) -> Vec<String> {
        self.log_until(needle).unwrap_or_else(|seen| {
            panic!(
                "server never logged {needle:?}; log so far:\n{}",
                seen.join("\n")
            )
        })
    }

    /// [`Self::wait_for_log`], or `Err` with the lines seen if the server exits or 20 s
    /// pass first.
    fn log_until(&self, needle: &str) -> Result<Vec<String>, Vec<String>> {
        self.log
            .try_until(Duration::from_secs(20), |line| line.contains(needle))
            .map_err(|(_, seen)| seen)
    }

    /// The server's certificate fingerprint, via `alknet fingerprint`.
    pub fn fingerprint(&self) -> String {
        let out = Command::new(alknet_bin())
            .arg("fingerprint")
            .env("ALKNET_DATA_DIR", self.data_dir.path())
            .output()
            .expect("alknet fingerprint");
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    /// The base64 SHA-256 of the server's public key (SubjectPublicKeyInfo, DER), by
    /// `openssl`: what `curl --pinnedpubkey sha256//…` and Chromium's
    /// `--ignore-certificate-errors-spki-list` take.
    pub fn spki_sha256_base64(&self) -> String {
        let cert = self.data_dir.path().join("cert.pem");
        let script = format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
            cert.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let out = wait_output(child, Duration::from_secs(60));
        assert!(out.status.success(), "openssl failed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `/metrics` over HTTP/2 (curl, the server's certificate as CA; the config must list
    /// it in `[http] public`), parsed by `prometheus_client`'s OpenMetrics parser: one
    /// `name{key=value,…} value` line per sample, labels sorted, integers printed as such.
    pub fn metrics_samples(&self) -> Vec<String> {
        let cert = self.data_dir.path().join("cert.pem");
        let curl = Command::new("curl")
            .args(["-sS", "--fail", "--http2", "--max-time", "30", "--cacert"])
            .arg(&cert)
            .arg(format!("https://127.0.0.1:{}/metrics", self.port))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl (tests/run-all.sh installs it)");
        let out = wait_output(curl, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "scrape failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut parse = Command::new("python3")
            .args(["-c", PARSE_SAMPLES])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        if let Some(mut stdin) = parse.stdin.take() {
            std::io::Write::write_all(&mut stdin, &out.stdout).expect("write the scrape");
        }
        let parsed = wait_output(parse, Duration::from_secs(60));
        assert!(
            parsed.status.success(),
            "not OpenMetrics: {}",
            String::from_utf8_lossy(&parsed.stderr)
        );
        String::from_utf8_lossy(&parsed.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits for the server to exit by itself (after a signal), up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The value of `sample` (`name{labels}` as [`BinServer::metrics_samples`] prints it) in
/// `samples`; fails the test, listing them, when it is not there.
pub fn sample_value(samples: &[String], sample: &str) -> u64 {
    samples
        .iter()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{}", samples.join("\n")))
}

/// Waits for a child's output, killing it and failing the test after `limit`.
pub fn wait_output(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // SAFETY: plain kill(2) on a child we spawned
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("process {pid} did not finish within {limit:?}");
        }
    }
}

/// Parses OpenMetrics text on stdin (tests/run-all.sh installs `prometheus-client`).
const PARSE_SAMPLES: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        v = int(s.value) if float(s.value).is_integer() else s.value
        print(f"{s.name}{{{labels}}} {v}")
"#;
