//! Live reconfiguration of a running server: what it can take without a restart.
//!
//! The packet path never locks for this: each worker reads one atomic generation counter
//! per poll and installs a new QUIC server config into its own endpoint when the counter
//! moved. New handshakes use the new certificate; open connections keep the keys they
//! negotiated. The identity provider is read once per handshake through an `ArcSwap`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use alknet_proto::Fingerprint;
use arc_swap::ArcSwap;

use crate::admission::AdmissionLimits;
use crate::handshake::{HandshakePolicy, HandshakePolicyError};
use crate::identity::{Identity, IdentityProvider};
use crate::limits::{Limits, LimitsError};
use crate::router::AlpnRegistry;
use crate::server::build_server_config;
use crate::tcp::TcpSetup;
use crate::tls::{ClientAuth, TlsError, TlsIdentity};
use crate::worker::{ServerShared, ServerTls};

/// Longest a reload waits for the workers to install its config before returning.
pub const RELOAD_INSTALL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Publishes new configuration to every worker of one server. Cheap to clone, `Send`.
#[derive(Clone)]
pub struct ConfigReloadHandle(Arc<ServerShared>);

impl ConfigReloadHandle {
    pub(crate) fn new(shared: Arc<ServerShared>) -> Self {
        Self(shared)
    }

    /// Serves `tls` (with `client_auth`) to new handshakes from now on. The config is
    /// built completely before anything changes: on an error (a key that does not match,
    /// a certificate rustls refuses) the old certificate stays.
    pub fn reload_tls(
        &self,
        tls: &TlsIdentity,
        client_auth: ClientAuth,
    ) -> Result<Fingerprint, TlsError> {
        let mut source = self.lock_tls_source();
        let registry = self.0.registry.load();
        self.publish(tls, client_auth, &registry)?;
        *source = (tls.clone(), client_auth);
        self.wait_installed();
        let fingerprint = tls.fingerprint();
        tracing::info!(%fingerprint, "TLS certificate reloaded; new handshakes use it");
        Ok(fingerprint)
    }

    /// Serves exactly `registry`'s handlers from now on: new handshakes are offered its
    /// ALPNs; connections of a handler no longer in it drain as at shutdown (they are
    /// closed with [`crate::close_code::SHUTDOWN`] after `shutdown_timeout`); a handler
    /// kept (the same `Arc`) keeps its connections. Nothing changes on an error.
    pub fn set_handlers(&self, registry: AlpnRegistry) -> Result<(), HandlersError> {
        if registry.is_empty() {
            return Err(HandlersError::Empty);
        }
        let source = self.lock_tls_source();
        self.publish(&source.0, source.1, &registry)?;
        let counts = crate::admission::alpn_counts(
            &registry,
            &self.0.alpn_counts.load(),
            self.0.inboxes.len(),
        );
        self.0.alpn_counts.store(Arc::new(counts));
        tracing::info!(alpns = ?registry, "handlers reloaded");
        self.0.registry.store(Arc::new(registry));
        // workers look at the registry when they install the new config: after the store
        self.0.tls_generation.fetch_add(1, Ordering::AcqRel);
        self.wake_workers();
        self.wait_installed();
        Ok(())
    }

    /// Applies `limits` and `handshake` (`[limits]`, `[quic]`) to new connections from now
    /// on: their transport parameters (stream counts, windows, idle timeout, keep-alive,
    /// datagram buffers), `max_connections`, `shutdown_timeout` for drains that start
    /// later, and the Retry, resumption, 0-RTT and cipher-suite policy. Open connections
    /// keep the transport they negotiated (QUIC has no way to lower a peer's limits
    /// afterwards). The fields in [`RESTART_LIMITS`] size sockets and the endpoint at
    /// start: a change to one is refused, naming it, and nothing changes.
    pub fn set_transport(
        &self,
        limits: Limits,
        handshake: HandshakePolicy,
    ) -> Result<(), TransportReloadError> {
        let handshake = self.check_transport(&limits, &handshake)?;
        let source = self.lock_tls_source();
        let registry = self.0.registry.load();
        // built before anything is stored: a policy rustls refuses changes nothing
        let next = self.build(&source.0, source.1, &registry, &limits, &handshake)?;
        self.0.limits.store(Arc::new(limits));
        self.0.handshake.store(Arc::new(handshake));
        self.install(next);
        drop(source);
        self.wait_installed();
        tracing::info!("[limits] and [quic] reloaded; new connections use them");
        Ok(())
    }

