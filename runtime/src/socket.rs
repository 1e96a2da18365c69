//! Worker sockets: a SO_REUSEPORT group bound to one address, and the per-worker IO wrapper.
//!
//! monoio 0.2's `UdpSocket` sends one datagram per operation and carries no control
//! messages, so it cannot do UDP GSO/GRO or ECN. We keep monoio for the event loop and for
//! readiness (`readable`/`writable`, a PollAdd on io_uring) and do the syscalls with
//! `quinn-udp` on the same fd: `sendmsg` with `UDP_SEGMENT` (one syscall per GSO batch of
//! up to 64 datagrams), `recvmmsg` with `UDP_GRO`, ECN and destination-address cmsgs.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

/// Errors binding the worker sockets.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "UDP {0} is already in use by another process (an older alknet still running would \
         silently share it through SO_REUSEPORT, so we refuse)"
    )]
    InUse(SocketAddr),
    #[error("binding UDP {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error(
        "TCP {0} is already in use by another process (an older alknet still running would \
         silently share it through SO_REUSEPORT, so we refuse); free it, or for the QUIC \
         port's TLS-over-TCP listener set [tcp] enabled = false"
    )]
    TcpInUse(SocketAddr),
    #[error("binding TCP {addr}: {source}")]
    TcpIo { addr: SocketAddr, source: io::Error },
}

fn new_tcp_listener(addr: SocketAddr, reuse_port: bool, backlog: u32) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        s.set_only_v6(false)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(reuse_port)?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    if reuse_port {
        s.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    }
    Ok(s)
}

/// Binds `count` TCP listeners with SO_REUSEPORT on `addr`: one per worker, each accepting
/// on its own worker (the QUIC endpoint's TLS-over-TCP listeners, on its port; DNS's
/// classic TCP listeners). As for UDP ([`bind_reuseport_group`]): a non-reuseport probe
/// first, so a second server does not silently share the port, and port 0 resolved by that
/// probe, not by the group.
pub fn bind_tcp_reuseport_group(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> Result<Vec<std::net::TcpListener>, BindError> {
    on_free_port(
        addr,
        |a| new_tcp_listener(a, false, backlog),
        |source| BindError::TcpIo { addr, source },
        |a| bind_tcp_group_on(a, count, backlog),
    )
}

/// A UDP group ([`bind_reuseport_group`]) and a TCP group ([`bind_tcp_reuseport_group`])
/// on one port: `addr`'s, or, when that is 0, a port the kernel picked for UDP whose TCP
/// side is free too. The two port spaces are separate, so a picked port whose TCP side
/// another process holds means another pick (the same retries as a port 0 of one group).
pub fn bind_udp_and_tcp_groups(
    addr: SocketAddr,
    count: usize,
    buffer: usize,
    backlog: u32,
) -> Result<(Vec<StdUdpSocket>, Vec<std::net::TcpListener>), BindError> {
    on_free_udp_port(addr, |a| {
        let udp = bind_group_on(a, count, buffer)?;
        let tcp = bind_tcp_group_on(a, count, backlog)?;
        Ok((udp, tcp))
    })
}

/// [`bind_tcp_reuseport_group`] on a port that is not 0.
fn bind_tcp_group_on(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> Result<Vec<std::net::TcpListener>, BindError> {
    match new_tcp_listener(addr, false, backlog) {
        Ok(probe) => drop(probe),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(BindError::TcpInUse(addr)),
        Err(source) => return Err(BindError::TcpIo { addr, source }),
    }
    (0..count)
        .map(|_| {
            new_tcp_listener(addr, true, backlog)
                .map(std::net::TcpListener::from)
                .map_err(|source| BindError::TcpIo { addr, source })
        })
        .collect()
}

fn new_socket(addr: SocketAddr, reuse_port: bool, buffer: usize) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // [::] takes IPv4 too
        s.set_only_v6(false)?;
    }
    s.set_reuse_port(reuse_port)?;
    s.set_nonblocking(true)?;
    if buffer > 0 {
        // best effort: the kernel caps these at rmem_max/wmem_max
        let _ = s.set_recv_buffer_size(buffer);
        let _ = s.set_send_buffer_size(buffer);
    }
    s.bind(&addr.into())?;
    Ok(s)
}

