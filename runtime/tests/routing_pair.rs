//! Deterministic, socket-free tests of cross-worker datagram routing.
//!
//! The server runs one `quinn_proto::Endpoint` per worker thread, each behind its own
//! SO_REUSEPORT socket. The kernel picks the socket (and so the worker) from a hash of the
//! 4-tuple, which knows nothing about QUIC: after a NAT rebinding the same connection's
//! datagrams can land on a worker whose endpoint has never heard of it. Server CIDs therefore
//! name their owning worker (`alknet_proto::cid`), and the runtime's driver forwards a
//! datagram whose destination CID names another worker to that worker
//! (`worker.rs`, `forward_if_foreign`).
//!
//! These tests rebuild that setup in memory, in the style of quinn-proto's own
//! `tests/util.rs` `Pair`: two worker endpoints sharing one `ServerConfig` and one reset key,
//! one client endpoint, a simulated kernel that hashes the client's address to a worker, and
//! the runtime's forwarding rule in front of the worker endpoints. Time is an `Instant` that
//! only moves when every endpoint is idle until its next timer, so nothing sleeps, nothing
//! binds a socket, and every loop is bounded.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_proto::cid::{destination_cid, CidLayout, Route};
use alknet_runtime::tls::{client_crypto, server_crypto, ClientAuth, ServerTrust, TlsIdentity};
use alknet_runtime::{Limits, WorkerCidGenerator};
use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, Connection, ConnectionError, ConnectionHandle, ConnectionId,
    ConnectionIdGenerator, DatagramEvent, Dir, Endpoint, EndpointConfig, Event, ReadError,
    ServerConfig, StreamId, Transmit, WriteError,
};

const WORKERS: usize = 2;
const SERVER_ID: u16 = 0x0a1c;
const ALPN: &[u8] = b"alknet/echo";
/// All workers share one address: they are SO_REUSEPORT sockets bound to the same port.
const SERVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 443);
/// The client's public IP; NAT rebinding keeps it and changes only the port.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// Datagrams a connection may coalesce into one GSO transmit, like the runtime's batches.
const MAX_GSO_SEGMENTS: usize = 10;
/// Bound on delivery rounds at one instant (datagrams in flight, no time passing).
const MAX_ROUNDS_PER_INSTANT: usize = 1_000;
/// Bound on timer-driven steps in one `run_until`/`run_for`.
const MAX_STEPS: usize = 10_000;

/// The simulated kernel's SO_REUSEPORT hash: deterministic in the client's address so a test
/// can choose an address that lands on the worker it wants.
fn kernel_pick(src: SocketAddr) -> usize {
    let ip: u32 = match src.ip() {
        IpAddr::V4(ip) => ip.octets().iter().map(|&b| u32::from(b)).sum(),
        IpAddr::V6(ip) => ip.octets().iter().map(|&b| u32::from(b)).sum(),
    };
    ((ip + u32::from(src.port())) % WORKERS as u32) as usize
}

/// A client address on `port` that the kernel hashes to `worker` (asserted, so a change to
/// the hash cannot silently turn a test into one that never leaves a single worker).
fn client_addr(port: u16, worker: usize) -> SocketAddr {
    let addr = SocketAddr::new(IpAddr::V4(CLIENT_IP), port);
    assert_eq!(
        kernel_pick(addr),
        worker,
        "{addr} should hash to worker {worker}"
    );
    addr
}

/// What the server application sends back for `request`: different from the request (so an
/// echo of the wrong bytes cannot pass) and derived from all of it.
fn reply_to(request: &[u8]) -> Vec<u8> {
    let mut reply = b"reply:".to_vec();
    reply.extend(request.iter().rev());
    reply
}

/// `len` bytes of a pattern that makes reordering or loss visible in a comparison.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Whether the kernel-side routing applies the runtime's forwarding rule.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forwarding {
    On,
    Off,
}

/// Which `ConnectionIdGenerator::validate` the worker endpoints use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CidValidation {
    /// The runtime's `WorkerCidGenerator`: a CID naming another worker is invalid, so the
    /// endpoint drops such a short-header packet silently.
    Runtime,
    /// The same CIDs, but quinn-proto's default `validate` (accept anything): an unknown
    /// short-header CID is answered with a stateless reset.
    AcceptAny,
}

/// `WorkerCidGenerator`'s CIDs with quinn-proto's default, permissive `validate`.
struct AcceptAnyCid(WorkerCidGenerator);

