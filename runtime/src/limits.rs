//! Every limit the engine enforces: a named default, a config key (the field name, under
//! `[limits]` in the TOML config) and a line saying what it bounds.

use std::time::Duration;

use serde::Deserialize;

/// `max_connections`: connections open at once across all workers. New connections past it
/// are refused with CONNECTION_REFUSED during the handshake.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// `max_concurrent_bidi_streams`: bidirectional streams a peer may have open at once on one
/// connection (QUIC `initial_max_streams_bidi`).
pub const DEFAULT_MAX_CONCURRENT_BIDI_STREAMS: u32 = 256;
/// `max_concurrent_uni_streams`: unidirectional streams a peer may have open at once.
///
/// Why 100 and not 256 like bidi: quinn-proto allocates a map entry per stream the peer may
/// open, up front, on every connection, idle or not. At 256 + 256 the receive-side map
/// reached 1 024 buckets; at 256 + 100 it stays at 512, which took 13–14 KB off every
/// connection (`idle`, 5 000 connections: 59.7 → 45.3 KB per connection on mimalloc, 54.2 →
/// 41.4 KB on glibc's malloc; README, "Performance"). 100 is quinn's own default, and what HTTP/3 and WebTransport peers use
/// uni streams for (control and QPACK streams, pushes) needs a handful.
pub const DEFAULT_MAX_CONCURRENT_UNI_STREAMS: u32 = 100;
/// `idle_timeout_ms`: a connection with no packets from the peer for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `keep_alive_interval_ms`: send a PING when nothing was sent for this long (0 = never).
/// Off on servers by default: keeping a connection alive is the client's choice.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::ZERO;
/// `send_stall_timeout_ms`: a write that the peer has let make no progress for this long
/// (its flow-control credit stays at zero, or nothing we sent is acknowledged) fails with
/// [`crate::WriteError::Stalled`], and the stream is reset with
/// [`crate::STREAM_STALLED_CODE`] (0 = wait for ever). A peer that keeps a connection alive
/// (it acknowledges, it pings) but never reads a response would otherwise hold the handler,
/// its buffers and its connection slot for as long as it likes: QUIC's idle timeout sees
/// traffic. The clock runs only while a write waits and restarts with every write that
/// moves data, so a slow reader is never cut; only one that reads nothing at all for the
/// whole interval. 60 s, as nginx's `send_timeout`. `[tcp] send_stall_timeout_ms` is the
/// same for the streams of TLS/TCP connections.
pub const DEFAULT_SEND_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// `stream_receive_window`: bytes a peer may send on one stream before the reader consumes
/// them. This is what makes a slow reader back-pressure its sender.
pub const DEFAULT_STREAM_RECEIVE_WINDOW: u32 = 1_250_000;
/// `connection_receive_window`: bytes a peer may have unconsumed across all streams of one
/// connection.
pub const DEFAULT_CONNECTION_RECEIVE_WINDOW: u32 = 8 * 1_250_000;
/// `send_window`: bytes of unacknowledged stream data we buffer per connection.
pub const DEFAULT_SEND_WINDOW: u64 = 8 * 1_250_000;
/// `max_udp_payload_size`: largest UDP payload we accept and advertise (1500-byte Ethernet
/// MTU minus IPv4+UDP headers). Path MTU discovery never goes past it.
pub const DEFAULT_MAX_UDP_PAYLOAD_SIZE: u16 = 1472;
/// The UDP payload every QUIC path must carry (RFC 9000, section 14): where path MTU
/// discovery starts.
pub const MIN_UDP_PAYLOAD_SIZE: u16 = 1200;
/// `mtu_probe_min_change`: path MTU discovery (a binary search from 1200 bytes up to
/// `max_udp_payload_size`, run once the handshake is confirmed and again every 10 minutes)
/// stops refining when the next probe would differ from the last by fewer bytes than this.
///
/// Why half the default range, (1472 − 1200) / 2 = 136, and not quinn's 20: every probe is
/// a padded packet of up to 1472 bytes that the peer must decrypt, walk and acknowledge, and
/// short connections pay for the whole search. With 20 a search probes 1336, 1404, 1438 and
/// 1472 (four probes and four acknowledgements on every connection); with 136 it probes 1336
/// and then 1472: two, reaching the same 1472 on any Ethernet-sized path. A DoQ client that
/// asks 100 queries per connection spent about a sixth of its datagrams on probing
/// (README, "DNS"). The cost: on a path whose MTU lies between (PPPoE, tunnels), the search
/// settles on 1336 instead of a few bytes under the path's limit until its next run.
pub const DEFAULT_MTU_PROBE_MIN_CHANGE: u16 =
    (DEFAULT_MAX_UDP_PAYLOAD_SIZE - MIN_UDP_PAYLOAD_SIZE) / 2;
