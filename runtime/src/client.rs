//! Dialling out: a client endpoint on the current thread's monoio runtime. The CLI, the
//! tests and the load tester use it; the load tester runs one per worker thread.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{ConnectionError, Endpoint, EndpointConfig, TransportConfig};

use crate::connection::Connection;
use crate::limits::Limits;
use crate::socket::{bind_client, UdpIo};
use crate::stats::{WorkerStats, WorkerStatsSnapshot};
use crate::worker::{Driver, Role, WorkerState};

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot start connecting: {0}")]
    Start(#[from] quinn_proto::ConnectError),
    #[error("handshake failed: {0}")]
    Handshake(#[from] ConnectionError),
}

/// A client endpoint bound to one local UDP socket, driven by a task on this thread.
pub struct ClientEndpoint {
    w: Rc<WorkerState>,
    transport: Arc<TransportConfig>,
}

impl ClientEndpoint {
    /// Binds `local` (use port 0) and starts the driver task. Must be called inside a
    /// monoio runtime (see [`crate::rt::run_local`]).
    pub fn bind(local: SocketAddr, limits: &Limits) -> io::Result<Self> {
        limits
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let io = UdpIo::new(bind_client(local, limits.socket_buffer_size)?)?;
        let mut endpoint_config = EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(limits.max_udp_payload_size)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let endpoint = Endpoint::new(Arc::new(endpoint_config), None, !io.may_fragment(), None);
        let w = WorkerState::new(
            0,
            Role::Client,
            endpoint,
            io,
            Arc::new(WorkerStats::default()),
        );
        w.handles.set(1);
        monoio::spawn(Driver::new(w.clone(), limits.max_udp_payload_size));
        Ok(Self {
            w,
            transport: Arc::new(limits.transport_config()),
        })
    }

    /// The local address of the current socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.w.io.borrow().local_addr()
    }

    /// Connects and waits for the handshake. `server_name` is checked against the
    /// certificate unless the crypto config pins a fingerprint or is insecure.
    pub async fn connect(
        &self,
        remote: SocketAddr,
        server_name: &str,
        crypto: Arc<QuicClientConfig>,
    ) -> Result<Connection, ConnectError> {
        let mut config = quinn_proto::ClientConfig::new(crypto);
        config.transport_config(self.transport.clone());
        let (handle, conn) = self.w.endpoint.borrow_mut().connect(
            std::time::Instant::now(),
            config,
            remote,
            server_name,
        )?;
        let inner = self.w.insert(handle, conn, false);
        inner.wake_driver();
        let conn = Connection::new(inner);
        poll_fn(|cx| conn.poll_connected(cx)).await?;
        Ok(conn)
    }

    /// Moves every connection to a new local socket, as after a NAT rebinding or a network
    /// change; the server sees the new address and migrates the connections.
    pub fn rebind(&self, local: SocketAddr) -> io::Result<()> {
        let io = UdpIo::new(bind_client(local, 0)?)?;
        *self.w.io.borrow_mut() = Rc::new(io);
        self.w.io_generation.set(self.w.io_generation.get() + 1);
        // Let connections probe the new path right away.
        let conns = self.w.live();
        tracing::debug!(conns, local = %self.local_addr(), "client endpoint rebound");
        self.w.notify.wake();
        Ok(())
    }

    /// Waits until every connection of this endpoint has fully closed (so the peer got our
    /// CONNECTION_CLOSE).
    pub async fn wait_idle(&self) {
        poll_fn(|cx| self.w.poll_idle(cx)).await
    }

    pub fn stats(&self) -> WorkerStatsSnapshot {
        self.w.stats.snapshot(0)
    }
}

impl Drop for ClientEndpoint {
    fn drop(&mut self) {
        self.w.handles.set(self.w.handles.get() - 1);
        self.w.notify.wake();
    }
}