/// Says so when the kernel granted smaller socket buffers than `socket_buffer_size` asked
/// for (it caps them at net.core.rmem_max / wmem_max), since bursts beyond them are dropped.
fn warn_if_buffers_capped(s: &Socket, requested: usize) {
    if requested == 0 {
        return;
    }
    // Linux reports twice the usable size it granted (it reserves half for bookkeeping)
    let granted = |r: io::Result<usize>| r.map_or(0, |n| n / 2);
    let (recv, send) = (granted(s.recv_buffer_size()), granted(s.send_buffer_size()));
    if recv < requested || send < requested {
        tracing::info!(
            requested,
            recv,
            send,
            "socket buffers capped by the kernel; raise net.core.rmem_max/wmem_max to get them"
        );
    }
}

/// Times [`bind_reuseport_group`] and [`bind_tcp_reuseport_group`] pick a port again for
/// `addr` with port 0 when another process took the one they picked before the group was
/// bound.
const PORT_0_ATTEMPTS: usize = 8;

/// Binds `count` sockets with SO_REUSEPORT on `addr` (on a free port the kernel picks, if
/// `addr` has port 0).
///
/// A restarted process could silently join a reuseport group left by an older one (same
/// user) and receive only part of the traffic. To catch that, a non-reuseport probe is
/// bound first: it fails when anything already holds the port.
///
/// Port 0 is resolved by that probe too, not by binding the group itself to port 0: for a
/// reuseport socket the kernel's choice counts ports held by other reuseport groups of the
/// same user as free, so two servers started at once (tests in parallel) could share a
/// port and take each other's datagrams. A non-reuseport bind gets a port nobody holds.
pub fn bind_reuseport_group(
    addr: SocketAddr,
    count: usize,
    buffer: usize,
) -> Result<Vec<StdUdpSocket>, BindError> {
    on_free_udp_port(addr, |a| bind_group_on(a, count, buffer))
}

/// [`on_free_port`] with a port picked by a plain UDP bind.
fn on_free_udp_port<T>(
    addr: SocketAddr,
    bind_group: impl Fn(SocketAddr) -> Result<T, BindError>,
) -> Result<T, BindError> {
    on_free_port(
        addr,
        |a| new_socket(a, false, 0),
        |source| BindError::Io { addr, source },
        bind_group,
    )
}

/// Runs `bind_group` on `addr`, or, if its port is 0, on a port that a plain bind
/// (`probe`, closed again before the group binds) got from the kernel; picks again, up to
/// [`PORT_0_ATTEMPTS`] times, when another process took that port in between.
fn on_free_port<T>(
    addr: SocketAddr,
    probe: impl Fn(SocketAddr) -> io::Result<Socket>,
    probe_error: impl Fn(io::Error) -> BindError,
    bind_group: impl Fn(SocketAddr) -> Result<T, BindError>,
) -> Result<T, BindError> {
    if addr.port() != 0 {
        return bind_group(addr);
    }
    let mut result = Err(BindError::InUse(addr));
    for _ in 0..PORT_0_ATTEMPTS {
        let picked = probe(addr)
            .and_then(|p| {
                p.local_addr()?
                    .as_socket()
                    .ok_or_else(|| io::Error::other("bound socket has no address"))
            })
            .map_err(&probe_error)?;
        result = bind_group(picked);
        // in use: another process bound the port between the probe and the group
        if !matches!(result, Err(BindError::InUse(_) | BindError::TcpInUse(_))) {
            break;
        }
    }
    result
}

