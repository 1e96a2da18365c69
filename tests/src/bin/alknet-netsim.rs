//! `alknet-netsim`: a user-space UDP relay that plays a bad network between a QUIC client
//! and server on loopback (this kernel has no `netem`). Per direction, with a seed: a rate
//! limit with a tail-drop queue, a fixed delay, random loss, random corruption (one byte
//! flipped, the length kept), one blackhole window, a link MTU (larger datagrams are
//! dropped, as a path with the don't-fragment bit set drops them), and NAT rebinding (the client's
//! packets leave from a new source port, or from another loopback address, from some time
//! on). ECN codepoints are carried across (read with IP_RECVTOS, set on the way out).
//!
//! It also reads the unprotected parts of QUIC long headers (RFC 9000, section 17.2) to
//! record what the interop runner's checks need: Retry packets and Initial tokens, the
//! packet types seen, and the server's bytes sent before the client's address was
//! validated (a client Handshake packet delivered) against the client's bytes received,
//! for the anti-amplification limit (RFC 9000, section 8.1).
//!
//! It writes a JSON report (`--report`) every 200 ms and at exit (SIGTERM/SIGINT or
//! `--max-seconds`), and prints its seed at start so a run can be repeated exactly.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(
    name = "alknet-netsim",
    about = "A seeded bad-network UDP relay for QUIC tests"
)]
struct Args {
    /// Address the client sends to.
    #[arg(long)]
    listen: SocketAddr,
    /// The server.
    #[arg(long)]
    server: SocketAddr,
    /// Seed of every random decision (random when not given; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Link rate per direction in Mbit/s (0 = unlimited).
    #[arg(long, default_value_t = 0.0)]
    rate_mbit: f64,
    /// Packets waiting for the link per direction before tail drop.
    #[arg(long, default_value_t = 25)]
    queue: usize,
    /// One-way delay per direction in ms.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Loss per direction in percent (both directions unless --loss-to-* is given).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Corruption per direction in percent: one random byte of the datagram is flipped.
    #[arg(long, default_value_t = 0.0)]
    corrupt: f64,
    /// The link's MTU in bytes (IP packet): a datagram whose IP packet would be larger is
    /// dropped, as on a real path (QUIC sets don't-fragment). Ethernet's 1500 by default,
    /// so the server's path MTU discovery meets a real limit even though the relay sits on
    /// loopback (whose own MTU is 64 KiB); 0 = none.
    #[arg(long, default_value_t = 1500)]
    mtu: usize,
    /// Drop everything in both directions from START ms (after the first packet) for
    /// DURATION ms: `START:DURATION`.
    #[arg(long)]
    blackhole: Option<String>,
    /// Change the client's source port every N ms (first after N ms).
    #[arg(long)]
    rebind_port_every_ms: Option<u64>,
    /// From N ms on, send the client's packets from this address (e.g. 127.0.0.2) on a
    /// new port.
    #[arg(long)]
    rebind_addr_at_ms: Option<u64>,
    #[arg(long, default_value = "127.0.0.2")]
    rebind_addr: IpAddr,
    /// Mark the client's unmarked datagrams ECT(0) on their way to the server (an
    /// ECN-capable path for a client that does not mark, to see the server count marks).
    #[arg(long)]
    ect0_to_server: bool,
    /// The JSON report file.
    #[arg(long)]
    report: PathBuf,
    /// Exit after this long no matter what (a bound for scripts).
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Datagrams larger than this are dropped (QUIC's are at most 65527 bytes).
const MAX_DATAGRAM: usize = 65_535;

/// What one direction did.
#[derive(Debug, Default, Clone)]
struct DirStats {
    received: u64,
    passed: u64,
    dropped_loss: u64,
    dropped_queue: u64,
    dropped_blackhole: u64,
    /// Larger than the link's MTU (path MTU probes, typically).
    dropped_mtu: u64,
    corrupted: u64,
    bytes_received: u64,
    initial: u64,
    zero_rtt: u64,
    handshake: u64,
    retry: u64,
    short: u64,
    initial_with_token: u64,
    /// Long-header packets of QUIC v1 and of QUIC v2 (RFC 9369); `initial` and `handshake`
    /// count both versions, `initial_v2` and `handshake_v2` the v2 ones among them.
    long_v1: u64,
    long_v2: u64,
    initial_v2: u64,
    handshake_v2: u64,
    ecn_ect0: u64,
    ecn_ect1: u64,
    ecn_ce: u64,
}

/// The report's JSON, written by hand (flat integer fields only).
trait ToJson {
    fn to_json(&self) -> String;
}

macro_rules! impl_json {
    ($t:ty { $($f:ident),* }) => {
        impl ToJson for $t {
            fn to_json(&self) -> String {
                let parts: Vec<String> = vec![$(format!("\"{}\":{}", stringify!($f), self.$f)),*];
                format!("{{{}}}", parts.join(","))
            }
        }
    };
}

/// Per-client record: datagrams each way (received by the relay), and the amplification
/// bookkeeping (RFC 9000, section 8.1): bytes each way before a client Handshake packet
/// reached the server.
#[derive(Debug, Default, Clone, Copy)]
struct Amplification {
    from_client: u64,
    from_server: u64,
    client_bytes: u64,
    server_bytes: u64,
    validated: bool,
    /// Largest server/client byte ratio seen before validation, in thousandths.
    worst_ratio_milli: u64,
    /// The same, counting the server's bytes before each datagram it sent (so a datagram
    /// sent with any budget left stays under 3: quinn-proto's rule, see README).
    worst_ratio_before_milli: u64,
}

struct Packet {
    data: Vec<u8>,
    ecn: Option<quinn_udp::EcnCodepoint>,
    /// When it leaves the link queue (serialization done) and when it is delivered.
    depart: Instant,
    deliver: Instant,
    /// The client it belongs to (front-side address).
    client: SocketAddr,
}

struct Link {
    stats: DirStats,
    queue: VecDeque<Packet>,
    link_free: Instant,
}

impl Link {
    fn new(now: Instant) -> Self {
        Self {
            stats: DirStats::default(),
            queue: VecDeque::new(),
            link_free: now,
        }
    }

    fn waiting(&self, now: Instant) -> usize {
        self.queue.iter().filter(|p| p.depart > now).count()
    }
}

/// One client's NAT mapping: the socket its packets leave from towards the server.
struct Mapping {
    back: Sock,
}

struct Sock {
    socket: UdpSocket,
    state: UdpSocketState,
}

impl Sock {
    fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Self { socket, state })
    }

