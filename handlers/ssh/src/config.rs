//! The `[ssh]` section of the config file: every limit is a named constant here with a key
//! there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Shell that runs `exec` commands (`SHELL -c CMD`) and interactive sessions.
pub const DEFAULT_SHELL: &str = "/bin/sh";

/// SSH sessions (= QUIC streams) open at once on one connection; more are reset. The QUIC
/// stream limit (`limits.max_concurrent_bidi_streams`) applies too.
pub const DEFAULT_MAX_SESSIONS_PER_CONNECTION: usize = 32;

/// Channels (shells, commands, forwarded connections) open at once in one session; more
/// are refused. OpenSSH's `MaxSessions` is 10; forwarding wants more.
pub const DEFAULT_MAX_CHANNELS_PER_SESSION: usize = 64;

/// Failed authentications before the session is disconnected (OpenSSH's `MaxAuthTries`).
pub const DEFAULT_MAX_AUTH_ATTEMPTS: usize = 6;

/// A session must have authenticated this long after its stream opened, or it is closed
/// (OpenSSH's `LoginGraceTime`). Covers the version exchange too.
pub const DEFAULT_AUTH_TIMEOUT_MS: u64 = 60_000;

/// Every failed authentication takes at least this long, so its timing does not tell
/// which lookup refused it. 10 ms, about sshd's own floor (5–9 ms, per user):
/// authentication is by public key only, which cannot be guessed, and a key
/// probe answers whether a key is known anyway, so a long delay protects nothing; it only
/// cost every login whose client offers another key first (an agent's keys, a
/// certificate's bare key) a second per key. `max_auth_attempts` bounds the tries of a
/// session, admission the sessions.
pub const DEFAULT_AUTH_REJECTION_DELAY_MS: u64 = 10;

/// The SSH channel window we grant peers (bytes they may send ahead). russh's default.
pub const DEFAULT_WINDOW_SIZE: u32 = 2 * 1024 * 1024;

/// Largest SSH packet payload we accept on a channel. russh's default.
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 32 * 1024;

/// Messages russh queues per channel for its pump (which drains them at once; see `flow`).
pub const DEFAULT_CHANNEL_QUEUE: usize = 64;

/// Inbound bytes one channel may hold (taken from the client, not yet consumed by the
/// command or socket) before the session's SSH window is throttled (see `flow`).
pub const DEFAULT_CHANNEL_BUFFER: usize = 1024 * 1024;

/// How long a `direct-tcpip` (ssh -L) connection to its target may take.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;

/// Environment variables a client may set (`env` requests; `SendEnv` in OpenSSH).
/// `GIT_PROTOCOL` is how git's ssh transport asks the remote `git-upload-pack` for
/// protocol v2 (`ssh -o SendEnv=GIT_PROTOCOL`), as GitHub and GitLab accept it; without it
/// git over SSH falls back to protocol v0 (no `ls-refs` ref prefixes, no unborn HEAD).
pub const DEFAULT_ENV_ALLOW: &[&str] = &["LANG", "LC_*", "GIT_PROTOCOL"];

/// `env` requests honoured per channel; more are refused.
pub const MAX_ENV_PER_CHANNEL: usize = 64;

/// Terminal modes of a `pty-req` applied; the rest are ignored (RFC 4254 defines about
/// 60 opcodes, OpenSSH sends about 55).
pub const MAX_TERMINAL_MODES: usize = 128;

/// Addresses `tcpip-forward` (ssh -R) may bind.
pub const DEFAULT_FORWARD_BIND_ALLOW: &[&str] = &["127.0.0.1", "::1", "localhost"];

/// Directories beneath which Unix sockets may be forwarded (none: refused).
pub const DEFAULT_FORWARD_SOCKET_ALLOW: &[&str] = &[];

/// `tcpip-forward` and `streamlocal-forward` listeners one session may hold.
pub const DEFAULT_MAX_FORWARDS_PER_SESSION: usize = 16;

/// First X display number a forwarded X11 session gets (sshd's `X11DisplayOffset`): 10,
/// so that the displays of real X servers on the host (0, 1, …) stay clear.
pub const DEFAULT_X11_DISPLAY_OFFSET: u32 = 10;

/// The `xauth` program that writes a forwarded X11 session's cookie (sshd's
/// `XAuthLocation`).
pub const DEFAULT_XAUTH: &str = "/usr/bin/xauth";

