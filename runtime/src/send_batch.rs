//! Everything a worker sends in one pass, handed to the kernel together.
//!
//! A driver pass may produce transmits for many connections (a hub answering many clients
//! in one wake-up). Each transmit is one `sendmsg` with quinn-udp; queued here, the
//! transmits of one socket leave in one `sendmmsg`, each message with the control
//! messages quinn-udp would give it (`UDP_SEGMENT` for a GSO batch, the ECN codepoint, the
//! source address). What the kernel refuses goes through [`send_one`], quinn-udp's way, so
//! its fallbacks (GSO off after EIO, no `IP_TOS` after EINVAL) stay the one implementation.
//!
//! Order is kept: a connection's transmits leave in the order quinn-proto produced them,
//! and a transmit refused with EAGAIN stays at the head with everything after it until
//! the socket drains.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::IpAddr;
use std::time::Instant;

use crate::log_throttle::LogThrottle;
use crate::socket::UdpIo;
use crate::stats::WorkerStats;

/// Most transmits queued before the batch is sent (each up to one 64 KiB GSO batch, so a
/// full queue holds at most 2 MiB); the driver also sends at the end of every pass.
pub const MAX_SEND_BATCH: usize = 32;

/// Room for the control messages of one datagram: `UDP_SEGMENT` (u16), ECN (int) and
/// `IPV6_PKTINFO` (20 bytes), each padded to 8-byte alignment with its 16-byte header.
const CONTROL_LEN: usize = 88;

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_LEN]);

/// One queued transmit: quinn-proto's description of it and the socket it leaves from.
struct Queued {
    t: quinn_proto::Transmit,
    socket: u8,
}

pub(crate) struct SendBatch {
    /// One buffer per queued transmit (quinn-proto writes a transmit at the start of an
    /// empty buffer); kept across passes.
    bufs: Vec<Vec<u8>>,
    queued: Vec<Queued>,
    /// Queued transmits already sent (the rest wait for the socket).
    sent: usize,
    /// False once the kernel refused a batch with EINVAL: some control message it does
    /// not take on this socket; from then on every transmit goes through [`send_one`].
    batching: bool,
    // scratch for one `sendmmsg`, kept to reuse their allocations
    names: Vec<socket2::SockAddr>,
    iovecs: Vec<libc::iovec>,
    controls: Vec<Control>,
    msgs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    pub fn new() -> Self {
        Self {
            bufs: Vec::new(),
            queued: Vec::new(),
            sent: 0,
            batching: true,
            names: Vec::new(),
            iovecs: Vec::new(),
            controls: Vec::new(),
            msgs: Vec::new(),
        }
    }

