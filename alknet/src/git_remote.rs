//! `git-remote-alknet`: the git remote helper for `alknet://HOST:PORT/path/repo.git` URLs
//! (`Documentation/gitremote-helpers.adoc`). It answers `capabilities` with `connect`;
//! on `connect git-upload-pack` (or `git-receive-pack`) it opens an `alknet/git` stream,
//! sends the git-daemon-style request line, answers git with an empty line and then
//! pipes git's stdin and stdout through the stream, so git speaks its ordinary protocol
//! to the server: v2 for fetches unless `protocol.version` says otherwise, v0 for pushes
//! (git takes the version from the server's first line).
//!
//! Trust and identity, each from the environment, else the remote's git config
//! (`remote.<name>.alknetFingerprint`, …), else `alknet.*`:
//!
//! | environment | git config | meaning |
//! | --- | --- | --- |
//! | `ALKNET_FINGERPRINT` | `alknet.fingerprint` | SHA-256 of the server certificate |
//! | | `alknet.insecure` | trust any server certificate |
//! | | `alknet.ca` | PEM CA certificates to trust |
//! | | `alknet.cert`, `alknet.key` | client certificate and key (PEM) |
//! | `ALKNET_TOKEN` | `alknet.token` | bearer token, sent in the request line |
//! | `ALKNET_TRANSPORT` | `alknet.transport` | `quic` (default), `tcp` or `webtransport` |
//! | `ALKNET_QUIC_VERSION` | `alknet.quicVersion` | `v1` (default) or `v2` |
//!
//! With none of the trust settings, the server certificate must chain to the web PKI.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use alknet_git::{encode_request, Service, ALPN};
use alknet_runtime::{Bytes, Fingerprint};

use crate::connect::{pipe_stdio, ServerArgs, Transport};

/// The URL scheme git maps to this helper.
const SCHEME: &str = "alknet://";

/// Port of `alknet://HOST/…` URLs without one (the server's default).
const DEFAULT_PORT: u16 = 4433;

/// Longest command line accepted from git.
const MAX_COMMAND_LINE: usize = 4096;

/// An `alknet://` URL: where to connect and which repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlknetUrl {
    /// `HOST:PORT` (IPv6 hosts in brackets).
    pub target: String,
    /// The host alone, for the request line's `host=`.
    pub host: String,
    /// The repository path, starting with `/`.
    pub path: String,
}

/// Parses `alknet://HOST[:PORT]/path`.
pub fn parse_url(url: &str) -> Result<AlknetUrl, String> {
    let rest = url
        .strip_prefix(SCHEME)
        .ok_or_else(|| format!("{url}: not an {SCHEME} URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => return Err(format!("{url}: no repository path")),
    };
    if path.len() < 2 {
        return Err(format!("{url}: no repository path"));
    }
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url}: expected HOST:PORT (no user part)"));
    }
    let (host, has_port) = if let Some(stripped) = authority.strip_prefix('[') {
        let end = stripped
            .find(']')
            .ok_or_else(|| format!("{url}: unclosed '['"))?;
        let after = &stripped[end + 1..];
        (stripped[..end].to_string(), after.starts_with(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) => (h.to_string(), true),
            None => (authority.to_string(), false),
        }
    };
    let target = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{DEFAULT_PORT}")
    };
    Ok(AlknetUrl {
        target,
        host,
        path: path.to_string(),
    })
}

/// git's configuration as `git config --list -z` prints it: `(key, value)` in order,
/// `None` for a key written without `=` (a boolean true). Section and variable names
/// come lowercased; a subsection (the remote's name) as written.
type ConfigList = Vec<(String, Option<String>)>;

/// Reads git's configuration (every file git would read, and `-c` options through
/// `GIT_CONFIG_PARAMETERS`) with one `git config` run: a run per key cost a process start
/// each, several per fetch.
fn read_git_config() -> ConfigList {
    let out = match std::process::Command::new("git")
        .args(["config", "--list", "-z"])
        .stderr(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => out.stdout,
        _ => return Vec::new(),
    };
    parse_config_list(&out)
}

fn parse_config_list(out: &[u8]) -> ConfigList {
    out.split(|b| *b == 0)
        .filter(|record| !record.is_empty())
        .map(|record| {
            let text = String::from_utf8_lossy(record);
            match text.split_once('\n') {
                Some((key, value)) => (key.to_string(), Some(value.to_string())),
                None => (text.to_string(), None),
            }
        })
        .collect()
}

/// A git boolean as `git config --type=bool` canonicalizes it.
fn git_bool(value: Option<&str>) -> Option<bool> {
    let Some(value) = value else {
        return Some(true);
    };
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" | "" => Some(false),
        n => n.parse::<i64>().ok().map(|n| n != 0),
    }
}

