//! The only cross-core path: datagrams a worker received for a connection another worker
//! owns (migration, NAT rebinding), and the shutdown wake-up.
//!
//! A bounded lock-free queue plus an `AtomicWaker`: the sender never blocks and never
//! takes a lock; when the queue is full the datagram is dropped, which QUIC treats as loss.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;

use atomic_waker::AtomicWaker;
use bytes::BytesMut;
use crossbeam_queue::ArrayQueue;
use quinn_proto::EcnCodepoint;

/// A datagram handed from the worker that received it to the worker that owns it.
#[derive(Debug)]
pub(crate) struct StrayDatagram {
    pub data: BytesMut,
    pub remote: SocketAddr,
    pub local_ip: Option<IpAddr>,
    pub ecn: Option<EcnCodepoint>,
    /// Which of the worker's sockets received it (0: main address; then the preferred
    /// addresses): the owner answers from the same one.
    pub socket: u8,
}

pub(crate) struct Inbox {
    queue: ArrayQueue<StrayDatagram>,
    waker: AtomicWaker,
    dropped: AtomicU64,
}

impl Inbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: ArrayQueue::new(capacity.max(1)),
            waker: AtomicWaker::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a datagram for the owner and wakes it; drops it if the owner is backed up.
    pub fn push(&self, d: StrayDatagram) -> bool {
        let queued = self.queue.push(d).is_ok();
        if !queued {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.waker.wake();
        queued
    }

    pub fn pop(&self) -> Option<StrayDatagram> {
        self.queue.pop()
    }

    /// Called by the owning worker's driver on every poll, before it drains the queue.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Wakes the owner without a datagram (shutdown).
    pub fn wake(&self) {
        self.waker.wake();
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stray(n: u8) -> StrayDatagram {
        StrayDatagram {
            data: BytesMut::from(&[n][..]),
            remote: "127.0.0.1:1".parse().expect("addr"),
            local_ip: None,
            ecn: None,
            socket: 0,
        }
    }

    #[test]
    fn bounded_and_counts_drops() {
        let inbox = Inbox::new(2);
        assert!(inbox.push(stray(1)));
        assert!(inbox.push(stray(2)));
        assert!(!inbox.push(stray(3)));
        assert_eq!(inbox.dropped(), 1);
        assert_eq!(inbox.pop().map(|d| d.data[0]), Some(1));
        assert_eq!(inbox.pop().map(|d| d.data[0]), Some(2));
        assert!(inbox.pop().is_none());
    }
}
