//! Classic DNS beside QUIC: UDP (answers truncated to the client's EDNS0 size, TC set so it
//! retries over TCP) and TCP (length-prefixed, pipelined, RFC 7766) on `[dns] udp_listen`
//! and `tcp_listen`, both off by default.
//!
//! UDP answers pass response rate limiting ([`crate::rrl`]) against reflection. Like the
//! QUIC side, each listener thread runs its own monoio loop with its own
//! SO_REUSEPORT socket on the same address, so the kernel spreads clients over them with
//! no shared queue. These threads are the DNS listener's own, started beside the engine's
//! workers (the engine has no hook to run extra sockets on its workers).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use crate::answer_cache::AnswerCache;
use crate::catalog::SharedCatalog;
use crate::forward::Forwarder;
use crate::framing::{frame, FrameDecoder};
use crate::limits::{DnsConfig, MAX_MESSAGE_SIZE};
use crate::responder::{self, Asker, Parsed};
use crate::rrl::{RateLimiter, Verdict};
use crate::DnsState;

/// Bytes read from a TCP connection at once.
const TCP_READ: usize = 16 * 1024;

/// The bound addresses of the running classic listeners.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassicAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
}

/// Binds `udp_listen`/`tcp_listen` now (errors surface at start) with `threads` sockets
/// each, and serves them from as many threads, which run for the life of the process.
pub fn start_classic(dns: &DnsState, threads: usize) -> io::Result<ClassicAddrs> {
    let (config, catalog, forwarder) = (&*dns.config, &dns.catalog, &dns.forwarder);
    let threads = threads.max(1);
    let mut addrs = ClassicAddrs::default();
    let mut udp = Vec::new();
    if let Some(mut addr) = config.udp_listen {
        for _ in 0..threads {
            let s = reuseport_socket(addr, socket2::Type::DGRAM)?;
            // a port of 0 is chosen by the first bind; the others join it
            addr = local(&s)?;
            udp.push(std::net::UdpSocket::from(s));
        }
        addrs.udp = Some(addr);
    }
    let mut tcp = Vec::new();
    if let Some(mut addr) = config.tcp_listen {
        for _ in 0..threads {
            let s = reuseport_socket(addr, socket2::Type::STREAM)?;
            s.listen(1024)?;
            addr = local(&s)?;
            tcp.push(std::net::TcpListener::from(s));
        }
        addrs.tcp = Some(addr);
    }
    let open_tcp = Arc::new(AtomicUsize::new(0));
    for i in 0..threads {
        let udp = udp.pop();
        let tcp = tcp.pop();
        if udp.is_none() && tcp.is_none() {
            break;
        }
        let catalog = catalog.clone();
        let config = config.clone();
        let open_tcp = open_tcp.clone();
        let forwarder = forwarder.clone();
        std::thread::Builder::new()
            .name(format!("dns-classic-{i}"))
            .spawn(move || {
                let run = alknet_runtime::rt::run_local(|_| async move {
                    if let Some(tcp) = tcp {
                        match monoio::net::TcpListener::from_std(tcp) {
                            Ok(l) => {
                                let (catalog, config) = (catalog.clone(), config.clone());
                                let forwarder = forwarder.clone();
                                monoio::spawn(serve_tcp(l, catalog, forwarder, config, open_tcp));
                            }
                            Err(e) => tracing::error!("dns tcp listener: {e}"),
                        }
                    }
                    match udp.map(monoio::net::udp::UdpSocket::from_std) {
                        Some(Ok(s)) => serve_udp(s, catalog, forwarder, &config).await,
                        Some(Err(e)) => tracing::error!("dns udp socket: {e}"),
                        None => std::future::pending().await,
                    }
                });
                if let Err(e) = run {
                    tracing::error!("dns listener thread: {e}");
                }
            })?;
    }
    Ok(addrs)
}