impl ConnectionIdGenerator for AcceptAnyCid {
    fn generate_cid(&mut self) -> ConnectionId {
        self.0.generate_cid()
    }

    fn cid_len(&self) -> usize {
        self.0.cid_len()
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.0.cid_lifetime()
    }
    // `validate` deliberately left at the trait default.
}

struct Datagram {
    src: SocketAddr,
    dst: SocketAddr,
    data: Bytes,
}

/// Splits a (possibly GSO) transmit into wire datagrams, as the kernel would.
fn split_transmit(t: &Transmit, buf: &[u8], src: SocketAddr) -> Vec<Datagram> {
    let contents = &buf[..t.size];
    let segment = t.segment_size.unwrap_or(t.size).max(1);
    contents
        .chunks(segment)
        .map(|seg| Datagram {
            src,
            dst: t.destination,
            data: Bytes::copy_from_slice(seg),
        })
        .collect()
}

/// Bytes still to be written to a stream, then FIN.
struct Outgoing {
    data: Vec<u8>,
    written: usize,
    finished: bool,
}

impl Outgoing {
    fn new(data: Vec<u8>) -> Self {
        Self {
            data,
            written: 0,
            finished: false,
        }
    }

    /// Writes as much as flow control allows; finishes the stream once all is written.
    fn flush(&mut self, conn: &mut Connection, id: StreamId) {
        let mut send = conn.send_stream(id);
        while self.written < self.data.len() {
            match send.write(&self.data[self.written..]) {
                Ok(0) | Err(WriteError::Blocked) => return,
                Ok(n) => self.written += n,
                Err(e) => panic!("writing stream {id}: {e}"),
            }
        }
        if !self.finished {
            send.finish()
                .expect("finishing a stream we have not finished yet");
            self.finished = true;
        }
    }

    fn done(&self) -> bool {
        self.finished
    }
}

/// Reads everything `id` has buffered into `buf`; true once the peer's FIN has been read.
fn read_available(conn: &mut Connection, id: StreamId, buf: &mut Vec<u8>) -> bool {
    let mut recv = conn.recv_stream(id);
    let mut chunks = recv
        .read(true)
        .unwrap_or_else(|e| panic!("stream {id} is not readable: {e}"));
    let fin = loop {
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => break true,
            Err(ReadError::Blocked) => break false,
            Err(e) => panic!("reading stream {id}: {e}"),
        }
    };
    // Flow-control credit this read freed is queued inside the connection either way; the
    // driver's next `poll_transmit` sends it, so the `ShouldTransmit` hint is not needed.
    let _ = chunks.finalize();
    fin
}

/// Polls a connection's timers, hands its endpoint events to `endpoint`, and collects its
/// transmits (split into wire datagrams) into `out`. Mirrors one pass of the runtime driver.
fn drive_connection(
    now: Instant,
    endpoint: &mut Endpoint,
    ch: ConnectionHandle,
    conn: &mut Connection,
    local: SocketAddr,
    out: &mut VecDeque<Datagram>,
) {
    let mut buf = Vec::new();
    // Transmitting can raise endpoint events (e.g. NeedIdentifiers) whose answers can make
    // more to transmit, so alternate until the connection has nothing more for the endpoint.
    for _ in 0..MAX_ROUNDS_PER_INSTANT {
        while let Some(t) = conn.poll_transmit(now, MAX_GSO_SEGMENTS, &mut buf) {
            out.extend(split_transmit(&t, &buf, local));
            buf.clear();
        }
        let mut any_event = false;
        while let Some(event) = conn.poll_endpoint_events() {
            any_event = true;
            if let Some(back) = endpoint.handle_event(ch, event) {
                conn.handle_event(back);
            }
        }
        if !any_event {
            return;
        }
    }
    panic!("connection {ch:?} kept raising endpoint events at one instant");
}

fn fire_timer(now: Instant, conn: &mut Connection) {
    if conn.poll_timeout().is_some_and(|t| t <= now) {
        conn.handle_timeout(now);
    }
}

/// A server connection and the echo application running on it.
struct ServerConn {
    ch: ConnectionHandle,
    conn: Connection,
    connected: bool,
    lost: Option<ConnectionError>,
    /// Requests being read, by stream.
    reading: BTreeMap<StreamId, Vec<u8>>,
    /// Replies being written, by stream.
    replying: BTreeMap<StreamId, Outgoing>,
    /// Every complete request received, in order.
    requests: Vec<Vec<u8>>,
}

