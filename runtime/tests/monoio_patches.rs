//! The vendored monoio's changes (PATCHES.md), each held on both drivers:
//! - the runtime loop takes only the posted completions on every other "cold" turn
//!   (tasks still queued after a round) and submits on the others: a chain of tasks that
//!   never lets the queue empty must still get its IO submitted;
//! - a task woken while it runs goes to the back of the run queue, behind the tasks it
//!   woke (upstream put it at the front, so it ran again before any of them);
//! - `TcpStreamPoll::poll_read` forgets read readiness after a read shorter than its
//!   buffer: bytes that arrive after the short read must wake the reader, and a FIN that
//!   arrived with the drained bytes must still read as end of stream;
//! - the legacy driver wakes a reader on an error event (EPOLLERR), as io_uring's PollAdd
//!   does: an ICMP error queued on a client's UDP socket must wake its receive loop.

use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Turns of the looping task allowed before the receive must have completed. With the
/// submission every other turn it completes within a few; without any, never.
const MAX_SPINS: u64 = 100_000;

/// Two tasks handing a baton back and forth keep the run queue non-empty for as long as
/// they run, so the loop never parks.
struct Baton {
    turn: Cell<usize>,
    wakers: [Cell<Option<Waker>>; 2],
}

/// Hands the baton to the other task and waits until it comes back.
struct Pass<'a> {
    baton: &'a Baton,
    me: usize,
    handed: bool,
}

impl Future for Pass<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (baton, me) = (self.baton, self.me);
        if !self.handed {
            self.handed = true;
            baton.turn.set(1 - me);
            if let Some(w) = baton.wakers[1 - me].take() {
                w.wake();
            }
        } else if baton.turn.get() == me {
            return Poll::Ready(());
        }
        baton.wakers[me].set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

fn pass(baton: &Baton, me: usize) -> Pass<'_> {
    Pass {
        baton,
        me,
        handed: false,
    }
}

/// A receive whose datagram is already queued, beside two tasks that keep each other
/// runnable until the receive is done. Returns how many times the baton went round.
async fn spins_until_received() -> u64 {
    let socket = monoio::net::udp::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind peer");
    peer.send_to(b"ping", socket.local_addr().expect("addr"))
        .expect("send");
    let done = Rc::new(Cell::new(false));
    let flag = done.clone();
    monoio::spawn(async move {
        let (res, buf) = socket.recv_from(vec![0u8; 16]).await;
        let (n, _) = res.expect("recv");
        assert_eq!(&buf[..n], b"ping");
        flag.set(true);
    });
    let baton = Rc::new(Baton {
        turn: Cell::new(0),
        wakers: [Cell::new(None), Cell::new(None)],
    });
    let (other, stop) = (baton.clone(), done.clone());
    let partner = monoio::spawn(async move {
        while !stop.get() {
            pass(&other, 1).await;
        }
    });
    let mut spins = 0;
    while !done.get() {
        pass(&baton, 0).await;
        spins += 1;
        assert!(spins < MAX_SPINS, "the receive never completed: IO starved");
    }
    // let the partner see `done` and end
    baton.turn.set(1);
    if let Some(w) = baton.wakers[1].take() {
        w.wake();
    }
    partner.await;
    spins
}

/// Runs `f` on an io_uring runtime, when this machine allows one (seccomp or an old
/// kernel may refuse it), and on the legacy one; each result comes with its driver's name.
fn on_both_drivers<T, Fut: Future<Output = T>>(f: impl Fn() -> Fut) -> Vec<(&'static str, T)> {
    let mut results = Vec::new();
    let mut uring = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build();
    if let Ok(rt) = uring.as_mut() {
        results.push(("io_uring", rt.block_on(f())));
    }
    let mut legacy = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime");
    results.push(("legacy", legacy.block_on(f())));
    results
}

#[test]
fn a_looping_task_does_not_starve_io() {
    for (driver, spins) in on_both_drivers(spins_until_received) {
        assert!(
            spins < 16,
            "{driver}: {spins} turns before the receive completed"
        );
    }
}

/// Wakes `other` and itself, then on its second poll reports whether `other` ran in
/// between.
struct WakeBoth {
    other: Rc<Cell<Option<Waker>>>,
    other_ran: Rc<Cell<bool>>,
    polled: bool,
}