/// `mtu_probe_after_packets`: path MTU discovery's first search starts only once this side
/// has sent this many packets on the connection (after the handshake: application data
/// space packet numbers); 0 starts it as soon as the handshake is confirmed, as quinn does.
///
/// Why 100, as Chromium's QUIC (`kPacketsBetweenMtuProbesBase`): a connection that has sent
/// fewer packets than this — a handshake and an RPC, a few DNS queries — has no use for a
/// larger MTU, and the search is pure cost for both ends: two padded probes of up to 1472
/// bytes (64 KiB on loopback) that the peer decrypts, walks and acknowledges, about a
/// tenth of what a short connection costs the server. A connection that moves data reaches
/// 100 packets within its first ~120 KB and then searches as before; later searches (every
/// 10 minutes, after a black hole) are not delayed. Cost: a bulk transfer's first 100
/// packets go at 1200 bytes.
pub const DEFAULT_MTU_PROBE_AFTER_PACKETS: u64 = 100;
/// The stream receive window `alknet connect` offers the server (the engine's default is
/// [`DEFAULT_STREAM_RECEIVE_WINDOW`]): how far the server may send ahead of what has been
/// written to stdout. A download is paced by this window over the round trip, and on a
/// busy machine a round trip includes the wait for the client's turn on a core; one
/// stream per process, so the memory it may hold is this once. Here rather than in the
/// binary so the load-test harness's SFTP client offers the same.
pub const CONNECT_STREAM_RECEIVE_WINDOW: u32 = 4 * 1024 * 1024;
/// `loopback_max_udp_payload_size`: what path MTU discovery may reach on a connection whose
/// peer is a loopback address (127.0.0.0/8, ::1), where the interface's MTU is 64 KiB
/// instead of Ethernet's 1500 bytes. Also the largest UDP payload accepted and advertised
/// (transport parameter `max_udp_payload_size`) when above `max_udp_payload_size`. Why:
/// a local `alknet connect` (the stock `ssh`/`sftp` clients' way in) moved 1 GiB as about
/// 750 000 packets of 1.4 KB, and per-packet work (building, sealing, acknowledging,
/// tracking) on both ends cost more CPU than the bytes; on this path the packets grow to
/// the 64 KiB a UDP datagram may carry over IPv4 (65 507 bytes). Set it equal to
/// `max_udp_payload_size` to treat loopback like any other path. A loopback path's search
/// probes this bound first (the vendored quinn-proto's `upper_bound_first`): one probe
/// instead of a binary search of nine padded packets of up to 64 KiB; if the probe is lost
/// (a `lo` with a smaller MTU) the binary search runs below it as before.
///
/// 64 KiB packets made one quinn-proto bug certain: a close packet was held back by a
/// congestion window that, once closed, never reopens (one outstanding 64 KiB MTU probe
/// filled it), so the peer saw a stateless reset instead of the close. The workspace
/// patches in upstream's fix (runtime/vendor/quinn-proto/PATCHES.md).
pub const DEFAULT_LOOPBACK_MAX_UDP_PAYLOAD_SIZE: u16 = 65_507;
/// `datagram_receive_buffer`: bytes of unread QUIC DATAGRAM frames kept per connection;
/// past it the oldest are dropped. 0 disables the DATAGRAM extension.
pub const DEFAULT_DATAGRAM_RECEIVE_BUFFER: usize = 1 << 20;
/// `datagram_send_buffer`: bytes of outgoing DATAGRAM frames queued per connection.
pub const DEFAULT_DATAGRAM_SEND_BUFFER: usize = 1 << 20;
/// `shutdown_timeout_ms`: on SIGINT/SIGTERM, how long open connections may keep working
/// before they are closed with [`crate::close_code::SHUTDOWN`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// `inbox_capacity`: datagrams queued from other workers (migrated connections) per worker;
/// past it they are dropped like any UDP loss and counted.
pub const DEFAULT_INBOX_CAPACITY: usize = 4096;
/// `socket_buffer_size`: SO_RCVBUF/SO_SNDBUF requested for each worker socket (the kernel
/// caps it at net.core.rmem_max / wmem_max).
pub const DEFAULT_SOCKET_BUFFER_SIZE: usize = 8 << 20;