/// The `[ssh]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// Shell for `exec` (`SHELL -c CMD`) and `shell` requests.
    pub shell: PathBuf,
    /// Host key (OpenSSH private key file), the only one served. Default (with
    /// `host_keys` empty too): `ssh_host_ed25519_key` and `ssh_host_ecdsa_key` in the data
    /// directory, generated on first start.
    pub host_key: Option<PathBuf>,
    /// Host keys (OpenSSH private key files), as sshd's `HostKey` lines: each client gets
    /// the first of its host key algorithms that one of these serves, with the first key
    /// listed of that algorithm; all of them are announced after authentication
    /// (`hostkeys-00@openssh.com`), so a later key of an algorithm is how one is rotated.
    /// Not with `host_key`.
    pub host_keys: Vec<PathBuf>,
    /// An OpenSSH host certificate of the host key (`ssh-keygen -s CA -h -n NAMES
    /// key.pub` makes `key-cert.pub`), presented to clients that trust its CA
    /// (`@cert-authority` in `known_hosts`), as sshd's `HostCertificate`.
    pub host_certificate: Option<PathBuf>,
    /// An OpenSSH `authorized_keys`-style file of extra identities (see
    /// [`crate::AuthorizedKeysProvider`]), asked after the server's identity providers.
    pub authorized_keys: Option<PathBuf>,
    /// Keys and certificates refused whatever else grants them, as sshd's `RevokedKeys`:
    /// an OpenSSH KRL (`ssh-keygen -k`) or a text file of public keys (see
    /// `crate::revoked`). Read again when it changes.
    pub revoked_keys: Option<PathBuf>,
    /// Names a client may set with `env` requests: exact names, or a prefix ending in `*`.
    pub env_allow: Vec<String>,
    /// Subsystems served by a command, as sshd's `Subsystem NAME COMMAND`: the command
    /// runs as an `exec` would (`SHELL -c COMMAND`, needs `ssh:exec`). One named like a
    /// built-in subsystem (`sftp`) replaces it.
    pub subsystems: BTreeMap<String, String>,
    /// Addresses `tcpip-forward` (ssh -R) may bind: exact strings as the client sends them.
    pub forward_bind_allow: Vec<String>,
    /// Directories beneath which Unix sockets may be forwarded: connected to by
    /// `direct-streamlocal@openssh.com` (`ssh -L PORT:/path`) and bound by
    /// `streamlocal-forward@openssh.com` (`ssh -R /path:…`). Absolute paths; empty (the
    /// default) refuses both, since a local socket (a container engine's, an agent's) is
    /// often worth more than what the forwarding scopes were meant to grant.
    pub forward_socket_allow: Vec<PathBuf>,
    /// A socket already at an `ssh -R /path:…` path is removed and bound anew (sshd's
    /// `StreamLocalBindUnlink`, off by default: the request fails): for a forwarded GnuPG
    /// agent, whose socket a dropped session leaves behind. Only sockets are removed.
    pub stream_local_bind_unlink: bool,
    /// First X display number tried for X11 forwarding (display N listens on the
    /// loopback's TCP port 6000 + N); up to `MAX_X11_DISPLAYS` are tried.
    pub x11_display_offset: u32,
    /// The `xauth` program (X11 forwarding is refused when it cannot run).
    pub xauth: PathBuf,
    /// Threads of the tokio runtime behind SSH sessions (their timers, child processes,
    /// forwarded TCP connections, and the sessions themselves with `session_placement =
    /// "bridge"`); 0 = as many as QUIC workers.
    pub bridge_threads: usize,
    /// Where a session's loop runs: `"worker"` (default; on the QUIC worker owning its
    /// connection, no thread hop per round trip) or `"bridge"` (on the bridge runtime).
    pub session_placement: crate::bridge::SessionPlacement,
    pub max_sessions_per_connection: usize,
    pub max_channels_per_session: usize,
    pub max_forwards_per_session: usize,
    pub max_auth_attempts: usize,
    pub auth_timeout_ms: u64,
    pub auth_rejection_delay_ms: u64,
    pub window_size: u32,
    pub max_packet_size: u32,
    pub channel_queue: usize,
    pub channel_buffer: usize,
    pub connect_timeout_ms: u64,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            shell: PathBuf::from(DEFAULT_SHELL),
            host_key: None,
            host_keys: Vec::new(),
            host_certificate: None,
            authorized_keys: None,
            revoked_keys: None,
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|s| s.to_string()).collect(),
            subsystems: BTreeMap::new(),
            forward_bind_allow: DEFAULT_FORWARD_BIND_ALLOW
                .iter()
                .map(|s| s.to_string())
                .collect(),
            forward_socket_allow: DEFAULT_FORWARD_SOCKET_ALLOW
                .iter()
                .map(PathBuf::from)
                .collect(),
            stream_local_bind_unlink: false,
            x11_display_offset: DEFAULT_X11_DISPLAY_OFFSET,
            xauth: PathBuf::from(DEFAULT_XAUTH),
            bridge_threads: 0,
            session_placement: crate::bridge::SessionPlacement::default(),
            max_sessions_per_connection: DEFAULT_MAX_SESSIONS_PER_CONNECTION,
            max_channels_per_session: DEFAULT_MAX_CHANNELS_PER_SESSION,
            max_forwards_per_session: DEFAULT_MAX_FORWARDS_PER_SESSION,
            max_auth_attempts: DEFAULT_MAX_AUTH_ATTEMPTS,
            auth_timeout_ms: DEFAULT_AUTH_TIMEOUT_MS,
            auth_rejection_delay_ms: DEFAULT_AUTH_REJECTION_DELAY_MS,
            window_size: DEFAULT_WINDOW_SIZE,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            channel_queue: DEFAULT_CHANNEL_QUEUE,
            channel_buffer: DEFAULT_CHANNEL_BUFFER,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
        }
    }
}

