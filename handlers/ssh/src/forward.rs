//! `tcpip-forward` and `streamlocal-forward@openssh.com` (ssh -R): listeners on allowed
//! addresses and Unix socket paths whose connections go back to the client as
//! `forwarded-tcpip` and `forwarded-streamlocal@openssh.com` channels.

use russh::server::Handle;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::AbortHandle;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::adapter::Shared;
use crate::flow::SessionFlow;
use crate::metrics::{ChannelKind, ChannelRefusal};
use crate::pumps::{splice, splice_tcp, ChannelSlots};

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

/// Accepts connections until aborted (cancel-tcpip-forward, or the session's end), each
/// opening a `forwarded-tcpip` channel to the client named by the address and port the
/// client asked for.
pub async fn accept_loop(
    listener: TcpListener,
    address: String,
    port: u32,
    handle: Handle,
    slots: ChannelSlots,
    flow: SessionFlow,
    shared: Arc<Shared>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, as every accept loop
                // does (the runtime's decision; this listener runs on the tokio bridge)
                let pause = alknet_runtime::accept_error_pause(&e);
                tracing::warn!(?pause, "ssh: forward listener {address}:{port}: {e}");
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        let Some(slot) = slots.try_acquire() else {
            tracing::warn!("ssh: channel limit reached; forwarded connection from {peer} dropped");
            shared
                .metrics
                .channel_refused(ChannelKind::ForwardedTcpip, ChannelRefusal::Limit);
            continue;
        };
        let handle = handle.clone();
        let address = address.clone();
        let shared = shared.clone();
        let backlog = flow.backlog();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            match handle
                .channel_open_forwarded_tcpip(
                    address.clone(),
                    port,
                    peer.ip().to_string(),
                    u32::from(peer.port()),
                )
                .await
            {
                Ok(channel) => {
                    shared.metrics.channel_opened(ChannelKind::ForwardedTcpip);
                    splice_tcp(channel, tcp, backlog).await
                }
                Err(e) => {
                    tracing::info!("ssh: forwarded-tcpip for {address}:{port}: {e}");
                    shared.metrics.channel_refused(
                        ChannelKind::ForwardedTcpip,
                        ChannelRefusal::ConnectFailed,
                    );
                }
            }
        });
    }
}

/// A `streamlocal-forward` listener: its socket file goes when it does (cancelled, or the
/// session's end).
pub struct SocketForward {
    path: PathBuf,
    listener: AbortHandle,
}

impl Drop for SocketForward {
    fn drop(&mut self) {
        self.listener.abort();
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!("ssh: removing {}: {e}", self.path.display());
        }
    }
}

impl SocketForward {
    /// Binds `path` (mode 0600) and accepts on it until dropped, each connection a
    /// `forwarded-streamlocal@openssh.com` channel to the client. A file already at
    /// `path` is an error, not replaced (sshd's default `StreamLocalBindUnlink no`).
    pub fn bind(
        path: &str,
        handle: Handle,
        slots: ChannelSlots,
        flow: SessionFlow,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let listener = UnixListener::bind(path)?;
        // connecting needs write permission on the socket: under the usual umask (022)
        // nobody else could connect before this either
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        let task = tokio::spawn(socket_accept_loop(
            listener,
            path.to_string(),
            handle,
            slots,
            flow,
            shared,
        ));
        Ok(Self {
            path: PathBuf::from(path),
            listener: task.abort_handle(),
        })
    }
}

async fn socket_accept_loop(
    listener: UnixListener,
    path: String,
    handle: Handle,
    slots: ChannelSlots,
    flow: SessionFlow,
    shared: Arc<Shared>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                let pause = alknet_runtime::accept_error_pause(&e);
                tracing::warn!(?pause, "ssh: forward socket {path}: {e}");
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        let Some(slot) = slots.try_acquire() else {
            tracing::warn!("ssh: channel limit reached; connection to {path} dropped");
            shared
                .metrics
                .channel_refused(ChannelKind::ForwardedStreamlocal, ChannelRefusal::Limit);
            continue;
        };
        let handle = handle.clone();
        let path = path.clone();
        let shared = shared.clone();
        let backlog = flow.backlog();
        tokio::spawn(async move {
            let _slot = slot;
            match handle
                .channel_open_forwarded_streamlocal(path.clone())
                .await
            {
                Ok(channel) => {
                    shared
                        .metrics
                        .channel_opened(ChannelKind::ForwardedStreamlocal);
                    let (read, write) = stream.into_split();
                    splice(channel, read, write, backlog).await
                }
                Err(e) => {
                    tracing::info!("ssh: forwarded-streamlocal for {path}: {e}");
                    shared.metrics.channel_refused(
                        ChannelKind::ForwardedStreamlocal,
                        ChannelRefusal::ConnectFailed,
                    );
                }
            }
        });
    }
}
