//! Classic DNS beside QUIC: UDP (answers truncated to the client's EDNS0 size, TC set so it
//! retries over TCP) and TCP (length-prefixed, pipelined and answered out of order as the
//! answers are ready, RFC 7766 §6.2.1.1, through `crate::stream`) on `[dns] udp_listen`
//! and `tcp_listen`, both off by default.
//!
//! Thread-per-core like the QUIC side: [`ClassicListeners::bind`] binds one SO_REUSEPORT
//! UDP socket and one TCP listener per worker on the configured addresses (so bind errors
//! surface before the server starts), and as a [`WorkerHook`] it serves socket `i` on
//! worker `i`, so the kernel spreads clients over the workers with no shared queue.
//! [`start_classic`] serves the same sockets from threads of their own, for a process
//! without an engine (tools, tests).
//!
//! UDP answers pass response rate limiting ([`crate::rrl`]) against reflection. A UDP
//! socket is read in batches (`crate::udp_batch`: `recvmmsg`, then one `sendmmsg` for
//! the batch's answers). A panic while answering one query is logged and drops that
//! query only; the listener keeps serving.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alknet_runtime::rt::{panic_message, spawn_guarded};
use alknet_runtime::{accept_or_pause, WorkerHook, WorkerStart};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use tracing::Instrument;

use crate::answer_cache::AnswerCache;
use crate::catalog::SharedCatalog;
use crate::forward::Forwarder;
use crate::limits::{DnsConfig, MAX_MESSAGE_SIZE};
use crate::responder::{self, Asker, Channel, Parsed};
use crate::rrl::{RateLimiter, Verdict};
use crate::stream::{Out, StreamAnswerer, StreamEnd, WRITE_QUEUE};
use crate::udp_batch::{RecvBatch, SendBatch};
use crate::DnsState;

/// Bytes read from a TCP connection at once.
const TCP_READ: usize = 16 * 1024;

/// The bound addresses of the running classic listeners.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassicAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
}

/// One worker's share of the listeners.
#[derive(Default)]
struct WorkerSockets {
    udp: Option<std::net::UdpSocket>,
    tcp: Option<std::net::TcpListener>,
}

/// The classic listeners' sockets, bound, waiting to be served one set per worker.
pub struct ClassicListeners {
    dns: DnsState,
    addrs: ClassicAddrs,
    /// By worker index; a worker takes its own when it starts.
    sockets: Mutex<Vec<WorkerSockets>>,
    /// TCP connections open on all workers (`max_tcp_connections`).
    open_tcp: Arc<AtomicUsize>,
}