impl ServerConn {
    /// The application: accept bi streams, read each request to its end, answer with
    /// `reply_to(request)` and finish.
    fn run_app(&mut self) {
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected => self.connected = true,
                Event::ConnectionLost { reason } => self.lost = Some(reason),
                _ => {}
            }
        }
        while let Some(id) = self.conn.streams().accept(Dir::Bi) {
            self.reading.insert(id, Vec::new());
        }
        let ids: Vec<StreamId> = self.reading.keys().copied().collect();
        for id in ids {
            let buf = self.reading.get_mut(&id).expect("id taken from the map");
            if read_available(&mut self.conn, id, buf) {
                let request = self.reading.remove(&id).expect("id taken from the map");
                self.replying.insert(id, Outgoing::new(reply_to(&request)));
                self.requests.push(request);
            }
        }
        for (&id, out) in self.replying.iter_mut() {
            out.flush(&mut self.conn, id);
        }
        self.replying.retain(|_, out| !out.done());
    }
}

/// One worker thread: its endpoint, its connections, and what happened to datagrams
/// handed to it.
struct ServerWorker {
    endpoint: Endpoint,
    conns: Vec<ServerConn>,
    /// Datagrams handed to this worker's endpoint (after any forwarding).
    handled: usize,
    /// Of those, how many the endpoint silently dropped (`handle` returned `None`).
    ignored: usize,
    /// Of those, how many the endpoint answered statelessly (`DatagramEvent::Response`):
    /// for a short-header packet, a stateless reset.
    responses: usize,
}

struct ClientSide {
    endpoint: Endpoint,
    /// The client's current public address (what the NAT maps it to).
    addr: SocketAddr,
    ch: ConnectionHandle,
    conn: Connection,
    connected: bool,
    lost: Option<ConnectionError>,
    sending: BTreeMap<StreamId, Outgoing>,
    /// Replies being read, by stream, and whether their FIN has arrived.
    replies: BTreeMap<StreamId, (Vec<u8>, bool)>,
}

impl ClientSide {
    fn run_app(&mut self) {
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected => self.connected = true,
                Event::ConnectionLost { reason } => self.lost = Some(reason),
                _ => {}
            }
        }
        if self.lost.is_some() {
            return;
        }
        for (&id, out) in self.sending.iter_mut() {
            out.flush(&mut self.conn, id);
        }
        self.sending.retain(|_, out| !out.done());
        for (&id, (buf, fin)) in self.replies.iter_mut() {
            if !*fin {
                *fin = read_available(&mut self.conn, id, buf);
            }
        }
    }
}

/// Two workers, a client, and the network between them.
struct Sim {
    start: Instant,
    now: Instant,
    layout: CidLayout,
    forwarding: Forwarding,
    workers: Vec<ServerWorker>,
    client: ClientSide,
    to_server: VecDeque<Datagram>,
    to_client: VecDeque<Datagram>,
    /// `forwarded[from][to]`: datagrams the kernel gave `from` that the rule handed to `to`.
    forwarded: [[usize; WORKERS]; WORKERS],
    /// Destination CID of every datagram the client sent, in order.
    client_dcids: Vec<Vec<u8>>,
    /// Server datagrams addressed to a client address the NAT no longer maps.
    lost_to_nat: usize,
}

impl Sim {
    fn new(client_addr: SocketAddr, forwarding: Forwarding, validation: CidValidation) -> Self {
        Self::with_limits(client_addr, forwarding, validation, &Limits::default())
    }

