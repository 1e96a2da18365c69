//! The QUIC host key: one secret that the stateless-reset key, the address-token key
//! (Retry tokens) and the session-ticket keys (`tickets.rs`) are derived from, so that all
//! three outlive the process.
//!
//! quinn-proto takes the reset key when an endpoint is made and the token key with each
//! server config, and by default both are random. A server restarted with fresh random keys
//! cannot answer the old process's clients with a stateless reset they accept (the token
//! is an HMAC of the connection ID under the reset key): their packets get resets with the
//! wrong token, which RFC 9000 (10.3.1) tells them to ignore, and they wait out their idle
//! timeout. With a kept key the new process's reset carries the token the old one handed
//! out, and the client closes at once and reconnects. The token key is kept for the same
//! reason (a Retry token minted before a restart or a TLS reload still validates). This is
//! what nginx's `quic_host_key` is for.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::{hkdf, hmac};

use crate::secret_files;
use crate::tickets::HostKeyTicketer;

/// The file the host key is kept in, in the data directory (32 bytes, mode 0600).
pub const QUIC_HOST_KEY_FILE: &str = "quic_host_key";

/// Bytes of a host key.
pub const QUIC_HOST_KEY_LEN: usize = 32;

/// HKDF salt: names this use of the secret, so the same bytes used elsewhere give
/// unrelated keys.
const SALT: &[u8] = b"alknet quic host key v1";
const RESET_INFO: &[u8] = b"stateless reset";
const TOKEN_INFO: &[u8] = b"address token";
const TICKET_INFO: &[u8] = b"session tickets";

/// A QUIC host key (see the module documentation).
#[derive(Clone)]
pub struct QuicHostKey([u8; QUIC_HOST_KEY_LEN]);

impl std::fmt::Debug for QuicHostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuicHostKey(..)")
    }
}

/// Why a host key could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: a QUIC host key is {QUIC_HOST_KEY_LEN} bytes, this file has {len}")]
    Length { path: PathBuf, len: usize },
}

impl QuicHostKey {
    pub fn from_bytes(bytes: [u8; QUIC_HOST_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A new random key, from the kernel (`getrandom`).
    pub fn generate() -> Self {
        let mut bytes = [0u8; QUIC_HOST_KEY_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Self(bytes)
    }

    /// The key kept in `dir`'s [`QUIC_HOST_KEY_FILE`], generated and written there (mode
    /// 0600, atomically, under the data directory's generation lock) when missing; and
    /// whether it was generated now.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), HostKeyError> {
        let path = dir.join(QUIC_HOST_KEY_FILE);
        let io_error = |source| HostKeyError::Io {
            path: path.clone(),
            source,
        };
        secret_files::load_or_generate(
            dir,
            &[&path],
            || {
                secret_files::warn_if_open_to_others(&path, "QUIC host key");
                let bytes = std::fs::read(&path).map_err(io_error)?;
                let key: [u8; QUIC_HOST_KEY_LEN] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| HostKeyError::Length {
                            path: path.clone(),
                            len: bytes.len(),
                        })?;
                Ok(Self(key))
            },
            || {
                let key = Self::generate();
                secret_files::write_atomically(&path, &key.0, 0o600).map_err(io_error)?;
                Ok(key)
            },
            io_error,
        )
    }

    fn prk(&self) -> hkdf::Prk {
        hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&self.0)
    }

    /// The stateless-reset key (an HMAC-SHA256 key), for `EndpointConfig::new`.
    pub(crate) fn reset_key(&self) -> Arc<hmac::Key> {
        Arc::new(expand(&self.prk(), &[RESET_INFO], hmac::HMAC_SHA256))
    }

    /// The address-token key (an HKDF pseudo-random key), for `ServerConfig::new`.
    pub(crate) fn token_key(&self) -> Arc<hkdf::Prk> {
        Arc::new(expand(&self.prk(), &[TOKEN_INFO], hkdf::HKDF_SHA256))
    }

    /// The key that session tickets' period keys derive from (see `tickets.rs`).
    pub(crate) fn ticket_key(&self) -> hkdf::Prk {
        expand(&self.prk(), &[TICKET_INFO], hkdf::HKDF_SHA256)
    }

    /// The session-ticket sealer for tickets that live `lifetime`, under this key, as a
    /// server with the default client-certificate policy seals them.
    pub fn ticketer(&self, lifetime: std::time::Duration) -> Arc<HostKeyTicketer> {
        let scope = crate::tls::ClientAuth::default().ticket_scope();
        HostKeyTicketer::new(self.ticket_key(), lifetime, scope)
    }
}