/// A `[ssh]` value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ssh.{key}: {reason}")]
pub struct SshConfigError {
    pub key: &'static str,
    pub reason: &'static str,
}

impl SshConfig {
    pub fn validate(&self) -> Result<(), SshConfigError> {
        let positive = [
            (
                "max_sessions_per_connection",
                self.max_sessions_per_connection as u64,
            ),
            (
                "max_channels_per_session",
                self.max_channels_per_session as u64,
            ),
            ("max_auth_attempts", self.max_auth_attempts as u64),
            ("auth_timeout_ms", self.auth_timeout_ms),
            ("window_size", u64::from(self.window_size)),
            ("channel_queue", self.channel_queue as u64),
            ("channel_buffer", self.channel_buffer as u64),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(SshConfigError {
                    key,
                    reason: "must be greater than 0",
                });
            }
        }
        if u64::from(self.x11_display_offset) + 6000 > u64::from(u16::MAX) {
            return Err(SshConfigError {
                key: "x11_display_offset",
                reason: "must leave a TCP port: at most 59535",
            });
        }
        if self.host_key.is_some() && !self.host_keys.is_empty() {
            return Err(SshConfigError {
                key: "host_keys",
                reason: "give host_key or host_keys, not both",
            });
        }
        // RFC 4253 §6.1: implementations must handle packets of 32768 bytes; much smaller
        // ones make OpenSSH fail, much bigger ones only cost memory.
        if !(1024..=256 * 1024).contains(&self.max_packet_size) {
            return Err(SshConfigError {
                key: "max_packet_size",
                reason: "must be between 1024 and 262144",
            });
        }
        if self.bridge_threads > crate::bridge::MAX_BRIDGE_THREADS {
            return Err(SshConfigError {
                key: "bridge_threads",
                reason: "must be at most 256",
            });
        }
        if !self.shell.is_absolute() {
            return Err(SshConfigError {
                key: "shell",
                reason: "must be an absolute path",
            });
        }
        if self
            .forward_socket_allow
            .iter()
            .any(|d| !d.is_absolute() || !is_plain_path(d))
        {
            return Err(SshConfigError {
                key: "forward_socket_allow",
                reason: "must be absolute directories without . or .. components",
            });
        }
        if self
            .subsystems
            .iter()
            .any(|(name, command)| name.is_empty() || command.trim().is_empty())
        {
            return Err(SshConfigError {
                key: "subsystems",
                reason: "every entry needs a name and a command",
            });
        }
        if self.env_allow.iter().any(|p| p.is_empty() || p == "*") {
            return Err(SshConfigError {
                key: "env_allow",
                reason: "patterns must be names or NAME_PREFIX*; \"*\" would allow LD_PRELOAD",
            });
        }
        Ok(())
    }

    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Whether a client may set environment variable `name`.
    pub fn env_allowed(&self, name: &str) -> bool {
        env_allowed(&self.env_allow, name)
    }

    /// Whether `tcpip-forward` may bind `address` (as the client sent it).
    pub fn bind_allowed(&self, address: &str) -> bool {
        self.forward_bind_allow.iter().any(|a| a == address)
    }

    /// Whether a Unix socket at `path` (as the client sent it) may be forwarded: an
    /// absolute path without `.` or `..` components, strictly beneath a directory of
    /// `forward_socket_allow`. The check is on the path as written; a symlink inside an
    /// allowed directory is followed by the kernel, which only the server's own user can
    /// place there, and that user's sessions can reach the target anyway.
    pub fn socket_allowed(&self, path: &str) -> bool {
        let path = Path::new(path);
        path.is_absolute()
            && is_plain_path(path)
            && self
                .forward_socket_allow
                .iter()
                .any(|dir| path.starts_with(dir) && path != dir)
    }
}

