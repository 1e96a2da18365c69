//! `SshAdapter`: the `ProtocolHandler` for `alknet/ssh`. Every bidirectional stream a
//! client opens is one SSH-2 session: the stream is bridged to the tokio runtime and
//! served there by `russh::server::run_stream`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alknet_runtime::{
    AuthContext, Connection, HandlerError, IdentityProvider, LocalBoxFuture, ProtocolHandler,
};
use russh::keys::PrivateKey;
use russh::{MethodKind, MethodSet, SshId};

use crate::auth::{openssh_fingerprint, AuthorizedKeysError, AuthorizedKeysProvider};
use crate::bridge::{serve_bridged_sessions, ByteStream, TokioBridge};
use crate::config::{SshConfig, SshConfigError};
use crate::hostkey::{load_host_key, load_or_generate_host_keys, HostKeyError};
use crate::metrics::{AuthRefusal, SshMetrics};
use crate::revoked::{RevokedKeys, RevokedKeysError};
use crate::session::SshSession;
use crate::subsystem::{Registered, Subsystem, Subsystems};
use crate::watched::{WatchedFile, WatchedFileError};

/// The ALPN this handler serves.
pub const ALPN: &[u8] = b"alknet/ssh";

/// After telling a client that failed to authenticate in time to go away, how long it has
/// to close before its stream is reset.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

/// Errors building the adapter.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(transparent)]
    Config(#[from] SshConfigError),
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    #[error("ssh.authorized_keys: {0}")]
    AuthorizedKeys(#[from] AuthorizedKeysError),
    #[error("ssh.host_certificate: {0}")]
    HostCertificate(String),
    #[error("ssh.host_keys: {0}")]
    HostKeys(String),
    #[error("ssh.revoked_keys: {0}")]
    RevokedKeys(#[from] WatchedFileError<RevokedKeysError>),
}

/// The `[ssh] revoked_keys` file, kept parsed.
pub(crate) type RevokedKeysFile = WatchedFile<RevokedKeys, RevokedKeysError>;

/// What every session of the adapter shares.
pub(crate) struct Shared {
    pub config: SshConfig,
    pub russh: Arc<russh::server::Config>,
    /// Asked after the engine's provider (the `authorized_keys` file).
    pub extra_provider: Option<Arc<dyn IdentityProvider>>,
    /// The `authorized_keys` file, for its `cert-authority` lines (user certificates).
    pub authorities: Option<Arc<AuthorizedKeysProvider>>,
    /// `[ssh] revoked_keys`.
    pub revoked: Option<Arc<RevokedKeysFile>>,
    pub bridge_threads: usize,
    /// Subsystems served, by name (`sftp`, plugged in by the binary).
    pub subsystems: Subsystems,
    /// Sessions, channels, requests and refusals, for `/metrics`.
    pub metrics: SshMetrics,
}

/// The `alknet/ssh` handler.
#[derive(Clone)]
pub struct SshAdapter {
    shared: Arc<Shared>,
    /// The host keys' algorithms and fingerprints, in the order served.
    host_fingerprints: Vec<(String, String)>,
}

impl std::fmt::Debug for SshAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshAdapter")
            .field("host_keys", &self.host_fingerprints)
            .field("config", &self.shared.config)
            .finish()
    }
}