/// `[tcp] tls_handshake_timeout_ms`: a TCP connection must finish its TLS handshake within
/// this long of being accepted, or it is closed (a client that connects and says nothing
/// holds no slot past it).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `[tcp] max_connections_per_worker`: TLS-over-TCP connections one worker serves at once;
/// past it new connections are closed right after accept (and counted as refused).
pub const DEFAULT_TCP_CONNECTIONS_PER_WORKER: usize = 10_000;
/// `[tcp] listen_backlog`: connections the kernel queues per worker listener before accept.
pub const DEFAULT_TCP_LISTEN_BACKLOG: u32 = 1024;

/// `[tcp] stream_alpns`: the ALPNs of QUIC protocol handlers also served over TLS/TCP, for
/// clients whose UDP is blocked (`alknet connect --transport tcp`). Each such connection is
/// a one-stream [`crate::Connection`] run by the same handler with the same identity and
/// client-certificate policy; an ALPN listed here but not enabled as a handler is not
/// offered. Handlers that need more than one stream (`alknet/perf`, `doq`, `h3`) or
/// datagrams do not belong here.
pub const DEFAULT_TCP_STREAM_ALPNS: &[&str] = &[
    "alknet/ssh",
    "alknet/sftp",
    "alknet/git",
    "alknet/call",
    "alknet/echo",
];
/// `[tcp] stream_buffer`: bytes a TLS/TCP stream buffers each way (read ahead of the
/// handler; queued for the socket). Past it the handler's writes wait and the socket is
/// not read, so TCP's window stops the peer.
pub const DEFAULT_TCP_STREAM_BUFFER: usize = 1 << 20;

/// `[tcp] keepalive_idle_ms`: TCP keep-alive on every accepted connection (0: off). After
/// this long without traffic the kernel probes the peer every [`TCP_KEEPALIVE_INTERVAL`],
/// and [`TCP_KEEPALIVE_PROBES`] unanswered probes end the connection: a client whose
/// machine vanished stops holding its slot, while an idle interactive session (an SSH
/// shell over TLS/TCP, which has no pings of its own) stays up.
pub const DEFAULT_TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Interval of TCP keep-alive probes (see [`DEFAULT_TCP_KEEPALIVE_IDLE`]).
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keep-alive probes before the kernel ends a TCP connection.
pub const TCP_KEEPALIVE_PROBES: u32 = 3;

