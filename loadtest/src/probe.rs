//! Physical limits of this machine, so the load tester can print its QUIC figures as
//! "% of limit": how many datagrams loopback UDP carries between one sending and one
//! receiving thread, and how fast one core seals QUIC 1-RTT packets with AES-128-GCM.
//!
//! The UDP probes do their IO exactly as Alknet's workers do (see `runtime/src/socket.rs`):
//! quinn-udp's `UdpSocketState` on the socket fd, `try_send` of a `Transmit` whose
//! `segment_size` makes it one `sendmsg` + `UDP_SEGMENT` (GSO) batch of at most
//! min([`MAX_GSO_SEGMENTS`], [`MAX_GSO_BYTES`] / payload) datagrams, and `recv` =
//! `recvmmsg` of [`quinn_udp::BATCH_SIZE`] slots with `UDP_GRO` enabled (quinn-udp turns it
//! on in `UdpSocketState::new`), each slot sized for one full GRO batch as the workers size
//! theirs. On loopback a GSO batch reaches a GRO socket whole, so one slot receives one
//! batch.
//!
//! Sockets are nonblocking (quinn-udp makes them so); a thread with nothing to do waits in
//! `poll(2)` for at most [`RECV_POLL`] / [`SEND_POLL`], so every loop is bounded by time even
//! if the other side dies.
//!
//! What bounds the UDP figures (measured on the 2-vCPU development VM): with GSO the sending
//! thread is at 100% of a core and the receiver at ~50%, with 98–100% of accepted datagrams
//! received. Loopback runs the whole receive path up to the socket queue in the sender's
//! softirq, and about half the sender's time is `copy_from_user` into fresh skb pages. Without
//! GSO the sender is again the limit, at one `sendmsg` per datagram. Other load on the box
//! lowers all three figures (the receiver then misses its turns and the queue overflows).

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use alknet_runtime::{MAX_GSO_BYTES, MAX_GSO_SEGMENTS};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use ring::aead;
use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer size requested with `SO_RCVBUF` (and `SO_SNDBUF`) on both probe sockets.
///
/// The kernel silently caps the request at `net.core.rmem_max` (`net.core.wmem_max` for the
/// send buffer), 4 MiB on the machine this was written on, then doubles it for bookkeeping
/// overhead; raise those sysctls for a deeper queue. No `SO_RCVBUFFORCE`: the probe measures
/// what an unprivileged server gets.
pub const SOCKET_BUFFER_REQUEST: usize = 8 << 20;

/// Longest the receiver sleeps in `poll(2)` when its socket is empty.
const RECV_POLL: Duration = Duration::from_millis(50);
/// Longest the sender sleeps in `poll(2)` when its socket is full.
const SEND_POLL: Duration = Duration::from_millis(10);
/// How long the receiver keeps draining (uncounted) after the measured window, which is
/// also when the sender stops.
const GRACE: Duration = Duration::from_millis(20);

/// Loopback UDP throughput measured by [`udp_loopback_limit`] or
/// [`udp_loopback_limit_unbatched`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UdpLimit {
    /// Datagrams received per second of the measured window.
    pub datagrams_per_sec: f64,
    /// UDP payload bits received per second (IP/UDP headers not counted), in 10^9.
    pub gbit_per_sec: f64,
    /// UDP payload of each datagram, in bytes.
    pub payload: usize,
    /// Datagrams handed to the kernel per `sendmsg` (1 = no GSO).
    pub segments_per_send: usize,
}

/// One sender thread and one receiver thread over IPv4 loopback, batching exactly as the
/// runtime does (GSO batches of min(64, 65507 / payload) segments via quinn-udp; receive via
/// quinn-udp recvmmsg+GRO). Counts datagrams *received* (not sent) over `duration`.
///
/// The receiver is running, with its buffers requested at [`SOCKET_BUFFER_REQUEST`] (capped
/// by the kernel at `net.core.rmem_max`), before the sender starts. The sender offers as
/// fast as it can, so datagrams dropped for a full receive buffer are expected: only those
/// the receiver gets within `[start, start + duration]` count. Both threads stop by time.
///
/// Errors: `InvalidInput` for a payload of 0 or above 65507 bytes or a zero `duration`; any
/// socket error from either thread.
pub fn udp_loopback_limit(payload: usize, duration: Duration) -> io::Result<UdpLimit> {
    udp_limit(payload, duration, true)
}

