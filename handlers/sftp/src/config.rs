//! The `[sftp]` section: where identities' trees live and every per-session limit, each a
//! named constant here with a key there.

use std::path::PathBuf;

use serde::Deserialize;

/// Directory (under the data directory) holding one tree per identity, when `sftp.root`
/// is not set.
pub const DEFAULT_ROOT_DIR: &str = "sftp";

/// Handles (open files and directories) one session may hold; `SSH_FXP_OPEN`/`OPENDIR`
/// beyond it fail with `SSH_FX_FAILURE`. OpenSSH's client uses 1-2 at a time (more in
/// recursive transfers, still one per file it is copying).
pub const DEFAULT_MAX_HANDLES: usize = 256;

/// Largest SFTP packet accepted (length field, excluding itself). A larger length ends
/// the session: the stream cannot be re-synchronised. OpenSSH's `sftp-server` uses 256 KiB.
pub const DEFAULT_MAX_PACKET: u32 = 256 * 1024;

/// Largest `SSH_FXP_READ` answered in full (longer ones are answered short, as the
/// protocol allows) and the size advertised in `limits@openssh.com`. Leaves room for the
/// `DATA` header inside `max_packet`.
pub const DEFAULT_MAX_READ: u32 = 255 * 1024;

/// Requests of one session being served at once; more wait in the stream (the session
/// stops reading). OpenSSH's client keeps up to 64 in flight (`-R`).
pub const DEFAULT_MAX_OUTSTANDING: usize = 128;

/// Bytes of request and reply payload (write data taken, read data being answered) one
/// session holds at once; past it the session stops reading requests until replies
/// drain. Bounds memory per session: about this plus one packet.
pub const DEFAULT_MAX_BYTES_IN_FLIGHT: usize = 16 * 1024 * 1024;

/// SFTP sessions (= QUIC streams) open at once on one `alknet/sftp` connection; more
/// are reset. The QUIC stream limit applies too.
pub const DEFAULT_MAX_SESSIONS_PER_CONNECTION: usize = 16;

/// How long an `alknet/sftp` session may take to send its `SSH_FXP_INIT` after opening
/// its stream, in ms; then the stream is reset. The `INIT` carries the token of a
/// connection without a client certificate, so until it arrives nobody is known: this
/// bounds how long an anonymous peer holds a session place for nothing.
pub const DEFAULT_INIT_TIMEOUT_MS: u64 = 10_000;

/// Entries per `SSH_FXP_NAME` reply to `READDIR`.
pub const READDIR_BATCH: usize = 128;

/// The `[sftp]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftpConfig {
    /// Directory holding one tree per identity (`ROOT/<identity>/`, created on first
    /// use). Default: `sftp/` in the data directory.
    pub root: Option<PathBuf>,
    pub max_handles: usize,
    pub max_packet: u32,
    pub max_read: u32,
    pub max_outstanding: usize,
    pub max_bytes_in_flight: usize,
    pub max_sessions_per_connection: usize,
    pub init_timeout_ms: u64,
}

impl Default for SftpConfig {
    fn default() -> Self {
        Self {
            root: None,
            max_handles: DEFAULT_MAX_HANDLES,
            max_packet: DEFAULT_MAX_PACKET,
            max_read: DEFAULT_MAX_READ,
            max_outstanding: DEFAULT_MAX_OUTSTANDING,
            max_bytes_in_flight: DEFAULT_MAX_BYTES_IN_FLIGHT,
            max_sessions_per_connection: DEFAULT_MAX_SESSIONS_PER_CONNECTION,
            init_timeout_ms: DEFAULT_INIT_TIMEOUT_MS,
        }
    }
}

/// A setting out of range.
#[derive(Debug, thiserror::Error)]
#[error("sftp.{key}: {why}")]
pub struct SftpConfigError {
    pub key: &'static str,
    pub why: &'static str,
}

impl SftpConfig {
    pub fn validate(&self) -> Result<(), SftpConfigError> {
        let err = |key, why| Err(SftpConfigError { key, why });
        if self.max_handles == 0 {
            return err("max_handles", "must be at least 1");
        }
        if self.max_sessions_per_connection == 0 {
            return err("max_sessions_per_connection", "must be at least 1");
        }
        if self.init_timeout_ms == 0 {
            return err("init_timeout_ms", "must be at least 1");
        }
        if self.max_outstanding == 0 {
            return err("max_outstanding", "must be at least 1");
        }
        if self.max_packet < 34 * 1024 || self.max_packet > 16 * 1024 * 1024 {
            return err("max_packet", "must be between 34 KiB and 16 MiB");
        }
        if self.max_read < 1024 || self.max_read > self.max_packet - 1024 {
            return err("max_read", "must be between 1 KiB and max_packet - 1 KiB");
        }
        if self.max_bytes_in_flight < self.max_packet as usize * 2 {
            return err("max_bytes_in_flight", "must be at least twice max_packet");
        }
        Ok(())
    }

    /// `init_timeout_ms` as a duration.
    pub fn init_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.init_timeout_ms)
    }

    /// `sftp.root`, or `sftp/` in `data_dir`.
    pub fn root_in(&self, data_dir: &std::path::Path) -> PathBuf {
        self.root
            .clone()
            .unwrap_or_else(|| data_dir.join(DEFAULT_ROOT_DIR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_keys_parse() {
        SftpConfig::default().validate().expect("defaults");
        let c: SftpConfig = toml::from_str("root = \"/srv/sftp\"\nmax_handles = 4\n").unwrap();
        assert_eq!(c.max_handles, 4);
        assert_eq!(c.root.as_deref(), Some(std::path::Path::new("/srv/sftp")));
        assert!(toml::from_str::<SftpConfig>("bogus = 1").is_err());
        let bad = SftpConfig {
            max_read: DEFAULT_MAX_PACKET,
            ..SftpConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("max_read"));
    }
}