/// `[tcp]`: the TLS-over-TCP listener on the QUIC port (HTTP/1.1, HTTP/2, DoT, and the
/// `stream_alpns` services), with its limits; see the constants above for each field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpLimits {
    /// `enabled`: listen on TCP at all.
    pub enabled: bool,
    #[serde(rename = "tls_handshake_timeout_ms", with = "millis")]
    pub tls_handshake_timeout: Duration,
    pub max_connections_per_worker: usize,
    pub listen_backlog: u32,
    pub stream_alpns: Vec<String>,
    pub stream_buffer: usize,
    #[serde(rename = "keepalive_idle_ms", with = "millis")]
    pub keepalive_idle: Duration,
    /// See [`DEFAULT_SEND_STALL_TIMEOUT`]: a handler's write on a TLS/TCP stream whose
    /// peer stopped reading (our buffer and the kernel's are full) fails after this long,
    /// and the connection is cut.
    #[serde(rename = "send_stall_timeout_ms", with = "millis")]
    pub send_stall_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            max_connections_per_worker: DEFAULT_TCP_CONNECTIONS_PER_WORKER,
            listen_backlog: DEFAULT_TCP_LISTEN_BACKLOG,
            stream_alpns: DEFAULT_TCP_STREAM_ALPNS
                .iter()
                .map(|a| a.to_string())
                .collect(),
            stream_buffer: DEFAULT_TCP_STREAM_BUFFER,
            keepalive_idle: DEFAULT_TCP_KEEPALIVE_IDLE,
            send_stall_timeout: DEFAULT_SEND_STALL_TIMEOUT,
        }
    }
}

impl TcpLimits {
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.tls_handshake_timeout.is_zero() {
            return Err(LimitsError::Zero("tcp.tls_handshake_timeout_ms"));
        }
        if self.max_connections_per_worker == 0 {
            return Err(LimitsError::Zero("tcp.max_connections_per_worker"));
        }
        if self.listen_backlog == 0 {
            return Err(LimitsError::Zero("tcp.listen_backlog"));
        }
        if self.stream_buffer == 0 {
            return Err(LimitsError::Zero("tcp.stream_buffer"));
        }
        Ok(())
    }
}

/// Limits of one server or client endpoint; see the constants above for each field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_connections: usize,
    pub max_concurrent_bidi_streams: u32,
    pub max_concurrent_uni_streams: u32,
    #[serde(rename = "idle_timeout_ms", with = "millis")]
    pub idle_timeout: Duration,
    #[serde(rename = "keep_alive_interval_ms", with = "millis")]
    pub keep_alive_interval: Duration,
    #[serde(rename = "send_stall_timeout_ms", with = "millis")]
    pub send_stall_timeout: Duration,
    pub stream_receive_window: u32,
    pub connection_receive_window: u32,
    pub send_window: u64,
    pub max_udp_payload_size: u16,
    pub mtu_probe_min_change: u16,
    pub mtu_probe_after_packets: u64,
    pub loopback_max_udp_payload_size: u16,
    pub datagram_receive_buffer: usize,
    pub datagram_send_buffer: usize,
    #[serde(rename = "shutdown_timeout_ms", with = "millis")]
    pub shutdown_timeout: Duration,
    pub inbox_capacity: usize,
    pub socket_buffer_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_bidi_streams: DEFAULT_MAX_CONCURRENT_BIDI_STREAMS,
            max_concurrent_uni_streams: DEFAULT_MAX_CONCURRENT_UNI_STREAMS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
            send_stall_timeout: DEFAULT_SEND_STALL_TIMEOUT,
            stream_receive_window: DEFAULT_STREAM_RECEIVE_WINDOW,
            connection_receive_window: DEFAULT_CONNECTION_RECEIVE_WINDOW,
            send_window: DEFAULT_SEND_WINDOW,
            max_udp_payload_size: DEFAULT_MAX_UDP_PAYLOAD_SIZE,
            mtu_probe_min_change: DEFAULT_MTU_PROBE_MIN_CHANGE,
            mtu_probe_after_packets: DEFAULT_MTU_PROBE_AFTER_PACKETS,
            loopback_max_udp_payload_size: DEFAULT_LOOPBACK_MAX_UDP_PAYLOAD_SIZE,
            datagram_receive_buffer: DEFAULT_DATAGRAM_RECEIVE_BUFFER,
            datagram_send_buffer: DEFAULT_DATAGRAM_SEND_BUFFER,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            inbox_capacity: DEFAULT_INBOX_CAPACITY,
            socket_buffer_size: DEFAULT_SOCKET_BUFFER_SIZE,
        }
    }
}