/// Same, one datagram per sendmsg (segment_size None) — the batching-free reference.
///
/// The receiver is the same as [`udp_loopback_limit`]'s (recvmmsg with GRO enabled; on
/// loopback nothing coalesces separately sent datagrams, so each slot holds one).
pub fn udp_loopback_limit_unbatched(payload: usize, duration: Duration) -> io::Result<UdpLimit> {
    udp_limit(payload, duration, false)
}

/// AES-128-GCM seal throughput of one core, measured by [`aes128gcm_seal_limit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SealLimit {
    /// Plaintext bits sealed per second (tags not counted), in 10^9.
    pub gbit_per_sec: f64,
    /// Packets sealed per second.
    pub packets_per_sec: f64,
    /// Plaintext bytes sealed per packet.
    pub packet: usize,
}

/// AES-128-GCM seal throughput on one core (this thread) for `packet`-byte packets with
/// ring (`ring::aead::LessSafeKey`, `seal_in_place_separate_tag` in place over a reused
/// buffer, a fresh nonce per packet from a counter, 16-byte tag), which is what QUIC 1-RTT
/// packet protection costs per packet (header protection excluded).
///
/// `packet` bytes are encrypted per call with no associated data (QUIC's ~10–25-byte header
/// AAD would add one GHASH block or two); the 16-byte tag comes on top. The nonce is a fixed
/// IV XORed with a packet-number counter, as in RFC 9001 §5.3. Runs for `duration`, checking
/// the clock every few packets, and divides by the time actually spent (at least one round
/// of packets is sealed even for a zero `duration`).
pub fn aes128gcm_seal_limit(packet: usize, duration: Duration) -> SealLimit {
    const KEY: [u8; 16] = [
        0x1f, 0x36, 0x96, 0x13, 0xdd, 0x76, 0xd5, 0x46, 0x77, 0x30, 0xef, 0xcb, 0xe3, 0xb1, 0xa2,
        0x2d,
    ];
    const IV: [u8; aead::NONCE_LEN] = [
        0xfa, 0x04, 0x4b, 0x2f, 0x42, 0xa3, 0xfd, 0x3b, 0x46, 0xfb, 0x25, 0x5c,
    ];
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, &KEY).expect("16 bytes is an AES-128 key"),
    );
    let mut buf = vec![0x5au8; packet];
    // Read the clock about every 16 KiB sealed, so it costs nothing next to the sealing.
    let per_check = (16_384 / packet.max(1)).clamp(1, 64);
    let mut pn: u64 = 0;
    let start = Instant::now();
    // An unrepresentable deadline means "as long as asked": effectively forever.
    let end = start.checked_add(duration);
    let elapsed = loop {
        for _ in 0..per_check {
            let mut nonce = IV;
            for (n, p) in nonce[aead::NONCE_LEN - 8..]
                .iter_mut()
                .zip(pn.to_be_bytes())
            {
                *n ^= p;
            }
            pn += 1;
            let tag = key
                .seal_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::empty(),
                    &mut buf,
                )
                .expect("packet shorter than AES-GCM's 64 GiB limit");
            let _ = std::hint::black_box(tag);
        }
        std::hint::black_box(&mut buf);
        let now = Instant::now();
        if end.is_some_and(|end| now >= end) {
            break now - start;
        }
    };
    let secs = elapsed.as_secs_f64();
    let packets_per_sec = if secs > 0.0 { pn as f64 / secs } else { 0.0 };
    SealLimit {
        gbit_per_sec: packets_per_sec * packet as f64 * 8.0 / 1e9,
        packets_per_sec,
        packet,
    }
}