    fn send(&self, to: SocketAddr, data: &[u8], ecn: Option<quinn_udp::EcnCodepoint>) {
        let t = Transmit {
            destination: to,
            ecn,
            contents: data,
            segment_size: None,
            src_ip: None,
        };
        // a full socket buffer loses the datagram, as a real link would
        let _ = self.state.try_send((&self.socket).into(), &t);
    }

    /// Reads what is waiting: (datagram, from, ecn) per datagram, GRO batches split.
    fn recv_all(
        &self,
        buf: &mut [u8],
        out: &mut Vec<(Vec<u8>, SocketAddr, Option<quinn_udp::EcnCodepoint>)>,
    ) {
        for _ in 0..64 {
            let mut meta = [RecvMeta::default()];
            let n = {
                let mut slices = [IoSliceMut::new(buf)];
                match self
                    .state
                    .recv((&self.socket).into(), &mut slices, &mut meta)
                {
                    Ok(n) => n,
                    Err(_) => return,
                }
            };
            if n == 0 {
                return;
            }
            let m = meta[0];
            let stride = m.stride.max(1);
            for seg in buf[..m.len].chunks(stride) {
                out.push((seg.to_vec(), m.addr, m.ecn));
            }
        }
    }
}

/// What the unprotected headers of one QUIC v1 or v2 packet say (`v2`: of QUIC v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PacketKind {
    Initial {
        token: bool,
        v2: bool,
    },
    ZeroRtt {
        v2: bool,
    },
    Handshake {
        v2: bool,
    },
    Retry {
        v2: bool,
    },
    Short,
    /// Neither v1 nor v2 (version negotiation, another version) or unparsable.
    Other,
}

const QUIC_V2: [u8; 4] = [0x6b, 0x33, 0x43, 0xcf];