impl Future for WakeBoth {
    type Output = bool;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        if self.polled {
            return Poll::Ready(self.other_ran.get());
        }
        self.polled = true;
        if let Some(w) = self.other.take() {
            w.wake();
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Parks until woken once, then records that it ran.
struct WaitOnce {
    slot: Rc<Cell<Option<Waker>>>,
    ran: Rc<Cell<bool>>,
    registered: bool,
}

impl Future for WaitOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered {
            self.ran.set(true);
            return Poll::Ready(());
        }
        self.registered = true;
        self.slot.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

async fn woken_task_runs_before_the_waker_again() -> bool {
    let slot = Rc::new(Cell::new(None));
    let ran = Rc::new(Cell::new(false));
    let waiter = monoio::spawn(WaitOnce {
        slot: slot.clone(),
        ran: ran.clone(),
        registered: false,
    });
    // one turn of the queue: the waiter registers its waker
    YieldBack(false).await;
    let registered = slot.take().expect("the waiter ran and registered");
    slot.set(Some(registered));
    let other_ran = WakeBoth {
        other: slot,
        other_ran: ran,
        polled: false,
    }
    .await;
    waiter.await;
    other_ran
}

/// Pending once, woken by the next task's turn (a fresh spawn), so the caller waits one
/// turn of the queue whatever the order of self-wakes.
struct YieldBack(bool);

impl Future for YieldBack {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        let waker = cx.waker().clone();
        drop(monoio::spawn(async move { waker.wake() }));
        Poll::Pending
    }
}

#[test]
fn a_task_woken_while_it_runs_goes_behind_the_tasks_it_woke() {
    for (driver, other_ran) in on_both_drivers(woken_task_runs_before_the_waker_again) {
        assert!(
            other_ran,
            "{driver}: the waker ran again before the task it woke"
        );
    }
}

/// Upper bound for every read in these tests: a lost wake-up fails the test instead of
/// hanging CI.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// The peer writes `pieces` with a pause between them, then closes its side.
fn peer(addr: std::net::SocketAddr, pieces: &'static [&'static [u8]], pause: Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    for p in pieces {
        s.write_all(p).expect("write");
        std::thread::sleep(pause);
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    // Hold the socket open until the reader has seen the end of stream.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
}

/// Accepts one connection, optionally waits before the first read (so data and FIN are
/// both queued), and reads it to the end with a 64-byte buffer.
async fn read_all(
    pieces: &'static [&'static [u8]],
    pause: Duration,
    first_wait: Duration,
) -> Vec<u8> {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let writer = std::thread::spawn(move || peer(addr, pieces, pause));
    let (stream, _) = listener.accept().await.expect("accept");
    let mut stream = stream
        .try_into_poll_io()
        .map_err(|(e, _)| e)
        .expect("poll io");
    monoio::time::sleep(first_wait).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let n = monoio::time::timeout(READ_DEADLINE, stream.read(&mut buf))
            .await
            .expect("read timed out: a wake-up was lost")
            .expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    writer.join().expect("peer thread");
    got
}

const PIECES: &[&[u8]] = &[b"abc", b"defgh", b"ij"];

#[test]
fn bytes_after_a_short_read_wake_the_reader() {
    for (driver, got) in
        on_both_drivers(|| read_all(PIECES, Duration::from_millis(30), Duration::ZERO))
    {
        assert_eq!(got, b"abcdefghij", "{driver} driver");
    }
}

#[test]
fn fin_queued_with_the_drained_bytes_still_ends_the_stream() {
    for (driver, got) in
        on_both_drivers(|| read_all(&[b"xyz"], Duration::ZERO, Duration::from_millis(100)))
    {
        assert_eq!(got, b"xyz", "{driver} driver");
    }
}

/// A UDP socket with `IP_RECVERR` sends to a port where nothing listens; the kernel
/// queues the ICMP "port unreachable" on it (POLLERR). Says whether a reader waiting for
/// readability was woken (within [`READ_DEADLINE`]).
async fn error_queue_wakes_reader() -> bool {
    use std::os::fd::AsRawFd;
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let socket = monoio::net::udp::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_RECVERR");
    // register the fd with the driver first: the error must raise a new event
    let early = monoio::time::timeout(Duration::from_millis(20), socket.readable(false)).await;
    assert!(early.is_err(), "readable before anything was sent");
    let (sent, _) = socket.send_to(b"hello".to_vec(), closed).await;
    // the send itself may already report the error (it does not consume the queue)
    let _ = sent;
    monoio::time::timeout(READ_DEADLINE, socket.readable(false))
        .await
        .is_ok()
}

#[test]
fn an_icmp_error_queued_on_a_udp_socket_wakes_its_reader() {
    for (driver, woke) in on_both_drivers(error_queue_wakes_reader) {
        assert!(woke, "{driver} driver: POLLERR did not wake the reader");
    }
}