/// Errors in a [`Limits`] value that TOML alone cannot rule out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("limits.max_udp_payload_size must be between 1200 and 65527, got {0}")]
    UdpPayload(u16),
    #[error("limits.loopback_max_udp_payload_size must be between 1200 and 65527, got {0}")]
    LoopbackUdpPayload(u16),
    #[error("limits.idle_timeout_ms is too large for QUIC (max 2^62 ms)")]
    IdleTimeout,
}

impl Limits {
    /// Checks what would otherwise fail deep inside quinn-proto or silently do nothing.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_connections == 0 {
            return Err(LimitsError::Zero("limits.max_connections"));
        }
        if self.stream_receive_window == 0 {
            return Err(LimitsError::Zero("limits.stream_receive_window"));
        }
        if self.connection_receive_window == 0 {
            return Err(LimitsError::Zero("limits.connection_receive_window"));
        }
        if self.send_window == 0 {
            return Err(LimitsError::Zero("limits.send_window"));
        }
        if self.inbox_capacity == 0 {
            return Err(LimitsError::Zero("limits.inbox_capacity"));
        }
        if self.mtu_probe_min_change == 0 {
            return Err(LimitsError::Zero("limits.mtu_probe_min_change"));
        }
        if !(MIN_UDP_PAYLOAD_SIZE..=65527).contains(&self.max_udp_payload_size) {
            return Err(LimitsError::UdpPayload(self.max_udp_payload_size));
        }
        if !(MIN_UDP_PAYLOAD_SIZE..=65527).contains(&self.loopback_max_udp_payload_size) {
            return Err(LimitsError::LoopbackUdpPayload(
                self.loopback_max_udp_payload_size,
            ));
        }
        if quinn_proto::IdleTimeout::try_from(self.idle_timeout).is_err() {
            return Err(LimitsError::IdleTimeout);
        }
        Ok(())
    }
}

/// Serde `with` module for durations written as whole milliseconds (`*_ms` keys), shared
/// by every config section.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

impl Limits {
    /// The largest UDP payload an endpoint with these limits accepts and advertises: the
    /// larger of `max_udp_payload_size` and `loopback_max_udp_payload_size` (a peer's
    /// path MTU discovery stays within its own bound, so advertising more costs nothing on
    /// other paths).
    pub fn endpoint_max_udp_payload_size(&self) -> u16 {
        self.max_udp_payload_size
            .max(self.loopback_max_udp_payload_size)
    }

    /// The quinn-proto transport parameters these limits imply for a connection whose
    /// peer is at `peer` (loopback peers get `loopback_max_udp_payload_size` as the path
    /// MTU discovery bound).
    pub fn transport_config_for(&self, peer: std::net::IpAddr) -> quinn_proto::TransportConfig {
        if is_loopback(peer) {
            // loopback carries 64 KiB: probe the bound first, one probe instead of a
            // binary search of nine (which still runs below it if the probe is lost)
            self.transport_config_with_mtu_bound(self.loopback_max_udp_payload_size, true)
        } else {
            self.transport_config_with_mtu_bound(self.max_udp_payload_size, false)
        }
    }

    /// The quinn-proto transport parameters these limits imply.
    pub fn transport_config(&self) -> quinn_proto::TransportConfig {
        self.transport_config_with_mtu_bound(self.max_udp_payload_size, false)
    }