    /// [`Sim::new`] with the server's transport from `limits`.
    fn with_limits(
        client_addr: SocketAddr,
        forwarding: Forwarding,
        validation: CidValidation,
        limits: &Limits,
    ) -> Self {
        let layout = CidLayout::new(SERVER_ID, WORKERS).expect("valid CID layout");
        let identity = TlsIdentity::generate_self_signed(&[]).expect("self-signed certificate");

        // As in `server::start`: one ServerConfig (one token key) and one reset key shared by
        // every worker, so a reset token minted by one worker is valid from any other.
        let crypto = server_crypto(&identity, vec![ALPN.to_vec()], ClientAuth::None)
            .expect("server TLS config");
        let mut server_config = ServerConfig::with_crypto(crypto);
        server_config
            .transport_config(Arc::new(limits.transport_config()))
            .migration(true);
        let server_config = Arc::new(server_config);
        let reset_key = Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 64]));

        let workers = (0..WORKERS)
            .map(|i| {
                let worker = u8::try_from(i).expect("worker index fits a CID byte");
                let mut endpoint_config = EndpointConfig::new(reset_key.clone());
                match validation {
                    CidValidation::Runtime => endpoint_config
                        .cid_generator(move || Box::new(WorkerCidGenerator::new(layout, worker))),
                    CidValidation::AcceptAny => endpoint_config.cid_generator(move || {
                        Box::new(AcceptAnyCid(WorkerCidGenerator::new(layout, worker)))
                    }),
                };
                ServerWorker {
                    endpoint: Endpoint::new(
                        Arc::new(endpoint_config),
                        Some(server_config.clone()),
                        true,
                        Some([worker + 1; 32]),
                    ),
                    conns: Vec::new(),
                    handled: 0,
                    ignored: 0,
                    responses: 0,
                }
            })
            .collect();

        let now = Instant::now();
        let mut endpoint = Endpoint::new(
            Arc::new(EndpointConfig::default()),
            None,
            true,
            Some([0xc1; 32]),
        );
        let crypto = client_crypto(&ServerTrust::Insecure, vec![ALPN.to_vec()], None)
            .expect("client TLS config");
        let (ch, conn) = endpoint
            .connect(now, ClientConfig::new(crypto), SERVER_ADDR, "localhost")
            .expect("client endpoint starts a connection");

        Self {
            start: now,
            now,
            layout,
            forwarding,
            workers,
            client: ClientSide {
                endpoint,
                addr: client_addr,
                ch,
                conn,
                connected: false,
                lost: None,
                sending: BTreeMap::new(),
                replies: BTreeMap::new(),
            },
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            forwarded: [[0; WORKERS]; WORKERS],
            client_dcids: Vec::new(),
            lost_to_nat: 0,
        }
    }

    /// The simulated kernel plus the runtime's receive path: hash to a worker, then (if
    /// enabled) forward to the worker the destination CID names.
    fn deliver_to_server(&mut self, d: Datagram) {
        let picked = kernel_pick(d.src);
        let target = match self.layout.route(&d.data) {
            Route::Worker(owner)
                if self.forwarding == Forwarding::On && usize::from(owner) != picked =>
            {
                self.forwarded[picked][usize::from(owner)] += 1;
                usize::from(owner)
            }
            _ => picked,
        };
        let now = self.now;
        let worker = &mut self.workers[target];
        worker.handled += 1;
        let mut buf = Vec::new();
        match worker.endpoint.handle(
            now,
            d.src,
            None,
            None,
            BytesMut::from(&d.data[..]),
            &mut buf,
        ) {
            None => worker.ignored += 1,
            Some(DatagramEvent::NewConnection(incoming)) => {
                let mut response = Vec::new();
                match worker.endpoint.accept(incoming, now, &mut response, None) {
                    Ok((ch, conn)) => worker.conns.push(ServerConn {
                        ch,
                        conn,
                        connected: false,
                        lost: None,
                        reading: BTreeMap::new(),
                        replying: BTreeMap::new(),
                        requests: Vec::new(),
                    }),
                    Err(e) => panic!("worker {target} refused the connection: {}", e.cause),
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, event)) => worker
                .conns
                .iter_mut()
                .find(|c| c.ch == ch)
                .expect("endpoint routed to a connection this worker holds")
                .conn
                .handle_event(event),
            Some(DatagramEvent::Response(t)) => {
                worker.responses += 1;
                self.to_client.extend(split_transmit(&t, &buf, SERVER_ADDR));
            }
        }
    }

    /// Server datagrams reach the client only at its current address: after a rebinding
    /// the NAT has forgotten the old mapping.
    fn deliver_to_client(&mut self, d: Datagram) {
        if d.dst != self.client.addr {
            self.lost_to_nat += 1;
            return;
        }
        let mut buf = Vec::new();
        match self.client.endpoint.handle(
            self.now,
            d.src,
            None,
            None,
            BytesMut::from(&d.data[..]),
            &mut buf,
        ) {
            None => {}
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                assert_eq!(ch, self.client.ch, "the client has a single connection");
                self.client.conn.handle_event(event);
            }
            Some(DatagramEvent::Response(t)) => {
                let src = self.client.addr;
                self.to_server.extend(split_transmit(&t, &buf, src));
            }
            Some(DatagramEvent::NewConnection(_)) => {
                panic!("client endpoint accepted a connection")
            }
        }
    }

    /// Runs every connection's timers, application and transmits at the current instant.
    fn drive_all(&mut self) {
        let now = self.now;
        for worker in &mut self.workers {
            for sc in &mut worker.conns {
                fire_timer(now, &mut sc.conn);
                sc.run_app();
                drive_connection(
                    now,
                    &mut worker.endpoint,
                    sc.ch,
                    &mut sc.conn,
                    SERVER_ADDR,
                    &mut self.to_client,
                );
            }
        }
        let c = &mut self.client;
        fire_timer(now, &mut c.conn);
        c.run_app();
        let before = self.to_server.len();
        drive_connection(
            now,
            &mut c.endpoint,
            c.ch,
            &mut c.conn,
            c.addr,
            &mut self.to_server,
        );
        for d in self.to_server.iter().skip(before) {
            self.client_dcids.push(
                destination_cid(&d.data)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default(),
            );
        }
    }

    /// Drives everything and delivers datagrams (zero latency) until nothing is in flight.
    fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS_PER_INSTANT {
            self.drive_all();
            if self.to_server.is_empty() && self.to_client.is_empty() {
                return;
            }
            while let Some(d) = self.to_server.pop_front() {
                self.deliver_to_server(d);
            }
            while let Some(d) = self.to_client.pop_front() {
                self.deliver_to_client(d);
            }
        }
        panic!("datagrams still in flight after {MAX_ROUNDS_PER_INSTANT} rounds at one instant");
    }

    /// The earliest timer of any connection.
    fn next_timeout(&mut self) -> Option<Instant> {
        let servers = self.workers.iter_mut().flat_map(|w| w.conns.iter_mut());
        servers
            .filter_map(|sc| sc.conn.poll_timeout())
            .chain(self.client.conn.poll_timeout())
            .min()
    }

    /// Settles, then jumps to the next timer, until `done` holds.
    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        for _ in 0..MAX_STEPS {
            self.settle();
            if done(self) {
                return;
            }
            let Some(next) = self.next_timeout() else {
                panic!(
                    "{what}: stalled with no timer armed at +{:?}",
                    self.now - self.start
                );
            };
            self.now = self.now.max(next);
        }
        panic!(
            "{what}: not reached after {MAX_STEPS} steps (+{:?})",
            self.now - self.start
        );
    }

    /// Lets `d` of simulated time pass, firing every timer due in it.
    fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        for _ in 0..MAX_STEPS {
            self.settle();
            match self.next_timeout() {
                Some(next) if next <= deadline => self.now = self.now.max(next),
                _ => {
                    self.now = deadline;
                    self.settle();
                    return;
                }
            }
        }
        panic!("more than {MAX_STEPS} timer steps in {d:?}");
    }

    fn handshake(&mut self) {
        self.run_until("handshake", |s| {
            assert_eq!(
                s.client.lost, None,
                "client lost the connection during the handshake"
            );
            s.client.connected
                && s.workers
                    .iter()
                    .any(|w| w.conns.iter().any(|c| c.connected))
        });
    }

    /// Opens a bi stream and queues `request` on it (written and finished as flow control
    /// allows), without driving anything.
    fn send_request(&mut self, request: Vec<u8>) -> StreamId {
        let id = self
            .client
            .conn
            .streams()
            .open(Dir::Bi)
            .expect("the server grants bidirectional stream credit");
        self.client.sending.insert(id, Outgoing::new(request));
        self.client.replies.insert(id, (Vec::new(), false));
        id
    }

    /// Sends `request` on a new bi stream and returns the server's complete reply.
    fn exchange(&mut self, request: Vec<u8>) -> Vec<u8> {
        let id = self.send_request(request);
        self.run_until("reply to a request", |s| {
            if let Some(reason) = &s.client.lost {
                panic!("client connection lost while waiting for a reply: {reason}");
            }
            s.client.replies[&id].1
        });
        self.client
            .replies
            .remove(&id)
            .expect("reply stream tracked")
            .0
    }

    /// NAT rebinding: the same client endpoint and connection now appear from `addr`. The
    /// client does not know; only the server sees a new source address.
    fn rebind(&mut self, addr: SocketAddr) {
        self.client.addr = addr;
    }

    /// The single server connection, with the index of the worker holding it.
    fn server_conn(&mut self) -> (usize, &mut ServerConn) {
        let mut found = self
            .workers
            .iter_mut()
            .enumerate()
            .flat_map(|(i, w)| w.conns.iter_mut().map(move |c| (i, c)));
        let first = found.next().expect("a server connection exists");
        assert!(found.next().is_none(), "exactly one server connection");
        first
    }
}