/// [`bind_reuseport_group`] on a port that is not 0.
fn bind_group_on(
    addr: SocketAddr,
    count: usize,
    buffer: usize,
) -> Result<Vec<StdUdpSocket>, BindError> {
    let io_err = |source| BindError::Io { addr, source };
    match new_socket(addr, false, 0) {
        Ok(probe) => drop(probe),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(BindError::InUse(addr)),
        Err(e) => return Err(BindError::Io { addr, source: e }),
    }
    let first = new_socket(addr, true, buffer).map_err(io_err)?;
    warn_if_buffers_capped(&first, buffer);
    let mut out = vec![StdUdpSocket::from(first)];
    for _ in 1..count {
        let s = new_socket(addr, true, buffer).map_err(io_err)?;
        out.push(s.into());
    }
    Ok(out)
}

/// Attaches the CID steering program to the reuseport group of `socket` (all sockets of the
/// group share it). Socket `i` of the group, in bind order, is worker `i`.
pub fn attach_steering(
    socket: &StdUdpSocket,
    program: &[alknet_proto::steering::SockFilter],
) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let mut filters: Vec<libc::sock_filter> = program
        .iter()
        .map(|f| libc::sock_filter {
            code: f.code,
            jt: f.jt,
            jf: f.jf,
            k: f.k,
        })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(filters.len()).map_err(|_| io::Error::other("BPF program too long"))?,
        filter: filters.as_mut_ptr(),
    };
    // SAFETY: the option takes a `sock_fprog`; `prog` points at `filters`, alive for the
    // call (the kernel copies it).
    unsafe {
        setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &prog,
        )
    }
}

/// `setsockopt(2)` with `value` as the option's value, its size as the length.
///
/// # Safety
/// `T` must be the type the option takes, and any pointer inside `value` valid for the
/// call.
unsafe fn setsockopt<T>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let rc = libc::setsockopt(
        fd,
        level,
        name,
        std::ptr::from_ref(value).cast(),
        std::mem::size_of::<T>() as libc::socklen_t,
    );
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A plain socket for a client endpoint (no reuseport group), with ICMP errors queued
/// for it ([`UdpIo::drain_icmp_errors`]).
pub fn bind_client(addr: SocketAddr, buffer: usize) -> io::Result<StdUdpSocket> {
    let s = new_socket(addr, false, buffer)?;
    enable_recverr(&s, addr.is_ipv6())?;
    Ok(s.into())
}

/// `IP_RECVERR` (and `IPV6_RECVERR` on an IPv6 socket, which may carry IPv4 too): the
/// kernel queues the ICMP errors a datagram draws ("port unreachable": nothing listens
/// there) with the datagram's destination. An unconnected UDP socket otherwise drops
/// them, and a client dialling a host where no server runs would wait out its idle
/// timeout where TCP gets a reset at once. Client sockets only: a server must not let a
/// forged ICMP message end connections.
fn enable_recverr(s: &Socket, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: both options take a c_int.
    let set = |level, name| unsafe { setsockopt(s.as_raw_fd(), level, name, &on) };
    if v6 {
        set(libc::IPPROTO_IPV6, libc::IPV6_RECVERR)?;
        // for IPv4 peers of a dual-stack socket; an IPv6-only one may refuse it
        let _ = set(libc::IPPROTO_IP, libc::IP_RECVERR);
        Ok(())
    } else {
        set(libc::IPPROTO_IP, libc::IP_RECVERR)
    }
}

/// An ICMP error queued for a client socket: the destination of the datagram that drew
/// it, and the error the kernel made of it (`ECONNREFUSED` for "port unreachable").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IcmpError {
    pub destination: SocketAddr,
    pub errno: i32,
}

/// Queued errors read per [`UdpIo::drain_icmp_errors`] call; the kernel bounds the queue
/// by the socket's receive buffer, and what is left is read at the next wake-up.
pub(crate) const MAX_ICMP_ERRORS_PER_DRAIN: usize = 64;

/// One worker's socket: monoio for readiness, quinn-udp for batched syscalls.
pub(crate) struct UdpIo {
    socket: monoio::net::udp::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    /// Bound to a preferred address (`[quic] preferred_address_v4/v6`).
    preferred: bool,
}