/// A QUIC variable-length integer at `d[at..]`: (value, encoded length).
fn varint(d: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *d.get(at)?;
    let len = 1usize << (first >> 6);
    let bytes = d.get(at..at + len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// The packets coalesced in one datagram (RFC 9000, section 12.2): each long-header
/// packet states its length; a short-header or Retry packet takes the rest.
fn packets(d: &[u8]) -> Vec<PacketKind> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < d.len() && out.len() < 8 {
        let first = d[at];
        // The fixed bit (0x40) is not required: peers that both send `grease_quic_bit`
        // (RFC 9287; quinn does, aioquic does not) clear it at random. A datagram starts
        // with a packet, so its first byte is a long header (0x80) or a short one; after a
        // coalesced packet, a byte with neither bit is the padding that ends the datagram.
        if first & 0x80 == 0 {
            if at == 0 || first & 0x40 != 0 {
                out.push(PacketKind::Short);
            }
            break;
        }
        let v2 = match d.get(at + 1..at + 5) {
            Some([0, 0, 0, 1]) => false,
            Some(v) if v == QUIC_V2 => true,
            _ => {
                out.push(PacketKind::Other);
                break;
            }
        };
        // as v1's type bits: 0 Initial, 1 0-RTT, 2 Handshake, 3 Retry (v2 turns them by one)
        let kind = ((first >> 4) + if v2 { 3 } else { 0 }) & 0x3;
        if kind == 3 {
            out.push(PacketKind::Retry { v2 });
            break;
        }
        let Some(&dcid_len) = d.get(at + 5) else {
            break;
        };
        let scid_at = at + 6 + usize::from(dcid_len);
        let Some(&scid_len) = d.get(scid_at) else {
            break;
        };
        let mut p = scid_at + 1 + usize::from(scid_len);
        let mut token = false;
        if kind == 0 {
            let Some((len, n)) = varint(d, p) else { break };
            token = len > 0;
            p += n + usize::try_from(len).unwrap_or(usize::MAX / 2);
        }
        out.push(match kind {
            0 => PacketKind::Initial { token, v2 },
            1 => PacketKind::ZeroRtt { v2 },
            _ => PacketKind::Handshake { v2 },
        });
        let Some((len, n)) = varint(d, p) else { break };
        at = p
            .saturating_add(n)
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX / 2));
    }
    out
}

fn classify(stats: &mut DirStats, d: &[u8]) {
    for kind in packets(d) {
        let v2 = match kind {
            PacketKind::Initial { token, v2 } => {
                stats.initial += 1;
                stats.initial_v2 += u64::from(v2);
                if token {
                    stats.initial_with_token += 1;
                }
                Some(v2)
            }
            PacketKind::ZeroRtt { v2 } => {
                stats.zero_rtt += 1;
                Some(v2)
            }
            PacketKind::Handshake { v2 } => {
                stats.handshake += 1;
                stats.handshake_v2 += u64::from(v2);
                Some(v2)
            }
            PacketKind::Retry { v2 } => {
                stats.retry += 1;
                Some(v2)
            }
            PacketKind::Short => {
                stats.short += 1;
                None
            }
            PacketKind::Other => None,
        };
        match v2 {
            Some(true) => stats.long_v2 += 1,
            Some(false) => stats.long_v1 += 1,
            None => {}
        }
    }
}

fn count_ecn(stats: &mut DirStats, ecn: Option<quinn_udp::EcnCodepoint>) {
    match ecn {
        Some(quinn_udp::EcnCodepoint::Ect0) => stats.ecn_ect0 += 1,
        Some(quinn_udp::EcnCodepoint::Ect1) => stats.ecn_ect1 += 1,
        Some(quinn_udp::EcnCodepoint::Ce) => stats.ecn_ce += 1,
        None => {}
    }
}

struct Sim {
    args: Args,
    rng: StdRng,
    seed: u64,
    start: Option<Instant>,
    blackhole: Option<(Duration, Duration)>,
    front: Sock,
    mappings: HashMap<SocketAddr, Mapping>,
    to_server: Link,
    to_client: Link,
    amplification: HashMap<SocketAddr, Amplification>,
    rebinds: u64,
    last_rebind: Option<Instant>,
    rebound_addr: bool,
}

impl Sim {
    fn elapsed(&self, now: Instant) -> Duration {
        self.start.map_or(Duration::ZERO, |s| now - s)
    }

    fn in_blackhole(&self, now: Instant) -> bool {
        let e = self.elapsed(now);
        self.blackhole
            .is_some_and(|(from, len)| self.start.is_some() && e >= from && e < from + len)
    }

    fn back_bind_addr(&self) -> SocketAddr {
        let ip = if self.rebound_addr {
            self.args.rebind_addr
        } else if self.args.server.is_ipv6() {
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        } else {
            IpAddr::from([127, 0, 0, 1])
        };
        SocketAddr::new(ip, 0)
    }