#[test]
fn handshake_lands_on_kernel_chosen_worker_and_cids_name_it() {
    let addr = client_addr(40_001, 1);
    let mut sim = Sim::new(addr, Forwarding::On, CidValidation::Runtime);
    sim.handshake();
    let after_handshake = sim.client_dcids.len();

    // The Initial carried a client-chosen DCID, which names no worker: the kernel's choice
    // stands and the connection is created there.
    let first = sim
        .client_dcids
        .first()
        .expect("the client sent an Initial")
        .clone();
    assert_eq!(
        sim.layout.decode(&first),
        None,
        "client-chosen Initial DCID is not ours"
    );
    let (worker, _) = sim.server_conn();
    assert_eq!(
        worker, 1,
        "connection lives on the worker the kernel hashed the client to"
    );
    assert_eq!(sim.workers[1].endpoint.open_connections(), 1);
    assert_eq!(sim.workers[0].endpoint.open_connections(), 0);
    assert_eq!(sim.workers[0].handled, 0, "worker 0 never saw a datagram");

    // Make the connection carry short-header packets too, then check every CID the client
    // addressed the server by since the handshake.
    let request = b"hello, worker one".to_vec();
    assert_eq!(sim.exchange(request.clone()), reply_to(&request));
    let used = &sim.client_dcids[after_handshake..];
    assert!(
        !used.is_empty(),
        "the client sent datagrams after the handshake"
    );
    for dcid in used {
        assert_eq!(
            sim.layout.decode(dcid),
            Some(1),
            "client DCID {dcid:02x?} names worker 1"
        );
    }
    assert_eq!(
        sim.forwarded, [[0; WORKERS]; WORKERS],
        "nothing needed forwarding"
    );
}