    /// Transmits waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.sent == self.queued.len()
    }

    /// The socket the first unsent transmit leaves from (call only when not empty).
    pub fn head_socket(&self) -> u8 {
        self.queued.get(self.sent).map_or(0, |q| q.socket)
    }

    pub fn is_full(&self) -> bool {
        self.queued.len() == MAX_SEND_BATCH
    }

    /// The empty buffer the next transmit is written into (see [`SendBatch::push`]).
    pub fn next_buf(&mut self) -> &mut Vec<u8> {
        let i = self.queued.len();
        debug_assert!(i < MAX_SEND_BATCH);
        if self.bufs.len() <= i {
            self.bufs
                .push(Vec::with_capacity(crate::worker::MAX_GSO_BYTES));
        }
        let buf = &mut self.bufs[i];
        buf.clear();
        buf
    }

    /// Queues the transmit quinn-proto just wrote into [`SendBatch::next_buf`].
    pub fn push(&mut self, t: quinn_proto::Transmit, socket: u8) {
        self.queued.push(Queued { t, socket });
    }

    /// Sends what is queued, in order. `Err` only for EAGAIN: the rest stays queued, to be
    /// sent once the socket is writable. `socket` maps a queued socket index to its socket.
    pub fn flush<'s>(
        &mut self,
        socket: impl Fn(u8) -> &'s UdpIo,
        stats: &WorkerStats,
        log: &LogThrottle,
    ) -> io::Result<()> {
        while self.sent < self.queued.len() {
            let index = self.queued[self.sent].socket;
            let io = socket(index);
            let run = self.queued[self.sent..]
                .iter()
                .take_while(|q| q.socket == index)
                .count();
            if run == 1 || !self.batching {
                let q = &self.queued[self.sent];
                send_one(io, stats, log, &q.t, &self.bufs[self.sent])?;
                self.sent += 1;
                continue;
            }
            WorkerStats::add(&stats.send_syscalls, 1);
            match self.send_run(io, run) {
                Ok(n) => {
                    for q in &self.queued[self.sent..self.sent + n] {
                        count_sent(io, stats, &q.t);
                    }
                    self.sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) => {
                    // the kernel refused the run's first transmit: send that one alone,
                    // quinn-udp's way (it knows the fallbacks; a refusal it cannot fix is
                    // dropped and counted there)
                    if e.raw_os_error() == Some(libc::EINVAL) {
                        tracing::info!("sendmmsg refused with {e}: sending one transmit per call");
                        self.batching = false;
                    }
                    let q = &self.queued[self.sent];
                    send_one(io, stats, log, &q.t, &self.bufs[self.sent])?;
                    self.sent += 1;
                }
            }
        }
        self.queued.clear();
        self.sent = 0;
        Ok(())
    }

    /// One `sendmmsg` of the `run` transmits from `self.sent` (all for `io`): how many the
    /// kernel took (at least one), or its error for the first.
    fn send_run(&mut self, io: &UdpIo, run: usize) -> io::Result<usize> {
        let preferred = io.is_preferred();
        let queued = &self.queued[self.sent..self.sent + run];
        self.names.clear();
        self.names.extend(
            queued
                .iter()
                .map(|q| socket2::SockAddr::from(q.t.destination)),
        );
        self.iovecs.clear();
        self.controls.clear();
        for (q, buf) in queued.iter().zip(&self.bufs[self.sent..]) {
            self.iovecs.push(libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: q.t.size,
            });
            self.controls.push(Control([0; CONTROL_LEN]));
        }
        self.msgs.clear();
        for (i, q) in queued.iter().enumerate() {
            let src_ip = if preferred { None } else { q.t.src_ip };
            let control_len = encode_control(&mut self.controls[i], &q.t, src_ip);
            // SAFETY: all-zero is a valid `mmsghdr`.
            let mut msg: libc::mmsghdr = unsafe { zeroed() };
            msg.msg_hdr.msg_name = self.names[i].as_ptr() as *mut libc::c_void;
            msg.msg_hdr.msg_namelen = self.names[i].len();
            msg.msg_hdr.msg_iov = &mut self.iovecs[i];
            msg.msg_hdr.msg_iovlen = 1;
            if control_len > 0 {
                msg.msg_hdr.msg_control = self.controls[i].0.as_mut_ptr() as *mut libc::c_void;
                msg.msg_hdr.msg_controllen = control_len as _;
            }
            self.msgs.push(msg);
        }
        // SAFETY: every header points at a live address, a live buffer of at least
        // `iov_len` bytes and a live control buffer of `msg_controllen` bytes, all owned by
        // `self` and unchanged during the call.
        let result = unsafe { send_mmsg(io.as_raw_fd(), &mut self.msgs) };
        // the headers point into buffers that may move before the next call
        self.msgs.clear();
        self.iovecs.clear();
        result
    }
}