    /// Applies loss, corruption, blackhole and the queue to a datagram entering a link.
    fn admit(
        &mut self,
        to_server: bool,
        mut data: Vec<u8>,
        ecn: Option<quinn_udp::EcnCodepoint>,
        client: SocketAddr,
        now: Instant,
    ) {
        if self.start.is_none() {
            self.start = Some(now);
        }
        let blackhole = self.in_blackhole(now);
        let loss = self.args.loss;
        let corrupt = self.args.corrupt;
        let rate = self.args.rate_mbit;
        let queue_cap = self.args.queue;
        let delay = Duration::from_millis(self.args.delay_ms);
        // draw every random number in a fixed order per packet, so a seed replays exactly
        let lose = self.rng.gen::<f64>() * 100.0 < loss;
        let flip = self.rng.gen::<f64>() * 100.0 < corrupt;
        let at = self.rng.gen_range(0..data.len().max(1));
        let mask = self.rng.gen_range(1..=255u8);
        let ip_udp_header = if self.args.listen.is_ipv6() { 48 } else { 28 };
        let link = if to_server {
            &mut self.to_server
        } else {
            &mut self.to_client
        };
        link.stats.received += 1;
        link.stats.bytes_received += data.len() as u64;
        count_ecn(&mut link.stats, ecn);
        if blackhole {
            link.stats.dropped_blackhole += 1;
            return;
        }
        if lose {
            link.stats.dropped_loss += 1;
            return;
        }
        if self.args.mtu > 0 && data.len() + ip_udp_header > self.args.mtu {
            link.stats.dropped_mtu += 1;
            return;
        }
        if flip && !data.is_empty() {
            data[at] ^= mask;
            link.stats.corrupted += 1;
        }
        if rate > 0.0 && link.waiting(now) >= queue_cap {
            link.stats.dropped_queue += 1;
            return;
        }
        let serialize = if rate > 0.0 {
            Duration::from_secs_f64((data.len() as f64 * 8.0) / (rate * 1e6))
        } else {
            Duration::ZERO
        };
        let depart = link.link_free.max(now) + serialize;
        link.link_free = depart;
        link.queue.push_back(Packet {
            data,
            ecn,
            depart,
            deliver: depart + delay,
            client,
        });
    }

    /// Delivers what is due; returns the next due time.
    fn deliver(&mut self, now: Instant) -> Option<Instant> {
        while self
            .to_server
            .queue
            .front()
            .is_some_and(|p| p.deliver <= now)
        {
            let Some(p) = self.to_server.queue.pop_front() else {
                break;
            };
            classify(&mut self.to_server.stats, &p.data);
            let amp = self.amplification.entry(p.client).or_default();
            if !amp.validated {
                amp.client_bytes += p.data.len() as u64;
                // a Handshake packet validates the address (RFC 9000, section 8.1)
                let handshake = |k: &PacketKind| matches!(k, PacketKind::Handshake { .. });
                if packets(&p.data).iter().any(handshake) {
                    amp.validated = true;
                }
            }
            if let Some(m) = self.mappings.get(&p.client) {
                m.back.send(self.args.server, &p.data, p.ecn);
                self.to_server.stats.passed += 1;
            }
        }
        while self
            .to_client
            .queue
            .front()
            .is_some_and(|p| p.deliver <= now)
        {
            let Some(p) = self.to_client.queue.pop_front() else {
                break;
            };
            classify(&mut self.to_client.stats, &p.data);
            self.front.send(p.client, &p.data, p.ecn);
            self.to_client.stats.passed += 1;
        }
        [self.to_server.queue.front(), self.to_client.queue.front()]
            .into_iter()
            .flatten()
            .map(|p| p.deliver)
            .min()
    }

    fn maybe_rebind(&mut self, now: Instant) {
        let elapsed = self.elapsed(now);
        if self.start.is_none() {
            return;
        }
        let mut rebind = false;
        if let Some(at) = self.args.rebind_addr_at_ms {
            if !self.rebound_addr && elapsed >= Duration::from_millis(at) {
                self.rebound_addr = true;
                rebind = true;
            }
        }
        if let Some(every) = self.args.rebind_port_every_ms {
            let every = Duration::from_millis(every);
            let due = self
                .last_rebind
                .map_or(elapsed >= every, |l| now - l >= every);
            if due {
                rebind = true;
            }
        }
        if !rebind {
            return;
        }
        self.last_rebind = Some(now);
        let bind = self.back_bind_addr();
        for m in self.mappings.values_mut() {
            match Sock::bind(bind) {
                Ok(s) => {
                    m.back = s;
                    self.rebinds += 1;
                }
                Err(e) => eprintln!("alknet-netsim: rebinding to {bind}: {e}"),
            }
        }
    }

