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
    /// The server's host answered the handshake with an ICMP error: "port unreachable"
    /// (`ECONNREFUSED`) says no server listens on that UDP port.
    #[error("no QUIC server there: {0} (ICMP port unreachable)")]
    Unreachable(io::Error),
}

/// A client endpoint bound to one local UDP socket, driven by a task on this thread.
pub struct ClientEndpoint {
    w: Rc<WorkerState>,
    transport: Arc<TransportConfig>,
    /// For a server at a loopback address ([`crate::limits::is_loopback`]).
    loopback_transport: Arc<TransportConfig>,
    /// `send_stall_timeout` of the limits it was bound with, for its connections' streams.
    send_stall_timeout: std::time::Duration,
    /// The QUIC version new connections start in (v1 unless [`Self::set_quic_version`]).
    version: std::cell::Cell<u32>,
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
            .max_udp_payload_size(limits.endpoint_max_udp_payload_size())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        // v2 as well, so that a connection started in v2 can read the server's packets
        endpoint_config.supported_versions(vec![1, quinn_proto::QUIC_V2]);
        let endpoint = Endpoint::new(Arc::new(endpoint_config), None, !io.may_fragment(), None);
        let w = WorkerState::new(
            0,
            Role::Client,
            endpoint,
            io,
            Arc::new(WorkerStats::default()),
        );
        w.handles.set(1);
        monoio::spawn(Driver::new(
            w.clone(),
            limits.endpoint_max_udp_payload_size(),
        ));
        Ok(Self {
            w,
            transport: Arc::new(limits.transport_config()),
            loopback_transport: Arc::new(
                limits.transport_config_for(std::net::Ipv4Addr::LOCALHOST.into()),
            ),
            send_stall_timeout: limits.send_stall_timeout,
            version: std::cell::Cell::new(1),
        })
    }

    /// The QUIC version the next connections start in. A server that does not speak it
    /// answers with Version Negotiation, and the connection fails with
    /// `ConnectionError::VersionMismatch` (quinn-proto starts no second attempt).
    pub fn set_quic_version(&self, version: crate::QuicVersion) {
        self.version.set(version.wire());
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
        config.version(self.version.get());
        let transport = if crate::limits::is_loopback(remote.ip()) {
            &self.loopback_transport
        } else {
            &self.transport
        };
        config.transport_config(transport.clone());
        let (handle, conn) = self.w.endpoint.borrow_mut().connect(
            std::time::Instant::now(),
            config,
            remote,
            server_name,
        )?;
        let inner = self.w.insert(handle, conn, false, self.send_stall_timeout);
        inner.wake_driver();
        let conn = Connection::new(inner);
        if let Err(e) = poll_fn(|cx| conn.poll_connected(cx)).await {
            return Err(match conn.unreachable() {
                Some(errno) => ConnectError::Unreachable(io::Error::from_raw_os_error(errno)),
                None => e.into(),
            });
        }
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

/// `alknet connect --transport tcp` and the other TLS/TCP clients: how long the TCP connect
/// and the TLS handshake may take together.
pub const TCP_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a TLS/TCP connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum TcpConnectError {
    #[error("TCP connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("TLS handshake over TCP: {0}")]
    Handshake(#[source] io::Error),
    #[error("TCP connect and TLS handshake took longer than {0:?}")]
    TimedOut(std::time::Duration),
}

/// Connects over TLS/TCP to a server's `[tcp] stream_alpns` service: a one-stream
/// [`Connection`] whose `open_bi` yields the stream (see `tcp_connection.rs`). `config`
/// offers the service's ALPN (a server that does not serve it over TCP fails the
/// handshake with `no_application_protocol`). Must be called inside a monoio runtime: the
/// connection's driver is a task on it.
pub async fn connect_tls_tcp(
    remote: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
    stream_buffer: usize,
) -> Result<Connection, TcpConnectError> {
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|_| TcpConnectError::ServerName(server_name.to_string()))?;
    let attempt = async {
        let stream = monoio::net::TcpStream::connect(remote)
            .await
            .map_err(|source| TcpConnectError::Connect {
                addr: remote,
                source,
            })?;
        let _ = stream.set_nodelay(true);
        // a server that vanished is noticed even while the session is idle
        crate::tcp::set_keepalive(&stream, crate::limits::DEFAULT_TCP_KEEPALIVE_IDLE);
        let poll = stream
            .try_into_poll_io()
            .map_err(|(source, _)| TcpConnectError::Connect {
                addr: remote,
                source,
            })?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, poll)
            .await
            .map_err(TcpConnectError::Handshake)
    };
    let tls = monoio::time::timeout(TCP_CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| TcpConnectError::TimedOut(TCP_CONNECT_TIMEOUT))??;
    let (io, session) = tls.get_ref();
    let peer = crate::tcp_connection::TcpPeer {
        remote,
        alpn: session
            .alpn_protocol()
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        peer_fingerprint: session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(crate::tls::fingerprint_of),
        worker: 0,
        fd: std::os::fd::AsRawFd::as_raw_fd(io),
        side: quinn_proto::Side::Client,
    };
    let (conn, driver) = crate::tcp_connection::tcp_connection(
        Box::new(tls),
        peer,
        stream_buffer,
        crate::limits::DEFAULT_SEND_STALL_TIMEOUT,
        None,
    );
    monoio::spawn(driver.run());
    Ok(Connection::from_tcp(conn))
}
