//! The vendored monoio's runtime loop takes only the posted completions on every other
//! "cold" turn (tasks still queued after a round) and submits on the others (PATCHES.md).
//! This holds the guarantee the submit was there for: a task that never stops being
//! runnable cannot starve another task's IO, on either driver.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Turns of the looping task allowed before the receive must have completed. With the
/// submission every other turn it completes within a few; without any, never.
const MAX_SPINS: u64 = 100_000;

/// Two tasks handing a baton back and forth keep the run queue non-empty for as long as
/// they run, so the loop never parks. (A task that wakes itself while running does not
/// do it: monoio puts it back at the front of the queue and nothing else runs at all.)
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

#[test]
fn a_looping_task_does_not_starve_io() {
    let mut uring = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build();
    // io_uring may be refused here; the legacy driver is tested either way.
    if let Ok(rt) = uring.as_mut() {
        let spins = rt.block_on(spins_until_received());
        assert!(
            spins < 16,
            "io_uring: {spins} turns before the receive completed"
        );
    }
    let mut legacy = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime");
    let spins = legacy.block_on(spins_until_received());
    assert!(
        spins < 16,
        "legacy: {spins} turns before the receive completed"
    );
}
