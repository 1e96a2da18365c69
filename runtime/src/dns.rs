//! DNS as front ends that are not DNS transports reach it: DNS over HTTPS (RFC 8484) and
//! the pkarr relay API on the HTTP router. The DNS handler answers; a handler crate never
//! depends on another, so the binary hands it to the HTTP handler as these trait objects
//! (as [`crate::OperationInvoker`] does for the call operations).

use std::net::IpAddr;

use bytes::Bytes;

use crate::identity::Identity;
use crate::router::LocalBoxFuture;

/// The answer to one DNS message received over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The DNS response, wire format.
    pub message: Vec<u8>,
    /// How long the answer may be cached (RFC 8484 §5.1: at most the smallest TTL of its
    /// records; a negative answer's from its SOA, RFC 2308 §5). `None`: must not be cached
    /// (errors, REFUSED, an answer without records).
    pub max_age: Option<u32>,
}

/// Answers DNS messages with the same zones, pkarr names, forwarding and recursion rules
/// as the DNS transports.
pub trait DnsResolver: Send + Sync + 'static {
    /// Answers `message` (one DNS query, wire format) from `source`, asked as `caller`
    /// (the `dns:recursion` scope allows forwarding), on the current worker. `None`: nothing
    /// to answer (shorter than a header, or a response), which HTTP reports as a bad request.
    fn resolve(
        &self,
        message: Bytes,
        source: IpAddr,
        caller: Option<Identity>,
    ) -> LocalBoxFuture<'static, Option<DnsAnswer>>;
}

/// The largest pkarr relay payload: 64-byte signature, 8-byte timestamp and a DNS packet
/// of at most 1000 bytes (pkarr's `design/relays.md`: larger is 413). A protocol constant.
pub const PKARR_MAX_RELAY_PAYLOAD: usize = 64 + 8 + 1000;

/// One stored pkarr signed packet, as a relay serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPacket {
    /// The relay payload: 64-byte signature ‖ 8-byte big-endian µs timestamp ‖ DNS packet.
    pub payload: Bytes,
    /// The packet's timestamp, µs since the Unix epoch.
    pub timestamp: u64,
    /// The smallest TTL of its records (what a relay's `Cache-Control: max-age` says).
    pub min_ttl: u32,
}

/// Why a relay `PUT` was not stored, as the pkarr relay spec's status codes tell it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// 400: not a z-base32 public key.
    #[error("not a pkarr public key: {0}")]
    Key(String),
    /// 400: bad signature, timestamp or DNS packet.
    #[error("invalid signed packet: {0}")]
    Invalid(String),
    /// 409: not newer than the stored packet.
    #[error("{0}")]
    Stale(String),
    /// 412: `If-Match` named a timestamp other than the stored one.
    #[error("the stored packet's timestamp is not the one If-Match names")]
    PreconditionFailed,
    /// 413: over the 1072-byte payload limit.
    #[error("{0}")]
    TooLarge(String),
    /// 500: the store failed.
    #[error("pkarr store: {0}")]
    Storage(String),
}

/// The pkarr relay API's store (`GET`/`PUT /pkarr/{z-base32 key}`).
pub trait PkarrRelay: Send + Sync + 'static {
    /// The packet stored for `key` (z-base32), if any; `Err(RelayError::Key)` for a key
    /// that is not one.
    fn get(&self, key: &str) -> Result<Option<RelayPacket>, RelayError>;

    /// Stores `payload` for `key` if it verifies and is newer than the stored packet; with
    /// `if_match`, only if the stored packet's timestamp is that one (compare-and-swap).
    fn put(&self, key: &str, payload: &[u8], if_match: Option<u64>) -> Result<(), RelayError>;
}