/// Ciphers offered, in order: russh's defaults plus `aes128-gcm@openssh.com`, which russh
/// implements but does not offer (OpenSSH's client then fails with `-c aes128-gcm@…`).
/// The client's order decides (OpenSSH prefers chacha20-poly1305, then the AES modes).
pub const SSH_CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// Reads `[ssh] host_certificate` and checks it can be presented: an OpenSSH host
/// certificate of one of `host_keys`. One outside its validity window is loaded all the
/// same (the clock may be what is wrong) and said so in the log, since clients will refuse
/// it.
fn load_host_certificate(
    path: &std::path::Path,
    host_keys: &[PrivateKey],
) -> Result<russh::keys::Certificate, SshError> {
    use russh::keys::ssh_key::certificate::CertType;
    let bad = |reason: String| SshError::HostCertificate(format!("{}: {reason}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let cert = russh::keys::Certificate::from_openssh(text.trim())
        .map_err(|e| bad(format!("not an OpenSSH certificate: {e}")))?;
    if cert.cert_type() != CertType::Host {
        return Err(bad(
            "a user certificate, not a host certificate (ssh-keygen -h)".into(),
        ));
    }
    if !host_keys
        .iter()
        .any(|k| cert.public_key() == k.public_key().key_data())
    {
        let ours: Vec<String> = host_keys
            .iter()
            .map(|k| openssh_fingerprint(k.public_key()))
            .collect();
        return Err(bad(format!(
            "certifies another key, not a host key ({})",
            ours.join(", ")
        )));
    }
    let now = std::time::SystemTime::now();
    let valid = cert.valid_after_time().is_none_or(|t| t <= now)
        && cert.valid_before_time().is_none_or(|t| now < t);
    if !valid {
        tracing::warn!(path = %path.display(), "ssh host certificate is outside its validity window: clients will refuse it");
    }
    tracing::info!(
        key_id = cert.key_id(),
        principals = ?cert.valid_principals(),
        ca = %cert.signature_key().fingerprint(russh::keys::HashAlg::Sha256),
        "ssh host certificate loaded"
    );
    Ok(cert)
}

impl SshAdapter {
    /// An adapter with this host key and `[ssh]` settings; `workers` (the QUIC worker
    /// count) sizes the bridge runtime when `bridge_threads` is 0.
    pub fn new(host_key: PrivateKey, config: SshConfig, workers: usize) -> Result<Self, SshError> {
        Self::with_host_keys(vec![host_key], config, workers)
    }

    /// As [`Self::new`] with several host keys, in the order a client's host key
    /// algorithms are matched against: the first key of each algorithm serves key
    /// exchange, later ones of the same algorithm are only announced to the client after
    /// authentication (as sshd does with all of its keys), which is how a key is rotated.
    pub fn with_host_keys(
        host_keys: Vec<PrivateKey>,
        config: SshConfig,
        workers: usize,
    ) -> Result<Self, SshError> {
        config.validate()?;
        if host_keys.is_empty() {
            return Err(SshError::HostKeys("no host key".into()));
        }
        for (i, k) in host_keys.iter().enumerate() {
            if host_keys[..i]
                .iter()
                .any(|o| o.public_key().key_data() == k.public_key().key_data())
            {
                return Err(SshError::HostKeys(format!(
                    "the {} key {} is listed twice",
                    k.algorithm(),
                    openssh_fingerprint(k.public_key())
                )));
            }
        }
        let revoked = match &config.revoked_keys {
            Some(path) => {
                let file = WatchedFile::load(path, "revoked keys", RevokedKeys::parse)?;
                let entries = file.current().map_or(0, |r| r.len());
                tracing::info!(path = %path.display(), entries, "ssh: revoked keys loaded");
                Some(Arc::new(file))
            }
            None => None,
        };
        let certificates = match &config.host_certificate {
            Some(path) => vec![load_host_certificate(path, &host_keys)?],
            None => Vec::new(),
        };
        let host_fingerprints = host_keys
            .iter()
            .map(|k| {
                let algorithm = k.algorithm().to_string();
                (algorithm, openssh_fingerprint(k.public_key()))
            })
            .collect();
        let russh = russh::server::Config {
            server_id: SshId::Standard(
                format!("SSH-2.0-alknet_{}", env!("CARGO_PKG_VERSION")).into(),
            ),
            // public keys only: password and keyboard-interactive are never offered
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(config.auth_rejection_delay_ms),
            // the first "none" probe reveals nothing; answer it at once
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: host_keys,
            certificates,
            window_size: config.window_size,
            maximum_packet_size: config.max_packet_size,
            channel_buffer_size: config.channel_queue,
            max_auth_attempts: config.max_auth_attempts,
            // dead peers are found by QUIC's idle timeout; an idle shell is not dead, and
            // the unauthenticated are bounded by auth_timeout_ms (see serve_session)
            inactivity_timeout: None,
            keepalive_interval: None,
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(SSH_CIPHERS),
                ..russh::Preferred::DEFAULT
            },
            ..Default::default()
        };
        let bridge_threads = if config.bridge_threads == 0 {
            workers.max(1)
        } else {
            config.bridge_threads
        };
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                russh: Arc::new(russh),
                extra_provider: None,
                authorities: None,
                revoked,
                bridge_threads,
                subsystems: Subsystems::default(),
                metrics: SshMetrics::default(),
            }),
            host_fingerprints,
        })
    }

    /// As the binary builds it: the host keys of `ssh.host_keys` or `ssh.host_key`, else
    /// the data directory's ed25519 and ECDSA keys, generated on first start;
    /// `ssh.authorized_keys` loaded. Also returns whether a host key was generated now.
    pub fn load(
        config: SshConfig,
        data_dir: &Path,
        workers: usize,
    ) -> Result<(Self, bool), SshError> {
        config.validate()?;
        let (keys, generated) = match (&config.host_key, config.host_keys.as_slice()) {
            (Some(path), _) => (vec![load_host_key(path)?], false),
            (None, []) => load_or_generate_host_keys(data_dir)?,
            (None, paths) => (
                paths
                    .iter()
                    .map(|p| load_host_key(p))
                    .collect::<Result<_, _>>()?,
                false,
            ),
        };
        Ok((Self::load_with_host_keys(config, keys, workers)?, generated))
    }

    /// As [`Self::load`], with a host key the caller already holds (e.g. derived from
    /// the key vault) instead of `ssh.host_key` or the data directory's.
    pub fn load_with_host_key(
        config: SshConfig,
        host_key: PrivateKey,
        workers: usize,
    ) -> Result<Self, SshError> {
        Self::load_with_host_keys(config, vec![host_key], workers)
    }

    fn load_with_host_keys(
        config: SshConfig,
        host_keys: Vec<PrivateKey>,
        workers: usize,
    ) -> Result<Self, SshError> {
        let extra = match &config.authorized_keys {
            Some(path) => Some(Arc::new(AuthorizedKeysProvider::load(path)?)),
            None => None,
        };
        let mut adapter = Self::with_host_keys(host_keys, config, workers)?;
        if let Some(p) = extra {
            adapter = adapter.with_authorized_keys(p);
        }
        Ok(adapter)
    }

    /// Resolves keys through an `authorized_keys` file after the engine's provider, and
    /// trusts the user certificates its `cert-authority` lines sign.
    pub fn with_authorized_keys(self, file: Arc<AuthorizedKeysProvider>) -> Self {
        let mut adapter = self.with_extra_provider(file.clone());
        let shared = Shared {
            config: adapter.shared.config.clone(),
            russh: adapter.shared.russh.clone(),
            extra_provider: adapter.shared.extra_provider.clone(),
            authorities: Some(file),
            revoked: adapter.shared.revoked.clone(),
            bridge_threads: adapter.shared.bridge_threads,
            subsystems: adapter.shared.subsystems.clone(),
            metrics: SshMetrics::default(),
        };
        adapter.shared = Arc::new(shared);
        adapter
    }

    /// Also resolves keys through `provider`, after the engine's (e.g. an
    /// [`AuthorizedKeysProvider`]).
    pub fn with_extra_provider(mut self, provider: Arc<dyn IdentityProvider>) -> Self {
        let shared = Shared {
            config: self.shared.config.clone(),
            russh: self.shared.russh.clone(),
            extra_provider: Some(provider),
            authorities: self.shared.authorities.clone(),
            revoked: self.shared.revoked.clone(),
            bridge_threads: self.shared.bridge_threads,
            subsystems: self.shared.subsystems.clone(),
            // builders run before the adapter serves: nothing counted yet
            metrics: SshMetrics::default(),
        };
        self.shared = Arc::new(shared);
        self
    }

    /// Serves `subsystem` for `subsystem` requests naming `name`, to identities holding
    /// `scope` (e.g. `sftp` gated by [`crate::policy::SCOPE_SFTP`]). Unregistered names
    /// are refused.
    pub fn with_subsystem(
        mut self,
        name: &str,
        scope: &str,
        subsystem: Arc<dyn Subsystem>,
    ) -> Self {
        let mut subsystems = self.shared.subsystems.clone();
        subsystems.0.insert(
            name.to_string(),
            Registered {
                scope: scope.to_string(),
                subsystem,
            },
        );
        let shared = Shared {
            config: self.shared.config.clone(),
            russh: self.shared.russh.clone(),
            extra_provider: self.shared.extra_provider.clone(),
            authorities: self.shared.authorities.clone(),
            revoked: self.shared.revoked.clone(),
            bridge_threads: self.shared.bridge_threads,
            subsystems,
            metrics: SshMetrics::default(),
        };
        self.shared = Arc::new(shared);
        self
    }

    /// The first host key's OpenSSH fingerprint (`SHA256:…`), as `ssh` shows it.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_fingerprints[0].1
    }

    /// Every host key's algorithm and OpenSSH fingerprint, in the order served.
    pub fn host_key_fingerprints(&self) -> &[(String, String)] {
        &self.host_fingerprints
    }

    /// The russh server configuration every session runs with (host keys, algorithms,
    /// limits): what the `ssh_server_preauth` fuzz target puts russh's server under.
    pub fn russh_config(&self) -> Arc<russh::server::Config> {
        self.shared.russh.clone()
    }

    pub fn config(&self) -> &SshConfig {
        &self.shared.config
    }
}