impl UdpIo {
    /// Must run on the worker's thread, inside its monoio runtime.
    pub fn new(std: StdUdpSocket) -> io::Result<Self> {
        let local = std.local_addr()?;
        let state = UdpSocketState::new((&std).into())?;
        let socket = monoio::net::udp::UdpSocket::from_std(std)?;
        Ok(Self {
            socket,
            state,
            local,
            preferred: false,
        })
    }

    /// The same, for a socket of a preferred address.
    pub fn new_preferred(std: StdUdpSocket) -> io::Result<Self> {
        Self::new(std).map(|io| Self {
            preferred: true,
            ..io
        })
    }

    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }

    pub fn is_preferred(&self) -> bool {
        self.preferred
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is owned by `self.socket`, which outlives the returned borrow.
        unsafe { BorrowedFd::borrow_raw(self.socket.as_raw_fd()) }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Receives up to `bufs.len()` GRO batches without blocking (`WouldBlock` when empty).
    pub fn recv(
        &self,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let fd = self.fd();
        self.state.recv(UdpSockRef::from(&fd), bufs, meta)
    }

    /// Sends one transmit (a GSO batch when `segment_size` is set), reporting every error
    /// (quinn-udp's `send` would hide EMSGSIZE and others as success).
    pub fn send(&self, t: &Transmit<'_>) -> io::Result<()> {
        let fd = self.fd();
        self.state.try_send(UdpSockRef::from(&fd), t)
    }

    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    pub fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    /// Reads the socket's error queue (`MSG_ERRQUEUE`, see [`bind_client`]) and returns
    /// the ICMP errors in it; other entries (local errors such as a refused path-MTU
    /// probe, which `sendmsg` reports itself) are dropped. A queue left unread keeps the
    /// socket polling as ready (`POLLERR`), so a client driver drains it whenever a
    /// receive finds no datagram.
    pub fn drain_icmp_errors(&self) -> Vec<IcmpError> {
        drain_icmp_errors(self.fd())
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable(false).await
    }

    pub async fn writable(&self) -> io::Result<()> {
        self.socket.writable(false).await
    }
}