impl ClassicListeners {
    /// Binds `udp_listen`/`tcp_listen` now with `workers` sockets each (UDP: the engine's
    /// [`alknet_runtime::bind_reuseport_group`]; TCP: its
    /// [`alknet_runtime::bind_tcp_reuseport_group`]).
    pub fn bind(dns: &DnsState, workers: usize) -> io::Result<Self> {
        let workers = workers.max(1);
        let mut sockets: Vec<WorkerSockets> =
            (0..workers).map(|_| WorkerSockets::default()).collect();
        let mut addrs = ClassicAddrs::default();
        if let Some(addr) = dns.config.udp_listen {
            // the engine's group bind: a probe refuses a port another process holds, and
            // port 0 is picked by a plain bind (a reuseport bind to port 0 may land on
            // another reuseport group's port of the same user and share its datagrams)
            let group =
                alknet_runtime::bind_reuseport_group(addr, workers, UDP_SOCKET_BUFFER_BYTES)
                    .map_err(io::Error::other)?;
            addrs.udp = Some(group[0].local_addr()?);
            for (w, s) in sockets.iter_mut().zip(group) {
                w.udp = Some(s);
            }
        }
        if let Some(addr) = dns.config.tcp_listen {
            // the same group bind as the QUIC port's TCP listeners
            let group = alknet_runtime::bind_tcp_reuseport_group(addr, workers, TCP_BACKLOG)
                .map_err(io::Error::other)?;
            addrs.tcp = Some(group[0].local_addr()?);
            for (w, l) in sockets.iter_mut().zip(group) {
                w.tcp = Some(l);
            }
        }
        Ok(Self {
            dns: dns.clone(),
            addrs,
            sockets: Mutex::new(sockets),
            open_tcp: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn addrs(&self) -> ClassicAddrs {
        self.addrs
    }

    /// Serves worker `index`'s sockets as tasks on the current monoio runtime.
    fn serve(&self, index: usize) -> io::Result<()> {
        let mine = {
            let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            match sockets.get_mut(index) {
                Some(s) => std::mem::take(s),
                None => return Ok(()),
            }
        };
        let DnsState {
            catalog,
            config,
            forwarder,
        } = self.dns.clone();
        if let Some(tcp) = mine.tcp {
            let listener = monoio::net::TcpListener::from_std(tcp)?;
            let open = self.open_tcp.clone();
            spawn_guarded(
                "dns tcp listener",
                serve_tcp(listener, self.dns.clone(), open),
            );
        }
        if let Some(udp) = mine.udp {
            let socket = monoio::net::udp::UdpSocket::from_std(udp)?;
            spawn_guarded(
                "dns udp listener",
                serve_udp(socket, catalog, forwarder, config),
            );
        }
        Ok(())
    }
}

impl WorkerHook for ClassicListeners {
    fn on_worker_start(&self, start: WorkerStart) -> io::Result<()> {
        let bound = self.sockets.lock().map_or(0, |s| s.len());
        if bound != start.workers {
            // a socket no worker serves would still get its share of the queries
            return Err(io::Error::other(format!(
                "classic dns sockets were bound for {bound} workers, the server runs {}",
                start.workers
            )));
        }
        self.serve(start.index)
    }
}

/// Binds the listeners with `threads` sockets each and serves them from as many threads
/// of their own, which run for the life of the process: for a process without an engine
/// (a server uses [`ClassicListeners`] as a [`WorkerHook`] instead).
pub fn start_classic(dns: &DnsState, threads: usize) -> io::Result<ClassicAddrs> {
    let listeners = Arc::new(ClassicListeners::bind(dns, threads)?);
    for i in 0..threads.max(1) {
        let listeners = listeners.clone();
        std::thread::Builder::new()
            .name(format!("dns-classic-{i}"))
            .spawn(move || {
                let run = alknet_runtime::rt::run_local(|_| async move {
                    match listeners.serve(i) {
                        Ok(()) => std::future::pending().await,
                        Err(e) => tracing::error!("dns listener: {e}"),
                    }
                });
                if let Err(e) = run {
                    tracing::error!("dns listener thread: {e}");
                }
            })?;
    }
    Ok(listeners.addrs())
}

/// Receive and send buffer asked for on each classic UDP socket. The kernel's default
/// (~208 KiB) holds about 2 000 queries: a burst of queries from many clients, or a
/// scheduling delay of the worker at 100 000 queries/s, overflows it and the kernel
/// drops the queries unanswered (counted in `/proc/net/snmp`, `Udp: RcvbufErrors`). The
/// kernel caps the request at `net.core.rmem_max` / `wmem_max`. A tuning constant.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Connections each classic TCP listener's accept queue holds before the kernel refuses
/// more (`listen(2)`'s backlog; the kernel caps it at `net.core.somaxconn`). A tuning
/// constant.
pub const TCP_BACKLOG: u32 = 1024;

/// Datagrams taken from a UDP socket per `recvmmsg` (and answers sent per `sendmmsg`).
/// NSD takes 100. Each holds a receive buffer of [`MAX_MESSAGE_SIZE`] bytes (only the
/// datagram's own bytes are written). A tuning constant.
pub const UDP_BATCH: usize = 32;

/// Serves one UDP socket: batches of queries answered from the catalog (through the
/// socket's answer cache and rate limiter), forwarded ones as tasks of their own.
async fn serve_udp(
    socket: monoio::net::udp::UdpSocket,
    catalog: SharedCatalog,
    forwarder: Option<Arc<Forwarder>>,
    config: Arc<DnsConfig>,
) {
    let socket = Rc::new(socket);
    let mut udp = Udp {
        socket: socket.clone(),
        catalog,
        forwarder,
        rrl: RateLimiter::new(
            config.rrl_responses_per_second,
            config.rrl_slip,
            config.rrl_table_size,
        ),
        answers: AnswerCache::new(config.answer_cache_bytes),
        payload: config.udp_payload_size,
    };
    serve_datagrams(&socket, UDP_BATCH, |query, peer, now| {
        udp.respond(query, peer, now)
    })
    .await;
}

/// The receive loop of a UDP socket: waits until it is readable, takes up to `batch`
/// datagrams, asks `respond` for each one's answer and sends the answers together. A
/// panic in `respond` is logged and loses only that datagram's answer. Returns only if
/// the socket fails.
async fn serve_datagrams<F>(socket: &monoio::net::udp::UdpSocket, batch: usize, mut respond: F)
where
    F: FnMut(&[u8], SocketAddr, Instant) -> Option<Vec<u8>>,
{
    let fd = socket.as_raw_fd();
    let mut recv = RecvBatch::new(batch, MAX_MESSAGE_SIZE);
    let mut send = SendBatch::default();
    loop {
        let n = match recv.recv(fd) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.readable(false).await {
                    tracing::error!("dns udp socket: {e}");
                    return;
                }
                continue;
            }
            Err(e) => {
                // e.g. ECONNREFUSED queued by an earlier send's ICMP error: nothing lost
                tracing::debug!("dns udp receive: {e}");
                continue;
            }
        };
        let now = Instant::now();
        for i in 0..n {
            let Some((query, peer)) = recv.datagram(i) else {
                continue;
            };
            match catch_unwind(AssertUnwindSafe(|| respond(query, peer, now))) {
                Ok(Some(answer)) => send.push(answer, peer),
                Ok(None) => {}
                Err(p) => {
                    tracing::error!(%peer, panic = %panic_message(&*p), "dns udp query panicked");
                }
            }
        }
        while !send.is_empty() {
            match send.send(fd) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = socket.writable(false).await {
                        tracing::error!("dns udp socket: {e}");
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!("dns udp send: {e}");
                    send.skip();
                }
            }
        }
    }
}