impl ProtocolHandler for SshAdapter {
    fn alpn(&self) -> &[u8] {
        ALPN
    }

    fn metrics(&self) -> Vec<alknet_runtime::HandlerMetric> {
        self.shared.metrics.snapshot()
    }

    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let rt = TokioBridge::start(shared.bridge_threads)
                .map_err(|e| HandlerError::Other(Box::new(e)))?;
            let max = shared.config.max_sessions_per_connection;
            let placement = shared.config.session_placement;
            serve_bridged_sessions(&conn, &rt, placement, max, "ssh", |bytes| {
                serve_session(shared.clone(), bytes, auth.clone())
            })
            .await;
            // the peer closing the connection is how SSH over QUIC normally ends
            Ok(())
        })
    }
}

/// Counts the session closed however `serve_session` returns.
struct SessionClosed<'a>(&'a SshMetrics);

impl Drop for SessionClosed<'_> {
    fn drop(&mut self) {
        self.0.session_closed();
    }
}

/// Runs one SSH session (where `ssh.session_placement` puts it). A session not authenticated within
/// `auth_timeout_ms` of its stream opening is disconnected, then reset.
async fn serve_session(shared: Arc<Shared>, mut stream: ByteStream, auth: AuthContext) {
    // a peer that ended its side cleanly (a probe that sent its banner, a client giving
    // up) gets what was already written, then FIN: russh ends such a session with an
    // error, and a reset would make QUIC discard our banner unread
    stream.finish_after_peer_end();
    let deadline = tokio::time::Instant::now() + shared.config.auth_timeout();
    shared.metrics.session_started();
    let _closed = SessionClosed(&shared.metrics);
    let closer = stream.closer();
    let authenticated = Arc::new(AtomicBool::new(false));
    let handler = SshSession::new(
        shared.clone(),
        auth.remote,
        auth.local,
        auth.provider.clone(),
        authenticated.clone(),
    );
    let started = tokio::time::timeout_at(
        deadline,
        russh::server::run_stream(shared.russh.clone(), stream, handler),
    )
    .await;
    let running = match started {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(remote = %auth.remote, "ssh: handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(remote = %auth.remote, "ssh: no version exchange in time");
            return;
        }
    };
    let handle = running.handle();
    let remote = auth.remote;
    let watchdog_shared = shared.clone();
    let watchdog = tokio::spawn(async move {
        tokio::time::sleep_until(deadline).await;
        if authenticated.load(Ordering::Acquire) {
            return;
        }
        tracing::info!(remote = %remote, "ssh: not authenticated in time; disconnecting");
        watchdog_shared.metrics.auth_refused(AuthRefusal::Timeout);
        let _ = handle
            .disconnect(
                russh::Disconnect::ByApplication,
                "authentication timeout".into(),
                String::new(),
            )
            .await;
        tokio::time::sleep(DISCONNECT_GRACE).await;
        closer.abort();
    });
    match running.await {
        Ok(()) => tracing::debug!(remote = %auth.remote, "ssh: session ended"),
        Err(e) => tracing::debug!(remote = %auth.remote, "ssh: session ended: {e}"),
    }
    watchdog.abort();
}
