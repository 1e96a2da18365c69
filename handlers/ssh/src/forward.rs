//! `tcpip-forward` and `streamlocal-forward@openssh.com` (ssh -R): listeners on allowed
//! addresses and Unix socket paths whose connections go back to the client as
//! `forwarded-tcpip` and `forwarded-streamlocal@openssh.com` channels.

use std::future::Future;

use russh::server::{Handle, Msg};
use russh::Channel;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::AbortHandle;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use crate::adapter::Shared;
use crate::flow::SessionFlow;
use crate::metrics::{ChannelKind, ChannelRefusal};
use crate::pumps::{splice, ChannelSlots};

/// Mode of a forwarded Unix socket: the server's user only (sshd's default
/// `StreamLocalBindMask 0177`).
const SOCKET_MODE: u32 = 0o600;

/// Binds a forward listener. `localhost` means the IPv4 loopback (one socket: a port-0
/// request must name one port).
pub async fn bind(address: &str, port: u16) -> std::io::Result<TcpListener> {
    let host = match address {
        "localhost" => "127.0.0.1",
        a => a,
    };
    TcpListener::bind((host, port)).await
}

/// What a session's forwarding listeners (`ssh -R` TCP and Unix, the forwarded agent)
/// share: the session's handle, channel slots, flow control and counters.
#[derive(Clone)]
pub(crate) struct ForwardContext {
    pub handle: Handle,
    pub slots: ChannelSlots,
    pub flow: SessionFlow,
    pub shared: Arc<Shared>,
}

impl ForwardContext {
    /// After a failed `accept` on the listener `what`: logged, and for EMFILE and friends
    /// a pause instead of a spin, as every accept loop does (the runtime's decision; these
    /// listeners run on the tokio bridge).
    pub async fn accept_failed(&self, what: &str, e: &std::io::Error) {
        let pause = alknet_runtime::accept_error_pause(e);
        tracing::warn!(?pause, "ssh: {what}: {e}");
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }

    /// A connection accepted on a forwarding listener goes to the client: a channel slot
    /// (or the connection is dropped), a channel opened by `open` (a task, so the
    /// listener keeps accepting), then the connection spliced to it both ways. Counted
    /// under `kind`; `what` names it in the logs.
    pub fn forward<R, W, F, Fut>(&self, kind: ChannelKind, what: String, conn: (R, W), open: F)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Channel<Msg>, russh::Error>> + Send,
    {
        let metrics = &self.shared.metrics;
        let Some(slot) = self.slots.try_acquire() else {
            tracing::warn!("ssh: channel limit reached; {what} dropped");
            metrics.channel_refused(kind, ChannelRefusal::Limit);
            return;
        };
        let handle = self.handle.clone();
        let shared = self.shared.clone();
        let backlog = self.flow.backlog();
        tokio::spawn(async move {
            let _slot = slot;
            match open(handle).await {
                Ok(channel) => {
                    shared.metrics.channel_opened(kind);
                    splice(channel, conn.0, conn.1, backlog).await
                }
                Err(e) => {
                    tracing::info!("ssh: {what}: the client refused the channel: {e}");
                    shared
                        .metrics
                        .channel_refused(kind, ChannelRefusal::ConnectFailed);
                }
            }
        });
    }
}

/// Accepts connections until aborted (cancel-tcpip-forward, or the session's end), each
/// opening a `forwarded-tcpip` channel to the client named by the address and port the
/// client asked for.
pub async fn accept_loop(listener: TcpListener, address: String, port: u32, cx: ForwardContext) {
    let what = format!("forward listener {address}:{port}");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                cx.accept_failed(&what, &e).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let address = address.clone();
        cx.forward(
            ChannelKind::ForwardedTcpip,
            format!("forwarded-tcpip from {peer} to {address}:{port}"),
            tcp.into_split(),
            move |handle| async move {
                handle
                    .channel_open_forwarded_tcpip(
                        address,
                        port,
                        peer.ip().to_string(),
                        u32::from(peer.port()),
                    )
                    .await
            },
        );
    }
}

/// A `streamlocal-forward` listener: its socket file goes when it does (cancelled, or the
/// session's end).
pub struct SocketForward {
    path: PathBuf,
    /// The socket file's (device, inode): removed at the end only while it is still ours
    /// (another session with `stream_local_bind_unlink` may have replaced it).
    file: (u64, u64),
    listener: AbortHandle,
}

impl Drop for SocketForward {
    fn drop(&mut self) {
        self.listener.abort();
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.file => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::debug!("ssh: removing {}: {e}", self.path.display());
                }
            }
            Ok(_) => tracing::debug!(
                "ssh: {} was replaced by another forward; left in place",
                self.path.display()
            ),
            Err(e) => tracing::debug!("ssh: {}: {e}", self.path.display()),
        }
    }
}

impl SocketForward {
    /// Binds `path` (mode 0600) and accepts on it until dropped, each connection a
    /// `forwarded-streamlocal@openssh.com` channel to the client. A file already at
    /// `path` is an error (sshd's default `StreamLocalBindUnlink no`), unless
    /// `unlink_stale` and it is a socket, which is then removed first, as a GnuPG agent's
    /// forwarded socket left by an earlier session is (`StreamLocalBindUnlink yes`); any
    /// other kind of file is never removed.
    pub fn bind(path: &str, unlink_stale: bool, cx: ForwardContext) -> std::io::Result<Self> {
        if unlink_stale {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_socket() => match std::fs::remove_file(path) {
                    Ok(()) => tracing::info!("ssh: replacing the socket {path}"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                },
                Ok(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a file that is not a socket is there; not replaced",
                    ))
                }
                Err(_) => {}
            }
        }
        let listener = UnixListener::bind(path)?;
        // connecting needs write permission on the socket: under the usual umask (022)
        // nobody else could connect before this either
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        let task = tokio::spawn(socket_accept_loop(listener, path.to_string(), cx));
        Ok(Self {
            path: PathBuf::from(path),
            file: (meta.dev(), meta.ino()),
            listener: task.abort_handle(),
        })
    }
}

async fn socket_accept_loop(listener: UnixListener, path: String, cx: ForwardContext) {
    let what = format!("forward socket {path}");
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                cx.accept_failed(&what, &e).await;
                continue;
            }
        };
        let path = path.clone();
        cx.forward(
            ChannelKind::ForwardedStreamlocal,
            format!("forwarded-streamlocal to {path}"),
            stream.into_split(),
            move |handle| async move { handle.channel_open_forwarded_streamlocal(path).await },
        );
    }
}
