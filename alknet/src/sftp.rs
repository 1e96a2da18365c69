//! SFTP's two fronts, wired here because they join two handler crates (which never
//! depend on each other): the `alknet/sftp` ALPN, whose QUIC streams are served on the
//! worker that owns the connection, and the `sftp` subsystem plugged into `alknet/ssh`
//! through its subsystem hook (where its SSH session runs: on the worker by default, in
//! the SSH bridge runtime's context; see `alknet_ssh::bridge::SessionPlacement`).

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;

use alknet_runtime::rt::spawn_guarded;
use alknet_runtime::{
    AuthContext, Connection, HandlerError, Identity, LocalBoxFuture, ProtocolHandler, VarInt,
};
use alknet_sftp::SftpConfig;
use alknet_ssh::bridge::TokioBridge;
use alknet_ssh::{Subsystem, SubsystemStream};

/// The ALPN of raw SFTP sessions.
pub const ALPN: &[u8] = b"alknet/sftp";

/// Application error code closing an `alknet/sftp` connection whose identity may not use
/// SFTP (no client certificate known, or neither `sftp:read` nor `sftp:write`).
pub const CLOSE_NOT_ALLOWED: u32 = 0x10;

/// What both fronts share: the identities' parent directory and the limits.
#[derive(Debug, Clone)]
pub struct SftpService {
    root: PathBuf,
    config: SftpConfig,
    bridge_threads: usize,
}

impl SftpService {
    pub fn new(root: PathBuf, config: SftpConfig, bridge_threads: usize) -> Self {
        Self {
            root,
            config,
            bridge_threads,
        }
    }

    /// One session for `identity` on `stream`, to its end. A clean end (the client ended
    /// its side, every request answered) finishes the stream; anything else drops it,
    /// which resets it. Returns the exit status of the session, as OpenSSH's
    /// `sftp-server` exits: 0 for a clean end, 1 otherwise.
    async fn run<S>(&self, identity: Identity, stream: S) -> u32
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let server = match alknet_sftp::session_for(&identity, &self.root, &self.config) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("sftp: {e}");
                return 1;
            }
        };
        tracing::info!(identity = %identity.name, read = server.grants().read, write = server.grants().write, "sftp: session started");
        match alknet_sftp::serve(stream, server, self.config.clone()).await {
            Ok(()) => {
                tracing::debug!(identity = %identity.name, "sftp: session ended");
                0
            }
            Err(e) => {
                tracing::info!(identity = %identity.name, "sftp: session ended: {e}");
                1
            }
        }
    }
}

impl Subsystem for SftpService {
    fn start(
        &self,
        identity: &Identity,
        stream: SubsystemStream,
    ) -> Result<futures_util::future::BoxFuture<'static, u32>, String> {
        if !alknet_sftp::Grants::of(identity).any() {
            return Err(format!(
                "identity {:?} has neither {} nor {}",
                identity.name,
                alknet_sftp::SCOPE_READ,
                alknet_sftp::SCOPE_WRITE
            ));
        }
        let this = self.clone();
        let identity = identity.clone();
        Ok(Box::pin(async move { this.run(identity, stream).await }))
    }
}

/// The `alknet/sftp` handler: each bidirectional stream is one raw SFTP session of the
/// connection's identity (its client certificate), served on the worker that owns the
/// connection ([`alknet_sftp::serve_on_worker`]: file reads and writes through monoio).
/// At most `sftp.max_sessions_per_connection` at once; a stream beyond is reset.
#[derive(Debug, Clone)]
pub struct SftpAlpn(pub SftpService);

impl ProtocolHandler for SftpAlpn {
    fn alpn(&self) -> &[u8] {
        ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        let service = self.0.clone();
        Box::pin(async move {
            let identity = match auth.identity.clone() {
                Some(i) if alknet_sftp::Grants::of(&i).any() => i,
                other => {
                    tracing::warn!(
                        remote = %auth.remote,
                        identity = other.as_ref().map_or("-", |i| i.name.as_str()),
                        "sftp: no session: needs a known client certificate with sftp:read or sftp:write"
                    );
                    conn.close(VarInt::from_u32(CLOSE_NOT_ALLOWED), b"sftp: not allowed");
                    return Ok(());
                }
            };
            // requests that may take long (copy-data, fsync) leave the worker for the
            // bridge runtime's blocking threads
            let offload = TokioBridge::start(service.bridge_threads)
                .map_err(|e| HandlerError::Other(Box::new(e)))?;
            let max = service.config.max_sessions_per_connection;
            let open = Rc::new(Cell::new(0usize));
            while let Ok(stream) = conn.accept_bi().await {
                if open.get() >= max {
                    tracing::warn!(
                        remote = %conn.remote_address(),
                        "sftp: session limit ({max}) reached; stream refused"
                    );
                    let (mut send, mut recv) = stream.split();
                    let _ = send.reset(VarInt::from_u32(alknet_sftp::worker::SESSION_ABORT_CODE));
                    let _ = recv.stop(VarInt::from_u32(alknet_sftp::worker::SESSION_ABORT_CODE));
                    continue;
                }
                let server =
                    match alknet_sftp::session_for(&identity, &service.root, &service.config) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("sftp: {e}");
                            continue;
                        }
                    };
                open.set(open.get() + 1);
                let slot = SessionSlot(open.clone());
                let (config, offload, name) = (
                    service.config.clone(),
                    offload.clone(),
                    identity.name.clone(),
                );
                tracing::info!(identity = %name, read = server.grants().read, write = server.grants().write, "sftp: session started");
                spawn_guarded("sftp session", async move {
                    let _slot = slot;
                    match alknet_sftp::serve_on_worker(stream, server, config, offload).await {
                        Ok(()) => tracing::debug!(identity = %name, "sftp: session ended"),
                        Err(e) => tracing::info!(identity = %name, "sftp: session ended: {e}"),
                    }
                });
            }
            Ok(())
        })
    }
}

/// Frees a connection's session slot when the session ends.
struct SessionSlot(Rc<Cell<usize>>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}