/// Path MTU probes the server sends on one connection that carries one request of
/// `request_len` bytes (the reply is as long), and the MTU it settles on.
fn server_mtu_search(limits: &Limits, request_len: usize) -> (u64, u16) {
    let mut sim = Sim::with_limits(
        client_addr(40_003, 1),
        Forwarding::On,
        CidValidation::Runtime,
        limits,
    );
    sim.handshake();
    let request = payload(request_len, 3);
    assert_eq!(sim.exchange(request.clone()), reply_to(&request));
    // well past every probe's loss timer; the next search is 600 s away
    sim.run_for(Duration::from_secs(5));
    let (_, sc) = sim.server_conn();
    (
        sc.conn.stats().path.sent_plpmtud_probes,
        sc.conn.current_mtu(),
    )
}

#[test]
fn mtu_search_reaches_the_payload_limit_in_two_probes() {
    // searching as soon as the handshake is confirmed, as quinn does: 1336, then the limit
    let at_once = Limits {
        mtu_probe_after_packets: 0,
        ..Limits::default()
    };
    assert_eq!(
        server_mtu_search(&at_once, 8),
        (2, at_once.max_udp_payload_size)
    );
    // quinn's own minimum change (20) gets there in four: 1336, 1404, 1438, 1472
    let quinn = Limits {
        mtu_probe_min_change: 20,
        ..at_once
    };
    assert_eq!(
        server_mtu_search(&quinn, 8),
        (4, quinn.max_udp_payload_size)
    );
}

#[test]
fn a_short_connection_sends_no_mtu_probe_and_a_busy_one_searches() {
    let defaults = Limits::default();
    // a handshake and a small exchange: a few packets, no probe, QUIC's minimum MTU
    assert_eq!(
        server_mtu_search(&defaults, 8),
        (0, alknet_runtime::MIN_UDP_PAYLOAD_SIZE)
    );
    // a 300 KB reply (~250 packets at 1200 bytes): the search starts once 100 are sent
    assert_eq!(
        server_mtu_search(&defaults, 300_000),
        (2, defaults.max_udp_payload_size)
    );
}

