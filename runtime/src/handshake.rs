//! Handshake policy of a server, the `[quic]` config section: when to send Retry, session
//! resumption, 0-RTT, and which TLS cipher suites to offer. Read once at start; the packet
//! path only consults [`HandshakePolicy::should_retry`] (two integer compares).

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use serde::Deserialize;

/// `retry_auto_threshold` default: with `retry = "auto"`, a worker answers new connections
/// with Retry once this many of its handshakes are in flight from addresses it has not
/// validated. A flood of spoofed Initials then costs the server one stateless packet each
/// instead of a connection's state and a certificate flight (amplification).
pub const DEFAULT_RETRY_AUTO_THRESHOLD: usize = 256;
/// `session_cache` default: resumable TLS sessions kept (shared by all workers) when
/// tickets are single-use (see [`SessionTickets::SingleUse`]). Single-use tickets are
/// entries of this cache, so a 0-RTT flight cannot be accepted twice by this server.
pub const DEFAULT_SESSION_CACHE: usize = 4096;
/// `session_ticket_lifetime_ms` default: how long a host-key ticket resumes its session
/// (the lifetime told to clients, and the period of the ticket keys, `tickets.rs`). Six
/// hours, rustls' own ticketer's; at most seven days (RFC 8446, section 4.6.1).
pub const DEFAULT_SESSION_TICKET_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// How the server keeps the sessions that clients resume (`session_tickets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionTickets {
    /// `host-key` unless `zero_rtt` is on, then `single-use` (rustls accepts 0-RTT only
    /// from a ticket it can take once).
    #[default]
    Auto,
    /// Stateless tickets sealed under keys derived from the QUIC host key: no memory per
    /// session and no lock, valid on every worker, after a TLS reload, after a restart and
    /// on every node sharing the host key, for `session_ticket_lifetime_ms`.
    HostKey,
    /// rustls' in-memory cache of `session_cache` sessions, each ticket usable once; one
    /// cache per server config (a reload or a restart empties it), behind a mutex.
    SingleUse,
}

/// When the server asks a client to prove its address with a Retry before keeping any
/// state for it (RFC 9000, section 8.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryMode {
    /// Never: one round trip less for every client.
    Never,
    /// Every connection from an unvalidated address.
    Always,
    /// Only under handshake load (see [`DEFAULT_RETRY_AUTO_THRESHOLD`]).
    #[default]
    Auto,
}

/// A QUIC version the server speaks (`versions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuicVersion {
    /// QUIC version 1 (RFC 9000), what nearly every client speaks.
    V1,
    /// QUIC version 2 (RFC 9369): v1 with other packet-protection salts and labels and
    /// permuted long-header type bits, so middleboxes cannot ossify on v1's wire image.
    V2,
}

impl std::str::FromStr for QuicVersion {
    type Err = String;

    /// `v1` or `v2`, as in `[quic] versions` (command lines take the same).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" => Ok(Self::V1),
            "v2" => Ok(Self::V2),
            other => Err(format!("unknown QUIC version {other:?} (v1 or v2)")),
        }
    }
}

impl std::fmt::Display for QuicVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

impl QuicVersion {
    /// The version number on the wire.
    pub fn wire(self) -> u32 {
        match self {
            Self::V1 => 1,
            Self::V2 => quinn_proto::QUIC_V2,
        }
    }
}

/// `versions` default: both, v2 first. A client that starts in v1 and lists v2 in its
/// Version Information is switched to v2 by compatible version negotiation (RFC 9368, no
/// extra round trip); every other client stays in the version it started with.
pub const DEFAULT_QUIC_VERSIONS: [QuicVersion; 2] = [QuicVersion::V2, QuicVersion::V1];

/// A TLS 1.3 cipher suite by its IANA name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CipherSuiteName {
    #[serde(rename = "TLS13_AES_128_GCM_SHA256")]
    Aes128Gcm,
    #[serde(rename = "TLS13_AES_256_GCM_SHA384")]
    Aes256Gcm,
    #[serde(rename = "TLS13_CHACHA20_POLY1305_SHA256")]
    ChaCha20Poly1305,
}

