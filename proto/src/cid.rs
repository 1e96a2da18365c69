//! Connection IDs that name the worker owning the connection.
//!
//! Every connection ID this server issues is [`CID_LEN`] bytes:
//!
//! ```text
//!  byte 0        bytes 1..3     byte 3     bytes 4..8
//! +------------+--------------+----------+--------------+
//! |cfg:3|rnd:5 | server id:16 | worker:8 | random:32    |
//! +------------+--------------+----------+--------------+
//! ```
//!
//! * `cfg` is the layout version ([`CONFIG_ID`]); a packet whose CID carries another value
//!   is not ours and is left to the receiving worker. It sits where QUIC-LB puts its
//!   config rotation bits, so a QUIC-LB style load balancer can later route across machines
//!   by the server id.
//! * `worker` is the index of the worker thread whose `quinn_proto::Endpoint` owns the
//!   connection. A datagram that the kernel's SO_REUSEPORT hash delivers to another worker
//!   (NAT rebinding, migration) is forwarded to this one. The other worker's endpoint does
//!   not know the connection: it would drop the packets (our generator rejects CIDs naming
//!   other workers) or, with a permissive generator, answer with a stateless reset; either
//!   way the migrated connection would die. `runtime/tests/routing_pair.rs` shows both.
//!
//! The worker and server id are not secret: they identify a process and a thread, not a
//! connection. Linkability between two CIDs of one connection comes only from the 37 random
//! bits, as in QUIC-LB's plaintext mode.

use thiserror::Error;

/// Length of every connection ID we issue. Fixed, so short-header packets can be parsed.
pub const CID_LEN: usize = 8;
/// Layout version carried in the top three bits of the first byte.
pub const CONFIG_ID: u8 = 0b001;
/// Largest number of workers a CID can name.
pub const MAX_WORKERS: usize = 256;

/// Index of a worker thread, as carried in a CID.
pub type WorkerId = u8;

const CONFIG_SHIFT: u8 = 5;
const RANDOM_MASK_BYTE0: u8 = 0b0001_1111;

/// Errors building a [`CidLayout`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CidLayoutError {
    /// Zero workers, or more than a CID can name.
    #[error("worker count {0} is out of range (1..={MAX_WORKERS})")]
    WorkerCount(usize),
}

/// Where a datagram should be handled, decided from its destination CID alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The CID is not one of ours (or the packet is not parseable): the receiving worker
    /// handles it. Fresh Initial packets carry a client-chosen CID and land here.
    Local,
    /// The CID names this worker.
    Worker(WorkerId),
}

/// The CID layout shared by every worker of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidLayout {
    server_id: u16,
    workers: usize,
}

impl CidLayout {
    /// A layout for `workers` workers of the server `server_id`.
    pub fn new(server_id: u16, workers: usize) -> Result<Self, CidLayoutError> {
        if workers == 0 || workers > MAX_WORKERS {
            return Err(CidLayoutError::WorkerCount(workers));
        }
        Ok(Self { server_id, workers })
    }

    /// Number of workers this layout routes between.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The server id carried in every CID.
    pub fn server_id(&self) -> u16 {
        self.server_id
    }

    /// Builds a CID for `worker` from five bytes of randomness.
    ///
    /// The caller supplies the randomness so this stays deterministic and testable; the
    /// runtime feeds it from a CSPRNG.
    pub fn encode(&self, worker: WorkerId, random: [u8; 5]) -> [u8; CID_LEN] {
        let sid = self.server_id.to_be_bytes();
        [
            (CONFIG_ID << CONFIG_SHIFT) | (random[0] & RANDOM_MASK_BYTE0),
            sid[0],
            sid[1],
            worker,
            random[1],
            random[2],
            random[3],
            random[4],
        ]
    }

    /// The worker named by `cid`, if `cid` is one this layout issued.
    pub fn decode(&self, cid: &[u8]) -> Option<WorkerId> {
        if cid.len() != CID_LEN || cid[0] >> CONFIG_SHIFT != CONFIG_ID {
            return None;
        }
        if u16::from_be_bytes([cid[1], cid[2]]) != self.server_id {
            return None;
        }
        let worker = cid[3];
        (usize::from(worker) < self.workers).then_some(worker)
    }

    /// Decides which worker handles a QUIC datagram, from its first packet's destination CID.
    ///
    /// Only the header is read; the packet is not authenticated here (the owning endpoint
    /// does that), so a forged CID can at worst move a garbage packet to another worker,
    /// where it is dropped like any other undecryptable packet.
    pub fn route(&self, datagram: &[u8]) -> Route {
        match destination_cid(datagram) {
            Some(cid) => self.decode(cid).map_or(Route::Local, Route::Worker),
            None => Route::Local,
        }
    }
}