/// Receive and send buffer asked for on each classic UDP socket. The kernel's default
/// (~208 KiB) holds about 2 000 queries: a burst of queries from many clients, or a
/// scheduling delay of the listener thread at 100 000 queries/s, overflows it and the kernel
/// drops the queries unanswered (counted in `/proc/net/snmp`, `Udp: RcvbufErrors`). The
/// kernel caps the request at `net.core.rmem_max` / `wmem_max`. A tuning constant.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn reuseport_socket(addr: SocketAddr, ty: socket2::Type) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), ty, None)?;
    s.set_reuse_port(true)?;
    if ty == socket2::Type::STREAM {
        s.set_reuse_address(true)?;
    } else {
        // best effort: capped by the kernel, never an error
        let _ = s.set_recv_buffer_size(UDP_SOCKET_BUFFER_BYTES);
        let _ = s.set_send_buffer_size(UDP_SOCKET_BUFFER_BYTES);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

fn local(s: &socket2::Socket) -> io::Result<SocketAddr> {
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))
}

/// Receives kept in flight on each UDP socket. With one, every query costs the loop a
/// wait for its datagram and one for its answer's send; with many, one pass over the
/// io_uring completion queue reaps several datagrams and sends (NSD batches with
/// recvmmsg for the same reason). Each holds a 64 KiB buffer. A tuning constant.
pub const UDP_RECEIVES_IN_FLIGHT: usize = 16;

/// [`UDP_RECEIVES_IN_FLIGHT`] receive loops on one socket, sharing its rate limiter.
async fn serve_udp(
    socket: monoio::net::udp::UdpSocket,
    catalog: SharedCatalog,
    forwarder: Option<Arc<Forwarder>>,
    config: &DnsConfig,
) {
    let rrl = Rc::new(RefCell::new(RateLimiter::new(
        config.rrl_responses_per_second,
        config.rrl_slip,
        config.rrl_table_size,
    )));
    let socket = Rc::new(socket);
    let payload = config.udp_payload_size;
    let answers = AnswerCache::new(config.answer_cache_bytes).map(|c| Rc::new(RefCell::new(c)));
    for _ in 1..UDP_RECEIVES_IN_FLIGHT {
        let udp = Udp {
            socket: socket.clone(),
            catalog: catalog.clone(),
            forwarder: forwarder.clone(),
            rrl: rrl.clone(),
            answers: answers.clone(),
            payload,
        };
        monoio::spawn(udp.serve());
    }
    Udp {
        socket,
        catalog,
        forwarder,
        rrl,
        answers,
        payload,
    }
    .serve()
    .await;
}

/// One receive loop of a UDP socket.
struct Udp {
    socket: Rc<monoio::net::udp::UdpSocket>,
    catalog: SharedCatalog,
    forwarder: Option<Arc<Forwarder>>,
    rrl: Rc<RefCell<RateLimiter>>,
    /// This socket's answers by query bytes (its receive loops share it).
    answers: Option<Rc<RefCell<AnswerCache>>>,
    payload: u16,
}