impl CipherSuiteName {
    fn suite(self) -> rustls::SupportedCipherSuite {
        use rustls::crypto::ring::cipher_suite as cs;
        match self {
            Self::Aes128Gcm => cs::TLS13_AES_128_GCM_SHA256,
            Self::Aes256Gcm => cs::TLS13_AES_256_GCM_SHA384,
            Self::ChaCha20Poly1305 => cs::TLS13_CHACHA20_POLY1305_SHA256,
        }
    }
}

/// `[quic]`: the handshake policy. Every field has a default (see the constants above).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandshakePolicy {
    /// `retry`: "never", "always" or "auto".
    pub retry: RetryMode,
    /// `retry_auto_threshold`: unvalidated handshakes in flight per worker before "auto"
    /// sends Retry.
    pub retry_auto_threshold: usize,
    /// `session_cache`: resumable sessions kept by single-use tickets; 0 turns resumption
    /// (and 0-RTT) off, whatever `session_tickets` says.
    pub session_cache: usize,
    /// `session_tickets`: "auto", "host-key" or "single-use" (see [`SessionTickets`]).
    pub session_tickets: SessionTickets,
    /// `session_ticket_lifetime_ms`: how long a host-key ticket resumes its session.
    #[serde(rename = "session_ticket_lifetime_ms", with = "crate::limits::millis")]
    pub session_ticket_lifetime: Duration,
    /// `zero_rtt`: accept 0-RTT data from resuming clients. Off by default. The engine
    /// starts a connection's handler only when the handshake is complete (the client's
    /// Finished verified), so 0-RTT data reaches no handler before the client is proven
    /// live: a replayed 0-RTT flight is never acted on. The client still gains its round
    /// trip (the request is in flight with the handshake). See the README for the ALPNs
    /// whose requests are idempotent anyway (hq-interop, alknet/echo).
    pub zero_rtt: bool,
    /// `cipher_suites`: the TLS 1.3 suites offered, in preference order; empty = all of
    /// AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305. (QUIC Initial packets always use
    /// AES-128-GCM, RFC 9001 section 5.2, whatever is chosen here.)
    pub cipher_suites: Vec<CipherSuiteName>,
    /// `preferred_address_v4` / `preferred_address_v6`: a second address (and port) the
    /// server offers clients in its transport parameters (RFC 9000, section 9.6) and
    /// listens on with one socket per worker, like the main one. A client may move its
    /// connection there after the handshake; the connection stays on its worker (its CIDs
    /// name the worker, for the kernel's steering and for forwarding alike). Port 0 takes
    /// a free port at start (tests). Unset (the default): none offered.
    pub preferred_address_v4: Option<SocketAddrV4>,
    pub preferred_address_v6: Option<SocketAddrV6>,
    /// `versions`: the QUIC versions served, in the server's order of preference. A client
    /// starting in one of them that also offers one listed before it (in its Version
    /// Information transport parameter) is switched to that one during its handshake:
    /// compatible version negotiation, RFC 9368. A client starting in a version not listed
    /// gets a Version Negotiation packet naming these.
    pub versions: Vec<QuicVersion>,
}

impl Default for HandshakePolicy {
    fn default() -> Self {
        Self {
            retry: RetryMode::default(),
            retry_auto_threshold: DEFAULT_RETRY_AUTO_THRESHOLD,
            session_cache: DEFAULT_SESSION_CACHE,
            session_tickets: SessionTickets::default(),
            session_ticket_lifetime: DEFAULT_SESSION_TICKET_LIFETIME,
            zero_rtt: false,
            cipher_suites: Vec::new(),
            preferred_address_v4: None,
            preferred_address_v6: None,
            versions: DEFAULT_QUIC_VERSIONS.to_vec(),
        }
    }
}

