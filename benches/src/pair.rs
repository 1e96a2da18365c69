//! A socket-free server/client pair for benchmarking the server's per-datagram path.
//!
//! The pieces of `runtime/tests/routing_pair.rs` a benchmark needs, cut down to one server
//! worker endpoint (configured as `alknet_runtime::start` configures a worker: the runtime's
//! `WorkerCidGenerator`, `Limits::default().transport_config()`, `server_crypto`, migration
//! on) and one client. Datagrams move in memory with zero latency; time is an `Instant` that
//! only moves when every connection is idle until its next timer, so nothing sleeps and every
//! loop is bounded. Endpoint RNGs are seeded, so given a fixed certificate a run is
//! repeatable up to the randomness of TLS key exchange and of the CIDs themselves
//! (`WorkerCidGenerator` draws from `thread_rng`, as in production).
//!
//! [`Server::receive`] is the measured path. Per datagram it does what the runtime's driver
//! (`runtime/src/worker.rs`) does: `CidLayout::route`, `Endpoint::handle`,
//! `Connection::handle_event`, then one driver pass over the connection: endpoint events,
//! application events, `poll_transmit` into a reused buffer, endpoint events again and
//! `poll_timeout`. The application part stands in for a handler task: it accepts the
//! client's streams and reads whatever they have, so flow control keeps advancing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_proto::cid::{CidLayout, Route, WorkerId};
use alknet_runtime::tls::{
    client_crypto_with_resumption, server_crypto, ClientAuth, ServerTrust, TlsIdentity,
};
use alknet_runtime::{Limits, WorkerCidGenerator, MAX_GSO_BYTES, MAX_GSO_SEGMENTS};
use bytes::BytesMut;
use quinn_proto::congestion::CubicConfig;
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    Event, ReadError, ServerConfig, StreamEvent, StreamId, TransportConfig, WriteError,
};

/// The ALPN both sides speak (the echo handler's).
pub const ALPN: &[u8] = b"alknet/echo";
/// Server id carried in every CID.
pub const SERVER_ID: u16 = 0x0a1c;
/// Workers in the CID layout; the benchmarked endpoint is one of them.
pub const WORKERS: usize = 2;
/// The benchmarked worker. Not 0, so a CID that failed to name it would stand out.
pub const WORKER: WorkerId = 1;
pub const SERVER_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 443);
pub const CLIENT_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 40_001);

/// Datagrams a client transmit may batch (GSO); split before delivery.
const CLIENT_GSO_SEGMENTS: usize = 10;
/// Bound on delivery rounds at one instant.
const MAX_ROUNDS_PER_INSTANT: usize = 1_000;
/// Bound on timer-driven steps in one `run_until`/`run_for`.
const MAX_STEPS: usize = 10_000;
/// Client congestion window: above `u32::MAX` bytes quinn-proto also disables pacing, so the
/// client can emit a whole pre-generated batch at one instant without ACKs coming back.
const UNLIMITED_WINDOW: u64 = 1 << 40;

/// Endpoint RNG seeds (quinn-proto derives each connection's RNG from its endpoint's).
const SERVER_SEED: [u8; 32] = [0x5e; 32];
const CLIENT_SEED: [u8; 32] = [0xc1; 32];

/// Installs a global tracing subscriber that enables nothing, if none is installed yet.
///
/// The server binary always runs with a subscriber (an `EnvFilter`, `info` by default), which
/// disables quinn-proto's trace-level spans once per callsite. With no subscriber at all,
/// tracing's `log` feature (enabled for quinn-proto in the workspace) makes every span
/// creation, enter and exit fall back to checking for a `log` logger instead: about 600
/// instructions (7%) per received datagram that production does not pay.
pub fn quiet_tracing() {
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
}

/// The default limits for a scenario that measures a connection in its steady state: path
/// MTU discovery searches right after the handshake (`mtu_probe_after_packets` 0), so the
/// search is over before the measured part, as it is on a production connection past its
/// first `mtu_probe_after_packets` packets. With the default the search would start in the
/// middle of what the scenario measures.
pub fn steady_limits() -> Limits {
    Limits {
        mtu_probe_after_packets: 0,
        ..Limits::default()
    }
}

/// Everything needed to build pairs, made once: certificate parsing and rustls setup are
/// not part of a connection's cost.
pub struct PairConfig {
    server_endpoint: Arc<EndpointConfig>,
    server: Arc<ServerConfig>,
    client_endpoint: Arc<EndpointConfig>,
    client_crypto: Arc<quinn_proto::crypto::rustls::QuicClientConfig>,
    client_transport: Arc<TransportConfig>,
    layout: CidLayout,
}