/// No `.` or `..` component (which `Path::starts_with` would take literally).
fn is_plain_path(path: &Path) -> bool {
    use std::path::Component;
    let text = path.as_os_str().as_encoded_bytes();
    // `Path::components` drops interior `.`, so look at the text as well
    !text
        .split(|b| *b == b'/')
        .any(|part| part == b"." || part == b"..")
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Matches `name` against allow-list patterns: an exact name, or a prefix followed by `*`.
pub fn env_allowed(patterns: &[String], name: &str) -> bool {
    !name.is_empty()
        && patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => !prefix.is_empty() && name.starts_with(prefix),
            None => p == name,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_allow_list_matches_names_and_prefixes() {
        let cfg = SshConfig::default();
        assert!(cfg.env_allowed("LANG"));
        assert!(cfg.env_allowed("LC_ALL"));
        assert!(cfg.env_allowed("LC_"));
        assert!(!cfg.env_allowed("LANGUAGE"), "exact names are exact");
        assert!(!cfg.env_allowed("LD_PRELOAD"));
        assert!(!cfg.env_allowed("PATH"));
        assert!(!cfg.env_allowed(""));
        assert!(!env_allowed(&[], "LANG"));
        assert!(!env_allowed(&["*".into()], "X"), "a bare * matches nothing");
    }

    #[test]
    fn section_parses_and_validates() {
        let cfg: SshConfig = toml::from_str("").expect("empty");
        assert_eq!(cfg, SshConfig::default());
        cfg.validate().expect("defaults are valid");
        let cfg: SshConfig = toml::from_str(
            "shell = \"/bin/bash\"\nenv_allow = [\"FOO\"]\nforward_bind_allow = [\"127.0.0.1\"]\n",
        )
        .expect("parses");
        assert!(cfg.env_allowed("FOO") && !cfg.env_allowed("LANG"));
        assert!(cfg.bind_allowed("127.0.0.1") && !cfg.bind_allowed("0.0.0.0"));
        // Unix sockets: refused by default; beneath a listed directory only
        assert!(!SshConfig::default().socket_allowed("/tmp/x.sock"));
        let cfg: SshConfig =
            toml::from_str("forward_socket_allow = [\"/run/fwd\"]\n").expect("parses");
        cfg.validate().expect("valid");
        assert!(cfg.socket_allowed("/run/fwd/a.sock"));
        assert!(cfg.socket_allowed("/run/fwd/sub/a.sock"));
        for refused in [
            "/run/fwd",
            "/run/fwd/",
            "/run/fwdx/a.sock",
            "/run/fwd/../x.sock",
            "/run/fwd/./a.sock",
            "run/fwd/a.sock",
            "/tmp/a.sock",
            "",
        ] {
            assert!(!cfg.socket_allowed(refused), "{refused}");
        }
        assert!(toml::from_str::<SshConfig>("shel = \"/bin/sh\"").is_err());
        let bad = |text: &str, key: &str| {
            let cfg: SshConfig = toml::from_str(text).expect("parses");
            let e = cfg.validate().expect_err(text);
            assert_eq!(e.key, key, "{e}");
        };
        bad("max_channels_per_session = 0", "max_channels_per_session");
        bad("forward_socket_allow = [\"run\"]", "forward_socket_allow");
        bad("subsystems = { netconf = \" \" }", "subsystems");
        bad(
            "forward_socket_allow = [\"/run/../etc\"]",
            "forward_socket_allow",
        );
        bad("max_packet_size = 10", "max_packet_size");
        bad("shell = \"sh\"", "shell");
        bad("env_allow = [\"*\"]", "env_allow");
        bad("bridge_threads = 1000", "bridge_threads");
    }
}