/// One setting: the environment variable, else `remote.<remote>.alknet<Key>`, else
/// `alknet.<key>` (the last value of a key, as `git config --get` takes it).
struct Settings {
    remote: Option<String>,
    config: std::cell::OnceCell<ConfigList>,
}

impl Settings {
    fn new(remote: Option<String>) -> Self {
        Self {
            remote,
            config: std::cell::OnceCell::new(),
        }
    }

    /// The last value of `key` (whose section and variable are lowercase already).
    fn git_config(&self, key: &str, bool_type: bool) -> Option<String> {
        let config = self.config.get_or_init(read_git_config);
        let (_, value) = config.iter().rev().find(|(k, _)| k == key)?;
        if bool_type {
            return git_bool(value.as_deref()).map(|b| b.to_string());
        }
        value.clone().filter(|v| !v.is_empty())
    }

    fn get(&self, env: Option<&str>, key: &str, bool_type: bool) -> Option<String> {
        if let Some(v) = env
            .and_then(|e| std::env::var(e).ok())
            .filter(|v| !v.is_empty())
        {
            return Some(v);
        }
        let key = key.to_ascii_lowercase();
        if let Some(remote) = &self.remote {
            if let Some(v) = self.git_config(&format!("remote.{remote}.alknet{key}"), bool_type) {
                return Some(v);
            }
        }
        self.git_config(&format!("alknet.{key}"), bool_type)
    }
}

fn server_args(url: &AlknetUrl, settings: &Settings) -> Result<ServerArgs, String> {
    let fingerprint = settings
        .get(Some("ALKNET_FINGERPRINT"), "fingerprint", false)
        .map(|f| {
            f.parse::<Fingerprint>()
                .map_err(|e| format!("alknet.fingerprint: {e}"))
        })
        .transpose()?;
    let insecure =
        fingerprint.is_none() && settings.get(None, "insecure", true).as_deref() == Some("true");
    let path = |key: &str| settings.get(None, key, false).map(PathBuf::from);
    let (cert, key) = (path("cert"), path("key"));
    if cert.is_some() != key.is_some() {
        return Err("alknet.cert and alknet.key must be set together".into());
    }
    Ok(ServerArgs {
        fingerprint,
        insecure,
        ca: if fingerprint.is_none() && !insecure {
            path("ca")
        } else {
            None
        },
        cert,
        key,
        server_name: None,
        transport: settings
            .get(Some("ALKNET_TRANSPORT"), "transport", false)
            .map(|t| {
                t.parse::<Transport>()
                    .map_err(|e| format!("alknet.transport: {e}"))
            })
            .transpose()?
            .unwrap_or_default(),
        fallback_delay_ms: crate::connect::FALLBACK_DELAY.as_millis() as u64,
        connect_timeout_ms: 0,
        quic_version: settings
            .get(Some("ALKNET_QUIC_VERSION"), "quicVersion", false)
            .map(|v| {
                v.parse::<alknet_runtime::QuicVersion>()
                    .map_err(|e| format!("alknet.quicVersion: {e}"))
            })
            .transpose()?
            .unwrap_or(alknet_runtime::QuicVersion::V1),
        target: url.target.clone(),
    })
}

