//! Happy Eyeballs over the addresses a server's name resolves to (RFC 8305): a name with
//! an IPv6 and an IPv4 address, one of them broken (no route, nothing listening, a
//! firewall), must connect over the other without waiting out the broken one's timeout.
//! `ssh` and `git` try every address too. Used by every client transport
//! (`connect.rs`'s `Dial`); the race knows nothing of QUIC, TCP or the runtime's timer
//! (it is handed a sleep), so it is tested here on a simulated clock.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

/// RFC 8305's "Connection Attempt Delay": how long an attempt runs alone before the next
/// address is tried beside it (250 ms, the RFC's recommendation, as browsers use).
pub const ADDRESS_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Orders resolved addresses for the race (RFC 8305 §4): duplicates removed, then the
/// families alternated, starting with the family of the resolver's first answer (which
/// ranks them by RFC 6724).
pub fn interleave(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut unique: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    let Some(first) = unique.first() else {
        return unique;
    };
    let first_v6 = first.is_ipv6();
    let (mut preferred, mut other): (Vec<_>, Vec<_>) =
        unique.into_iter().partition(|a| a.is_ipv6() == first_v6);
    preferred.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(preferred.len() + other.len());
    while let Some(a) = preferred.pop() {
        out.push(a);
        if let Some(b) = other.pop() {
            out.push(b);
        }
    }
    out.extend(other.into_iter().rev());
    out
}