impl PairConfig {
    /// A worker's configuration with `identity`'s certificate, and a client that trusts any
    /// certificate (the handshake signature is still verified) and never resumes sessions.
    ///
    /// Also installs [`quiet_tracing`], as every user of a pair should measure with it.
    pub fn new(identity: &TlsIdentity) -> Self {
        Self::with_limits(identity, &Limits::default())
    }

    /// As [`PairConfig::new`], with [`steady_limits`]: the search is over once
    /// [`Pair::connected`] returns.
    pub fn steady(identity: &TlsIdentity) -> Self {
        Self::with_limits(identity, &steady_limits())
    }

    fn with_limits(identity: &TlsIdentity, limits: &Limits) -> Self {
        quiet_tracing();
        let layout = CidLayout::new(SERVER_ID, WORKERS).expect("valid CID layout");

        // As in `alknet_runtime::start`.
        let crypto = server_crypto(identity, vec![ALPN.to_vec()], ClientAuth::None)
            .expect("server TLS config");
        let mut server = ServerConfig::with_crypto(crypto);
        server
            .transport_config(Arc::new(limits.transport_config()))
            .migration(true);
        let mut server_endpoint = EndpointConfig::default();
        server_endpoint
            .max_udp_payload_size(limits.max_udp_payload_size)
            .expect("valid max UDP payload");
        server_endpoint.cid_generator(move || Box::new(WorkerCidGenerator::new(layout, WORKER)));

        // As in `ClientEndpoint`, plus an unlimited congestion window (see UNLIMITED_WINDOW).
        let mut client_endpoint = EndpointConfig::default();
        client_endpoint
            .max_udp_payload_size(limits.max_udp_payload_size)
            .expect("valid max UDP payload");
        let mut client_transport = limits.transport_config();
        let mut cubic = CubicConfig::default();
        cubic.initial_window(UNLIMITED_WINDOW);
        client_transport.congestion_controller_factory(Arc::new(cubic));
        // Without resumption every pair's handshake is a full one, however many pairs one
        // config builds.
        let client_crypto =
            client_crypto_with_resumption(&ServerTrust::Insecure, vec![ALPN.to_vec()], None, false)
                .expect("client TLS config");

        Self {
            server_endpoint: Arc::new(server_endpoint),
            server: Arc::new(server),
            client_endpoint: Arc::new(client_endpoint),
            client_crypto,
            client_transport: Arc::new(client_transport),
            layout,
        }
    }
}

/// The benchmarked server worker: its endpoint, its (single) connection, and a stand-in
/// application that reads every stream.
pub struct Server {
    pub now: Instant,
    pub layout: CidLayout,
    pub endpoint: Endpoint,
    pub conn: Option<(ConnectionHandle, Connection)>,
    pub connected: bool,
    /// Streams accepted and not yet read to their end.
    streams: Vec<StreamId>,
    /// Stream bytes the application has read.
    pub bytes_read: u64,
    /// Datagrams `receive` handed on to the connection.
    pub datagrams_to_conn: u64,
    /// Transmits (GSO batches) the connection produced.
    pub transmits: u64,
    /// Datagrams routed to another worker (never expected here).
    pub foreign: u64,
    /// Capture transmits for delivery to the client (handshake); off while benchmarking.
    capture: bool,
    outbox: Vec<BytesMut>,
    response_buf: Vec<u8>,
    send_buf: Vec<u8>,
    max_segments: usize,
}

impl Server {
    fn new(config: &PairConfig, now: Instant) -> Self {
        let max_udp = usize::from(Limits::default().max_udp_payload_size);
        Self {
            now,
            layout: config.layout,
            endpoint: Endpoint::new(
                config.server_endpoint.clone(),
                Some(config.server.clone()),
                true,
                Some(SERVER_SEED),
            ),
            conn: None,
            connected: false,
            streams: Vec::new(),
            bytes_read: 0,
            datagrams_to_conn: 0,
            transmits: 0,
            foreign: 0,
            capture: true,
            outbox: Vec::new(),
            response_buf: Vec::new(),
            send_buf: Vec::with_capacity(MAX_GSO_BYTES),
            // The driver's bound: GSO segments, limited so a batch fits one UDP send.
            max_segments: MAX_GSO_SEGMENTS.min(MAX_GSO_BYTES / max_udp).max(1),
        }
    }

    /// Stops keeping transmits for the client: they are produced into the reused send
    /// buffer and dropped, as a socket send would.
    pub fn discard_output(&mut self) {
        self.capture = false;
        self.outbox.clear();
    }