/// `sendmmsg` without blocking (`MSG_DONTWAIT`), retried when a signal interrupts it: how
/// many of `msgs` the kernel took (at least one unless `msgs` is empty), or its error for
/// the first (`WouldBlock` when the socket's buffer is full).
///
/// # Safety
/// Every header in `msgs` must point at a live destination address, live iovecs and live
/// buffers of their stated lengths, and a live control buffer of `msg_controllen` bytes
/// (or none), none of which change during the call. The kernel only reads them, and writes
/// each header's `msg_len`.
pub unsafe fn send_mmsg(fd: std::os::fd::RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    loop {
        // SAFETY: the caller vouches for the headers (see above).
        let n = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes the control messages quinn-udp gives a datagram into `control`; returns their
/// length (0: none).
fn encode_control(
    control: &mut Control,
    t: &quinn_proto::Transmit,
    src_ip: Option<IpAddr>,
) -> usize {
    let mut w = ControlWriter {
        buf: &mut control.0,
        len: 0,
    };
    let ecn = t.ecn.map_or(0, |e| e as u8 as libc::c_int);
    // IPv4, or IPv4-mapped on a dual-stack socket: the IPv4 option (as quinn-udp)
    let ipv4 = match t.destination.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(a) => a.to_ipv4_mapped().is_some(),
    };
    if ipv4 {
        w.push(libc::IPPROTO_IP, libc::IP_TOS, ecn);
    } else {
        w.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, ecn);
    }
    // a segment size not below the whole is no GSO batch (some drivers refuse those)
    if let Some(segment) = t.segment_size.filter(|&s| s < t.size) {
        w.push(libc::SOL_UDP, libc::UDP_SEGMENT, segment as u16);
    }
    match src_ip {
        Some(IpAddr::V4(v4)) => w.push(
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            },
        ),
        Some(IpAddr::V6(v6)) => w.push(
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            libc::in6_pktinfo {
                ipi6_ifindex: 0,
                ipi6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
            },
        ),
        None => {}
    }
    w.len
}

/// Appends control messages to a zeroed, 8-byte aligned buffer.
struct ControlWriter<'a> {
    buf: &'a mut [u8; CONTROL_LEN],
    len: usize,
}

impl ControlWriter<'_> {
    fn push<T: Copy>(&mut self, level: libc::c_int, kind: libc::c_int, value: T) {
        let data = size_of::<T>() as libc::c_uint;
        // SAFETY: pure arithmetic on lengths.
        let (space, header, len) = unsafe {
            (
                libc::CMSG_SPACE(data) as usize,
                libc::CMSG_LEN(0) as usize,
                libc::CMSG_LEN(data),
            )
        };
        assert!(self.len + space <= CONTROL_LEN, "control messages overflow");
        // SAFETY: all-zero is a valid `cmsghdr` (it may have private padding fields).
        let mut cmsg: libc::cmsghdr = unsafe { zeroed() };
        cmsg.cmsg_len = len as _;
        cmsg.cmsg_level = level;
        cmsg.cmsg_type = kind;
        // SAFETY: the assert keeps both writes inside `buf`; unaligned writes need no
        // alignment (the buffer is 8-byte aligned and `len` a multiple of 8 anyway).
        unsafe {
            let at = self.buf.as_mut_ptr().add(self.len);
            std::ptr::write_unaligned(at as *mut libc::cmsghdr, cmsg);
            std::ptr::write_unaligned(at.add(header) as *mut T, value);
        }
        self.len += space;
    }
}

/// Sends one transmit with quinn-udp's `sendmsg`. `Err` only for EAGAIN: the caller keeps
/// the transmit and waits for the socket. Any other refusal drops the transmit's
/// datagrams, as a lossy path would (QUIC's loss recovery resends what they carried; a
/// refused path-MTU probe counts as a lost one, and the search settles below it), counts
/// in `send_errors` and is logged. Waiting for the socket would not change the kernel's
/// answer: a refusal kept as "blocked" stopped every connection of the worker.
pub(crate) fn send_one(
    io: &UdpIo,
    stats: &WorkerStats,
    log: &LogThrottle,
    t: &quinn_proto::Transmit,
    buf: &[u8],
) -> io::Result<()> {
    // a preferred-address socket is bound to its one address: that is the source (the
    // connection's local IP, which quinn-proto fixes at the handshake, is the main one's)
    let transmit = quinn_udp::Transmit {
        destination: t.destination,
        ecn: t
            .ecn
            .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
        contents: &buf[..t.size],
        segment_size: t.segment_size,
        src_ip: if io.is_preferred() { None } else { t.src_ip },
    };
    WorkerStats::add(&stats.send_syscalls, 1);
    if let Err(e) = io.send(&transmit) {
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(e);
        }
        WorkerStats::add(&stats.send_errors, 1);
        log_send_error(log, &e, t);
        return Ok(());
    }
    count_sent(io, stats, t);
    Ok(())
}