    /// The transport parameters, with path MTU discovery bounded by `mtu_bound` (and
    /// probing it first when `bound_first`).
    fn transport_config_with_mtu_bound(
        &self,
        mtu_bound: u16,
        bound_first: bool,
    ) -> quinn_proto::TransportConfig {
        let (mut t, mut mtud) = crate::limits_transport_config!(quinn_proto, self, mtu_bound);
        // a peer's CONNECTION_CLOSE goes unanswered (RFC 9000 10.2.2 makes the answer
        // optional): one packet less per connection a client closes
        t.answer_peer_close(false);
        mtud.first_search_after_packets(self.mtu_probe_after_packets)
            .upper_bound_first(bound_first);
        t.mtu_discovery_config(Some(mtud));
        t
    }
}

/// The transport parameters and path-MTU discovery settings a [`Limits`] implies, written
/// once for any quinn-proto: `$quinn` names the crate whose types to build (the engine's
/// vendored `quinn_proto`, or stock `quinn` for the load test's baseline server, which
/// must get the same parameters). Evaluates to `(TransportConfig, MtuDiscoveryConfig)`
/// with path MTU discovery bounded by `$mtu_bound`; the caller adds what only its
/// quinn-proto has and installs the MTU settings (`mtu_discovery_config`).
#[macro_export]
macro_rules! limits_transport_config {
    ($quinn:ident, $limits:expr, $mtu_bound:expr) => {{
        let limits: &$crate::Limits = $limits;
        let mut t = $quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams($quinn::VarInt::from_u32(limits.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams($quinn::VarInt::from_u32(limits.max_concurrent_uni_streams))
            .max_idle_timeout($quinn::IdleTimeout::try_from(limits.idle_timeout).ok())
            .keep_alive_interval(
                (!limits.keep_alive_interval.is_zero()).then_some(limits.keep_alive_interval),
            )
            .stream_receive_window($quinn::VarInt::from_u32(limits.stream_receive_window))
            .receive_window($quinn::VarInt::from_u32(limits.connection_receive_window))
            .send_window(limits.send_window)
            .datagram_receive_buffer_size(
                (limits.datagram_receive_buffer > 0).then_some(limits.datagram_receive_buffer),
            )
            .datagram_send_buffer_size(limits.datagram_send_buffer);
        let mut mtud = $quinn::MtuDiscoveryConfig::default();
        mtud.upper_bound($mtu_bound)
            .minimum_change(limits.mtu_probe_min_change);
        (t, mtud)
    }};
}

/// A loopback address, also as an IPv4-mapped IPv6 address (a dual-stack socket).
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_zero_and_out_of_range() {
        let l = Limits {
            max_connections: 0,
            ..Limits::default()
        };
        assert_eq!(
            l.validate(),
            Err(LimitsError::Zero("limits.max_connections"))
        );
        let l = Limits {
            max_udp_payload_size: 100,
            ..Limits::default()
        };
        assert_eq!(l.validate(), Err(LimitsError::UdpPayload(100)));
        let l = Limits {
            loopback_max_udp_payload_size: 65528,
            ..Limits::default()
        };
        assert_eq!(l.validate(), Err(LimitsError::LoopbackUdpPayload(65528)));
    }

    #[test]
    fn loopback_peers_get_the_loopback_bound() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        assert!(is_loopback(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert!(is_loopback(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(is_loopback(IpAddr::V6(
            Ipv4Addr::LOCALHOST.to_ipv6_mapped()
        )));
        assert!(!is_loopback(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        let l = Limits::default();
        assert_eq!(
            l.endpoint_max_udp_payload_size(),
            DEFAULT_LOOPBACK_MAX_UDP_PAYLOAD_SIZE
        );
        let same = Limits {
            loopback_max_udp_payload_size: 1200,
            ..Limits::default()
        };
        assert_eq!(same.endpoint_max_udp_payload_size(), 1472);
    }
}