    /// One received datagram, as the runtime driver handles it.
    pub fn receive(&mut self, data: BytesMut) {
        if let Route::Worker(owner) = self.layout.route(&data) {
            if owner != WORKER {
                // the driver would forward it to its owner's inbox
                self.foreign += 1;
                return;
            }
        }
        self.response_buf.clear();
        let event = self.endpoint.handle(
            self.now,
            CLIENT_ADDR,
            None,
            None,
            data,
            &mut self.response_buf,
        );
        match event {
            None => {}
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                let (_, conn) = self
                    .conn
                    .as_mut()
                    .filter(|(h, _)| *h == ch)
                    .expect("event for the server's connection");
                conn.handle_event(event);
                self.datagrams_to_conn += 1;
                self.drive();
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                assert!(self.conn.is_none(), "a second connection arrived");
                self.response_buf.clear();
                let accepted =
                    self.endpoint
                        .accept(incoming, self.now, &mut self.response_buf, None);
                match accepted {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => panic!("server refused the connection: {}", e.cause),
                }
                self.drive();
            }
            Some(DatagramEvent::Response(_)) => panic!("unexpected stateless response"),
        }
    }

    /// Runs the connection's timer if it is due, then a driver pass.
    fn fire_timer(&mut self) {
        if let Some((_, conn)) = &mut self.conn {
            if conn.poll_timeout().is_some_and(|t| t <= self.now) {
                conn.handle_timeout(self.now);
            }
        }
        self.drive();
    }

    /// One driver pass over the connection (see `Driver::drive` in the runtime).
    fn drive(&mut self) {
        let Some((ch, conn)) = &mut self.conn else {
            return;
        };
        let ch = *ch;
        forward_endpoint_events(&mut self.endpoint, ch, conn);
        let mut opened = false;
        while let Some(event) = conn.poll() {
            match event {
                Event::Connected => self.connected = true,
                Event::ConnectionLost { reason } => panic!("server lost the connection: {reason}"),
                Event::Stream(StreamEvent::Opened { .. }) => opened = true,
                _ => {}
            }
        }
        if opened {
            while let Some(id) = conn.streams().accept(Dir::Bi) {
                self.streams.push(id);
            }
        }
        // The handler: read everything available so the flow-control windows move.
        let mut i = 0;
        while i < self.streams.len() {
            let (n, fin) = read_available(conn, self.streams[i]);
            self.bytes_read += n;
            if fin {
                self.streams.swap_remove(i);
            } else {
                i += 1;
            }
        }
        for _ in 0..alknet_runtime::TRANSMITS_PER_CONNECTION {
            self.send_buf.clear();
            let Some(t) = conn.poll_transmit(self.now, self.max_segments, &mut self.send_buf)
            else {
                break;
            };
            self.transmits += 1;
            if self.capture {
                split_into(&t, &self.send_buf, &mut self.outbox);
            }
        }
        forward_endpoint_events(&mut self.endpoint, ch, conn);
        std::hint::black_box(conn.poll_timeout());
    }
}

/// The client: an endpoint and its connection.
pub struct Client {
    pub endpoint: Endpoint,
    pub ch: ConnectionHandle,
    pub conn: Connection,
    pub connected: bool,
    /// The stream pre-generated data is written to, replaced when flow control blocks it.
    stream: Option<StreamId>,
    send_buf: Vec<u8>,
}

impl Client {
    fn receive(&mut self, now: Instant, data: BytesMut) {
        let mut buf = Vec::new();
        match self
            .endpoint
            .handle(now, SERVER_ADDR, None, None, data, &mut buf)
        {
            None => {}
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                assert_eq!(ch, self.ch, "the client has one connection");
                self.conn.handle_event(event);
            }
            Some(_) => panic!("unexpected datagram event on the client"),
        }
    }

    /// Timers, application events and transmits; transmits go to `out`.
    fn drive(&mut self, now: Instant, out: &mut Vec<BytesMut>) {
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected => self.connected = true,
                Event::ConnectionLost { reason } => panic!("client lost the connection: {reason}"),
                _ => {}
            }
        }
        self.flush(now, out);
    }

    fn flush(&mut self, now: Instant, out: &mut Vec<BytesMut>) {
        for _ in 0..MAX_ROUNDS_PER_INSTANT {
            self.send_buf.clear();
            match self
                .conn
                .poll_transmit(now, CLIENT_GSO_SEGMENTS, &mut self.send_buf)
            {
                Some(t) => split_into(&t, &self.send_buf, out),
                None => break,
            }
            forward_endpoint_events(&mut self.endpoint, self.ch, &mut self.conn);
        }
        forward_endpoint_events(&mut self.endpoint, self.ch, &mut self.conn);
    }

    /// Writes `data` to the current stream, opening a new one whenever flow control blocks
    /// it. Returns false if no stream could take any of it.
    fn write_all(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let (id, fresh) = match self.stream {
                Some(id) => (id, false),
                None => match self.conn.streams().open(Dir::Bi) {
                    Some(id) => {
                        self.stream = Some(id);
                        (id, true)
                    }
                    None => return false,
                },
            };
            match self.conn.send_stream(id).write(data) {
                // a fresh stream blocked at once: the connection's credit is used up
                Ok(0) | Err(WriteError::Blocked) if fresh => return false,
                // this stream's credit is used up: continue on a fresh stream
                Ok(0) | Err(WriteError::Blocked) => self.stream = None,
                Ok(n) => data = &data[n..],
                Err(e) => panic!("client write: {e}"),
            }
        }
        true
    }
}