/// One UDP socket's answering state.
struct Udp {
    socket: Rc<monoio::net::udp::UdpSocket>,
    catalog: SharedCatalog,
    forwarder: Option<Arc<Forwarder>>,
    rrl: RateLimiter,
    /// This socket's answers by query bytes.
    answers: Option<AnswerCache>,
    payload: u16,
}

impl Udp {
    /// The answer to one datagram, to send now; `None` for one dropped (no header, a
    /// response, rate limited) or forwarded (its task sends the answer when it comes).
    fn respond(&mut self, query: &[u8], peer: SocketAddr, now: Instant) -> Option<Vec<u8>> {
        let catalog = self.catalog.load_full();
        // a query answered before from this catalog (so a valid one): the same answer
        if let Some(reply) = self.answers.as_mut().and_then(|a| a.get(&catalog, query)) {
            return match self.rrl.check(peer.ip(), now) {
                Verdict::Send => Some(reply),
                Verdict::Slip => match responder::parse(query) {
                    Parsed::Query(q) => Some(responder::truncated(&q)),
                    _ => None,
                },
                Verdict::Drop => None,
            };
        }
        let q = match responder::parse(query) {
            Parsed::Query(q) => q,
            Parsed::Malformed(h) => return Some(responder::formerr(&h)),
            Parsed::Ignore => return None,
        };
        match self.rrl.check(peer.ip(), now) {
            Verdict::Send => {}
            Verdict::Slip => return Some(responder::truncated(&q)),
            Verdict::Drop => return None,
        }
        let limit = responder::udp_limit(&q, self.payload);
        let forward = self
            .forwarder
            .as_ref()
            .filter(|f| f.allows(peer.ip(), false) && responder::forwardable(&catalog, &q));
        if let Some(f) = forward {
            let (f, socket) = (f.clone(), self.socket.clone());
            spawn_guarded("dns udp forward", async move {
                let reply = f.answer(&q, limit, Channel::Plaintext).await;
                let (res, _) = socket.send_to(reply, peer).await;
                if let Err(e) = res {
                    tracing::debug!(%peer, "dns udp send: {e}");
                }
            });
            return None;
        }
        let reply = responder::answer(&catalog, &q, limit, Channel::Plaintext);
        if let Some(a) = &mut self.answers {
            if responder::cacheable(&catalog, &q) {
                a.insert(&catalog, query, &reply);
            }
        }
        Some(reply)
    }
}

async fn serve_tcp(listener: monoio::net::TcpListener, dns: DnsState, open: Arc<AtomicUsize>) {
    loop {
        // an error (EMFILE, ...) pauses as the runtime's own TCP listener does
        let Some((stream, peer)) = accept_or_pause(&listener, "dns tcp").await else {
            continue;
        };
        if open.fetch_add(1, Ordering::Relaxed) >= dns.config.max_tcp_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        // counted out when the task ends, a panicked one too
        let counted = OpenConnection(open.clone());
        let asker = Asker {
            source: peer.ip(),
            may_recurse: false,
        };
        let dns = dns.clone();
        spawn_guarded("dns tcp connection", async move {
            // the connection's log lines name the peer
            let span = tracing::debug_span!("dns tcp connection", %peer);
            serve_tcp_connection(stream, dns, asker)
                .instrument(span)
                .await;
            drop(counted);
        });
    }
}