#[test]
fn migrated_client_is_forwarded_to_owner_and_survives() {
    let old = client_addr(40_000, 0);
    let new = client_addr(40_001, 1);
    let mut sim = Sim::new(old, Forwarding::On, CidValidation::Runtime);
    sim.handshake();
    assert_eq!(sim.server_conn().0, 0, "handshake went through worker 0");

    let first = payload(2_000, 1);
    assert_eq!(sim.exchange(first.clone()), reply_to(&first));
    assert_eq!(sim.forwarded, [[0; WORKERS]; WORKERS]);
    let stats_before = sim.server_conn().1.conn.stats();

    sim.rebind(new);
    let dcids_before = sim.client_dcids.len();
    // Large enough to span many packets (and GSO batches) in both directions, and for the
    // reply to exceed the 3x anti-amplification allowance of an unvalidated path.
    let second = payload(60_000, 2);
    assert_eq!(
        sim.exchange(second.clone()),
        reply_to(&second),
        "data intact after rebinding"
    );

    assert!(
        sim.forwarded[1][0] > 0,
        "worker 1 forwarded the migrated datagrams to worker 0"
    );
    assert_eq!(sim.forwarded[0][1], 0);
    for dcid in &sim.client_dcids[dcids_before..] {
        assert_eq!(
            sim.layout.decode(dcid),
            Some(0),
            "client still addresses worker 0"
        );
    }
    assert_eq!(
        sim.workers[1].responses, 0,
        "worker 1 never answered (no stateless reset)"
    );
    assert!(
        sim.workers[1].conns.is_empty(),
        "the connection did not move to worker 1"
    );

    let (worker, sc) = sim.server_conn();
    assert_eq!(worker, 0);
    assert_eq!(
        sc.conn.remote_address(),
        new,
        "server migrated to the client's new address"
    );
    let stats = sc.conn.stats();
    assert!(
        stats.frame_tx.path_challenge > stats_before.frame_tx.path_challenge,
        "server challenged the new path"
    );
    assert!(
        stats.frame_rx.path_response > stats_before.frame_rx.path_response,
        "client answered the challenge from the new address"
    );
    assert_eq!(
        sc.requests,
        vec![first, second],
        "server read both requests through the stream API"
    );

    // If validation had failed, the PathValidation timer (3 PTO) would move the server back
    // to the old address. Let several seconds pass (well inside the 30 s idle timeout) and
    // exchange again: the new path must still be the one in use.
    sim.run_for(Duration::from_secs(5));
    let third = payload(5_000, 3);
    assert_eq!(sim.exchange(third.clone()), reply_to(&third));
    assert_eq!(
        sim.server_conn().1.conn.remote_address(),
        new,
        "new path stayed validated"
    );

    assert_eq!(
        sim.client.lost, None,
        "client connection survived the rebinding"
    );
    assert!(!sim.client.conn.is_closed(), "client connection is open");
    assert_eq!(sim.server_conn().1.lost, None, "server connection is open");
}

/// Handshake and one exchange via worker 0, then the client moves to an address the
/// kernel hashes to worker 1 and sends again, with forwarding off; runs until the client's
/// connection ends. Returns the simulation and the client's old address.
fn migrate_without_forwarding(validation: CidValidation) -> (Sim, SocketAddr) {
    let old = client_addr(40_000, 0);
    let new = client_addr(40_001, 1);
    let mut sim = Sim::new(old, Forwarding::Off, validation);
    sim.handshake();
    let first = payload(2_000, 1);
    assert_eq!(sim.exchange(first.clone()), reply_to(&first));

    sim.rebind(new);
    sim.send_request(payload(2_000, 2));
    sim.run_until("client sees the connection end", |s| {
        s.client.lost.is_some()
    });
    (sim, old)
}

#[test]
fn without_forwarding_the_wrong_worker_resets_the_connection() {
    // Worker endpoints here use quinn-proto's permissive default `validate`, i.e. what a
    // runtime without forwarding *and* without `WorkerCidGenerator::validate` would do. (With
    // the runtime's generator the packet is dropped instead; see the next test.)
    let (mut sim, old) = migrate_without_forwarding(CidValidation::AcceptAny);

    assert!(
        sim.workers[1].responses >= 1,
        "worker 1 answered the unknown CID statelessly (DatagramEvent::Response)"
    );
    assert_eq!(
        sim.client.lost,
        Some(ConnectionError::Reset),
        "the shared reset key made worker 1's stateless reset valid for the connection"
    );
    assert_eq!(sim.forwarded, [[0; WORKERS]; WORKERS], "forwarding was off");
    assert!(sim.workers[1].conns.is_empty());
    let (worker, sc) = sim.server_conn();
    assert_eq!(worker, 0);
    assert_eq!(
        sc.conn.remote_address(),
        old,
        "the owning worker never saw the new address"
    );
}