/// How the client fills the datagrams of a pre-generated batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// One write of this many bytes, then a flush: one datagram per write (request-sized
    /// writes, each sent as soon as it is written).
    Writes(usize),
    /// A long write, flushed as full-size datagrams (bulk upload).
    FullPackets,
}

/// A server worker and a client, connected in memory.
pub struct Pair {
    pub now: Instant,
    pub server: Server,
    pub client: Client,
    to_server: Vec<BytesMut>,
    to_client: Vec<BytesMut>,
}

impl Pair {
    /// A client that has started (not finished) connecting to a fresh server worker.
    pub fn new(config: &PairConfig) -> Self {
        let now = Instant::now();
        let mut endpoint = Endpoint::new(
            config.client_endpoint.clone(),
            None,
            true,
            Some(CLIENT_SEED),
        );
        let mut client_config = ClientConfig::new(config.client_crypto.clone());
        client_config.transport_config(config.client_transport.clone());
        let (ch, conn) = endpoint
            .connect(now, client_config, SERVER_ADDR, "localhost")
            .expect("client starts a connection");
        Self {
            now,
            server: Server::new(config, now),
            client: Client {
                endpoint,
                ch,
                conn,
                connected: false,
                stream: None,
                send_buf: Vec::new(),
            },
            to_server: Vec::new(),
            to_client: Vec::new(),
        }
    }

    /// A pair that has completed its handshake and gone quiet (see [`Pair::quiesce`]).
    pub fn connected(config: &PairConfig) -> Self {
        let mut pair = Self::new(config);
        pair.handshake();
        pair.quiesce();
        pair
    }

    /// Runs until both sides report `Connected`.
    pub fn handshake(&mut self) {
        self.run_until("handshake", |p| p.client.connected && p.server.connected);
    }

    /// Lets a second of simulated time pass: delayed ACKs, HANDSHAKE_DONE, path MTU
    /// discovery and every other timer due in it run to completion, so what follows sees
    /// an established connection with nothing outstanding.
    pub fn quiesce(&mut self) {
        let deadline = self.now + Duration::from_secs(1);
        for _ in 0..MAX_STEPS {
            self.settle();
            match self.next_timeout() {
                Some(next) if next <= deadline => self.set_now(self.now.max(next)),
                _ => {
                    self.set_now(deadline);
                    self.settle();
                    return;
                }
            }
        }
        panic!("more than {MAX_STEPS} timer steps while quiescing");
    }

    fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.server.now = now;
    }

    /// Drives both sides and delivers datagrams (zero latency) until nothing is in flight.
    fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS_PER_INSTANT {
            self.server.fire_timer();
            self.to_client.append(&mut self.server.outbox);
            self.client.drive(self.now, &mut self.to_server);
            if self.to_server.is_empty() && self.to_client.is_empty() {
                return;
            }
            for d in std::mem::take(&mut self.to_server) {
                self.server.receive(d);
            }
            self.to_client.append(&mut self.server.outbox);
            for d in std::mem::take(&mut self.to_client) {
                self.client.receive(self.now, d);
            }
        }
        panic!("datagrams still in flight after {MAX_ROUNDS_PER_INSTANT} rounds at one instant");
    }

    fn next_timeout(&mut self) -> Option<Instant> {
        let server = self
            .server
            .conn
            .as_mut()
            .and_then(|(_, c)| c.poll_timeout());
        server
            .into_iter()
            .chain(self.client.conn.poll_timeout())
            .min()
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..MAX_STEPS {
            self.settle();
            if done(self) {
                return;
            }
            let next = self
                .next_timeout()
                .unwrap_or_else(|| panic!("{what}: stalled with no timer armed"));
            self.set_now(self.now.max(next));
        }
        panic!("{what}: not reached after {MAX_STEPS} steps");
    }

    /// Has the client produce `n` 1-RTT datagrams carrying stream data, without delivering
    /// them, and switches the server to discarding its output: what follows is
    /// `server.receive` of each, in order, at the current instant.
    pub fn client_batch(&mut self, n: usize, load: Load) -> Vec<BytesMut> {
        self.server.discard_output();
        let mut out = Vec::with_capacity(n + CLIENT_GSO_SEGMENTS);
        match load {
            Load::Writes(size) => {
                let chunk = pattern(size);
                while out.len() < n {
                    assert!(self.client.write_all(&chunk), "client out of stream credit");
                    let before = out.len();
                    self.client.flush(self.now, &mut out);
                    assert!(out.len() > before, "a write produced no datagram");
                }
            }
            Load::FullPackets => {
                // More than `n` full datagrams' worth; only the first `n` are kept, so every
                // kept datagram is full (the tail would be a partial one).
                let chunk = pattern(64 * 1024);
                let mut written = 0;
                while written < (n + 1) * usize::from(Limits::default().max_udp_payload_size) {
                    assert!(self.client.write_all(&chunk), "client out of stream credit");
                    written += chunk.len();
                }
                self.client.flush(self.now, &mut out);
            }
        }
        assert!(
            out.len() >= n,
            "client produced {} of {n} datagrams",
            out.len()
        );
        out.truncate(n);
        out
    }
}

/// `len` bytes of a fixed pattern.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31)).collect()
}

fn forward_endpoint_events(endpoint: &mut Endpoint, ch: ConnectionHandle, conn: &mut Connection) {
    while let Some(event) = conn.poll_endpoint_events() {
        if let Some(reply) = endpoint.handle_event(ch, event) {
            conn.handle_event(reply);
        }
    }
}

/// Splits a (possibly GSO) transmit into wire datagrams, as the kernel would.
fn split_into(t: &quinn_proto::Transmit, buf: &[u8], out: &mut Vec<BytesMut>) {
    let segment = t.segment_size.unwrap_or(t.size).max(1);
    out.extend(buf[..t.size].chunks(segment).map(BytesMut::from));
}

/// Reads everything `id` has buffered; returns the byte count and whether FIN was read.
fn read_available(conn: &mut Connection, id: StreamId) -> (u64, bool) {
    let mut recv = conn.recv_stream(id);
    let mut chunks = match recv.read(true) {
        Ok(chunks) => chunks,
        Err(e) => panic!("stream {id} is not readable: {e}"),
    };
    let mut n = 0u64;
    let fin = loop {
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => n += chunk.bytes.len() as u64,
            Ok(None) => break true,
            Err(ReadError::Blocked) => break false,
            Err(e) => panic!("reading stream {id}: {e}"),
        }
    };
    // Freed credit is queued in the connection; the pass's poll_transmit sends it.
    let _ = chunks.finalize();
    (n, fin)
}

/// A server worker endpoint configured as every [`Pair`]'s, with no connection yet: for
/// measuring what the worker does with a new connection's first datagram.
pub fn server_endpoint(config: &PairConfig) -> Endpoint {
    Endpoint::new(
        config.server_endpoint.clone(),
        Some(config.server.clone()),
        true,
        Some(SERVER_SEED),
    )
}

/// `n` distinct client Initials (each a new connection: its own CIDs and ClientHello), as
/// a client's first datagram arrives at the server.
pub fn client_initials(config: &PairConfig, n: usize) -> Vec<BytesMut> {
    let now = Instant::now();
    let mut endpoint = Endpoint::new(
        config.client_endpoint.clone(),
        None,
        true,
        Some(CLIENT_SEED),
    );
    let mut buf = Vec::with_capacity(usize::from(Limits::default().max_udp_payload_size));
    (0..n)
        .map(|_| {
            let mut client_config = ClientConfig::new(config.client_crypto.clone());
            client_config.transport_config(config.client_transport.clone());
            let (_, mut conn) = endpoint
                .connect(now, client_config, SERVER_ADDR, "localhost")
                .expect("client starts a connection");
            buf.clear();
            let t = conn
                .poll_transmit(now, 1, &mut buf)
                .expect("a client's first transmit");
            BytesMut::from(&buf[..t.size])
        })
        .collect()
}
