//! The `[dns]` configuration section and every limit the DNS handlers enforce: a named
//! default, a config key (the field name under `[dns]`) and a line saying what it bounds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The largest DNS message on a stream: the 2-byte length prefix of RFC 9250 §4.2 and
/// RFC 1035 §4.2.2 cannot say more. A protocol constant, not a setting.
pub const MAX_MESSAGE_SIZE: usize = u16::MAX as usize;

/// CNAMEs followed inside a zone for one answer; a longer chain (or a loop) is answered
/// with the records found so far. A protocol-safety constant (BIND uses 16 too).
pub const MAX_CNAME_CHAIN: usize = 16;

/// `max_queries_per_connection`: DoQ queries (streams) a connection may have in progress
/// at once (not yet answered, or answered but not yet closed by the client). Past it, new
/// streams are refused with DOQ_EXCESSIVE_LOAD (RFC 9250 §4.3). QUIC's stream credit
/// (`limits.max_concurrent_bidi_streams`) bounds it too.
pub const DEFAULT_MAX_QUERIES_PER_CONNECTION: usize = 128;

/// `max_pipelined_queries`: queries one pipelined connection or stream (classic DNS over
/// TCP, DoT, an `alknet/dns` stream) may have in flight at once. A zone answer is made at
/// once; a forwarded query waits for an upstream as a task of its own, so a slow one holds
/// back none of the queries behind it (RFC 7766 §6.2.1.1: answers go out as they are
/// ready, in any order). At the bound the connection is not read until one of them is
/// answered (back-pressure: nothing is refused, nothing more is buffered).
pub const DEFAULT_MAX_PIPELINED_QUERIES: usize = 128;

/// `query_timeout_ms`: how long a client has, from opening a stream, to send a whole DoQ
/// query; a stream past it is abandoned with DOQ_REQUEST_CANCELLED. On `alknet/dns`, a
/// message started must be completed within it too (the stream may idle between messages).
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// `reload_interval_ms`: how often zone files are checked for changes (size, mtime,
/// inode); a changed file is parsed again and swapped in whole, or logged and kept out if
/// it fails. 0 = never reload.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// `udp_payload_size`: the largest answer sent over classic UDP to a client that asks for
/// more with EDNS0 (512 bytes without EDNS0, RFC 1035); bigger answers are truncated (TC)
/// so the client retries over TCP. 1232 avoids IP fragmentation (DNS Flag Day 2020).
pub const DEFAULT_UDP_PAYLOAD_SIZE: u16 = 1232;

/// `tcp_idle_timeout_ms`: a classic TCP connection that sends nothing for this long is
/// closed, once the forwarded answers still to come are sent (RFC 7766 §6.2.3 suggests
/// seconds, not minutes); so is one that does not take a batch of answers within it.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// `dot_idle_timeout_ms`: a DNS-over-TLS connection with no query in progress for this long
/// is closed (RFC 7858 §3.4 leaves it to the server; RFC 7766 §6.2.3 suggests seconds); a
/// batch of answers the client does not take within it closes the connection too.
pub const DEFAULT_DOT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest DNS message a DoH `POST` body or `GET ?dns=` parameter may carry, and a
/// pkarr relay `PUT` body past [`crate::pkarr::MAX_RELAY_PAYLOAD`] is refused (413) before
/// it is read whole. DoH's limit is the DNS message's own ([`MAX_MESSAGE_SIZE`]).
pub const DOH_MAX_MESSAGE: usize = MAX_MESSAGE_SIZE;

/// `max_tcp_connections`: classic TCP connections open at once across the listener
/// threads; past it new ones are closed at once.
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 1024;

