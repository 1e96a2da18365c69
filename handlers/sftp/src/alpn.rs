//! The `alknet/sftp` ALPN: each bidirectional stream of a connection is one raw SFTP v3
//! session of the connection's identity (its client certificate, else the token its
//! `SSH_FXP_INIT` carries: [`crate::init`]), served on the worker
//! that owns the connection ([`crate::serve_on_worker`]: file reads and writes through
//! monoio). Here rather than in the binary so that every server that registers it (the
//! node, the load-test harness's server) registers the same handler.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use alknet_runtime::rt::spawn_guarded;
use alknet_runtime::{
    AuthContext, Connection, HandlerError, LocalBoxFuture, ProtocolHandler, VarInt,
};

use crate::{Grants, SftpConfig, WorkerSessionError, SCOPE_READ, SCOPE_WRITE};

/// The ALPN of raw SFTP sessions.
pub const ALPN: &[u8] = b"alknet/sftp";

/// Application error code closing an `alknet/sftp` connection whose session may not use
/// SFTP (no client certificate or token known, or neither `sftp:read` nor `sftp:write`).
pub const CLOSE_NOT_ALLOWED: u32 = 0x10;

/// Starts (or returns) the tokio runtime whose blocking threads take the requests that
/// may wait long (copy-data, fsync): the node passes its SSH bridge runtime's starter.
pub type OffloadStarter = Arc<dyn Fn() -> io::Result<tokio::runtime::Handle> + Send + Sync>;

/// The `alknet/sftp` handler. At most `config.max_sessions_per_connection` sessions at
/// once per connection; a stream beyond is reset.
#[derive(Clone)]
pub struct SftpAlpn {
    /// Parent of the identities' directories (`root/<identity name>/`).
    root: PathBuf,
    config: SftpConfig,
    offload: OffloadStarter,
}

impl fmt::Debug for SftpAlpn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpAlpn")
            .field("root", &self.root)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SftpAlpn {
    pub fn new(root: PathBuf, config: SftpConfig, offload: OffloadStarter) -> Self {
        Self {
            root,
            config,
            offload,
        }
    }
}

impl ProtocolHandler for SftpAlpn {
    fn alpn(&self) -> &[u8] {
        ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            // a client certificate with an SFTP scope names every session; without one,
            // each session's INIT must carry a token that does ([`crate::init`])
            let certified = auth.identity.clone().filter(|i| Grants::of(i).any());
            // a known certificate without an SFTP scope is refused by name, unless a token
            // names someone else
            let known = auth.identity.clone();
            let offload = (self.offload)().map_err(|e| HandlerError::Other(Box::new(e)))?;
            let max = self.config.max_sessions_per_connection;
            let open = Rc::new(Cell::new(0usize));
            while let Ok(stream) = conn.accept_bi().await {
                if open.get() >= max {
                    tracing::warn!(
                        remote = %conn.remote_address(),
                        "sftp: session limit ({max}) reached; stream refused"
                    );
                    let (mut send, mut recv) = stream.split();
                    let _ = send.reset(VarInt::from_u32(crate::worker::SESSION_ABORT_CODE));
                    let _ = recv.stop(VarInt::from_u32(crate::worker::SESSION_ABORT_CODE));
                    continue;
                }
                open.set(open.get() + 1);
                let slot = SessionSlot(open.clone());
                let (certified, known, provider) =
                    (certified.clone(), known.clone(), auth.provider.clone());
                let (root, config, offload) =
                    (self.root.clone(), self.config.clone(), offload.clone());
                let (conn, remote) = (conn.clone(), auth.remote);
                let name = Rc::new(Cell::new(None::<String>));
                let named = name.clone();
                let session_of = move |token: Option<&str>| {
                    let identity = match (certified, token, known) {
                        (Some(i), _, _) => i,
                        (None, Some(t), _) => provider
                            .resolve_from_token(t)
                            .ok_or_else(|| "the token is not known".to_string())?,
                        // session_for refuses it by name: it has no SFTP scope
                        (None, None, Some(k)) => k,
                        (None, None, None) => {
                            return Err(format!(
                                "needs a known client certificate, or a token (alknet connect \
                                 --token), with {SCOPE_READ} or {SCOPE_WRITE}"
                            ))
                        }
                    };
                    let server =
                        crate::session_for(&identity, &root, &config).map_err(|e| e.to_string())?;
                    tracing::info!(identity = %identity.name, read = server.grants().read, write = server.grants().write, "sftp: session started");
                    named.set(Some(identity.name));
                    Ok(server)
                };
                let config = self.config.clone();
                spawn_guarded("sftp session", async move {
                    let _slot = slot;
                    let result = crate::serve_on_worker(stream, session_of, config, offload).await;
                    let who = name.take();
                    let who = who.as_deref().unwrap_or("-");
                    match result {
                        Ok(()) => tracing::debug!(identity = %who, "sftp: session ended"),
                        Err(WorkerSessionError::NotAllowed(why)) => {
                            tracing::warn!(%remote, "sftp: no session: {why}");
                            conn.close(
                                VarInt::from_u32(CLOSE_NOT_ALLOWED),
                                format!("sftp: not allowed: {why}").as_bytes(),
                            );
                        }
                        Err(e) => tracing::info!(identity = %who, "sftp: session ended: {e}"),
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
