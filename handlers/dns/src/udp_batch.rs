//! Batched UDP syscalls for the classic listener: `recvmmsg` takes every datagram waiting
//! on the socket (up to a batch) in one call, `sendmmsg` sends the batch's answers in one.
//!
//! NSD does the same. monoio 0.2's `UdpSocket` has one io_uring operation per datagram
//! (a receive and a send per query, each with its own completion to reap and task to wake);
//! here the loop waits for readiness (`readable`, one PollAdd on io_uring, or epoll) only
//! when the socket is empty, and makes two syscalls per batch of queries. The same fd stays
//! owned by the monoio socket, so forwarded answers can still be sent with `send_to`.

#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Received datagrams: `slots` buffers of `slot_size` bytes with their source addresses.
pub(crate) struct RecvBatch {
    slot_size: usize,
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Datagrams the last [`RecvBatch::recv`] filled.
    filled: usize,
}

impl RecvBatch {
    pub fn new(slots: usize, slot_size: usize) -> Self {
        let slots = slots.max(1);
        // SAFETY: all-zero is a valid value of these plain C structs.
        let (name, iovec, msg) = unsafe { (zeroed(), zeroed(), zeroed()) };
        Self {
            slot_size,
            bufs: vec![0; slots * slot_size],
            names: vec![name; slots],
            iovecs: vec![iovec; slots],
            msgs: vec![msg; slots],
            filled: 0,
        }
    }

    /// Receives what is waiting, up to the batch, without blocking: the count, or
    /// `WouldBlock` when the socket is empty.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.filled = 0;
        let slots = self.msgs.len();
        // the pointers are rebuilt each call: they point into this struct's own vectors,
        // which do not move while `recvmmsg` runs
        for i in 0..slots {
            self.iovecs[i] = libc::iovec {
                iov_base: self.bufs[i * self.slot_size..].as_mut_ptr().cast(),
                iov_len: self.slot_size,
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        loop {
            // SAFETY: `msgs` holds `slots` headers whose names and iovecs point into live
            // buffers of the lengths given; the kernel writes only within them.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.msgs.as_mut_ptr(),
                    slots as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                self.filled = n as usize;
                return Ok(self.filled);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Datagram `i` of the last receive and its source; `None` for one cut short by the
    /// buffer (MSG_TRUNC) or from a source that is not an IP address.
    pub fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.filled {
            return None;
        }
        let msg = &self.msgs[i];
        if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        // SAFETY: the kernel wrote a socket address of `msg_namelen` bytes into the storage.
        let peer = unsafe { SockAddr::new(self.names[i], msg.msg_hdr.msg_namelen) }.as_socket()?;
        let start = i * self.slot_size;
        let len = (msg.msg_len as usize).min(self.slot_size);
        Some((&self.bufs[start..start + len], peer))
    }
}

/// Answers waiting to be sent, in order.
#[derive(Default)]
pub(crate) struct SendBatch {
    answers: Vec<(Vec<u8>, SockAddr)>,
    /// Answers at the front already sent (or given up on).
    sent: usize,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    pub fn push(&mut self, answer: Vec<u8>, peer: SocketAddr) {
        self.answers.push((answer, SockAddr::from(peer)));
    }

    pub fn is_empty(&self) -> bool {
        self.sent >= self.answers.len()
    }

    /// Sends what is left without blocking: `WouldBlock` when the socket's buffer is full
    /// (nothing sent), another error for the first answer left (which the caller may
    /// [`SendBatch::skip`]). Empties the batch once everything went out.
    pub fn send(&mut self, fd: RawFd) -> io::Result<()> {
        let rest = &self.answers[self.sent..];
        self.iovecs.clear();
        self.iovecs.extend(rest.iter().map(|(a, _)| libc::iovec {
            iov_base: a.as_ptr() as *mut libc::c_void,
            iov_len: a.len(),
        }));
        self.msgs.clear();
        for (i, (_, peer)) in rest.iter().enumerate() {
            // SAFETY: all-zero is a valid `mmsghdr`.
            let mut msg: libc::mmsghdr = unsafe { zeroed() };
            msg.msg_hdr.msg_name = peer.as_ptr() as *mut libc::c_void;
            msg.msg_hdr.msg_namelen = peer.len();
            msg.msg_hdr.msg_iov = &mut self.iovecs[i];
            msg.msg_hdr.msg_iovlen = 1;
            self.msgs.push(msg);
        }
        // SAFETY: every header points at a live address and a live answer buffer, owned
        // by `self` and unchanged during the call.
        let n = unsafe { alknet_runtime::send_mmsg(fd, &mut self.msgs) }?;
        self.sent += n;
        if self.is_empty() {
            self.clear();
        }
        Ok(())
    }

    /// Gives up on the first answer left (one the kernel refused).
    pub fn skip(&mut self) {
        self.sent += 1;
        if self.is_empty() {
            self.clear();
        }
    }

    pub fn clear(&mut self) {
        self.answers.clear();
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_in_and_out_over_loopback() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        server.set_nonblocking(true).expect("nonblocking");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut recv = RecvBatch::new(4, 64);
        let empty = recv.recv(server.as_raw_fd());
        assert_eq!(empty.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));

        // five datagrams, one longer than a slot; a batch takes at most four
        let long = [7u8; 100];
        let sent = [&b"one"[..], b"two", &long, b"four", b"five"];
        for d in sent {
            client
                .send_to(d, server.local_addr().expect("addr"))
                .expect("send");
        }
        let from = client.local_addr().expect("addr");
        let mut got: Vec<Option<Vec<u8>>> = Vec::new();
        for _ in 0..sent.len() {
            if got.len() == sent.len() {
                break;
            }
            // wait (blocking) until something is queued, then take a batch
            server.set_nonblocking(false).expect("blocking");
            server.peek_from(&mut [0u8; 1]).expect("peek");
            server.set_nonblocking(true).expect("nonblocking");
            let n = recv.recv(server.as_raw_fd()).expect("recv");
            assert!((1..=4).contains(&n), "{n}");
            for i in 0..n {
                let d = recv.datagram(i);
                assert!(d.is_none_or(|(_, src)| src == from));
                got.push(d.map(|(b, _)| b.to_vec()));
            }
            assert_eq!(recv.datagram(n), None);
        }
        let want: Vec<Option<Vec<u8>>> = vec![
            Some(b"one".to_vec()),
            Some(b"two".to_vec()),
            None, // cut short by the slot
            Some(b"four".to_vec()),
            Some(b"five".to_vec()),
        ];
        assert_eq!(got, want);

        let mut send = SendBatch::default();
        for i in 0..3u8 {
            send.push(vec![i; 3], from);
        }
        send.send(server.as_raw_fd()).expect("send");
        assert!(send.is_empty());
        let mut buf = [0u8; 16];
        for i in 0..3u8 {
            let (n, src) = client.recv_from(&mut buf).expect("answer");
            assert_eq!(
                (&buf[..n], src),
                (&[i; 3][..], server.local_addr().expect("a"))
            );
        }
    }
}