/// `forward_timeout_ms`: how long one upstream may take to answer a forwarded query before
/// the next is tried (the client gets SERVFAIL when none answers).
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// `cache_entries`: answers the forwarding cache keeps (one per name and type, across all
/// threads); the least useful are evicted past it.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// `answer_cache_bytes`: memory for encoded zone answers kept by the exact bytes of their
/// query ([`crate::answer_cache`]), per classic UDP socket, per worker for the encrypted
/// transports (DoQ, `alknet/dns`, DoT, DoH) and per worker for classic TCP; a name
/// asked again is answered without decoding, looking up or encoding. 0 = off.
pub const DEFAULT_ANSWER_CACHE_BYTES: usize = 4 << 20;

/// `rrl_responses_per_second`: classic UDP answers a second to one source prefix (IPv4
/// /24, IPv6 /56) before response rate limiting drops or slips them (0 = off).
pub const DEFAULT_RRL_RESPONSES_PER_SECOND: u32 = 100;

/// `rrl_slip`: past the rate, every Nth answer is sent truncated (TC) so a real client
/// retries over TCP; the rest are dropped (0 = drop all).
pub const DEFAULT_RRL_SLIP: u32 = 2;

/// `rrl_table_size`: source prefixes tracked per listener thread.
pub const DEFAULT_RRL_TABLE_SIZE: usize = 65_536;

/// One `[[dns.zones]]` entry: an authoritative zone from an RFC 1035 zone file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone apex, e.g. "example.com." (a missing final dot is added).
    pub origin: String,
    /// The zone file; relative `$INCLUDE`s resolve against its directory.
    pub file: PathBuf,
}

/// `[dns]`: zones and limits of the `doq` and `alknet/dns` handlers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    pub zones: Vec<ZoneConfig>,
    pub max_queries_per_connection: usize,
    pub max_pipelined_queries: usize,
    #[serde(rename = "query_timeout_ms", with = "alknet_runtime::millis")]
    pub query_timeout: Duration,
    #[serde(rename = "reload_interval_ms", with = "alknet_runtime::millis")]
    pub reload_interval: Duration,
    /// Classic DNS over UDP on this address (off unless set), e.g. "127.0.0.1:5353".
    pub udp_listen: Option<SocketAddr>,
    /// Classic DNS over TCP (pipelined, RFC 7766) on this address (off unless set).
    pub tcp_listen: Option<SocketAddr>,
    pub udp_payload_size: u16,
    #[serde(rename = "tcp_idle_timeout_ms", with = "alknet_runtime::millis")]
    pub tcp_idle_timeout: Duration,
    pub max_tcp_connections: usize,
    /// DNS over TLS (RFC 7858, ALPN "dot") on the TLS-over-TCP listener (`[tcp]`), when a
    /// DNS handler is enabled.
    pub dot: bool,
    #[serde(rename = "dot_idle_timeout_ms", with = "alknet_runtime::millis")]
    pub dot_idle_timeout: Duration,
    /// DNS over HTTPS (RFC 8484, `/dns-query`) on the HTTP router (HTTP/1.1, HTTP/2, HTTP/3),
    /// when a DNS handler is enabled.
    pub doh: bool,
    /// Upstream resolvers for names outside the zones (UDP, TCP on truncation); empty =
    /// no forwarding (REFUSED).
    pub upstreams: Vec<SocketAddr>,
    /// Sources allowed to recurse without the `dns:recursion` scope ("127.0.0.0/8", "::1").
    pub recursion_allow: Vec<crate::forward::Network>,
    #[serde(rename = "forward_timeout_ms", with = "alknet_runtime::millis")]
    pub forward_timeout: Duration,
    pub cache_entries: usize,
    pub answer_cache_bytes: usize,
    pub rrl_responses_per_second: u32,
    pub rrl_slip: u32,
    pub rrl_table_size: usize,
    /// Serve pkarr names (signed packets published with the `dns.publish` call operation).
    pub pkarr: bool,
    /// The pkarr SQLite database; default `pkarr.db` in the data directory.
    pub pkarr_db: Option<PathBuf>,
    /// With `pkarr`, publish this node (address, port, certificate fingerprint) under its
    /// own key (`pkarr_node_key` in the data directory) at start.
    pub pkarr_publish_self: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            zones: Vec::new(),
            max_queries_per_connection: DEFAULT_MAX_QUERIES_PER_CONNECTION,
            max_pipelined_queries: DEFAULT_MAX_PIPELINED_QUERIES,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            udp_listen: None,
            tcp_listen: None,
            udp_payload_size: DEFAULT_UDP_PAYLOAD_SIZE,
            tcp_idle_timeout: DEFAULT_TCP_IDLE_TIMEOUT,
            max_tcp_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            dot: true,
            dot_idle_timeout: DEFAULT_DOT_IDLE_TIMEOUT,
            doh: true,
            upstreams: Vec::new(),
            recursion_allow: Vec::new(),
            forward_timeout: DEFAULT_FORWARD_TIMEOUT,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            answer_cache_bytes: DEFAULT_ANSWER_CACHE_BYTES,
            rrl_responses_per_second: DEFAULT_RRL_RESPONSES_PER_SECOND,
            rrl_slip: DEFAULT_RRL_SLIP,
            rrl_table_size: DEFAULT_RRL_TABLE_SIZE,
            pkarr: false,
            pkarr_db: None,
            pkarr_publish_self: true,
        }
    }
}