fn udp_limit(payload: usize, duration: Duration, gso: bool) -> io::Result<UdpLimit> {
    if payload == 0 || payload > MAX_GSO_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("UDP payload must be 1..={MAX_GSO_BYTES} bytes, not {payload}"),
        ));
    }
    // The receiver's deadlines (start + duration + GRACE) must be representable.
    let representable = duration
        .checked_add(GRACE * 2)
        .and_then(|d| Instant::now().checked_add(d))
        .is_some();
    if duration.is_zero() || !representable {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("probe duration must be positive and finite, not {duration:?}"),
        ));
    }

    let (rx_sock, rx_state) = bind_loopback()?;
    let (tx_sock, tx_state) = bind_loopback()?;
    let rx_addr = rx_sock.local_addr()?;
    let tx_addr = tx_sock.local_addr()?;
    let segments = if gso {
        MAX_GSO_SEGMENTS
            .min(MAX_GSO_BYTES / payload)
            .min(tx_state.max_gso_segments())
            .max(1)
    } else {
        1
    };

    let sender_stopped = Arc::new(AtomicBool::new(false));
    let receiver_stopped = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (start_tx, start_rx) = mpsc::channel::<Instant>();

    let receiver = {
        let sender_stopped = sender_stopped.clone();
        let receiver_stopped = receiver_stopped.clone();
        thread::Builder::new()
            .name("probe-udp-recv".into())
            .spawn(move || {
                let _stopped = SetOnDrop(&receiver_stopped);
                receive(Receiver {
                    sock: rx_sock,
                    state: rx_state,
                    from: tx_addr,
                    payload,
                    duration,
                    ready: ready_tx,
                    start: start_rx,
                    sender_stopped: &sender_stopped,
                })
            })?
    };

    // The receiver has its buffers and is about to poll before a single datagram is sent.
    // If it died instead, the channel is closed and its join below reports why.
    let sender = if ready_rx.recv().is_ok() {
        let start = Instant::now();
        // A closed channel means the receiver is gone; its join below reports why.
        let _ = start_tx.send(start);
        let spawned = {
            let sender_stopped = sender_stopped.clone();
            let receiver_stopped = receiver_stopped.clone();
            thread::Builder::new()
                .name("probe-udp-send".into())
                .spawn(move || {
                    let _stopped = SetOnDrop(&sender_stopped);
                    send(Sender {
                        sock: tx_sock,
                        state: tx_state,
                        to: rx_addr,
                        payload,
                        segments,
                        end: start + duration,
                        receiver_stopped: &receiver_stopped,
                    })
                })
        };
        match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                // The receiver sees the sender stopped before the window ended and returns.
                sender_stopped.store(true, Ordering::Relaxed);
                let _ = receiver.join();
                return Err(e);
            }
        }
    } else {
        None
    };

    // A receiver failure stops the sender (and vice versa); report the sender's error first.
    let sent = sender.map(join_probe_thread).transpose();
    let received = join_probe_thread(receiver);
    let _accepted_by_kernel = sent?;
    let received = received?;

    let secs = duration.as_secs_f64();
    let datagrams_per_sec = received as f64 / secs;
    Ok(UdpLimit {
        datagrams_per_sec,
        gbit_per_sec: datagrams_per_sec * payload as f64 * 8.0 / 1e9,
        payload,
        segments_per_send: segments,
    })
}

/// A nonblocking IPv4 loopback socket with large buffers, set up by quinn-udp (GRO on).
fn bind_loopback() -> io::Result<(UdpSocket, UdpSocketState)> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(SOCKET_BUFFER_REQUEST)?;
    s.set_send_buffer_size(SOCKET_BUFFER_REQUEST)?;
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    let sock = UdpSocket::from(s);
    let state = UdpSocketState::new((&sock).into())?;
    Ok((sock, state))
}

fn join_probe_thread<T>(handle: thread::JoinHandle<io::Result<T>>) -> io::Result<T> {
    let name = handle.thread().name().unwrap_or("probe").to_owned();
    handle
        .join()
        .map_err(|_| io::Error::other(format!("{name} thread panicked")))?
}

/// Sets the flag when dropped: tells the other thread this one has stopped, even on a panic.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Receiver<'a> {
    sock: UdpSocket,
    state: UdpSocketState,
    from: SocketAddr,
    payload: usize,
    duration: Duration,
    ready: mpsc::Sender<()>,
    start: mpsc::Receiver<Instant>,
    sender_stopped: &'a AtomicBool,
}