#[test]
fn without_forwarding_the_runtime_generator_blackholes_the_migrated_client() {
    // The runtime's `WorkerCidGenerator::validate` rejects CIDs naming another worker, so
    // without forwarding worker 1 drops the migrated client's packets silently: no reset,
    // but the connection is cut off until it idles out.
    let (mut sim, old) = migrate_without_forwarding(CidValidation::Runtime);

    assert_eq!(sim.workers[1].responses, 0, "no stateless reset was sent");
    assert!(
        sim.workers[1].ignored > 0,
        "worker 1 dropped the migrated packets"
    );
    assert_eq!(
        sim.workers[1].ignored, sim.workers[1].handled,
        "and nothing else reached it"
    );
    assert_eq!(sim.client.lost, Some(ConnectionError::TimedOut));
    let (worker, sc) = sim.server_conn();
    assert_eq!(worker, 0);
    assert_eq!(
        sc.conn.remote_address(),
        old,
        "the owning worker never saw the new address"
    );
    assert_eq!(sc.requests.len(), 1, "the second request never arrived");
}

/// A connection closed while its congestion window is full still sends CONNECTION_CLOSE.
/// Once closed, quinn-proto no longer processes ACKs and stops its loss timers, so nothing
/// would ever reopen the window; quinn-proto 0.11.19 gated the close packet on it anyway
/// and the peer only learned of the close from a stateless reset or its idle timeout
/// (quinn-rs/quinn#2785; the workspace patches in the fix, runtime/vendor/quinn-proto).
#[test]
fn close_leaves_while_the_congestion_window_is_full() {
    let mut sim = Sim::new(
        client_addr(40_005, 1),
        Forwarding::On,
        CidValidation::Runtime,
    );
    sim.handshake();

    // More queued than one window: the server sends until congestion control blocks it.
    let (_, sc) = sim.server_conn();
    let id = sc
        .conn
        .streams()
        .open(Dir::Uni)
        .expect("the client grants unidirectional stream credit");
    let mut bulk = Outgoing::new(payload(4 << 20, 5));
    bulk.flush(&mut sc.conn, id);
    let window = sc.conn.stats().path.cwnd;
    sim.drive_all();
    let sent: usize = sim.to_client.iter().map(|d| d.data.len()).sum();
    assert!(
        sent as u64 + u64::from(sim.server_conn().1.conn.current_mtu()) >= window,
        "the server filled its congestion window ({sent} of {window} bytes)"
    );
    // All of it is lost, so no ACK will come back, and the server closes.
    sim.to_client.clear();
    let now = sim.now;
    sim.server_conn().1.conn.close(
        now,
        quinn_proto::VarInt::from_u32(0x42),
        Bytes::from_static(b"bye"),
    );
    sim.settle();

    match &sim.client.lost {
        Some(ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(close.error_code, quinn_proto::VarInt::from_u32(0x42));
            assert_eq!(&close.reason[..], b"bye");
        }
        other => panic!("the client should have the server's close at once, has {other:?}"),
    }
    assert_eq!(
        sim.workers.iter().map(|w| w.responses).sum::<usize>(),
        0,
        "no stateless reset"
    );
}

/// A client's CONNECTION_CLOSE goes unanswered (the engine's transport sets
/// `answer_peer_close(false)`; RFC 9000, section 10.2.2, makes the answer optional): the
/// server learns the client's code and drains without sending another packet, where stock
/// quinn-proto answers with a CONNECTION_CLOSE of its own.
#[test]
fn a_peer_close_is_not_answered() {
    let mut sim = Sim::new(
        client_addr(40_006, 0),
        Forwarding::On,
        CidValidation::Runtime,
    );
    sim.handshake();
    let request = payload(300, 6);
    assert_eq!(sim.exchange(request.clone()), reply_to(&request));
    let now = sim.now;
    sim.client.conn.close(
        now,
        quinn_proto::VarInt::from_u32(7),
        Bytes::from_static(b"done"),
    );
    sim.drive_all();
    assert!(!sim.to_server.is_empty(), "the client sends its close");
    while let Some(d) = sim.to_server.pop_front() {
        sim.deliver_to_server(d);
    }
    sim.drive_all();
    match &sim.server_conn().1.lost {
        Some(ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(close.error_code, quinn_proto::VarInt::from_u32(7));
        }
        other => panic!("the server should have the client's close, has {other:?}"),
    }
    assert!(
        sim.to_client.is_empty(),
        "the server answered the close with {} datagram(s)",
        sim.to_client.len()
    );
}