    fn report(&self) -> String {
        let amp: Vec<String> = self
            .amplification
            .iter()
            .map(|(c, a)| {
                format!(
                    "{{\"client\":\"{c}\",\"from_client\":{},\"from_server\":{},\"client_bytes\":{},\"server_bytes\":{},\"validated\":{},\"worst_ratio\":{:.3},\"worst_ratio_before\":{:.3}}}",
                    a.from_client,
                    a.from_server,
                    a.client_bytes,
                    a.server_bytes,
                    a.validated,
                    a.worst_ratio_milli as f64 / 1000.0,
                    a.worst_ratio_before_milli as f64 / 1000.0
                )
            })
            .collect();
        format!(
            "{{\"seed\":{},\"to_server\":{},\"to_client\":{},\"rebinds\":{},\"clients\":{},\"amplification\":[{}]}}\n",
            self.seed,
            self.to_server.stats.to_json(),
            self.to_client.stats.to_json(),
            self.rebinds,
            self.mappings.len(),
            amp.join(",")
        )
    }

    fn write_report(&self) {
        let tmp = self.args.report.with_extension("tmp");
        if std::fs::write(&tmp, self.report()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.args.report);
        }
    }
}

impl_json!(DirStats {
    received,
    passed,
    dropped_loss,
    dropped_queue,
    dropped_blackhole,
    dropped_mtu,
    corrupted,
    bytes_received,
    initial,
    zero_rtt,
    handshake,
    retry,
    short,
    initial_with_token,
    long_v1,
    long_v2,
    initial_v2,
    handshake_v2,
    ecn_ect0,
    ecn_ect1,
    ecn_ce
});

fn parse_blackhole(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("--blackhole {s}: expected START_MS:DURATION_MS"))?;
    let a: u64 = a.parse().map_err(|e| format!("--blackhole start: {e}"))?;
    let b: u64 = b
        .parse()
        .map_err(|e| format!("--blackhole duration: {e}"))?;
    Ok((Duration::from_millis(a), Duration::from_millis(b)))
}