/// The protocol version to ask the server for. git tells remote helpers nothing about it
/// (no `GIT_PROTOCOL` for them), so the helper reads `protocol.version` as git does
/// (`-c protocol.version=0` reaches it through the environment); unset means 2, git's
/// default since 2.26.
fn requested_version(service: Service, settings: &Settings) -> Option<u8> {
    let configured = std::env::var("GIT_PROTOCOL")
        .ok()
        .and_then(|p| {
            p.split(':')
                .find_map(|kv| kv.strip_prefix("version=").map(str::to_string))
        })
        .or_else(|| settings.git_config("protocol.version", false));
    match (configured.as_deref().unwrap_or("2"), service) {
        // git pushes with v0/v1 only; v2 is for fetches
        ("2", Service::UploadPack) => Some(2),
        ("1", _) => Some(1),
        _ => None,
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("git-remote-alknet: {msg}");
    ExitCode::FAILURE
}

/// Reads one command line from git into `line` (cleared first), byte by byte: nothing
/// past its newline is taken from stdin, which after `connect` carries the git protocol
/// and is read by the stream task's own io_uring reads (a buffered reader would keep
/// what it read ahead to itself). Commands are a few dozen bytes, two of them per run.
/// Returns the bytes read, 0 at the end of stdin.
fn read_command(stdin: &mut impl Read, line: &mut Vec<u8>) -> std::io::Result<usize> {
    line.clear();
    let mut byte = [0u8; 1];
    while line.len() < MAX_COMMAND_LINE {
        match stdin.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(line.len())
}

/// The helper's `main`: `git-remote-alknet REMOTE [URL]`.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (remote, url) = match args.as_slice() {
        [_, remote, url] => (remote.clone(), url.clone()),
        [_, remote] => (remote.clone(), remote.clone()),
        _ => return fail("usage: git-remote-alknet REMOTE [URL] (run by git)"),
    };
    let url = match parse_url(&url) {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    // git passes the URL as the remote's name when there is no named remote
    let settings = Settings::new((!remote.contains("://")).then_some(remote));
    let mut stdin = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => return fail(format!("stdin: {e}")),
    };
    let mut stdout = std::io::stdout();
    let mut line = Vec::new();
    loop {
        match read_command(&mut stdin, &mut line) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) => return fail(format!("reading commands: {e}")),
        }
        let Ok(line) = std::str::from_utf8(&line) else {
            return fail("a command that is not UTF-8");
        };
        let command = line.trim_end_matches('\n');
        if command.is_empty() {
            return ExitCode::SUCCESS;
        }
        if command == "capabilities" {
            if stdout
                .write_all(b"connect\n\n")
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            continue;
        }
        let Some(service) = command.strip_prefix("connect ") else {
            return fail(format!("unsupported command {command:?}"));
        };
        let Some(service) = Service::from_name(service.as_bytes()) else {
            return fail(format!("unsupported service {service:?}"));
        };
        let server = match server_args(&url, &settings) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let token = settings.get(Some("ALKNET_TOKEN"), "token", false);
        let dial = match server.resolve(ALPN) {
            // over WebTransport the session runs as the token's identity too
            Ok(d) => crate::connect::Dial {
                token: token.clone(),
                ..d
            },
            Err(e) => return fail(e),
        };
        let request = encode_request(
            service,
            &url.path,
            Some(&url.host),
            requested_version(service, &settings),
            token.as_deref(),
        );
        return match pipe_stdio(
            dial,
            Some(Bytes::from(request)),
            Some(Bytes::from_static(b"\n")),
            None,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("alknet://127.0.0.1:4500/team/app.git").expect("ok");
        assert_eq!(u.target, "127.0.0.1:4500");
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.path, "/team/app.git");
        let u = parse_url("alknet://[::1]:4500/a.git").expect("ok");
        assert_eq!((u.target.as_str(), u.host.as_str()), ("[::1]:4500", "::1"));
        let u = parse_url("alknet://example.org/a.git").expect("ok");
        assert_eq!(u.target, "example.org:4433");
        assert!(parse_url("alknet://h:1").is_err());
        assert!(parse_url("alknet://h:1/").is_err());
        assert!(parse_url("alknet://u@h:1/a").is_err());
        assert!(parse_url("git://h/a").is_err());
    }

    #[test]
    fn commands_are_read_to_their_newline_and_no_further() {
        let mut input =
            std::io::Cursor::new(b"capabilities\nconnect git-upload-pack\n\x00PACK".to_vec());
        let mut line = Vec::new();
        assert_eq!(read_command(&mut input, &mut line).expect("read"), 13);
        assert_eq!(line, b"capabilities\n");
        read_command(&mut input, &mut line).expect("read");
        assert_eq!(line, b"connect git-upload-pack\n");
        // what follows belongs to the stream, untouched
        let mut rest = Vec::new();
        input.read_to_end(&mut rest).expect("rest");
        assert_eq!(rest, b"\x00PACK");
        // a line without its end is given as it is; then the end of input
        let mut input = std::io::Cursor::new(b"connect".to_vec());
        assert_eq!(read_command(&mut input, &mut line).expect("read"), 7);
        assert_eq!(read_command(&mut input, &mut line).expect("read"), 0);
        // no line longer than MAX_COMMAND_LINE is taken
        let mut input = std::io::Cursor::new(vec![b'a'; MAX_COMMAND_LINE + 10]);
        assert_eq!(
            read_command(&mut input, &mut line).expect("read"),
            MAX_COMMAND_LINE
        );
    }

    #[test]
    fn config_list() {
        let list = parse_config_list(
            b"alknet.token\nfirst\0remote.Up.alknetfingerprint\nab\0alknet.insecure\0alknet.token\nlast\0alknet.cert\n\0",
        );
        let settings = Settings::new(Some("Up".into()));
        let _ = settings.config.set(list);
        assert_eq!(settings.get(None, "token", false).as_deref(), Some("last"));
        assert_eq!(
            settings.get(None, "fingerprint", false).as_deref(),
            Some("ab")
        );
        assert_eq!(
            settings.get(None, "insecure", true).as_deref(),
            Some("true")
        );
        assert_eq!(settings.get(None, "cert", false), None);
        assert_eq!(settings.get(None, "ca", false), None);
        assert_eq!(git_bool(Some("Off")), Some(false));
        assert_eq!(git_bool(Some("2")), Some(true));
        assert_eq!(git_bool(Some("maybe")), None);
    }
}