/// Errors in a [`DnsConfig`] that TOML alone cannot rule out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsConfigError {
    #[error("dns.{0} must be greater than zero")]
    Zero(&'static str),
    #[error("dns.udp_payload_size must be at least 512, got {0}")]
    UdpPayload(u16),
    #[error("dns.zones: origin {0:?} is listed twice")]
    DuplicateZone(String),
}

impl DnsConfig {
    pub fn validate(&self) -> Result<(), DnsConfigError> {
        if self.max_queries_per_connection == 0 {
            return Err(DnsConfigError::Zero("max_queries_per_connection"));
        }
        if self.max_pipelined_queries == 0 {
            return Err(DnsConfigError::Zero("max_pipelined_queries"));
        }
        if self.query_timeout.is_zero() {
            return Err(DnsConfigError::Zero("query_timeout_ms"));
        }
        if self.udp_payload_size < 512 {
            return Err(DnsConfigError::UdpPayload(self.udp_payload_size));
        }
        if self.tcp_idle_timeout.is_zero() {
            return Err(DnsConfigError::Zero("tcp_idle_timeout_ms"));
        }
        if self.dot_idle_timeout.is_zero() {
            return Err(DnsConfigError::Zero("dot_idle_timeout_ms"));
        }
        if self.forward_timeout.is_zero() {
            return Err(DnsConfigError::Zero("forward_timeout_ms"));
        }
        if self.cache_entries == 0 {
            return Err(DnsConfigError::Zero("cache_entries"));
        }
        if self.max_tcp_connections == 0 {
            return Err(DnsConfigError::Zero("max_tcp_connections"));
        }
        let mut seen = std::collections::HashSet::new();
        for z in &self.zones {
            let key = z.origin.trim_end_matches('.').to_ascii_lowercase();
            if !seen.insert(key) {
                return Err(DnsConfigError::DuplicateZone(z.origin.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_is_refused() {
        assert_eq!(DnsConfig::default().validate(), Ok(()));
        let c = DnsConfig {
            max_queries_per_connection: 0,
            ..DnsConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(DnsConfigError::Zero("max_queries_per_connection"))
        );
        let c = DnsConfig {
            max_pipelined_queries: 0,
            ..DnsConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(DnsConfigError::Zero("max_pipelined_queries"))
        );
        let zone = |o: &str| ZoneConfig {
            origin: o.into(),
            file: "z".into(),
        };
        let c = DnsConfig {
            zones: vec![zone("Example.com"), zone("example.com.")],
            ..DnsConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(DnsConfigError::DuplicateZone(_))
        ));
    }
}