/// Tries `remotes` in order (RFC 8305 §5): the first attempt starts at once, each next one
/// after `delay` or as soon as an attempt fails; the first to connect wins and the
/// others are dropped. An error for which `decisive` is true (the server answered and
/// refused) ends the race with it; otherwise the race ends when every attempt has
/// failed, with their errors in the order they failed. `sleep` is the runtime's
/// (`monoio::time::sleep`).
pub async fn race<T, E, Fut, S>(
    remotes: &[SocketAddr],
    delay: Duration,
    sleep: impl Fn(Duration) -> S,
    attempt: impl Fn(SocketAddr) -> Fut,
    decisive: impl Fn(&E) -> bool,
) -> Result<T, Vec<E>>
where
    Fut: Future<Output = Result<T, E>>,
    S: Future<Output = ()>,
{
    let mut running = FuturesUnordered::new();
    let mut next = 0;
    let mut errors = Vec::new();
    let mut timer: Option<Pin<Box<S>>> = None;
    let mut start_next = true;
    poll_fn(move |cx| loop {
        if start_next && next < remotes.len() {
            running.push(attempt(remotes[next]));
            next += 1;
            timer = (next < remotes.len()).then(|| Box::pin(sleep(delay)));
        }
        start_next = false;
        match running.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(t))) => return Poll::Ready(Ok(t)),
            Poll::Ready(Some(Err(e))) => {
                if decisive(&e) {
                    return Poll::Ready(Err(vec![e]));
                }
                errors.push(e);
                start_next = true;
                continue;
            }
            Poll::Ready(None) if next >= remotes.len() => {
                return Poll::Ready(Err(std::mem::take(&mut errors)))
            }
            Poll::Ready(None) => {
                start_next = true;
                continue;
            }
            Poll::Pending => {}
        }
        if let Some(t) = timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                timer = None;
                start_next = true;
                continue;
            }
        }
        return Poll::Pending;
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::task::{Context, Waker};

    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect("addr")).collect()
    }

    #[test]
    fn families_alternate_from_the_first_answer() {
        let got = interleave(addrs(&[
            "[2001:db8::1]:443",
            "[2001:db8::2]:443",
            "[2001:db8::3]:443",
            "192.0.2.1:443",
            "[2001:db8::1]:443",
        ]));
        assert_eq!(
            got,
            addrs(&[
                "[2001:db8::1]:443",
                "192.0.2.1:443",
                "[2001:db8::2]:443",
                "[2001:db8::3]:443",
            ])
        );
        let got = interleave(addrs(&["192.0.2.1:443", "192.0.2.2:443", "[::1]:443"]));
        assert_eq!(got, addrs(&["192.0.2.1:443", "[::1]:443", "192.0.2.2:443"]));
        assert!(interleave(Vec::new()).is_empty());
    }

    /// Simulated time in milliseconds: sleeps register their deadline and waker, and the
    /// test moves the clock to the next deadline whenever the race waits.
    #[derive(Default)]
    struct Clock {
        now: Cell<u64>,
        sleepers: RefCell<Vec<(u64, Waker)>>,
    }

    struct Sleep<'a> {
        clock: &'a Clock,
        until: u64,
    }

    impl Future for Sleep<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.clock.now.get() >= self.until {
                return Poll::Ready(());
            }
            self.clock
                .sleepers
                .borrow_mut()
                .push((self.until, cx.waker().clone()));
            Poll::Pending
        }
    }

    impl Clock {
        fn sleep(&self, ms: u64) -> Sleep<'_> {
            Sleep {
                clock: self,
                until: self.now.get() + ms,
            }
        }

        /// Moves to the earliest deadline and wakes its sleepers.
        fn advance(&self) {
            let mut sleepers = self.sleepers.borrow_mut();
            let next = sleepers
                .iter()
                .map(|(t, _)| *t)
                .min()
                .expect("the race waits, so something sleeps");
            self.now.set(next);
            let (due, later): (Vec<_>, Vec<_>) = sleepers.drain(..).partition(|(t, _)| *t <= next);
            *sleepers = later;
            drop(sleepers);
            for (_, w) in due {
                w.wake();
            }
        }
    }

    /// What an address does when tried: answer after a while, fail or refuse after a
    /// while, or hang (a path that drops everything).
    #[derive(Clone, Copy)]
    enum Peer {
        Connects(u64),
        Fails(u64),
        Refuses(u64),
        Hangs,
    }

    /// A race's outcome (the winning address's index, or the errors), when each attempt
    /// started (index, ms) and when the race ended (ms).
    type Run = (Result<u8, Vec<String>>, Vec<(u8, u64)>, u64);

    /// Runs a race over `peers` (address i is 10.0.0.i) with a 100 ms attempt delay.
    fn run(peers: &[Peer]) -> Run {
        let remotes: Vec<SocketAddr> = (0..peers.len())
            .map(|i| SocketAddr::from(([10, 0, 0, i as u8], 443)))
            .collect();
        let clock = Clock::default();
        let started = RefCell::new(Vec::new());
        let mut race = std::pin::pin!(race(
            &remotes,
            Duration::from_millis(100),
            |d| clock.sleep(d.as_millis() as u64),
            |addr| {
                let SocketAddr::V4(v4) = addr else {
                    unreachable!("test addresses are IPv4")
                };
                let i = v4.ip().octets()[3];
                started.borrow_mut().push((i, clock.now.get()));
                let (peer, clock) = (peers[i as usize], &clock);
                async move {
                    match peer {
                        Peer::Connects(after) => {
                            clock.sleep(after).await;
                            Ok(i)
                        }
                        Peer::Fails(after) => {
                            clock.sleep(after).await;
                            Err(format!("{i} failed"))
                        }
                        Peer::Refuses(after) => {
                            clock.sleep(after).await;
                            Err(format!("{i} refused"))
                        }
                        Peer::Hangs => {
                            clock.sleep(3_600_000).await;
                            Err(format!("{i} timed out"))
                        }
                    }
                }
            },
            |e: &String| e.ends_with("refused"),
        ));
        let mut cx = Context::from_waker(Waker::noop());
        let out = loop {
            match race.as_mut().poll(&mut cx) {
                Poll::Ready(out) => break out,
                Poll::Pending => clock.advance(),
            }
        };
        let ended = clock.now.get();
        let started = started.borrow().clone();
        (out, started, ended)
    }

    #[test]
    fn one_address_is_one_attempt() {
        let (out, started, _) = run(&[Peer::Fails(0)]);
        assert_eq!(out, Err(vec!["0 failed".to_string()]));
        assert_eq!(started, [(0, 0)]);
    }

    #[test]
    fn a_silent_first_address_loses_to_the_second_after_the_delay() {
        let (out, started, ended) = run(&[Peer::Hangs, Peer::Connects(10)]);
        assert_eq!(out, Ok(1));
        assert_eq!((started, ended), (vec![(0, 0), (1, 100)], 110));
    }

    #[test]
    fn a_failure_starts_the_next_at_once() {
        let (out, started, ended) = run(&[Peer::Fails(5), Peer::Fails(5), Peer::Connects(0)]);
        assert_eq!(out, Ok(2));
        assert_eq!((started, ended), (vec![(0, 0), (1, 5), (2, 10)], 10));
    }

    #[test]
    fn the_first_to_connect_wins() {
        // the first is slow but not silent: the second starts after the delay, and
        // whichever answers first is taken
        let (out, started, ended) = run(&[Peer::Connects(300), Peer::Connects(20)]);
        assert_eq!(out, Ok(1));
        assert_eq!((started, ended), (vec![(0, 0), (1, 100)], 120));
        let (out, _, ended) = run(&[Peer::Connects(150), Peer::Connects(200)]);
        assert_eq!((out, ended), (Ok(0), 150));
    }

    #[test]
    fn a_refusal_is_the_answer() {
        let (out, started, ended) = run(&[Peer::Refuses(5), Peer::Connects(0)]);
        assert_eq!(out, Err(vec!["0 refused".to_string()]));
        assert_eq!((started, ended), (vec![(0, 0)], 5));
    }

    #[test]
    fn every_failure_is_reported_when_none_connects() {
        let (out, started, ended) = run(&[Peer::Fails(150), Peer::Fails(10), Peer::Fails(10)]);
        assert_eq!(
            out,
            Err(vec![
                "1 failed".to_string(),
                "2 failed".to_string(),
                "0 failed".to_string()
            ])
        );
        assert_eq!((started, ended), (vec![(0, 0), (1, 100), (2, 110)], 150));
    }
}