impl Udp {
    /// One datagram at a time: answer, send, next; a forwarded query runs as its own task
    /// so the socket keeps being read. A query that cannot be answered (no header, or a
    /// response) is dropped.
    async fn serve(self) {
        let socket = &self.socket;
        let mut buf = vec![0u8; MAX_MESSAGE_SIZE];
        loop {
            let (res, b) = socket.recv_from(buf).await;
            buf = b;
            let Ok((n, peer)) = res else {
                continue;
            };
            let query = &buf[..n];
            let catalog = self.catalog.load_full();
            // a query answered before from this catalog (so a valid one): the same answer
            let cached = self
                .answers
                .as_ref()
                .and_then(|a| a.borrow_mut().get(&catalog, query));
            if let Some(reply) = cached {
                // the borrow must end before the send: the other receive loops check too
                let verdict = self
                    .rrl
                    .borrow_mut()
                    .check(peer.ip(), std::time::Instant::now());
                match verdict {
                    Verdict::Send => send_udp(socket, reply, peer).await,
                    Verdict::Slip => {
                        if let Parsed::Query(q) = responder::parse(query) {
                            send_udp(socket, responder::truncated(&q), peer).await;
                        }
                    }
                    Verdict::Drop => {}
                }
                continue;
            }
            let reply = match responder::parse(query) {
                Parsed::Query(q) => {
                    let verdict = self
                        .rrl
                        .borrow_mut()
                        .check(peer.ip(), std::time::Instant::now());
                    match verdict {
                        Verdict::Send => {}
                        Verdict::Slip => {
                            send_udp(socket, responder::truncated(&q), peer).await;
                            continue;
                        }
                        Verdict::Drop => continue,
                    }
                    let limit = responder::udp_limit(&q, self.payload);
                    let forward = self.forwarder.as_ref().filter(|f| {
                        f.allows(peer.ip(), false) && responder::forwardable(&catalog, &q)
                    });
                    if let Some(f) = forward {
                        let (f, socket) = (f.clone(), socket.clone());
                        monoio::spawn(async move {
                            let reply = f.answer(&q, limit).await;
                            send_udp(&socket, reply, peer).await;
                        });
                        continue;
                    }
                    let reply = responder::answer(&catalog, &q, limit);
                    if let Some(a) = &self.answers {
                        if responder::cacheable(&catalog, &q) {
                            a.borrow_mut().insert(&catalog, query, &reply);
                        }
                    }
                    reply
                }
                Parsed::Malformed(h) => responder::formerr(&h),
                Parsed::Ignore => continue,
            };
            send_udp(socket, reply, peer).await;
        }
    }
}

async fn send_udp(socket: &monoio::net::udp::UdpSocket, reply: Vec<u8>, peer: SocketAddr) {
    let (res, _) = socket.send_to(reply, peer).await;
    if let Err(e) = res {
        tracing::debug!(%peer, "dns udp send: {e}");
    }
}

async fn serve_tcp(
    listener: monoio::net::TcpListener,
    catalog: SharedCatalog,
    forwarder: Option<Arc<Forwarder>>,
    config: DnsConfig,
    open: Arc<AtomicUsize>,
) {
    let config = Rc::new(config);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        if open.fetch_add(1, Ordering::Relaxed) >= config.max_tcp_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let (catalog, config, open) = (catalog.clone(), config.clone(), open.clone());
        let forwarder = forwarder.clone();
        let asker = Asker {
            source: peer.ip(),
            may_recurse: false,
        };
        monoio::spawn(async move {
            let fwd = forwarder.as_deref();
            if let Err(e) = serve_tcp_connection(stream, &catalog, fwd, asker, &config).await {
                tracing::debug!(%peer, "dns tcp connection: {e}");
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Pipelined queries on one TCP connection, answered in order (a forwarded query holds
/// the ones behind it), until the client closes, sends something unanswerable, or idles
/// past `tcp_idle_timeout_ms`.
async fn serve_tcp_connection(
    mut stream: monoio::net::TcpStream,
    catalog: &SharedCatalog,
    forwarder: Option<&Forwarder>,
    asker: Asker,
    config: &DnsConfig,
) -> io::Result<()> {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; TCP_READ];
    loop {
        let (res, b) = match monoio::time::timeout(config.tcp_idle_timeout, stream.read(buf)).await
        {
            Ok(r) => r,
            Err(_) => return Ok(()), // idle
        };
        buf = b;
        let n = res?;
        if n == 0 {
            return Ok(());
        }
        decoder.push(&buf[..n]);
        let mut out = Vec::new();
        while let Some(message) = decoder.next_message() {
            let reply = match responder::parse(&message) {
                Parsed::Query(q) => {
                    responder::answer_query(catalog, forwarder, &q, MAX_MESSAGE_SIZE, asker).await
                }
                Parsed::Malformed(h) => responder::formerr(&h),
                Parsed::Ignore => return Err(io::Error::other("not a DNS query")),
            };
            if let Some([len, body]) = frame(Bytes::from(reply)) {
                out.extend_from_slice(&len);
                out.extend_from_slice(&body);
            }
        }
        if !out.is_empty() {
            let (res, _) = stream.write_all(out).await;
            res?;
        }
    }
}