/// Whether `datagram` starts with a QUIC Initial packet: long header, fixed bit, and type 0
/// in version 1 (RFC 9000, section 17.2.2) or type 1 in version 2 (RFC 9369, section 3.2).
/// Read from the unprotected first byte and version only.
pub fn is_initial(datagram: &[u8]) -> bool {
    match datagram {
        [first, 0, 0, 0, 1, ..] => first & 0xf0 == 0xc0,
        [first, 0x6b, 0x33, 0x43, 0xcf, ..] => first & 0xf0 == 0xd0,
        _ => false,
    }
}

/// The destination connection ID of the first QUIC packet in `datagram`.
///
/// Long headers carry the DCID length; short headers do not, so for them this assumes the
/// CID is one of ours and takes [`CID_LEN`] bytes (the caller validates it with
/// [`CidLayout::decode`]). Returns `None` when the datagram is too short to hold one.
pub fn destination_cid(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first & 0x80 != 0 {
        // Long header: flags(1) version(4) dcid_len(1) dcid(dcid_len)
        let len = usize::from(*datagram.get(5)?);
        datagram.get(6..6 + len)
    } else {
        datagram.get(1..1 + CID_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_are_told_from_other_packets() {
        assert!(is_initial(&[0xc3, 0, 0, 0, 1, 8]));
        assert!(!is_initial(&[0xe3, 0, 0, 0, 1, 8]), "handshake packet");
        assert!(
            is_initial(&[0xd3, 0x6b, 0x33, 0x43, 0xcf, 8]),
            "QUIC v2 Initial"
        );
        assert!(
            !is_initial(&[0xc3, 0x6b, 0x33, 0x43, 0xcf, 8]),
            "QUIC v2 Retry (type 0)"
        );
        assert!(
            !is_initial(&[0xd3, 0, 0, 0, 1, 8]),
            "QUIC v1 0-RTT (type 1)"
        );
        assert!(!is_initial(&[0x43, 0, 0, 0, 1]), "short header");
        assert!(!is_initial(&[0xc3, 0, 0]), "truncated");
    }

    fn layout() -> CidLayout {
        CidLayout::new(0x1234, 4).expect("valid layout")
    }

    fn short_header(cid: &[u8]) -> Vec<u8> {
        let mut d = vec![0x40];
        d.extend_from_slice(cid);
        d.extend_from_slice(&[0xaa; 30]);
        d
    }

    fn long_header(cid: &[u8]) -> Vec<u8> {
        let mut d = vec![0xc0, 0, 0, 0, 1, cid.len() as u8];
        d.extend_from_slice(cid);
        d.extend_from_slice(&[0; 1200]);
        d
    }

    #[test]
    fn encode_decode_round_trip_for_every_worker() {
        let l = layout();
        for w in 0..4u8 {
            for r in [[0u8; 5], [0xff; 5], [1, 2, 3, 4, 5]] {
                let cid = l.encode(w, r);
                assert_eq!(l.decode(&cid), Some(w));
            }
        }
    }

    #[test]
    fn foreign_cids_are_not_ours() {
        let l = layout();
        let mut cid = l.encode(1, [7; 5]);
        // wrong config bits
        let mut bad = cid;
        bad[0] = 0xff;
        assert_eq!(l.decode(&bad), None);
        // other server
        let other = CidLayout::new(0x4321, 4).expect("valid layout");
        assert_eq!(other.decode(&cid), None);
        // worker beyond this server's count
        cid[3] = 4;
        assert_eq!(l.decode(&cid), None);
        // wrong length
        assert_eq!(l.decode(&cid[..7]), None);
    }

    #[test]
    fn routes_short_and_long_headers() {
        let l = layout();
        let cid = l.encode(3, [9; 5]);
        assert_eq!(l.route(&short_header(&cid)), Route::Worker(3));
        assert_eq!(l.route(&long_header(&cid)), Route::Worker(3));
        // a client-chosen Initial DCID stays local
        assert_eq!(l.route(&long_header(&[0xee; 16])), Route::Local);
        assert_eq!(l.route(&long_header(&[])), Route::Local);
    }

    #[test]
    fn truncated_datagrams_stay_local() {
        let l = layout();
        let cid = l.encode(2, [1; 5]);
        let full = long_header(&cid);
        for n in 0..14 {
            assert_eq!(l.route(&full[..n]), Route::Local, "prefix {n}");
        }
        let short = short_header(&cid);
        for n in 0..9 {
            assert_eq!(l.route(&short[..n]), Route::Local, "prefix {n}");
        }
        assert_eq!(l.route(&short[..9]), Route::Worker(2));
    }

    #[test]
    fn worker_count_is_bounded() {
        assert_eq!(CidLayout::new(0, 0), Err(CidLayoutError::WorkerCount(0)));
        assert_eq!(
            CidLayout::new(0, 257),
            Err(CidLayoutError::WorkerCount(257))
        );
        assert!(CidLayout::new(0, 256).is_ok());
    }
}