/// One TCP connection counted in the listeners' open total until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pipelined queries on one TCP connection (RFC 7766 §6.2.1.1), answered as they are
/// ready ([`StreamAnswerer`]: zone answers at once, forwarded ones when their upstream
/// answers, at most `max_pipelined_queries` in flight), while the writer sends the answers;
/// returns when both are done.
async fn serve_tcp_connection(stream: monoio::net::TcpStream, dns: DnsState, asker: Asker) {
    let (reader, writer) = stream.into_split();
    let (tx, rx) = async_channel::bounded::<Out>(WRITE_QUEUE);
    let idle = dns.config.tcp_idle_timeout;
    let answerer = StreamAnswerer::new(dns, asker, Channel::Plaintext, tx);
    monoio::join!(
        read_tcp_queries(reader, answerer, idle),
        write_tcp_answers(writer, rx, idle)
    );
}

/// Reads queries until the client closes, sends something unanswerable, or sends nothing
/// for `idle` (a read cut short is lost, so it is not retried: the connection ends, after
/// the forwarded answers still to come). Dropping the answerer at the end lets the writer
/// finish once those are sent.
async fn read_tcp_queries(
    mut reader: monoio::net::tcp::TcpOwnedReadHalf,
    mut answerer: StreamAnswerer,
    idle: std::time::Duration,
) {
    let mut buf = vec![0u8; TCP_READ];
    loop {
        let (res, b) = match monoio::time::timeout(idle, reader.read(buf)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!(
                    mid_message = answerer.mid_message(),
                    forwarding = answerer.forwarding(),
                    "dns tcp: idle; closing"
                );
                return;
            }
        };
        buf = b;
        match res {
            Ok(0) => return,
            Ok(n) => match answerer.push(&buf[..n]).await {
                Ok(()) => {}
                Err(StreamEnd::NotAQuery) => {
                    tracing::debug!("dns tcp: a message that is not a query; closing");
                    return;
                }
                Err(StreamEnd::WriterGone) => return,
            },
            Err(e) => {
                tracing::debug!("dns tcp read: {e}");
                return;
            }
        }
    }
}

/// Writes answer batches as they come; shuts the connection down once every sender is
/// gone, or closes it at once when a write fails or the client takes no answers for
/// `stall` (a client that does not read).
async fn write_tcp_answers(
    mut writer: monoio::net::tcp::TcpOwnedWriteHalf,
    rx: async_channel::Receiver<Out>,
    stall: std::time::Duration,
) {
    while let Ok(out) = rx.recv().await {
        let Out::Answers(chunks) = out else {
            break;
        };
        match monoio::time::timeout(stall, writer.write_all(chunks.concat())).await {
            Ok((Ok(_), _)) => {}
            Ok((Err(e), _)) => {
                tracing::debug!("dns tcp write: {e}");
                rx.close();
                return;
            }
            Err(_) => {
                tracing::debug!("dns tcp: the client does not read its answers; closing");
                rx.close();
                return;
            }
        }
    }
    rx.close();
    let _ = monoio::time::timeout(stall, writer.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Bounds each wait for an answer so a broken loop fails the test instead of hanging
    /// it; the answers normally come at once.
    const ANSWER_BOUND: Duration = Duration::from_secs(20);

    #[test]
    fn a_panic_answering_one_query_loses_only_that_answer() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        server.set_nonblocking(true).expect("nonblocking");
        let addr = server.local_addr().expect("addr");
        std::thread::spawn(move || {
            alknet_runtime::rt::run_local(|_| async move {
                let socket = monoio::net::udp::UdpSocket::from_std(server).expect("socket");
                // an echo that panics on "panic"
                serve_datagrams(&socket, 4, |query, _, _| {
                    assert!(query != b"panic", "answering this query panics");
                    Some(query.to_vec())
                })
                .await;
            })
            .expect("runtime");
        });
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .set_read_timeout(Some(ANSWER_BOUND))
            .expect("timeout");
        let ask = |queries: &[&[u8]]| {
            for q in queries {
                client.send_to(q, addr).expect("send");
            }
        };
        let answer = || {
            let mut buf = [0u8; 64];
            let (n, from) = client.recv_from(&mut buf).expect("an answer");
            assert_eq!(from, addr);
            buf[..n].to_vec()
        };
        // alone, then between two others (one batch or several: the order holds)
        ask(&[b"panic", b"one"]);
        assert_eq!(answer(), b"one");
        ask(&[b"two", b"panic", b"three"]);
        assert_eq!(answer(), b"two");
        assert_eq!(answer(), b"three");
        // and the loop still serves afterwards
        ask(&[b"four"]);
        assert_eq!(answer(), b"four");
    }
}
