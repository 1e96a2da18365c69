//! The `alknet/sftp` ALPN: each bidirectional stream of a connection is one raw SFTP v3
//! session of the connection's identity (its client certificate), served on the worker
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

use crate::{Grants, SftpConfig};

/// The ALPN of raw SFTP sessions.
pub const ALPN: &[u8] = b"alknet/sftp";

/// Application error code closing an `alknet/sftp` connection whose identity may not use
/// SFTP (no client certificate known, or neither `sftp:read` nor `sftp:write`).
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
            let identity = match auth.identity.clone() {
                Some(i) if Grants::of(&i).any() => i,
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
                let server = match crate::session_for(&identity, &self.root, &self.config) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("sftp: {e}");
                        continue;
                    }
                };
                open.set(open.get() + 1);
                let slot = SessionSlot(open.clone());
                let (config, offload, name) =
                    (self.config.clone(), offload.clone(), identity.name.clone());
                tracing::info!(identity = %name, read = server.grants().read, write = server.grants().write, "sftp: session started");
                spawn_guarded("sftp session", async move {
                    let _slot = slot;
                    match crate::serve_on_worker(stream, server, config, offload).await {
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