fn run(args: Args) -> Result<(), String> {
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!("alknet-netsim: seed {seed}");
    let blackhole = args.blackhole.as_deref().map(parse_blackhole).transpose()?;
    let front = Sock::bind(args.listen).map_err(|e| format!("binding {}: {e}", args.listen))?;
    let now = Instant::now();
    let deadline = now + Duration::from_secs(args.max_seconds);
    let mut sim = Sim {
        rng: StdRng::seed_from_u64(seed),
        seed,
        start: None,
        blackhole,
        front,
        mappings: HashMap::new(),
        to_server: Link::new(now),
        to_client: Link::new(now),
        amplification: HashMap::new(),
        rebinds: 0,
        last_rebind: None,
        rebound_addr: false,
        args,
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut got = Vec::new();
    let mut last_report = Instant::now();
    while !STOP.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            eprintln!("alknet-netsim: --max-seconds reached");
            break;
        }
        sim.maybe_rebind(now);
        let next = sim.deliver(now);
        if now - last_report >= Duration::from_millis(200) {
            sim.write_report();
            last_report = now;
        }
        // wait for a datagram or the next delivery, at most 20 ms
        let wait = next
            .map_or(Duration::from_millis(20), |n| {
                n.saturating_duration_since(now)
            })
            .min(Duration::from_millis(20));
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(1 + sim.mappings.len());
        fds.push(libc::pollfd {
            fd: sim.front.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        let clients: Vec<SocketAddr> = sim.mappings.keys().copied().collect();
        for c in &clients {
            fds.push(libc::pollfd {
                fd: sim.mappings[c].back.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout_ms = wait.as_millis().clamp(0, 20) as libc::c_int;
        // SAFETY: fds is a valid array of pollfd of the length passed.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready <= 0 {
            continue;
        }
        let now = Instant::now();
        if fds[0].revents != 0 {
            got.clear();
            sim.front.recv_all(&mut buf, &mut got);
            for (data, from, ecn) in got.drain(..) {
                if !sim.mappings.contains_key(&from) {
                    let bind = sim.back_bind_addr();
                    match Sock::bind(bind) {
                        Ok(back) => {
                            sim.mappings.insert(from, Mapping { back });
                        }
                        Err(e) => {
                            eprintln!("alknet-netsim: binding {bind}: {e}");
                            continue;
                        }
                    }
                }
                sim.amplification.entry(from).or_default().from_client += 1;
                let ecn = match ecn {
                    None if sim.args.ect0_to_server => Some(quinn_udp::EcnCodepoint::Ect0),
                    other => other,
                };
                sim.admit(true, data, ecn, from, now);
            }
        }
        for (i, c) in clients.iter().enumerate() {
            if fds[i + 1].revents == 0 {
                continue;
            }
            got.clear();
            if let Some(m) = sim.mappings.get(c) {
                m.back.recv_all(&mut buf, &mut got);
            }
            for (data, from, ecn) in got.drain(..) {
                if from != sim.args.server {
                    continue;
                }
                let amp = sim.amplification.entry(*c).or_default();
                amp.from_server += 1;
                if !amp.validated {
                    let before = amp.server_bytes * 1000 / amp.client_bytes.max(1);
                    amp.worst_ratio_before_milli = amp.worst_ratio_before_milli.max(before);
                    amp.server_bytes += data.len() as u64;
                    let ratio = amp.server_bytes * 1000 / amp.client_bytes.max(1);
                    amp.worst_ratio_milli = amp.worst_ratio_milli.max(ratio);
                }
                sim.admit(false, data, ecn, *c, now);
            }
        }
    }
    sim.write_report();
    eprint!("alknet-netsim: {}", sim.report());
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alknet-netsim: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_coalesced_long_headers() {
        // Initial (dcid 2, scid 1, no token, length 2) + Handshake (length 1) + short
        let d = [
            0xc0, 0, 0, 0, 1, 2, 9, 9, 1, 7, 0, 2, 0xaa, 0xbb, // Initial
            0xe0, 0, 0, 0, 1, 0, 0, 1, 0xcc, // Handshake
            0x41, 1, 2, // short
        ];
        assert_eq!(
            packets(&d),
            vec![
                PacketKind::Initial {
                    token: false,
                    v2: false
                },
                PacketKind::Handshake { v2: false },
                PacketKind::Short
            ]
        );
        let with_token = [0xc0, 0, 0, 0, 1, 2, 9, 9, 1, 7, 3, 1, 2, 3, 0];
        assert_eq!(
            packets(&with_token),
            vec![PacketKind::Initial {
                token: true,
                v2: false
            }]
        );
        assert_eq!(
            packets(&[0xf0, 0, 0, 0, 1, 0]),
            vec![PacketKind::Retry { v2: false }]
        );
        // QUIC v2 (RFC 9369): Initial 0b01, Handshake 0b11, Retry 0b00
        let v2 = [
            0xd0, 0x6b, 0x33, 0x43, 0xcf, 2, 9, 9, 1, 7, 0, 2, 0xaa, 0xbb, // Initial
            0xf0, 0x6b, 0x33, 0x43, 0xcf, 0, 0, 1, 0xcc, // Handshake
        ];
        assert_eq!(
            packets(&v2),
            vec![
                PacketKind::Initial {
                    token: false,
                    v2: true
                },
                PacketKind::Handshake { v2: true }
            ]
        );
        assert_eq!(
            packets(&[0xc0, 0x6b, 0x33, 0x43, 0xcf, 0]),
            vec![PacketKind::Retry { v2: true }]
        );
        assert_eq!(packets(&[0xc0, 0xff, 0, 0, 1]), vec![PacketKind::Other]);
        let mut padded = d[..14].to_vec();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(
            packets(&padded),
            vec![PacketKind::Initial {
                token: false,
                v2: false
            }]
        );
        // greased fixed bit (RFC 9287): a Handshake and a short header with 0x40 clear
        let greased = [0xa0, 0, 0, 0, 1, 0, 0, 1, 0xcc, 0x01, 1, 2];
        assert_eq!(packets(&greased), vec![PacketKind::Handshake { v2: false }]);
        assert_eq!(packets(&[0x01, 1, 2]), vec![PacketKind::Short]);
        assert_eq!(varint(&[0x40, 0x25], 0), Some((0x25, 2)));
        let mut s = DirStats::default();
        classify(&mut s, &d);
        classify(&mut s, &with_token);
        classify(&mut s, &v2);
        assert_eq!(
            (s.initial, s.initial_with_token, s.handshake, s.short),
            (3, 1, 2, 1)
        );
        assert_eq!(
            (s.long_v1, s.long_v2, s.initial_v2, s.handshake_v2),
            (3, 2, 1, 1)
        );
        assert!(s.to_json().contains("\"initial_with_token\":1"));
        // truncated headers end the walk, never panic
        for n in 0..d.len() {
            let _ = packets(&d[..n]);
        }
    }
}