    /// What [`Self::set_transport`] would refuse, without changing anything (a caller
    /// that applies several sections checks them all first). On success, `handshake` as
    /// it would be served: a preferred address given with port 0 gets the port its
    /// sockets were bound to at start.
    pub fn check_transport(
        &self,
        limits: &Limits,
        handshake: &HandshakePolicy,
    ) -> Result<HandshakePolicy, TransportReloadError> {
        limits.validate()?;
        handshake.validate()?;
        let running = self.0.limits.load();
        let mut fixed: Vec<&'static str> = RESTART_LIMITS
            .iter()
            .filter(|(_, same)| !same(&running, limits))
            .map(|(key, _)| *key)
            .collect();
        // preferred addresses are sockets bound at start
        let served = self.0.handshake.load();
        let mut next = handshake.clone();
        // kept as served (with the ports bound at start), or refused
        if !same_socket(
            handshake.preferred_address_v4.map(SocketAddr::V4),
            served.preferred_address_v4.map(SocketAddr::V4),
        ) {
            fixed.push("quic.preferred_address_v4");
        }
        if !same_socket(
            handshake.preferred_address_v6.map(SocketAddr::V6),
            served.preferred_address_v6.map(SocketAddr::V6),
        ) {
            fixed.push("quic.preferred_address_v6");
        }
        next.preferred_address_v4 = served.preferred_address_v4;
        next.preferred_address_v6 = served.preferred_address_v6;
        // the versions are the endpoints' (set at start); a TLS config for v2 alone would
        // not change what the endpoints accept
        if handshake.versions != served.versions {
            fixed.push("quic.versions");
        }
        if !fixed.is_empty() {
            return Err(TransportReloadError::NeedsRestart(fixed.join(", ")));
        }
        Ok(next)
    }

    /// Whether the TLS-over-TCP listener runs (it is bound at start or never).
    pub fn tcp_listening(&self) -> bool {
        self.0.tcp.is_some()
    }

    /// Serves `setup`'s TCP handlers and `[tcp]` limits to connections accepted from now
    /// on; open connections keep the handler and limits they were accepted with until they
    /// end. The listeners are bound at start: `enabled` and `listen_backlog` cannot change,
    /// nor the ALPNs the TCP side offers (its TLS config is built from them); a setup that
    /// changes one is refused, naming it, and nothing changes.
    pub fn set_tcp(&self, setup: TcpSetup) -> Result<(), TcpReloadError> {
        let live = self.0.tcp.as_ref().ok_or(TcpReloadError::NotListening)?;
        setup.limits.validate()?;
        let running = live.load();
        let mut fixed = Vec::new();
        if setup.limits.enabled != running.limits.enabled {
            fixed.push("tcp.enabled");
        }
        if setup.limits.listen_backlog != running.limits.listen_backlog {
            fixed.push("tcp.listen_backlog");
        }
        let quic = self.0.registry.load();
        if setup.offered_alpns(&quic) != running.offered_alpns(&quic) {
            fixed.push("the ALPNs the TCP side offers (its handlers', tcp.stream_alpns)");
        }
        if !fixed.is_empty() {
            return Err(TcpReloadError::NeedsRestart(fixed.join(", ")));
        }
        live.store(Arc::new(setup));
        tracing::info!("TCP handlers and [tcp] reloaded; new connections use them");
        Ok(())
    }

