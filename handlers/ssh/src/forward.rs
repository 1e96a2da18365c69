//! `tcpip-forward` (ssh -R): listeners on allowed addresses whose connections go back to
//! the client as `forwarded-tcpip` channels.

use russh::server::Handle;
use tokio::net::TcpListener;

use std::sync::Arc;

use crate::adapter::Shared;
use crate::flow::SessionFlow;
use crate::metrics::{ChannelKind, ChannelRefusal};
use crate::pumps::{splice_tcp, ChannelSlots};

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
