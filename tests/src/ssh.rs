//! Helpers for driving the real OpenSSH client against `alknet/ssh`: keys from
//! `ssh-keygen`, and `ssh` commands whose ProxyCommand is `alknet connect`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{alknet_bin, wait_output};

/// Every `ssh` run ends within this, or the test fails.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the OpenSSH client tools are installed (`tests/run-all.sh` installs them).
pub fn openssh_available() -> bool {
    ["ssh", "ssh-keygen"].iter().all(|tool| {
        Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// A key pair made by `ssh-keygen`.
pub struct SshKey {
    /// The private key file (mode 0600, as ssh requires).
    pub path: PathBuf,
    /// The `ssh-ed25519 AAAA… comment` line (or another type's).
    pub public: String,
    /// SHA-256 of the key as 64 hex digits: what `alknet peer add --fingerprint` takes.
    pub fingerprint_hex: String,
}

/// Generates an ed25519 key named `name` in `dir` (see [`SshKey::from_private_key_file`]
/// for how its public line and fingerprint are obtained).
pub fn ssh_keygen(dir: &Path, name: &str) -> SshKey {
    ssh_keygen_typed(dir, name, &["-t", "ed25519"])
}

/// As [`ssh_keygen`], of the type `ssh-keygen` makes with `type_args` (e.g. `["-t",
/// "ecdsa", "-b", "256"]`).
pub fn ssh_keygen_typed(dir: &Path, name: &str, type_args: &[&str]) -> SshKey {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(type_args)
        .args(["-q", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    SshKey::from_private_key_file(&path)
}

impl SshKey {
    /// An existing unencrypted private key file, e.g. one made by `alknet vault
    /// export-ssh`. Its public line comes from `ssh-keygen -y` and its fingerprint from
    /// `ssh-keygen -l` (OpenSSH's own `SHA256:` base64, turned into hex), so what our
    /// config and peer store hold is checked against OpenSSH, not computed by our code.
    pub fn from_private_key_file(path: &Path) -> SshKey {
        let out = Command::new("ssh-keygen")
            .args(["-y", "-f"])
            .arg(path)
            .output()
            .expect("ssh-keygen -y");
        assert!(out.status.success(), "ssh-keygen -y: {out:?}");
        let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // on a private key file, ssh-keygen -l reads the key (or FILE.pub beside it)
        let out = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(path)
            .output()
            .expect("ssh-keygen -l");
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let b64 = listing
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.strip_prefix("SHA256:"))
            .unwrap_or_else(|| panic!("ssh-keygen -l printed {listing:?}"));
        let digest = base64_decode(b64);
        assert_eq!(digest.len(), 32, "{listing}");
        let fingerprint_hex = alknet_proto::hex::encode(&digest);
        SshKey {
            path: path.to_path_buf(),
            public,
            fingerprint_hex,
        }
    }
}

/// Standard base64 (padding optional), as OpenSSH prints fingerprints.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base64: {text:?}")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Where an `alknet/ssh` server listens and which certificate to pin.
#[derive(Clone)]
pub struct SshTarget {
    pub addr: String,
    /// The server certificate's SHA-256, hex.
    pub tls_fingerprint: String,
    /// `alknet connect --transport`: `quic`, `tcp` or `webtransport`.
    pub transport: &'static str,
}

impl SshTarget {
    /// The target reached over QUIC (use [`Self::over`] for another transport).
    pub fn new(addr: String, tls_fingerprint: String) -> Self {
        Self {
            addr,
            tls_fingerprint,
            transport: "quic",
        }
    }

    /// The same target through `alknet connect --transport TRANSPORT`.
    pub fn over(mut self, transport: &'static str) -> Self {
        self.transport = transport;
        self
    }

    /// `ssh` to the target with `key` and nothing from the user's configuration: no
    /// known_hosts, no agent, no other keys, batch mode (never a prompt).
    pub fn ssh(&self, key: &SshKey) -> Command {
        self.ssh_checking_host(key, None)
    }

    /// As [`Self::ssh`], but the host key must be the one in `known_hosts` (whose
    /// entry names the host `alknet`, as the commands here do).
    pub fn ssh_with_known_hosts(&self, key: &SshKey, known_hosts: &Path) -> Command {
        self.ssh_checking_host(key, Some(known_hosts))
    }

    /// OpenSSH's `sftp` through `alknet/ssh`'s `sftp` subsystem, with the same options as
    /// [`Self::ssh`] (the host to name is `user@alknet`).
    pub fn sftp(&self, key: &SshKey) -> Command {
        self.client("sftp", key, None)
    }

    /// OpenSSH's `scp`, with the same options as [`Self::ssh`] (remote paths are
    /// `user@alknet:PATH`): over the `sftp` subsystem by default (OpenSSH ≥ 9.0), as
    /// `scp -t`/`-f` run by `exec` with `-O`.
    pub fn scp(&self, key: &SshKey) -> Command {
        self.client("scp", key, None)
    }

    /// [`Self::ssh`] as one shell command line, for what runs ssh through a shell: git's
    /// `GIT_SSH_COMMAND`, `rsync -e`, a tmux pane.
    pub fn ssh_command_line(&self, key: &SshKey) -> String {
        let ssh = self.ssh(key);
        std::iter::once(ssh.get_program())
            .chain(ssh.get_args())
            .map(|a| sh_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn ssh_checking_host(&self, key: &SshKey, known_hosts: Option<&Path>) -> Command {
        self.client("ssh", key, known_hosts)
    }

    /// As [`Self::ssh`], with the agent listening on `agent` forwarded (`ForwardAgent`;
    /// OpenSSH forwards only an agent it can reach as its `IdentityAgent`). Only `key`
    /// logs in (`IdentitiesOnly`), whatever the agent holds.
    pub fn ssh_forwarding_agent(&self, key: &SshKey, agent: &Path) -> Command {
        self.client_with_agent("ssh", key, None, Some(agent))
    }

    fn client(&self, program: &str, key: &SshKey, known_hosts: Option<&Path>) -> Command {
        self.client_with_agent(program, key, known_hosts, None)
    }

    fn client_with_agent(
        &self,
        program: &str,
        key: &SshKey,
        known_hosts: Option<&Path>,
        agent: Option<&Path>,
    ) -> Command {
        let proxy = format!(
            "{} connect --transport {} --alpn alknet/ssh --fingerprint {} {}",
            alknet_bin().display(),
            self.transport,
            self.tls_fingerprint,
            self.addr
        );
        let mut cmd = Command::new(program);
        let (strict, known) = match known_hosts {
            Some(file) => ("yes", file.display().to_string()),
            None => ("no", "/dev/null".to_string()),
        };
        cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("StrictHostKeyChecking={strict}"))
            .arg("-o")
            .arg(format!("UserKnownHostsFile={known}"));
        let identity_agent = agent.map_or("none".into(), |p| p.display().to_string());
        cmd.args(["-o", "IdentitiesOnly=yes", "-o"])
            .arg(format!("IdentityAgent={identity_agent}"))
            .args(["-o", "LogLevel=ERROR"]);
        if agent.is_some() {
            cmd.args(["-o", "ForwardAgent=yes"]);
        }
        cmd.arg("-o")
            .arg(format!("ProxyCommand={proxy}"))
            .arg("-i")
            .arg(&key.path);
        cmd
    }

    /// Runs `ssh … user@alknet COMMAND` with `input` on stdin; bounded by [`SSH_TIMEOUT`].
    pub fn run(&self, key: &SshKey, command: &str, input: &[u8]) -> Output {
        let mut cmd = self.ssh(key);
        cmd.args(["user@alknet", command]);
        run_with_input(cmd, input)
    }
}

/// Quotes `arg` for /bin/sh.
pub fn sh_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs `cmd` feeding `input` from a thread (so a big input cannot deadlock against the
/// output), bounded by [`SSH_TIMEOUT`].
pub fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_output(child, SSH_TIMEOUT);
    let _ = writer.join();
    out
}

/// `alknet peer add NAME --fingerprint HEX --scope …` against a server's data directory.
/// The real server on its embedded default, and a fresh key named `name` added as a
/// peer with `scopes`, as an admin would (`alknet peer add`). The tempdir holds the key.
pub fn server_with_peer_key(
    name: &str,
    scopes: &[&str],
) -> (crate::BinServer, tempfile::TempDir, SshKey) {
    let server = crate::BinServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = ssh_keygen(keys.path(), name);
    peer_add(server.data_dir.path(), name, &key.fingerprint_hex, scopes);
    (server, keys, key)
}

pub fn peer_add(data_dir: &Path, name: &str, fingerprint_hex: &str, scopes: &[&str]) {
    let mut cmd = Command::new(alknet_bin());
    cmd.args(["peer", "add", name, "--fingerprint", fingerprint_hex])
        .env("ALKNET_DATA_DIR", data_dir);
    for s in scopes {
        cmd.args(["--scope", s]);
    }
    let out = cmd.output().expect("alknet peer add");
    assert!(
        out.status.success(),
        "peer add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A byte stream the echo helpers drive: TCP or Unix.
pub trait EchoStream: Read + Write + Send + Sized + 'static {
    fn duplicate(&self) -> std::io::Result<Self>;
    fn end_writing(&self) -> std::io::Result<()>;
    fn read_timeout(&self, timeout: Duration) -> std::io::Result<()>;
}

macro_rules! echo_stream {
    ($ty:ty) => {
        impl EchoStream for $ty {
            fn duplicate(&self) -> std::io::Result<Self> {
                self.try_clone()
            }
            fn end_writing(&self) -> std::io::Result<()> {
                self.shutdown(std::net::Shutdown::Write)
            }
            fn read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
                self.set_read_timeout(Some(timeout))
            }
        }
    };
}
echo_stream!(TcpStream);
echo_stream!(UnixStream);

/// Echoes every connection `incoming` yields, a thread each, as long as the process lives.
fn serve_echo<S: EchoStream>(incoming: impl Iterator<Item = std::io::Result<S>> + Send + 'static) {
    std::thread::spawn(move || {
        for conn in incoming {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let Ok(mut reader) = conn.duplicate() else {
                    return;
                };
                let mut writer = conn;
                let _ = std::io::copy(&mut reader, &mut writer);
                let _ = writer.end_writing();
            });
        }
    });
}

/// A loopback TCP echo server on a thread per connection; lives as long as the process.
pub fn tcp_echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let port = listener.local_addr().expect("addr").port();
    serve_echo(std::iter::from_fn(move || {
        Some(listener.accept().map(|(s, _)| s))
    }));
    port
}

/// A Unix-socket echo server at `path`, as [`tcp_echo_server`].
pub fn unix_echo_server(path: &Path) {
    let listener = UnixListener::bind(path).expect("bind unix echo");
    serve_echo(std::iter::from_fn(move || {
        Some(listener.accept().map(|(s, _)| s))
    }));
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Connects to 127.0.0.1:`port`, retrying until `limit` (a forward being set up).
pub fn connect_retry(port: u16, limit: Duration) -> TcpStream {
    let deadline = Instant::now() + limit;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("127.0.0.1:{port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Connects to the Unix socket at `path`, retrying until `limit` (a forward being set up).
pub fn connect_unix_retry(path: &Path, limit: Duration) -> UnixStream {
    let deadline = Instant::now() + limit;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("{}: {e}", path.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Sends `data` through `stream` and returns what comes back until EOF (the far end is an
/// echo server): writes from a thread, reads here.
pub fn echo_through<S: EchoStream>(stream: S, data: &[u8]) -> Vec<u8> {
    stream.read_timeout(SSH_TIMEOUT).expect("read timeout");
    let mut writer = stream.duplicate().expect("clone");
    let data = data.to_vec();
    let sender = std::thread::spawn(move || {
        writer.write_all(&data).expect("write through the forward");
        writer.end_writing().expect("half-close");
    });
    let mut got = Vec::new();
    let mut reader = stream;
    reader
        .read_to_end(&mut got)
        .expect("read through the forward");
    sender.join().expect("sender");
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_openssh_fingerprints() {
        assert_eq!(base64_decode("aGk="), b"hi");
        assert_eq!(base64_decode("aGk"), b"hi");
        assert_eq!(base64_decode("AAEC/w"), [0, 1, 2, 255]);
    }
}
