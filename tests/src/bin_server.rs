//! The real `alknet serve` binary as a child process: embedded default config, a fresh
//! data directory, a free loopback port, its log lines on a channel.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::alknet_bin;

/// A running `alknet serve`; killed when dropped.
pub struct BinServer {
    child: Child,
    pub port: u16,
    pub data_dir: tempfile::TempDir,
    log: mpsc::Receiver<String>,
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

    /// As [`Self::start_with_config`], with `env` set for the server process (e.g. a
    /// `PATH` without `git`).
    pub fn start_with_config_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(Some(config), env, &[])
    }

    fn launch(config: Option<&str>, env: &[(&str, &str)], extra: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        // free for TCP too: the server's TLS-over-TCP listener takes the same port
        let port = crate::dns::free_port_pair();
        let mut cmd = Command::new(alknet_bin());
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "2",
        ]);
        if let Some(text) = config {
            let path = data_dir.path().join("config.toml");
            std::fs::write(&path, text).expect("write config");
            cmd.arg("--config").arg(path);
        }
        cmd.args(extra);
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .env("ALKNET_DATA_DIR", data_dir.path())
            .env("ALKNET_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn alknet serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let server = Self {
            child,
            port,
            data_dir,
            log,
        };
        server.wait_for_log("alknet serving");
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Log lines up to and including the first containing `needle` (20 s at most).
    pub fn wait_for_log(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.log.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "server never logged {needle:?}; log so far:\n{}",
            seen.join("\n")
        );
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