/// `prk`'s HKDF-Expand output for `info` (the concatenation of its pieces), as a key of
/// type `K`. The lengths asked for (32 bytes: SHA-256's, AES-256's) are far below HKDF's
/// limit of 255 × 32, its only way to fail.
pub(crate) fn expand<L, K>(prk: &hkdf::Prk, info: &[&[u8]], len: L) -> K
where
    L: hkdf::KeyType,
    K: for<'a> From<hkdf::Okm<'a, L>>,
{
    K::from(
        prk.expand(info, len)
            .expect("HKDF-Expand of 32 bytes is within its limit"),
    )
}

/// The keys a server's endpoints and server configs take, derived once at start-up (from
/// the configured [`QuicHostKey`], or from a random one) and kept for the process's life,
/// so a TLS reload's new server config keeps the token key.
#[derive(Clone)]
pub(crate) struct EndpointKeys {
    pub reset: Arc<hmac::Key>,
    pub token: Arc<hkdf::Prk>,
    pub tickets: hkdf::Prk,
}

impl EndpointKeys {
    pub fn new(host_key: Option<&QuicHostKey>) -> Self {
        let random;
        let key = match host_key {
            Some(k) => k,
            None => {
                random = QuicHostKey::generate();
                &random
            }
        };
        Self {
            reset: key.reset_key(),
            token: key.token_key(),
            tickets: key.ticket_key(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(key: &hmac::Key) -> Vec<u8> {
        hmac::sign(key, b"a connection id").as_ref().to_vec()
    }

    #[test]
    fn the_same_host_key_gives_the_same_reset_key_and_another_does_not() {
        let a = QuicHostKey::from_bytes([7; QUIC_HOST_KEY_LEN]);
        let b = QuicHostKey::from_bytes([8; QUIC_HOST_KEY_LEN]);
        assert_eq!(tag(&a.reset_key()), tag(&a.clone().reset_key()));
        assert_ne!(tag(&a.reset_key()), tag(&b.reset_key()));
        // two random keys differ
        let (r1, r2) = (EndpointKeys::new(None), EndpointKeys::new(None));
        assert_ne!(tag(&r1.reset), tag(&r2.reset));
    }

    #[test]
    fn reset_and_token_keys_are_separate_derivations() {
        let k = QuicHostKey::from_bytes([1; QUIC_HOST_KEY_LEN]);
        // the token key, used as an HMAC key the same way, must not equal the reset key
        let token_as_mac: hmac::Key = expand(&k.prk(), &[TOKEN_INFO], hmac::HMAC_SHA256);
        assert_ne!(tag(&k.reset_key()), tag(&token_as_mac));
    }

    /// Keys derived from a host key must not change between releases: a node upgraded in
    /// place would otherwise send stateless resets its clients cannot recognise and refuse
    /// the address tokens it issued before. Values computed by the first release with the
    /// derivation (2026-12-06).
    #[test]
    fn derivations_are_the_same_in_every_release() {
        let k = QuicHostKey::from_bytes([0x42; QUIC_HOST_KEY_LEN]);
        assert_eq!(
            alknet_proto::hex::encode(&tag(&k.reset_key())),
            "9944058281093a2785c8630f3e91abdbba346540458a10a92c34a1a734f6822d"
        );
        let token: hmac::Key = expand(&k.token_key(), &[b"probe"], hmac::HMAC_SHA256);
        assert_eq!(
            alknet_proto::hex::encode(&tag(&token)),
            "f49eb7394623cb5ce00ebc258dfe9a4fe9268bdf7f7ac1b2062e22b6504f9905"
        );
    }

    #[test]
    fn a_key_is_generated_once_and_read_back_and_a_bad_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, made) = QuicHostKey::load_or_generate(dir.path()).expect("generate");
        assert!(made);
        let (again, made) = QuicHostKey::load_or_generate(dir.path()).expect("load");
        assert!(!made);
        assert_eq!(first.0, again.0);
        let path = dir.path().join(QUIC_HOST_KEY_FILE);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").expect("write");
        let err = QuicHostKey::load_or_generate(dir.path()).expect_err("5 bytes");
        assert!(err.to_string().contains("this file has 5"), "{err}");
    }
}