/// Counts a transmit the kernel took.
fn count_sent(io: &UdpIo, stats: &WorkerStats, t: &quinn_proto::Transmit) {
    let segments = t.segment_size.map_or(1, |s| t.size.div_ceil(s.max(1)));
    WorkerStats::add(&stats.datagrams_sent, segments as u64);
    if io.is_preferred() {
        WorkerStats::add(&stats.preferred_sent, segments as u64);
    }
    if t.ecn.is_some() {
        WorkerStats::add(&stats.ecn_marked_sent, segments as u64);
    }
    WorkerStats::add(&stats.send_calls, 1);
}

/// EMSGSIZE is what a path-MTU probe larger than the interface's MTU gets (quinn-udp sets
/// `IP_PMTUDISC_PROBE`): expected, so `debug`, as is ECONNREFUSED (only a client socket's
/// queued ICMP error gives it). Anything else (no route, a firewall's EPERM, a source
/// address gone, GSO refused by the device, after which quinn-udp sends without it) is
/// worth a `warn`, at most once per [`crate::log_throttle::LOG_INTERVAL`].
fn log_send_error(log: &LogThrottle, e: &io::Error, t: &quinn_proto::Transmit) {
    if e.raw_os_error() == Some(libc::EMSGSIZE) {
        tracing::debug!(
            destination = %t.destination,
            bytes = t.size,
            segment = ?t.segment_size,
            "datagram larger than the interface allows, dropped: {e}"
        );
        return;
    }
    if e.raw_os_error() == Some(libc::ECONNREFUSED) {
        // a client socket's pending "port unreachable" (`socket::bind_client` sets
        // IP_RECVERR), drawn by an earlier datagram, perhaps to another peer: the kernel
        // reports it on this send instead; the driver reads the error queue for whom
        tracing::debug!(
            destination = %t.destination,
            "datagram dropped on an ICMP error an earlier one drew: {e}"
        );
        return;
    }
    if let Some(suppressed) = log.admit(Instant::now()) {
        tracing::warn!(
            destination = %t.destination,
            bytes = t.size,
            segment = ?t.segment_size,
            also_refused_since_last_report = suppressed,
            "send refused by the kernel, datagrams dropped: {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use quinn_proto::EcnCodepoint;
    use quinn_udp::RecvMeta;

    use super::*;

    fn io() -> UdpIo {
        UdpIo::new(UdpSocket::bind("127.0.0.1:0").expect("bind")).expect("udp io")
    }

    fn queue(
        batch: &mut SendBatch,
        socket: u8,
        to: SocketAddr,
        payload: &[u8],
        segment: Option<usize>,
        ecn: bool,
    ) {
        batch.next_buf().extend_from_slice(payload);
        batch.push(
            quinn_proto::Transmit {
                destination: to,
                ecn: ecn.then_some(EcnCodepoint::Ect0),
                size: payload.len(),
                segment_size: segment,
                src_ip: None,
            },
            socket,
        );
    }

    /// Every datagram `io` receives within a short wait: (bytes, ECN-marked).
    fn drain(io: &UdpIo) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = vec![0u8; 128 * 1024];
        let mut meta = [RecvMeta::default(); 1];
        let mut idle = 0;
        while Instant::now() < deadline && idle < 50 {
            let mut slices = [io::IoSliceMut::new(&mut buf)];
            match io.recv(&mut slices, &mut meta) {
                Ok(_) => {
                    idle = 0;
                    let m = meta[0];
                    // a GRO batch: split it back into its datagrams
                    for d in buf[..m.len].chunks(m.stride.max(1)) {
                        out.push((d.to_vec(), m.ecn.is_some()));
                    }
                }
                Err(_) => {
                    idle += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        out
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn one_sockets_transmits_leave_in_one_system_call_in_order_with_their_options() {
        crate::rt::run_local(|_| async {
            let (tx, a, b) = (io(), io(), io());
            let stats = WorkerStats::default();
            let log = LogThrottle::new();
            let mut batch = SendBatch::new();
            let gso = data(250, 1);
            queue(&mut batch, 0, a.local_addr(), &gso, Some(100), true);
            queue(&mut batch, 0, b.local_addr(), &data(40, 2), None, true);
            queue(&mut batch, 0, b.local_addr(), &data(41, 3), None, false);
            queue(&mut batch, 0, a.local_addr(), &data(42, 4), Some(42), true);
            assert!(!batch.is_empty());
            batch.flush(|_| &tx, &stats, &log).expect("flush");
            assert!(batch.is_empty());
            let s = stats.snapshot(0);
            assert_eq!((s.send_syscalls, s.send_calls, s.datagrams_sent), (1, 4, 6));
            assert_eq!((s.ecn_marked_sent, s.send_errors), (5, 0));
            assert_eq!(
                drain(&a),
                vec![
                    (gso[..100].to_vec(), true),
                    (gso[100..200].to_vec(), true),
                    (gso[200..].to_vec(), true),
                    (data(42, 4), true),
                ]
            );
            assert_eq!(drain(&b), vec![(data(40, 2), true), (data(41, 3), false)]);
        })
        .expect("runtime");
    }

    #[test]
    fn transmits_of_two_sockets_go_in_runs_and_a_refused_one_is_dropped_alone() {
        crate::rt::run_local(|_| async {
            let (tx0, tx1, rx) = (io(), io(), io());
            let stats = WorkerStats::default();
            let log = LogThrottle::new();
            let mut batch = SendBatch::new();
            let to = rx.local_addr();
            queue(&mut batch, 0, to, &data(10, 1), None, false);
            queue(&mut batch, 0, to, &data(11, 2), None, false);
            // larger than one IPv4 datagram: the kernel refuses it (EMSGSIZE)
            queue(&mut batch, 0, to, &data(70_000, 3), None, false);
            queue(&mut batch, 0, to, &data(12, 4), None, false);
            queue(&mut batch, 1, to, &data(13, 5), None, false);
            queue(&mut batch, 1, to, &data(14, 6), None, false);
            let sockets = [&tx0, &tx1];
            batch
                .flush(|i| sockets[usize::from(i)], &stats, &log)
                .expect("flush");
            assert!(batch.is_empty());
            let s = stats.snapshot(0);
            assert_eq!((s.send_calls, s.datagrams_sent, s.send_errors), (5, 5, 1));
            // sendmmsg: the first two; sendmmsg refused at the big one, which then goes
            // alone (refused again, dropped); the fourth alone (the rest of its run);
            // socket 1's two in one sendmmsg
            assert_eq!(s.send_syscalls, 5);
            let got: Vec<Vec<u8>> = drain(&rx).into_iter().map(|(d, _)| d).collect();
            let from_0 = [data(10, 1), data(11, 2), data(12, 4)];
            let from_1 = [data(13, 5), data(14, 6)];
            assert_eq!(got.len(), 5, "{got:?}");
            // each socket's datagrams in their order (the two sockets may interleave)
            assert_eq!(
                got.iter()
                    .filter(|d| from_0.contains(d))
                    .cloned()
                    .collect::<Vec<_>>(),
                from_0
            );
            assert_eq!(
                got.iter()
                    .filter(|d| from_1.contains(d))
                    .cloned()
                    .collect::<Vec<_>>(),
                from_1
            );
            // the batch is reused after a flush
            queue(&mut batch, 1, to, &data(15, 7), None, false);
            batch
                .flush(|i| sockets[usize::from(i)], &stats, &log)
                .expect("flush");
            assert_eq!(drain(&rx), vec![(data(15, 7), false)]);
        })
        .expect("runtime");
    }
}