/// Counts datagrams from `from` received within `[start, start + duration]`, then drains
/// (uncounted) for [`GRACE`]. Stops early if the sender stops before the window ends (it
/// failed; its error is what gets reported).
fn receive(r: Receiver<'_>) -> io::Result<u64> {
    // One slot holds one GRO batch of up to gro_segments datagrams, as in the workers, but
    // never more than 64 KiB: no UDP datagram or GRO batch is larger.
    let slot = (r.payload * r.state.gro_segments().max(1)).min(1 << 16);
    let mut buf = vec![0u8; slot * quinn_udp::BATCH_SIZE];
    let mut slices: Vec<IoSliceMut<'_>> = buf.chunks_mut(slot).map(IoSliceMut::new).collect();
    let mut meta = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
    let fd = r.sock.as_raw_fd();

    if r.ready.send(()).is_err() {
        return Ok(0);
    }
    let Ok(start) = r.start.recv() else {
        return Ok(0); // the caller gave up before starting the sender
    };
    let end = start + r.duration;
    let stop = end + GRACE;
    let mut received: u64 = 0;
    loop {
        let got = r
            .state
            .recv(UdpSockRef::from(&r.sock), &mut slices, &mut meta);
        let now = Instant::now();
        match got {
            Ok(n) => {
                if now <= end {
                    received += meta[..n]
                        .iter()
                        .filter(|m| m.addr == r.from)
                        .map(|m| m.len.div_ceil(m.stride.max(1)) as u64)
                        .sum::<u64>();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if now < stop {
                    wait_fd(fd, libc::POLLIN, RECV_POLL.min(stop - now))?;
                }
            }
            Err(e) => return Err(e),
        }
        if now >= stop || (now < end && r.sender_stopped.load(Ordering::Relaxed)) {
            return Ok(received);
        }
    }
}

struct Sender<'a> {
    sock: UdpSocket,
    state: UdpSocketState,
    to: SocketAddr,
    payload: usize,
    segments: usize,
    end: Instant,
    receiver_stopped: &'a AtomicBool,
}

/// Sends full batches of `segments` datagrams until `end`; returns datagrams the kernel
/// accepted (which includes those later dropped for a full receive buffer).
fn send(s: Sender<'_>) -> io::Result<u64> {
    let contents = vec![0xa5u8; s.payload * s.segments];
    let transmit = Transmit {
        destination: s.to,
        ecn: None,
        contents: &contents,
        segment_size: (s.segments > 1).then_some(s.payload),
        src_ip: None,
    };
    let fd = s.sock.as_raw_fd();
    let mut sent: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= s.end || s.receiver_stopped.load(Ordering::Relaxed) {
            return Ok(sent);
        }
        match s.state.try_send(UdpSockRef::from(&s.sock), &transmit) {
            Ok(()) => sent += s.segments as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_fd(fd, libc::POLLOUT, SEND_POLL.min(s.end - now))?;
            }
            // The device queue was full: the batch was dropped, as it would be on a NIC.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => thread::yield_now(),
            Err(e) => return Err(e),
        }
    }
}

/// Waits until `fd` is ready for `events` or `timeout` passes (rounded up to 1 ms).
fn wait_fd(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout
        .as_micros()
        .div_ceil(1000)
        .clamp(1, libc::c_int::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(200);

    fn assert_sane(l: &UdpLimit, payload: usize) {
        assert_eq!(l.payload, payload);
        assert!(l.segments_per_send >= 1, "{l:?}");
        assert!(
            l.datagrams_per_sec.is_finite() && l.datagrams_per_sec > 0.0,
            "{l:?}"
        );
        assert!(l.gbit_per_sec.is_finite() && l.gbit_per_sec > 0.0, "{l:?}");
    }

    #[test]
    fn gso_probe_receives_datagrams() {
        let l = udp_loopback_limit(1200, SHORT).expect("probe");
        assert_sane(&l, 1200);
        assert!(l.segments_per_send <= MAX_GSO_SEGMENTS, "{l:?}");
        assert!(l.segments_per_send * 1200 <= MAX_GSO_BYTES, "{l:?}");
    }

    #[test]
    fn unbatched_probe_receives_datagrams() {
        let l = udp_loopback_limit_unbatched(1200, SHORT).expect("probe");
        assert_sane(&l, 1200);
        assert_eq!(l.segments_per_send, 1);
    }

    #[test]
    fn large_payload_fits_one_gso_batch() {
        let l = udp_loopback_limit(40_000, SHORT).expect("probe");
        assert_sane(&l, 40_000);
        assert_eq!(l.segments_per_send, 1);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for (payload, d) in [
            (0, SHORT),
            (MAX_GSO_BYTES + 1, SHORT),
            (1200, Duration::ZERO),
        ] {
            let e = udp_loopback_limit(payload, d).expect_err("must refuse");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn seal_probe_seals_packets() {
        let l = aes128gcm_seal_limit(1200, SHORT);
        assert_eq!(l.packet, 1200);
        assert!(
            l.packets_per_sec.is_finite() && l.packets_per_sec > 0.0,
            "{l:?}"
        );
        assert!(l.gbit_per_sec.is_finite() && l.gbit_per_sec > 0.0, "{l:?}");
        let empty = aes128gcm_seal_limit(0, Duration::ZERO);
        assert!(empty.packets_per_sec.is_finite() && empty.gbit_per_sec == 0.0);
    }
}