/// Errors in a [`HandshakePolicy`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakePolicyError {
    #[error("quic.zero_rtt needs session resumption (quic.session_cache > 0)")]
    ZeroRttWithoutResumption,
    #[error("quic.zero_rtt needs quic.session_tickets = \"single-use\" (or \"auto\"): rustls accepts 0-RTT only from a ticket it can take once")]
    ZeroRttWithHostKeyTickets,
    #[error("quic.session_ticket_lifetime_ms must be from 1000 (one second) to 604800000 (seven days, RFC 8446), not {0}")]
    TicketLifetime(u128),
    #[error("quic.preferred_address_{0}: {1} is not an address a client can reach (unspecified, broadcast or multicast)")]
    PreferredAddress(&'static str, SocketAddr),
    #[error("quic.versions must name at least one version (\"v1\", \"v2\"), each once")]
    Versions,
}

impl HandshakePolicy {
    pub fn validate(&self) -> Result<(), HandshakePolicyError> {
        let v = &self.versions;
        if v.is_empty() || (1..v.len()).any(|i| v[..i].contains(&v[i])) {
            return Err(HandshakePolicyError::Versions);
        }
        if self.zero_rtt && self.session_cache == 0 {
            return Err(HandshakePolicyError::ZeroRttWithoutResumption);
        }
        if self.zero_rtt && self.session_tickets == SessionTickets::HostKey {
            return Err(HandshakePolicyError::ZeroRttWithHostKeyTickets);
        }
        let lifetime = self.session_ticket_lifetime;
        if lifetime < Duration::from_secs(1) || lifetime > crate::tickets::MAX_TICKET_LIFETIME {
            return Err(HandshakePolicyError::TicketLifetime(lifetime.as_millis()));
        }
        if let Some(a) = self.preferred_address_v4 {
            let ip = a.ip();
            if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                return Err(HandshakePolicyError::PreferredAddress("v4", a.into()));
            }
        }
        if let Some(a) = self.preferred_address_v6 {
            if a.ip().is_unspecified() || a.ip().is_multicast() {
                return Err(HandshakePolicyError::PreferredAddress("v6", a.into()));
            }
        }
        Ok(())
    }

    /// `versions` as wire numbers, in order (quinn-proto's `supported_versions`).
    pub fn wire_versions(&self) -> Vec<u32> {
        self.versions.iter().map(|v| v.wire()).collect()
    }

    /// The preferred addresses configured, IPv4 first.
    pub fn preferred_addresses(&self) -> Vec<SocketAddr> {
        self.preferred_address_v4
            .map(SocketAddr::V4)
            .into_iter()
            .chain(self.preferred_address_v6.map(SocketAddr::V6))
            .collect()
    }

    /// Records the address a preferred-address socket group was bound to (its port, when
    /// 0 was configured).
    pub(crate) fn set_preferred_bound(&mut self, bound: SocketAddr) {
        match bound {
            SocketAddr::V4(a) => self.preferred_address_v4 = Some(a),
            SocketAddr::V6(a) => self.preferred_address_v6 = Some(a),
        }
    }

    /// Whether a new connection from an address not yet validated gets a Retry, given how
    /// many unvalidated handshakes this worker has in flight.
    #[inline]
    pub fn should_retry(&self, unvalidated_in_flight: usize) -> bool {
        match self.retry {
            RetryMode::Never => false,
            RetryMode::Always => true,
            RetryMode::Auto => unvalidated_in_flight >= self.retry_auto_threshold,
        }
    }

    /// The crypto provider restricted to the configured cipher suites.
    pub(crate) fn provider(&self, base: Arc<CryptoProvider>) -> Arc<CryptoProvider> {
        if self.cipher_suites.is_empty() {
            return base;
        }
        let mut p = (*base).clone();
        p.cipher_suites = self.cipher_suites.iter().map(|c| c.suite()).collect();
        Arc::new(p)
    }

    /// Whether sessions are kept as single-use cache entries rather than host-key tickets.
    fn single_use_tickets(&self) -> bool {
        match self.session_tickets {
            SessionTickets::Auto => self.zero_rtt,
            SessionTickets::HostKey => false,
            SessionTickets::SingleUse => true,
        }
    }

    /// Applies resumption and 0-RTT to a server config. `ticket_key` is the host key's
    /// ticket derivation (`host_key.rs`); without one (a server config outside the
    /// engine) sessions are single-use cache entries. Host-key tickets are bound to
    /// `scope` (the client-certificate policy, and for QUIC v2 the version: see
    /// `ClientAuth::ticket_scope`); single-use entries to this config's own cache.
    pub(crate) fn apply(
        &self,
        cfg: &mut rustls::ServerConfig,
        ticket_key: Option<&ring::hkdf::Prk>,
        scope: &'static [u8],
    ) {
        // the ticketer is unused while it is not enabled; storage is unused under one
        // (TLS 1.2, which would look there, is not offered)
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        match ticket_key {
            _ if self.session_cache == 0 => cfg.send_tls13_tickets = 0,
            Some(key) if !self.single_use_tickets() => {
                cfg.ticketer = crate::tickets::HostKeyTicketer::new(
                    key.clone(),
                    self.session_ticket_lifetime,
                    scope,
                );
            }
            _ => {
                cfg.session_storage =
                    rustls::server::ServerSessionMemoryCache::new(self.session_cache)
            }
        }
        // QUIC allows only 0 or u32::MAX (RFC 9001, section 4.6.1)
        cfg.max_early_data_size = if self.zero_rtt { u32::MAX } else { 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_modes_decide_as_documented() {
        let mut p = HandshakePolicy::default();
        assert_eq!(p.retry, RetryMode::Auto);
        assert!(!p.should_retry(DEFAULT_RETRY_AUTO_THRESHOLD - 1));
        assert!(p.should_retry(DEFAULT_RETRY_AUTO_THRESHOLD));
        p.retry = RetryMode::Always;
        assert!(p.should_retry(0));
        p.retry = RetryMode::Never;
        assert!(!p.should_retry(usize::MAX));
    }

    #[test]
    fn versions_parse_in_order_and_are_validated() {
        let p = HandshakePolicy::default();
        assert_eq!(p.wire_versions(), vec![quinn_proto::QUIC_V2, 1]);
        let p: HandshakePolicy = toml::from_str("versions = [\"v1\"]").expect("parses");
        assert_eq!(p.wire_versions(), vec![1]);
        assert_eq!(p.validate(), Ok(()));
        for bad in ["versions = []", "versions = [\"v1\", \"v2\", \"v1\"]"] {
            let p: HandshakePolicy = toml::from_str(bad).expect("parses");
            assert_eq!(p.validate(), Err(HandshakePolicyError::Versions), "{bad}");
        }
        assert!(toml::from_str::<HandshakePolicy>("versions = [\"draft-29\"]").is_err());
    }

    #[test]
    fn parses_and_validates() {
        let p: HandshakePolicy = toml::from_str(
            "retry = \"always\"\nzero_rtt = true\ncipher_suites = [\"TLS13_CHACHA20_POLY1305_SHA256\"]",
        )
        .expect("parses");
        assert_eq!(p.retry, RetryMode::Always);
        assert_eq!(p.cipher_suites, vec![CipherSuiteName::ChaCha20Poly1305]);
        assert_eq!(p.validate(), Ok(()));
        let p = HandshakePolicy {
            zero_rtt: true,
            session_cache: 0,
            ..HandshakePolicy::default()
        };
        assert_eq!(
            p.validate(),
            Err(HandshakePolicyError::ZeroRttWithoutResumption)
        );
        assert!(toml::from_str::<HandshakePolicy>("retry = \"sometimes\"").is_err());
        assert!(toml::from_str::<HandshakePolicy>("cipher_suites = [\"RC4\"]").is_err());
        let only = HandshakePolicy {
            cipher_suites: vec![CipherSuiteName::ChaCha20Poly1305],
            ..HandshakePolicy::default()
        }
        .provider(crate::tls::crypto_provider());
        assert_eq!(only.cipher_suites.len(), 1);
        assert!(crate::tls::initial_suite().is_ok());
    }

    #[test]
    fn session_tickets_are_host_key_tickets_unless_zero_rtt_needs_single_use() {
        let id = crate::tls::TlsIdentity::generate_self_signed(&[]).expect("identity");
        let key = crate::host_key::QuicHostKey::generate().ticket_key();
        let config = |p: &HandshakePolicy, key| {
            crate::tls::server_rustls_config(
                &id,
                vec![],
                crate::tls::ClientAuth::None,
                p,
                crate::tls::ServerRandom::Thread,
                key,
            )
            .expect("config")
        };
        let p = HandshakePolicy::default();
        let c = config(&p, Some(&key));
        assert!(c.ticketer.enabled());
        assert_eq!(c.ticketer.lifetime(), 6 * 3600);
        assert!(c.send_tls13_tickets > 0);
        // outside the engine (no host key): the single-use cache
        assert!(!config(&p, None).ticketer.enabled());
        let zero_rtt = HandshakePolicy {
            zero_rtt: true,
            ..HandshakePolicy::default()
        };
        let c = config(&zero_rtt, Some(&key));
        assert!(
            !c.ticketer.enabled(),
            "auto: 0-RTT takes single-use tickets"
        );
        assert_eq!(c.max_early_data_size, u32::MAX);
        let off = HandshakePolicy {
            session_cache: 0,
            ..HandshakePolicy::default()
        };
        let c = config(&off, Some(&key));
        assert!(!c.ticketer.enabled());
        assert_eq!(c.send_tls13_tickets, 0);

        let p: HandshakePolicy =
            toml::from_str("session_tickets = \"single-use\"\nsession_ticket_lifetime_ms = 60000")
                .expect("parses");
        assert_eq!(p.session_tickets, SessionTickets::SingleUse);
        assert_eq!(p.validate(), Ok(()));
        assert!(!config(&p, Some(&key)).ticketer.enabled());
        let p: HandshakePolicy =
            toml::from_str("session_tickets = \"host-key\"\nzero_rtt = true").expect("parses");
        assert_eq!(
            p.validate(),
            Err(HandshakePolicyError::ZeroRttWithHostKeyTickets)
        );
        for bad in [0u64, 999, 7 * 24 * 3600 * 1000 + 1] {
            let p: HandshakePolicy =
                toml::from_str(&format!("session_ticket_lifetime_ms = {bad}")).expect("parses");
            assert_eq!(
                p.validate(),
                Err(HandshakePolicyError::TicketLifetime(bad.into()))
            );
        }
        assert!(toml::from_str::<HandshakePolicy>("session_tickets = \"stateless\"").is_err());
    }

    #[test]
    fn preferred_addresses_parse_and_must_be_reachable() {
        let p: HandshakePolicy = toml::from_str(
            "preferred_address_v4 = \"192.0.2.10:4434\"\npreferred_address_v6 = \"[2001:db8::1]:0\"",
        )
        .expect("parses");
        assert_eq!(p.validate(), Ok(()));
        let addrs = p.preferred_addresses();
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0], "192.0.2.10:4434".parse().expect("addr"));
        let mut bound = p.clone();
        bound.set_preferred_bound("[2001:db8::1]:5555".parse().expect("addr"));
        assert_eq!(bound.preferred_address_v6.map(|a| a.port()), Some(5555));
        assert_eq!(bound.preferred_address_v4, p.preferred_address_v4);
        for bad in ["0.0.0.0:4434", "255.255.255.255:1", "224.0.0.1:1"] {
            let p: HandshakePolicy =
                toml::from_str(&format!("preferred_address_v4 = \"{bad}\"")).expect("parses");
            assert!(
                matches!(
                    p.validate(),
                    Err(HandshakePolicyError::PreferredAddress("v4", _))
                ),
                "{bad}"
            );
        }
        let p: HandshakePolicy =
            toml::from_str("preferred_address_v6 = \"[::]:1\"").expect("parses");
        assert!(p.validate().is_err());
        assert!(toml::from_str::<HandshakePolicy>("preferred_address_v4 = \"[::1]:1\"").is_err());
        assert!(HandshakePolicy::default().preferred_addresses().is_empty());
    }
}