    /// Waits until every running worker has installed the config published last, so a
    /// handshake that starts after a reload returns gets it (bounded by
    /// [`RELOAD_INSTALL_WAIT`]: a worker that has stopped never answers). Call reloads from
    /// a thread of their own, not from a worker (it would wait for itself).
    fn wait_installed(&self) {
        let s = &self.0;
        let want = s.tls_generation.load(Ordering::Acquire);
        let give_up = std::time::Instant::now() + RELOAD_INSTALL_WAIT;
        while s
            .tls_installed
            .iter()
            .any(|g| g.load(Ordering::Acquire) < want)
            && std::time::Instant::now() < give_up
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The handlers served now.
    pub fn handlers(&self) -> AlpnRegistry {
        (**self.0.registry.load()).clone()
    }

    fn lock_tls_source(&self) -> std::sync::MutexGuard<'_, (TlsIdentity, ClientAuth)> {
        // a panic while holding it left a complete value behind: go on with it
        self.0
            .tls_source
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Builds and publishes the QUIC server config for `tls` and `registry`'s ALPNs with
    /// the live `[limits]` and `[quic]`.
    fn publish(
        &self,
        tls: &TlsIdentity,
        client_auth: ClientAuth,
        registry: &AlpnRegistry,
    ) -> Result<(), TlsError> {
        let s = &self.0;
        let next = self.build(
            tls,
            client_auth,
            registry,
            &s.limits.load(),
            &s.handshake.load(),
        )?;
        self.install(next);
        Ok(())
    }

    /// The configs new handshakes would get; changes nothing.
    fn build(
        &self,
        tls: &TlsIdentity,
        client_auth: ClientAuth,
        registry: &AlpnRegistry,
        limits: &Limits,
        handshake: &HandshakePolicy,
    ) -> Result<ServerTls, TlsError> {
        let config = build_server_config(
            tls,
            registry.alpns(),
            client_auth,
            limits,
            handshake,
            &self.0.keys,
        )?;
        let tcp = crate::server::build_tcp_config(&self.0, tls, client_auth, handshake, registry)?;
        Ok(ServerTls {
            config,
            tcp,
            fingerprint: tls.fingerprint(),
        })
    }

    /// Hands `next` to the workers (each installs it at its next poll).
    fn install(&self, next: ServerTls) {
        self.0.tls.store(Arc::new(next));
        self.0.tls_generation.fetch_add(1, Ordering::AcqRel);
        self.wake_workers();
    }

    /// Idle workers install a new config now rather than on their next datagram.
    fn wake_workers(&self) {
        for inbox in self.0.inboxes.iter() {
            inbox.wake();
        }
    }

    /// Resolves identities through `provider` from the next handshake and request on.
    pub fn set_identity_provider(&self, provider: Arc<dyn IdentityProvider>) {
        self.0.provider.replace(provider);
        tracing::info!("identities reloaded");
    }

    /// The provider handlers are given: it always asks the provider published last.
    pub fn identity_provider(&self) -> Arc<dyn IdentityProvider> {
        self.0.provider.clone()
    }

    /// Applies `limits` to new connections from now on; open connections keep their
    /// places (a lowered cap refuses newcomers until enough have closed, it closes no one).
    pub fn set_admission(
        &self,
        limits: AdmissionLimits,
    ) -> Result<(), crate::admission::AdmissionError> {
        limits.validate()?;
        self.0.admission.store(Arc::new(limits));
        tracing::info!("admission limits reloaded");
        Ok(())
    }

    /// Fingerprint of the certificate new handshakes get.
    pub fn fingerprint(&self) -> Fingerprint {
        self.0.tls.load().fingerprint
    }
}

/// Whether a reload (second) keeps a restart-only `[limits]` key of the running config.
pub type KeepsLimit = fn(&Limits, &Limits) -> bool;

/// Whether a reloaded preferred address is the socket served now: both unset, equal, or
/// the same IP with port 0 (= "the one bound at start"). Anything else needs a restart.
fn same_socket(wanted: Option<SocketAddr>, served: Option<SocketAddr>) -> bool {
    match (wanted, served) {
        (None, None) => true,
        (Some(w), Some(s)) => w.ip() == s.ip() && (w.port() == 0 || w.port() == s.port()),
        _ => false,
    }
}

/// `[limits]` keys fixed at start (sockets, inboxes and the endpoint are sized by them),
/// each with how to tell whether a reload keeps it.
/// (`[quic] preferred_address_v4/v6` are fixed at start too: their sockets are bound then;
/// and `[quic] versions`: the endpoints' supported versions are set then.)
pub const RESTART_LIMITS: [(&str, KeepsLimit); 4] = [
    ("limits.max_udp_payload_size", |a, b| {
        a.max_udp_payload_size == b.max_udp_payload_size
    }),
    ("limits.loopback_max_udp_payload_size", |a, b| {
        a.loopback_max_udp_payload_size == b.loopback_max_udp_payload_size
    }),
    ("limits.inbox_capacity", |a, b| {
        a.inbox_capacity == b.inbox_capacity
    }),
    ("limits.socket_buffer_size", |a, b| {
        a.socket_buffer_size == b.socket_buffer_size
    }),
];

/// Why [`ConfigReloadHandle::set_transport`] changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum TransportReloadError {
    #[error("{0} changed, which needs a restart")]
    NeedsRestart(String),
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error(transparent)]
    Policy(#[from] HandshakePolicyError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Why [`ConfigReloadHandle::set_tcp`] changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum TcpReloadError {
    #[error("the TLS-over-TCP listener is not running (tcp.enabled was off at start)")]
    NotListening,
    #[error("{0} changed, which needs a restart (the TCP listeners are bound at start)")]
    NeedsRestart(String),
    #[error(transparent)]
    Limits(#[from] LimitsError),
}

/// Why [`ConfigReloadHandle::set_handlers`] changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum HandlersError {
    #[error("no protocol handlers would be left")]
    Empty,
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The provider handlers hold: it asks whichever provider was published last, so identity
/// and scope changes reach open connections at their next token lookup.
pub(crate) struct LiveIdentityProvider {
    current: ArcSwap<ProviderSlot>,
}

/// `ArcSwap` holds sized values: the trait object goes in a box of its own.
struct ProviderSlot(Arc<dyn IdentityProvider>);

impl LiveIdentityProvider {
    pub fn new(provider: Arc<dyn IdentityProvider>) -> Self {
        Self {
            current: ArcSwap::from_pointee(ProviderSlot(provider)),
        }
    }

    fn replace(&self, provider: Arc<dyn IdentityProvider>) {
        self.current.store(Arc::new(ProviderSlot(provider)));
    }
}

impl IdentityProvider for LiveIdentityProvider {
    fn resolve_from_fingerprint(&self, fingerprint: &Fingerprint) -> Option<Identity> {
        self.current.load().0.resolve_from_fingerprint(fingerprint)
    }

    fn resolve_from_token(&self, token: &str) -> Option<Identity> {
        self.current.load().0.resolve_from_token(token)
    }
}

#[cfg(test)]
mod tests {
    use super::same_socket;
    use std::net::SocketAddr;

    #[test]
    fn a_reload_keeps_the_preferred_sockets_bound_at_start_or_needs_a_restart() {
        let a = |s: &str| -> Option<SocketAddr> { Some(s.parse().expect("addr")) };
        assert!(same_socket(None, None));
        let bound = a("127.0.0.2:5555");
        assert!(
            same_socket(a("127.0.0.2:0"), bound),
            "port 0 = the bound one"
        );
        assert!(same_socket(bound, bound));
        assert!(!same_socket(a("127.0.0.2:6666"), bound));
        assert!(!same_socket(a("127.0.0.3:0"), bound));
        assert!(!same_socket(None, bound));
        assert!(!same_socket(bound, None));
    }
}