/// See [`UdpIo::drain_icmp_errors`].
fn drain_icmp_errors(fd: BorrowedFd<'_>) -> Vec<IcmpError> {
    let mut found = Vec::new();
    for _ in 0..MAX_ICMP_ERRORS_PER_DRAIN {
        match recv_queued_error(fd) {
            Ok(Some(e)) => found.push(e),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    found
}

/// One entry of the error queue: `Ok(None)` for one that is not an ICMP error, `Err`
/// when the queue is empty.
fn recv_queued_error(fd: BorrowedFd<'_>) -> io::Result<Option<IcmpError>> {
    // SAFETY: zeroed plain C structs; the msghdr points at buffers that outlive the
    // call, with their true lengths; cmsgs are walked with the libc macros within
    // `msg_controllen` and read unaligned.
    unsafe {
        let mut name: libc::sockaddr_storage = std::mem::zeroed();
        let mut control = [0u64; 32];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = std::ptr::addr_of_mut!(name).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // no iovec: the original datagram's payload is not wanted (MSG_TRUNC)
        let n = libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let destination = match socket2::SockAddr::new(name, msg.msg_namelen).as_socket() {
            Some(a) => a,
            None => return Ok(None),
        };
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = std::ptr::read_unaligned(cmsg);
            let is_err = (c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_RECVERR)
                || (c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_RECVERR);
            if is_err {
                let ee: libc::sock_extended_err =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP
                    || ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6
                {
                    return Ok(Some(IcmpError {
                        destination,
                        errno: ee.ee_errno as i32,
                    }));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_socket_learns_that_nothing_listens_where_it_sent() {
        for (local, peer) in [
            ("127.0.0.1:0", "127.0.0.1"),
            ("[::]:0", "::1"),
            ("[::]:0", "::ffff:127.0.0.1"),
        ] {
            let closed = {
                let s = StdUdpSocket::bind((
                    peer.parse::<std::net::IpAddr>().expect("ip").to_canonical(),
                    0,
                ))
                .expect("bind");
                SocketAddr::new(
                    peer.parse().expect("ip"),
                    s.local_addr().expect("addr").port(),
                )
            };
            let client = bind_client(local.parse().expect("addr"), 0).expect("bind client");
            let fd = unsafe { BorrowedFd::borrow_raw(client.as_raw_fd()) };
            assert!(drain_icmp_errors(fd).is_empty());
            client.send_to(b"hello", closed).expect("send");
            // loopback answers within the send (and is exempt from ICMP rate limits);
            // bounded wait all the same
            let mut errors = Vec::new();
            for _ in 0..200 {
                errors = drain_icmp_errors(fd);
                if !errors.is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(
                errors,
                vec![IcmpError {
                    destination: closed,
                    errno: libc::ECONNREFUSED
                }],
                "{local} -> {closed}"
            );
            assert!(drain_icmp_errors(fd).is_empty(), "the queue is drained");
        }
    }

    #[test]
    fn group_shares_one_port_and_refuses_a_foreign_holder() {
        let group =
            bind_reuseport_group("127.0.0.1:0".parse().expect("addr"), 3, 0).expect("bind group");
        let port = group[0].local_addr().expect("addr").port();
        assert!(group
            .iter()
            .all(|s| s.local_addr().expect("addr").port() == port));
        let again = bind_reuseport_group(SocketAddr::from(([127, 0, 0, 1], port)), 1, 0);
        assert!(matches!(again, Err(BindError::InUse(_))), "{again:?}");
    }

    #[test]
    fn tcp_group_shares_one_port_and_refuses_a_foreign_holder() {
        // port 0: every listener on the port the probe got (before, each bound port 0
        // itself and got a port of its own)
        let group = bind_tcp_reuseport_group("127.0.0.1:0".parse().expect("addr"), 3, 16)
            .expect("bind group");
        let at = group[0].local_addr().expect("addr");
        assert_ne!(at.port(), 0);
        assert!(group.iter().all(|l| l.local_addr().expect("addr") == at));
        // all of them accept: a connection lands on one of the group
        let _client = std::net::TcpStream::connect(at).expect("connect");
        let again = bind_tcp_reuseport_group(at, 1, 16);
        assert!(matches!(again, Err(BindError::TcpInUse(_))), "{again:?}");
        // a port held by a plain listener of another process is refused, not shared
        let foreign = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let held = foreign.local_addr().expect("addr");
        let shared = bind_tcp_reuseport_group(held, 2, 16);
        assert!(matches!(shared, Err(BindError::TcpInUse(_))), "{shared:?}");
    }

    #[test]
    fn udp_and_tcp_groups_take_one_port_and_refuse_a_held_tcp_side() {
        let (udp, tcp) =
            bind_udp_and_tcp_groups("127.0.0.1:0".parse().expect("addr"), 2, 0, 16).expect("bind");
        let at = udp[0].local_addr().expect("addr");
        assert_ne!(at.port(), 0);
        assert!(udp.iter().all(|s| s.local_addr().expect("addr") == at));
        assert!(tcp.iter().all(|l| l.local_addr().expect("addr") == at));
        // a fixed port whose TCP side another listener holds is refused
        let foreign = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let held = foreign.local_addr().expect("addr");
        let refused = bind_udp_and_tcp_groups(held, 1, 0, 16);
        assert!(
            matches!(refused, Err(BindError::TcpInUse(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn groups_bound_to_port_0_never_share_a_port() {
        // 400 groups held at once: were the kernel's choice of port made among ports other
        // reuseport groups hold, two of them would meet (a birthday draw over ~28 000
        // ephemeral ports) and one server would take the other's datagrams
        let groups: Vec<_> = (0..400)
            .map(|_| bind_reuseport_group("127.0.0.1:0".parse().expect("addr"), 1, 0))
            .collect::<Result<_, _>>()
            .expect("bind groups");
        let mut ports: Vec<u16> = groups
            .iter()
            .map(|g| g[0].local_addr().expect("addr").port())
            .collect();
        ports.sort_unstable();
        let before = ports.len();
        ports.dedup();
        assert_eq!(ports.len(), before, "two groups got the same port");
    }
}
